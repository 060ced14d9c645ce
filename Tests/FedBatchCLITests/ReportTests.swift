import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// `fedbatch report` on a real federation: the file is self-contained, and
/// Debian's chromium, run headless, draws every chart where the fixed
/// layout puts it (Tests/Fixtures/report_screenshot.py measures the
/// screenshot).
@Suite("fedbatch report")
struct ReportTests {
    /// Each chart's data colour, in page order (HTMLReport.charts).
    static let colours = [
        "accuracy=#1f77b4", "evaluations=#e377c2", "participation=#2ca02c", "rejections=#d62728", "sizes=#9467bd",
        "staleness=#8c564b",
    ]

    /// Renders `html` with headless chromium and measures each chart region.
    static func screenshot(_ html: String, in dir: TempDir) throws -> [String: [String: Double]] {
        let png = dir.file("shot-\(UUID().uuidString.prefix(8)).png")
        let height = HTMLReport.headerHeight + HTMLReport.charts.count * HTMLReport.sectionHeight + 100
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = dir.path
        let shot = try Subprocess.run(
            "/usr/bin/timeout",
            [
                "120", "/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                "--hide-scrollbars", "--user-data-dir=\(dir.file("chromium"))",
                "--window-size=1000,\(height)", "--screenshot=\(png)", "file://\(html)",
            ],
            environment: env)
        #expect(shot.status == 0 && FileManager.default.fileExists(atPath: png), "chromium: \(shot.err)")
        let r = try Subprocess.python(
            "report_screenshot.py", [png, "\(HTMLReport.headerHeight)", "\(HTMLReport.sectionHeight)"] + colours)
        #expect(r.status == 0, "\(r.err)")
        let json = try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any]
        return (json?["charts"] as? [String: [String: Double]]) ?? [:]
    }

    @Test(
        "three merges with evaluations at the collector and the sites, a refusal and a stale bundle: chromium draws all six charts"
    )
    func report() throws {
        let fed = try Federation(sites: ["site-1", "site-2", "site-3"], arch: "mlp:784-16-10")
        try Federation.setConfig(home: fed.collector, table: "eval", "data", "\"\(fashionMNIST)\"")
        // Before any merge there is nothing to report: a clear error.
        let early = try fed.fedbatch(["report", "--home", fed.collector, "--out", fed.root + "/early.html"])
        #expect(early.status == 1 && early.err.contains("run fedbatch merge once"), "\(early.err)")
        // Every site evaluates each generation it starts from on a fifth of
        // its data, set aside.
        for s in ["site-1", "site-2", "site-3"] {
            try Federation.setConfig(home: fed.site(s), table: "training", "eval_fraction", "0.2")
        }
        try FileManager.default.createDirectory(atPath: fed.root + "/metrics", withIntermediateDirectories: true)
        try Federation.setConfig(home: fed.collector, table: "metrics", "textfile_dir", "\"\(fed.root)/metrics\"")

        for round in 0..<3 {
            let g = fed.collector + "/generations/" + HomeLayout.generationFileName(round)
            let sites = round == 2 ? ["site-1", "site-3"] : ["site-1", "site-2", "site-3"]
            func deliver(_ s: String) throws {
                let outbox = fed.site(s) + "/outbox/"
                for name in try FileManager.default.contentsOfDirectory(atPath: outbox) {
                    try FileManager.default.moveItem(atPath: outbox + name, toPath: fed.collector + "/inbox/" + name)
                }
            }
            for s in sites {
                try FileManager.default.copyItem(
                    atPath: g, toPath: fed.site(s) + "/generations/" + HomeLayout.generationFileName(round))
                try fed.run([
                    "train", "--home", fed.site(s), "--data", fashionMNIST, "--limit", "\(200 + 100 * round)", "--seed",
                    "\(round)", "-q",
                ])
                // Site-2's second bundle arrives a generation late: stale by one.
                if !(round == 1 && s == "site-2") { try deliver(s) }
            }
            if round == 2 { try deliver("site-2") }
            if round == 1 { try Data("junk".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/junk.fbu")) }
            try fed.run(["merge", "--home", fed.collector, "-q"])
        }

        // status: each site's newest evaluation, and of which generation.
        let status = try fed.run(["status", "--home", fed.collector, "--json"]).summary()
        let sites = try #require(status["sites"] as? [[String: Any]])
        let evaluated = Dictionary(
            sites.map { ($0["site"] as! String, ($0["evaluation"] as? [String: Any])?["generation"] as? Int) },
            uniquingKeysWith: { a, _ in a })
        #expect(evaluated == ["site-1": 2, "site-2": 1, "site-3": 2], "\(sites)")
        for s in sites {
            let accuracy = ((s["evaluation"] as? [String: Any])?["metrics"] as? [String: Any])?["accuracy"] as? Double
            #expect(accuracy.map { (0...1).contains($0) } == true, "\(s)")
        }
        let text = try fed.run(["status", "--home", fed.collector]).out
        #expect(text.contains("g2: accuracy 0."), "\(text)")
        // Metrics: a sample per site and metric.
        let textfile = try String(
            contentsOfFile: fed.root + "/metrics/fedbatch_collector_demo.prom", encoding: .utf8)
        for s in ["site-1", "site-2", "site-3"] {
            #expect(
                textfile.contains(
                    "fedbatch_site_evaluation{role=\"collector\",model=\"demo\",site=\"\(s)\",metric=\"accuracy\"}"),
                "\(textfile)")
        }
        #expect(
            textfile.contains(
                "fedbatch_site_evaluation_generation{role=\"collector\",model=\"demo\",site=\"site-2\"} 1"))

        let out = fed.root + "/report.html"
        let r = try fed.run(["report", "--home", fed.collector, "--out", out, "--json"])
        let summary = try r.summary()
        #expect(
            summary["generations"] as? Int == 4 && summary["evaluations"] as? Int == 3 && summary["sites"] as? Int == 3)
        let html = try String(contentsOfFile: out, encoding: .utf8)
        #expect(summary["bytes"] as? Int == html.utf8.count)
        // Self-contained: no script, nothing fetched from anywhere.
        #expect(
            !html.lowercased().contains("<script") && !html.contains("http://") && !html.contains("https://")
                && !html.contains("src="))
        #expect(html.components(separatedBy: "<svg").count - 1 == 6)
        // Site evaluations: 8 bundles, each with its site's evaluation of
        // its base; the federated line has a point per evaluated generation.
        #expect(html.contains("as each site claims it"))
        #expect(html.components(separatedBy: "fill=\"#e377c2\"><title>generation").count - 1 == 3)
        // Participation: 8 included bundles of 9 cells; the refusal counted.
        #expect(html.components(separatedBy: "fill=\"#2ca02c\"").count - 1 == 8)
        #expect(html.contains("signature.missing: 1"))
        // The caption counts the generations the grid shows (not generation 0).
        #expect(html.contains("3 sites × 3 generations"))

        let dir = TempDir()
        let charts = try Self.screenshot(out, in: dir)
        for (id, _) in HTMLReport.charts {
            let c = charts[id] ?? [:]
            #expect((c["ink"] ?? 0) > 0.01, "chart \(id) looks blank: \(c)")
            #expect((c["colour_pixels"] ?? 0) > 20, "chart \(id) lacks its data colour: \(c)")
        }
        // The measurement can fail: with the charts' contents removed, the
        // same regions are blank.
        let stripped = html.replacingOccurrences(
            of: "<svg[^>]*>[\\s\\S]*?</svg>", with: "<svg width=\"760\" height=\"280\"></svg>",
            options: .regularExpression)
        let blankPath = try dir.write("blank.html", Data(stripped.utf8))
        let blank = try Self.screenshot(blankPath, in: dir)
        for (id, _) in HTMLReport.charts {
            #expect(
                (blank[id]?["ink"] ?? 1) < 0.005 && (blank[id]?["colour_pixels"] ?? 1) == 0,
                "\(id): \(blank[id] ?? [:])")
        }
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// The node_exporter textfiles that `train` and `merge` write with
/// `[metrics] textfile_dir`: valid for promtool, written atomically, and
/// saying what happened, including runs that failed or had nothing to do.
@Suite("Prometheus textfile metrics")
struct MetricsTests {
    /// Parses exposition text into "name{labels}" → value.
    static func samples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else {
                continue
            }
            out[String(line[..<space])] = v
        }
        return out
    }

    static func promtool(_ path: String) throws -> ProcessResult {
        try Subprocess.run("/bin/sh", ["-c", "/usr/bin/promtool check metrics < '\(path)'"])
    }

    @Test(
        "train and merge write promtool-clean textfiles with the documented series, counters kept in state.db, and failed runs' exit codes"
    )
    func textfiles() throws {
        let fed = try Federation(sites: ["site-1", "site-2"], arch: "mlp:784-16-10")
        let metrics = fed.root + "/textfiles"
        try FileManager.default.createDirectory(atPath: metrics, withIntermediateDirectories: true)
        try Federation.setConfig(home: fed.collector, table: "metrics", "textfile_dir", "\"\(metrics)\"")
        try Federation.setConfig(home: fed.collector, table: "eval", "data", "\"\(fashionMNIST)\"")
        for s in ["site-1", "site-2"] {
            try Federation.setConfig(home: fed.site(s), table: "metrics", "textfile_dir", "\"\(metrics)\"")
            try FileManager.default.copyItem(
                atPath: fed.collector + "/generations/g000000.fbg", toPath: fed.site(s) + "/generations/g000000.fbg")
        }
        let collectorFile = metrics + "/fedbatch_collector_demo.prom", siteFile = metrics + "/fedbatch_site_demo.prom"
        let c = "role=\"collector\",model=\"demo\"", s = "role=\"site\",model=\"demo\""

        // A site trains: its figures and its bundle.
        try fed.run(["train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "300", "-q"])
        var site = Self.samples(try String(contentsOfFile: siteFile, encoding: .utf8))
        #expect(site["fedbatch_last_run_exit_code{\(s)}"] == 0)
        #expect(site["fedbatch_generation{\(s)}"] == 0 && site["fedbatch_bundle_seq{\(s)}"] == 1)
        #expect(site["fedbatch_train_examples{\(s)}"] == 300 && site["fedbatch_bundle_in_outbox{\(s)}"] == 1)
        let outbox = try FileManager.default.contentsOfDirectory(atPath: fed.site("site-1") + "/outbox")
        let bytes =
            try FileManager.default.attributesOfItem(atPath: fed.site("site-1") + "/outbox/" + outbox[0])[.size] as! Int
        #expect(site["fedbatch_bundle_bytes{\(s)}"] == Double(bytes))
        #expect(
            (site["fedbatch_train_loss{\(s)}"] ?? 0) > 0
                && (0...1).contains(site["fedbatch_train_accuracy_ratio{\(s)}"] ?? -1))
        // A second run has nothing to do (exit 5) and still reports the
        // last bundle's figures.
        #expect(
            try fed.fedbatch(["train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "300", "-q"])
                .status == 5)
        let again = Self.samples(try String(contentsOfFile: siteFile, encoding: .utf8))
        #expect(
            again["fedbatch_last_run_exit_code{\(s)}"] == 5
                && again["fedbatch_train_loss{\(s)}"] == site["fedbatch_train_loss{\(s)}"])

        // The collector merges it, with a junk file to refuse.
        try FileManager.default.copyItem(
            atPath: fed.site("site-1") + "/outbox/" + outbox[0], toPath: fed.collector + "/inbox/" + outbox[0])
        try Data("junk".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/junk.fbu"))
        try fed.run(["merge", "--home", fed.collector, "-q"])
        var collector = Self.samples(try String(contentsOfFile: collectorFile, encoding: .utf8))
        #expect(collector["fedbatch_last_run_exit_code{\(c)}"] == 0 && collector["fedbatch_generation{\(c)}"] == 1)
        #expect(collector["fedbatch_bundles_accepted_total{\(c)}"] == 1)
        #expect(collector["fedbatch_bundles_rejected_total{\(c),reason=\"signature.missing\"}"] == 1)
        #expect(collector["fedbatch_quarantine_files{\(c),reason=\"signature.missing\"}"] == 1)
        #expect(
            collector["fedbatch_inbox_files{\(c)}"] == 0
                && collector["fedbatch_inbox_oldest_timestamp_seconds{\(c)}"] == nil)
        #expect(collector["fedbatch_site_last_accepted_generation{\(c),site=\"site-1\"}"] == 1)
        #expect(collector["fedbatch_site_last_accepted_generation{\(c),site=\"site-2\"}"] == nil)
        let created = collector["fedbatch_generation_timestamp_seconds{\(c)}"] ?? 0
        #expect(abs(created - Date().timeIntervalSince1970) < 600)
        #expect(collector["fedbatch_site_last_accepted_timestamp_seconds{\(c),site=\"site-1\"}"] == created)
        #expect(
            collector["fedbatch_eval_generation{\(c)}"] == 1
                && (0.05...1).contains(collector["fedbatch_eval_accuracy_ratio{\(c)}"] ?? -1))
        #expect((collector["fedbatch_merge_duration_seconds{\(c)}"] ?? -1) > 0)

        // The site sees generation 1 include its bundle.
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000001.fbg", toPath: fed.site("site-1") + "/generations/g000001.fbg")
        try fed.run(["train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "300", "-q"])
        site = Self.samples(try String(contentsOfFile: siteFile, encoding: .utf8))
        #expect(
            site["fedbatch_generation{\(s)}"] == 1 && site["fedbatch_bundle_seq{\(s)}"] == 2
                && site["fedbatch_bundle_base_generation{\(s)}"] == 1)

        // Below quorum: exit 5, the inbox file counted with its age.
        for name in try FileManager.default.contentsOfDirectory(atPath: fed.site("site-1") + "/outbox")
        where !outbox.contains(name) {
            try FileManager.default.copyItem(
                atPath: fed.site("site-1") + "/outbox/" + name, toPath: fed.collector + "/inbox/" + name)
        }
        #expect(try fed.fedbatch(["merge", "--home", fed.collector, "--min-bundles", "2", "-q"]).status == 5)
        collector = Self.samples(try String(contentsOfFile: collectorFile, encoding: .utf8))
        #expect(collector["fedbatch_last_run_exit_code{\(c)}"] == 5 && collector["fedbatch_inbox_files{\(c)}"] == 1)
        #expect(
            collector["fedbatch_inbox_oldest_timestamp_seconds{\(c)}"] != nil
                && collector["fedbatch_bundles_accepted_total{\(c)}"] == 1)

        // Both files pass promtool's checks, and no temporary file is left.
        for file in [collectorFile, siteFile] {
            let check = try Self.promtool(file)
            #expect(check.status == 0 && check.out.isEmpty && check.err.isEmpty, "\(file): \(check.out)\(check.err)")
            #expect(!(try String(contentsOfFile: file, encoding: .utf8)).contains("{}"))
        }
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: metrics).sorted() == [
                "fedbatch_collector_demo.prom", "fedbatch_site_demo.prom",
            ])
        // Every series written is documented in fedbatch-metrics(7).
        let page = try String(contentsOfFile: TestPaths.packageRoot + "/man/fedbatch-metrics.7", encoding: .utf8)
        let documented = Set(
            page.split(separator: "\n").filter { $0.hasPrefix(".B fedbatch_") }
                .map { String($0.dropFirst(3).prefix { $0 == "_" || $0.isLetter }) })
        for file in [collectorFile, siteFile] {
            for line in try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
            where line.hasPrefix("# TYPE ") {
                let name = String(line.split(separator: " ")[2])
                #expect(documented.contains(name), "\(name) is written but not in fedbatch-metrics(7)")
            }
        }

        // A failed merge still reports: the newest generation replaced by
        // junk makes it exit 3, and the textfile says so.
        let g1 = fed.collector + "/generations/g000001.fbg"
        let saved = try Data(contentsOf: URL(fileURLWithPath: g1))
        try Data("broken".utf8).write(to: URL(fileURLWithPath: g1))
        #expect(try fed.fedbatch(["merge", "--home", fed.collector, "-q"]).status == 3)
        try saved.write(to: URL(fileURLWithPath: g1))
        collector = Self.samples(try String(contentsOfFile: collectorFile, encoding: .utf8))
        #expect(collector["fedbatch_last_run_exit_code{\(c)}"] == 3)

        // And promtool does fail on a textfile that breaks its rules.
        let bad = try fed.keyring.dir.write(
            "bad.prom",
            Data(
                "# HELP fedbatch_bundles_accepted x\n# TYPE fedbatch_bundles_accepted counter\nfedbatch_bundles_accepted 1\n"
                    .utf8))
        #expect(try Self.promtool(bad).status != 0)
    }

    @Test("an unwritable textfile directory is a warning, and the merge still succeeds")
    func unwritable() throws {
        let fed = try Federation()
        try Federation.setConfig(home: fed.collector, table: "metrics", "textfile_dir", "\"\(fed.root)/no/such/dir\"")
        let r = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        #expect(r.status == 5)
        #expect(try r.jsonErrorLines().map { $0["code"] as? String } == ["metrics.write"])
    }
}

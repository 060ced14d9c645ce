import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// `[merge] memory = "mifa"` through the real binary: remembered updates
/// enter each generation exactly as the rule says (numpy, bit for bit),
/// are forgotten when they should be, and are refused where they break
/// another feature.
@Suite("merge memory (MIFA)")
struct MemoryTests {
    /// A federation of three sites whose collector remembers.
    static func federation(window: Int = 4) throws -> Federation {
        let fed = try Federation(sites: ["site-1", "site-2", "site-3"])
        try fed.setCollectorConfig("max_staleness", "2")
        try fed.setCollectorConfig("staleness_a", "0.5")
        try fed.setCollectorConfig("memory", "\"mifa\"")
        try Federation.setConfig(home: fed.collector, table: "merge", "memory_window", "\(window)")
        return fed
    }

    @Test(
        "a site absent for two generations is remembered in both, bit for bit as numpy's exact sums of the rule give"
    )
    func remembered() throws {
        let fed = try Self.federation()
        let dir = TempDir()
        // (site, seq, examples, scale): the delta is Samples.weights at scale × seq.
        let rounds: [[(String, Int64, Int64, Float)]] = [
            [("site-1", 1, 100, 0.01), ("site-2", 1, 250, -0.02), ("site-3", 1, 400, 0.03)],
            [("site-1", 2, 120, 0.01), ("site-2", 2, 250, 0.005)],
            [("site-1", 3, 90, -0.01), ("site-2", 3, 260, 0.02)],
        ]
        var site3Delta = ""
        for (r, updates) in rounds.enumerated() {
            var cases: [[String: Any]] = []
            for (site, seq, examples, scale) in updates {
                try fed.update(
                    site: site, seq: seq, base: try fed.generation(r), examples: examples, scale: scale)
                let path = dir.file("\(site)-\(seq).safetensors")
                try SafetensorsWriter.write(try Samples.weights(scale: scale * Float(seq)), to: path)
                cases.append(["delta": path, "examples": examples, "staleness": 0])
                if site == "site-3" { site3Delta = path }
            }
            let merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
            let remembered = try #require(merged["remembered"] as? [[String: Any]])
            if r == 0 {
                #expect(remembered.isEmpty)
            } else {
                // site-3's update of generation 1, trained on 0: r behind the base of generation r + 1.
                #expect(remembered.count == 1, "\(merged)")
                #expect(remembered.first?["site"] as? String == "site-3")
                #expect(remembered.first?["generation"] as? Int == 1 && remembered.first?["staleness"] as? Int == r)
                cases.append(["delta": site3Delta, "examples": 400, "staleness": r])
            }
            for n in [r, r + 1] {
                try fed.run(["export", "--home", fed.collector, "\(n)", "--out", dir.file("g\(n).safetensors")])
            }
            let spec: [String: Any] = [
                "base": dir.file("g\(r).safetensors"), "result": dir.file("g\(r + 1).safetensors"), "a": 0.5,
                "updates": cases,
            ]
            let check = try Subprocess.python(
                "memory_check.py", [try dir.write("case\(r).json", try JSONSerialization.data(withJSONObject: spec))])
            #expect(check.status == 0, "generation \(r + 1): \(check.out)\(check.err)")
            // Without the remembered update, the check fails: it can fail.
            if r > 0 {
                let without: [String: Any] = [
                    "base": spec["base"]!, "result": spec["result"]!, "a": 0.5, "updates": Array(cases.dropLast()),
                ]
                let wrong = try Subprocess.python(
                    "memory_check.py",
                    [try dir.write("wrong\(r).json", try JSONSerialization.data(withJSONObject: without))])
                #expect(wrong.status == 1, "\(wrong.out)")
            }
        }
        // The manifest tells fresh from remembered; the ledger counts each
        // bundle once, in the generation that first included it.
        let (m, _) = try FederatedStatisticsTests.members(fed.collector + "/generations/g000003.fbg")
        let site3 = try #require(m.included?.first { $0.site == "site-3" })
        #expect(site3.remembered == 1 && site3.staleness == 2 && m.metrics["remembered"] == 1)
        #expect(m.included?.filter { $0.remembered == nil }.count == 2 && m.metrics["bundles"] == 2)
        let log = try fed.run(["log", "--home", fed.collector, "--json"]).summary()
        let accepted = (log["generations"] as? [[String: Any]])?.compactMap { $0["accepted"] as? Int }
        #expect(accepted == [0, 3, 2, 2], "\(log)")
        let rememberedCounts = (log["generations"] as? [[String: Any]])?.compactMap { $0["remembered"] as? Int }
        #expect(rememberedCounts == [0, 0, 1, 1], "\(log)")
        #expect(try fed.run(["log", "--home", fed.collector]).out.contains("(+1 remembered)"))
        // A rebuilt state.db finds the remembered file again (by its statement).
        try FileManager.default.removeItem(atPath: fed.collector + "/state.db")
        try fed.update(site: "site-1", seq: 4, base: try fed.generation(3))
        let again = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        #expect((again["remembered"] as? [[String: Any]])?.map { $0["site"] as? String } == ["site-2", "site-3"])
    }

    @Test(
        "forgotten: beyond memory_window, after a key is removed, and after a revert; refused with robust rules, privacy and regions"
    )
    func forgetting() throws {
        let fed = try Self.federation(window: 1)
        for (site, examples) in [("site-1", Int64(100)), ("site-2", 200), ("site-3", 300)] {
            try fed.update(site: site, seq: 1, base: try fed.generation(0), examples: examples)
        }
        try fed.run(["merge", "--home", fed.collector, "-q"])
        // Generation 2: site-2 and site-3 remembered (staleness 1).
        try fed.update(site: "site-1", seq: 2, base: try fed.generation(1))
        var merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        #expect((merged["remembered"] as? [Any])?.count == 2)
        // Generation 3: their updates are 2 behind, beyond memory_window 1.
        try fed.update(site: "site-1", seq: 3, base: try fed.generation(2))
        merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        var forgotten = try #require(merged["forgotten"] as? [[String: Any]])
        #expect((merged["remembered"] as? [Any])?.isEmpty == true)
        #expect(
            forgotten.count == 2
                && forgotten.allSatisfy { ($0["reason"] as? String)?.contains("memory_window is 1") == true })

        // Fresh updates from site-2 and site-3 on generation 3, merged into 4.
        try Federation.setConfig(home: fed.collector, table: "merge", "memory_window", "4")
        try fed.update(site: "site-2", seq: 2, base: try fed.generation(3))
        try fed.update(site: "site-3", seq: 2, base: try fed.generation(3))
        try fed.run(["merge", "--home", fed.collector, "-q"])
        // A removed key: site-3 is not remembered.
        try fed.run(["keys", "remove", "--home", fed.collector, "--site", "site-3", "-q"])
        try fed.update(site: "site-1", seq: 4, base: try fed.generation(4))
        merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        #expect((merged["remembered"] as? [[String: Any]])?.map { $0["site"] as? String } == ["site-2"], "\(merged)")
        // A revert empties the memory.
        try fed.run(["revert", "--home", fed.collector, "4", "-q"])
        try fed.update(site: "site-1", seq: 5, base: try fed.generation(6))
        merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        forgotten = try #require(merged["forgotten"] as? [[String: Any]])
        #expect((merged["remembered"] as? [Any])?.isEmpty == true)
        #expect(forgotten.map { $0["site"] as? String } == ["site-2"])
        #expect((forgotten.first?["reason"] as? String)?.contains("a revert or a statistics pin") == true)
        #expect(try fed.run(["log", "--home", fed.collector]).out.contains("(revert to 4)"))

        // Refusals, before the inbox is touched.
        for (key, value, code) in [
            ("strategy", "\"krum\"", "memory.strategy"), ("regions", "[\"eu\"]", "memory.hierarchical"),
        ] {
            try Federation.setConfig(home: fed.collector, table: "merge", key, value)
            let r = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
            let got = try r.jsonErrorLines().last?["code"] as? String
            #expect(r.status == 1 && got == code, "\(r.err)")
            try Federation.setConfig(home: fed.collector, table: "merge", key, key == "strategy" ? "\"fedavg\"" : "[]")
        }
        try String(contentsOfFile: fed.collector + "/fedbatch.toml", encoding: .utf8).appending(
            "\n[privacy]\nnoise_multiplier = 1.0\nclip_norm = 1.0\nexpected_sites = 3\ndelta = 1e-5\nmax_epsilon = 100.0\n"
        ).write(toFile: fed.collector + "/fedbatch.toml", atomically: true, encoding: .utf8)
        let r = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        let got = try r.jsonErrorLines().last?["code"] as? String
        #expect(r.status == 1 && got == "memory.privacy", "\(r.err)")
        #expect(r.err.contains("charges each site's update once"))
    }
}

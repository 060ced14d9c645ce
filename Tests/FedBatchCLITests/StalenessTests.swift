import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Asynchronous, staleness-aware merging through the real binary: updates
/// trained on older generations merge inside merge.max_staleness with the
/// documented weights (checked against numpy), older ones are refused, and
/// max_wait lets a lone late bundle through.
@Suite("staleness-aware merging")
struct StalenessTests {
    @Test(
        "stale updates inside the window merge with w(s) = (1+s)^-a, checked against numpy; beyond it, protocol.too-stale"
    )
    func staleMerge() throws {
        let fed = try Federation(sites: ["site-1", "site-2", "site-3", "site-4"])
        try fed.setCollectorConfig("max_staleness", "2")
        try fed.setCollectorConfig("staleness_a", "0.5")
        // Generations 1 to 3 from site-1 alone.
        for round in 1...3 {
            try fed.update(site: "site-1", seq: Int64(round), base: try fed.generation(round - 1), scale: 0.01)
            try fed.run(["merge", "--home", fed.collector, "-q"])
        }
        // Then: site-2 on generation 1 (s = 2), site-3 on 2 (s = 1), site-1
        // on 3 (s = 0), and site-4 on 0 (s = 3, beyond the window).
        let dir = TempDir()
        var updates: [[String: Any]] = []
        for (site, base, examples, scale) in [
            ("site-2", 1, 300, 0.02), ("site-3", 2, 200, -0.015), ("site-1", 3, 100, 0.005),
        ] {
            let seq: Int64 = site == "site-1" ? 4 : 1
            try fed.update(
                site: site, seq: seq, base: try fed.generation(base), examples: Int64(examples), scale: Float(scale))
            // The same delta the bundle carries (Federation.update: Samples.weights at scale × seq).
            let path = dir.file("\(site).safetensors")
            try SafetensorsWriter.write(try Samples.weights(scale: Float(scale) * Float(seq)), to: path)
            updates.append(["delta": path, "examples": examples, "staleness": 3 - base])
        }
        try fed.update(site: "site-4", seq: 1, base: try fed.generation(0), name: "late.fbu")
        let merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        let accepted = try #require(merged["accepted"] as? [[String: Any]])
        #expect(accepted.count == 3 && merged["generation"] as? Int == 4)
        #expect(
            Set(accepted.map { "\($0["site"]!):\($0["base"]!):\($0["staleness"]!)" }) == [
                "site-2:1:2", "site-3:2:1", "site-1:3:0",
            ])
        let s2 = try #require(accepted.first { $0["site"] as? String == "site-2" })
        #expect(abs((s2["staleness_weight"] as? Double ?? 0) - pow(3.0, -0.5)) < 1e-12)
        let rejected = try #require(merged["rejected"] as? [[String: Any]])
        #expect(
            rejected.map { $0["code"] as? String } == ["protocol.too-stale"]
                && (rejected[0]["message"] as? String ?? "").contains("max_staleness is 2"))

        // The generation's manifest records each bundle's base, staleness and factor.
        let inspect = try fed.run(["inspect", fed.collector + "/generations/g000004.fbg", "--json"]).summary()
        let included = try #require(((inspect["manifest"] as? [String: Any])?["included"]) as? [[String: Any]])
        #expect(
            Set(included.compactMap { $0["staleness"] as? Int }) == [0, 1, 2]
                && included.allSatisfy { $0["staleness_weight"] != nil })

        // numpy agrees on the weights.
        for n in [3, 4] {
            try fed.run(["export", "--home", fed.collector, "\(n)", "--out", dir.file("g\(n).safetensors")])
        }
        let spec: [String: Any] = [
            "base": dir.file("g3.safetensors"), "result": dir.file("g4.safetensors"), "a": 0.5,
            "function": "polynomial",
            "updates": updates,
        ]
        let check = try Subprocess.python(
            "staleness_check.py", [try dir.write("case.json", try JSONSerialization.data(withJSONObject: spec))])
        #expect(check.status == 0, "\(check.out)\(check.err)")
        #expect(try fed.run(["log", "--home", fed.collector]).status == 0)
    }

    @Test("below quorum a bundle waits; once the oldest has waited max_wait, the merge takes what is there")
    func maxWait() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        try fed.setCollectorConfig("min_bundles", "3")
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        let waiting = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        #expect(waiting.status == 5)
        let reason = ((try waiting.summary()["waiting"] as? [[String: Any]])?.first?["reason"] as? String) ?? ""
        #expect(reason.contains("quorum of 3") && reason.contains("max_wait (86400 s"), "\(reason)")
        // --max-wait overrides for one run; here nothing has waited 10 s yet.
        #expect(try fed.fedbatch(["merge", "--home", fed.collector, "--max-wait", "10"]).status == 5)
        // With max_wait 0 the lone bundle has waited long enough: it merges.
        try fed.setCollectorConfig("max_wait", "0")
        let r = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        let generation = try r.summary()["generation"] as? Int
        #expect(r.status == 0 && generation == 1, "\(r.err)")
    }

    @Test(
        "a site that skips generations (0, then 3) trusts 3 only through 1 and 2, then trains on it; going back is still refused"
    )
    func skippingGenerations() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        for round in 1...3 {
            try fed.update(site: "site-2", seq: Int64(round), base: try fed.generation(round - 1))
            try fed.run(["merge", "--home", fed.collector, "-q"])
        }
        let site = fed.site("site-1")
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000000.fbg", toPath: site + "/generations/g000000.fbg")
        try fed.run(["export", "--home", site, "latest", "--out", fed.root + "/w.safetensors"])
        try fed.run(["pack", "--home", site, "--weights", fed.root + "/w.safetensors", "--num-examples", "5", "-q"])
        // The stick brings generation 3 only: any of 1 and 2 could have
        // rotated the collector's key, so 3 is not trusted yet.
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000003.fbg", toPath: site + "/generations/g000003.fbg")
        let gap = try fed.fedbatch([
            "pack", "--home", site, "--weights", fed.root + "/w.safetensors", "--num-examples", "5", "--base", "3",
        ])
        #expect(gap.status == 3 && gap.err.contains("generation 1: missing"), "\(gap.err)")
        // With the generations in between, it takes 3 and trains on it.
        for n in [1, 2] {
            try FileManager.default.copyItem(
                atPath: fed.collector + "/generations/" + HomeLayout.generationFileName(n),
                toPath: site + "/generations/" + HomeLayout.generationFileName(n))
        }
        try fed.run(["export", "--home", site, "latest", "--out", fed.root + "/w3.safetensors"])
        let r = try fed.run([
            "pack", "--home", site, "--weights", fed.root + "/w3.safetensors", "--num-examples", "5", "--json",
        ]).summary()
        #expect((r["bundle"] as? [String: Any])?["base_generation"] as? Int == 3, "\(r)")
        #expect(r["base_from"] as? String == "metadata")
        // An older generation offered afterwards is a rollback.
        let old = try fed.fedbatch([
            "pack", "--home", site, "--weights", fed.root + "/w.safetensors", "--num-examples", "5", "--base", "0",
            "--force",
        ])
        #expect(old.status == 3 && old.err.contains("rollback"), "\(old.err)")
    }

    @Test(
        "merge.clip_norm scales each delta down to the bound (over all tensors) before aggregating, checked against numpy"
    )
    func clipping() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        let g0 = try fed.generation(0)
        let dir = TempDir()
        // Two deltas: a large one (scale 0.5) and a small one (0.01).
        func norm(_ t: [(name: String, tensor: Tensor)]) -> Double {
            t.reduce(0.0) { $0 + $1.tensor.floats().reduce(0.0) { $0 + Double($1) * Double($1) } }.squareRoot()
        }
        let big = try Samples.weights(scale: 0.5), small = try Samples.weights(scale: 0.01)
        let bound = (norm(big) * norm(small)).squareRoot()
        #expect(norm(big) > bound && norm(small) < bound)
        try Federation.setConfig(home: fed.collector, table: "merge", "clip_norm", "\(bound)")
        var updates: [[String: Any]] = []
        for (site, t, n) in [("site-1", big, 100), ("site-2", small, 300)] {
            try fed.update(site: site, seq: 1, base: g0, examples: Int64(n), tensors: t)
            let path = dir.file("\(site).safetensors")
            try SafetensorsWriter.write(t, to: path)
            updates.append(["delta": path, "examples": n, "staleness": 0])
        }
        let merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        #expect(merged["generation"] as? Int == 1)
        let g1 = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000001.fbg"))
            ).payload)
        #expect(g1.manifest.strategy?.parameters["clip_norm"] == bound)
        for n in [0, 1] {
            try fed.run(["export", "--home", fed.collector, "\(n)", "--out", dir.file("g\(n).safetensors")])
        }
        let spec: [String: Any] = [
            "base": dir.file("g0.safetensors"), "result": dir.file("g1.safetensors"), "a": 0.5,
            "function": "polynomial",
            "clip_norm": bound, "updates": updates,
        ]
        let check = try Subprocess.python(
            "staleness_check.py", [try dir.write("case.json", try JSONSerialization.data(withJSONObject: spec))])
        #expect(check.status == 0, "\(check.out)\(check.err)")
        // Without the clip, numpy's answer differs: the check can fail.
        var unclipped = spec
        unclipped.removeValue(forKey: "clip_norm")
        let wrong = try Subprocess.python(
            "staleness_check.py", [try dir.write("case2.json", try JSONSerialization.data(withJSONObject: unclipped))])
        #expect(wrong.status == 1)
    }
}

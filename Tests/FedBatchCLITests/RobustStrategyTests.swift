import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// The robust rules against Flower's own aggregate functions: two
/// generations through the real binary (the rules keep no state from one
/// generation to the next, so a third would test nothing more), seven sites of which one sends its
/// update sign-flipped and scaled ×5, on a model of 7114 parameters merged
/// in chunks of 4096 coordinates (merge.chunk_mb set tiny), so that chunks
/// cross tensor boundaries. Every generation must agree with Flower to 1e-6
/// relative.
@Suite("robust strategies checked against Flower")
struct RobustStrategyTests {
    static let arch = "mlp:100-64-10"
    static let sites = (1...7).map { "site-\($0)" }

    /// Small deltas of both signs, the same on every run. Each value has a
    /// full float32 mantissa: values on a coarse grid would tie exactly in
    /// their distance to the median, and Bulyan's tie-break is numpy's
    /// partition order in Flower, which no other implementation reproduces.
    static func randomDelta(seed: UInt64) throws -> [(name: String, tensor: Tensor)] {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return try Samples.weights(arch: arch).map { name, t in
            (
                name,
                Tensor(
                    shape: t.shape,
                    floats: (0..<t.count).map { _ in
                        state = state &* 6364136223846793005 &+ 1442695040888963407
                        let u = Double(state >> 11) / Double(1 << 53)
                        return Float((2 * u - 1) * 0.05 * (1 + u * u))
                    })
            )
        }
    }

    /// Writes one round of updates (site-7 the attacker) and returns each
    /// site's delta file and example count.
    static func writeRound(_ round: Int, fed: Federation, dir: TempDir) throws -> [String: [String: Any]] {
        let base = try fed.generation(round - 1)
        var updates: [String: [String: Any]] = [:]
        for (i, site) in sites.enumerated() {
            var delta = try randomDelta(seed: UInt64(round * 10 + i))
            if site == "site-7" {
                delta = delta.map {
                    ($0.name, Tensor(shape: $0.tensor.shape, floats: $0.tensor.floats().map { -5 * $0 }))
                }
            }
            let examples = 100 * (i + 1) + round
            try fed.update(site: site, seq: Int64(round), base: base, examples: Int64(examples), tensors: delta)
            let path = dir.file("r\(round)-\(site).safetensors")
            try SafetensorsWriter.write(delta, to: path)
            updates[site] = ["delta": path, "examples": examples]
        }
        return updates
    }

    @Test(
        "median, trimmed-mean, krum, multikrum and bulyan match Flower over two generations",
        arguments: [
            ("median", [String: Double]()),
            ("trimmed-mean", ["trim": 0.2]),
            ("krum", ["byzantine": 1]),
            ("multikrum", ["byzantine": 1]),
            ("multikrum", ["byzantine": 2, "keep": 3, "server_lr": 0.5]),
            ("bulyan", ["byzantine": 1]),
        ])
    func matchesFlower(strategy: String, params: [String: Double]) throws {
        let fed = try Federation(sites: Self.sites, arch: Self.arch)
        try Federation.setConfig(home: fed.collector, table: "merge", "strategy", "\"\(strategy)\"")
        try Federation.setConfig(home: fed.collector, table: "merge", "chunk_mb", "0.001")
        for (k, v) in params {
            try Federation.setConfig(
                home: fed.collector, table: "merge", k, k == "trim" || k == "server_lr" ? "\(v)" : "\(Int(v))")
        }
        let dir = TempDir()
        var rounds: [[String: Any]] = []
        var attacker = ""
        for round in 1...2 {
            let updates = try Self.writeRound(round, fed: fed, dir: dir)
            let merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
            #expect(merged["strategy"] as? String == strategy && merged["generation"] as? Int == round)
            // Flower gets the updates in the order fedbatch took them (by digest).
            let accepted = try #require(merged["accepted"] as? [[String: Any]])
            attacker = accepted.first { $0["site"] as? String == "site-7" }?["digest"] as? String ?? ""
            let order = accepted.map { $0["site"] as! String }
            #expect(order.count == 7)
            try fed.run(["export", "--home", fed.collector, "\(round)", "--out", dir.file("g\(round).safetensors")])
            rounds.append(["updates": order.map { updates[$0]! }, "result": dir.file("g\(round).safetensors")])
        }
        try fed.run(["export", "--home", fed.collector, "0", "--out", dir.file("g0.safetensors")])
        let spec: [String: Any] = [
            "strategy": strategy, "params": params, "initial": dir.file("g0.safetensors"), "rounds": rounds,
        ]
        let check = try Subprocess.run(
            TestPaths.flowerPython,
            [
                TestPaths.fixtures + "/flower_oracle.py",
                try dir.write("case.json", try JSONSerialization.data(withJSONObject: spec)),
            ])
        #expect(check.status == 0, "\(check.out)\(check.err)")
        // The rule and its parameters are in the signed record.
        let shown = try fed.run(["inspect", "--json", fed.collector + "/generations/g000002.fbg"]).summary()
        let recorded = try #require(((shown["manifest"] as? [String: Any])?["strategy"] as? [String: Any]))
        #expect(recorded["name"] as? String == strategy)
        // A selecting rule names the bundles it used; none is the attacker's.
        let selected = recorded["selected"] as? [String]
        let expectedCount: Int? =
            ["krum": 1, "bulyan": 5][strategy] ?? (strategy == "multikrum" ? Int(params["keep"] ?? 6) : nil)
        #expect(selected?.count == expectedCount, "\(recorded)")
        #expect(!(selected ?? []).contains(attacker))
        #expect(try fed.run(["log", "--home", fed.collector]).status == 0)
    }

    @Test("a rule that needs more bundles than passed writes nothing and leaves them in the inbox, even past max_wait")
    func tooFewForByzantine() throws {
        let fed = try Federation(sites: Self.sites, arch: Self.arch)
        try Federation.setConfig(home: fed.collector, table: "merge", "strategy", "\"bulyan\"")
        try Federation.setConfig(home: fed.collector, table: "merge", "byzantine", "2")
        try Federation.setConfig(home: fed.collector, table: "merge", "max_wait", "0")
        _ = try Self.writeRound(1, fed: fed, dir: TempDir())
        let r = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        #expect(r.status == 5, "\(r.out)\(r.err)")
        let summary = try r.summary()
        let waiting = try #require(summary["waiting"] as? [[String: Any]])
        #expect(waiting.count == 7)
        #expect(
            waiting.allSatisfy {
                ($0["reason"] as? String ?? "").contains(
                    "bulyan with byzantine = 2 needs at least 11 bundles (n ≥ 4f + 3); 7 passed")
            },
            "\(waiting)")
        let inbox = try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/inbox")
        #expect(inbox.count == 7 && !FileManager.default.fileExists(atPath: fed.collector + "/generations/g000001.fbg"))
        // The same bundles merge once the rule asks for fewer.
        try Federation.setConfig(home: fed.collector, table: "merge", "byzantine", "1")
        #expect(try fed.run(["merge", "--home", fed.collector, "--json"]).summary()["generation"] as? Int == 1)
    }

    @Test(
        "merge.chunk_mb changes memory, not the result: a krum and a median merge are byte-identical across chunk sizes"
    )
    func chunkSizeDoesNotChangeResult() throws {
        for strategy in ["krum", "median"] {
            var payloads: [String] = []
            for chunk in ["0.001", "64"] {
                let fed = try Federation(sites: Self.sites, arch: Self.arch)
                try Federation.setConfig(home: fed.collector, table: "merge", "strategy", "\"\(strategy)\"")
                try Federation.setConfig(home: fed.collector, table: "merge", "byzantine", "1")
                try Federation.setConfig(home: fed.collector, table: "merge", "chunk_mb", chunk)
                _ = try Self.writeRound(1, fed: fed, dir: TempDir())
                try fed.run(["merge", "--home", fed.collector])
                let out = fed.root + "/g1.safetensors"
                try fed.run(["export", "--home", fed.collector, "1", "--out", out])
                // The tensors, not the file: its metadata names the generation's digest.
                let file = try SafetensorsFile(bytes: try Data(contentsOf: URL(fileURLWithPath: out)))
                payloads.append(
                    file.names.map { "\($0)=\(file.tensor($0)!.floats().map(\.bitPattern))" }.joined(separator: ";"))
            }
            #expect(payloads[0] == payloads[1], "\(strategy): the tensors differ")
        }
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// The server optimisers against Flower itself: three generations of small
/// random updates through the real binary, and Flower's strategy classes
/// run on the same updates (Tests/Fixtures/flower_oracle.py); every
/// generation must agree to 1e-6 relative.
@Suite("server optimisers checked against Flower")
struct ServerOptimizerTests {
    /// Small deltas of both signs, the same on every run.
    static func randomDelta(seed: UInt64) throws -> [(name: String, tensor: Tensor)] {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return try Samples.weights().map { name, t in
            (
                name,
                Tensor(
                    shape: t.shape,
                    floats: (0..<t.count).map { _ in
                        state = state &* 6364136223846793005 &+ 1442695040888963407
                        return Float(Int64(state >> 40) - (1 << 23)) / Float(1 << 23) * 0.05
                    })
            )
        }
    }

    @Test(
        "fedavgm, fedadam, fedyogi and fedadagrad match Flower, and diloco PyTorch's Nesterov SGD, over three generations",
        arguments: [
            ("fedavgm", ["server_lr": 1.0, "momentum": 0.9]),
            ("fedadam", ["server_lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-9]),
            ("fedyogi", ["server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3]),
            ("fedadagrad", ["server_lr": 0.1, "tau": 1e-9]),
            ("diloco", ["server_lr": 0.7, "momentum": 0.9]),
        ])
    func matchesFlower(strategy: String, params: [String: Double]) throws {
        let fed = try Federation(sites: ["site-1", "site-2", "site-3"])
        try Federation.setConfig(home: fed.collector, table: "merge", "strategy", "\"\(strategy)\"")
        for (k, v) in params { try Federation.setConfig(home: fed.collector, table: "merge", k, "\(v)") }
        let dir = TempDir()
        var rounds: [[String: Any]] = []
        for round in 1...3 {
            let base = try fed.generation(round - 1)
            var updates: [[String: Any]] = []
            for (i, site) in ["site-1", "site-2", "site-3"].enumerated() {
                let delta = try Self.randomDelta(seed: UInt64(round * 10 + i))
                let examples = 100 * (i + 1) + round
                try fed.update(site: site, seq: Int64(round), base: base, examples: Int64(examples), tensors: delta)
                let path = dir.file("r\(round)-\(site).safetensors")
                try SafetensorsWriter.write(delta, to: path)
                updates.append(["delta": path, "examples": examples])
            }
            let merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
            #expect(merged["strategy"] as? String == strategy && merged["generation"] as? Int == round)
            try fed.run(["export", "--home", fed.collector, "\(round)", "--out", dir.file("g\(round).safetensors")])
            rounds.append(["updates": updates, "result": dir.file("g\(round).safetensors")])
        }
        try fed.run(["export", "--home", fed.collector, "0", "--out", dir.file("g0.safetensors")])
        // The state rides in the signed generation.
        let g3 = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000003.fbg"))
            ).payload)
        let state = try SafetensorsFile(bytes: try #require(g3.members[ServerOptimizer.stateMember]))
        #expect(state.metadata["fedbatch_strategy"] == strategy && state.tensor("step")?.floats() == [3])
        let spec: [String: Any] = [
            "strategy": strategy, "params": params, "initial": dir.file("g0.safetensors"), "rounds": rounds,
        ]
        // Flower has no DiLoCo: its oracle is PyTorch's own outer optimiser.
        let (python, oracle) =
            strategy == "diloco" ? (TestPaths.python, "diloco_oracle.py") : (TestPaths.flowerPython, "flower_oracle.py")
        let check = try Subprocess.run(
            python,
            [
                TestPaths.fixtures + "/" + oracle,
                try dir.write("case.json", try JSONSerialization.data(withJSONObject: spec)),
            ])
        #expect(check.status == 0, "\(check.out)\(check.err)")
        #expect(try fed.run(["log", "--home", fed.collector]).status == 0)
    }
}

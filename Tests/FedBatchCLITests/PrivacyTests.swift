import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Central differential privacy through the real binary: the noise on
/// the clipped, equally weighted mean; the accounting against Google's
/// dp-accounting; the budget's refusal; the replay of a merge from its
/// secret seed.
@Suite("central differential privacy")
struct PrivacyTests {
    static let arch = RobustStrategyTests.arch
    static let sites = ["site-1", "site-2", "site-3"]

    /// ε from dp-accounting for each list of noise multipliers.
    static func oracle(_ cases: [([Double], Double)]) throws -> [Double] {
        let dir = TempDir()
        let spec = cases.map { ["noise_multipliers": $0.0, "delta": $0.1] as [String: Any] }
        let r = try Subprocess.run(
            TestPaths.flowerPython,
            [
                TestPaths.fixtures + "/dp_accounting_oracle.py",
                try dir.write("cases.json", try JSONSerialization.data(withJSONObject: spec)),
            ])
        guard r.status == 0 else { throw Subprocess.Failure(description: r.err) }
        return try #require(try JSONSerialization.jsonObject(with: r.stdout) as? [Double])
    }

    static func enablePrivacy(
        _ fed: Federation, z: Double, clip: Double, sites m: Int, delta: Double, maxEpsilon: Double
    ) throws {
        let path = fed.collector + "/fedbatch.toml"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try
            (text
            + "\n[privacy]\nnoise_multiplier = \(z)\nclip_norm = \(clip)\nexpected_sites = \(m)\ndelta = \(delta)\nmax_epsilon = \(maxEpsilon)\n")
            .write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Writes one round of updates and returns each site's delta.
    static func writeRound(_ round: Int, fed: Federation) throws -> [[Float]] {
        let base = try fed.generation(round - 1)
        return try sites.enumerated().map { i, site in
            let delta = try RobustStrategyTests.randomDelta(seed: UInt64(round * 10 + i))
            try fed.update(site: site, seq: Int64(round), base: base, examples: Int64(100 * (i + 1)), tensors: delta)
            return delta.flatMap { $0.tensor.floats() }
        }
    }

    static func flatWeights(_ fed: Federation, _ generation: Int) throws -> [Double] {
        let out = fed.root + "/export-\(generation).safetensors"
        try fed.run(["export", "--home", fed.collector, "\(generation)", "--out", out])
        let file = try SafetensorsFile(bytes: try Data(contentsOf: URL(fileURLWithPath: out)))
        // In the architecture's order, as the deltas were generated.
        return try Samples.weights(arch: arch).flatMap { name, _ in file.tensor(name)!.floats().map(Double.init) }
    }

    @Test("the Renyi accountant agrees with dp-accounting to 1% over noise levels, generation counts and deltas")
    func accountantMatchesGoogle() throws {
        var cases: [([Double], Double)] = []
        for z in [0.5, 0.8, 1.0, 1.5, 3.0, 10.0] {
            for rounds in [1, 5, 30, 200] {
                for delta in [1e-5, 1e-3] { cases.append(([Double](repeating: z, count: rounds), delta)) }
            }
        }
        // A history whose noise changed along the way.
        cases.append(([1.0, 1.0, 2.0, 0.7, 5.0], 1e-6))
        let expected = try Self.oracle(cases)
        for ((zs, delta), want) in zip(cases, expected) {
            let got = RenyiAccountant.epsilon(
                inverseSquareSum: zs.reduce(0) { $0 + RenyiAccountant.term(noiseMultiplier: $1) }, delta: delta)
            #expect(
                abs(got - want) <= 0.01 * want,
                "z \(zs.first!) x\(zs.count), delta \(delta): fedbatch \(got), dp-accounting \(want)")
        }
    }

    @Test(
        "private merges: noise of z·C/m on the clipped mean, epsilon in the manifest and the log, a replay from the seed, the budget's refusal"
    )
    func privateMerges() throws {
        let fed = try Federation(sites: Self.sites, arch: Self.arch)
        let (z, clip, delta) = (1.0, 1.0, 1e-5)
        let eps = try Self.oracle([([z], delta), ([z, z], delta), ([z, z, z], delta)])
        try Self.enablePrivacy(fed, z: z, clip: clip, sites: 3, delta: delta, maxEpsilon: (eps[1] + eps[2]) / 2)
        let base = try Self.flatWeights(fed, 0)
        let deltas = try Self.writeRound(1, fed: fed)

        // An auditor's copy of the home, inbox included, before the merge.
        let audit = fed.root + "/audit", fresh = fed.root + "/fresh"
        for copy in [audit, fresh] { _ = try Subprocess.run("/bin/cp", ["-a", fed.collector, copy]) }

        let merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        let privacy = try #require(merged["privacy"] as? [String: Any])
        let e1 = try #require(privacy["epsilon"] as? Double)
        #expect(abs(e1 - eps[0]) <= 0.01 * eps[0], "\(e1) against \(eps[0])")
        #expect(privacy["rounds"] as? Int == 1 && privacy["sigma"] as? Double == z * clip / 3)
        // Every site weighs the same under [privacy], whatever it claims.
        #expect((merged["accepted"] as? [[String: Any]])?.allSatisfy { $0["weight"] as? Double == 1 } == true)

        // The seed is kept secret, and the manifest commits to it.
        let seedFile = fed.collector + "/noise-seeds/g000001.seed"
        let mode = try #require(FileManager.default.attributesOfItem(atPath: seedFile)[.posixPermissions] as? Int)
        #expect(mode == 0o600)
        let seedHex = try String(contentsOfFile: seedFile, encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(
            GaussianNoise.commitment(to: try #require(Digest(hex: seedHex)).bytes) == privacy["seed_sha256"] as? String)

        // What the noise should be: the new weights minus the base minus the
        // clipped deltas' sum over m = 3 has mean 0 and deviation σ = z·C/m.
        let next = try Self.flatWeights(fed, 1)
        var expected = base
        for d in deltas {
            let norm = d.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            let c = min(1, clip / norm)
            for i in expected.indices { expected[i] += c * Double(d[i]) / 3 }
        }
        let residual = zip(next, expected).map { $0 - $1 }
        let mean = residual.reduce(0, +) / Double(residual.count)
        let sd = (residual.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(residual.count - 1)).squareRoot()
        let sigma = z * clip / 3
        #expect(abs(sd - sigma) < 0.05 * sigma, "noise deviation \(sd), expected \(sigma)")
        #expect(abs(mean) < 5 * sigma / Double(residual.count).squareRoot(), "noise mean \(mean)")

        // The auditor replays the merge from the seed, bit for bit; a fresh
        // seed gives other noise.
        let replay = try fed.run(["merge", "--home", audit, "--json", "--noise-seed", seedFile]).summary()
        #expect(replay["digest"] as? String == merged["digest"] as? String)
        let other = try fed.run(["merge", "--home", fresh, "--json"]).summary()
        #expect(other["digest"] as? String != merged["digest"] as? String)

        _ = try Self.writeRound(2, fed: fed)
        let second = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        let e2 = try #require((second["privacy"] as? [String: Any])?["epsilon"] as? Double)
        #expect(abs(e2 - eps[1]) <= 0.01 * eps[1])

        // The third would overspend: exit 6, nothing written, nothing moved.
        _ = try Self.writeRound(3, fed: fed)
        let refused = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        #expect(refused.status == 6, "\(refused.out)\(refused.err)")
        #expect(try refused.jsonErrorLines().last?["code"] as? String == "privacy.budget-exhausted")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/inbox").count == 3)
        #expect(try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/quarantine").isEmpty)
        #expect(!FileManager.default.fileExists(atPath: fed.collector + "/generations/g000003.fbg"))

        // The log shows the cumulative epsilon of each generation.
        let log = try fed.run(["log", "--home", fed.collector, "--json"]).summary()
        let links = try #require(log["generations"] as? [[String: Any]])
        #expect(
            links[0]["epsilon"] is NSNull && links[2]["epsilon"] as? Double == e2
                && links[2]["delta"] as? Double == delta)
        #expect(try fed.run(["log", "--home", fed.collector]).out.contains("EPSILON"))

        // A revert releases nothing new but forgets nothing spent.
        try fed.run(["revert", "--home", fed.collector, "1"])
        let reverted = try #require(
            try fed.run(["log", "--home", fed.collector, "--json"]).summary()["generations"] as? [[String: Any]])
        #expect(reverted.count == 4 && reverted[3]["epsilon"] as? Double == e2)
        #expect(try fed.fedbatch(["merge", "--home", fed.collector]).status == 6)
    }

    @Test("privacy refuses what it cannot cover: a robust strategy, a seed without [privacy], a malformed seed")
    func refusals() throws {
        let fed = try Federation(sites: Self.sites, arch: Self.arch)
        _ = try Self.writeRound(1, fed: fed)
        let scratch = TempDir()
        let seed = try scratch.write("seed", Data((String(repeating: "ab", count: 32) + "\n").utf8))
        let noPrivacy = try fed.fedbatch(["merge", "--home", fed.collector, "--json", "--noise-seed", seed])
        let noPrivacyCode = try noPrivacy.jsonErrorLines().last?["code"] as? String
        #expect(noPrivacy.status == 2 && noPrivacyCode == "usage.noise-seed", "\(noPrivacy.err)")

        try Self.enablePrivacy(fed, z: 1, clip: 1, sites: 3, delta: 1e-5, maxEpsilon: 100)
        let bad = try scratch.write("bad-seed", Data("not a seed\n".utf8))
        let malformed = try fed.fedbatch(["merge", "--home", fed.collector, "--noise-seed", bad])
        #expect(malformed.status == 2 && malformed.err.contains("64 hex digits"), "\(malformed.err)")

        let robust = try fed.fedbatch(["merge", "--home", fed.collector, "--json", "--strategy", "median"])
        let robustCode = try robust.jsonErrorLines().last?["code"] as? String
        #expect(robust.status == 1 && robustCode == "privacy.strategy", "\(robust.err)")
        // Nothing was touched by any of them.
        #expect(try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/inbox").count == 3)
        #expect(try fed.run(["merge", "--home", fed.collector]).status == 0)
    }
}

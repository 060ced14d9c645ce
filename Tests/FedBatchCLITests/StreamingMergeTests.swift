import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// `[merge] stream`: a merge a chunk of the model at a time, with the
/// bundles, the base and the output on disk, against the same merge in
/// memory, through the real binary.
@Suite("streaming merge")
struct StreamingMergeTests {
    /// 12,730 parameters: with chunk_mb = 0.01 (655 elements a chunk) the
    /// first tensor alone is 20 chunks, and chunks end inside int8's blocks
    /// of 256 and between topk's kept indices.
    static let arch = "mlp:784-16-10"
    static let sites = ["site-1", "site-2", "site-3", "site-4", "site-5"]

    /// A collector and its twin (a copy of the home, the same keys), one
    /// merging in memory and the other streaming, both with `config`.
    func twins(_ config: [(String, String)]) throws -> (Federation, String) {
        let fed = try Federation(sites: Self.sites, arch: Self.arch)
        for (key, value) in config { try Federation.setConfig(home: fed.collector, table: "merge", key, value) }
        let twin = fed.root + "/twin"
        #expect(try Subprocess.run("/bin/cp", ["-a", fed.collector, twin]).status == 0)
        try Federation.setConfig(home: fed.collector, table: "merge", "stream", "\"never\"")
        try Federation.setConfig(home: twin, table: "merge", "stream", "\"always\"")
        return (fed, twin)
    }

    /// A delta of `site` stored with `codec`, signed, in both inboxes.
    func send(
        _ fed: Federation, twin: String, site: String, seq: Int64, base: Int, codec: String, examples: Int64 = 100,
        edit: (inout [[Float]]) -> Void = { _ in }
    ) throws {
        let arch = try ModelArchitecture(spec: Self.arch)
        let index = Self.sites.firstIndex(of: site)! + 1
        let salt = Float(index) * Float(seq)
        var k: Float = 0
        var tensors = arch.tensorShapes.map { _, shape in
            (0..<shape.reduce(1, *)).map { _ -> Float in
                k += 1
                return sin(k * 0.7 + salt) * 0.02 * salt
            }
        }
        edit(&tensors)
        let stored = try Codecs.make(name: codec, topkFraction: 0.1).encode(ModelWeights(arch: arch, tensors: tensors))
        let g = try fed.generation(base)
        let manifest = Manifest(
            kind: .update, model: .init(id: "demo", arch: Self.arch), created: "2026-01-0\(seq)T00:00:0\(index)Z",
            codec: codec, base: .init(number: g.number, digest: g.digest), site: .init(id: site, seq: seq),
            numExamples: examples)
        let sealed = try fed.signer(fed.siteKeys[site]!).seal(
            manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(stored))])
        for home in [fed.collector, twin] {
            try sealed.file.write(to: URL(fileURLWithPath: "\(home)/inbox/\(site)-\(seq).fbu"))
        }
    }

    /// Merges both homes; the generations' payloads must be the same bytes.
    func mergeBoth(_ fed: Federation, twin: String, generation n: Int) throws -> [String: Any] {
        let memory = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        let streamed = try fed.run(["merge", "--home", twin, "--json"]).summary()
        let name = "/generations/" + HomeLayout.generationFileName(n)
        let a = try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: fed.collector + name)))
        let b = try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: twin + name)))
        #expect(a.payload == b.payload, "generation \(n) differs")
        #expect(memory["streamed"] as? Bool == false && streamed["streamed"] as? Bool == true)
        #expect((memory["accepted"] as? [Any])?.count == (streamed["accepted"] as? [Any])?.count)
        return streamed
    }

    @Test(
        "streamed, fedavg with a clip, a stale update and a remembered one, and fedadam over two generations, write the bytes a merge in memory writes, from bundles in every codec"
    )
    func sameBytes() throws {
        for strategy in ["fedavg", "fedadam"] {
            let (fed, twin) = try twins([
                ("strategy", "\"\(strategy)\""), ("chunk_mb", "0.01"), ("clip_norm", "2.0"), ("max_staleness", "2"),
                ("memory", "\"mifa\""),
            ])
            let codecs = ["fp32", "fp16", "bf16", "int8", "topk"]
            for (i, site) in Self.sites.enumerated() {
                try send(fed, twin: twin, site: site, seq: 1, base: 0, codec: codecs[i], examples: Int64(50 * (i + 1)))
            }
            let first = try mergeBoth(fed, twin: twin, generation: 1)
            #expect((first["accepted"] as? [Any])?.count == 5)
            // Generation 2: a server optimiser resumes its moments from
            // generation 1's state member; site-5's update is one behind;
            // site-4 sends nothing, and its update of generation 1 is
            // remembered (read back from accepted/, spilled as any bundle).
            for (i, site) in Self.sites.prefix(3).enumerated() {
                try send(fed, twin: twin, site: site, seq: 2, base: 1, codec: codecs[(i + 2) % 5])
            }
            try send(fed, twin: twin, site: "site-5", seq: 2, base: 0, codec: "int8")
            let second = try mergeBoth(fed, twin: twin, generation: 2)
            #expect((second["remembered"] as? [[String: Any]])?.map { $0["site"] as? String } == ["site-4"])
            if strategy == "fedadam" {
                let state = try Verifier(keysDirectory: twin + "/keys")
                    .open(path: twin + "/generations/" + HomeLayout.generationFileName(2))
                    .container.members[ContainerPath.optimizerState]
                #expect(try SafetensorsFile(bytes: try #require(state)).metadata["fedbatch_strategy"] == "fedadam")
            }
            // Sites verify and train on a streamed generation like any other.
            #expect(try fed.fedbatch(["log", "--home", twin]).status == 0)
        }
    }

    @Test(
        "a sum beyond the exact grid refuses the bundle adding it whole would refuse, and the streamed merge then writes the same generation"
    )
    func overflowRestarts() throws {
        let (fed, twin) = try twins([("chunk_mb", "0.01")])
        // Each term 3.9e18 at one element: four sum to 1.56e19, a fifth
        // passes 2^64 (1.8e19), the grid's limit.
        for site in Self.sites {
            try send(fed, twin: twin, site: site, seq: 1, base: 0, codec: "fp32", examples: 1) { t in
                t[0][5000] = 3.9e18
            }
        }
        let streamed = try mergeBoth(fed, twin: twin, generation: 1)
        #expect((streamed["accepted"] as? [Any])?.count == 4)
        let rejected = try #require(streamed["rejected"] as? [[String: Any]])
        #expect(rejected.count == 1 && rejected.first?["code"] as? String == "aggregation.out-of-range")
        let names = { (home: String) in
            try FileManager.default.contentsOfDirectory(atPath: home + "/quarantine").filter { $0.hasSuffix(".fbu") }
        }
        #expect(try names(fed.collector) == names(twin))
    }

    /// The peak RSS of a streaming merge of two bundles of `arch`, in KiB.
    func streamedRSS(_ arch: String) throws -> Int {
        let model = try ModelArchitecture(spec: arch)
        // Zeros but for one value a tensor, written as bytes: quick to make
        // even in a debug build, for generation 0 and for the updates.
        func weights(_ first: Float) throws -> [(name: String, tensor: Tensor)] {
            try model.tensorShapes.map { name, shape in
                var data = Data(count: shape.reduce(1, *) * 4)
                data.replaceSubrange(0..<4, with: LittleEndian.bytes(of: [first]))
                return (name, try Tensor(dtype: .f32, shape: shape, data: data))
            }
        }
        let fed = try Federation(sites: ["site-1", "site-2"], arch: arch, weights: try weights(0.5))
        try Federation.setConfig(home: fed.collector, table: "merge", "chunk_mb", "4")
        try Federation.setConfig(home: fed.collector, table: "merge", "stream", "\"always\"")
        let g0 = try fed.generation(0)
        for (i, site) in ["site-1", "site-2"].enumerated() {
            let tensors = try weights(0.01 * Float(i + 1))
            let manifest = Manifest(
                kind: .update, model: .init(id: "demo", arch: arch), created: "2026-01-01T00:00:0\(i)Z",
                base: .init(number: g0.number, digest: g0.digest), site: .init(id: site, seq: 1), numExamples: 100)
            let sealed = try fed.signer(fed.siteKeys[site]!).seal(
                manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(tensors))])
            try sealed.file.write(to: URL(fileURLWithPath: "\(fed.collector)/inbox/\(site).fbu"))
        }
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        let r = try Subprocess.run(
            TestPaths.optimizedFedbatch, ["merge", "--home", fed.collector, "--json"], environment: env,
            measuringRSS: true)
        #expect(r.status == 0, "\(r.err)")
        #expect(try r.summary()["streamed"] as? Bool == true)
        return r.maxRSSKiB
    }

    @Test(
        "a streaming merge's memory does not grow with the model: 16.8M and 33.6M parameters peak within 16 MiB of each other, below the exact sums a merge in memory holds"
    )
    func memoryBound() throws {
        // Above 16M parameters zstd's buffers for the output are at their
        // full size. The weights grow by 67 MB from one model to the other;
        // a merge in memory would grow by 28 bytes a parameter, 470 MB.
        let small = try streamedRSS("mlp:4096-4096-10")
        let large = try streamedRSS("mlp:4096-8192-10")
        #expect(small > 0 && large > 0)
        #expect(large - small < 16 * 1024, "peak RSS \(small) KiB at 4.2M parameters, \(large) KiB at 16.8M")
        // The exact sums alone of a merge in memory: 16 bytes a parameter.
        let sums = 16 * 33_644_554 / 1024
        #expect(large < sums, "peak RSS \(large) KiB; a merge in memory holds \(sums) KiB of sums alone")
    }

    @Test(
        "a streamed merge killed at each write step leaves the old generation or the new one, and a rerun finishes with the bytes of a merge in memory",
        arguments: ["before-generation-rename", "after-generation", "after-ledger", "after-first-move"])
    func crash(at point: String) throws {
        let (fed, twin) = try twins([("chunk_mb", "0.01")])
        for (i, site) in Self.sites.prefix(2).enumerated() {
            try send(fed, twin: twin, site: site, seq: 1, base: 0, codec: ["fp32", "int8"][i])
        }
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_FAULT"] = point
        let crashed = try Subprocess.run(TestPaths.fedbatch, ["merge", "--home", twin], environment: env)
        #expect(crashed.status == 99, "\(crashed.err)")
        let generations = { try FileManager.default.contentsOfDirectory(atPath: twin + "/generations").sorted() }
        if point == "before-generation-rename" {
            // Written whole under a hidden name, never under the real one.
            #expect(try generations().contains { $0.hasPrefix(".g000001.fbg.tmp-") })
            #expect(try !generations().contains("g000001.fbg"))
        }
        env.removeValue(forKey: "FEDBATCH_FAULT")
        let rerun = try Subprocess.run(TestPaths.fedbatch, ["merge", "--home", twin], environment: env)
        #expect(rerun.status == (point == "before-generation-rename" ? 0 : 5), "\(rerun.err)")
        #expect(try generations() == ["g000000.fbg", "g000001.fbg"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: twin + "/inbox").isEmpty)
        #expect(try fed.fedbatch(["log", "--home", twin]).status == 0)
        try fed.run(["merge", "--home", fed.collector])
        let name = "/generations/g000001.fbg"
        #expect(
            try ContainerFile.split(Data(contentsOf: URL(fileURLWithPath: fed.collector + name))).payload
                == ContainerFile.split(Data(contentsOf: URL(fileURLWithPath: twin + name))).payload)
    }

    @Test(
        "a private merge streamed draws the same noise for the same elements as one in memory: the same bytes from the same seed"
    )
    func privateSameBytes() throws {
        let fed = try Federation(sites: Self.sites, arch: Self.arch)
        try Federation.setConfig(home: fed.collector, table: "merge", "chunk_mb", "0.01")
        try PrivacyTests.enablePrivacy(fed, z: 1, clip: 1, sites: 5, delta: 1e-5, maxEpsilon: 100)
        let twin = fed.root + "/twin"
        #expect(try Subprocess.run("/bin/cp", ["-a", fed.collector, twin]).status == 0)
        try Federation.setConfig(home: fed.collector, table: "merge", "stream", "\"never\"")
        try Federation.setConfig(home: twin, table: "merge", "stream", "\"always\"")
        for (i, site) in Self.sites.enumerated() {
            try send(fed, twin: twin, site: site, seq: 1, base: 0, codec: ["fp32", "int8", "bf16", "topk", "fp16"][i])
        }
        let dir = TempDir()
        let seed = try dir.write("seed", Data((String(repeating: "5a", count: 32) + "\n").utf8))
        let memory = try fed.run(["merge", "--home", fed.collector, "--json", "--noise-seed", seed]).summary()
        let streamed = try fed.run(["merge", "--home", twin, "--json", "--noise-seed", seed]).summary()
        #expect(memory["streamed"] as? Bool == false && streamed["streamed"] as? Bool == true)
        #expect(streamed["privacy"] != nil)
        let name = "/generations/g000001.fbg"
        #expect(
            try ContainerFile.split(Data(contentsOf: URL(fileURLWithPath: fed.collector + name))).payload
                == ContainerFile.split(Data(contentsOf: URL(fileURLWithPath: twin + name))).payload)
    }

    @Test(
        "bad bundles are refused streamed for the same reasons as in memory, and the good ones merge to the same bytes")
    func sameRefusals() throws {
        let (fed, twin) = try twins([("chunk_mb", "0.01")])
        try send(fed, twin: twin, site: "site-1", seq: 1, base: 0, codec: "fp32")
        try send(fed, twin: twin, site: "site-2", seq: 1, base: 0, codec: "int8")
        // A NaN deep in the first tensor (the codec's check), then two
        // deltas whose terms (weight × delta) leave the exact grid (2^62):
        // float32's largest values, which the finiteness check lets pass,
        // and 1e17 at weight 100.
        try send(fed, twin: twin, site: "site-3", seq: 1, base: 0, codec: "fp32") { $0[0][9000] = .nan }
        try send(fed, twin: twin, site: "site-4", seq: 1, base: 0, codec: "fp32") { t in
            for j in 0..<16 { t[1][j] = j % 2 == 0 ? .greatestFiniteMagnitude : -.greatestFiniteMagnitude }
        }
        try send(fed, twin: twin, site: "site-5", seq: 1, base: 0, codec: "fp32", examples: 100) { $0[0][100] = 1e17 }
        for home in [fed.collector, twin] {
            try Data("not a bundle".utf8).write(to: URL(fileURLWithPath: home + "/inbox/junk.fbu"))
        }
        let streamed = try mergeBoth(fed, twin: twin, generation: 1)
        #expect((streamed["accepted"] as? [Any])?.count == 2)
        func reasons(_ home: String) throws -> [String: String] {
            var out: [String: String] = [:]
            for f in try FileManager.default.contentsOfDirectory(atPath: home + "/quarantine")
            where f.hasSuffix(".reason.json") {
                let r = try JSONSerialization.jsonObject(
                    with: Data(contentsOf: URL(fileURLWithPath: "\(home)/quarantine/\(f)")))
                out[f] = (r as? [String: Any])?["code"] as? String
            }
            return out
        }
        let memory = try reasons(fed.collector)
        #expect(memory.count == 4)
        #expect(try reasons(twin) == memory)
        #expect(
            memory == [
                "junk.fbu.reason.json": "signature.missing", "site-3-1.fbu.reason.json": "tensors.non-finite",
                "site-4-1.fbu.reason.json": "aggregation.out-of-range",
                "site-5-1.fbu.reason.json": "aggregation.out-of-range",
            ], "\(memory)")
    }
}

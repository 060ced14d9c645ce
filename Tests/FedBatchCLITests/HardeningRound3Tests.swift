import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Wave 3's hardening: trust follows the chain, numbers read from files
/// never trap, the collector signs only what its sites would accept, and a
/// region speaks only for the sites it serves. Real keys, the real binary.
@Suite("hardening, round 3")
struct HardeningRound3Tests {
    static func copyGeneration(_ fed: Federation, _ n: Int, to home: String) throws {
        let name = HomeLayout.generationFileName(n)
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/" + name, toPath: home + "/generations/" + name)
    }

    static func code(_ r: ProcessResult) throws -> String? {
        (try r.summary()["files"] as? [[String: Any]])?.first?["code"] as? String
    }

    @Test(
        "after a rotation, a generation the retired collector key signs is refused however the generations reach a site"
    )
    func retiredCollectorKey() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        let old = fed.collectorKey
        let new = try fed.keyring.generate("collector-new")
        // g1 plain, g2 carries the rotation (the old key's last), g3 by the new key.
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(0))
        try fed.run(["merge", "--home", fed.collector])
        try fed.run(["keys", "rotate", "--home", fed.collector, "--new-key", new])
        try fed.run(["revert", "--home", fed.collector, "0"])
        try fed.run(["revert", "--home", fed.collector, "1"])
        // g4 on g3, signed by the old key (stolen, say).
        let g3 = try fed.generation(3)
        let forged = Manifest(
            kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-09T00:00:00Z",
            generation: 4, parent: .init(number: 3, digest: g3.digest), included: [], rejected: [])
        let g4 = try fed.signer(old).seal(
            manifest: forged, members: [(ContainerPath.tensors, SafetensorsWriter.encode(try Samples.weights()))])
        let site1 = fed.site("site-1"), site2 = fed.site("site-2")

        // Site-1 last trained on g1, then is handed g2, g3 and g4 at once.
        for n in [0, 1] { try Self.copyGeneration(fed, n, to: site1) }
        try fed.run(["export", "--home", site1, "latest", "--out", fed.root + "/w1.safetensors"])
        try fed.run(["pack", "--home", site1, "--weights", fed.root + "/w1.safetensors", "--num-examples", "10", "-q"])
        for n in [2, 3] { try Self.copyGeneration(fed, n, to: site1) }
        try g4.file.write(to: URL(fileURLWithPath: site1 + "/generations/g000004.fbg"))
        // Weights with no generation in their metadata: pack takes the newest.
        let plain = try fed.keyring.dir.write("plain.safetensors", SafetensorsWriter.encode(try Samples.weights()))
        let pack = try fed.fedbatch(["pack", "--home", site1, "--weights", plain, "--num-examples", "10", "--json"])
        #expect(pack.status == 3, "\(pack.err)")
        #expect(pack.err.contains("signature.key-range"), "\(pack.err)")
        let sent = try FileManager.default.contentsOfDirectory(atPath: site1 + "/outbox").filter { !$0.hasPrefix(".") }
        #expect(sent.count == 1)
        let v1 = try fed.fedbatch(["verify", "--home", site1, "4", "--json"])
        let c1 = try Self.code(v1)
        #expect(v1.status == 3 && c1 == "signature.key-range", "\(v1.out)")
        // g3, by the new key, is fine.
        #expect(try fed.fedbatch(["verify", "--home", site1, "3"]).status == 0)

        // A fresh site handed g0 to g4 trusts g4 no more.
        for n in 0...3 { try Self.copyGeneration(fed, n, to: site2) }
        try g4.file.write(to: URL(fileURLWithPath: site2 + "/generations/g000004.fbg"))
        let v2 = try fed.fedbatch(["verify", "--home", site2, "latest", "--json"])
        let c2 = try Self.code(v2)
        #expect(v2.status == 3 && c2 == "signature.key-range", "\(v2.out)")
        let export = try fed.fedbatch(["export", "--home", site2, "latest", "--out", fed.root + "/w4.safetensors"])
        #expect(export.status == 3, "\(export.err)")
        // A gap hides which key may sign: g3 without g2 is refused.
        try FileManager.default.removeItem(atPath: site2 + "/generations/g000002.fbg")
        let gap = try fed.fedbatch(["verify", "--home", site2, "3", "--json"])
        let cg = try Self.code(gap)
        #expect(gap.status == 3 && cg == "chain.gap", "\(gap.out)")
        try Self.copyGeneration(fed, 2, to: site2)
        #expect(try fed.fedbatch(["verify", "--home", site2, "3"]).status == 0)
    }

    /// A collector home for `tensors:w=F32[2,3];n=I64[]` (a weight and a
    /// BatchNorm-style counter) with the federation's sites pinned.
    static func integerModel(_ fed: Federation) throws -> String {
        let home = fed.root + "/intcol"
        let weights = try fed.keyring.dir.write(
            "int.safetensors",
            SafetensorsWriter.encode([
                ("w", Tensor(shape: [2, 3], floats: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])),
                ("n", try Tensor(shape: [], dtype: .i64, values: [5])),
            ]))
        try fed.run([
            "init", "collector", "--home", home, "--model-id", "ints", "--arch", "tensors:w=F32[2,3];n=I64[]",
            "--key", fed.collectorKey, "--weights", weights,
        ])
        try Federation.setConfig(home: home, table: "merge", "min_bundles", "1")
        try Federation.setConfig(home: home, table: "merge", "settle_seconds", "0")
        for (s, fpr) in fed.siteKeys {
            try fed.run(["keys", "add", "--home", home, "--site", s, try fed.keyring.exportPublic(fpr, to: "\(s).asc")])
        }
        return home
    }

    static func integerUpdate(
        _ fed: Federation, home: String, site: String, seq: Int64, counter: Float
    ) throws -> String {
        let file = try ContainerFile.split(
            try Data(contentsOf: URL(fileURLWithPath: home + "/generations/g000000.fbg")))
        let manifest = Manifest(
            kind: .update, model: .init(id: "ints", arch: "tensors:w=F32[2,3];n=I64[]"),
            created: "2026-01-01T00:00:00Z",
            base: .init(number: 0, digest: file.digest.hex), site: .init(id: site, seq: seq), numExamples: 10)
        let tensors: [(name: String, tensor: Tensor)] = [
            ("w", Tensor(shape: [2, 3], floats: [Float](repeating: 0.01, count: 6))),
            ("n", Tensor(shape: [], floats: [counter])),
        ]
        let sealed = try fed.signer(fed.siteKeys[site]!).seal(
            manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(tensors))])
        let path = home + "/inbox/\(site)-\(seq).fbu"
        try sealed.file.write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test(
        "an integer tensor's increment that a generation could not hold is refused with its bundle, never signed and never a trap"
    )
    func integerIncrements() throws {
        let fed = try Federation(sites: ["site-1", "site-2", "site-3"])
        let home = try Self.integerModel(fed)
        // 2^25 would leave float32's exact integers; 3.3e25 would trap a
        // plain Int64 conversion; site-3 counts 7 batches honestly.
        _ = try Self.integerUpdate(fed, home: home, site: "site-1", seq: 1, counter: 33_554_432)
        _ = try Self.integerUpdate(fed, home: home, site: "site-2", seq: 1, counter: 3.3e25)
        _ = try Self.integerUpdate(fed, home: home, site: "site-3", seq: 1, counter: 7)
        let r = try fed.fedbatch(["merge", "--home", home, "--json"])
        #expect(r.status == 0, "\(r.err)")
        let s = try r.summary()
        let codes = (s["rejected"] as? [[String: Any]] ?? []).map { $0["code"] as? String }
        #expect(codes == ["aggregation.integer-range", "aggregation.integer-range"], "\(s)")
        #expect((s["accepted"] as? [[String: Any]])?.map { $0["site"] as? String } == ["site-3"])
        // What was signed verifies, holding 5 + 7.
        #expect(try fed.fedbatch(["verify", "--home", home, "1"]).status == 0)
        #expect(try fed.fedbatch(["log", "--home", home]).status == 0)
        try fed.run(["export", "--home", home, "1", "--out", fed.root + "/out.safetensors"])
        let out = try SafetensorsFile.open(path: fed.root + "/out.safetensors")
        #expect(out.tensor("n")?.integers() == [12])
    }
}

/// Directory remotes written by others: links planted or swapped in mid
/// transfer reach nothing outside the remote, one bad object does not stop
/// the rest, and a file still being copied in is left for later.
@Suite("hardening, round 3: directory remotes")
struct RemoteDirectoryHardeningTests {
    static func victims(_ dir: String, count: Int) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for i in 0..<count { try Data("victim \(i)\n".utf8).write(to: URL(fileURLWithPath: "\(dir)/v\(i).fbu")) }
    }

    @Test(
        "a link planted in the remote stops that object only; push, publish and pull never write, read or delete through it"
    )
    func plantedLinks() throws {
        let (fed, stick) = try RemoteDirectoryTests.setUp()
        let outside = fed.root + "/outside"
        try Self.victims(outside, count: 3)
        // site-1's directory on the remote is a link to the outside.
        try FileManager.default.createDirectory(atPath: stick + "/inbox", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: stick + "/inbox/site-1", withDestinationPath: outside)
        let push = try fed.fedbatch(["push", "--home", fed.site("site-1"), "--json"])
        #expect(push.status == 1, "\(push.err)")
        #expect((try push.summary()["refused"] as? [[String: Any]])?.first?["code"] as? String == "io.error")
        #expect(RemoteDirectoryTests.files(outside) == ["v0.fbu", "v1.fbu", "v2.fbu"])
        #expect(RemoteDirectoryTests.files(fed.site("site-1") + "/outbox").count == 1)  // kept for the next push
        // site-2's push is unaffected.
        try fed.run(["push", "--home", fed.site("site-2")])
        // pull takes site-2's bundle and leaves the link's targets alone.
        let pull = try fed.fedbatch(["pull", "--home", fed.collector, "--json"])
        #expect((try pull.summary()["transferred"] as? [[String: Any]])?.count == 1, "\(pull.out)")
        #expect(RemoteDirectoryTests.files(outside) == ["v0.fbu", "v1.fbu", "v2.fbu"])
        #expect(RemoteDirectoryTests.files(fed.collector + "/inbox") == ["demo-g0-site-2-1.fbu"])
        // publish into a linked generations/ writes nothing outside.
        let elsewhere = fed.root + "/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: stick + "/generations", withDestinationPath: elsewhere)
        let publish = try fed.fedbatch(["publish", "--home", fed.collector, "--json"])
        #expect(publish.status == 1, "\(publish.err)")
        #expect(RemoteDirectoryTests.files(elsewhere).isEmpty)
    }

    @Test("a writer swapping a remote directory for a link during pull gets nothing outside deleted or copied in")
    func racingWriter() throws {
        let (fed, stick) = try RemoteDirectoryTests.setUp()
        let outside = fed.root + "/outside"
        let real = stick + "/inbox/site-1", parked = stick + "/parked"
        try FileManager.default.createDirectory(atPath: real, withIntermediateDirectories: true)
        // 300 files of the attacker's naming on both sides of the swap.
        for i in 0..<300 { try Data("junk \(i)\n".utf8).write(to: URL(fileURLWithPath: "\(real)/v\(i).fbu")) }
        try Self.victims(outside, count: 300)
        let stop = LockedFlag()
        let swapper = Thread {
            // real <-> link until pull ends: the real directory long enough
            // to be listed, the link long enough to catch gets and deletes.
            while !stop.value {
                usleep(3000)
                _ = rename(real, parked)
                _ = symlink(outside, real)
                usleep(2000)
                _ = unlink(real)
                _ = rename(parked, real)
            }
        }
        swapper.start()
        _ = try fed.fedbatch(["pull", "--home", fed.collector, "--json"])
        stop.set()
        while !swapper.isFinished { usleep(1000) }
        // Every outside file is still there, unchanged, and none came in.
        #expect(RemoteDirectoryTests.files(outside).count == 300)
        for i in 0..<300 {
            #expect(try String(contentsOfFile: "\(outside)/v\(i).fbu", encoding: .utf8) == "victim \(i)\n")
        }
        for name in RemoteDirectoryTests.files(fed.collector + "/inbox") {
            #expect(
                try String(contentsOfFile: fed.collector + "/inbox/" + name, encoding: .utf8).hasPrefix("junk"),
                "\(name)")
        }
    }

    @Test(
        "a file still being copied onto a directory remote waits for merge.settle_seconds; a bad object does not stop the others"
    )
    func settlingAndIsolation() throws {
        let (fed, stick) = try RemoteDirectoryTests.setUp()
        for site in ["site-1", "site-2"] { try fed.run(["push", "--home", fed.site(site)]) }
        try Federation.setConfig(home: fed.collector, table: "merge", "settle_seconds", "3600")
        let early = try fed.fedbatch(["pull", "--home", fed.collector, "--json"])
        #expect(early.status == 5, "\(early.err)")
        let waiting = try early.summary()["waiting"] as? [[String: Any]]
        #expect(waiting?.count == 2 && waiting?.first?["code"] as? String == "remote.settling", "\(early.out)")
        #expect(RemoteDirectoryTests.files(stick + "/inbox/site-1").count == 1)
        try Federation.setConfig(home: fed.collector, table: "merge", "settle_seconds", "0")
        #expect(
            (try fed.run(["pull", "--home", fed.collector, "--json"]).summary()["transferred"] as? [Any])?.count == 2)
    }
}

/// S3 remotes written by others: an odd key or a lying object does not stop
/// the others, run after run.
@Suite("hardening, round 3: S3 remotes")
struct RemoteS3HardeningTests {
    @Test(
        "a key XML cannot carry and an object with a false checksum are that object's problem; every other object is pulled"
    )
    func oddObjects() throws {
        let s3 = try S3Server()
        let fed = try RemoteS3Tests.federation(s3)
        for site in ["site-1", "site-2"] {
            try RemoteS3Tests.bundle(fed, site: site)
            try fed.run(["push", "--home", fed.site(site)])
        }
        // A bucket writer's key with \u{01}, first in key order, and an
        // object whose own checksum metadata lies.
        try s3.put(key: "federation/fmnist/inbox/site-1/a\u{01}b.fbu", sha256: String(repeating: "0", count: 64))
        try s3.put(key: "federation/fmnist/inbox/site-1/0-liar.fbu", sha256: String(repeating: "0", count: 64))
        for run in 1...2 {
            let r = try fed.fedbatch(["pull", "--home", fed.collector, "--json"])
            let s = try r.summary()
            let refused = (s["refused"] as? [[String: Any]] ?? []).map { $0["code"] as? String ?? "" }.sorted()
            #expect(refused == ["remote.foreign-object", "remote.integrity"], "run \(run): \(s)")
            #expect(r.status == 1)
            if run == 1 { #expect((s["transferred"] as? [Any])?.count == 2, "\(s)") }
        }
        #expect(RemoteS3Tests.inbox(fed).filter { !$0.hasPrefix(".") }.count == 2)
        // Text output escapes the control character.
        let text = try fed.fedbatch(["pull", "--home", fed.collector])
        #expect(!text.err.contains("\u{01}") && text.err.contains("a\\x01b.fbu"), "\(text.err)")
    }
}

/// A flag shared with a thread.
final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    var value: Bool { lock.lock(); defer { lock.unlock() }; return flag }
    func set() { lock.lock(); flag = true; lock.unlock() }
}

/// What a crash leaves behind is finished or reclaimed by the next run.
@Suite("hardening, round 3: crash recovery")
struct CrashRecoveryHardeningTests {
    @Test(
        "killed after writing a generation of encrypted inputs, the rerun files them as included, not as replays",
        arguments: ["after-generation", "after-ledger"])
    func encryptedInputs(at point: String) throws {
        let (fed, _) = try EncryptionTests.setUp()
        for site in ["site-1", "site-2"] { try fed.run(["push", "--home", fed.site(site), "--encrypt"]) }
        try fed.run(["pull", "--home", fed.collector])
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_FAULT"] = point
        let crashed = try Subprocess.start(TestPaths.fedbatch, ["merge", "--home", fed.collector], environment: env)
            .wait()
        #expect(crashed.status == 99, "\(crashed.err)")
        env.removeValue(forKey: "FEDBATCH_FAULT")
        let rerun = try Subprocess.fedbatch(["merge", "--home", fed.collector, "--json"], environment: env)
        #expect(rerun.status == 5, "\(rerun.err)")
        #expect(RemoteDirectoryTests.files(fed.collector + "/quarantine").isEmpty)
        #expect(RemoteDirectoryTests.files(fed.collector + "/accepted").count == 2)
        #expect(RemoteDirectoryTests.files(fed.collector + "/inbox").isEmpty)
        // The next generation lists no refusal of what its parent included.
        try fed.update(site: "site-1", seq: 2, base: try fed.generation(1))
        try fed.run(["merge", "--home", fed.collector])
        #expect(
            try Inspection.inspect(path: fed.collector + "/generations/g000002.fbg").manifest.rejected?.isEmpty ?? true)
    }

    @Test("a killed transfer's temporary file and a scratch keyring killed before its marker are reclaimed")
    func leftovers() throws {
        let (fed, _) = try RemoteDirectoryTests.setUp()
        try Data("half a bundle".utf8).write(
            to: URL(fileURLWithPath: fed.collector + "/inbox/.fedbatch-transfer-AbC123"))
        try Data("half a generation".utf8).write(
            to: URL(fileURLWithPath: fed.site("site-1") + "/generations/.fedbatch-transfer-XyZ789"))
        let tmp = TempDir()
        let stale = tmp.path + "/fb-scratch-Qw3rty", fresh = tmp.path + "/fb-scratch-As4dfg",
            other = tmp.path + "/fb-notours"
        for d in [stale, fresh, other] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: false)
        }
        // Unmarked and an hour old: abandoned; unmarked and new: may be a
        // live process's; not a scratch keyring's name: not fedbatch's to touch.
        let hourAgo = Date(timeIntervalSinceNow: -3600)
        for d in [stale, other] { try FileManager.default.setAttributes([.modificationDate: hourAgo], ofItemAtPath: d) }
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["TMPDIR"] = tmp.path
        _ = try Subprocess.fedbatch(["pull", "--home", fed.collector], environment: env)
        _ = try Subprocess.fedbatch(["pull", "--home", fed.site("site-1")], environment: env)
        #expect(!FileManager.default.fileExists(atPath: fed.collector + "/inbox/.fedbatch-transfer-AbC123"))
        #expect(!FileManager.default.fileExists(atPath: fed.site("site-1") + "/generations/.fedbatch-transfer-XyZ789"))
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(FileManager.default.fileExists(atPath: fresh) && FileManager.default.fileExists(atPath: other))
    }
}

/// The medium and low items: each with its test through the binary.
@Suite("hardening, round 3: smaller items")
struct SmallerHardeningTests {
    @Test("a region covering another region's site, or one site twice, is refused whole; the other partial merges")
    func regionLanes() throws {
        let (fed, root) = try HierarchicalMergeTests.setUp()
        let g0 = try fed.generation(0)
        // region-1 (compromised, say) pins site-4, which region-2 serves,
        // and merges its bundle with its own sites'.
        let region1 = fed.root + "/region-1"
        try fed.run(["keys", "add", "--home", region1, "--site", "site-4", fed.root + "/site-4.asc"])
        for s in ["site-1", "site-4"] {
            let path = try fed.update(
                site: s, seq: 1, base: g0, tensors: try HierarchicalMergeTests.delta(arch: fed.arch, seed: 5))
            try FileManager.default.moveItem(
                atPath: path, toPath: region1 + "/inbox/" + (path as NSString).lastPathComponent)
        }
        let p1 = try fed.run(["merge", "--home", region1, "--json"]).summary()["file"] as! String
        try FileManager.default.copyItem(atPath: p1, toPath: root + "/inbox/r1.fbp")
        let r = try fed.fedbatch(["merge", "--home", root, "--json"])
        let codes = HierarchicalMergeTests.codes(try r.summary())
        #expect(codes["r1.fbp"] == "partial.foreign-site", "\(codes) \(r.err)")

        // The same region's key signs a partial listing site-1 twice.
        let file = try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: p1)))
        let c = try ContainerReader.read(payload: file.payload)
        var m = c.manifest
        var one = m.included!.first { $0.site == "site-1" }!
        one.digest = String(repeating: "b", count: 64)
        m.included = m.included!.filter { $0.site == "site-1" } + [one]
        m.numExamples = m.included!.reduce(0) { $0 + $1.numExamples }
        let regionKey = try fed.keyring.fingerprint(of: "region-1")
        let twice = try fed.signer(regionKey).seal(
            manifest: m, members: [(ContainerPath.tensors, c.members[ContainerPath.tensors]!)])
        try twice.file.write(to: URL(fileURLWithPath: root + "/inbox/twice.fbp"))
        let r2 = try fed.fedbatch(["merge", "--home", root, "--json"])
        let codes2 = HierarchicalMergeTests.codes(try r2.summary())
        let message = (try r2.summary()["rejected"] as? [[String: Any]])?.first?["message"] as? String ?? ""
        #expect(codes2["twice.fbp"] == "partial.bundle" && message.contains("twice"), "\(codes2) \(message)")
    }

    @Test(
        "verify checks a pruned generation's manifest file; a retired key's copy of a merged bundle is removed as a replay"
    )
    func prunedAndRetired() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        for round in 1...3 {
            try fed.update(site: "site-1", seq: Int64(round), base: try fed.generation(round - 1))
            try fed.run(["merge", "--home", fed.collector, "-q"])
        }
        let copy = try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/accepted/demo-g2-site-1-3.fbu"))
        try fed.run(["prune", "--home", fed.collector, "--keep", "1"])
        let fbm = fed.collector + "/generations/g000001.fbm"
        #expect(FileManager.default.fileExists(atPath: fbm))
        let v = try fed.fedbatch(["verify", "--home", fed.collector, fbm, "--json"])
        #expect(v.status == 0, "\(v.out)")
        // An edit of a pruned manifest stops the merge (before: only log saw it).
        let original = try Data(contentsOf: URL(fileURLWithPath: fbm))
        var tampered = original
        tampered[20] = tampered[20] == 0x20 ? 0x09 : 0x20
        try tampered.write(to: URL(fileURLWithPath: fbm))
        try fed.update(site: "site-2", seq: 9, base: try fed.generation(3), name: "probe.fbu")
        let stopped = try fed.fedbatch(["merge", "--home", fed.collector])
        #expect(stopped.status == 3 && stopped.err.contains("altered after pruning"), "\(stopped.err)")
        try original.write(to: URL(fileURLWithPath: fbm))
        try FileManager.default.removeItem(atPath: fed.collector + "/inbox/probe.fbu")
        // site-1's key is retired; a byte copy of its merged bundle arrives again.
        try fed.run(["keys", "remove", "--home", fed.collector, "--site", "site-1"])
        try copy.write(to: URL(fileURLWithPath: fed.collector + "/inbox/again.fbu"))
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(3))
        let r = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        let refusal = (r["rejected"] as? [[String: Any]])?.first { $0["name"] as? String == "again.fbu" }
        #expect(refusal?["code"] as? String == "protocol.replay", "\(r)")
        #expect(!FileManager.default.fileExists(atPath: fed.collector + "/inbox/again.fbu"))
        #expect(RemoteDirectoryTests.files(fed.collector + "/quarantine").isEmpty)
    }

    @Test("inbox names with C1 controls or a right-to-left override reach text output escaped")
    func escapedNames() throws {
        let fed = try Federation(sites: ["site-1"])
        for name in ["evil\u{202E}ubf.exe", "c1\u{9B}31m.fbu"] {
            try Data("junk".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/" + name))
        }
        let r = try fed.fedbatch(["merge", "--home", fed.collector])
        #expect(r.status == 5, "\(r.err)")
        #expect(!r.err.unicodeScalars.contains { $0.value == 0x202E || $0.value == 0x9B }, "\(r.err)")
        #expect(r.err.contains("evil\\u{202E}ubf.exe") && r.err.contains("c1\\x9B31m.fbu"), "\(r.err)")
    }

    @Test("a mistyped key in fedbatch.toml is refused with its line and the key it most likely meant")
    func mistypedKey() throws {
        let fed = try Federation(sites: ["site-1"])
        let config = fed.collector + "/fedbatch.toml"
        let text = try String(contentsOfFile: config, encoding: .utf8)
        try text.replacingOccurrences(of: "\nmin_bundles = ", with: "\nmin_bundle = ").write(
            toFile: config, atomically: true, encoding: .utf8)
        let line =
            text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.hasPrefix("min_bundles = ") }!
            + 1
        let r = try fed.fedbatch(["merge", "--home", fed.collector])
        #expect(r.status == 1, "\(r.err)")
        #expect(
            r.err.contains("line \(line): merge.min_bundle is not a setting; did you mean merge.min_bundles?"),
            "\(r.err)")
        // A wrong value points at its line too.
        try text.replacingOccurrences(of: "\nmax_wait = ", with: "\nmax_wait = -").write(
            toFile: config, atomically: true, encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let waitLine = lines.firstIndex { $0.hasPrefix("max_wait = ") }! + 1
        let bad = try fed.fedbatch(["merge", "--home", fed.collector])
        #expect(bad.status == 1 && bad.err.contains("line \(waitLine): merge.max_wait must be"), "\(bad.err)")
    }

    @Test("a robust rule that is only the mean on these bundles says so")
    func degenerateRule() throws {
        let fed = try Federation(sites: ["site-1", "site-2", "site-3"])
        try Federation.setConfig(home: fed.collector, table: "merge", "strategy", "\"multikrum\"")
        for s in ["site-1", "site-2", "site-3"] { try fed.update(site: s, seq: 1, base: try fed.generation(0)) }
        let r = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        #expect(r.status == 0, "\(r.err)")
        let warnings = try r.jsonErrorLines().filter { $0["message_type"] as? String == "warning" }
        #expect(warnings.contains { $0["code"] as? String == "strategy.degenerate" }, "\(r.err)")
    }
}

/// A hostile S3 endpoint cannot hold the home's lock for ever.
@Suite("hardening, round 3: hostile endpoints")
struct HostileEndpointTests {
    func run(mode: String) throws -> (ProcessResult, Double) {
        let fed = try Federation(sites: ["site-1"])
        try Federation.setConfig(home: fed.collector, table: "remote", "url", "\"s3://fedbatch/federation/fmnist\"")
        let server = Process()
        let out = Pipe()
        server.executableURL = URL(fileURLWithPath: TestPaths.python)
        server.arguments = [TestPaths.fixtures + "/hostile_s3.py", mode]
        server.standardOutput = out
        try server.run()
        // SIGKILL: the test runner starts children with SIGTERM blocked.
        defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
        let port = try S3Server.readLine(out.fileHandleForReading)
        fed.environment = [
            "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": "http://127.0.0.1:\(port)",
            "FEDBATCH_TEST_S3_ATTEMPTS": "1", "FEDBATCH_TEST_S3_STALL_SECONDS": "3",
        ]
        let start = Date()
        let r = try fed.fedbatch(["pull", "--home", fed.collector])
        return (r, Date().timeIntervalSince(start))
    }

    @Test("a listing that repeats its continuation token ends with an error naming it")
    func repeatedToken() throws {
        let (r, seconds) = try run(mode: "repeat-token")
        #expect(r.status == 1 && r.err.contains("repeated a continuation token"), "\(r.err)")
        #expect(seconds < 60)
    }

    @Test("a body dripping two bytes a second is abandoned at the minimum rate")
    func drip() throws {
        let (r, seconds) = try run(mode: "drip")
        #expect(r.status == 1, "\(r.err)")
        #expect(seconds < 60, "\(seconds) s")
    }
}

/// Numbers read from files are checked before any arithmetic.
@Suite("hardening, round 3: numbers")
struct NumberHardeningTests {
    @Test("a signed partial whose base generation is 2^63 - 1: verify, merge and inspect refuse it, none traps")
    func hugeBaseNumber() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        let dir = TempDir()
        let made = try Subprocess.python("evil_containers.py", ["huge-number", dir.file("huge.zst")])
        #expect(made.status == 0, "\(made.err)")
        let payload = try Data(contentsOf: URL(fileURLWithPath: dir.file("huge.zst")))
        let statement = Statement(
            kind: .partial, model: "demo", site: .init(id: "site-1", seq: 1),
            payloadLength: Int64(payload.count), payloadDigest: Digest.of(payload)
        ).encoded
        let signature = try fed.signer(fed.siteKeys["site-1"]!).sign(statement)
        let file = ContainerFile.seal(payload: payload, statement: statement, signature: signature)
        let path = fed.collector + "/inbox/huge.fbp"
        try file.write(to: URL(fileURLWithPath: path))
        let copy = try dir.write("huge.fbp", file)
        let verify = try fed.fedbatch(["verify", "--home", fed.collector, copy])
        #expect(verify.status == 3, "\(verify.out)\(verify.err)")
        let inspect = try fed.fedbatch(["inspect", copy])
        #expect(inspect.status != 132 && inspect.status != 0, "\(inspect.status) \(inspect.err)")
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(0))
        let merge = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        #expect(merge.status == 0, "\(merge.status) \(merge.err)")
        #expect((try merge.summary()["accepted"] as? [[String: Any]])?.map { $0["site"] as? String } == ["site-2"])
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Merges against a hostile transport, a malicious pinned site and a
/// careless operator: no file decides another's fate, no broken model is
/// signed, no entry stops the merge, and state.db never disagrees silently.
@Suite("fedbatch merge under attack")
struct MergeHardeningTests {
    func names(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    func reason(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
    }

    func merge(_ fed: Federation, _ extra: [String] = []) throws -> ProcessResult {
        try fed.fedbatch(["merge", "--home", fed.collector] + extra)
    }

    func generationTensors(_ fed: Federation, _ n: Int) throws -> SafetensorsFile {
        let path = fed.collector + "/generations/" + HomeLayout.generationFileName(n)
        return try ContainerReader.read(
            payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: path))).payload
        ).tensors()
    }

    // MARK: 1. a file that does not verify decides nothing about another

    @Test(
        "damaged copies of a genuine bundle, sorting first in the same merge or sent a merge earlier, do not block it",
        arguments: ["same-merge", "earlier-merge"])
    func damagedCopies(when: String) throws {
        let fed = try Federation()
        let g0 = try fed.generation(0)
        let genuinePath = try fed.update(site: "site-1", seq: 1, base: g0, name: "z-genuine.fbu")
        let genuine = try Data(contentsOf: URL(fileURLWithPath: genuinePath))
        let other = try Data(
            contentsOf: URL(fileURLWithPath: try fed.update(site: "site-2", seq: 1, base: g0, name: "z-other.fbu")))
        let parts = try ContainerFile.split(genuine), otherParts = try ContainerFile.split(other)
        var flipped = genuine
        flipped[genuine.count - ContainerFile.trailerSize - 20] ^= 0x01
        let copies: [(String, Data)] = [
            ("a-flipped.fbu", flipped),
            ("a-empty.fbu", ContainerFile.seal(payload: parts.payload, statement: parts.statement, signature: Data())),
            (
                "a-spliced.fbu",
                ContainerFile.seal(payload: parts.payload, statement: parts.statement, signature: otherParts.signature)
            ),
        ]
        if when == "earlier-merge" {
            try FileManager.default.moveItem(atPath: genuinePath, toPath: fed.root + "/held.fbu")
            try FileManager.default.removeItem(atPath: fed.collector + "/inbox/z-other.fbu")
        }
        for (name, bytes) in copies { try bytes.write(to: URL(fileURLWithPath: fed.collector + "/inbox/" + name)) }
        if when == "earlier-merge" {
            #expect(try merge(fed).status == 5)
            try FileManager.default.moveItem(atPath: fed.root + "/held.fbu", toPath: genuinePath)
        }
        let r = try merge(fed, ["--json"])
        #expect(r.status == 0, "\(r.err)")
        #expect(names(fed.collector + "/accepted").contains("z-genuine.fbu"))
        for (name, _) in copies { #expect(names(fed.collector + "/quarantine").contains(name)) }
        let g1 = try fed.generation(1)
        let manifest = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000001.fbg"))
            ).payload
        ).manifest
        #expect(manifest.included?.contains { $0.digest == parts.digest.hex } == true)
        // The refusals are listed by each file's own SHA-256, which the
        // genuine bundle's digest never equals.
        let refused = Set(manifest.rejected?.map(\.digest) ?? [])
        #expect(refused.count == 3 && !refused.contains(parts.digest.hex))
        #expect(refused.contains(Digest.of(flipped).hex))
        _ = g1
    }

    @Test(
        "a bundle refused because its site's key was not pinned yet merges once the key is added and the file is moved back"
    )
    func requeueAfterKeysAdd() throws {
        let fed = try Federation(sites: ["site-1"])
        let lateKey = try fed.keyring.generate("site-9")
        let g0 = try fed.generation(0)
        let manifest = Manifest(
            kind: .update, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
            base: .init(number: g0.number, digest: g0.digest), site: .init(id: "site-9", seq: 1), numExamples: 50)
        let sealed = try fed.signer(lateKey).seal(
            manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(try Samples.weights()))])
        try sealed.file.write(to: URL(fileURLWithPath: fed.collector + "/inbox/late.fbu"))
        #expect(try merge(fed).status == 5)
        #expect(
            try reason(fed.collector + "/quarantine/late.fbu.reason.json")["code"] as? String == "signature.unknown-key"
        )

        try fed.run([
            "keys", "add", "--home", fed.collector, "--site", "site-9",
            try fed.keyring.exportPublic(lateKey, to: "site-9.asc"),
        ])
        try FileManager.default.moveItem(
            atPath: fed.collector + "/quarantine/late.fbu", toPath: fed.collector + "/inbox/late.fbu")
        let r = try merge(fed)
        #expect(r.status == 0, "\(r.err)")
        #expect(names(fed.collector + "/accepted") == ["late.fbu"])
    }

    // MARK: 2. never sign a broken model; no input or setting traps

    @Test("finite but enormous deltas are quarantined before they make the model infinite; the rest merge")
    func enormousDeltas() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        func huge() throws -> [(name: String, tensor: Tensor)] {
            try Samples.weights().map {
                (
                    $0.name,
                    Tensor(
                        shape: $0.tensor.shape, floats: [Float](repeating: 3e38, count: $0.tensor.shape.reduce(1, *)))
                )
            }
        }
        // 3e38 is finite, and base + 3e38 too; times its weight it is beyond
        // the range FedAvg sums exactly (a bundle that would make the model
        // itself non-finite is refused as aggregation.non-finite: the FedAvg
        // unit tests).
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0), tensors: try huge())
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(0))
        let r = try merge(fed)
        #expect(r.status == 0, "\(r.err)")
        #expect(
            try reason(fed.collector + "/quarantine/demo-g0-site-1-1.fbu.reason.json")["code"] as? String
                == "aggregation.out-of-range")
        let manifest = try Inspection.inspect(path: fed.collector + "/generations/g000001.fbg").manifest
        #expect(manifest.included?.map(\.site) == ["site-2"])
        #expect(
            try generationTensors(fed, 1).entries.allSatisfy {
                try! generationTensors(fed, 1).tensor($0.name)!.allFinite()
            })
        #expect(try fed.fedbatch(["log", "--home", fed.collector]).status == 0)
    }

    @Test("example counts near Int64.max neither trap the merge nor the log")
    func hugeCounts() throws {
        let fed = try Federation()
        try fed.setCollectorConfig("max_examples", "9223372036854775807")
        try fed.setCollectorConfig("weight_cap", "9223372036854775807")
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0), examples: 5_000_000_000_000_000_000)
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(0), examples: 5_000_000_000_000_000_000)
        let r = try merge(fed)
        #expect(r.status == 0, "\(r.err)")
        let log = try fed.fedbatch(["log", "--home", fed.collector, "--json"])
        #expect(log.status == 0, "\(log.err)")
    }

    @Test("a model too large to exchange is refused up front with a clear message")
    func modelTooLarge() throws {
        let keyring = try TestKeyring()
        let fpr = try keyring.generate("big")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        let r = try Subprocess.fedbatch(
            [
                "init", "collector", "--home", keyring.dir.file("c"), "--model-id", "big",
                "--arch", "mlp:100000-100000-10", "--key", fpr,
            ], environment: env)
        #expect(r.status == 2 || r.status == 1)
        #expect(r.err.contains("parameters") && !r.err.contains("allocate"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: keyring.dir.file("c/fedbatch.toml")))
    }

    // MARK: 7a. memory is bounded by the model, not by what a file claims

    @Test("signed bundles declaring 1 GiB members, and 1 GiB junk files, are refused without the memory they claim")
    func claimedSizes() throws {
        let fed = try Federation()
        let dir = fed.keyring.dir
        let gib: Int64 = 1 << 30
        let made = try Subprocess.python("evil_containers.py", ["bomb-header", dir.file("prefix.tar"), String(gib)])
        try #require(made.status == 0, "\(made.err)")
        let payload = ZstdFrames.frame(
            prefix: try Data(contentsOf: URL(fileURLWithPath: dir.file("prefix.tar"))), zeroBytes: gib)
        #expect(payload.count < 100_000)
        for i in 1...2 {
            let signed = Samples.seal(
                payload, signature: try fed.signer(fed.siteKeys["site-1"]!).sign(Samples.statement(for: payload)))
            try signed.write(to: URL(fileURLWithPath: fed.collector + "/inbox/claims-\(i).fbu"))
            // Sparse: a gibibyte on paper, nothing on disk.
            #expect(FileManager.default.createFile(atPath: fed.collector + "/inbox/junk-\(i).fbu", contents: nil))
            #expect(truncate(fed.collector + "/inbox/junk-\(i).fbu", off_t(gib)) == 0)
        }
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        let r = try Subprocess.run(
            TestPaths.fedbatch, ["merge", "--home", fed.collector], environment: env, measuringRSS: true)
        #expect(r.status == 5, "\(r.err)")
        #expect(r.maxRSSKiB > 0 && r.maxRSSKiB < 128 * 1024, "peak RSS \(r.maxRSSKiB) KiB")
        #expect(
            try reason(fed.collector + "/quarantine/claims-1.fbu.reason.json")["code"] as? String
                == "tar.member-too-large")
        #expect(try reason(fed.collector + "/quarantine/junk-1.fbu.reason.json")["code"] as? String == "file.too-large")
    }

    // MARK: 3. the chain never forks silently

    @Test("a missing newest generation stops the merge and fails the log, naming the file and the way back")
    func missingGeneration() throws {
        let fed = try Federation()
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        #expect(try merge(fed).status == 0)
        let g1 = fed.collector + "/generations/g000001.fbg"
        try FileManager.default.moveItem(atPath: g1, toPath: fed.root + "/g1-backup.fbg")
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(0))
        let r = try merge(fed)
        #expect(r.status == 3 && r.err.contains("g000001.fbg is missing") && r.err.contains("Restore it"), "\(r.err)")
        #expect(names(fed.collector + "/generations") == ["g000000.fbg"])
        let log = try fed.fedbatch(["log", "--home", fed.collector])
        #expect(log.status == 3 && !log.out.contains("chain verified"), "\(log.out)")
        try FileManager.default.moveItem(atPath: fed.root + "/g1-backup.fbg", toPath: g1)
        #expect(try fed.fedbatch(["log", "--home", fed.collector]).status == 0)
    }

    @Test("a state.db rebuild killed before completion is never trusted; the next run rebuilds it whole")
    func interruptedRebuild() throws {
        let fed = try Federation()
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        #expect(try merge(fed).status == 0)
        try fed.update(site: "site-1", seq: 2, base: try fed.generation(1))
        #expect(try merge(fed).status == 0)
        try FileManager.default.removeItem(atPath: fed.collector + "/state.db")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_FAULT"] = "rebuild-before-rename"
        #expect(try Subprocess.fedbatch(["merge", "--home", fed.collector], environment: env).status == 99)
        #expect(!FileManager.default.fileExists(atPath: fed.collector + "/state.db"))
        // A replayed old sequence number is still refused after the rebuild.
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(2), name: "old-seq.fbu", scale: 0.2)
        #expect(try merge(fed).status == 5)
        #expect(
            try reason(fed.collector + "/quarantine/old-seq.fbu.reason.json")["code"] as? String
                == "protocol.seq-reused")
        #expect(
            !(try FileManager.default.contentsOfDirectory(atPath: fed.collector)).contains { $0.contains("rebuild") })
    }

    @Test("a site's log refuses a forked chain exactly when its train does")
    func siteLogAgreesWithTrain() throws {
        let fed = try Federation()
        let site = fed.site("site-1")
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000000.fbg", toPath: site + "/generations/g000000.fbg")
        #expect(try fed.fedbatch(["log", "--home", site]).status == 0)
        let data = fed.keyring.dir.file("d.csv")
        try ("label,a,b,c,d\n" + (0..<8).map { "\($0 % 2),0.1,0.2,0.3,0.\($0)" }.joined(separator: "\n") + "\n").write(
            toFile: data, atomically: true, encoding: .utf8)
        #expect(try fed.fedbatch(["train", "--home", site, "--data", data, "-q"]).status == 0)
        // The collector re-creates generation 0 with other weights: a fork.
        let forked = try fed.signer(fed.collectorKey).seal(
            manifest: Manifest(
                kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
                generation: 0),
            members: [(ContainerPath.tensors, SafetensorsWriter.encode(try Samples.weights(scale: 0.5)))]
        ).file
        try forked.write(to: URL(fileURLWithPath: site + "/generations/g000000.fbg"))
        let train = try fed.fedbatch(["train", "--home", site, "--data", data, "--force", "-q"])
        let log = try fed.fedbatch(["log", "--home", site])
        #expect(train.status == 3 && train.err.contains("forked chain"), "\(train.err)")
        #expect(
            log.status == 3 && log.err.contains("forked chain") && !log.out.contains("chain verified"), "\(log.err)")
    }

    // MARK: 4. one inbox entry never stops the merge

    @Test(
        "long names, names that are not UTF-8, names ending in .reason.json, links and crash leftovers are each handled on their own"
    )
    func awkwardEntries() throws {
        let fed = try Federation()
        let g0 = try fed.generation(0)
        let inbox = fed.collector + "/inbox"
        // A genuine bundle under a name that is not UTF-8 (Latin-1 "é").
        let genuine = try Data(
            contentsOf: URL(fileURLWithPath: try fed.update(site: "site-1", seq: 1, base: g0, name: "tmp.fbu")))
        try FileManager.default.removeItem(atPath: inbox + "/tmp.fbu")
        let latin1 = Array("caf".utf8) + [0xE9] + Array(".fbu".utf8)
        let path = (Array(inbox.utf8) + [0x2F] + latin1 + [0]).map { CChar(bitPattern: $0) }
        let fd = path.withUnsafeBufferPointer { open($0.baseAddress!, O_WRONLY | O_CREAT | O_EXCL, 0o644) }
        #expect(fd >= 0)
        _ = genuine.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        // Junk with a 240-character name; a pair that collides on reason files.
        try Data("junk".utf8).write(to: URL(fileURLWithPath: inbox + "/" + String(repeating: "j", count: 240)))
        try Data("junk x".utf8).write(to: URL(fileURLWithPath: inbox + "/x.fbu"))
        try Data("junk reason".utf8).write(to: URL(fileURLWithPath: inbox + "/x.fbu.reason.json"))
        // A link to a file outside the home.
        let secret = fed.keyring.dir.file("secret.txt")
        try Data("not for the collector".utf8).write(to: URL(fileURLWithPath: secret))
        try FileManager.default.createSymbolicLink(atPath: inbox + "/link.fbu", withDestinationPath: secret)
        // Leftovers of a crashed run.
        try Data().write(to: URL(fileURLWithPath: fed.collector + "/generations/.g000001.fbg.tmp-AbC123"))
        try Data().write(to: URL(fileURLWithPath: fed.collector + "/quarantine/.x.fbu.reason.json.tmp-Zz9876"))

        let r = try merge(fed, ["--json"])
        #expect(r.status == 0, "\(r.err)")
        #expect(names(inbox).isEmpty)
        #expect(names(fed.collector + "/accepted") == ["caf_.fbu"])
        let q = names(fed.collector + "/quarantine")
        #expect(
            q.contains("x.fbu") && q.contains("x.fbu.reason.json_") && q.contains("link.fbu")
                && q.contains(where: { $0.hasPrefix("jjjj") && !$0.hasSuffix(".json") }))
        #expect(try reason(fed.collector + "/quarantine/x.fbu.reason.json")["code"] as? String == "signature.missing")
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/quarantine/x.fbu.reason.json_"))
                == Data("junk reason".utf8))
        // The link moved as a link; its target was neither followed nor hashed.
        #expect(
            try FileManager.default.destinationOfSymbolicLink(atPath: fed.collector + "/quarantine/link.fbu") == secret)
        let link = try reason(fed.collector + "/quarantine/link.fbu.reason.json")
        #expect(link["digest"] == nil && (link["message"] as? String)?.contains("symbolic link") == true)
        #expect(
            !(try String(contentsOfFile: fed.collector + "/quarantine/link.fbu.reason.json", encoding: .utf8)).contains(
                Digest.of(Data("not for the collector".utf8)).hex))
        #expect(
            !(try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/generations")).contains {
                $0.contains(".tmp-")
            })
        #expect(
            !(try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/quarantine")).contains {
                $0.contains(".tmp-")
            })
        let report = try r.summary()
        let accepted = try #require(report["accepted"] as? [[String: Any]])
        #expect(accepted.map { $0["name"] as? String } == ["caf\\xE9.fbu"])
        #expect(accepted.map { $0["file"] as? String } == [fed.collector + "/accepted/caf_.fbu"])
    }

    @Test("a crash while quarantining does not drop the file from the next generation's rejected list")
    func crashWhileQuarantining() throws {
        let fed = try Federation()
        try Data("junk".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/junk.fbu"))
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_FAULT"] = "after-reason"
        #expect(try Subprocess.fedbatch(["merge", "--home", fed.collector], environment: env).status == 99)
        #expect(try merge(fed).status == 5)
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        #expect(try merge(fed).status == 0)
        let manifest = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000001.fbg"))
            ).payload
        ).manifest
        #expect(manifest.rejected?.map(\.digest) == [Digest.of(Data("junk".utf8)).hex])
        #expect(names(fed.collector + "/quarantine") == ["junk.fbu", "junk.fbu.reason.json"])
    }

    @Test("an identical junk file delivered again does not pile up copies in quarantine")
    func noPileUp() throws {
        let fed = try Federation()
        for _ in 0..<3 {
            try Data("junk".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/junk.fbu"))
            #expect(try merge(fed).status == 5)
        }
        #expect(names(fed.collector + "/quarantine") == ["junk.fbu", "junk.fbu.reason.json"])
        #expect(names(fed.collector + "/inbox").isEmpty)
    }

    // MARK: 5. files still arriving are left alone

    @Test("a file changed within the settle time, or under a hidden name, stays in the inbox; once settled it merges")
    func settleTime() throws {
        let fed = try Federation()
        try fed.setCollectorConfig("settle_seconds", "60")
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        try Data("partial".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/.demo.fbu.XyZ12"))
        let r = try merge(fed)
        #expect(r.status == 5 && r.err.contains("settle_seconds"), "\(r.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/inbox").count == 2)
        #expect(names(fed.collector + "/quarantine").isEmpty)
        let settled = try merge(fed, ["--settle", "0"])
        #expect(settled.status == 0, "\(settled.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/inbox") == [".demo.fbu.XyZ12"])
    }
}

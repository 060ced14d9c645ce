import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// fedbatch merge and log through the real binary: bad bundles, quorum,
/// the lock, crashes at every write step, reproducibility.
@Suite("fedbatch merge, log")
struct MergeCommandTests {
    let arch = try! ModelArchitecture(spec: Samples.arch)

    func generation(_ fed: Federation, _ n: Int) throws -> (number: Int, digest: String) { try fed.generation(n) }

    @discardableResult
    func update(
        _ fed: Federation, site: String, seq: Int64, base: (number: Int, digest: String), examples: Int64 = 100,
        name: String? = nil, scale: Float = 0.01, tensors: [(name: String, tensor: Tensor)]? = nil
    ) throws -> String {
        try fed.update(site: site, seq: seq, base: base, examples: examples, name: name, scale: scale, tensors: tensors)
    }

    /// A federation whose inbox holds one valid update from each of two sites.
    func federationWithTwoUpdates() throws -> Federation {
        let fed = try Federation()
        let g0 = try generation(fed, 0)
        try update(fed, site: "site-1", seq: 1, base: g0)
        try update(fed, site: "site-2", seq: 1, base: g0)
        return fed
    }

    func names(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    func reason(_ fed: Federation, _ name: String) throws -> [String: String] {
        let object =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: fed.collector + "/quarantine/\(name).reason.json")))
            as! [String: Any]
        return object.compactMapValues { $0 as? String }
    }

    /// The gpg processes `fedbatch merge` starts, by their arguments.
    func gpgProcesses(_ fed: Federation) throws -> (all: Int, verifying: Int) {
        let trace = fed.root + "/trace-\(UUID().uuidString)"
        let r = try Subprocess.run(
            "/usr/bin/strace",
            [
                "-f", "-qq", "-v", "-s", "64", "-e", "trace=execve", "-o", trace, TestPaths.fedbatch, "merge",
                "--home", fed.collector, "-q",
            ],
            environment: ["GNUPGHOME": fed.keyring.home])
        #expect(r.status == 0, "\(r.err)")
        let gpg = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n").filter {
            $0.contains("execve(\"/usr/bin/gpg\"")
        }
        if ProcessInfo.processInfo.environment["FEDBATCH_SHOW_GPG"] != nil { print(gpg.joined(separator: "\n")) }
        return (gpg.count, gpg.filter { $0.contains("\"--verify\"") }.count)
    }

    @Test(
        "a merge checks signatures without gpg: its gpg processes grow with neither the pinned keys nor the bundles; verify = \"gpg\" starts one per signature"
    )
    func gpgProcessesPerMerge() throws {
        let sites = (1...30).map { "site-\($0)" }
        let fed = try Federation(sites: sites)
        let g0 = try generation(fed, 0)
        for s in sites.prefix(12) { try update(fed, site: s, seq: 1, base: g0) }
        // Twelve bundles verified, 30 sites and a collector pinned: the
        // verifiers read, import and list all keys in one process each, and
        // check each signature in-process. Reading each key file on its own
        // took about five processes per key (over 150), and gpg checked each
        // signature in a process of its own.
        let builtin = try gpgProcesses(fed)
        #expect(builtin.verifying == 0, "\(builtin.verifying) gpg processes verified signatures")
        // 17 in all here, seven of them gpgme asking `gpg --version` as it
        // sets up a context; none of them grows with keys or bundles.
        #expect(builtin.all <= 20, "\(builtin.all) gpg processes")
        #expect(try names(fed.collector + "/accepted").count == 12)

        try Federation.setConfig(home: fed.collector, table: "trust", "verify", "\"gpg\"")
        let g1 = try generation(fed, 1)
        for s in sites.suffix(6) { try update(fed, site: s, seq: 1, base: g1) }
        let fallback = try gpgProcesses(fed)
        // Six bundles, and the generation they build on: each signature in
        // a gpg process of its own.
        #expect(fallback.verifying >= 6, "\(fallback.verifying) gpg processes verified signatures")
        #expect(try names(fed.collector + "/accepted").count == 18)
    }

    @Test("bad bundles are quarantined with their reason while the good ones beside them are merged")
    func quarantineAndMerge() throws {
        let fed = try Federation(sites: ["site-1", "site-2", "site-3"])
        // Synchronous merging, so that an update on an older generation is refused.
        try fed.setCollectorConfig("max_staleness", "0")
        let g0 = try generation(fed, 0)
        try update(fed, site: "site-1", seq: 1, base: g0, examples: 300)
        try update(fed, site: "site-2", seq: 1, base: g0, examples: 100)
        var nan = try Samples.weights(); var v = nan[0].tensor.floats(); v[1] = .nan;
        nan[0] = (nan[0].name, Tensor(shape: [3, 4], floats: v))
        var inf = try Samples.weights(); v = inf[2].tensor.floats(); v[0] = .infinity;
        inf[2] = (inf[2].name, Tensor(shape: [2, 3], floats: v))
        var shape = try Samples.weights();
        shape[0] = ("0.weight", Tensor(shape: [4, 3], floats: [Float](repeating: 0, count: 12)))
        var missing = try Samples.weights(); missing.removeLast()
        var extra = try Samples.weights(); extra.append(("9.weight", Tensor(shape: [1], floats: [0])))
        let bad: [(String, [(name: String, tensor: Tensor)]?, Int64, String)] = [
            ("nan.fbu", nan, 100, "tensors.non-finite"), ("inf.fbu", inf, 100, "tensors.non-finite"),
            ("shape.fbu", shape, 100, "tensors.shape"), ("missing.fbu", missing, 100, "tensors.missing"),
            ("extra.fbu", extra, 100, "tensors.extra"), ("huge.fbu", nil, 1_000_000_000_000, "protocol.num-examples"),
        ]
        for (name, t, n, _) in bad {
            try update(fed, site: "site-3", seq: 1, base: g0, examples: n, name: name, tensors: t)
        }
        try Data("not a bundle".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/junk.fbu"))
        // A FIFO must neither hang the merge nor stay behind.
        #expect(mkfifo(fed.collector + "/inbox/fifo.fbu", 0o644) == 0)

        let r = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        #expect(r.status == 0, "\(r.err)")
        #expect(names(fed.collector + "/inbox").isEmpty)
        #expect(names(fed.collector + "/accepted") == ["demo-g0-site-1-1.fbu", "demo-g0-site-2-1.fbu"])
        for (name, _, _, code) in bad {
            #expect(try reason(fed, name)["code"] == code, "\(name)")
        }
        #expect(try reason(fed, "junk.fbu")["code"] == "signature.missing")
        #expect(try reason(fed, "fifo.fbu")["message"]?.contains("not a regular file") == true)
        #expect(try reason(fed, "huge.fbu")["message"]?.contains("num_examples 1000000000000 is above the cap") == true)

        // The generation is FedAvg of the two: (300·Δ1 + 100·Δ2) / 400 over generation 0.
        let g1 = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000001.fbg"))
            ).payload)
        let base = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000000.fbg"))
            ).payload
        ).tensors()
        let d = try Samples.weights(scale: 0.01)
        let b0: [Float] = base.tensor("0.weight")!.floats()
        let d0: [Float] = d[0].tensor.floats()
        var expected: [Float] = []
        for i in 0..<b0.count {
            let sum: Double = 300 * Double(d0[i]) + 100 * Double(d0[i])
            expected.append(Float(Double(b0[i]) + sum / 400))
        }
        #expect(try g1.tensors().tensor("0.weight")!.floats() == expected)
        let m = g1.manifest
        #expect(m.generation == 1 && m.parent?.digest == g0.digest)
        #expect(m.included?.map(\.site).sorted() == ["site-1", "site-2"])
        #expect(m.included?.first { $0.site == "site-1" }?.weight == 300)
        // Every refused file; the FIFO is not a file and has no digest to list.
        #expect(m.rejected?.count == bad.count + 1)
        #expect(m.strategy?.name == "fedavg")

        // Replays: the same bytes under a new name, and a new file reusing (site, seq).
        let g1ref = try generation(fed, 1)
        try FileManager.default.copyItem(
            atPath: fed.collector + "/accepted/demo-g0-site-1-1.fbu", toPath: fed.collector + "/inbox/renamed.fbu")
        try update(fed, site: "site-2", seq: 1, base: g1ref, name: "reused-seq.fbu", scale: 0.5)
        try update(fed, site: "site-1", seq: 2, base: g0, name: "stale.fbu")
        try update(fed, site: "site-3", seq: 2, base: g1ref)
        let r2 = try fed.fedbatch(["merge", "--home", fed.collector])
        #expect(r2.status == 0, "\(r2.err)")
        // A copy of a merged bundle is a replay, not stale, and is removed
        // because accepted/ keeps the bundle.
        #expect(r2.err.contains("removed renamed.fbu: already merged into generation 1"), "\(r2.err)")
        #expect(!names(fed.collector + "/quarantine").contains("renamed.fbu"))
        #expect(try reason(fed, "reused-seq.fbu")["code"] == "protocol.seq-reused")
        #expect(try reason(fed, "stale.fbu")["code"] == "protocol.too-stale")
        #expect(names(fed.collector + "/generations") == ["g000000.fbg", "g000001.fbg", "g000002.fbg"])

        // log verifies the chain.
        let log = try fed.fedbatch(["log", "--home", fed.collector, "--json"])
        let chain = try log.summary()
        #expect(chain["verified"] as? Bool == true && (chain["generations"] as? [Any])?.count == 3)
        #expect(try fed.fedbatch(["log", "--home", fed.collector]).out.contains("chain verified: 3 generations"))
    }

    @Test("a replay is still caught after state.db is lost and rebuilt")
    func rebuiltLedger() throws {
        let fed = try Federation()
        let g0 = try generation(fed, 0)
        try update(fed, site: "site-1", seq: 1, base: g0)
        #expect(try fed.fedbatch(["merge", "--home", fed.collector]).status == 0)
        try FileManager.default.removeItem(atPath: fed.collector + "/state.db")
        try update(fed, site: "site-1", seq: 1, base: try generation(fed, 1), name: "again.fbu", scale: 0.3)
        #expect(try fed.fedbatch(["merge", "--home", fed.collector]).status == 5)
        #expect(try reason(fed, "again.fbu")["code"] == "protocol.seq-reused")
    }

    @Test(
        "revert writes the next generation with an earlier one's weights; the chain stays linear and merging goes on from it"
    )
    func revert() throws {
        let fed = try federationWithTwoUpdates()
        // Synchronous merging: work on an older generation is refused.
        try fed.setCollectorConfig("max_staleness", "0")
        #expect(try fed.fedbatch(["merge", "--home", fed.collector]).status == 0)
        func tensors(_ n: Int) throws -> [[Float]] {
            let c = try ContainerReader.read(
                payload: try ContainerFile.split(
                    try Data(
                        contentsOf: URL(
                            fileURLWithPath: fed.collector + "/generations/" + HomeLayout.generationFileName(n)))
                ).payload)
            let t = try c.tensors()
            return arch.tensorShapes.map { t.tensor($0.name)!.floats() }
        }
        #expect(try tensors(1) != tensors(0))
        let r = try fed.fedbatch(["revert", "--home", fed.collector, "g0", "--json"])
        #expect(r.status == 0, "\(r.err)")
        let s = try r.summary()
        #expect(s["generation"] as? Int == 2 && s["reverted_to"] as? Int == 0)
        #expect(try tensors(2) == tensors(0))
        let m = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000002.fbg"))
            ).payload
        ).manifest
        #expect(
            m.strategy?.name == "revert" && m.strategy?.parameters["generation"] == 0 && m.included == []
                && m.parent?.number == 1)
        #expect(try fed.fedbatch(["log", "--home", fed.collector]).out.contains("chain verified: 3 generations"))
        // Only an earlier generation can be restored.
        let current = try fed.fedbatch(["revert", "--home", fed.collector, "2"])
        #expect(current.status == 1 && current.err.contains("give 0 to 1, not 2"), "\(current.err)")
        #expect(try fed.fedbatch(["revert", "--home", fed.collector, "9"]).status == 1)
        // Work trained on the bad generation is stale; work on the revert merges.
        try update(fed, site: "site-1", seq: 2, base: try generation(fed, 1), name: "stale.fbu")
        try update(fed, site: "site-2", seq: 2, base: try generation(fed, 2))
        #expect(try fed.fedbatch(["merge", "--home", fed.collector]).status == 0)
        #expect(try reason(fed, "stale.fbu")["code"] == "protocol.too-stale")
        #expect(names(fed.collector + "/generations").last == "g000003.fbg")
    }

    @Test("below quorum nothing is written and the accepted bundles stay in the inbox")
    func quorum() throws {
        let fed = try federationWithTwoUpdates()
        let r = try fed.fedbatch(["merge", "--home", fed.collector, "--min-bundles", "3"])
        #expect(r.status == 5 && r.err.contains("2 bundles passed, quorum is 3"))
        #expect(names(fed.collector + "/inbox").count == 2 && names(fed.collector + "/generations") == ["g000000.fbg"])
        // Under --json the bundles that passed are reported where they are, waiting; none is called accepted.
        let j = try fed.fedbatch(["merge", "--home", fed.collector, "--min-bundles", "3", "--json"]).summary()
        #expect(
            j["outcome"] as? String == "below-quorum" && j["passed"] as? Int == 2
                && (j["accepted"] as? [Any])?.isEmpty == true)
        #expect(
            (j["waiting"] as? [[String: Any]])?.compactMap { $0["file"] as? String }.allSatisfy {
                $0.hasPrefix(fed.collector + "/inbox/") && FileManager.default.fileExists(atPath: $0)
            } == true)
        // Quiet below quorum prints nothing: cron mails only when something is wrong.
        let quiet = try fed.fedbatch(["merge", "--home", fed.collector, "--min-bundles", "3", "-q"])
        #expect(quiet.status == 5 && quiet.stdout.isEmpty && quiet.stderr.isEmpty)
        #expect(try fed.fedbatch(["merge", "--home", fed.collector, "--min-bundles", "2"]).status == 0)
        #expect(try fed.fedbatch(["merge", "--home", fed.collector]).status == 5)
    }

    @Test("a merge while another holds the lock exits 4 and changes nothing")
    func lockHeld() throws {
        let fed = try Federation()
        try update(fed, site: "site-1", seq: 1, base: try generation(fed, 0))
        let lock = try #require(try FileLock.tryLock(fed.collector + "/.fedbatch.lock"))
        let r = try fed.fedbatch(["merge", "--home", fed.collector])
        #expect(r.status == 4 && r.err.contains("holds"))
        #expect(names(fed.collector + "/inbox").count == 1 && names(fed.collector + "/generations").count == 1)
        withExtendedLifetime(lock) {}
    }

    @Test("two merges started at once: one writes the generation, the other exits 4 and changes nothing")
    func concurrentMerges() throws {
        let fed = try federationWithTwoUpdates()
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        // The first merge holds the lock for two seconds before it works.
        env["FEDBATCH_TEST_HOLD_LOCK_MS"] = "2000"
        let first = try Subprocess.start(TestPaths.fedbatch, ["merge", "--home", fed.collector], environment: env)
        // It takes the lock within a fraction of a second and keeps it for two;
        // probing the lock from here could itself steal it, so just wait.
        usleep(700_000)
        env.removeValue(forKey: "FEDBATCH_TEST_HOLD_LOCK_MS")
        let second = try Subprocess.fedbatch(["merge", "--home", fed.collector], environment: env)
        #expect(second.status == 4 && second.err.contains("holds"), "\(second.err)")
        #expect(names(fed.collector + "/inbox").count == 2)
        let r = first.wait()
        #expect(r.status == 0, "\(r.err)")
        #expect(names(fed.collector + "/generations") == ["g000000.fbg", "g000001.fbg"])
        #expect(names(fed.collector + "/accepted").count == 2 && names(fed.collector + "/inbox").isEmpty)
    }

    @Test(
        "a crash at each write step leaves a verified chain and every bundle in one place; a rerun finishes",
        arguments: ["after-generation", "after-ledger", "after-first-move"])
    func crash(at point: String) throws {
        let fed = try federationWithTwoUpdates()
        // A temporary root of its own: any fedbatch another test starts
        // meanwhile removes abandoned scratch keyrings in /tmp, which would
        // race with this test's look at them.
        let tmp = TempDir()
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["TMPDIR"] = tmp.path
        env["FEDBATCH_FAULT"] = point
        let process = try Subprocess.start(TestPaths.fedbatch, ["merge", "--home", fed.collector], environment: env)
        let crashed = process.wait()
        #expect(crashed.status == 99, "\(crashed.err)")
        // Dying without cleaning up, it left its scratch keyrings (but no
        // gpg-agent: they never start one); the next run removes them.
        func leftBehind() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: tmp.path)) ?? []).filter { name in
                name.hasPrefix("fb-")
                    && (try? String(contentsOfFile: "\(tmp.path)/\(name)/fedbatch-scratch.pid", encoding: .utf8))?
                        .trimmingCharacters(in: .whitespacesAndNewlines) == String(process.pid)
            }
        }
        #expect(!leftBehind().isEmpty)
        #expect(
            try Subprocess.shell("pgrep -af gpg-agent || true").out.split(separator: "\n").allSatisfy { line in
                !leftBehind().contains { line.contains($0) }
            })
        env.removeValue(forKey: "FEDBATCH_FAULT")
        let rerun = try Subprocess.fedbatch(["merge", "--home", fed.collector], environment: env)
        #expect(rerun.status == 5, "\(rerun.err)")  // the work was finished; nothing new to merge
        #expect(leftBehind().isEmpty)
        #expect(names(fed.collector + "/generations") == ["g000000.fbg", "g000001.fbg"])
        #expect(names(fed.collector + "/accepted").count == 2 && names(fed.collector + "/inbox").isEmpty)
        #expect(names(fed.collector + "/quarantine").isEmpty)
        #expect(try fed.fedbatch(["log", "--home", fed.collector]).status == 0)
        // The index agrees: a copy of an included bundle is named for what
        // it is and, since accepted/ keeps the bundle, removed.
        try FileManager.default.copyItem(
            atPath: fed.collector + "/accepted/demo-g0-site-1-1.fbu", toPath: fed.collector + "/inbox/replay.fbu")
        let replay = try fed.fedbatch(["merge", "--home", fed.collector])
        #expect(replay.err.contains("already merged into generation 1"), "\(replay.err)")
        #expect(names(fed.collector + "/inbox").isEmpty && names(fed.collector + "/quarantine").isEmpty)
    }

    @Test(
        "two collectors with the same keys, config and bundles write byte-identical payloads, whether fedbatch or gpg checks the signatures"
    )
    func reproducible() throws {
        let fed = try Federation()
        let twin = fed.root + "/twin"
        #expect(try Subprocess.run("/bin/cp", ["-a", fed.collector, twin]).status == 0)
        try Federation.setConfig(home: twin, table: "trust", "verify", "\"gpg\"")
        let g0 = try generation(fed, 0)
        try update(fed, site: "site-1", seq: 1, base: g0, examples: 70)
        try update(fed, site: "site-2", seq: 1, base: g0, examples: 30)
        for f in names(fed.collector + "/inbox") {
            try FileManager.default.copyItem(atPath: fed.collector + "/inbox/" + f, toPath: twin + "/inbox/" + f)
        }
        #expect(try fed.fedbatch(["merge", "--home", fed.collector]).status == 0)
        #expect(try fed.fedbatch(["merge", "--home", twin]).status == 0)
        let a = try ContainerFile.split(
            try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000001.fbg")))
        let b = try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: twin + "/generations/g000001.fbg")))
        #expect(a.payload == b.payload)
        #expect(a.digest == b.digest)
    }

    @Test("log refuses a chain with a broken link")
    func brokenChain() throws {
        let fed = try Federation()
        let forged = try fed.signer(fed.collectorKey).seal(
            manifest: Manifest(
                kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
                generation: 1,
                parent: .init(number: 0, digest: String(repeating: "0", count: 64))),
            members: [(ContainerPath.tensors, SafetensorsWriter.encode(try Samples.weights()))]
        ).file
        try forged.write(to: URL(fileURLWithPath: fed.collector + "/generations/g000001.fbg"))
        let r = try fed.fedbatch(["log", "--home", fed.collector])
        #expect(r.status == 3 && r.err.contains("generation 1: names parent 0000"), "\(r.err)")
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// No single collector, through the real binary: three signers with
/// threshold 2 share one remote; any of them merges into a proposal, another
/// co-signs it after re-deriving it, and sites take only generations two of
/// them signed.
@Suite("no single collector")
struct SignerSetTests {
    @Test(
        "three signers with threshold 2 run with one offline; a proposal one signer alone signed is refused; two conflicting proposals never both reach the threshold; a kill mid co-signing is finished"
    )
    func threeSigners() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        let (remote, _) = try Self.threeSigners(fed)
        let a = fed.collector, b = fed.root + "/signer-b", c = fed.root + "/signer-c"
        let site = fed.site("site-1")
        func deliver(seq: Int64, base: Int) throws { try Self.deliver(fed, remote: remote, seq: seq, base: base) }

        // Generation 1, with signer c offline: a proposes, b co-signs.
        try deliver(seq: 1, base: 0)
        // Offline c will later merge site-1's bundle alone: a copy of it.
        let site1Bundle = try FileManager.default.contentsOfDirectory(atPath: remote + "/inbox/site-1")[0]
        let stash = fed.root + "/" + site1Bundle
        try FileManager.default.copyItem(atPath: remote + "/inbox/site-1/" + site1Bundle, toPath: stash)
        try fed.run(["pull", "--home", a, "-q"])
        let proposed = try fed.run(["merge", "--home", a, "--json"]).summary()
        #expect(proposed["generation"] as? Int == 1, "\(proposed)")
        // Nothing is built on a proposal.
        let waits = try fed.fedbatch(["merge", "--home", a])
        #expect(waits.status == 5 && waits.err.contains("a proposal, not yet a generation"), "\(waits.err)")
        try fed.run(["publish", "--home", a, "-q"])
        #expect(FileManager.default.fileExists(atPath: remote + "/proposals/g000001-a.fbg"))
        #expect(!FileManager.default.fileExists(atPath: remote + "/generations/g000001.fbg"))
        // The shared inbox keeps the bundles for the other signers.
        #expect(try FileManager.default.contentsOfDirectory(atPath: remote + "/inbox/site-1").count == 1)

        // A site refuses the proposal one signer alone signed.
        try fed.run(["pull", "--home", site, "-q"])
        try FileManager.default.copyItem(
            atPath: remote + "/proposals/g000001-a.fbg", toPath: site + "/generations/g000001.fbg")
        let alone = try fed.fedbatch(["verify", "--home", site, "1", "--json"])
        let verdict = (try alone.summary()["files"] as? [[String: Any]])?.first
        #expect(alone.status == 3 && verdict?["code"] as? String == "trust.threshold", "\(alone.out)")
        try FileManager.default.removeItem(atPath: site + "/generations/g000001.fbg")

        // b re-derives a's proposal from its own copies of the bundles and
        // co-signs it; killed between placing it and co-signing, the rerun
        // finishes.
        let bPull = try fed.fedbatch(["pull", "--home", b, "--json"])
        #expect(bPull.status == 0, "\(bPull.out) \(bPull.err)")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_FAULT"] = "signer-after-generation"
        #expect(try Subprocess.fedbatch(["witness", "--home", b, "-q"], environment: env).status != 0)
        #expect(FileManager.default.fileExists(atPath: b + "/generations/g000001.fbg"))
        #expect(!FileManager.default.fileExists(atPath: b + "/generations/g000001-b.fbc"))
        let cosigned = try fed.run(["witness", "--home", b, "--json"]).summary()
        #expect(cosigned["generation"] as? Int == 1 && cosigned["again"] as? Bool == true, "\(cosigned)")
        // b recorded it as its own generation 1: its inputs left the inbox.
        #expect(try FileManager.default.contentsOfDirectory(atPath: b + "/accepted").count == 2)
        try fed.run(["publish", "--home", b, "-q"])
        #expect(FileManager.default.fileExists(atPath: remote + "/generations/g000001.fbg"))
        #expect(FileManager.default.fileExists(atPath: remote + "/generations/g000001-b.fbc"))

        // The site takes generation 1, signed by a and b.
        try fed.run(["pull", "--home", site, "-q"])
        #expect(try fed.fedbatch(["verify", "--home", site, "1"]).status == 0)
        let log = try fed.run(["log", "--home", site, "--json"]).summary()
        #expect((log["generations"] as? [[String: Any]])?.last?["signers"] as? [String] == ["a", "b"])

        // Generation 2: a has b's cosignature now and proposes again; b
        // co-signs.
        // Generation 1 has the threshold: its inputs leave the shared
        // inbox (no signer re-derives a generation that has it).
        let cleaned = try fed.run(["pull", "--home", a, "--json"]).summary()
        let removed = (cleaned["removed"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String }
        #expect(removed.sorted() == ["inbox/site-1/" + site1Bundle, removed.last ?? ""].sorted(), "\(cleaned)")
        #expect(removed.count == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: remote + "/inbox/site-1").isEmpty)
        try deliver(seq: 2, base: 1)
        try fed.run(["pull", "--home", a, "-q"])
        #expect(try fed.run(["merge", "--home", a, "--json"]).summary()["generation"] as? Int == 2)
        try fed.run(["publish", "--home", a, "-q"])
        try fed.run(["pull", "--home", b, "-q"])
        try fed.run(["witness", "--home", b, "-q"])
        try fed.run(["publish", "--home", b, "-q"])
        try fed.run(["pull", "--home", site, "-q"])
        #expect(try fed.fedbatch(["verify", "--home", site, "2"]).status == 0)
        #expect(try fed.fedbatch(["audit", "--home", b, "all"]).status == 0)

        // c was offline and merged its own, different generation 1 (site-2's
        // bundle only). Neither a nor b will sign it: they signed generation
        // 1 already.
        let cInbox = c + "/inbox"
        try FileManager.default.copyItem(atPath: stash, toPath: cInbox + "/" + site1Bundle)
        #expect(try fed.run(["merge", "--home", c, "--json"]).summary()["generation"] as? Int == 1)
        try fed.run(["publish", "--home", c, "-q"])
        for home in [a, b] {
            _ = try fed.fedbatch(["pull", "--home", home, "-q"])
            let fork = try fed.fedbatch([
                "witness", "--home", home, remote + "/proposals/g000001-c.fbg", "--json",
            ])
            let code = (try fork.jsonErrorLines().last)?["code"] as? String
            #expect(fork.status == 3 && code == "witness.fork", "\(fork.out)\(fork.err)")
        }
        // c learns it was outvoted.
        let outvoted = try fed.fedbatch(["pull", "--home", c, "--json"])
        let refused = try outvoted.summary()["refused"] as? [[String: Any]] ?? []
        #expect(outvoted.status == 3 && refused.contains { $0["code"] as? String == "signer.superseded" }, "\(refused)")
    }

    @Test(
        "the signer set changes in the chain: t of the old set bring in the new one, a signer co-signs only a change it staged, sites judge later generations by the new set, a removed signer is out"
    )
    func changeOfSet() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        let (remote, keys) = try Self.threeSigners(fed)
        let a = fed.collector, b = fed.root + "/signer-b", c = fed.root + "/signer-c", d = fed.root + "/signer-d"
        let site = fed.site("site-1"), late = fed.site("site-2")
        // d joins: its key is pinned at the signers (not yet a signer of
        // the set in fedbatch.toml, so its signatures do not count yet).
        let dKey = try fed.keyring.generate("signer-d")
        let dFile = try fed.keyring.exportPublic(dKey, to: "d.asc")
        try Self.copySigner(fed, to: d, key: dKey)
        for home in [a, b, c, d] { try fed.run(["keys", "add", "--home", home, "--signer", "d", dFile, "-q"]) }
        for (id, fpr) in keys.sorted(by: { $0.key < $1.key }) {
            try fed.run([
                "keys", "add", "--home", d, "--signer", id, try fed.keyring.exportPublic(fpr, to: "\(id).asc"),
            ])
        }
        for (key, value) in [("signers", "[\"a\", \"b\", \"c\"]"), ("threshold", "2"), ("url", "\"\(remote)\"")] {
            try Federation.setConfig(home: d, table: key == "url" ? "remote" : "trust", key, value)
        }
        for (key, value) in [("signers", "[\"a\", \"b\", \"c\"]"), ("threshold", "2")] {
            try Federation.setConfig(home: late, table: "trust", key, value)
        }
        try Federation.setConfig(home: late, table: "remote", "url", "\"\(remote)\"")
        for (id, fpr) in keys.sorted(by: { $0.key < $1.key }) {
            try fed.run([
                "keys", "add", "--home", late, "--signer", id, try fed.keyring.exportPublic(fpr, to: "\(id).asc"),
            ])
        }
        // d is not a signer yet.
        let notYet = try fed.fedbatch(["keys", "signers", "--home", d, "--set", "a,b,d", "--threshold", "2"])
        #expect(notYet.status != 0 && notYet.err.contains("not pinned for any signer"), "\(notYet.err)")

        // a stages the set {a, b, d} with threshold 2 (c leaves) and
        // proposes generation 1, which carries it.
        let staged = try fed.run([
            "keys", "signers", "--home", a, "--set", "a,b,d", "--threshold", "2", "--json",
        ]).summary()
        #expect(staged["action"] as? String == "staged", "\(staged)")
        #expect((staged["staged"] as? [String: Any])?["threshold"] as? Int == 2)
        let half = try fed.fedbatch(["keys", "signers", "--home", a, "--set", "a,b,c,d", "--threshold", "2"])
        #expect(half.status != 0 && half.err.contains("more than half"), "\(half.err)")
        try Self.deliver(fed, remote: remote, seq: 1, base: 0)
        try fed.run(["pull", "--home", a, "-q"])
        #expect(try fed.run(["merge", "--home", a, "--json"]).summary()["generation"] as? Int == 1)
        try fed.run(["publish", "--home", a, "-q"])

        // b re-derives the proposal, but has not consented to the change.
        try fed.run(["pull", "--home", b, "-q"])
        let refused = try fed.fedbatch(["witness", "--home", b, "--json"])
        let code = (try refused.jsonErrorLines().last)?["code"] as? String
        #expect(refused.status == 3 && code == "signer.set-not-staged", "\(refused.out)\(refused.err)")
        #expect(!FileManager.default.fileExists(atPath: b + "/generations/g000001.fbg"))
        // Once b stages the same set, it co-signs.
        try fed.run(["keys", "signers", "--home", b, "--set", "d,b,a", "--threshold", "2", "-q"])
        // Killed between recording the change and dropping what it staged:
        // the staged change is dropped when next read, never carried again.
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_FAULT"] = "after-signer-set-recorded"
        #expect(try Subprocess.fedbatch(["witness", "--home", b, "-q"], environment: env).status != 0)
        #expect(FileManager.default.fileExists(atPath: b + "/keys/signer-set-pending"))
        #expect(FileManager.default.fileExists(atPath: b + "/generations/g000001-b.fbc"))
        try fed.run(["publish", "--home", b, "-q"])
        let atB = try fed.run(["keys", "signers", "--home", b, "--json"]).summary()

        let sets = atB["sets"] as? [[String: Any]] ?? []
        #expect(sets.map { $0["from_generation"] as? Int } == [1, 2], "\(atB)")
        #expect((sets.last?["signers"] as? [[String: Any]])?.map { $0["id"] as? String } == ["a", "b", "d"])
        #expect(atB["staged"] is NSNull, "the change b staged is done: \(atB)")

        // Generation 2 under the new set: d catches up from the remote
        // (adopting the set from generation 1) and proposes; c's signature
        // no longer counts, a's does.
        try fed.run(["pull", "--home", a, "-q"])
        try Self.deliver(fed, remote: remote, seq: 2, base: 1)
        let dPull = try fed.fedbatch(["pull", "--home", d, "--json"])
        #expect(dPull.status == 0, "\(dPull.out)\(dPull.err)")
        #expect(try fed.run(["merge", "--home", d, "--json"]).summary()["generation"] as? Int == 2)
        try fed.run(["publish", "--home", d, "-q"])
        try fed.run(["pull", "--home", site, "-q"])
        let proposal = remote + "/proposals/g000002-d.fbg"
        try FileManager.default.copyItem(atPath: proposal, toPath: site + "/generations/g000002.fbg")
        // c signs d's proposal by hand: a signer of the old set only.
        let raw = try ContainerFile.slot(of: try OpenFile(path: proposal)).statement
        let cSigner = try PayloadSigner(gnupgHome: fed.keyring.home, fingerprint: keys["c"]!, passphraseFile: nil)
        try cSigner.sign(raw).write(to: URL(fileURLWithPath: site + "/generations/g000002-c.fbc"))
        let outvoted = try fed.fedbatch(["verify", "--home", site, "2", "--json"])
        let verdict = (try outvoted.summary()["files"] as? [[String: Any]])?.first
        #expect(outvoted.status == 3 && verdict?["code"] as? String == "trust.threshold", "\(outvoted.out)")
        #expect(
            (verdict?["message"] as? String)?.contains("signed by 1 of the signers (d)") == true, "\(verdict ?? [:])")
        try FileManager.default.removeItem(atPath: site + "/generations/g000002.fbg")
        try FileManager.default.removeItem(atPath: site + "/generations/g000002-c.fbc")

        // a co-signs; d's proposal is a generation of the new set.
        try fed.run(["pull", "--home", a, "-q"])
        #expect(try fed.run(["witness", "--home", a, "--json"]).summary()["generation"] as? Int == 2)
        try fed.run(["publish", "--home", a, "-q"])
        let sitePull = try fed.fedbatch(["pull", "--home", site, "--json"])
        #expect(sitePull.status == 0, "\(sitePull.out)\(sitePull.err)")
        let verified = try fed.fedbatch(["verify", "--home", site, "2"])
        #expect(verified.status == 0, "\(verified.out)\(verified.err)")
        let log = try fed.run(["log", "--home", site, "--json"]).summary()
        let links = log["generations"] as? [[String: Any]] ?? []
        #expect(links.map { $0["signers"] as? [String] ?? [] } == [["a"], ["a", "b"], ["a", "d"]], "\(links)")
        // A site that pulls the whole chain at once walks to it.
        try fed.run(["pull", "--home", late, "-q"])
        let walked = try fed.fedbatch(["verify", "--home", late, "2"])
        #expect(walked.status == 0, "\(walked.out)\(walked.err)")
        // Everyone re-derives the chain, the change included.
        #expect(try fed.fedbatch(["audit", "--home", b, "all"]).status == 0)

        // c, removed, learns the new set from the chain and merges no more.
        _ = try fed.fedbatch(["pull", "--home", c, "-q"])
        try Self.deliver(fed, remote: remote, seq: 3, base: 2)
        _ = try fed.fedbatch(["pull", "--home", c, "-q"])
        let out = try fed.fedbatch(["merge", "--home", c])
        #expect(out.status != 0 && out.err.contains("not the key of any signer of the set"), "\(out.err)")
    }

    @Test(
        "two signers that merged the same inbox at once proposed one generation: each co-signs the other's as its own, and it reaches the threshold; different inboxes stay apart"
    )
    func sameInboxAtOnce() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        let (remote, _) = try Self.threeSigners(fed)
        let a = fed.collector, b = fed.root + "/signer-b", site = fed.site("site-1")
        try Self.deliver(fed, remote: remote, seq: 1, base: 0)
        // Both pull the same inbox and merge before either publishes.
        for home in [a, b] {
            try fed.run(["pull", "--home", home, "-q"])
            #expect(try fed.run(["merge", "--home", home, "--json"]).summary()["generation"] as? Int == 1)
        }
        try fed.run(["publish", "--home", a, "-q"])
        try fed.run(["publish", "--home", b, "-q"])
        #expect(!FileManager.default.fileExists(atPath: remote + "/generations/g000001.fbg"))
        // b finds a's proposal is its own generation 1 and co-signs it.
        try fed.run(["pull", "--home", b, "-q"])
        let cosigned = try fed.run(["witness", "--home", b, "--json"]).summary()
        #expect(cosigned["generation"] as? Int == 1, "\(cosigned)")
        try fed.run(["publish", "--home", b, "-q"])
        // a's copy, with b's cosignature, has the threshold: a publishes it.
        try fed.run(["pull", "--home", a, "-q"])
        try fed.run(["publish", "--home", a, "-q"])
        #expect(FileManager.default.fileExists(atPath: remote + "/generations/g000001.fbg"))
        try fed.run(["pull", "--home", site, "-q"])
        let verified = try fed.fedbatch(["verify", "--home", site, "1"])
        #expect(verified.status == 0, "\(verified.out)\(verified.err)")
        // b takes that copy in place of its own (the same payload), so it
        // builds on generation 1 too.
        try fed.run(["pull", "--home", b, "-q"])
        try Self.deliver(fed, remote: remote, seq: 2, base: 1)
        try fed.run(["pull", "--home", b, "-q"])
        let next = try fed.fedbatch(["merge", "--home", b, "--json"])
        #expect(next.status == 0, "\(next.out)\(next.err)")
        #expect(try next.summary()["generation"] as? Int == 2)

        // c merged a different inbox (one bundle) for generation 2: b
        // holds another generation 2 and refuses it as a fork.
        let c = fed.root + "/signer-c"
        try fed.run(["pull", "--home", c, "-q"])
        let stray = try FileManager.default.contentsOfDirectory(atPath: c + "/inbox").filter { $0.contains("site-2") }
        try #require(!stray.isEmpty, "site-2's bundle is in c's inbox")
        for name in stray { try FileManager.default.removeItem(atPath: c + "/inbox/" + name) }
        #expect(try fed.run(["merge", "--home", c, "--json"]).summary()["generation"] as? Int == 2)
        let fork = try fed.fedbatch(["witness", "--home", b, c + "/generations/g000002.fbg", "--json"])
        let code = (try fork.jsonErrorLines().last)?["code"] as? String
        #expect(fork.status == 3 && code == "witness.fork", "\(fork.out)\(fork.err)")
    }

    /// Signers a (the genesis collector), b and c with threshold 2 on one
    /// directory remote, and site-1 pinning them; b and c start as copies
    /// of a's home with their own keys. Returns the remote and the keys.
    static func threeSigners(_ fed: Federation) throws -> (remote: String, keys: [String: String]) {
        let remote = fed.root + "/remote"
        try FileManager.default.createDirectory(atPath: remote + "/inbox", withIntermediateDirectories: true)
        let a = fed.collector
        let keys = [
            "a": fed.collectorKey, "b": try fed.keyring.generate("signer-b"), "c": try fed.keyring.generate("signer-c"),
        ]
        for id in ["b", "c"] { try copySigner(fed, to: fed.root + "/signer-\(id)", key: keys[id]!) }
        for home in [a, fed.root + "/signer-b", fed.root + "/signer-c", fed.site("site-1")] {
            for (id, fpr) in keys.sorted(by: { $0.key < $1.key }) {
                try fed.run([
                    "keys", "add", "--home", home, "--signer", id, try fed.keyring.exportPublic(fpr, to: "\(id).asc"),
                    "-q",
                ])
            }
            try Federation.setConfig(home: home, table: "trust", "signers", "[\"a\", \"b\", \"c\"]")
            try Federation.setConfig(home: home, table: "trust", "threshold", "2")
            try Federation.setConfig(home: home, table: "remote", "url", "\"\(remote)\"")
        }
        try fed.run(["publish", "--home", a, "-q"])
        return (remote, keys)
    }

    /// A signer's home as a copy of the genesis signer's, signing with `key`.
    static func copySigner(_ fed: Federation, to home: String, key: String) throws {
        try FileManager.default.copyItem(atPath: fed.collector, toPath: home)
        let path = home + "/fedbatch.toml"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try text.replacingOccurrences(of: "key = \"\(fed.collectorKey)\"", with: "key = \"\(key)\"")
            .write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Each site's bundle on the shared remote's inbox.
    static func deliver(_ fed: Federation, remote: String, seq: Int64, base: Int) throws {
        for s in ["site-1", "site-2"] {
            let path = try fed.update(
                site: s, seq: seq, base: try fed.generation(base), scale: s == "site-1" ? 0.01 : -0.02)
            try FileManager.default.createDirectory(
                atPath: remote + "/inbox/\(s)", withIntermediateDirectories: true)
            try FileManager.default.moveItem(
                atPath: path, toPath: remote + "/inbox/\(s)/" + (path as NSString).lastPathComponent)
        }
    }
}

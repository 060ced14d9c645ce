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
        let remote = fed.root + "/remote"
        try FileManager.default.createDirectory(atPath: remote + "/inbox", withIntermediateDirectories: true)
        let a = fed.collector, b = fed.root + "/signer-b", c = fed.root + "/signer-c"
        let keys = [
            "a": fed.collectorKey, "b": try fed.keyring.generate("signer-b"), "c": try fed.keyring.generate("signer-c"),
        ]
        // Signers b and c start as copies of the genesis signer's home, with
        // their own keys.
        for (home, id) in [(b, "b"), (c, "c")] {
            try FileManager.default.copyItem(atPath: a, toPath: home)
            let path = home + "/fedbatch.toml"
            let text = try String(contentsOfFile: path, encoding: .utf8)
            try text.replacingOccurrences(of: "key = \"\(fed.collectorKey)\"", with: "key = \"\(keys[id]!)\"")
                .write(toFile: path, atomically: true, encoding: .utf8)
        }
        let site = fed.site("site-1")
        for home in [a, b, c, site] {
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

        /// Each site's bundle on the shared remote's inbox.
        func deliver(seq: Int64, base: Int) throws {
            for s in ["site-1", "site-2"] {
                let path = try fed.update(
                    site: s, seq: seq, base: try fed.generation(base), scale: s == "site-1" ? 0.01 : -0.02)
                try FileManager.default.createDirectory(
                    atPath: remote + "/inbox/\(s)", withIntermediateDirectories: true)
                try FileManager.default.moveItem(
                    atPath: path, toPath: remote + "/inbox/\(s)/" + (path as NSString).lastPathComponent)
            }
        }

        // Generation 1, with signer c offline: a proposes, b co-signs.
        try deliver(seq: 1, base: 0)
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
        try fed.run(["pull", "--home", a, "-q"])
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
        for s in ["site-1"] {
            let name = try FileManager.default.contentsOfDirectory(atPath: remote + "/inbox/\(s)").sorted()[0]
            try FileManager.default.copyItem(atPath: remote + "/inbox/\(s)/" + name, toPath: cInbox + "/" + name)
        }
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
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Witnesses through the real binary, on a directory remote: a witness
/// re-derives each generation from the inputs the collector publishes and
/// co-signs only what re-derives; a site that requires a cosignature uses
/// nothing else; a witness never co-signs a fork.
@Suite("witnesses")
struct WitnessTests {
    /// A federation of two sites, a witness pinning both, site-1 requiring
    /// one cosignature from it, and a remote every home uses.
    static func setUp() throws -> (fed: Federation, witness: String, remote: String) {
        // The model Fashion-MNIST trains, small enough for a debug build.
        let fed = try Federation(sites: ["site-1", "site-2"], arch: "mlp:784-16-10")
        let remote = fed.root + "/remote"
        try FileManager.default.createDirectory(atPath: remote, withIntermediateDirectories: true)
        let fpr = try fed.keyring.generate("witness-1")
        let witness = fed.root + "/w1"
        try fed.run([
            "init", "witness", "--home", witness, "--witness-id", "w1", "--key", fpr, "--collector-key",
            fed.collector + "/keys/collector.asc", "--model-id", "demo", "-q",
        ])
        for s in ["site-1", "site-2"] {
            try fed.run([
                "keys", "add", "--home", witness, "--site", s,
                try fed.keyring.exportPublic(fed.siteKeys[s]!, to: "\(s).asc"), "-q",
            ])
        }
        let witnessKey = try fed.keyring.exportPublic(fpr, to: "w1.asc")
        try fed.run(["keys", "add", "--home", fed.site("site-1"), "--witness", "w1", witnessKey, "-q"])
        try Federation.setConfig(home: fed.site("site-1"), table: "trust", "min_witnesses", "1")
        for home in [fed.collector, witness, fed.site("site-1")] {
            try Federation.setConfig(home: home, table: "remote", "url", "\"\(remote)\"")
        }
        try Federation.setConfig(home: fed.collector, table: "remote", "publish_bundles", "true")
        return (fed, witness, remote)
    }

    static func codes(_ r: ProcessResult) -> [String] {
        ((try? r.jsonErrorLines()) ?? []).compactMap { $0["code"] as? String }
    }

    @Test(
        "a site requiring one cosignature uses a generation only once the witness re-derived and co-signed it, and never one the witness refused"
    )
    func siteRequiresWitness() throws {
        let (fed, witness, remote) = try Self.setUp()
        let site = fed.site("site-1")
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(0), scale: 0.02)
        try fed.run(["merge", "--home", fed.collector, "-q"])
        let published = try fed.run(["publish", "--home", fed.collector, "--json"]).summary()
        let keys = (published["transferred"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String }
        #expect(keys.filter { $0.hasPrefix("bundles/") }.count == 2, "\(keys)")

        // The site has the generations, but no cosignature yet: it keeps
        // them as links of the chain and uses neither.
        let pulled = try fed.fedbatch(["pull", "--home", site, "--json"])
        #expect(pulled.status == 0, "\(pulled.err)")
        let waiting = try pulled.summary()["waiting"] as? [[String: Any]] ?? []
        #expect(waiting.map { $0["code"] as? String } == ["trust.witnesses", "trust.witnesses"])
        let refused = try fed.fedbatch(["verify", "--home", site, "latest", "--json"])
        #expect(refused.status == 3)
        let verdict = (try refused.summary()["files"] as? [[String: Any]])?.first
        #expect(verdict?["code"] as? String == "trust.witnesses", "\(refused.out)")
        #expect((verdict?["message"] as? String ?? "").contains("min_witnesses is 1"))
        let train = try fed.fedbatch(["train", "--home", site, "--data", fashionMNIST, "--limit", "20", "--json"])
        #expect(train.status == 3 && Self.codes(train).contains("trust.witnesses"), "\(train.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: site + "/outbox").isEmpty)

        // The witness fetches the generations and their inputs, re-derives
        // and co-signs both, and publishes the cosignatures.
        let wpull = try fed.run(["pull", "--home", witness, "--json"]).summary()
        let fetched = (wpull["transferred"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String }
        #expect(fetched.filter { $0.hasPrefix("bundles/") }.count == 2, "\(wpull)")
        #expect(try fed.run(["witness", "--home", witness, "0", "-q"]).status == 0)
        let cosigned = try fed.run(["witness", "--home", witness, "--json"]).summary()
        #expect(cosigned["generation"] as? Int == 1 && cosigned["inputs"] as? Int == 2, "\(cosigned)")
        #expect(FileManager.default.fileExists(atPath: witness + "/generations/g000001-w1.fbc"))
        // The cosignature is a plain OpenPGP signature over the statement.
        let g1 = try ContainerFile.split(
            try Data(contentsOf: URL(fileURLWithPath: witness + "/generations/g000001.fbg")))
        let gpg = try fed.keyring.gpg([
            "--status-fd", "1", "--verify", witness + "/generations/g000001-w1.fbc",
            try fed.keyring.dir.write("statement", g1.statement),
        ])
        #expect(gpg.out.contains("GOODSIG"), "\(gpg.out)\(gpg.err)")
        try fed.run(["publish", "--home", witness, "-q"])
        #expect(FileManager.default.fileExists(atPath: remote + "/generations/g000001-w1.fbc"))

        // Now the site uses generation 1, and says who co-signed it.
        try fed.run(["pull", "--home", site, "-q"])
        #expect(try fed.fedbatch(["verify", "--home", site, "latest"]).status == 0)
        let trained = try fed.run(["train", "--home", site, "--data", fashionMNIST, "--limit", "20", "--json"])
        #expect((try trained.summary()["bundle"] as? [String: Any])?["base_generation"] as? Int == 1)
        let status = try fed.run(["status", "--home", site, "--json"]).summary()
        let cosigners = try #require(status["cosigners"] as? [[String: Any]])
        #expect(cosigners.first?["generation"] as? Int == 1 && cosigners.first?["witnesses"] as? [String] == ["w1"])
        #expect(status["min_witnesses"] as? Int == 1)
        let log = try fed.run(["log", "--home", site, "--json"]).summary()
        #expect(
            (log["generations"] as? [[String: Any]])?.map { $0["cosigners"] as? [String] ?? [] } == [["w1"], ["w1"]])

        // Generation 2 is signed by the collector's own key but is not the
        // merge of what it names: the witness refuses it, and the site,
        // which has it, keeps using generation 1.
        try fed.update(site: "site-2", seq: 2, base: try fed.generation(1))
        try fed.run(["merge", "--home", fed.collector, "-q"])
        try AuditTests.resign(fed, generation: 2) { manifest, _ in manifest.metrics["examples"] = 1 }
        try fed.run(["publish", "--home", fed.collector, "-q"])
        try fed.run(["pull", "--home", witness, "-q"])
        let no = try fed.fedbatch(["witness", "--home", witness, "--json"])
        #expect(no.status == 3 && Self.codes(no) == ["witness.not-reproduced"], "\(no.err)")
        #expect(!FileManager.default.fileExists(atPath: witness + "/generations/g000002-w1.fbc"))
        try fed.run(["pull", "--home", site, "-q"])
        #expect(try fed.fedbatch(["verify", "--home", site, "2"]).status == 3)
        let again = try fed.fedbatch(["train", "--home", site, "--data", fashionMNIST, "--limit", "20", "--json"])
        // Generation 1 is still the newest it may use, and it sent for it.
        #expect(again.status == 5 && Self.codes(again).contains("trust.witnesses"), "\(again.err)")
        let witnessStatus = try fed.run(["status", "--home", witness, "--json"]).summary()
        #expect(witnessStatus["pending"] as? [Int] == [2] && witnessStatus["role"] as? String == "witness")
    }

    @Test(
        "a witness never co-signs a second, different generation under one number, and a kill between its two writes is finished"
    )
    func forkAndCrash() throws {
        let (fed, witness, _) = try Self.setUp()
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(0), scale: 0.02)
        // A second collector state that merges only site-1: a valid,
        // re-derivable, different generation 1.
        let other = fed.root + "/other"
        try FileManager.default.copyItem(atPath: fed.collector, toPath: other)
        try FileManager.default.removeItem(atPath: other + "/inbox/demo-g0-site-2-1.fbu")
        try fed.run(["merge", "--home", other, "-q"])
        try fed.run(["merge", "--home", fed.collector, "-q"])
        try fed.run(["publish", "--home", fed.collector, "-q"])
        try fed.run(["pull", "--home", witness, "-q"])

        // Killed after recording generation 1, before writing its
        // cosignature: the rerun writes it, for the same generation.
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_FAULT"] = "witness-after-ledger"
        let killed = try Subprocess.fedbatch(["witness", "--home", witness, "-q"], environment: env)
        #expect(killed.status != 0)
        #expect(!FileManager.default.fileExists(atPath: witness + "/generations/g000001-w1.fbc"))
        let rerun = try fed.run(["witness", "--home", witness, "--json"]).summary()
        #expect(rerun["again"] as? Bool == true && rerun["generation"] as? Int == 1)
        #expect(FileManager.default.fileExists(atPath: witness + "/generations/g000001-w1.fbc"))

        // The other generation 1, with its input, re-derives too; the
        // witness refuses it all the same.
        try FileManager.default.removeItem(atPath: witness + "/generations/g000001.fbg")
        try FileManager.default.copyItem(
            atPath: other + "/generations/g000001.fbg", toPath: witness + "/generations/g000001.fbg")
        let audit = try fed.fedbatch(["audit", "--home", witness, "1", "--bundles", other + "/accepted"])
        #expect(audit.status == 0, "\(audit.out)\(audit.err)")
        let fork = try fed.fedbatch(["witness", "--home", witness, "1", "--bundles", other + "/accepted", "--json"])
        #expect(fork.status == 3 && Self.codes(fork) == ["witness.fork"], "\(fork.err)")
        #expect(try fed.fedbatch(["log", "--home", witness]).status == 3)
    }

    @Test("a site's status names the generations signed after it pushed a bundle that left it out")
    func passedOver() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        try fed.setCollectorConfig("max_staleness", "1")
        let site = fed.site("site-1"), remote = fed.root + "/remote"
        try FileManager.default.createDirectory(atPath: remote, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000000.fbg", toPath: site + "/generations/g000000.fbg")
        try fed.run(["export", "--home", site, "latest", "--out", fed.root + "/w0.safetensors", "-q"])
        try fed.run([
            "pack", "--home", site, "--weights", fed.root + "/w0.safetensors", "--num-examples", "10", "-q",
        ])
        try fed.run(["push", "--home", site, "--remote", remote, "-q"])
        // The signatures' times are whole seconds.
        Thread.sleep(forTimeInterval: 1.1)
        // The collector never takes it: two generations from site-2 alone.
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(0))
        try fed.run(["merge", "--home", fed.collector, "-q"])
        try fed.update(site: "site-2", seq: 2, base: try fed.generation(1))
        try fed.run(["merge", "--home", fed.collector, "-q"])
        for n in [1, 2] {
            try FileManager.default.copyItem(
                atPath: fed.collector + "/generations/" + HomeLayout.generationFileName(n),
                toPath: site + "/generations/" + HomeLayout.generationFileName(n))
        }
        let status = try fed.run(["status", "--home", site, "--json"]).summary()
        let last = try #require(status["last_bundle"] as? [String: Any])
        #expect(last["left_out_by"] as? [Int] == [1, 2] && last["pushed"] is String, "\(last)")
        #expect(try fed.run(["status", "--home", site]).out.contains("passed over"))
    }
}

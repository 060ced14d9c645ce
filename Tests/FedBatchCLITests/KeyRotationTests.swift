import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Rotating keys with bundles in transit: a site's key (two pinned during
/// the overlap, then the old one retired) and the collector's (announced in
/// the next generation, signed by both keys, adopted by the sites), and the
/// audit trail afterwards. Real keys, the real binary.
@Suite("key rotation")
struct KeyRotationTests {
    func copyGeneration(_ fed: Federation, _ n: Int, to site: String) throws {
        let name = HomeLayout.generationFileName(n)
        let dest = fed.site(site) + "/generations/" + name
        if FileManager.default.fileExists(atPath: dest) { try FileManager.default.removeItem(atPath: dest) }
        try FileManager.default.copyItem(atPath: fed.collector + "/generations/" + name, toPath: dest)
    }

    func moveOutbox(_ fed: Federation, _ site: String) throws {
        for name in try FileManager.default.contentsOfDirectory(atPath: fed.site(site) + "/outbox")
        where !name.hasPrefix(".") {
            try FileManager.default.moveItem(
                atPath: fed.site(site) + "/outbox/" + name, toPath: fed.collector + "/inbox/" + name)
        }
    }

    @Test(
        "site and collector keys rotate with bundles in transit; sites adopt the new collector key; old keys stop signing; the trail verifies"
    )
    func fullRotation() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        let oldCollector = fed.collectorKey
        let newCollector = try fed.keyring.generate("collector-2026")
        let oldSite1 = fed.siteKeys["site-1"]!
        let newSite1 = try fed.keyring.generate("site-1-2026")
        for s in ["site-1", "site-2"] { try copyGeneration(fed, 0, to: s) }
        let g0 = try fed.generation(0)

        _ = g0
        // In transit: one bundle from each site, on generation 0, signed
        // with the keys of the day.
        try fed.run(["export", "--home", fed.site("site-1"), "latest", "--out", fed.root + "/w0.safetensors"])
        for s in ["site-1", "site-2"] {
            try fed.run([
                "pack", "--home", fed.site(s), "--weights", fed.root + "/w0.safetensors", "--num-examples", "10", "-q",
            ])
            try moveOutbox(fed, s)
        }

        // Site-1 starts its rotation: the new key is pinned beside the old.
        let asc = try fed.keyring.exportPublic(newSite1, to: "site-1-new.asc")
        let added = try fed.run(["keys", "add", "--home", fed.collector, "--site", "site-1", asc, "--json"])
        #expect(try added.summary()["action"] as? String == "pinned")
        #expect(FileManager.default.fileExists(atPath: fed.collector + "/keys/sites/site-1@\(newSite1).asc"))
        // A third key is refused while two are pinned.
        let third = try fed.keyring.exportPublic(try fed.keyring.generate("site-1-spare"), to: "spare.asc")
        let refused = try fed.fedbatch(["keys", "add", "--home", fed.collector, "--site", "site-1", third])
        #expect(refused.status != 0 && refused.err.contains("already has two keys pinned"), "\(refused.err)")

        // The collector prepares its rotation: nothing changes until the next generation.
        let prepared = try fed.run(["keys", "rotate", "--home", fed.collector, "--new-key", newCollector, "--json"])
            .summary()
        #expect(
            prepared["carried_by"] as? Int == 1 && prepared["from_generation"] as? Int == 2
                && prepared["old_key"] as? String == oldCollector)
        #expect(
            try String(contentsOfFile: fed.collector + "/fedbatch.toml", encoding: .utf8).contains(
                "key = \"\(oldCollector)\""))

        // The merge takes both bundles in transit; generation 1 carries the
        // rotation, signed by the old key; then the home signs with the new.
        let m1 = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        #expect(m1["generation"] as? Int == 1 && (m1["accepted"] as? [Any])?.count == 2, "\(m1)")
        let toml = try String(contentsOfFile: fed.collector + "/fedbatch.toml", encoding: .utf8)
        #expect(toml.contains("key = \"\(newCollector)\"") && toml.contains("# fedbatch collector home"))
        #expect(FileManager.default.fileExists(atPath: fed.collector + "/keys/rotations/g000002/new-key.sig"))
        #expect(!FileManager.default.fileExists(atPath: fed.collector + "/keys/rotation-pending"))
        let g1 = fed.collector + "/generations/g000001.fbg"
        let inspect = try fed.run(["inspect", g1, "--json"]).out
        #expect(inspect.contains("rotation/statement.json") && inspect.contains("rotation/new-key.asc"))
        // Plain gpg agrees that generation 1's statement is signed by the old key.
        let stmt = try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: g1)))
        #expect(
            try fed.keyring.gpg([
                "--status-fd", "1", "--verify", try fed.keyring.dir.write("s.sig", stmt.signature),
                try fed.keyring.dir.write("s", stmt.statement),
            ]).out.contains("VALIDSIG \(oldCollector)"))

        // Site-1 finishes its rotation.
        let removed = try fed.run([
            "keys", "remove", "--home", fed.collector, "--site", "site-1", "--key", oldSite1, "--json",
        ]).summary()
        #expect((removed["keys"] as? [[String: Any]])?.map { $0["status"] as? String } == ["retired"])
        // The new key took the plain name.
        #expect(FileManager.default.fileExists(atPath: fed.collector + "/keys/sites/site-1.asc"))
        #expect(FileManager.default.fileExists(atPath: fed.collector + "/keys/retired/sites/site-1@\(oldSite1).asc"))

        // Site-2 trains on generation 1 (pack): it verifies it with the old
        // key it pins and adopts the new one.
        try copyGeneration(fed, 1, to: "site-2")
        try fed.run(["export", "--home", fed.site("site-2"), "latest", "--out", fed.root + "/w.safetensors"])
        try fed.run([
            "pack", "--home", fed.site("site-2"), "--weights", fed.root + "/w.safetensors", "--num-examples", "10",
            "-q",
        ])
        #expect(FileManager.default.fileExists(atPath: fed.site("site-2") + "/keys/rotations/g000002/new-key.asc"))
        try moveOutbox(fed, "site-2")
        // Site-1's bundles on generation 1: one with its new key, and one
        // still signed with the retired key, which is refused.
        let g1id = try fed.generation(1)
        try fed.update(site: "site-1", seq: 2, base: g1id, signedBy: newSite1)
        try fed.update(site: "site-1", seq: 3, base: g1id, name: "late-old-key.fbu", signedBy: oldSite1)
        let m2 = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        let s2 = try m2.summary()
        #expect(s2["generation"] as? Int == 2 && (s2["accepted"] as? [Any])?.count == 2, "\(s2) \(m2.err)")
        #expect((s2["rejected"] as? [[String: Any]])?.map { $0["code"] as? String } == ["signature.retired-key"])
        // Both generations re-derive: generation 1 with the rotation it
        // carries and a bundle signed by site-1's key retired since.
        let audited = try fed.fedbatch(["audit", "--home", fed.collector, "all", "--json"])
        #expect(audited.status == 0, "\(audited.out)\(audited.err)")
        #expect(
            (try audited.summary()["generations"] as? [[String: Any]])?.map { $0["verdict"] as? String } == [
                "root", "reproduced", "reproduced",
            ])

        // Generation 2 is signed by the new key; site-2 verifies it.
        let stmt2 = try ContainerFile.split(
            try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000002.fbg")))
        #expect(
            try fed.keyring.gpg([
                "--status-fd", "1", "--verify", try fed.keyring.dir.write("s2.sig", stmt2.signature),
                try fed.keyring.dir.write("s2", stmt2.statement),
            ]).out.contains("VALIDSIG \(newCollector)"))
        try copyGeneration(fed, 2, to: "site-2")
        let v2 = try fed.fedbatch(["verify", "--home", fed.site("site-2"), "latest", "--json"])
        #expect(v2.status == 0, "\(v2.out)\(v2.err)")

        // Site-1 never read generation 1: handed 1 and 2 at once, it adopts
        // the rotation from 1 on the way to 2.
        for n in [1, 2] { try copyGeneration(fed, n, to: "site-1") }
        // export reads the rotation in memory and keeps nothing ...
        try fed.run(["export", "--home", fed.site("site-1"), "latest", "--out", fed.root + "/w1.safetensors"])
        #expect(!FileManager.default.fileExists(atPath: fed.site("site-1") + "/keys/rotations"))
        // ... pack, which accepts generation 2 for the site, keeps the new key.
        try fed.run([
            "pack", "--home", fed.site("site-1"), "--weights", fed.root + "/w1.safetensors", "--num-examples", "10",
            "-q",
        ])
        #expect(FileManager.default.fileExists(atPath: fed.site("site-1") + "/keys/rotations/g000002/new-key.asc"))

        // The whole chain verifies on every home, across the rotation.
        for home in [fed.collector, fed.site("site-1"), fed.site("site-2")] {
            let log = try fed.fedbatch(["log", "--home", home, "--json"])
            let count = (try log.summary()["generations"] as? [Any])?.count
            #expect(log.status == 0 && count == 3, "\(home): \(log.err)")
        }

        // The old collector key can no longer sign: a generation 3 signed
        // with it (the key stolen, say) is refused at the site.
        let g2 = try fed.generation(2)
        let forgedManifest = Manifest(
            kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-09T00:00:00Z",
            generation: 3, parent: .init(number: 2, digest: g2.digest), included: [], rejected: [])
        let forged = try fed.signer(oldCollector).seal(
            manifest: forgedManifest,
            members: [(ContainerPath.tensors, SafetensorsWriter.encode(try Samples.weights()))])
        try forged.file.write(to: URL(fileURLWithPath: fed.site("site-2") + "/generations/g000003.fbg"))
        let refusedForgery = try fed.fedbatch(["verify", "--home", fed.site("site-2"), "latest", "--json"])
        #expect(refusedForgery.status == 3)
        #expect(
            (try refusedForgery.summary()["files"] as? [[String: Any]])?.first?["code"] as? String
                == "signature.key-range")

        // The audit trail: a merged bundle signed by site-1's retired key
        // still verifies, with a note; keys list shows each key's range.
        let accepted = try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/accepted").filter {
            $0.hasSuffix("-site-1-1.fbu")
        }
        #expect(accepted.count == 1)
        let audit = try fed.run([
            "verify", "--home", fed.collector, fed.collector + "/accepted/" + accepted[0], "--json",
        ]).summary()
        let verdict = (audit["files"] as? [[String: Any]])?.first ?? [:]
        #expect(
            verdict["ok"] as? Bool == true && (verdict["note"] as? String ?? "").contains("generation 1 included it"),
            "\(verdict)")
        // The refused one, never merged, does not.
        let late = try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/quarantine").first {
            $0.hasPrefix("late-old-key") && !$0.hasSuffix(".json")
        }!
        #expect(
            try fed.fedbatch(["verify", "--home", fed.collector, fed.collector + "/quarantine/" + late]).status == 3)
        let keys = try #require(
            try fed.run(["keys", "list", "--home", fed.collector, "--json"]).summary()["keys"] as? [[String: Any]])
        let collectors = keys.filter { $0["role"] as? String == "collector" }
        #expect(collectors.map { $0["fingerprint"] as? String } == [oldCollector, newCollector])
        #expect(
            collectors.map { $0["valid_until"] as? Int } == [1, nil]
                && collectors.map { $0["valid_from"] as? Int } == [0, 2])
        #expect(keys.contains { $0["fingerprint"] as? String == oldSite1 && $0["status"] as? String == "retired" })
    }

    @Test("a crash after the carrying generation is written is finished by the next command")
    func interruptedRotation() throws {
        let fed = try Federation(sites: ["site-1"])
        let newCollector = try fed.keyring.generate("collector-next")
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        try fed.run(["keys", "rotate", "--home", fed.collector, "--new-key", newCollector, "-q"])
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_FAULT"] = "after-ledger"
        let crashed = try Subprocess.fedbatch(["merge", "--home", fed.collector, "-q"], environment: env)
        #expect(crashed.status != 0)
        #expect(FileManager.default.fileExists(atPath: fed.collector + "/generations/g000001.fbg"))
        #expect(FileManager.default.fileExists(atPath: fed.collector + "/keys/rotation-pending"))
        // The next command, signing with the old key named in fedbatch.toml,
        // completes the rotation and asks to be run again.
        let again = try fed.fedbatch(["merge", "--home", fed.collector])
        #expect(again.status == 1 && again.err.contains("run the command again"), "\(again.err)")
        #expect(
            try String(contentsOfFile: fed.collector + "/fedbatch.toml", encoding: .utf8).contains(
                "key = \"\(newCollector)\""))
        #expect(FileManager.default.fileExists(atPath: fed.collector + "/keys/rotations/g000002"))
        let third = try fed.fedbatch(["merge", "--home", fed.collector])
        #expect(third.status == 5, "\(third.err)")
        #expect(try fed.fedbatch(["log", "--home", fed.collector]).status == 0)
    }
}

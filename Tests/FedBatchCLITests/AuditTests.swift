import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// `fedbatch audit` through the real binary: generations written by every
/// kind of merge re-derive bit for bit, and a collector that signs weights
/// other than the merge of what it names is caught.
@Suite("audit")
struct AuditTests {
    /// The audit's JSON summary, whatever the exit status.
    static func audit(_ fed: Federation, _ args: [String], home: String? = nil) throws -> (Int32, [String: Any]) {
        let r = try fed.fedbatch(["audit", "--home", home ?? fed.collector, "--json"] + args)
        return (r.status, try r.summary())
    }

    static func verdicts(_ summary: [String: Any]) -> [String] {
        (summary["generations"] as? [[String: Any]] ?? []).map { "\($0["generation"]!):\($0["verdict"]!)" }
    }

    /// Generation 1: a merge of one bundle from each of site-1 and site-2.
    static func mergeTwoSites(_ fed: Federation) throws {
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(0), scale: 0.02)
        try fed.run(["merge", "--home", fed.collector, "-q"])
    }

    /// Rewrites generation `n` of the collector: `change` edits its manifest
    /// and members, and the collector's own key signs the result, as a
    /// dishonest collector would.
    static func resign(
        _ fed: Federation, generation n: Int,
        _ change: (inout Manifest, inout [(name: String, data: Data)]) throws -> Void
    ) throws {
        let path = fed.collector + "/generations/" + HomeLayout.generationFileName(n)
        let file = try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: path)))
        let container = try ContainerReader.read(payload: file.payload)
        var manifest = container.manifest
        var members: [(name: String, data: Data)] = manifest.members.map { ($0.name, container.members[$0.name]!) }
        try change(&manifest, &members)
        let sealed = try fed.signer(fed.collectorKey).seal(manifest: manifest, members: members)
        try sealed.file.write(to: URL(fileURLWithPath: path))
    }

    @Test("a chain of fedavg merges with a stale bundle, a revert and a remembered update re-derives bit for bit")
    func fedavgChain() throws {
        let fed = try Federation(sites: ["site-1", "site-2", "site-3"])
        try fed.setCollectorConfig("max_staleness", "2")
        try fed.setCollectorConfig("clip_norm", "0.5")
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0), examples: 120)
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(0), examples: 80, scale: -0.02)
        try fed.run(["merge", "--home", fed.collector, "-q"])
        // Generation 2: site-3 one generation behind, site-1 fresh.
        try fed.update(site: "site-3", seq: 1, base: try fed.generation(0), examples: 50, scale: 0.03)
        try fed.update(site: "site-1", seq: 2, base: try fed.generation(1), examples: 110)
        try fed.run(["merge", "--home", fed.collector, "-q"])
        // Generation 3 under memory: site-2 and site-3 sent nothing new
        // and are remembered.
        try Federation.setConfig(home: fed.collector, table: "merge", "memory", "\"mifa\"")
        try fed.update(site: "site-1", seq: 3, base: try fed.generation(2), examples: 90)
        let merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        #expect((merged["remembered"] as? [[String: Any]])?.count == 2, "\(merged)")
        // Generation 4 restores generation 1; generation 5 merges on it.
        try fed.run(["revert", "--home", fed.collector, "1", "-q"])
        try fed.update(site: "site-2", seq: 2, base: try fed.generation(4), examples: 70)
        try fed.run(["merge", "--home", fed.collector, "-q"])

        let (status, summary) = try Self.audit(fed, ["all"])
        #expect(status == 0, "\(summary)")
        #expect(
            Self.verdicts(summary) == [
                "0:root", "1:reproduced", "2:reproduced", "3:reproduced", "4:reproduced", "5:reproduced",
            ])
        let generations = try #require(summary["generations"] as? [[String: Any]])
        #expect(
            generations[2]["inputs"] as? Int == 2 && generations[2]["strategy"] as? String == "fedavg"
                && generations[2]["ok"] as? Bool == true)
        #expect(generations[3]["inputs"] as? Int == 3 && generations[4]["strategy"] as? String == "revert")
        // Without arguments: the latest generation; text output says so.
        let text = try fed.run(["audit", "--home", fed.collector])
        #expect(text.out.contains("generation 5 (fedavg, 1 input): re-derived bit for bit"), "\(text.out)")
    }

    @Test("weights changed by one ulp and re-signed by the collector's own key: audit.mismatch names the element")
    func oneULP() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        try Self.mergeTwoSites(fed)
        try Self.resign(fed, generation: 1) { _, members in
            let i = members.firstIndex { $0.name == ContainerPath.tensors }!
            let file = try SafetensorsFile(bytes: members[i].data)
            var named = file.names.map { ($0, file.tensor($0)!) }
            var floats = named[0].1.floats()
            floats[3] = Float(bitPattern: floats[3].bitPattern + 1)
            named[0].1 = Tensor(shape: named[0].1.shape, floats: floats)
            members[i].data = SafetensorsWriter.encode(named)
        }
        // Every signature still verifies: only the audit can tell.
        #expect(try fed.fedbatch(["verify", "--home", fed.collector, "1"]).status == 0)
        let (status, summary) = try Self.audit(fed, ["1"])
        #expect(status == 3)
        let g = try #require((summary["generations"] as? [[String: Any]])?.first)
        let message = g["message"] as? String ?? ""
        #expect(g["code"] as? String == "audit.mismatch" && g["verdict"] as? String == "mismatch")
        #expect(message.contains("element 3") && message.contains("1 of"), "\(message)")
        // The collector's own log sees a replaced file (state.db recorded
        // another digest); given the files alone, log --audit re-derives
        // the whole chain and names the generation.
        let own = try fed.fedbatch(["log", "--home", fed.collector, "--json"])
        let ownError = try own.summary()["error"] as? [String: Any]
        #expect(own.status == 3 && ownError?["code"] as? String == "chain.ledger-mismatch")
        try FileManager.default.removeItem(atPath: fed.collector + "/state.db")
        let log = try fed.fedbatch(["log", "--home", fed.collector, "--audit", "--json"])
        #expect(log.status == 3)
        let links = try #require(try log.summary()["generations"] as? [[String: Any]])
        #expect(
            links.map { ($0["audit"] as? [String: Any])?["verdict"] as? String } == ["root", "mismatch"]
                && links.allSatisfy { $0["signer"] as? String == fed.collectorKey })
        let text = try fed.fedbatch(["audit", "--home", fed.collector, "1"])
        #expect(text.status == 3 && text.err.contains("FAIL  generation 1") && text.err.contains("[audit.mismatch]"))
    }

    @Test("a generation whose included list omits a bundle it summed is caught")
    func omittedBundle() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        try Self.mergeTwoSites(fed)
        try Self.resign(fed, generation: 1) { manifest, _ in
            // Both bundles are in the weights; the list names one.
            manifest.included!.removeLast()
            manifest.metrics["bundles"] = 1
            manifest.metrics["examples"] = 100
        }
        let (status, summary) = try Self.audit(fed, ["g1"])
        #expect(status == 3)
        let message = (summary["generations"] as? [[String: Any]])?.first?["message"] as? String ?? ""
        #expect(message.contains("tensor") && message.contains("differ"), "\(message)")
    }

    @Test("an input that is not in accepted/ is audit.missing-input; --bundles finds a copy")
    func missingInput() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        try Self.mergeTwoSites(fed)
        let elsewhere = TempDir()
        let accepted = fed.collector + "/accepted"
        for name in try FileManager.default.contentsOfDirectory(atPath: accepted) where name.contains("site-2") {
            try FileManager.default.moveItem(atPath: accepted + "/" + name, toPath: elsewhere.file(name))
        }
        let (status, summary) = try Self.audit(fed, [])
        let g = try #require((summary["generations"] as? [[String: Any]])?.first)
        #expect(status == 3 && g["code"] as? String == "audit.missing-input", "\(summary)")
        #expect((g["message"] as? String ?? "").contains("site-2 seq 1"))
        let (again, found) = try Self.audit(fed, ["latest", "--bundles", elsewhere.path])
        #expect(again == 0 && Self.verdicts(found) == ["1:reproduced"], "\(found)")
        // A file there that is not the bundle it claims to be does not pass.
        let name = try FileManager.default.contentsOfDirectory(atPath: elsewhere.path)[0]
        var bytes = try Data(contentsOf: URL(fileURLWithPath: elsewhere.file(name)))
        bytes[100] ^= 1
        try bytes.write(to: URL(fileURLWithPath: elsewhere.file(name)))
        let (third, broken) = try Self.audit(fed, ["latest", "--bundles", elsewhere.path])
        #expect(third == 3 && Self.verdicts(broken) == ["1:mismatch"], "\(broken)")
    }

    @Test("fedadam's moments, multikrum's selection and a trimmed mean re-derive from the parent and the bundles")
    func optimiserAndRobust() throws {
        let fed = try Federation(sites: RobustStrategyTests.sites, arch: RobustStrategyTests.arch)
        for (round, strategy) in ["fedadam", "fedadam", "multikrum", "trimmed-mean"].enumerated() {
            let base = try fed.generation(round)
            for (i, site) in RobustStrategyTests.sites.enumerated() {
                try fed.update(
                    site: site, seq: Int64(round + 1), base: base, examples: Int64(50 + 10 * i),
                    tensors: try RobustStrategyTests.randomDelta(seed: UInt64(round * 100 + i)))
            }
            try fed.run(["merge", "--home", fed.collector, "--strategy", strategy, "-q"])
        }
        let (status, summary) = try Self.audit(fed, ["all"])
        #expect(status == 0, "\(summary)")
        let generations = try #require(summary["generations"] as? [[String: Any]])
        #expect(
            generations.map { $0["strategy"] as? String } == [nil, "fedadam", "fedadam", "multikrum", "trimmed-mean"])
        #expect(
            generations.dropFirst().allSatisfy { $0["verdict"] as? String == "reproduced" && $0["inputs"] as? Int == 7 }
        )
        // The moments are part of what is compared: generation 2 re-signed
        // with generation 1's optimiser state is caught.
        let path = fed.collector + "/generations/g000001.fbg"
        let g1 = try ContainerReader.read(
            payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: path))).payload)
        try Self.resign(fed, generation: 2) { _, members in
            let i = members.firstIndex { $0.name == ServerOptimizer.stateMember }!
            members[i].data = g1.members[ServerOptimizer.stateMember]!
        }
        let (again, caught) = try Self.audit(fed, ["2"])
        let message = (caught["generations"] as? [[String: Any]])?.first?["message"] as? String ?? ""
        #expect(again == 3 && message.contains(ServerOptimizer.stateMember), "\(message)")
    }

    @Test("a private merge re-derives with the collector's kept seed; without it, everything but the noise is checked")
    func privateMerge() throws {
        let fed = try Federation(sites: PrivacyTests.sites, arch: PrivacyTests.arch)
        try PrivacyTests.enablePrivacy(fed, z: 1.0, clip: 1.0, sites: 3, delta: 1e-5, maxEpsilon: 50)
        for round in 1...2 {
            _ = try PrivacyTests.writeRound(round, fed: fed)
            try fed.run(["merge", "--home", fed.collector, "-q"])
        }
        let (status, summary) = try Self.audit(fed, ["all"])
        #expect(status == 0 && Self.verdicts(summary) == ["0:root", "1:reproduced", "2:reproduced"], "\(summary)")

        // A third party has no seed: the weights are not compared, and the
        // verdict and the notes say so.
        let seeds = fed.collector + "/noise-seeds"
        try FileManager.default.moveItem(atPath: seeds, toPath: fed.root + "/seeds-elsewhere")
        let (blind, partial) = try Self.audit(fed, ["2"])
        let g = try #require((partial["generations"] as? [[String: Any]])?.first)
        #expect(blind == 0 && g["verdict"] as? String == "reproduced-except-noise", "\(partial)")
        #expect((g["notes"] as? [String] ?? []).contains { $0.contains("noise-seeds") })
        // The manifest is still checked in full: a changed ε is caught.
        try Self.resign(fed, generation: 2) { manifest, _ in manifest.privacy!.epsilon *= 0.5 }
        let (caught, report) = try Self.audit(fed, ["2"])
        let message = (report["generations"] as? [[String: Any]])?.first?["message"] as? String ?? ""
        #expect(caught == 3 && message.contains("privacy.epsilon"), "\(message)")
        // A seed that does not match the commitment is a mismatch.
        try FileManager.default.moveItem(atPath: fed.root + "/seeds-elsewhere", toPath: seeds)
        try Data(String(repeating: "ab", count: 32).utf8).write(to: URL(fileURLWithPath: seeds + "/g000001.seed"))
        let (wrong, wrongReport) = try Self.audit(fed, ["1"])
        let why = (wrongReport["generations"] as? [[String: Any]])?.first?["message"] as? String ?? ""
        #expect(wrong == 3 && why.contains("commitment"), "\(why)")
    }

    @Test("a site, which pins no other site's key, audits the collector's generations from bundles handed to it")
    func siteAudit() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        try Self.mergeTwoSites(fed)
        let site = fed.site("site-1")
        for n in [0, 1] {
            try FileManager.default.copyItem(
                atPath: fed.collector + "/generations/" + HomeLayout.generationFileName(n),
                toPath: site + "/generations/" + HomeLayout.generationFileName(n))
        }
        let (status, summary) = try Self.audit(fed, ["all", "--bundles", fed.collector + "/accepted"], home: site)
        let g1 = try #require((summary["generations"] as? [[String: Any]])?.last)
        #expect(status == 0 && g1["verdict"] as? String == "reproduced", "\(summary)")
        #expect((g1["notes"] as? [String] ?? []).contains { $0.contains("not checked") })
        // A file that is not byte for byte what the collector signed is no input.
        let other = TempDir()
        for name in try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/accepted") {
            var bytes = try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/accepted/" + name))
            if name.contains("site-2") { bytes[bytes.count / 2] ^= 1 }
            try bytes.write(to: URL(fileURLWithPath: other.file(name)))
        }
        let (again, broken) = try Self.audit(fed, ["1", "--bundles", other.path], home: site)
        #expect(again == 3 && Self.verdicts(broken) == ["1:mismatch"], "\(broken)")
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

@testable import FedBatch

/// The workflows in-process, on real keys, a real ledger and real files:
/// each behaviour tested where it lives, without a subprocess. The
/// end-to-end suites cover the seams (flags, exit codes, output).
@Suite("workflows in-process")
struct WorkflowTests {
    let fed: Federation

    init() throws { fed = try Federation(sites: ["site-1", "site-2", "site-3"]) }

    func collector() throws -> Collector {
        let home = try Home.open(fed.collector)
        return try Collector(home: home, signer: try fed.signer(home.config.key))
    }

    @Test("a merge accepts, refuses with reasons, records the ledger and files every input in one place")
    func mergeOutcomes() throws {
        let g0 = try fed.generation(0)
        try fed.update(site: "site-1", seq: 1, base: g0)
        try fed.update(site: "site-2", seq: 1, base: g0, examples: 300)
        // Signed by site-2's key but claiming site-3; and site-1 again on the same generation.
        try fed.update(site: "site-3", seq: 1, base: g0, name: "impostor.fbu", signedBy: fed.siteKeys["site-2"]!)
        try fed.update(site: "site-1", seq: 2, base: g0, name: "second.fbu")
        let report = try collector().merge()
        #expect(report.outcome == .merged && report.generation == 1)
        #expect(report.accepted.map(\.site).sorted() == ["site-1", "site-2"])
        let codes = Dictionary(uniqueKeysWithValues: report.rejected.map { ($0.name, $0.code) })
        #expect(codes["impostor.fbu"] == "signature.wrong-signer", "\(codes)")
        // Of site-1's two updates on one generation, the first in digest order counts.
        let site1 = try #require(report.accepted.first { $0.site == "site-1" })
        let loser = site1.seq == 1 ? "second.fbu" : "demo-g0-site-1-1.fbu"
        #expect(codes[loser] == "protocol.one-per-site", "\(codes)")
        // state.db agrees with the files.
        let ledger = try Ledger(path: fed.collector + "/state.db")
        #expect(try ledger.latestGeneration()?.number == 1)
        #expect(try ledger.lastSequence(site: "site-1") == site1.seq)
        #expect(try ledger.lastSequence(site: "site-2") == 1)
        let inbox = try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/inbox")
        #expect(inbox.isEmpty)
        let accepted = try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/accepted")
        #expect(accepted.count == 2)
        // FedAvg by example count: site-1's delta (0.01 × its seq) weighs
        // 100, site-2's (0.01) 300.
        let home = try Home.open(fed.collector)
        let verifier = try home.verifier()
        let (_, base) = try home.openGeneration(home.layout.generation(0), verifier: verifier)
        let (_, next) = try home.openGeneration(home.layout.generation(1), verifier: verifier)
        let d1 = try Samples.weights(scale: 0.01 * Float(site1.seq)).map { $0.tensor.floats() }
        let d2 = try Samples.weights(scale: 0.01).map { $0.tensor.floats() }
        for t in base.tensors.indices {
            for i in base.tensors[t].indices {
                let want = Double(base.tensors[t][i]) + (100 * Double(d1[t][i]) + 300 * Double(d2[t][i])) / 400
                #expect(abs(Double(next.tensors[t][i]) - want) <= 1e-7 * max(1, abs(want)))
            }
        }
    }

    @Test("a replay by digest and a reused sequence number are refused against the ledger, run after run")
    func protocolAgainstTheLedger() throws {
        let g0 = try fed.generation(0)
        let first = try fed.update(site: "site-1", seq: 1, base: g0)
        let copy = try Data(contentsOf: URL(fileURLWithPath: first))
        _ = try collector().merge()
        let g1 = try fed.generation(1)
        try copy.write(to: URL(fileURLWithPath: fed.collector + "/inbox/again.fbu"))
        try fed.update(site: "site-1", seq: 1, base: g1, name: "reused.fbu")
        try fed.update(site: "site-2", seq: 1, base: g1)
        let report = try collector().merge()
        let codes = Dictionary(uniqueKeysWithValues: report.rejected.map { ($0.name, $0.code) })
        #expect(codes["again.fbu"] == "protocol.replay", "\(codes)")
        #expect(codes["reused.fbu"] == "protocol.seq-reused", "\(codes)")
        #expect(report.accepted.map(\.site) == ["site-2"])
    }

    @Test("state.db answers a batch of digests and sites exactly as it answers each one, across query chunks")
    func batchedLookups() throws {
        let dir = TempDir()
        let ledger = try Ledger(path: dir.file("state.db"))
        // Generation 1 takes 900 bundles of 300 sites (three each, seq 1 to 3).
        let included = (0..<900).map { i in
            Manifest.IncludedBundle(
                digest: Digest.of(Data("b\(i)".utf8)).hex, site: "s\(i % 300)",
                signer: String(repeating: "A", count: 40),
                seq: Int64(1 + i / 300), numExamples: 1, weight: 1, base: 0, staleness: 0, stalenessWeight: 1)
        }
        var m = Manifest(
            kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
            generation: 1, parent: .init(number: 0, digest: String(repeating: "ab", count: 32)), included: included,
            rejected: [])
        m.members = []
        try ledger.recordGeneration(m, digest: String(repeating: "cd", count: 32), file: "g1")
        // Asked about every other one of them, and as many never merged.
        let digests = stride(from: 0, to: 1800, by: 2).map { Digest.of(Data("b\($0)".utf8)).hex }
        let sites = (0..<700).map { "s\($0)" }
        let merged = try ledger.mergedGenerations(of: digests)
        let sequences = try ledger.lastSequences(of: sites)
        #expect(merged.count == 450 && sequences.count == 300)
        for d in digests { #expect(merged[d] == (try ledger.mergedInto(d)?.generation)) }
        for s in sites { #expect(sequences[s] == (try ledger.lastSequence(site: s))) }
        #expect(sequences["s7"] == 3)
        #expect(try ledger.mergedGenerations(of: []).isEmpty && (try ledger.lastSequences(of: [])).isEmpty)
    }

    @Test(
        "a key rotation: prepared, carried by the next generation under the old key, then the home signs with the new")
    func rotationSteps() throws {
        let newKey = try fed.keyring.generate("collector-next")
        let rotation = try collector().prepareKeyRotation(to: try fed.signer(newKey))
        #expect(rotation.statement.fromGeneration == 2 && rotation.statement.newKey == newKey)
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        _ = try collector().merge()
        let home = try Home.open(fed.collector)
        #expect(home.config.key == newKey)
        let trust = try TrustSet.load(keysDirectory: home.layout.keys)
        let collectorKeys = trust.keys.filter { $0.role == .collector }
        #expect(collectorKeys.map(\.fingerprint) == [fed.collectorKey, newKey])
        #expect(collectorKeys.map(\.validUntil) == [1, nil])
        // The next merge needs the new key: the old one is refused as the signer.
        #expect(throws: TrustError.self) { _ = try Collector(home: home, signer: try fed.signer(fed.collectorKey)) }
    }

    @Test("a site's chain walk adopts a rotation on the way and refuses a gap")
    func chainWalk() throws {
        let newKey = try fed.keyring.generate("collector-next")
        _ = try collector().prepareKeyRotation(to: try fed.signer(newKey))
        try fed.update(site: "site-1", seq: 1, base: try fed.generation(0))
        _ = try collector().merge()  // g1 carries the rotation
        let home = try Home.open(fed.collector)
        _ = try Collector(home: home, signer: try fed.signer(newKey)).revert(to: 0)  // g2, by the new key
        let site = try Home.open(fed.site("site-1"))
        for n in [0, 2] {
            let name = HomeLayout.generationFileName(n)
            try FileManager.default.copyItem(
                atPath: fed.collector + "/generations/" + name, toPath: site.layout.generations + "/" + name)
        }
        // Without g1 the rotation cannot be known: a gap.
        #expect(throws: ChainError.self) {
            _ = try site.openGeneration(site.layout.generation(2), verifier: try site.verifier())
        }
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000001.fbg", toPath: site.layout.generations + "/g000001.fbg")
        let verifier = try site.verifier()
        let (v, _) = try site.openGeneration(site.layout.generation(2), verifier: verifier)
        #expect(v.signer.fingerprint == newKey)
        #expect(verifier.adopted.count == 1)
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// `fedbatch prune` on a real collector and site: old generations become
/// signed manifests that still verify, the chain checks out back to
/// generation 0, and state.db can be rebuilt from what is left.
@Suite("fedbatch prune")
struct PruneTests {
    @Test(
        "prune keeps the newest generations whole and the chain verifiable; bundles and refusals only pruned generations needed go"
    )
    func prune() throws {
        let fed = try Federation(sites: ["site-1", "site-2"])
        // Four merges: generations 1 to 4, a junk file refused in the first.
        for round in 1...4 {
            let base = try fed.generation(round - 1)
            for s in ["site-1", "site-2"] { try fed.update(site: s, seq: Int64(round), base: base) }
            if round == 1 { try Data("junk".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/junk.fbu")) }
            try fed.run(["merge", "--home", fed.collector, "-q"])
        }
        let gens = fed.collector + "/generations/"
        func names(_ dir: String) throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: dir).filter { !$0.hasPrefix(".") }.sorted()
        }
        let acceptedBefore = try names(fed.collector + "/accepted")
        let quarantinedBefore = try names(fed.collector + "/quarantine")
        #expect(acceptedBefore.count == 8 && quarantinedBefore.count == 2)

        // A dry run changes nothing.
        let dry = try fed.run(["prune", "--home", fed.collector, "--keep", "2", "--dry-run", "--json"]).summary()
        #expect(
            dry["generations"] as? [Int] == [0, 1, 2] && dry["dry_run"] as? Bool == true && dry["accepted"] as? Int == 4
        )
        #expect(try names(gens) == (0...4).map { HomeLayout.generationFileName($0) })

        let real = try fed.run(["prune", "--home", fed.collector, "--keep", "2", "--json"]).summary()
        #expect(
            real["generations"] as? [Int] == [0, 1, 2] && real["accepted"] as? Int == 4
                && real["quarantined"] as? Int == 1)
        #expect((real["bytes_freed"] as? Int ?? 0) > 0)
        #expect(try names(gens) == ["g000000.fbm", "g000001.fbm", "g000002.fbm", "g000003.fbg", "g000004.fbg"])
        let acceptedAfter = try names(fed.collector + "/accepted"),
            quarantinedAfter = try names(fed.collector + "/quarantine")
        #expect(acceptedAfter.count == 4 && quarantinedAfter.isEmpty)

        // A pruned file is the manifest, a newline and its included.jsonl,
        // then the original slot; the statement names the manifest's
        // SHA-256, the manifest the list's.
        let pruned = try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: gens + "g000001.fbm")))
        let statement = try Statement.parse(pruned.statement)
        let newline = try #require(pruned.payload.firstIndex(of: 0x0A))
        let manifestBytes = pruned.payload[..<newline], list = Data(pruned.payload[(newline + 1)...])
        #expect(statement.manifestDigest == Digest.of(manifestBytes) && pruned.payload.first == UInt8(ascii: "{"))
        #expect(String(decoding: manifestBytes, as: UTF8.self).contains("\"generation\":1"))
        let kept = try PrunedManifest.decode(pruned.payload)
        #expect(kept.members.first { $0.name == ContainerPath.included }?.sha256 == Digest.of(list).hex)
        #expect(kept.included?.count == kept.includedCount && (kept.includedCount ?? 0) > 0)

        // log verifies every link, naming the pruned ones.
        let log = try fed.run(["log", "--home", fed.collector, "--json"]).summary()
        let links = try #require(log["generations"] as? [[String: Any]])
        #expect(
            log["verified"] as? Bool == true && links.map { $0["pruned"] as? Bool } == [true, true, true, false, false])
        // A pruned generation still names its bundles.
        #expect(links.map { $0["accepted"] as? Int } == [0, 2, 2, 2, 2], "\(links)")

        // Merging goes on; a pruned generation cannot be exported or restored.
        let g4 = try fed.generation(4)
        for s in ["site-1", "site-2"] { try fed.update(site: s, seq: 5, base: g4) }
        try fed.run(["merge", "--home", fed.collector, "-q"])
        let export = try fed.fedbatch(["export", "--home", fed.collector, "1", "--out", fed.root + "/w.safetensors"])
        #expect(export.status == 1 && export.err.contains("was pruned"), "\(export.err)")
        #expect(try fed.fedbatch(["revert", "--home", fed.collector, "2"]).err.contains("was pruned"))

        // state.db rebuilds from the pruned and whole generations alike.
        try FileManager.default.moveItem(atPath: fed.collector + "/state.db", toPath: fed.root + "/state.db.old")
        #expect(try fed.fedbatch(["merge", "--home", fed.collector, "-q"]).status == 5)
        let status = try fed.run(["status", "--home", fed.collector, "--json"]).summary()
        #expect((status["generation"] as? [String: Any])?["number"] as? Int == 5)

        // With generations 3 to 5 whole, --keep 3 leaves nothing to do.
        #expect(try fed.fedbatch(["prune", "--home", fed.collector, "--keep", "3"]).status == 5)

        // A pruned manifest altered by one byte breaks the chain there.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: gens + "g000001.fbm"))
        bytes[10] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: gens + "g000001.fbm"))
        let broken = try fed.fedbatch(["log", "--home", fed.collector, "--json"])
        #expect(broken.status == 3 && (broken.out + broken.err).contains("generation 1"), "\(broken.out)\(broken.err)")
    }

    @Test("a site prunes its copies; --older-than keeps young generations; then there is nothing to do")
    func sitePrune() throws {
        let fed = try Federation(sites: ["site-1"])
        for round in 1...3 {
            try fed.update(site: "site-1", seq: Int64(round), base: try fed.generation(round - 1))
            try fed.run(["merge", "--home", fed.collector, "-q"])
        }
        for n in 0...3 {
            try FileManager.default.copyItem(
                atPath: fed.collector + "/generations/" + HomeLayout.generationFileName(n),
                toPath: fed.site("site-1") + "/generations/" + HomeLayout.generationFileName(n))
        }
        // A merge dates its generation from its inputs (so that it is
        // reproducible): these bundles say January 2026, generation 0 says
        // today. So --older-than 30 keeps only generation 0 (and 3, the newest).
        let young = try fed.run(["prune", "--home", fed.site("site-1"), "--keep", "1", "--older-than", "30", "--json"])
            .summary()
        #expect(young["generations"] as? [Int] == [1, 2], "\(young)")
        #expect((young["skipped"] as? [[String: Any]])?.map { $0["generation"] as? Int } == [0])
        let rest = try fed.run(["prune", "--home", fed.site("site-1"), "--keep", "1", "--json"]).summary()
        #expect(rest["generations"] as? [Int] == [0] && rest["accepted"] as? Int == 0)
        #expect(try fed.fedbatch(["prune", "--home", fed.site("site-1"), "--keep", "1"]).status == 5)
        let log = try fed.run(["log", "--home", fed.site("site-1"), "--json"]).summary()
        #expect(log["verified"] as? Bool == true && (log["generations"] as? [Any])?.count == 4)
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Every command's --json output, checked field by field against
/// man/fedbatch-json.7 by Tests/Fixtures/json_schema.py.
@Suite("fedbatch --json output matches fedbatch-json(7)")
struct JSONSchemaTests {
    /// One command's output, with the summary it must print (nil: it must
    /// fail with an error message on stderr).
    struct Run: Encodable {
        let label: String
        let summary: String?
        let stdout: String
        let stderr: String
    }

    static let manPage = TestPaths.packageRoot + "/man/fedbatch-json.7"

    func validate(_ runs: [Run], in dir: TempDir) throws -> ProcessResult {
        let path = try dir.write("runs.json", try JSONEncoder().encode(runs))
        return try Subprocess.python("json_schema.py", [Self.manPage, path])
    }

    @Test("every command's --json output has exactly the documented fields, with their types")
    func everyCommand() throws {
        let fed = try Federation(arch: "mlp:784-16-10")
        let root = fed.root
        var runs: [Run] = []
        /// Runs one command with --json, checks its exit status, records it.
        @discardableResult
        func record(_ label: String, _ summary: String?, status: Int32, _ args: [String]) throws -> ProcessResult {
            let r = try fed.fedbatch(args + ["--json"])
            #expect(r.status == status, "\(label): \(r.err)")
            runs.append(Run(label: label, summary: summary, stdout: r.out, stderr: r.err))
            return r
        }

        // Homes and keys.
        let made = try record(
            "init collector", "init collector", status: 0,
            [
                "init", "collector", "--home", root + "/c2", "--model-id", "other",
                "--arch", "mlp:4-3-2", "--key", fed.collectorKey,
            ]
        ).summary()
        // Before any merge (no state.db yet) status still names generation 0 by its digest.
        let fresh = try record(
            "status before a merge", "status collector", status: 0, ["status", "--home", root + "/c2"]
        ).summary()
        #expect((fresh["generation"] as? [String: Any])?["digest"] as? String == made["digest"] as? String)
        try record(
            "init site", "init site", status: 0,
            [
                "init", "site", "--home", root + "/s2", "--site-id", "site-9", "--key",
                fed.siteKeys["site-1"]!, "--collector-key", fed.collector + "/keys/collector.asc",
                "--model-id", "demo",
            ])
        try record(
            "keys add", "keys add", status: 0,
            ["keys", "add", "--home", fed.collector, "--site", "site-1", root + "/site-1.asc"])
        try record("keys list", "keys list", status: 0, ["keys", "list", "--home", fed.collector])
        // One collector, no signer set: the set of fedbatch.toml, empty.
        try record("keys signers", "keys signers", status: 0, ["keys", "signers", "--home", fed.collector])

        // A site trains (with a foreign file to warn about); another packs
        // weights exported from generation 0.
        let g0 = fed.collector + "/generations/g000000.fbg"
        for s in ["site-1", "site-2"] {
            try FileManager.default.copyItem(atPath: g0, toPath: fed.site(s) + "/generations/g000000.fbg")
        }
        try Data("x".utf8).write(to: URL(fileURLWithPath: fed.site("site-1") + "/generations/notes.txt"))
        let train = try record(
            "train", "train", status: 0,
            [
                "train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "200",
                "--epochs", "2", "--eval-data", fashionMNIST,
            ])
        #expect(try train.jsonErrorLines().map { $0["code"] as? String } == ["home.foreign-file"])
        // Nothing to do: a summary, as merge gives, and exit 5.
        let idle = try record(
            "train already sent", "train", status: 5, ["train", "--home", fed.site("site-1"), "--data", fashionMNIST])
        #expect(try idle.summary()["outcome"] as? String == "already-sent")
        // --version and --help under --json.
        try record("version", "version", status: 0, ["--version"])
        try record("help", "help", status: 0, ["keys", "add", "--help"])
        try record(
            "export", "export", status: 0,
            [
                "export", "--home", fed.site("site-2"), fed.site("site-2") + "/generations/g000000.fbg",
                "--out", root + "/g0.safetensors",
            ])
        try record(
            "pack", "pack", status: 0,
            ["pack", "--home", fed.site("site-2"), "--weights", root + "/g0.safetensors", "--num-examples", "50"])

        // The collector: below quorum with a rejection, merged, then empty.
        for s in ["site-1", "site-2"] {
            for name in try FileManager.default.contentsOfDirectory(atPath: fed.site(s) + "/outbox") {
                try FileManager.default.copyItem(
                    atPath: fed.site(s) + "/outbox/" + name, toPath: fed.collector + "/inbox/" + name)
            }
        }
        try Data("junk".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/junk.fbu"))
        try record("merge below quorum", "merge", status: 5, ["merge", "--home", fed.collector, "--min-bundles", "3"])
        try Federation.setConfig(home: fed.collector, table: "eval", "data", "\"\(fashionMNIST)\"")
        // A private merge, so that its privacy record and the log's epsilon are checked too.
        try PrivacyTests.enablePrivacy(fed, z: 1, clip: 1, sites: 2, delta: 1e-5, maxEpsilon: 1e9)
        let merged = try record("merge", "merge", status: 0, ["merge", "--home", fed.collector])
        #expect((try merged.summary()["evaluation"] as? [String: Any])?["examples"] as? Int == 10_000)
        #expect((try merged.summary()["privacy"] as? [String: Any])?["rounds"] as? Int == 1)
        #expect(try merged.jsonLines().dropLast().allSatisfy { $0["message_type"] as? String == "status" })
        try record("merge empty", "merge", status: 5, ["merge", "--home", fed.collector])
        try Federation.setConfig(home: fed.collector, table: "privacy", "max_epsilon", "0.001")
        let overspent = try record("merge over the privacy budget", nil, status: 6, ["merge", "--home", fed.collector])
        #expect(try overspent.jsonErrorLines().last?["exit_code"] as? Int == 6)
        try Federation.setConfig(home: fed.collector, table: "privacy", "max_epsilon", "1e9")

        // status, on the collector and on a site that has generation 1.
        try Data("junk".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/late.fbu"))
        // check: a healthy collector, and a site with a failing item.
        let healthy = try record("check", "check", status: 0, ["check", "--home", fed.collector])
        #expect(healthy.status == 0, "\(healthy.out)")
        try Federation.setConfig(home: fed.site("site-2"), table: "training", "data", "\"/nonexistent\"")
        try record("check failing", "check", status: 1, ["check", "--home", fed.site("site-2")])
        let cs = try record("status collector", "status collector", status: 0, ["status", "--home", fed.collector])
            .summary()
        #expect(
            (cs["generation"] as? [String: Any])?["number"] as? Int == 1
                && (cs["inbox"] as? [String: Any])?["files"] as? Int == 1)
        #expect((cs["quarantine"] as? [[String: Any]])?.first?["code"] as? String == "signature.missing")
        #expect((cs["sites"] as? [[String: Any]])?.map { $0["last_generation"] as? Int } == [1, 1])
        try FileManager.default.removeItem(atPath: fed.collector + "/inbox/late.fbu")
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000001.fbg", toPath: fed.site("site-1") + "/generations/g000001.fbg")
        let ss = try record("status site", "status site", status: 0, ["status", "--home", fed.site("site-1")]).summary()
        #expect(
            (ss["last_bundle"] as? [String: Any])?["included_in"] as? Int == 1
                && (ss["last_bundle"] as? [String: Any])?["in_outbox"] as? Bool == true)

        // Reading generations.
        let g1 = fed.collector + "/generations/g000001.fbg"
        try record(
            "verify", "verify", status: 3,
            ["verify", "--home", fed.collector, g1, fed.collector + "/quarantine/junk.fbu"])
        try record("audit", "audit", status: 0, ["audit", "--home", fed.collector, "all"])
        // A witness: its home, a cosignature of generation 0 (generation 1
        // was merged under [privacy], so no witness can co-sign it), its
        // status, and a witness key pinned at a site and removed again.
        let witnessKey = try fed.keyring.generate("witness-9")
        try record(
            "init witness", "init site", status: 0,
            [
                "init", "witness", "--home", root + "/w9", "--witness-id", "w9", "--key", witnessKey,
                "--collector-key", fed.collector + "/keys/collector.asc", "--model-id", "demo",
            ])
        for s in ["site-1", "site-2"] {
            try fed.run(["keys", "add", "--home", root + "/w9", "--site", s, root + "/\(s).asc", "-q"])
        }
        for n in [0, 1] {
            try FileManager.default.copyItem(
                atPath: fed.collector + "/generations/" + HomeLayout.generationFileName(n),
                toPath: root + "/w9/generations/" + HomeLayout.generationFileName(n))
        }
        try record("witness", "witness", status: 0, ["witness", "--home", root + "/w9", "0"])
        try record(
            "witness refuses a private merge", nil, status: 3,
            ["witness", "--home", root + "/w9", "1", "--bundles", fed.collector + "/accepted"])
        try record("status witness", "status witness", status: 0, ["status", "--home", root + "/w9"])
        let witnessFile = try fed.keyring.exportPublic(witnessKey, to: "w9.asc")
        try record(
            "keys add --witness", "keys add", status: 0,
            ["keys", "add", "--home", fed.site("site-1"), "--witness", "w9", witnessFile])
        try record(
            "keys remove --witness", "keys remove", status: 0,
            ["keys", "remove", "--home", fed.site("site-1"), "--witness", "w9"])
        try record("log", "log", status: 0, ["log", "--home", fed.collector])
        try record("log --audit", "log", status: 0, ["log", "--home", fed.collector, "--audit"])
        try record("report", "report", status: 0, ["report", "--home", fed.collector, "--out", root + "/report.html"])
        try Data("not a generation".utf8).write(to: URL(fileURLWithPath: root + "/c2/generations/g000001.fbg"))
        try record("log of a broken chain", "log", status: 3, ["log", "--home", root + "/c2"])
        try record("eval", "eval", status: 0, ["eval", "--home", fed.collector, g1, "--data", fashionMNIST])
        try record("inspect", "inspect", status: 0, ["inspect", g1])
        try record(
            "data split", "data split", status: 0,
            [
                "data", "split", "--data", fashionMNIST, "--split", "test", "--sites", "2",
                "--iid", "--out", root + "/shards",
            ])
        try record(
            "keys remove", "keys remove", status: 0, ["keys", "remove", "--home", fed.collector, "--site", "site-2"])
        let nextKey = try fed.keyring.generate("collector-next")
        try record(
            "keys rotate", "keys rotate", status: 0, ["keys", "rotate", "--home", fed.collector, "--new-key", nextKey])
        try record("revert", "revert", status: 0, ["revert", "--home", fed.collector, "0"])
        try record("keys list after a rotation", "keys list", status: 0, ["keys", "list", "--home", fed.collector])

        // Transfers through a directory remote: a site pushes, the collector
        // pulls and publishes, the site pulls.
        let stick = root + "/stick"
        try FileManager.default.createDirectory(atPath: stick, withIntermediateDirectories: false)
        let again = try fed.update(site: "site-1", seq: 5, base: try fed.generation(0), name: "again.fbu")
        try FileManager.default.moveItem(atPath: again, toPath: fed.site("site-1") + "/outbox/again.fbu")
        try record("push", "push", status: 0, ["push", "--home", fed.site("site-1"), "--remote", stick])
        try record("pull on a collector", "pull", status: 0, ["pull", "--home", fed.collector, "--remote", stick])
        try record("publish", "publish", status: 0, ["publish", "--home", fed.collector, "--remote", stick])
        try record("pull on a site", "pull", status: 0, ["pull", "--home", fed.site("site-2"), "--remote", stick])

        // Federated statistics on a small tabular model: a site summarises
        // (and a dry run), the collector pins, then has nothing to pin.
        let table = (0..<30).map { "\($0 % 7).5,\(($0 * 3) % 11),\($0 % 2)" }.joined(separator: "\n")
        let csv = root + "/t.csv"
        try Data(("f0,f1,label\n" + table + "\n").utf8).write(to: URL(fileURLWithPath: csv))
        let tab = root + "/tab-c", tabSite = root + "/tab-s"
        try fed.fedbatch([
            "init", "collector", "--home", tab, "--model-id", "tab", "--arch", "mlp:2-3-2", "--key", fed.collectorKey,
            "--schema-from", csv, "-q",
        ]).checked()
        try TabularSchemaTests.join(
            site: "site-1", key: fed.siteKeys["site-1"]!, home: tabSite, collector: tab, keyring: fed.keyring)
        try record("stats dry run", "stats site", status: 0, ["stats", "--home", tabSite, "--data", csv, "--dry-run"])
        let sent = try record("stats at a site", "stats site", status: 0, ["stats", "--home", tabSite, "--data", csv])
        try FileManager.default.copyItem(
            atPath: try #require(try sent.summary()["file"] as? String), toPath: tab + "/inbox/s.fbs")
        try record(
            "stats --pin", "stats collector", status: 0, ["stats", "--home", tab, "--pin", "--settle", "0"])
        try record("stats with nothing to combine", "stats collector", status: 5, ["stats", "--home", tab])

        // Failures: a usage error and an error from the library.
        try record("usage error", nil, status: 2, ["merge", "--home", fed.collector, "--min-bundles", "0"])
        let failed = try record(
            "verification error", nil, status: 3,
            [
                "export", "--home", fed.collector, fed.collector + "/quarantine/junk.fbu",
                "--out", root + "/x.safetensors",
            ])
        #expect(try failed.jsonErrorLines().last?["exit_code"] as? Int == 3)
        // Last, as it removes files the runs above read.
        let pruned = try record("prune", "prune", status: 0, ["prune", "--home", fed.collector, "--keep", "1"])
            .summary()
        #expect(pruned["generations"] as? [Int] == [0, 1], "\(pruned)")
        try record("prune with nothing to do", "prune", status: 5, ["prune", "--home", fed.collector, "--keep", "1"])
        try record("log with pruned generations", "log", status: 0, ["log", "--home", fed.collector])

        let dir = TempDir()
        let check = try validate(runs, in: dir)
        #expect(check.status == 0, "\(check.out)\(check.err)")

        // The check can fail: an undocumented field, a missing one, and a
        // wrong type are each caught.
        let merge = try #require(runs.first { $0.label == "merge" })
        for (from, to, problem) in [
            ("\"outcome\":", "\"extra\":1,\"outcome\":", "'extra' is not documented"),
            ("\"quorum\":", "\"q\":", "documented field 'quorum' is missing"),
            ("\"passed\":", "\"passed\":\"2\",\"x\":", "expected an integer"),
        ] {
            let doctored = Run(
                label: "doctored", summary: "merge", stdout: merge.stdout.replacingOccurrences(of: from, with: to),
                stderr: "")
            let bad = try validate([doctored], in: dir)
            #expect(bad.status == 1 && bad.out.contains(problem), "\(bad.out)")
        }
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// `[training] command`: a site's own trainer, run by `fedbatch train`
/// through the real binary, /bin/sh and (for the PyTorch example) torch.
@Suite("command trainers")
struct CommandTrainerTests {
    /// A federation on a small Fashion-MNIST model, generation 0 at site-1.
    static func federation() throws -> Federation {
        let fed = try Federation(sites: ["site-1", "site-2"], arch: "mlp:784-8-10")
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000000.fbg", toPath: fed.site("site-1") + "/generations/g000000.fbg")
        return fed
    }

    static func outbox(_ fed: Federation) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: fed.site("site-1") + "/outbox")) ?? []).sorted()
    }

    /// Sets `[training] command` (as TOML) at site-1.
    static func setCommand(_ fed: Federation, _ command: String) throws {
        try Federation.setConfig(home: fed.site("site-1"), table: "training", "command", StrictJSON.quote(command))
    }

    /// The base (number, digest) a bundle in site-1's outbox names.
    static func base(of file: String) throws -> (Int, String) {
        let m = try Inspection.inspect(path: file).manifest
        return (m.base!.number, m.base!.digest)
    }

    /// A command that copies the start weights unchanged and reports
    /// `examples` examples: enough for the packing path, without torch.
    static let copyTrainer =
        "cp \"$FEDBATCH_START\" \"$FEDBATCH_OUT\" && echo '{\"num_examples\": 12, \"metrics\": {\"loss\": 0.5}}' "
        + "> \"$FEDBATCH_RESULT\""

    @Test("examples/pytorch/train.py as [training] command alone, over three generations, one arriving mid-run")
    func pytorchSite() throws {
        let fed = try Self.federation()
        let site = fed.site("site-1")
        let dir = fed.keyring.dir
        try fed.run([
            "data", "split", "--data", fashionMNIST, "--split", "test", "--sites", "20", "--iid", "--out",
            dir.file("shards"), "-q",
        ])
        try Federation.setConfig(
            home: site, table: "training", "data", StrictJSON.quote(dir.file("shards/site-01.safetensors")))
        let trainer = "\(TestPaths.python) \(TestPaths.packageRoot)/examples/pytorch/train.py --epochs 1"
        try Self.setCommand(fed, trainer)
        let g = { (n: Int) in "/generations/" + HomeLayout.generationFileName(n) }

        // Generation 0: trained by the command alone; the bundle goes to the collector.
        let first = try fed.run(["train", "--home", site, "--json"]).summary()
        #expect(first["trainer"] as? String == "command")
        let bundle0 = try #require((first["bundle"] as? [String: Any])?["file"] as? String)
        #expect(try Self.base(of: bundle0) == (0, try fed.generation(0).digest))
        #expect((first["bundle"] as? [String: Any])?["num_examples"] as? Int == 500)
        try FileManager.default.moveItem(atPath: bundle0, toPath: fed.collector + "/inbox/a.fbu")
        try fed.run(["merge", "--home", fed.collector, "-q"])
        try FileManager.default.copyItem(atPath: fed.collector + g(1), toPath: site + g(1))

        // Generation 2 (another site's update) arrives while site-1 trains
        // on generation 1: the command itself drops it into generations/.
        try fed.update(site: "site-2", seq: 1, base: try fed.generation(1), name: "b.fbu")
        try fed.run(["merge", "--home", fed.collector, "-q"])
        try Self.setCommand(fed, trainer + " && cp \(fed.collector + g(2)) \"$FEDBATCH_HOME/generations/\"")
        let second = try fed.run(["train", "--home", site, "--json"]).summary()
        let bundle1 = try #require((second["bundle"] as? [String: Any])?["file"] as? String)
        #expect(FileManager.default.fileExists(atPath: site + g(2)), "the command did not deliver generation 2")
        #expect(try Self.base(of: bundle1) == (1, try fed.generation(1).digest))
        try FileManager.default.moveItem(atPath: bundle1, toPath: fed.collector + "/inbox/c.fbu")
        let merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        #expect((merged["accepted"] as? [[String: Any]])?.count == 1, "\(merged)")

        // Generation 3: the next run starts from it.
        try Self.setCommand(fed, trainer)
        try FileManager.default.copyItem(atPath: fed.collector + g(3), toPath: site + g(3))
        let third = try fed.run(["train", "--home", site, "--json"]).summary()
        let bundle3 = try #require((third["bundle"] as? [String: Any])?["file"] as? String)
        #expect(try Self.base(of: bundle3) == (3, try fed.generation(3).digest))
        #expect(try fed.fedbatch(["verify", "--home", fed.collector, bundle3]).status == 0)
        // Each run's output is kept in logs/, and no run directory is left.
        let logs = try FileManager.default.contentsOfDirectory(atPath: site + "/logs")
        #expect(logs.count == 3)
        #expect(try String(contentsOfFile: site + "/logs/" + logs.sorted()[0], encoding: .utf8).contains("epoch 1"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: site).allSatisfy { !$0.hasPrefix(".fedbatch-run") })
    }

    @Test("a shell command's weights and result are packed, with its metrics; a second run exits 5")
    func shellCommand() throws {
        let fed = try Self.federation()
        try Self.setCommand(fed, Self.copyTrainer)
        let r = try fed.run(["train", "--home", fed.site("site-1"), "--json"]).summary()
        let bundle = try #require(r["bundle"] as? [String: Any])
        #expect(bundle["num_examples"] as? Int == 12)
        #expect((bundle["metrics"] as? [String: Any])?["loss"] as? Double == 0.5)
        #expect(r["log"] as? String != nil)
        #expect(Self.outbox(fed).count == 1)
        let again = try fed.fedbatch(["train", "--home", fed.site("site-1")])
        #expect(again.status == 5, "\(again.err)")
        // --command overrides the table, --force writes a second update.
        let forced = try fed.fedbatch([
            "train", "--home", fed.site("site-1"), "--force", "--command",
            Self.copyTrainer.replacingOccurrences(
                of: "12", with: "7"),
            "--json",
        ])
        #expect(forced.status == 0, "\(forced.err)")
        #expect((try forced.summary()["bundle"] as? [String: Any])?["num_examples"] as? Int == 7)
    }

    @Test("a command's evaluation goes into the bundle, signed, unless report_evaluation is false")
    func evaluation() throws {
        let fed = try Self.federation()
        let eval = "{\"num_examples\": 40, \"metrics\": {\"accuracy\": 0.625, \"f1\": 0.5}}"
        try Self.setCommand(
            fed,
            "cp \"$FEDBATCH_START\" \"$FEDBATCH_OUT\" && "
                + "echo '{\"num_examples\": 12, \"evaluation\": \(eval)}' > \"$FEDBATCH_RESULT\"")
        let r = try fed.run(["train", "--home", fed.site("site-1"), "--json"]).summary()
        let file = try #require((r["bundle"] as? [String: Any])?["file"] as? String)
        let e = try #require(try Inspection.inspect(path: file).manifest.evaluation)
        #expect(e == SiteEvaluation(numExamples: 40, metrics: ["accuracy": 0.625, "f1": 0.5]))
        #expect(((r["bundle"] as? [String: Any])?["evaluation"] as? [String: Any])?["examples"] as? Int == 40)
        // The collector carries it into the generation and status shows it.
        try FileManager.default.moveItem(atPath: file, toPath: fed.collector + "/inbox/a.fbu")
        try fed.run(["merge", "--home", fed.collector, "-q"])
        let g1 = try Inspection.inspect(path: fed.collector + "/generations/g000001.fbg").manifest
        #expect(g1.included?.first?.evaluation == e)
        let status = try fed.run(["status", "--home", fed.collector, "--json"]).summary()
        let site = try #require((status["sites"] as? [[String: Any]])?.first { $0["site"] as? String == "site-1" })
        #expect((site["evaluation"] as? [String: Any])?["generation"] as? Int == 0)
        // The evaluation lives in the signed chain: a state.db rebuilt from it
        // (the next merge rebuilds a missing one) still has it.
        try FileManager.default.removeItem(atPath: fed.collector + "/state.db")
        _ = try fed.fedbatch(["merge", "--home", fed.collector, "-q"])
        let rebuilt = try fed.run(["status", "--home", fed.collector, "--json"]).summary()
        let again = try #require((rebuilt["sites"] as? [[String: Any]])?.first { $0["site"] as? String == "site-1" })
        #expect(((again["evaluation"] as? [String: Any])?["metrics"] as? [String: Any])?["f1"] as? Double == 0.5)

        try Federation.setConfig(home: fed.site("site-1"), table: "training", "report_evaluation", "false")
        let quiet = try fed.run(["train", "--home", fed.site("site-1"), "--force", "--json"]).summary()
        let second = try #require((quiet["bundle"] as? [String: Any])?["file"] as? String)
        #expect(try Inspection.inspect(path: second).manifest.evaluation == nil)
    }

    @Test(
        "a failing command, no weights, weights that do not fit or no valid result: exit 1, its code, nothing written",
        arguments: [
            ("echo 'out of memory on the GPU' >&2; exit 3", "training.command-failed", "out of memory on the GPU"),
            ("echo '{\"num_examples\": 5}' > \"$FEDBATCH_RESULT\"", "training.command-output", "FEDBATCH_OUT"),
            (
                "printf 'not weights' > \"$FEDBATCH_OUT\"; echo '{\"num_examples\": 5}' > \"$FEDBATCH_RESULT\"",
                "training.command-output", "does not hold the model's weights"
            ),
            ("cp \"$FEDBATCH_START\" \"$FEDBATCH_OUT\"", "training.command-output", "FEDBATCH_RESULT"),
            (
                "cp \"$FEDBATCH_START\" \"$FEDBATCH_OUT\"; echo '{\"num_example\": 5}' > \"$FEDBATCH_RESULT\"",
                "training.command-output", "\"num_example\""
            ),
            (
                "cp \"$FEDBATCH_START\" \"$FEDBATCH_OUT\"; echo '{\"num_examples\": 0}' > \"$FEDBATCH_RESULT\"",
                "training.command-output", "positive integer"
            ),
            (
                "cp \"$FEDBATCH_START\" \"$FEDBATCH_OUT\"; "
                    + "echo '{\"num_examples\": 5, \"evaluation\": {\"num_examples\": 9, \"metrics\": {\"accuracy\": 1.5}}}' "
                    + "> \"$FEDBATCH_RESULT\"",
                "training.command-output", "accuracy must lie in [0, 1]"
            ),
            ("kill -9 $$", "training.command-failed", "killed by signal 9"),
        ])
    func failures(command: String, code: String, text: String) throws {
        let fed = try Self.federation()
        try Self.setCommand(fed, command)
        let r = try fed.fedbatch(["train", "--home", fed.site("site-1"), "--json"])
        #expect(r.status == 1, "\(r.out)\(r.err)")
        let error = try #require(try r.jsonErrorLines().last)
        #expect(error["code"] as? String == code, "\(error)")
        #expect((error["message"] as? String)?.contains(text) == true, "\(error)")
        #expect(Self.outbox(fed).isEmpty)
        // A good run afterwards takes the first sequence number.
        try Self.setCommand(fed, Self.copyTrainer)
        try fed.run(["train", "--home", fed.site("site-1"), "-q"])
        #expect(Self.outbox(fed) == ["demo-g000000-site-1-1.fbu"])
    }

    @Test("training.timeout kills the command's whole process group: no process of it survives, nothing is written")
    func timeout() throws {
        let fed = try Self.federation()
        let pids = fed.root + "/pids"
        // A background child and a grandchild that ignores SIGTERM: the
        // group must still be gone, by SIGKILL after the grace period.
        try Self.setCommand(
            fed,
            "sleep 300 & echo $! >> \(pids); sh -c 'trap \"\" TERM; echo $$ >> \(pids); sleep 300' & "
                + "echo $$ >> \(pids); wait")
        try Federation.setConfig(home: fed.site("site-1"), table: "training", "timeout", "1")
        let started = Date()
        let r = try fed.fedbatch(["train", "--home", fed.site("site-1"), "--json"])
        #expect(r.status == 1, "\(r.err)")
        let error = try #require(try r.jsonErrorLines().last)
        #expect(error["code"] as? String == "training.command-timeout", "\(error)")
        #expect(Date().timeIntervalSince(started) < 60)
        let recorded = try String(contentsOfFile: pids, encoding: .utf8).split(separator: "\n").compactMap {
            Int32($0)
        }
        #expect(recorded.count == 3)
        for pid in recorded { #expect(!processExists(pid), "process \(pid) of the command survived") }
        #expect(Self.outbox(fed).isEmpty)
    }

    @Test("[training] command and timeout are read and written with the rest of the table, and refused when wrong")
    func config() throws {
        let fed = try Self.federation()
        try Federation.setConfig(home: fed.site("site-1"), table: "training", "timeout", "-5")
        let r = try fed.fedbatch(["train", "--home", fed.site("site-1")])
        #expect(r.status != 0 && r.err.contains("training.timeout must be a number of seconds above 0"), "\(r.err)")
        try Federation.setConfig(home: fed.site("site-1"), table: "training", "timeout", "30")
        try Federation.setConfig(home: fed.site("site-1"), table: "training", "command", "\"  \"")
        let empty = try fed.fedbatch(["train", "--home", fed.site("site-1")])
        #expect(empty.status != 0 && empty.err.contains("training.command must be a non-empty shell command"))
    }
}

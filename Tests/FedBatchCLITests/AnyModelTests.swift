import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// A PyTorch CNN with BatchNorm, federated through the CLI: its weights
/// alone define the model, three sites pack their state_dicts, the merge
/// averages every floating tensor (checked against numpy) and applies the
/// documented rule to the integer counters, and the export loads back into
/// PyTorch with strict=True.
@Suite("models defined by their tensors")
struct AnyModelTests {
    @Test(
        "a CNN's state_dict: init from weights, pack at 3 sites, merge, export; numpy FedAvg agrees; train and eval explain"
    )
    func cnn() throws {
        let keyring = try TestKeyring()
        let collectorKey = try keyring.generate("collector")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        func fb(_ args: [String]) throws -> ProcessResult { try Subprocess.fedbatch(args, environment: env) }
        let dir = keyring.dir
        let made = try Subprocess.python("torch_state_dict.py", ["make", dir.path])
        #expect(made.status == 0, "\(made.err)")

        let col = dir.file("col")
        let created = try fb([
            "init", "collector", "--home", col, "--model-id", "cnn", "--key", collectorKey,
            "--weights", dir.file("init.safetensors"), "--json",
        ])
        #expect(created.status == 0, "\(created.err)")
        let arch = try created.summary()["arch"] as? String ?? ""
        #expect(
            arch.hasPrefix("tensors:") && arch.contains("1.num_batches_tracked=I64[]")
                && arch.contains("0.weight=F32[4,1,3,3]"), "\(arch)")

        let examples = [600, 200, 1000]
        for site in 0..<3 {
            let home = dir.file("s\(site)")
            let key = try keyring.generate("site-\(site)")
            try fb([
                "keys", "add", "--home", col, "--site", "site-\(site)",
                try keyring.exportPublic(key, to: "s\(site).asc"), "-q",
            ]).checked()
            try fb([
                "init", "site", "--home", home, "--site-id", "site-\(site)", "--key", key, "--collector-key",
                col + "/keys/collector.asc",
                "--model-id", "cnn", "-q",
            ]).checked()
            try FileManager.default.copyItem(
                atPath: col + "/generations/g000000.fbg", toPath: home + "/generations/g000000.fbg")
            if site == 0 {
                // Built-in training and evaluation explain what to do instead.
                let train = try fb(["train", "--home", home, "--data", "/usr/share/datasets/fashion-mnist"])
                #expect(
                    train.status == 2 && train.err.contains("fedbatch pack") && train.err.contains("examples/pytorch"),
                    "\(train.err)")
                let eval = try fb(["eval", "--home", home, "latest", "--data", "/usr/share/datasets/fashion-mnist"])
                #expect(eval.status == 2 && eval.err.contains("cannot evaluate"), "\(eval.err)")
                // A tensor in another dtype than the one pinned is refused.
                let f16 = try fb([
                    "pack", "--home", home, "--weights", dir.file("site0-f16.safetensors"), "--num-examples", "5",
                ])
                #expect(
                    f16.status == 3 && f16.err.contains("tensor \"0.weight\" is F16; the model pins it as F32"),
                    "\(f16.err)")
            }
            try fb([
                "pack", "--home", home, "--weights", dir.file("site\(site).safetensors"), "--num-examples",
                "\(examples[site])",
                "--codec", "fp32", "-q",
            ]).checked()
            for name in try FileManager.default.contentsOfDirectory(atPath: home + "/outbox") {
                try FileManager.default.moveItem(atPath: home + "/outbox/" + name, toPath: col + "/inbox/" + name)
            }
        }
        let merged = try fb(["merge", "--home", col, "--settle", "0", "--min-bundles", "3", "--json"])
        let accepted = (try merged.summary()["accepted"] as? [Any])?.count
        #expect(merged.status == 0 && accepted == 3, "\(merged.err)")
        try fb(["export", "--home", col, "latest", "--out", dir.file("g1.safetensors")]).checked()
        let check = try Subprocess.python(
            "torch_state_dict.py", ["check", dir.path, dir.file("g1.safetensors")] + examples.map(String.init))
        #expect(check.status == 0, "\(check.out)\(check.err)")
        #expect(try fb(["log", "--home", col]).status == 0)
    }

    @Test("examples/pytorch/federate-cnn.sh runs a small federation of the CNN through the real binary")
    func federationScript() throws {
        var env = ProcessInfo.processInfo.environment
        env["FEDBATCH"] = TestPaths.fedbatch
        env["PYTHON"] = TestPaths.python
        for (k, v) in ["SITES": "2", "ROUNDS": "2", "LIMIT": "200", "TEST_LIMIT": "300"] { env[k] = v }
        env.removeValue(forKey: "GNUPGHOME")
        let r = try Subprocess.run(
            "/bin/bash", [TestPaths.packageRoot + "/examples/pytorch/federate-cnn.sh"], environment: env)
        #expect(r.status == 0, "\(r.out)\(r.err)")
        let rows = r.out.split(separator: "\n").filter { $0.first?.isNumber == true }
        #expect(rows.count == 2 && rows.last!.contains("g000002"), "\(r.out)")
        #expect(r.out.contains("chain verified: 3 generations"), "\(r.out)")
    }
}

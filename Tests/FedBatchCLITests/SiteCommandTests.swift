import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

let fashionMNIST = "/usr/share/datasets/fashion-mnist"

/// train, pack, eval and data split through the real binary.
@Suite("fedbatch train, pack, eval, data split")
struct SiteCommandTests {
    /// A federation on the Fashion-MNIST model with generation 0 at site-1.
    func federation(arch: String = "mlp:784-16-10") throws -> Federation {
        let fed = try Federation(arch: arch)
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000000.fbg", toPath: fed.site("site-1") + "/generations/g000000.fbg")
        return fed
    }

    func outbox(_ fed: Federation) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: fed.site("site-1") + "/outbox")) ?? []).sorted()
    }

    @Test("train on real Fashion-MNIST writes a signed bundle the collector verifies")
    func trainAndVerify() throws {
        let fed = try federation()
        let r = try fed.fedbatch([
            "train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "1500", "--epochs", "2", "--json",
        ])
        #expect(r.status == 0, "\(r.err)")
        let report = try r.summary()
        let bundle = try #require(report["bundle"] as? [String: Any])
        let path = try #require(bundle["file"] as? String)
        // One status line per epoch came before the summary.
        #expect(try r.jsonLines().dropLast().map { $0["message_type"] as? String } == ["status", "status"])
        #expect(path.hasSuffix("/outbox/demo-g000000-site-1-1.fbu"))
        #expect((report["epochs"] as? [[String: Any]])?.count == 2)

        let v = try fed.fedbatch(["verify", "--home", fed.collector, path])
        #expect(v.status == 0, "\(v.err)")
        #expect(v.out.contains("site-1 seq 1, signed by \(fed.siteKeys["site-1"]!) (site site-1)"))
        let c = try ContainerReader.read(
            payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: path))).payload)
        let m = c.manifest
        #expect(m.kind == .update && m.numExamples == 1500 && m.site == .init(id: "site-1", seq: 1))
        #expect(
            m.base?.digest
                == (try ContainerFile.split(
                    try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000000.fbg")))).digest.hex)
        #expect((m.metrics["accuracy"] ?? 0) > 0.5)
        // Stored with the default codec, int8; decoded, the tensors are the
        // delta from generation 0: small, and not the weights.
        #expect(m.codec == "int8")
        let arch = try ModelArchitecture(spec: "mlp:784-16-10")
        let delta = Int8Codec().decodeAll(try c.tensors(), arch: arch).tensors[0]
        #expect(delta.contains { $0 != 0 } && delta.allSatisfy { abs($0) < 0.5 })

        // A second run on the same generation writes nothing and exits 5 ...
        let second = try fed.fedbatch(["train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "200"])
        #expect(second.status == 5 && second.err.contains("already sent an update for generation 0"), "\(second.err)")
        // ... and under -q prints nothing at all, for cron ...
        let quietSecond = try fed.fedbatch([
            "train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "200", "-q",
        ])
        #expect(quietSecond.status == 5 && quietSecond.stdout.isEmpty && quietSecond.stderr.isEmpty)
        // ... unless forced; it takes the next sequence number, and -q prints nothing on success either.
        let again = try fed.fedbatch([
            "train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "200", "--force", "-q",
        ])
        #expect(again.status == 0 && again.stdout.isEmpty && again.stderr.isEmpty, "\(again.err)")
        #expect(FileManager.default.fileExists(atPath: fed.site("site-1") + "/outbox/demo-g000000-site-1-2.fbu"))
    }

    @Test("the same seed trains the same bits")
    func reproducible() throws {
        let fed = try federation(arch: "mlp:784-8-10")
        for _ in 0..<2 {
            #expect(
                try fed.fedbatch([
                    "train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "300", "--seed", "5",
                    "--force", "-q",
                ]).status == 0)
        }
        let files = outbox(fed).map { fed.site("site-1") + "/outbox/" + $0 }
        let tensors = try files.map {
            try ContainerReader.read(
                payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: $0))).payload
            ).members["tensors.safetensors"]
        }
        #expect(files.count == 2 && tensors[0] == tensors[1])
    }

    @Test("bad data, a generation that does not verify, a rollback or a locked key leave outbox/ empty")
    func refusals() throws {
        let fed = try federation()
        let dir = fed.keyring.dir
        let site = fed.site("site-1")
        let narrow = try dir.write("narrow.csv", Data("a,b,label\n1,2,3\n".utf8))
        let wide = try dir.write(
            "labels.csv",
            Data(
                ("label," + (0..<784).map { "p\($0)" }.joined(separator: ",") + "\n12,"
                    + [String](repeating: "0", count: 784).joined(separator: ",") + "\n").utf8))
        // Fashion-MNIST with its label file cut in half.
        try FileManager.default.createDirectory(atPath: dir.file("cut"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: fashionMNIST + "/train-images-idx3-ubyte.gz", toPath: dir.file("cut/train-images-idx3-ubyte.gz"))
        let labels = try Data(contentsOf: URL(fileURLWithPath: fashionMNIST + "/train-labels-idx1-ubyte.gz"))
        try dir.write("cut/train-labels-idx1-ubyte.gz", labels.prefix(labels.count / 2))
        let cases: [([String], Int32, String)] = [
            (["--data", dir.file("cut")], 1, "train-labels-idx1-ubyte.gz: corrupt or truncated gzip data"),
            (["--data", narrow], 1, "examples have 2 features; the model mlp:784-16-10 expects 784"),
            (["--data", wide], 1, "example 0 has label 12, outside 0..9"),
            (["--data", dir.file("missing")], 1, "missing: no such file or directory"),
            (["--data", fashionMNIST, "--lr=-1"], 2, "--lr must be positive"),
        ]
        for (args, status, message) in cases {
            let r = try fed.fedbatch(["train", "--home", site] + args)
            #expect(r.status == status, "\(args): \(r.err)")
            #expect(r.err.contains(message), "\(args): \(r.err)")
        }
        #expect(outbox(fed).isEmpty)

        // A tampered generation does not verify.
        var g = try Data(contentsOf: URL(fileURLWithPath: site + "/generations/g000000.fbg"))
        g[200] ^= 1
        let tampered = try dir.write("tampered.fbg", g)
        let t = try fed.fedbatch([
            "train", "--home", site, "--data", fashionMNIST, "--limit", "100", "--base", tampered,
        ])
        #expect(t.status == 3 && t.err.contains("the payload was altered after signing"), "\(t.err)")

        // Once generation 1 is seen, generation 0 is a rollback.
        let g1 = try fed.signer(fed.collectorKey).seal(
            manifest: Manifest(
                kind: .generation, model: .init(id: "demo", arch: "mlp:784-16-10"), created: "2026-01-02T00:00:00Z",
                generation: 1,
                parent: .init(
                    number: 0,
                    digest: try ContainerFile.split(
                        try Data(contentsOf: URL(fileURLWithPath: site + "/generations/g000000.fbg"))
                    ).digest.hex)),
            members: [
                (
                    ContainerPath.tensors,
                    SafetensorsWriter.encode(try ModelArchitecture(spec: "mlp:784-16-10").initialWeights(seed: 9))
                )
            ]
        ).file
        try g1.write(to: URL(fileURLWithPath: site + "/generations/g000001.fbg"))
        #expect(
            try fed.fedbatch(["train", "--home", site, "--data", fashionMNIST, "--limit", "100", "-q"]).status == 0)
        try FileManager.default.removeItem(atPath: site + "/generations/g000001.fbg")
        let rb = try fed.fedbatch(["train", "--home", site, "--data", fashionMNIST, "--limit", "100"])
        #expect(
            rb.status == 3
                && rb.err.contains(
                    "generation 0 is older than generation 1, which this site has already seen: refusing a rollback"),
            "\(rb.err)")
        #expect(outbox(fed) == ["demo-g000001-site-1-1.fbu"])
    }

    @Test("a diverging run, empty data and foreign files in generations/ give plain errors and use no sequence number")
    func siteRefusals() throws {
        let fed = try federation()
        let site = fed.site("site-1")
        let diverged = try fed.fedbatch([
            "train", "--home", site, "--data", fashionMNIST, "--limit", "256", "--lr", "1e20",
        ])
        #expect(diverged.status == 1, "\(diverged.err)")
        #expect(
            diverged.err.contains("training diverged at epoch 1, step") && !diverged.err.contains("tensor"),
            "\(diverged.err)")
        let empty = try fed.keyring.dir.write(
            "empty.csv", Data(("label," + (0..<784).map { "p\($0)" }.joined(separator: ",") + "\n").utf8))
        let e = try fed.fedbatch(["train", "--home", site, "--data", empty])
        #expect(e.status == 1 && e.err.contains("empty.csv: no data rows"), "\(e.err)")
        let shard = fed.keyring.dir.file("empty.safetensors")
        try SafetensorsWriter.write(
            [
                ("x", try Tensor(dtype: .u8, shape: [0, 784], data: Data())),
                ("y", try Tensor(dtype: .i64, shape: [0], data: Data())),
            ], to: shard)
        let es = try fed.fedbatch(["train", "--home", site, "--data", shard])
        #expect(es.status == 1 && es.err.contains("empty.safetensors: holds no examples"), "\(es.err)")
        #expect(outbox(fed).isEmpty)
        // While another run holds the site's lock, train exits 4.
        do {
            let lock = try #require(try FileLock.tryLock(site + "/.fedbatch.lock"))
            let held = try fed.fedbatch(["train", "--home", site, "--data", fashionMNIST, "--limit", "100"])
            #expect(held.status == 4 && held.err.contains("holds"), "\(held.err)")
            withExtendedLifetime(lock) {}
        }
        // A foreign file is ignored with a warning; the leftover of a killed
        // run is removed; the first bundle still gets sequence 1.
        try Data("junk".utf8).write(to: URL(fileURLWithPath: site + "/generations/g+00009.fbg"))
        try Data("partial".utf8).write(to: URL(fileURLWithPath: site + "/outbox/.demo-g000000-site-1-1.fbu.tmp-AbC123"))
        let ok = try fed.fedbatch(["train", "--home", site, "--data", fashionMNIST, "--limit", "100"])
        #expect(ok.status == 0, "\(ok.err)")
        #expect(ok.err.contains("warning: ignoring \(site)/generations/g+00009.fbg"))
        #expect(outbox(fed) == ["demo-g000000-site-1-1.fbu"])
        let log = try fed.fedbatch(["log", "--home", site])
        #expect(log.status == 0 && log.out.contains("chain verified: 1 generation"), "\(log.err)")
    }

    @Test(
        "a passphrase-protected site key without --passphrase-file fails clearly and writes nothing; [gnupg] in fedbatch.toml replaces the environment"
    )
    func lockedKey() throws {
        let keyring = try TestKeyring()
        let c = try keyring.generate("collector")
        let s = try keyring.generate("site-1", passphrase: "pw")
        _ = try Subprocess.run("/usr/bin/gpgconf", ["--homedir", keyring.home, "--kill", "gpg-agent"])
        let col = try Home.createCollector(
            at: keyring.dir.file("col"), modelID: "demo", arch: "softmax:784-10",
            signer: try PayloadSigner(gnupgHome: keyring.home, fingerprint: c, passphraseFile: nil), weights: nil,
            seed: 0)
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        let pass = try keyring.dir.write("pw", Data("pw\n".utf8))
        let site = keyring.dir.file("s")
        #expect(
            try Subprocess.fedbatch(
                [
                    "init", "site", "--home", site, "--site-id", "site-1", "--key", s, "--collector-key",
                    col.home.layout.collectorKey,
                    "--model-id", "demo",
                ], environment: env
            ).status == 0)
        try FileManager.default.copyItem(atPath: col.generation, toPath: site + "/generations/g000000.fbg")
        _ = try Subprocess.run("/usr/bin/gpgconf", ["--homedir", keyring.home, "--kill", "gpg-agent"])
        let r = try Subprocess.fedbatch(
            ["train", "--home", site, "--data", fashionMNIST, "--limit", "50"], environment: env)
        #expect(r.status == 1 && r.err.contains("protected by a passphrase and none was given"), "\(r.err)")
        #expect(
            ((try? FileManager.default.contentsOfDirectory(atPath: site + "/outbox")) ?? []).filter {
                !$0.hasPrefix(".")
            }.isEmpty)
        let ok = try Subprocess.fedbatch(
            ["train", "--home", site, "--data", fashionMNIST, "--limit", "50", "--passphrase-file", pass, "-q"],
            environment: env)
        #expect(ok.status == 0, "\(ok.err)")

        // The same from fedbatch.toml alone, as cron runs it: no GNUPGHOME in
        // the environment, the GnuPG home absolute, the passphrase file
        // relative to the home.
        try FileManager.default.copyItem(atPath: pass, toPath: site + "/passphrase")
        let config = site + "/fedbatch.toml"
        let text = try String(contentsOfFile: config, encoding: .utf8)
        #expect(text.contains("[gnupg]"))
        try
            (text.replacingOccurrences(of: "# home = \"/var/lib/fedbatch/gnupg\"", with: "home = \"\(keyring.home)\"")
            .replacingOccurrences(
                of: "# passphrase_file = \"/etc/fedbatch/passphrase\"", with: "passphrase_file = \"passphrase\""))
            .write(toFile: config, atomically: true, encoding: .utf8)
        var bare = ProcessInfo.processInfo.environment
        bare.removeValue(forKey: "GNUPGHOME")
        _ = try Subprocess.run("/usr/bin/gpgconf", ["--homedir", keyring.home, "--kill", "gpg-agent"])
        let fromConfig = try Subprocess.fedbatch(
            ["train", "--home", site, "--data", fashionMNIST, "--limit", "50", "--force", "-q"], environment: bare)
        #expect(fromConfig.status == 0 && fromConfig.stderr.isEmpty, "\(fromConfig.err)")
        // A typo in the table is refused, not ignored.
        try (try String(contentsOfFile: config, encoding: .utf8)).replacingOccurrences(
            of: "passphrase_file =", with: "passfile ="
        )
        .write(toFile: config, atomically: true, encoding: .utf8)
        let typo = try Subprocess.fedbatch(
            ["train", "--home", site, "--data", fashionMNIST, "--limit", "50", "--force"], environment: bare)
        #expect(
            typo.status == 1
                && typo.err.contains("gnupg.passfile is not a setting; did you mean gnupg.passphrase_file?"),
            "\(typo.err)")
    }

    @Test("pack takes weights written by Python and refuses ones that do not fit")
    func pack() throws {
        let fed = try federation(arch: "mlp:784-8-10")
        let dir = fed.keyring.dir
        let script = """
            import numpy as np, sys
            from safetensors.numpy import save_file
            rng = np.random.default_rng(1)
            w = {"0.weight": rng.standard_normal((8, 784)).astype(np.float32) * 0.01, "0.bias": np.zeros(8, np.float32),
                 "2.weight": rng.standard_normal((10, 8)).astype(np.float32) * 0.1, "2.bias": np.zeros(10, np.float32)}
            save_file(w, sys.argv[1] + "/good.safetensors")
            bad = dict(w); bad["2.weight"] = bad["2.weight"].T.copy(); save_file(bad, sys.argv[1] + "/shape.safetensors")
            bad = dict(w); del bad["0.bias"]; save_file(bad, sys.argv[1] + "/missing.safetensors")
            bad = dict(w); bad["4.weight"] = np.zeros((2, 2), np.float32); save_file(bad, sys.argv[1] + "/extra.safetensors")
            bad = dict(w); bad["0.bias"] = np.full(8, np.nan, np.float32); save_file(bad, sys.argv[1] + "/nan.safetensors")
            """
        let py = try Subprocess.run(TestPaths.python, ["-c", script, dir.path])
        try #require(py.status == 0, "\(py.err)")
        let site = fed.site("site-1")
        let cases: [(String, String)] = [
            ("shape", "tensor \"2.weight\" has shape [8, 10], expected [10, 8]"),
            ("missing", "tensor \"0.bias\" of mlp:784-8-10 is missing"),
            ("extra", "tensor \"4.weight\" is not part of mlp:784-8-10"),
            ("nan", "tensor \"0.bias\" holds NaN or infinite values"),
        ]
        for (name, message) in cases {
            let r = try fed.fedbatch([
                "pack", "--home", site, "--weights", dir.file("\(name).safetensors"), "--num-examples", "10",
            ])
            #expect(r.status == 3 && r.err.contains(message), "\(name): \(r.err)")
        }
        #expect(outbox(fed).isEmpty)
        let ok = try fed.fedbatch([
            "pack", "--home", site, "--weights", dir.file("good.safetensors"), "--num-examples", "600", "--metric",
            "loss=0.25",
            "--codec", "fp32",
        ])
        #expect(ok.status == 0, "\(ok.err)")
        let path = ok.out.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try fed.fedbatch(["verify", "--home", fed.collector, path]).status == 0)
        let c = try ContainerReader.read(
            payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: path))).payload)
        #expect(c.manifest.numExamples == 600 && c.manifest.metrics["loss"] == 0.25)
        // The delta plus generation 0 gives back the packed weights.
        let g0 = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: site + "/generations/g000000.fbg"))
            ).payload
        ).tensors()
        let packed = try SafetensorsFile.open(path: dir.file("good.safetensors"))
        let sum = zip(try c.tensors().tensor("2.weight")!.floats(), g0.tensor("2.weight")!.floats()).map { $0 + $1 }
        #expect(zip(sum, packed.tensor("2.weight")!.floats()).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    @Test("examples/pytorch/train.py trains with torch and packs through fedbatch")
    func pytorchExample() throws {
        let fed = try federation(arch: "mlp:784-8-10")
        let site = fed.site("site-1")
        let dir = fed.keyring.dir
        #expect(
            try fed.fedbatch([
                "data", "split", "--data", fashionMNIST, "--split", "test", "--sites", "20", "--iid", "--out",
                dir.file("shards"), "-q",
            ]).status == 0)
        #expect(
            try fed.fedbatch([
                "export", "--home", site, site + "/generations/g000000.fbg", "--out", dir.file("start.safetensors"),
            ]).status == 0)
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_HOME"] = site
        let r = try Subprocess.run(
            TestPaths.python,
            [
                "\(TestPaths.packageRoot)/examples/pytorch/train.py", "--start", dir.file("start.safetensors"),
                "--arch", "mlp:784-8-10", "--data", dir.file("shards/site-01.safetensors"),
                "--out", dir.file("trained.safetensors"), "--pack", "--fedbatch", TestPaths.fedbatch,
            ], environment: env)
        #expect(r.status == 0, "\(r.err)")
        #expect(outbox(fed) == ["demo-g000000-site-1-1.fbu"])
        #expect(
            try fed.fedbatch(["verify", "--home", fed.collector, site + "/outbox/demo-g000000-site-1-1.fbu"]).status
                == 0)
    }

    @Test("eval reports accuracy, loss and per-class accuracy of a verified generation, named by path, latest, 0 or g0")
    func eval() throws {
        let fed = try federation()
        let g0 = fed.site("site-1") + "/generations/g000000.fbg"
        let r = try fed.fedbatch(["eval", "--home", fed.site("site-1"), g0, "--data", fashionMNIST, "--json"])
        #expect(r.status == 0, "\(r.err)")
        let e = try r.summary()
        #expect(e["examples"] as? Int == 10000)
        let classes = try #require(e["classes"] as? [[String: Any]])
        #expect(classes.map { $0["label"] as? Int } == Array(0..<10))
        #expect(classes.map { $0["examples"] as? Int } == [Int](repeating: 1000, count: 10))
        let acc = try #require(e["accuracy"] as? Double)
        #expect(acc > 0 && acc < 0.3, "an untrained model is near chance: \(acc)")
        let human = try fed.fedbatch(["eval", "--home", fed.site("site-1"), g0, "--data", fashionMNIST])
        #expect(human.out.contains("generation 0 of demo on 10000 examples"))
        // A generation may be named as latest, 0 or g0 instead of by its path.
        for name in ["latest", "0", "g0", "g000000"] {
            let r = try fed.fedbatch(["eval", "--home", fed.site("site-1"), name, "--data", fashionMNIST])
            #expect(r.status == 0 && r.out == human.out, "\(name): \(r.err)")
        }
        let missing = try fed.fedbatch(["eval", "--home", fed.site("site-1"), "g9", "--data", fashionMNIST])
        #expect(missing.status == 1 && missing.err.contains("there is no generation 9"), "\(missing.err)")
        #expect(
            try fed.fedbatch([
                "export", "--home", fed.site("site-1"), "latest", "--out", fed.root + "/latest.safetensors",
            ]).status == 0)
        #expect(
            try fed.fedbatch(["verify", "--home", fed.site("site-1"), "0"]).out.contains("generation 0, signed by"))
    }

    @Test("data split writes deterministic shards and prints label counts")
    func dataSplit() throws {
        let dir = TempDir()
        func split(_ out: String, _ extra: [String]) throws -> ProcessResult {
            try Subprocess.fedbatch(
                ["data", "split", "--data", fashionMNIST, "--split", "test", "--sites", "4", "--out", dir.file(out)]
                    + extra)
        }
        let a = try split("a", ["--dirichlet", "0.5", "--seed", "3"])
        #expect(a.status == 0, "\(a.err)")
        #expect(a.out.contains("site-01") && a.out.contains("wrote 4 shards"))
        _ = try split("b", ["--dirichlet", "0.5", "--seed", "3"])
        for i in 1...4 {
            let name = "site-0\(i).safetensors"
            #expect(
                try Data(contentsOf: URL(fileURLWithPath: dir.file("a/\(name)")))
                    == Data(contentsOf: URL(fileURLWithPath: dir.file("b/\(name)"))))
        }
        let shards = try (1...4).map { try DataLoader.load(dir.file("a/site-0\($0).safetensors")) }
        #expect(shards.map(\.count).reduce(0, +) == 10000)
        let j = try split("c", ["--iid", "--json"])
        let rows = try #require(try j.summary()["shards"] as? [[String: Any]])
        #expect(rows.map { $0["examples"] as? Int } == [2500, 2500, 2500, 2500])
        #expect(try split("d", ["--iid", "--dirichlet", "1"]).status == 2)
    }
}

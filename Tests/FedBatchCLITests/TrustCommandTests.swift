import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// init, keys, verify and export through the real binary with real gpg keys.
@Suite("fedbatch init, keys, verify, export")
struct TrustCommandTests {
    @Test("a collector and two sites are created with real keys; generation 0 verifies at both sites")
    func createAndVerify() throws {
        let keyring = try TestKeyring()
        let collector = try keyring.generate("collector")
        let sites = ["site-1": try keyring.generate("site-1"), "site-2": try keyring.generate("site-2")]
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        func fb(_ args: [String]) throws -> ProcessResult { try Subprocess.fedbatch(args, environment: env) }
        let root = keyring.dir.path

        let made = try fb([
            "init", "collector", "--home", "\(root)/col", "--model-id", "fmnist", "--arch", "mlp:784-16-10", "--key",
            collector, "--json",
        ])
        #expect(made.status == 0, "\(made.err)")
        let info = try made.summary()
        #expect(info["file"] as? String == "\(root)/col/generations/g000000.fbg" && info["generation"] as? Int == 0)
        for d in ["inbox", "accepted", "quarantine", "generations", "keys/sites"] {
            #expect(FileManager.default.fileExists(atPath: "\(root)/col/\(d)"), "\(d)")
        }
        for (site, fpr) in sites {
            let asc = try keyring.exportPublic(fpr, to: "\(site).asc")
            #expect(try fb(["keys", "add", "--home", "\(root)/col", "--site", site, asc]).status == 0)
            let r = try fb([
                "init", "site", "--home", "\(root)/\(site)", "--site-id", site, "--key", fpr,
                "--collector-key", "\(root)/col/keys/collector.asc", "--model-id", "fmnist",
            ])
            #expect(r.status == 0, "\(r.err)")
            try FileManager.default.copyItem(
                atPath: "\(root)/col/generations/g000000.fbg", toPath: "\(root)/\(site)/generations/g000000.fbg")
            let v = try fb(["verify", "--home", "\(root)/\(site)", "\(root)/\(site)/generations/g000000.fbg"])
            #expect(v.status == 0, "\(v.err)")
            #expect(v.out.contains("generation 0, signed by \(collector) (the collector)"))
        }

        // FEDBATCH_HOME stands in for --home, and --json gives one verdict per file.
        env["FEDBATCH_HOME"] = "\(root)/site-1"
        let j = try Subprocess.fedbatch(
            ["verify", "--json", "\(root)/site-1/generations/g000000.fbg"], environment: env)
        let verdicts = try #require(try j.summary()["files"] as? [[String: Any]])
        #expect(
            verdicts.count == 1 && verdicts[0]["ok"] as? Bool == true && verdicts[0]["signer"] as? String == collector)
        #expect(
            verdicts[0]["role"] as? String == "collector" && verdicts[0]["generation"] as? Int == 0
                && verdicts[0]["kind"] as? String == "generation")

        // keys list shows the collector and both sites.
        let list = try fb(["keys", "list", "--home", "\(root)/col", "--json"])
        let rows = try #require(try list.summary()["keys"] as? [[String: Any]])
        #expect(Set(rows.compactMap { $0["fingerprint"] as? String }) == Set([collector] + sites.values))
        #expect(
            rows.first { $0["site"] as? String == "site-2" }?["user_id"] as? String == "site-2 <site-2@fedbatch.test>")
        let human = try fb(["keys", "list", "--home", "\(root)/col"])
        #expect(human.out.contains("(collector)  \(collector)  never"))
    }

    @Test("plain gpg verifies a generation with the recipe in fedbatch-bundle(5)")
    func plainGPG() throws {
        let fed = try Federation()
        let verifier = try TestKeyring()
        try verifier.gpg(["--import", fed.collector + "/keys/collector.asc"])
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = verifier.home
        let r = try Subprocess.run(
            "/bin/sh",
            ["\(TestPaths.packageRoot)/examples/standard-tools.sh", fed.collector + "/generations/g000000.fbg"],
            environment: env)
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.contains("Good signature from \"collector <collector@fedbatch.test>\""), "\(r.err)")
        // And the manual page holds exactly the commands the example runs.
        let page = try String(contentsOfFile: "\(TestPaths.packageRoot)/man/fedbatch-bundle.5", encoding: .utf8)
        #expect(page.contains("gpg \\-\\-verify statement.sig statement.json"))
        #expect(r.out.contains("matches the statement"))
        // A payload altered after signing is caught by the same recipe.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000000.fbg"))
        bytes[100] ^= 0x04
        let altered = try verifier.dir.write("altered.fbg", bytes)
        let a = try Subprocess.run(
            "/bin/sh", ["\(TestPaths.packageRoot)/examples/standard-tools.sh", altered], environment: env)
        #expect(a.status != 0 && a.err.contains("does NOT match the statement"), "\(a.out)\(a.err)")
    }

    @Test("keys add refuses secret keys, several keys, keys pinned elsewhere and a third key for a site")
    func keysAddRefusals() throws {
        let fed = try Federation()
        let k = fed.keyring
        let extra = try k.generate("site-3")
        let secret = try k.dir.write(
            "secret.asc", try k.gpg(["--armor", "--export-secret-keys", extra], stdin: nil).stdout)
        let two = try k.dir.write("two.asc", try k.gpg(["--armor", "--export", extra, fed.siteKeys["site-1"]!]).stdout)
        let site1 = try k.exportPublic(fed.siteKeys["site-1"]!, to: "s1.asc")
        let coll = fed.collector + "/keys/collector.asc"
        let site3 = try k.exportPublic(extra, to: "s3.asc")
        // Site-1 may pin a second key (a rotation's overlap), not a third.
        let second = try k.exportPublic(try k.generate("site-1-second"), to: "s1-second.asc")
        #expect(try fed.fedbatch(["keys", "add", "--home", fed.collector, "--site", "site-1", second]).status == 0)
        let cases: [([String], String)] = [
            (["--site", "site-3", secret], "holds a secret key"),
            (["--site", "site-3", two], "holds 2 keys"),
            (["--site", "site-3", site1], "is already pinned for site site-1"),
            (["--site", "site-3", coll], "is already pinned for the collector"),
            (["--site", "site-1", site3], "site site-1 already has two keys pinned"),
            (["--site", "../evil", site3], "site id \"../evil\""),
            (["--site", "site-3", k.dir.file("missing.asc")], "missing.asc: cannot open"),
        ]
        for (args, message) in cases {
            let r = try fed.fedbatch(["keys", "add", "--home", fed.collector] + args)
            #expect(r.status == 1, "\(args)")
            #expect(r.err.contains(message), "\(args): \(r.err)")
        }
        #expect(!FileManager.default.fileExists(atPath: fed.collector + "/keys/sites/site-3.asc"))
        // A good key pins; removing it unpins.
        #expect(try fed.fedbatch(["keys", "add", "--home", fed.collector, "--site", "site-3", site3]).status == 0)
        let removed = try fed.fedbatch(["keys", "remove", "--home", fed.collector, "--site", "site-3"])
        #expect(removed.status == 0 && removed.out.contains("retired \(extra)"))
        #expect(FileManager.default.fileExists(atPath: fed.collector + "/keys/retired/sites/site-3@\(extra).asc"))
        // Pinned again, it is current again.
        #expect(try fed.fedbatch(["keys", "add", "--home", fed.collector, "--site", "site-3", site3]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: fed.collector + "/keys/retired/sites/site-3@\(extra).asc"))
        #expect(try fed.fedbatch(["keys", "remove", "--home", fed.collector, "--site", "site-3"]).status == 0)
        #expect(try fed.fedbatch(["keys", "remove", "--home", fed.collector, "--site", "site-3"]).status == 1)
        // keys add needs a collector home.
        let onSite = try fed.fedbatch(["keys", "add", "--home", fed.site("site-1"), "--site", "site-3", site3])
        #expect(onSite.status == 1 && onSite.err.contains("is a site home; this command needs a collector home"))
    }

    @Test(
        "keys add refuses RSA-1024, DSA-1024 and keys that cannot sign; a weak key pinned by hand signs nothing that verifies"
    )
    func weakKeys() throws {
        let fed = try Federation()
        let k = fed.keyring
        var fprs: [String: String] = [:]
        for (name, algo, usage) in [
            ("rsa-1024", "rsa1024", "sign"), ("dsa-1024", "dsa1024", "sign"), ("cert-only", "ed25519", "cert"),
        ] {
            try k.gpg(["--passphrase", "", "--quick-gen-key", "\(name) <\(name)@fedbatch.test>", algo, usage, "0"])
            fprs[name] = try k.fingerprint(of: name)
        }
        for (name, message) in [
            ("rsa-1024", "RSA-1024 is below the minimum of RSA-2048"), ("dsa-1024", "DSA-1024 keys are not accepted"),
            ("cert-only", "cannot sign"),
        ] {
            let r = try fed.fedbatch([
                "keys", "add", "--home", fed.collector, "--site", "site-9",
                try k.exportPublic(fprs[name]!, to: "\(name).asc"),
            ])
            #expect(r.status == 1 && r.err.contains(message), "\(name): \(r.err)")
        }
        #expect(!FileManager.default.fileExists(atPath: fed.collector + "/keys/sites/site-9.asc"))
        // An older fedbatch may have pinned a weak key: its signatures are refused anyway.
        try FileManager.default.copyItem(
            atPath: k.dir.file("rsa-1024.asc"), toPath: fed.collector + "/keys/sites/site-9.asc")
        let manifest = Manifest(
            kind: .update, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
            base: .init(number: 0, digest: try fed.generation(0).digest), site: .init(id: "site-9", seq: 1),
            numExamples: 5)
        let sealed = try fed.signer(fprs["rsa-1024"]!).seal(
            manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(try Samples.weights()))])
        let path = try k.dir.write("weak.fbu", sealed.file)
        let v = try fed.fedbatch(["verify", "--home", fed.collector, path])
        #expect(
            v.status == 3 && v.out.contains("signature.weak-key") || v.err.contains("signature.weak-key"),
            "\(v.out)\(v.err)")
    }

    @Test(
        "a key renewed in gpg is re-pinned under the same fingerprint, for a site and for the collector; keys take the home's lock"
    )
    func renewAndLock() throws {
        let fed = try Federation()
        let k = fed.keyring
        let site1 = fed.siteKeys["site-1"]!
        try k.gpg(["--quick-set-expire", site1, "2y"])
        let renewed = try fed.fedbatch([
            "keys", "add", "--home", fed.collector, "--site", "site-1", try k.exportPublic(site1, to: "s1-renewed.asc"),
        ])
        #expect(renewed.status == 0 && renewed.out.contains("renewed \(site1) for site site-1"), "\(renewed.err)")
        let list = try fed.fedbatch(["keys", "list", "--home", fed.collector, "--json"])
        #expect(list.out.contains("\"expires\":\"20"), "\(list.out)")

        try k.gpg(["--quick-set-expire", fed.collectorKey, "3y"])
        let collectorFile = try k.exportPublic(fed.collectorKey, to: "collector-renewed.asc")
        let onSite = try fed.fedbatch(["keys", "add", "--home", fed.site("site-2"), "--collector", collectorFile])
        #expect(
            onSite.status == 0 && onSite.out.contains("renewed \(fed.collectorKey) for the collector"), "\(onSite.err)")
        let other = try fed.fedbatch([
            "keys", "add", "--home", fed.site("site-2"), "--collector", try k.exportPublic(site1, to: "s1b.asc"),
        ])
        #expect(other.status == 1 && other.err.contains("only the same key, renewed"), "\(other.err)")

        // While a merge holds the lock, keys remove changes nothing and exits 4.
        let lock = try #require(try FileLock.tryLock(fed.collector + "/.fedbatch.lock"))
        let removed = try fed.fedbatch(["keys", "remove", "--home", fed.collector, "--site", "site-2"])
        #expect(removed.status == 4 && removed.err.contains("holds"), "\(removed.err)")
        #expect(FileManager.default.fileExists(atPath: fed.collector + "/keys/sites/site-2.asc"))
        #expect(
            try fed.fedbatch(["keys", "add", "--home", fed.collector, "--site", "site-1", k.dir.file("s1-renewed.asc")])
                .status == 4)
        withExtendedLifetime(lock) {}
    }

    @Test("verify gives one verdict per file and exits 3 when any fails")
    func mixedVerdicts() throws {
        let fed = try Federation()
        let good = fed.collector + "/generations/g000000.fbg"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        bytes[100] ^= 0x04
        let bad = try fed.keyring.dir.write("bad.fbg", bytes)
        // A generation signed by a site key, not the collector's.
        let forged = try fed.keyring.dir.write(
            "forged.fbg",
            try fed.signer(fed.siteKeys["site-1"]!).seal(
                manifest: Manifest(
                    kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
                    generation: 1,
                    parent: .init(number: 0, digest: String(repeating: "0", count: 64))),
                members: [(ContainerPath.tensors, SafetensorsWriter.encode(try Samples.weights()))]
            ).file)
        let r = try fed.fedbatch(["verify", "--home", fed.site("site-2"), good, bad, forged, fed.root + "/nope.fbg"])
        #expect(r.status == 3)
        #expect(r.out.contains("ok    \(good)"))
        #expect(r.err.contains("FAIL  \(bad): the payload's SHA-256 is"))
        #expect(r.err.contains("the payload was altered after signing [payload.digest]"))
        #expect(
            r.err.contains(
                "FAIL  \(forged): signed by key \(fed.siteKeys["site-1"]!), which is not pinned in this home [signature.unknown-key]"
            ))
        #expect(r.err.contains("nope.fbg: cannot open"))
        // The collector pins site-1, so there the same file names the role instead.
        let c = try fed.fedbatch(["verify", "--home", fed.collector, forged])
        #expect(
            c.err.contains(
                "generation 1: signed by \(fed.siteKeys["site-1"]!), which is pinned for site site-1, not the collector"
            ))
    }

    @Test("export writes weights that torch loads into nn.Sequential with strict=True")
    func exportToTorch() throws {
        let fed = try Federation(arch: "mlp:6-5-4-3")
        let out = fed.keyring.dir.file("w.safetensors")
        let r = try fed.fedbatch([
            "export", "--home", fed.site("site-1"), fed.collector + "/generations/g000000.fbg", "--out", out,
        ])
        #expect(r.status == 0, "\(r.err)")
        let py = try Subprocess.python("torch_load.py", [out, "mlp:6-5-4-3"])
        try #require(py.status == 0, "\(py.err)")
        let loaded = try #require(try JSONSerialization.jsonObject(with: py.stdout) as? [String: Any])
        #expect((loaded["missing"] as? [String])?.isEmpty == true)
        #expect((loaded["unexpected"] as? [String])?.isEmpty == true)
        #expect(loaded["names"] as? [String] == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"])
        // The values are generation 0's: seeded PyTorch-style init, ±1/sqrt(fan_in).
        let weights = try ModelArchitecture(spec: "mlp:6-5-4-3").initialWeights(seed: 1)
        let expected = weights.reduce(0.0) { $0 + $1.tensor.floats().reduce(0.0) { $0 + Double($1) } }
        #expect(abs((loaded["sum"] as? Double ?? .nan) - expected) < 1e-9)
        for (name, t) in weights {
            let fanIn = name.hasPrefix("0.") ? 6 : name.hasPrefix("2.") ? 5 : 4
            #expect(t.floats().allSatisfy { abs($0) <= 1 / Float(fanIn).squareRoot() })
        }
    }

    @Test("init collector takes Python-written weights after checking names and shapes")
    func initWithWeights() throws {
        let keyring = try TestKeyring()
        let fpr = try keyring.generate("collector")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        let good = keyring.dir.file("good.safetensors")
        let bad = keyring.dir.file("bad.safetensors")
        let script = """
            import numpy as np
            from safetensors.numpy import save_file
            rng = np.random.default_rng(0)
            w = {"0.weight": rng.standard_normal((3, 4)).astype(np.float16), "0.bias": np.zeros(3, np.float16),
                 "2.weight": rng.standard_normal((2, 3)).astype(np.float16), "2.bias": np.ones(2, np.float16)}
            save_file(w, "\(good)")
            w["2.weight"] = w["2.weight"].T.copy()
            save_file(w, "\(bad)")
            """
        let py = try Subprocess.run(TestPaths.python, ["-c", script])
        try #require(py.status == 0, "\(py.err)")
        let r = try Subprocess.fedbatch(
            [
                "init", "collector", "--home", keyring.dir.file("c1"), "--model-id", "m", "--arch", Samples.arch,
                "--key", fpr, "--weights", good,
            ], environment: env)
        #expect(r.status == 0, "\(r.err)")
        let c = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: keyring.dir.file("c1/generations/g000000.fbg")))
            ).payload)
        let t = try c.tensors()
        let src = try SafetensorsFile.open(path: good)
        #expect(t.tensor("2.bias")?.dtype == .f32)
        #expect(t.tensor("0.weight")?.floats() == src.tensor("0.weight")?.floats())

        let refused = try Subprocess.fedbatch(
            [
                "init", "collector", "--home", keyring.dir.file("c2"), "--model-id", "m", "--arch", Samples.arch,
                "--key", fpr, "--weights", bad,
            ], environment: env)
        #expect(refused.status == 3)
        #expect(refused.err.contains("tensor \"2.weight\" has shape [3, 2], expected [2, 3]"))
        #expect(!FileManager.default.fileExists(atPath: keyring.dir.file("c2/fedbatch.toml")))
        // An existing home is never overwritten.
        let again = try Subprocess.fedbatch(
            [
                "init", "collector", "--home", keyring.dir.file("c1"), "--model-id", "m", "--arch", Samples.arch,
                "--key", fpr,
            ], environment: env)
        #expect(again.status == 1 && again.err.contains("is already a fedbatch home"))
    }

    @Test("a passphrase-protected key needs --passphrase-file; without it init fails clearly and writes no home")
    func protectedKey() throws {
        let keyring = try TestKeyring()
        let fpr = try keyring.generate("collector", passphrase: "s3cret")
        _ = try Subprocess.run("/usr/bin/gpgconf", ["--homedir", keyring.home, "--kill", "gpg-agent"])
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        let home = keyring.dir.file("col")
        let r = try Subprocess.fedbatch(
            ["init", "collector", "--home", home, "--model-id", "m", "--arch", Samples.arch, "--key", fpr],
            environment: env)
        #expect(r.status == 1)
        #expect(r.err.contains("protected by a passphrase and none was given (use --passphrase-file)"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: home + "/fedbatch.toml"))
        #expect(!FileManager.default.fileExists(atPath: home + "/generations/g000000.fbg"))
        let pass = try keyring.dir.write("pass", Data("s3cret\n".utf8))
        let ok = try Subprocess.fedbatch(
            [
                "init", "collector", "--home", home, "--model-id", "m", "--arch", Samples.arch, "--key", fpr,
                "--passphrase-file", pass,
            ], environment: env)
        #expect(ok.status == 0, "\(ok.err)")
    }

    @Test("init site refuses a collector key file that is a secret key or the site's own key")
    func initSiteRefusals() throws {
        let keyring = try TestKeyring()
        let c = try keyring.generate("collector")
        let s = try keyring.generate("site-1")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        let secret = try keyring.dir.write(
            "c-secret.asc", try keyring.gpg(["--armor", "--export-secret-keys", c]).stdout)
        let own = try keyring.exportPublic(s, to: "own.asc")
        for (file, message) in [(secret, "holds a secret key"), (own, "this is the site's own signing key")] {
            let r = try Subprocess.fedbatch(
                [
                    "init", "site", "--home", keyring.dir.file("s"), "--site-id", "site-1", "--key", s,
                    "--collector-key", file, "--model-id", "m",
                ], environment: env)
            #expect(r.status == 1)
            #expect(r.err.contains(message), "\(r.err)")
        }
    }
}

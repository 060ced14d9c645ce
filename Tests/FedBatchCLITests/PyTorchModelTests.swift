import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Models from PyTorch as users save them: tied weights, bfloat16 models
/// trained in float32, and torch.save files (Tests/Fixtures/pytorch_models.py).
@Suite("PyTorch models as they come")
struct PyTorchModelTests {
    /// A collector pinning the model `weights` defines, and one site with generation 0.
    static func federation(
        weights: String, keyring: TestKeyring
    ) throws -> (fb: ([String]) throws -> ProcessResult, col: String, site: String) {
        let collectorKey = try keyring.generate("collector")
        let siteKey = try keyring.generate("site-1")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        let fb = { (args: [String]) throws -> ProcessResult in try Subprocess.fedbatch(args, environment: env) }
        let col = keyring.dir.file("col"), site = keyring.dir.file("site")
        try fb([
            "init", "collector", "--home", col, "--model-id", "m", "--key", collectorKey, "--weights", weights, "-q",
        ])
        .checked()
        try fb(["keys", "add", "--home", col, "--site", "site-1", try keyring.exportPublic(siteKey, to: "s.asc"), "-q"])
            .checked()
        try fb([
            "init", "site", "--home", site, "--site-id", "site-1", "--key", siteKey, "--collector-key",
            col + "/keys/collector.asc", "--model-id", "m", "-q",
        ]).checked()
        try FileManager.default.copyItem(
            atPath: col + "/generations/g000000.fbg", toPath: site + "/generations/g000000.fbg")
        return (fb, col, site)
    }

    @Test(
        "a model with tied weights, saved with each tensor cloned, federates and exports back with strict=True, still tied"
    )
    func tiedWeights() throws {
        let keyring = try TestKeyring()
        let dir = keyring.dir
        try #require(try Subprocess.python("pytorch_models.py", ["tied", dir.path]).status == 0)
        let (fb, col, site) = try Self.federation(weights: dir.file("tied.safetensors"), keyring: keyring)
        try fb(["export", "--home", site, site + "/generations/g000000.fbg", "--out", dir.file("start.safetensors")])
            .checked()
        try fb(["pack", "--home", site, "--weights", dir.file("start.safetensors"), "--num-examples", "5", "-q"])
            .checked()
        for name in try FileManager.default.contentsOfDirectory(atPath: site + "/outbox") {
            try FileManager.default.moveItem(atPath: site + "/outbox/" + name, toPath: col + "/inbox/" + name)
        }
        try fb(["merge", "--home", col, "--settle", "0", "--min-bundles", "1", "-q"]).checked()
        try fb(["export", "--home", col, col + "/generations/g000001.fbg", "--out", dir.file("g1.safetensors")])
            .checked()
        let loaded = try Subprocess.python("pytorch_models.py", ["tied-load", dir.file("g1.safetensors")])
        #expect(loaded.status == 0 && loaded.out.contains("tied ok"), "\(loaded.err)")
    }

    @Test(
        "pack converts float32 weights to a bfloat16 model's dtype as PyTorch rounds, says so, and never converts an integer"
    )
    func dtypes() throws {
        let keyring = try TestKeyring()
        let dir = keyring.dir
        try #require(try Subprocess.python("pytorch_models.py", ["bf16", dir.path]).status == 0)
        let (fb, _, site) = try Self.federation(weights: dir.file("bf16.safetensors"), keyring: keyring)
        let wrong = try fb([
            "pack", "--home", site, "--weights", dir.file("int-as-float.safetensors"), "--num-examples", "5", "--base",
            "0",
        ])
        #expect(wrong.status != 0 && wrong.err.contains("an integer tensor is never converted"), "\(wrong.err)")
        let r = try fb([
            "pack", "--home", site, "--weights", dir.file("f32.safetensors"), "--num-examples", "5", "--base", "0",
            "--codec", "fp32", "--json",
        ])
        #expect(r.status == 0, "\(r.err)")
        let warning = try r.jsonErrorLines().first { $0["code"] as? String == "pack.converted" }
        #expect((warning?["message"] as? String)?.contains("from F32 to BF16") == true, "\(r.err)")
        // The update is the BF16 weights PyTorch would round to, minus generation 0.
        let file = try #require((try r.summary()["bundle"] as? [String: Any])?["file"] as? String)
        let delta = try ContainerReader.read(
            payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: file))).payload
        ).tensors()
        let expected = try SafetensorsFile.open(path: dir.file("expected-bf16.safetensors"))
        let base = try SafetensorsFile.open(path: dir.file("bf16.safetensors"))
        for name in ["layer.weight", "layer.bias"] {
            let d = delta.tensor(name)!.floats(), e = expected.tensor(name)!.floats(), b = base.tensor(name)!.floats()
            #expect(zip(d, zip(e, b)).allSatisfy { $0 == $1.0 - $1.1 }, "\(name)")
        }
    }

    @Test("a torch.save file, zip or legacy pickle, is named as such with the two lines that save safetensors")
    func torchSave() throws {
        let keyring = try TestKeyring()
        let dir = keyring.dir
        try #require(try Subprocess.python("pytorch_models.py", ["torch-save", dir.path]).status == 0)
        let key = try keyring.generate("collector")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        for (file, kind) in [("model.pt", "checkpoint"), ("legacy.pt", "pickle")] {
            let r = try Subprocess.fedbatch(
                [
                    "init", "collector", "--home", dir.file("c-\(file)"), "--model-id", "m", "--key", key, "--weights",
                    dir.file(file),
                ], environment: env)
            #expect(r.status != 0, "\(file)")
            #expect(
                r.err.contains("this is a PyTorch \(kind)")
                    && r.err.contains("from safetensors.torch import save_file"), "\(r.err)")
            #expect(!r.err.contains("header length"), "\(r.err)")
        }
    }
}

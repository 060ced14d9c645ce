import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// The fuzz corpus (seeds, and every input a fuzzer run found) replayed
/// through each target by the plain build of fedbatch-fuzz: each finding
/// stays a regression test.
@Suite("Fuzz corpus")
struct FuzzCorpusTests {
    @Test(
        "every corpus input runs through its parser without a crash",
        arguments: [
            "safetensors", "manifest", "statement", "signature", "container", "codec", "idx", "csv", "numbers",
            "statistics", "included", "keys", "verify",
        ])
    func replay(target: String) throws {
        let replay = (TestPaths.fedbatch as NSString).deletingLastPathComponent + "/fedbatch-fuzz"
        let corpus = TestPaths.packageRoot + "/Tests/Fuzz/corpus/" + target
        let count = try FileManager.default.contentsOfDirectory(atPath: corpus).count
        #expect(count >= 2)
        let r = try Subprocess.run(replay, [target, corpus])
        #expect(r.status == 0 && r.out.contains("\(target): \(count) inputs, no crash"), "\(r.out)\(r.err)")
    }
}

import FedBatchTestSupport
import Foundation
import Testing

/// examples/tabular/federation.sh, run as a user runs it (fewer rounds):
/// the breast-cancer table as hospitals export it, federated statistics
/// pinned, then training through the real binary.
@Suite("examples/tabular")
struct TabularExampleTests {
    @Test("the breast-cancer federation pins federated statistics and reaches 0.95 test accuracy in 5 rounds")
    func federation() throws {
        var env = ProcessInfo.processInfo.environment
        env["FEDBATCH"] = TestPaths.fedbatch
        env["PYTHON"] = TestPaths.python
        env["ROUNDS"] = "5"
        env.removeValue(forKey: "GNUPGHOME")
        let r = try Subprocess.run(
            "/bin/bash", [TestPaths.packageRoot + "/examples/tabular/federation.sh"], environment: env)
        #expect(r.status == 0, "\(r.out)\(r.err)")
        // The pin happened before training, from all three sites.
        #expect(r.out.contains("generation 1 pins the normalisation of 398 rows from 3 sites"), "\(r.out)")
        let final = r.out.split(separator: "\n").last { $0.hasPrefix("final test accuracy") }
        let accuracy = final.flatMap { Double($0.split(separator: " ")[3]) }
        #expect((accuracy ?? 0) >= 0.95, "\(r.out)")
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// The systemd units in examples/systemd/, checked by systemd-analyze:
/// `verify` must accept them without a warning, and the offline security
/// audit must rate both services' exposure at 2.0 or below ("SAFE").
/// Nothing is started: CI has no systemd as PID 1.
@Suite("examples/systemd units")
struct ServiceUnitTests {
    static let units = [
        "fedbatch-train.service", "fedbatch-train.timer", "fedbatch-merge.service", "fedbatch-merge.timer",
    ]

    @Test("systemd-analyze verifies every unit and rates each service SAFE; the sandbox and exit-5 rules are in place")
    func units() throws {
        let dir = TempDir()
        for name in Self.units {
            let text = try String(contentsOfFile: TestPaths.packageRoot + "/examples/systemd/" + name, encoding: .utf8)
            if name.hasSuffix(".service") {
                for line in [
                    "User=fedbatch", "ProtectSystem=strict", "ReadWritePaths=/var/lib/fedbatch", "NoNewPrivileges=true",
                    "SuccessExitStatus=5", "Environment=FEDBATCH_HOME=/var/lib/fedbatch", "PrivateNetwork=true",
                ] {
                    #expect(text.contains("\n" + line + "\n"), "\(name) lacks \(line)")
                }
            }
            // The .deb installs /usr/bin/fedbatch; here the built one stands in,
            // because verify checks that ExecStart's binary exists.
            _ = try dir.write(
                name, Data(text.replacingOccurrences(of: "/usr/bin/fedbatch", with: TestPaths.fedbatch).utf8))
        }
        let verify = try Subprocess.run(
            "/usr/bin/systemd-analyze", ["verify", "--man=no"] + Self.units.map { dir.file($0) })
        #expect(verify.status == 0 && verify.err.isEmpty, "\(verify.err)")
        for service in Self.units where service.hasSuffix(".service") {
            let audit = try Subprocess.run(
                "/usr/bin/systemd-analyze",
                ["security", "--offline=true", "--no-pager", "--threshold=20", dir.file(service)])
            #expect(
                audit.status == 0 && audit.out.contains("SAFE"),
                "\(service): \(audit.out.split(separator: "\n").last ?? "")")
        }
        // And the check can fail: a misspelt setting is reported.
        let bad = try dir.write(
            "bad.service",
            Data(
                (try String(contentsOfFile: dir.file("fedbatch-train.service"), encoding: .utf8))
                    .replacingOccurrences(of: "ProtectSystem=strict", with: "ProtectSystem=strictly").utf8))
        #expect(!(try Subprocess.run("/usr/bin/systemd-analyze", ["verify", "--man=no", bad])).err.isEmpty)
    }
}

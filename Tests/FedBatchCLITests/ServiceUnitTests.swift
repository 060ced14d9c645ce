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
        "fedbatch-pull.service", "fedbatch-push.service", "fedbatch-push.timer", "fedbatch-publish.service",
    ]
    /// The units that move files: they need the network, and run only when
    /// the home names a remote.
    static let transfers: Set<String> = ["fedbatch-pull.service", "fedbatch-push.service", "fedbatch-publish.service"]

    @Test("systemd-analyze verifies every unit and rates each service SAFE; the sandbox and exit-5 rules are in place")
    func units() throws {
        let dir = TempDir()
        for name in Self.units {
            let text = try String(contentsOfFile: TestPaths.packageRoot + "/examples/systemd/" + name, encoding: .utf8)
            if name.hasSuffix(".service") {
                let network =
                    Self.transfers.contains(name)
                    ? ["RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"]
                    : ["PrivateNetwork=true", "RestrictAddressFamilies=AF_UNIX"]
                for line in [
                    "User=fedbatch", "ProtectSystem=strict", "ReadWritePaths=/var/lib/fedbatch", "NoNewPrivileges=true",
                    "SuccessExitStatus=5", "Environment=FEDBATCH_HOME=/var/lib/fedbatch",
                ] + network {
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
            // Network access costs the transfer units a little: OK (below
            // 2.0 of 10) rather than SAFE.
            let rating = Self.transfers.contains(service) ? "OK" : "SAFE"
            #expect(
                audit.status == 0 && audit.out.contains(rating),
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

    @Test("the transfer units run only for a home that names a remote: their ExecCondition, run as systemd would")
    func transferCondition() throws {
        let dir = TempDir()
        let home = dir.file("home")
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        for name in Self.transfers.sorted() {
            let text = try String(contentsOfFile: TestPaths.packageRoot + "/examples/systemd/" + name, encoding: .utf8)
            let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("ExecCondition=") })
            // systemd passes "$$" on as "$"; the rest is /bin/sh -c '...'.
            let script = String(line.dropFirst("ExecCondition=/bin/sh -c '".count).dropLast())
                .replacingOccurrences(of: "$$", with: "$")
            func condition(_ toml: String) throws -> Int32 {
                try Data(toml.utf8).write(to: URL(fileURLWithPath: home + "/fedbatch.toml"))
                return try Subprocess.run("/bin/sh", ["-c", script], environment: ["FEDBATCH_HOME": home]).status
            }
            #expect(try condition("[remote]\n# url = \"/media/usb\"\n") == 1, "\(name): a commented url runs it")
            #expect(try condition("[training]\ndata = \"x\"\n") == 1, "\(name): no [remote] runs it")
            #expect(try condition("[remote]\nurl = \"s3://b/p\"\n") == 0, "\(name): a remote skips it")
        }
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// The Debian package that `make deb` builds (and lintian has passed):
/// what it holds, what it depends on, and whether its binary runs on a
/// machine with no Swift toolchain. `make test` builds the package first and
/// names it in $FEDBATCH_DEB.
@Suite("the Debian package")
struct PackageTests {
    static var deb: String? { ProcessInfo.processInfo.environment["FEDBATCH_DEB"] }

    @Test(
        "holds the binary, man pages, examples and units, and depends only on Debian's libraries",
        .enabled(if: deb != nil, "make test names the package in FEDBATCH_DEB"))
    func contents() throws {
        let deb = Self.deb!
        let listing = try Subprocess.run("/usr/bin/dpkg-deb", ["--contents", deb])
        #expect(listing.status == 0, "\(listing.err)")
        let paths = Set(
            listing.out.split(separator: "\n").compactMap {
                $0.split(separator: " ").last.map { String($0.dropFirst()) }
            })
        var expected = [
            "/usr/bin/fedbatch", "/usr/share/doc/fedbatch/copyright", "/usr/share/doc/fedbatch/changelog.gz",
            "/usr/share/doc/fedbatch/examples/demo.sh", "/usr/share/doc/fedbatch/examples/pytorch/train.py",
        ]
        for unit in ServiceUnitTests.units { expected.append("/lib/systemd/system/" + unit) }
        for page in try FileManager.default.contentsOfDirectory(atPath: TestPaths.packageRoot + "/man") {
            expected.append("/usr/share/man/man\(page.split(separator: ".").last!)/\(page).gz")
        }
        for path in expected { #expect(paths.contains(path), "\(path) missing from the package") }

        let depends = try Subprocess.run("/usr/bin/dpkg-deb", ["--field", deb, "Depends"]).out
        for library in ["libgpgme11", "libarchive13", "libzstd1", "libssl3", "libsqlite3-0", "gnupg", "adduser"] {
            #expect(depends.contains(library), "Depends lacks \(library): \(depends)")
        }
        #expect(!depends.lowercased().contains("swift"), "\(depends)")
    }

    @Test(
        "its maintainer scripts, run as dpkg runs them on a scratch root: nothing enabled or printed, dpkg -r disables what an administrator enabled, purge forgets",
        .enabled(if: deb != nil, "make test names the package in FEDBATCH_DEB"))
    func maintainerScripts() throws {
        let dir = TempDir()
        let root = dir.file("root"), control = dir.file("control")
        #expect(try Subprocess.run("/usr/bin/dpkg-deb", ["--extract", Self.deb!, root]).status == 0)
        #expect(try Subprocess.run("/usr/bin/dpkg-deb", ["--control", Self.deb!, control]).status == 0)
        let state = root + "/var/lib/systemd/deb-systemd-helper-enabled"
        for d in [root + "/etc/systemd/system", state] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        /// One maintainer script with dpkg's environment, on the scratch root
        /// (DPKG_ROOT: no user is created and systemd is not touched here).
        func run(_ script: String, _ args: [String]) throws -> ProcessResult {
            var env = ProcessInfo.processInfo.environment
            env["DPKG_ROOT"] = root
            env["DPKG_MAINTSCRIPT_PACKAGE"] = "fedbatch"
            env["DPKG_MAINTSCRIPT_NAME"] = script
            return try Subprocess.run("/bin/sh", [control + "/" + script] + args, environment: env)
        }
        func enabledLinks() -> [String] {
            ((try? FileManager.default.subpathsOfDirectory(atPath: root + "/etc/systemd/system")) ?? []).filter {
                $0.hasSuffix(".timer") || $0.hasSuffix(".service")
            }.sorted()
        }
        let installed = try run("postinst", ["configure"])
        #expect(installed.status == 0 && installed.out.isEmpty && installed.err.isEmpty, "\(installed.err)")
        #expect(enabledLinks().isEmpty, "the package enabled \(enabledLinks())")
        let recorded = try FileManager.default.contentsOfDirectory(atPath: state)
        for unit in ServiceUnitTests.units { #expect(recorded.contains(unit + ".dsh-also"), "\(unit) is not recorded") }

        // An administrator enables a site's timers.
        let enable = try Subprocess.run(
            "/usr/bin/systemctl", ["--root=\(root)", "enable", "fedbatch-train.timer", "fedbatch-push.timer"])
        #expect(enable.status == 0, "\(enable.err)")
        #expect(
            enabledLinks() == ["timers.target.wants/fedbatch-push.timer", "timers.target.wants/fedbatch-train.timer"])

        // dpkg -r: prerm, the files go, postrm; no dangling link is left.
        #expect(try run("prerm", ["remove"]).status == 0)
        for unit in ServiceUnitTests.units {
            try? FileManager.default.removeItem(atPath: root + "/lib/systemd/system/" + unit)
        }
        let removed = try run("postrm", ["remove"])
        #expect(removed.status == 0 && removed.out.isEmpty, "\(removed.err)")
        #expect(enabledLinks().isEmpty, "left behind: \(enabledLinks())")
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: state)).isEmpty)
        // dpkg --purge forgets them.
        #expect(try run("postrm", ["purge"]).status == 0)
        // (deb-systemd-helper removes its state directory once it is empty.)
        #expect(
            ((try? FileManager.default.contentsOfDirectory(atPath: state)) ?? []).filter { $0.hasPrefix("fedbatch") }
                .isEmpty)
    }

    @Test(
        "README's list of dependencies is the package's Depends",
        .enabled(if: deb != nil, "make test names the package in FEDBATCH_DEB"))
    func readmeDepends() throws {
        let depends = try Subprocess.run("/usr/bin/dpkg-deb", ["--field", Self.deb!, "Depends"]).out
        let names = depends.split(separator: ",").map {
            String($0.trimmingCharacters(in: .whitespacesAndNewlines).prefix { $0 != " " })
        }
        let readme = try String(contentsOfFile: TestPaths.packageRoot + "/README.md", encoding: .utf8)
        let start = try #require(readme.range(of: "The package depends on exactly these Debian packages"))
        let paragraph = String(readme[start.upperBound...].prefix { $0 != "." })
            .replacingOccurrences(of: "\n", with: " ")
        let listed = paragraph.components(separatedBy: CharacterSet(charactersIn: " ,:()")).filter {
            $0.range(of: "^[a-z0-9][a-z0-9+.-]+$", options: .regularExpression) != nil
                && !["a", "test", "compares", "this", "list", "with", "the", "and", "package's"].contains($0)
        }
        #expect(Set(listed) == Set(names), "README: \(listed.sorted()); Depends: \(names.sorted())")
    }

    /// The toolchain's root (e.g. /opt/swift), found from where the debug
    /// build's libswiftCore.so is loaded.
    static func toolchainRoot() throws -> String {
        let ldd = try Subprocess.run("/usr/bin/ldd", [TestPaths.fedbatch]).out
        guard let line = ldd.split(separator: "\n").first(where: { $0.contains("libswiftCore.so") }),
            let path = line.split(separator: " ").first(where: { $0.hasPrefix("/") }),
            let range = path.range(of: "/usr/lib/swift") ?? path.range(of: "/lib/swift")
        else { throw Subprocess.Failure(description: "cannot find libswiftCore.so in ldd output: \(ldd)") }
        return String(path[..<range.lowerBound])
    }

    @Test(
        "its binary, with the Swift toolchain hidden by a tmpfs, sets up a collector and verifies the chain",
        .enabled(if: deb != nil, "make test names the package in FEDBATCH_DEB"))
    func runsWithoutToolchain() throws {
        let dir = TempDir()
        let root = dir.file("root")
        let x = try Subprocess.run("/usr/bin/dpkg-deb", ["--extract", Self.deb!, root])
        #expect(x.status == 0, "\(x.err)")
        let binary = root + "/usr/bin/fedbatch"
        let dynamic = try Subprocess.run("/usr/bin/readelf", ["--dynamic", binary]).out
        #expect(
            !dynamic.contains("libswift") && !dynamic.contains("RUNPATH") && !dynamic.contains("RPATH"), "\(dynamic)")

        let keyring = try TestKeyring()
        let key = try keyring.generate("collector")
        let toolchain = try Self.toolchainRoot()
        // In a private mount namespace a tmpfs covers the toolchain. The
        // debug build, which needs it, must then fail to start: that shows
        // the toolchain really is out of reach. The packaged binary must run.
        let script = """
            set -e
            mount -t tmpfs fedbatch-hides-swift '\(toolchain)'
            if '\(TestPaths.fedbatch)' --version 2>'\(dir.file("debug.err"))'; then echo "debug build ran"; exit 1; fi
            '\(binary)' --version
            '\(binary)' init collector --home '\(dir.file("c"))' --model-id demo --arch mlp:4-3-2 --key \(key) --json
            '\(binary)' --home '\(dir.file("c"))' verify latest --json
            '\(binary)' --home '\(dir.file("c"))' log --json
            """
        let unshare = getuid() == 0 ? ["--mount"] : ["--mount", "--map-root-user"]
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        let r = try Subprocess.run("/usr/bin/unshare", unshare + ["/bin/sh", "-c", script], environment: env)
        #expect(r.status == 0, "exit \(r.status): \(r.out)\n\(r.err)")
        let debugErr = (try? String(contentsOfFile: dir.file("debug.err"), encoding: .utf8)) ?? ""
        #expect(
            debugErr.contains("error while loading shared libraries: libswift"),
            "the debug build should not find its runtime: \(debugErr)")
        #expect(r.out.hasPrefix(try Subprocess.fedbatch(["--version"]).out), "\(r.out)")
        let lines = r.out.split(separator: "\n").filter { $0.hasPrefix("{") }
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(
            lines.contains { $0["verified"] as? Bool == true && ($0["generations"] as? [Any])?.count == 1 }, "\(r.out)")
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// `fedbatch check` through the real binary: each item broken first, then
/// put right, with real keys, data, directories and a directory remote.
@Suite("fedbatch check")
struct CheckTests {
    /// Runs check --json on `home`: its exit status and its items by name.
    static func check(_ fed: Federation, _ home: String) throws -> (Int32, [String: [String: Any]]) {
        let r = try fed.fedbatch(["check", "--home", home, "--json"])
        let items = (try r.summary()["items"] as? [[String: Any]]) ?? []
        return (r.status, Dictionary(items.map { ($0["name"] as! String, $0) }, uniquingKeysWith: { a, _ in a }))
    }

    /// Sets a top-level key of a home's fedbatch.toml.
    static func setTopLevel(home: String, _ key: String, _ value: String) throws {
        let path = home + "/fedbatch.toml"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map {
            $0.hasPrefix("\(key) = ") ? "\(key) = \(value)" : String($0)
        }
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    static func chattr(_ flag: String, _ path: String) -> Bool {
        (try? Subprocess.run("/usr/bin/chattr", [flag, path]).status) == 0
    }

    static func status(_ items: [String: [String: Any]], _ name: String) -> String? {
        items[name]?["status"] as? String
    }

    /// A site with generation 0 and the Fashion-MNIST test split as data.
    static func federation() throws -> Federation {
        let fed = try Federation(sites: ["site-1", "site-2"], arch: "mlp:784-8-10")
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000000.fbg", toPath: fed.site("site-1") + "/generations/g000000.fbg")
        try Federation.setConfig(home: fed.site("site-1"), table: "training", "data", "\"\(fashionMNIST)\"")
        return fed
    }

    @Test("a healthy site and collector pass every check; text output lists them on stdout")
    func healthy() throws {
        let fed = try Self.federation()
        let (status, items) = try Self.check(fed, fed.site("site-1"))
        #expect(status == 0, "\(items)")
        for name in ["config", "home", "signing-key", "pinned-keys", "chain", "training-data"] {
            #expect(Self.status(items, name) == "ok", "\(name): \(items[name] ?? [:])")
        }
        let (cstatus, citems) = try Self.check(fed, fed.collector)
        #expect(cstatus == 0 && citems.values.allSatisfy { $0["status"] as? String == "ok" }, "\(citems)")
        let text = try fed.fedbatch(["check", "--home", fed.site("site-1")])
        #expect(text.status == 0 && text.out.contains("ok       signing-key") && text.err.isEmpty, "\(text.out)")
        let quiet = try fed.fedbatch(["check", "--home", fed.site("site-1"), "-q"])
        #expect(quiet.status == 0 && quiet.out.isEmpty && quiet.err.isEmpty)
    }

    @Test("config: an unknown key fails with its line, and nothing else is judged")
    func config() throws {
        let fed = try Self.federation()
        try Federation.setConfig(home: fed.site("site-1"), table: "training", "epoch", "2")
        let (status, items) = try Self.check(fed, fed.site("site-1"))
        #expect(status == 1 && items.count == 1 && Self.status(items, "config") == "failed")
        #expect((items["config"]?["message"] as? String)?.contains("did you mean training.epochs?") == true)
        let text = try fed.fedbatch(["check", "--home", fed.site("site-1"), "-q"])
        #expect(text.status == 1 && text.err.contains("failed   config") && text.out.isEmpty, "\(text.err)")
    }

    @Test("home: an immutable home directory is not writable, even by root")
    func homeWritable() throws {
        let fed = try Self.federation()
        let site = fed.site("site-1")
        // chattr +i stops root too; the tests run as root here.
        guard Self.chattr("+i", site) else { return }
        defer { _ = Self.chattr("-i", site) }
        let (status, items) = try Self.check(fed, site)
        #expect(status == 1 && Self.status(items, "home") == "failed", "\(items)")
        #expect(items["home"]?["code"] as? String == "check.not-writable")
        _ = Self.chattr("-i", site)
        #expect(Self.status(try Self.check(fed, site).1, "home") == "ok")
    }

    @Test("signing key: missing from the GnuPG home, protected without a passphrase file, expiring in 10 days")
    func signingKey() throws {
        let fed = try Self.federation()
        let site = fed.site("site-1")
        // Another, empty GnuPG home: the key is not there.
        let empty = fed.keyring.dir.file("empty-gnupg")
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        chmod(empty, 0o700)
        let missing = try fed.fedbatch(["check", "--home", site, "--gnupg-home", empty, "--json"])
        let items = Dictionary(
            try #require(try missing.summary()["items"] as? [[String: Any]]).map { ($0["name"] as! String, $0) },
            uniquingKeysWith: { a, _ in a })
        #expect(missing.status == 1 && Self.status(items, "signing-key") == "failed")
        #expect((items["signing-key"]?["message"] as? String)?.contains("no secret key") == true)

        // A site whose key has a passphrase, and no passphrase file: it
        // cannot sign unattended.
        let protected = try fed.keyring.generate("protected", passphrase: "secret")
        try Self.setTopLevel(home: site, "key", "\"\(protected)\"")
        let (status, prompt) = try Self.check(fed, site)
        #expect(status == 1 && Self.status(prompt, "signing-key") == "failed", "\(prompt)")
        let file = try fed.keyring.dir.write("passphrase", Data("secret\n".utf8))
        try Federation.setConfig(home: site, table: "gnupg", "passphrase_file", "\"\(file)\"")
        #expect(Self.status(try Self.check(fed, site).1, "signing-key") == "ok")

        // A key that expires in ten days: a warning, and exit 0.
        let soon = try fed.keyring.generate("soon", expire: "10d")
        try Self.setTopLevel(home: site, "key", "\"\(soon)\"")
        let (wstatus, warned) = try Self.check(fed, site)
        #expect(wstatus == 0 && Self.status(warned, "signing-key") == "warning", "\(warned)")
        #expect(warned["signing-key"]?["code"] as? String == "check.key-expires-soon")
    }

    @Test("pinned keys: one that has expired since it was pinned fails; one expiring soon warns")
    func pinnedKeys() throws {
        let fed = try Self.federation()
        let brief = try fed.keyring.generate("brief", expire: "seconds=4")
        let file = try fed.keyring.exportPublic(brief, to: "brief.asc")
        try fed.run(["keys", "add", "--home", fed.collector, "--site", "site-3", file])
        Thread.sleep(forTimeInterval: 5)
        let (status, items) = try Self.check(fed, fed.collector)
        #expect(status == 1 && Self.status(items, "pinned-keys") == "failed", "\(items)")
        #expect((items["pinned-keys"]?["message"] as? String)?.contains(brief) == true)
        try fed.run(["keys", "remove", "--home", fed.collector, "--site", "site-3"])

        let soon = try fed.keyring.generate("soon", expire: "5d")
        try fed.run([
            "keys", "add", "--home", fed.collector, "--site", "site-4",
            try fed.keyring.exportPublic(soon, to: "soon.asc"),
        ])
        let (wstatus, warned) = try Self.check(fed, fed.collector)
        #expect(wstatus == 0 && Self.status(warned, "pinned-keys") == "warning", "\(warned)")
    }

    @Test("chain: a damaged newest generation fails; a site with no generation yet warns")
    func chain() throws {
        let fed = try Self.federation()
        let site = fed.site("site-1")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: site + "/generations/g000000.fbg"))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: site + "/generations/g000000.fbg"))
        let (status, items) = try Self.check(fed, site)
        #expect(status == 1 && Self.status(items, "chain") == "failed", "\(items)")
        try FileManager.default.removeItem(atPath: site + "/generations/g000000.fbg")
        let (wstatus, warned) = try Self.check(fed, site)
        #expect(wstatus == 0 && Self.status(warned, "chain") == "warning", "\(warned)")
        #expect(Self.status(warned, "training-data") == "warning")
    }

    @Test("training data: missing, or not fitting the model, fails; a command's program must be executable")
    func trainingData() throws {
        let fed = try Self.federation()
        let site = fed.site("site-1")
        try Federation.setConfig(home: site, table: "training", "data", "\"/nonexistent/shard.safetensors\"")
        let (status, items) = try Self.check(fed, site)
        #expect(status == 1 && Self.status(items, "training-data") == "failed", "\(items)")
        // 784 pixels against a model of 4 inputs.
        let small = try Federation(sites: ["site-1"])
        try FileManager.default.copyItem(
            atPath: small.collector + "/generations/g000000.fbg",
            toPath: small.site("site-1") + "/generations/g000000.fbg")
        try Federation.setConfig(home: small.site("site-1"), table: "training", "data", "\"\(fashionMNIST)\"")
        let (mstatus, mismatched) = try Self.check(small, small.site("site-1"))
        #expect(mstatus == 1 && Self.status(mismatched, "training-data") == "failed", "\(mismatched)")

        try Federation.setConfig(home: site, table: "training", "command", "\"/opt/nowhere/train.py --epochs 1\"")
        let (cstatus, command) = try Self.check(fed, site)
        #expect(cstatus == 1 && Self.status(command, "training-command") == "failed", "\(command)")
        #expect(command["training-data"] == nil)
        try Federation.setConfig(home: site, table: "training", "command", "\"sh -c 'exit 0'\"")
        #expect(Self.status(try Self.check(fed, site).1, "training-command") == "ok")
    }

    @Test("a collector's eval data, the metrics directory and the remote are checked when configured")
    func collectorSettings() throws {
        let fed = try Self.federation()
        let c = fed.collector
        try Federation.setConfig(home: c, table: "eval", "data", "\"/nonexistent/eval\"")
        try Federation.setConfig(home: c, table: "metrics", "textfile_dir", "\"/nonexistent/metrics\"")
        try Federation.setConfig(home: c, table: "remote", "url", "\"/nonexistent/stick\"")
        let (status, items) = try Self.check(fed, c)
        #expect(status == 1, "\(items)")
        for name in ["eval-data", "metrics", "remote"] { #expect(Self.status(items, name) == "failed", "\(name)") }
        #expect(items["remote"]?["code"] as? String == "remote.unreachable")

        let dir = fed.keyring.dir
        for d in ["metrics", "stick"] {
            try FileManager.default.createDirectory(atPath: dir.file(d), withIntermediateDirectories: true)
        }
        try Federation.setConfig(home: c, table: "eval", "data", "\"\(fashionMNIST)\"")
        try Federation.setConfig(home: c, table: "metrics", "textfile_dir", "\"\(dir.file("metrics"))\"")
        try Federation.setConfig(home: c, table: "remote", "url", "\"\(dir.file("stick"))\"")
        let (ok, fixed) = try Self.check(fed, c)
        #expect(ok == 0 && fixed.values.allSatisfy { $0["status"] as? String == "ok" }, "\(fixed)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("metrics")).isEmpty)
    }

    @Test("a regional collector's upstream: unreachable fails, a mounted one answers")
    func upstream() throws {
        let fed = try Self.federation()
        let region = fed.root + "/region"
        let fpr = try fed.keyring.generate("region-1")
        try fed.run([
            "init", "region", "--home", region, "--region-id", "region-1", "--key", fpr, "--collector-key",
            fed.collector + "/keys/collector.asc", "--model-id", "demo", "--arch", fed.arch, "-q",
        ])
        let stick = fed.root + "/stick"
        try FileManager.default.createDirectory(atPath: stick, withIntermediateDirectories: true)
        try Federation.setConfig(home: region, table: "remote", "url", "\"\(stick)\"")
        try Federation.setConfig(home: region, table: "remote", "upstream", "\"/nonexistent/root-stick\"")
        let (status, items) = try Self.check(fed, region)
        #expect(status == 1 && Self.status(items, "upstream") == "failed", "\(items)")
        #expect(Self.status(items, "remote") == "ok")
        try Federation.setConfig(home: region, table: "remote", "upstream", "\"\(stick)\"")
        #expect(Self.status(try Self.check(fed, region).1, "upstream") == "ok")
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// A throw-away GnuPG home with real keys made by the gpg CLI, in a short
/// temp directory; its agent is stopped when the value goes away.
public final class TestKeyring: @unchecked Sendable {
    public let dir = TempDir()
    public var home: String { dir.path + "/g" }

    public init() throws {
        try FileManager.default.createDirectory(
            atPath: home, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    deinit {
        _ = try? Subprocess.run("/usr/bin/gpgconf", ["--homedir", home, "--kill", "all"])
    }

    /// Runs gpg on this home in batch mode.
    @discardableResult
    public func gpg(_ args: [String], stdin: String? = nil) throws -> ProcessResult {
        let r = try Subprocess.run(
            "/usr/bin/gpg", ["--homedir", home, "--batch", "--no-tty", "--pinentry-mode", "loopback"] + args,
            stdin: stdin)
        if r.status != 0 {
            throw Subprocess.Failure(description: "gpg \(args.joined(separator: " ")) failed: \(r.err)")
        }
        return r
    }

    /// Generates an ed25519 signing key and returns its fingerprint.
    /// `expire` is gpg's expiry (`0` for never, `1d`, `seconds=N`, …);
    /// `fakedTime` (`20200101T000000`) makes the key as if created then.
    public func generate(
        _ name: String, passphrase: String = "", expire: String = "0", fakedTime: String? = nil
    ) throws -> String {
        var args = ["--passphrase", passphrase]
        if let fakedTime { args += ["--faked-system-time", fakedTime + "!", "--ignore-time-conflict"] }
        try gpg(args + ["--quick-gen-key", "\(name) <\(name)@fedbatch.test>", "ed25519", "sign", expire])
        return try fingerprint(of: name)
    }

    public func fingerprint(of name: String) throws -> String {
        let out = try gpg(["--with-colons", "--list-keys", "<\(name)@fedbatch.test>"]).out
        guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("fpr:") }) else {
            throw Subprocess.Failure(description: "no key for \(name)")
        }
        return String(line.split(separator: ":", omittingEmptySubsequences: false)[9])
    }

    /// Writes the armored public key of `fpr` to a file and returns its path.
    public func exportPublic(_ fpr: String, to name: String) throws -> String {
        let data = try gpg(["--armor", "--export", fpr]).stdout
        return try dir.write(name, data)
    }

    /// A binary detached signature made by the gpg CLI.
    public func detachSign(_ data: Data, as signers: [String], extra: [String] = []) throws -> Data {
        let input = try dir.write("to-sign-\(UUID().uuidString)", data)
        let output = input + ".sig"
        try gpg(extra + signers.flatMap { ["-u", $0] } + ["--detach-sign", "-o", output, input])
        return try Data(contentsOf: URL(fileURLWithPath: output))
    }

    /// Revokes a key in this keyring with the revocation certificate gpg
    /// stored when it was generated.
    public func revoke(_ fpr: String) throws {
        let cert = "\(home)/openpgp-revocs.d/\(fpr).rev"
        // gpg stores it with the armor line escaped by ":" against accidental use.
        let text = try String(contentsOfFile: cert, encoding: .utf8).replacingOccurrences(
            of: ":-----BEGIN", with: "-----BEGIN")
        let path = try dir.write("revoke-\(fpr).asc", Data(text.utf8))
        try gpg(["--import", path])
    }
}

/// A collector home and site homes on real keys, for end-to-end tests.
public final class Federation: @unchecked Sendable {
    public let keyring: TestKeyring
    public let collectorKey: String
    public let siteKeys: [String: String]
    public let arch: String
    /// Added to the environment of every command run (AWS credentials).
    public var environment: [String: String] = [:]
    public var root: String { keyring.dir.path }
    public var collector: String { root + "/collector" }
    public func site(_ id: String) -> String { root + "/\(id)" }

    /// Creates keys, a collector home (mlp:4-3-2) and pins every site.
    /// `weights`, when given, are generation 0's (otherwise drawn at random).
    public init(
        sites: [String] = ["site-1", "site-2"], arch: String = Samples.arch,
        weights: [(name: String, tensor: Tensor)]? = nil
    ) throws {
        keyring = try TestKeyring()
        self.arch = arch
        collectorKey = try keyring.generate("collector")
        var keys: [String: String] = [:]
        for s in sites { keys[s] = try keyring.generate(s) }
        siteKeys = keys
        // Built through the library; the CLI tests drive the same steps
        // through the binary where the commands themselves are under test.
        let home = try Home.createCollector(
            at: collector, modelID: "demo", arch: arch, signer: try signer(collectorKey),
            weights: weights, seed: weights == nil ? 1 : 0
        ).home
        // Tests write inbox files and merge at once, often one bundle at a
        // time; the settle time and the quorum are tested on their own.
        try setCollectorConfig("settle_seconds", "0")
        try setCollectorConfig("min_bundles", "1")
        for s in sites {
            let file = try keyring.exportPublic(keys[s]!, to: "\(s).asc")
            _ = try home.pinSiteKey(site: s, keyFile: file)
            _ = try Home.createSite(
                at: site(s), siteID: s, modelID: "demo", signer: try signer(keys[s]!),
                collectorKeyPath: collector + "/keys/collector.asc")
        }
    }

    /// Sets `key = value` in the collector's fedbatch.toml (a key fedbatch wrote).
    public func setCollectorConfig(_ key: String, _ value: String) throws {
        let path = collector + "/fedbatch.toml"
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(
            separator: "\n", omittingEmptySubsequences: false)
        let updated = lines.map { $0.hasPrefix("\(key) = ") ? "\(key) = \(value)" : String($0) }.joined(separator: "\n")
        try updated.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Sets `key = value` in table `[table]` of a home's fedbatch.toml,
    /// whether fedbatch wrote the key or left it commented out.
    public static func setConfig(home: String, table: String, _ key: String, _ value: String) throws {
        let path = home + "/fedbatch.toml"
        var lines = try String(contentsOfFile: path, encoding: .utf8).split(
            separator: "\n", omittingEmptySubsequences: false
        ).map(String.init)
        guard let start = lines.firstIndex(of: "[\(table)]") else {
            throw Subprocess.Failure(description: "no [\(table)] in \(path)")
        }
        var end = start + 1
        while end < lines.count, !lines[end].hasPrefix("[") { end += 1 }
        lines[(start + 1)..<end].removeAll { $0.hasPrefix("\(key) = ") || $0.hasPrefix("# \(key) = ") }
        lines.insert("\(key) = \(value)", at: start + 1)
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Runs fedbatch with this federation's GnuPG home; throws on failure.
    @discardableResult
    public func run(_ args: [String]) throws -> ProcessResult {
        let r = try fedbatch(args)
        if r.status != 0 {
            throw Subprocess.Failure(
                description: "fedbatch \(args.joined(separator: " ")) exited \(r.status): \(r.err)")
        }
        return r
    }

    /// Runs fedbatch with this federation's GnuPG home, whatever the outcome.
    public func fedbatch(_ args: [String]) throws -> ProcessResult {
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        env.removeValue(forKey: "FEDBATCH_HOME")
        env.merge(environment) { _, new in new }
        return try Subprocess.fedbatch(args, environment: env)
    }

    /// The collector's generation `n`: its number and digest.
    public func generation(_ n: Int) throws -> (number: Int, digest: String) {
        let file = try ContainerFile.split(
            try Data(contentsOf: URL(fileURLWithPath: collector + "/generations/" + HomeLayout.generationFileName(n))))
        return (n, file.digest.hex)
    }

    /// A signed update for `site` (signed with `signedBy`'s key, by default
    /// the site's own), written into the collector's inbox as `name`.
    @discardableResult
    public func update(
        site: String, seq: Int64, base: (number: Int, digest: String), examples: Int64 = 100, name: String? = nil,
        scale: Float = 0.01, tensors: [(name: String, tensor: Tensor)]? = nil, signedBy: String? = nil
    ) throws -> String {
        let manifest = Manifest(
            kind: .update, model: .init(id: "demo", arch: arch), created: "2026-01-0\(min(9, seq))T00:00:00Z",
            base: .init(number: base.number, digest: base.digest), site: .init(id: site, seq: seq),
            numExamples: examples)
        let t = try tensors ?? Samples.weights(arch: arch, scale: scale * Float(seq))
        let sealed = try signer(signedBy ?? siteKeys[site]!).seal(
            manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(t))])
        let path = collector + "/inbox/" + (name ?? "demo-g\(base.number)-\(site)-\(seq).fbu")
        try sealed.file.write(to: URL(fileURLWithPath: path))
        return path
    }

    /// A signer for one of the federation's keys.
    public func signer(_ fpr: String) throws -> PayloadSigner {
        try PayloadSigner(gnupgHome: keyring.home, fingerprint: fpr, passphraseFile: nil)
    }
}

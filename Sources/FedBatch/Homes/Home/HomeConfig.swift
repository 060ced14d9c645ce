import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation
import TOMLKit

/// The role a home plays.
public enum HomeRole: String, Sendable {
    /// A regional collector: merges its sites' bundles into a signed partial
    /// aggregate for the root collector, whose generations it follows.
    case collector, site, region
    /// A witness: it pins the collector's and the sites' keys, audits the
    /// collector's generations and co-signs those that re-derive
    /// (fedbatch-witness(1)).
    case witness

    /// The config key that holds the home's own id, if it has one.
    var idKey: String? {
        switch self {
        case .collector: return nil
        case .site: return "site_id"
        case .region: return "region_id"
        case .witness: return "witness_id"
        }
    }
}

/// Why a home or its config could not be used.
public enum HomeError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public var code: String { "home.error" }

    case notAHome(String)
    case alreadyAHome(String)
    case wrongRole(path: String, expected: HomeRole, actual: HomeRole)
    case config(path: String, reason: String)
    case noGeneration(String)
    case invalidName(what: String, value: String)

    public var description: String {
        switch self {
        case .notAHome(let p):
            return "\(p) is not a fedbatch home (no fedbatch.toml); create one with fedbatch init, or pass --home"
        case .alreadyAHome(let p): return "\(p) is already a fedbatch home; refusing to overwrite it"
        case let .wrongRole(p, expected, actual):
            return "\(p) is a \(actual.rawValue) home; this command needs a \(expected.rawValue) home"
        case let .config(p, reason): return "\(p): \(reason)"
        case .noGeneration(let p): return "no generation in \(p)"
        case let .invalidName(what, value): return ContainerPath.identifierRule(what, value)
        }
    }
}

/// Where the home's signing key lives: the `[gnupg]` table, so that a cron
/// line or a service unit needs no environment. Relative paths are taken
/// from the home directory. `--gnupg-home` and `--passphrase-file` override
/// these; `$GNUPGHOME` is used only when neither names a GnuPG home.
public struct GnuPGSettings: Sendable, Equatable {
    public var home: String?
    public var passphraseFile: String?
    public init() {}

    static let keys: Set<String> = ["home", "passphrase_file"]

    static func parse(_ value: TOMLValueConvertible, path: String, text: String) throws -> GnuPGSettings {
        let s = try ConfigSection(value, name: "gnupg", allowed: keys, path: path, text: text)
        var g = GnuPGSettings()
        g.home = try s.string("home", "a non-empty path") { !$0.isEmpty }
        g.passphraseFile = try s.string("passphrase_file", "a non-empty path") { !$0.isEmpty }
        return g
    }

    func render() -> [String] {
        [
            "", "# Where this home's signing key lives (default: $GNUPGHOME, else ~/.gnupg).", "[gnupg]",
            home.map { "home = \(StrictJSON.quote($0))" } ?? "# home = \"/var/lib/fedbatch/gnupg\"",
            passphraseFile.map { "passphrase_file = \(StrictJSON.quote($0))" }
                ?? "# passphrase_file = \"/etc/fedbatch/passphrase\"",
        ]
    }
}

/// `fedbatch.toml`. fedbatch writes it with comments; administrators may
/// edit it. Unknown keys are refused so that a typo does not silently fall
/// back to a default.
public struct HomeConfig: Sendable, Equatable {
    public var role: HomeRole
    public var modelID: String
    /// The architecture spec (collector homes).
    public var arch: String?
    /// The signing key's primary fingerprint.
    public var key: String
    /// The site id (site homes), or the regional collector's id (region
    /// homes, `region_id`): the name it signs partial aggregates as.
    public var siteID: String?
    /// Training defaults (site homes).
    public var training = TrainingDefaults()
    /// Merge settings (collector homes).
    public var merge = MergeSettings()
    /// The signing key's GnuPG home and passphrase file.
    public var gnupg = GnuPGSettings()
    /// Where to write Prometheus metrics.
    public var metrics = MetricsSettings()
    /// Held-out data for the collector's evaluation after each merge.
    public var eval = EvalSettings()
    /// How the home's CSV files are written.
    public var data = DataSettings()
    /// What a site releases as statistics (site homes).
    public var stats = StatsSettings()
    /// Central differential privacy for merges (collector homes); nil: none.
    public var privacy: PrivacySettings?
    /// Where push, pull and publish transfer files.
    public var remote = RemoteSettings()
    public var trust = TrustSettings()

    public init(role: HomeRole, modelID: String, arch: String? = nil, key: String, siteID: String? = nil) {
        self.role = role
        self.modelID = modelID
        self.arch = arch
        self.key = key
        self.siteID = siteID
    }

    static let allowedKeys: [HomeRole: Set<String>] = [
        .collector: [
            "role", "model_id", "arch", "key", "merge", "gnupg", "metrics", "eval", "privacy", "remote", "data",
            "trust",
        ],
        .site: [
            "role", "model_id", "site_id", "key", "training", "gnupg", "metrics", "remote", "data", "stats", "trust",
        ],
        .region: ["role", "model_id", "region_id", "arch", "key", "merge", "gnupg", "metrics", "remote", "trust"],
        .witness: ["role", "model_id", "witness_id", "arch", "key", "gnupg", "metrics", "remote", "trust"],
    ]

    public static func parse(_ text: String, path: String) throws -> HomeConfig {
        do {
            return try parseTables(text, path: path)
        } catch let e as ConfigError {
            throw ConfigError(path: e.path, reason: ConfigError.locate(e.reason, in: text))
        } catch HomeError.config(let p, let reason) {
            throw HomeError.config(path: p, reason: ConfigError.locate(reason, in: text))
        }
    }

    private static func parseTables(_ text: String, path: String) throws -> HomeConfig {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            throw HomeError.config(
                path: path, reason: "line \(e.source.begin.line), column \(e.source.begin.column): \(e.description)")
        } catch {
            throw HomeError.config(path: path, reason: "not valid TOML: \(error)")
        }
        func string(_ key: String, required: Bool = true) throws -> String? {
            guard let v = table[key] else {
                if required { throw HomeError.config(path: path, reason: "missing key \"\(key)\"") }
                return nil
            }
            guard let s = v.string else { throw HomeError.config(path: path, reason: "\"\(key)\" must be a string") }
            return s
        }
        guard let roleText = try string("role"), let role = HomeRole(rawValue: roleText) else {
            throw HomeError.config(
                path: path, reason: "role must be \"collector\", \"site\", \"region\" or \"witness\"")
        }
        try ConfigError.checkKeys(table.keys, allowed: allowedKeys[role]!, section: nil, path: path, text: text)
        var config = HomeConfig(
            role: role, modelID: try string("model_id")!,
            arch: try string("arch", required: role == .collector || role == .region),
            key: try string("key")!,
            siteID: try role.idKey.flatMap { try string($0) })
        // Each table is read by its feature's own settings type, beside
        // the feature; this function only assembles them.
        if let t = table["training"] {
            config.training = try TrainingDefaults.parse(
                try ConfigSection.table(t, name: "training", path: path), path: path, text: text)
        }
        if let t = table["merge"] {
            config.merge = try MergeSettings.parse(
                try ConfigSection.table(t, name: "merge", path: path), path: path, text: text)
        }
        if let t = table["gnupg"] { config.gnupg = try GnuPGSettings.parse(t, path: path, text: text) }
        if let t = table["metrics"] { config.metrics = try MetricsSettings.parse(t, path: path, text: text) }
        if let t = table["eval"] { config.eval = try EvalSettings.parse(t, path: path, text: text) }
        if let t = table["data"] { config.data = try DataSettings.parse(t, path: path, text: text) }
        if let t = table["stats"] { config.stats = try StatsSettings.parse(t, path: path, text: text) }
        if let t = table["privacy"] { config.privacy = try PrivacySettings.parse(t, path: path, text: text) }
        if let t = table["remote"] { config.remote = try RemoteSettings.parse(t, path: path, text: text) }
        if let t = table["trust"] { config.trust = try TrustSettings.parse(t, path: path, text: text) }
        try config.validate(path: path)
        return config
    }

    func validate(path: String) throws {
        guard ContainerPath.isIdentifier(modelID) else {
            throw HomeError.config(path: path, reason: ContainerPath.identifierRule("model_id", modelID))
        }
        if let siteID, !ContainerPath.isIdentifier(siteID) {
            throw HomeError.config(path: path, reason: ContainerPath.identifierRule("site_id", siteID))
        }
        if let arch {
            do { _ = try ModelArchitecture(spec: arch) } catch {
                throw HomeError.config(path: path, reason: "\(error)")
            }
        }
        guard key.count == 40, key.allSatisfy(\.isHexDigit) else {
            throw HomeError.config(path: path, reason: "key must be a 40-digit fingerprint")
        }
    }

    /// The file as fedbatch writes it.
    public func render() -> String {
        var lines = ["# fedbatch \(role.rawValue) home. See fedbatch(1).", "role = \(StrictJSON.quote(role.rawValue))"]
        if let siteID, let idKey = role.idKey { lines.append("\(idKey) = \(StrictJSON.quote(siteID))") }
        lines.append("model_id = \(StrictJSON.quote(modelID))")
        if let arch { lines.append("arch = \(StrictJSON.quote(arch))") }
        lines.append("# Fingerprint of the key this home signs with.")
        lines.append("key = \(StrictJSON.quote(key))")
        if role == .site { lines += training.render() }
        if role == .region {
            lines +=
                [
                    "",
                    "# A regional collector merges its sites' bundles into a partial aggregate for the root collector",
                    "# (fedbatch-merge(1), HIERARCHICAL MERGES). These settings must equal the root's: the root",
                    "# refuses a partial made with another weight_cap, clip_norm or staleness rule.",
                ] + merge.render(region: true)
        }
        if role == .collector {
            lines += merge.render() + eval.render()
            lines +=
                privacy?.render() ?? [
                    "",
                    "# Central differential privacy for every merge (fedbatch-merge(1), PRIVACY).",
                    "# Every key is required.",
                    "# [privacy]", "# noise_multiplier = 1.0", "# clip_norm = 1.0", "# expected_sites = 10",
                    "# delta = 1e-5", "# max_epsilon = 10.0",
                ]
        }
        if role == .site || role == .collector { lines += data.render() }
        if role == .site { lines += stats.render() }
        lines += trust.render()
        lines += gnupg.render() + metrics.render() + remote.render(withUpstream: role == .region)
        return lines.joined(separator: "\n") + "\n"
    }
}

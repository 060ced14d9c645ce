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

/// A site's default training settings, the `[training]` table of its
/// fedbatch.toml; command-line flags override them.
public struct TrainingDefaults: Sendable, Equatable {
    public var data: String?
    public var epochs = 1
    public var batchSize = 64
    public var learningRate = 0.05
    public var optimizer = OptimizerKind.sgd
    public var momentum = 0.9
    public var weightDecay = 0.0
    public var proxMu = 0.0
    public var seed: UInt64 = 0
    /// How updates are stored (fedbatch-bundle(5), CODECS).
    public var codec = TrainingDefaults.defaultCodec
    /// The share of each tensor the topk codec keeps.
    public var topkFraction = TopKCodec.defaultFraction
    public init() {}

    public static let defaultCodec = "int8"

    static let keys: Set<String> = [
        "data", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "prox_mu", "seed",
        "codec", "topk_fraction",
    ]

    func render() -> [String] {
        var lines = ["", "# Defaults for `fedbatch train`; its flags override them.", "[training]"]
        lines.append(
            data.map { "data = \(StrictJSON.quote($0))" }
                ?? "# data = \"/path/to/data\"   # IDX directory, .csv or .safetensors shard")
        lines += [
            "epochs = \(epochs)", "batch_size = \(batchSize)", "lr = \(learningRate)",
            "optimizer = \"\(optimizer.rawValue)\"",
            "momentum = \(momentum)", "weight_decay = \(weightDecay)", "prox_mu = \(proxMu)", "seed = \(seed)",
            "# How updates are stored: fp32, fp16, bf16, int8 or topk (fedbatch-bundle(5)).",
            "codec = \(StrictJSON.quote(codec))", "topk_fraction = \(topkFraction)",
        ]
        return lines
    }
}

/// A collector's merge settings: the `[merge]` table of its fedbatch.toml.
public struct MergeSettings: Sendable, Equatable {
    /// Fewer accepted bundles than this and nothing is written (exit 5),
    /// unless one has waited `maxWait` (FedBuff's buffer size K). Above 1
    /// so that a fresh collector does not turn each arriving bundle into a
    /// generation that makes everyone else's work stale.
    public var minBundles = 3
    /// Seconds since the oldest passing bundle arrived after which a merge
    /// writes a generation below quorum, so a late site's lone bundle waits
    /// at most this long.
    public var maxWait = 86_400.0
    /// How many generations old an update's base may be (s = current −
    /// base); older ones are quarantined as protocol.too-stale.
    public var maxStaleness = 4
    /// How a stale update is discounted: w(s), see `StalenessFunction`.
    public var staleness = StalenessFunction.Kind.polynomial
    public var stalenessA = 0.5
    public var stalenessB = 4.0
    /// When set, each update's delta is scaled down to at most this L2
    /// norm (over all its tensors together) before it is aggregated, so no
    /// single site can move the model further than that.
    public var clipNorm: Double?
    /// Bundles claiming more examples are rejected.
    public var maxExamples: Int64 = 100_000_000
    /// FedAvg weights are min(num_examples, weight_cap).
    public var weightCap: Int64 = 100_000_000
    /// The server learning rate η (nil: the strategy's default, as
    /// Flower's: 1 for fedavg and fedavgm, 0.1 for fedadam and fedadagrad,
    /// 0.01 for fedyogi).
    public var serverLearningRate: Double?
    /// Server optimiser parameters (nil: the strategy's defaults).
    public var momentum: Double?
    public var beta1: Double?
    public var beta2: Double?
    public var tau: Double?
    /// Robust rules: the fraction cut from each tail (trimmed-mean), the
    /// number f of Byzantine sites tolerated (krum, multikrum, bulyan), how
    /// many updates Multi-Krum averages (0: n − f), and the memory their
    /// chunked passes may use, in MiB.
    public var trim: Double?
    public var byzantine: Int?
    public var keep: Int?
    public var chunkMiB: Double?
    /// An inbox file changed less than this many seconds ago is still
    /// arriving (a plain `cp` or `scp` racing cron): it is left for the
    /// next run instead of being quarantined half-written.
    public var settleSeconds = 60.0
    /// The aggregation strategy (see `Strategies`).
    public var strategy = FedAvg.name
    /// Codecs whose bundles a merge takes; others are quarantined.
    public var acceptCodecs = Codecs.names.sorted()
    /// Root collector: the pinned senders (keys/sites/) that are regional
    /// collectors. Only they may send partial aggregates, and they may not
    /// send plain updates.
    public var regions: [String] = []
    public init() {}

    /// The parameters handed to the strategy.
    public var strategyParameters: [String: Double] {
        var p: [String: Double] = ["weight_cap": Double(weightCap)]
        p["server_lr"] = serverLearningRate
        p["momentum"] = momentum
        p["beta1"] = beta1
        p["beta2"] = beta2
        p["tau"] = tau
        p["trim"] = trim
        p["byzantine"] = byzantine.map(Double.init)
        p["keep"] = keep.map(Double.init)
        p["chunk_mb"] = chunkMiB
        return p
    }

    static let keys: Set<String> = [
        "strategy", "min_bundles", "max_examples", "weight_cap", "server_lr", "settle_seconds", "accept_codecs",
        "max_wait", "max_staleness", "staleness", "staleness_a", "staleness_b", "clip_norm",
        "momentum", "beta1", "beta2", "tau", "trim", "byzantine", "keep", "chunk_mb", "regions",
    ]

    /// The staleness weighting these settings describe.
    public var stalenessFunction: StalenessFunction { StalenessFunction(kind: staleness, a: stalenessA, b: stalenessB) }

    func render(region: Bool = false) -> [String] {
        [
            "", "# Settings for `fedbatch merge` (fedbatch-merge(1)).", "[merge]",
            "strategy = \(StrictJSON.quote(strategy))",
            "# Quorum: bundles that make a generation; below it, merge once the oldest has waited max_wait seconds.",
            "min_bundles = \(minBundles)", "max_wait = \(Int(maxWait))",
            "# Updates trained on a generation up to max_staleness older than the current one merge, weighted by",
            "# staleness = \"constant\" (1), \"polynomial\" ((1+s)^-a) or \"hinge\" (1 up to b, then 1/(a(s-b)+1)).",
            "max_staleness = \(maxStaleness)", "staleness = \(StrictJSON.quote(staleness.rawValue))",
            "staleness_a = \(stalenessA)", "staleness_b = \(stalenessB)",
            "# Clip each update's delta to this L2 norm (all tensors together) before aggregating.",
            clipNorm.map { "clip_norm = \($0)" } ?? "# clip_norm = 10.0",
            "max_examples = \(maxExamples)", "weight_cap = \(weightCap)",
            "# strategy: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, diloco, median, trimmed-mean,",
            "# krum, multikrum or bulyan (fedbatch-merge(1), STRATEGIES); their parameters default to",
            "# Flower's: server_lr, momentum (fedavgm, diloco), beta1, beta2, tau (the adaptive ones),",
            "# trim (trimmed-mean), byzantine and keep (krum, multikrum, bulyan).",
            serverLearningRate.map { "server_lr = \($0)" } ?? "# server_lr = 1.0",
            trim.map { "trim = \($0)" } ?? "# trim = 0.2", byzantine.map { "byzantine = \($0)" } ?? "# byzantine = 2",
            "# Memory for the robust rules' chunked passes over the bundles, in MiB.",
            chunkMiB.map { "chunk_mb = \($0)" } ?? "# chunk_mb = 64",
            "# Seconds an inbox file must be unchanged before a merge reads it.",
            "settle_seconds = \(Int(settleSeconds))",
            "# Codecs whose bundles a merge takes (fedbatch-bundle(5)); others are quarantined.",
            "accept_codecs = [\(acceptCodecs.map(StrictJSON.quote).joined(separator: ", "))]",
        ]
            + (region
                ? []
                : [
                    "# Hierarchical merges: the pinned senders that are regional collectors, whose partial aggregates",
                    "# this collector merges (fedbatch-merge(1), HIERARCHICAL MERGES).",
                    regions.isEmpty
                        ? "# regions = [\"eu\", \"us\"]"
                        : "regions = [\(regions.map(StrictJSON.quote).joined(separator: ", "))]",
                ])
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

    func render() -> [String] {
        [
            "", "# Where this home's signing key lives (default: $GNUPGHOME, else ~/.gnupg).", "[gnupg]",
            home.map { "home = \(StrictJSON.quote($0))" } ?? "# home = \"/var/lib/fedbatch/gnupg\"",
            passphraseFile.map { "passphrase_file = \(StrictJSON.quote($0))" }
                ?? "# passphrase_file = \"/etc/fedbatch/passphrase\"",
        ]
    }
}

/// Where `train` and `merge` leave their Prometheus metrics: the
/// `[metrics]` table. node_exporter's textfile collector reads the
/// directory (fedbatch-metrics(7)).
public struct MetricsSettings: Sendable, Equatable {
    public var textfileDir: String?
    public init() {}

    static let keys: Set<String> = ["textfile_dir"]

    func render() -> [String] {
        [
            "", "# A node_exporter textfile directory for train/merge metrics (fedbatch-metrics(7)).", "[metrics]",
            textfileDir.map { "textfile_dir = \(StrictJSON.quote($0))" }
                ?? "# textfile_dir = \"/var/lib/prometheus/node-exporter\"",
        ]
    }
}

/// The collector's own held-out data: the `[eval]` table. After each merge
/// the new generation is evaluated on it and the figures are recorded in
/// state.db, for `fedbatch report` and the metrics.
public struct EvalSettings: Sendable, Equatable {
    public var data: String?
    public var split = DataSplit.test
    public var labelColumn = "label"
    public init() {}

    static let keys: Set<String> = ["data", "split", "label"]

    func render() -> [String] {
        [
            "", "# Held-out data to evaluate each new generation on (fedbatch report).", "[eval]",
            data.map { "data = \(StrictJSON.quote($0))" } ?? "# data = \"/usr/share/datasets/fashion-mnist\"",
            "split = \(StrictJSON.quote(split.rawValue))",
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
    /// Central differential privacy for merges (collector homes); nil: none.
    public var privacy: PrivacySettings?
    /// Where push, pull and publish transfer files.
    public var remote = RemoteSettings()

    public init(role: HomeRole, modelID: String, arch: String? = nil, key: String, siteID: String? = nil) {
        self.role = role
        self.modelID = modelID
        self.arch = arch
        self.key = key
        self.siteID = siteID
    }

    static let allowedKeys: [HomeRole: Set<String>] = [
        .collector: ["role", "model_id", "arch", "key", "merge", "gnupg", "metrics", "eval", "privacy", "remote"],
        .site: ["role", "model_id", "site_id", "key", "training", "gnupg", "metrics", "remote"],
        .region: ["role", "model_id", "region_id", "arch", "key", "merge", "gnupg", "metrics", "remote"],
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
            throw HomeError.config(path: path, reason: "role must be \"collector\", \"site\" or \"region\"")
        }
        try ConfigError.checkKeys(table.keys, allowed: allowedKeys[role]!, section: nil, path: path, text: text)
        var config = HomeConfig(
            role: role, modelID: try string("model_id")!,
            arch: try string("arch", required: role != .site),
            key: try string("key")!,
            siteID: role == .region ? try string("region_id") : try string("site_id", required: role == .site))
        if let t = table["training"] {
            guard let training = t.table else {
                throw HomeError.config(path: path, reason: "[training] must be a table")
            }
            config.training = try parseTraining(training, path: path, text: text)
        }
        if let t = table["merge"] {
            guard let merge = t.table else { throw HomeError.config(path: path, reason: "[merge] must be a table") }
            config.merge = try parseMerge(merge, path: path, text: text)
        }
        if let t = table["gnupg"] {
            guard let g = t.table else { throw HomeError.config(path: path, reason: "[gnupg] must be a table") }
            try ConfigError.checkKeys(g.keys, allowed: GnuPGSettings.keys, section: "gnupg", path: path, text: text)
            for k in GnuPGSettings.keys.sorted() {
                guard let v = g[k] else { continue }
                guard let s = v.string, !s.isEmpty else {
                    throw HomeError.config(path: path, reason: "gnupg.\(k) must be a non-empty path")
                }
                if k == "home" { config.gnupg.home = s } else { config.gnupg.passphraseFile = s }
            }
        }
        if let t = table["metrics"] {
            guard let m = t.table else { throw HomeError.config(path: path, reason: "[metrics] must be a table") }
            try ConfigError.checkKeys(m.keys, allowed: MetricsSettings.keys, section: "metrics", path: path, text: text)
            if let v = m["textfile_dir"] {
                guard let s = v.string, !s.isEmpty else {
                    throw HomeError.config(path: path, reason: "metrics.textfile_dir must be a non-empty path")
                }
                config.metrics.textfileDir = s
            }
        }
        if let t = table["eval"] {
            guard let e = t.table else { throw HomeError.config(path: path, reason: "[eval] must be a table") }
            try ConfigError.checkKeys(e.keys, allowed: EvalSettings.keys, section: "eval", path: path, text: text)
            if let v = e["data"] {
                guard let s = v.string, !s.isEmpty else {
                    throw HomeError.config(path: path, reason: "eval.data must be a non-empty path")
                }
                config.eval.data = s
            }
            if let v = e["split"] {
                guard let s = v.string, let split = DataSplit(rawValue: s) else {
                    throw HomeError.config(path: path, reason: "eval.split must be \"train\" or \"test\"")
                }
                config.eval.split = split
            }
            if let v = e["label"] {
                guard let s = v.string, !s.isEmpty else {
                    throw HomeError.config(path: path, reason: "eval.label must be a column name")
                }
                config.eval.labelColumn = s
            }
        }
        if let t = table["privacy"] { config.privacy = try PrivacySettings.parse(t, path: path, text: text) }
        if let t = table["remote"] { config.remote = try RemoteSettings.parse(t, path: path, text: text) }
        try config.validate(path: path)
        return config
    }

    private static func parseMerge(_ t: TOMLTable, path: String, text: String) throws -> MergeSettings {
        var m = MergeSettings()
        try ConfigError.checkKeys(t.keys, allowed: MergeSettings.keys, section: "merge", path: path, text: text)
        func positive(_ k: String) throws -> Int? {
            guard let v = t[k] else { return nil }
            guard let i = v.int, i > 0 else {
                throw HomeError.config(path: path, reason: "merge.\(k) must be a positive integer")
            }
            return i
        }
        if let v = try positive("min_bundles") { m.minBundles = v }
        if let v = t["max_wait"] {
            guard let d = v.double ?? v.int.map(Double.init), d >= 0, d.isFinite else {
                throw HomeError.config(path: path, reason: "merge.max_wait must be a number of seconds, 0 or more")
            }
            m.maxWait = d
        }
        if let v = t["clip_norm"] {
            guard let d = v.double ?? v.int.map(Double.init), d > 0, d.isFinite else {
                throw HomeError.config(path: path, reason: "merge.clip_norm must be a positive number")
            }
            m.clipNorm = d
        }
        if let v = t["max_staleness"] {
            guard let i = v.int, i >= 0, i <= 1000 else {
                throw HomeError.config(path: path, reason: "merge.max_staleness must be an integer from 0 to 1000")
            }
            m.maxStaleness = i
        }
        if let v = t["staleness"] {
            guard let s = v.string, let kind = StalenessFunction.Kind(rawValue: s) else {
                throw HomeError.config(
                    path: path, reason: "merge.staleness must be \"constant\", \"polynomial\" or \"hinge\"")
            }
            m.staleness = kind
        }
        for (key, keyPath) in [("staleness_a", \MergeSettings.stalenessA), ("staleness_b", \MergeSettings.stalenessB)] {
            guard let v = t[key] else { continue }
            guard let d = v.double ?? v.int.map(Double.init), d >= 0, d <= 1000 else {
                throw HomeError.config(path: path, reason: "merge.\(key) must be a number from 0 to 1000")
            }
            m[keyPath: keyPath] = d
        }
        if let v = try positive("max_examples") { m.maxExamples = Int64(v) }
        if let v = try positive("weight_cap") { m.weightCap = Int64(v) }
        if let v = t["server_lr"] {
            guard let d = v.double ?? v.int.map(Double.init), d > 0, d <= 1000 else {
                throw HomeError.config(path: path, reason: "merge.server_lr must be a number in (0, 1000]")
            }
            m.serverLearningRate = d
        }
        for (key, keyPath, range) in [
            ("momentum", \MergeSettings.momentum, 0.0..<1.0), ("beta1", \MergeSettings.beta1, 0.0..<1.0),
            ("beta2", \MergeSettings.beta2, 0.0..<1.0), ("tau", \MergeSettings.tau, 0.0..<1.0),
        ] {
            guard let v = t[key] else { continue }
            guard let d = v.double ?? v.int.map(Double.init), range.contains(d) else {
                throw HomeError.config(path: path, reason: "merge.\(key) must be a number in [0, 1)")
            }
            m[keyPath: keyPath] = d
        }
        if let v = t["trim"] {
            guard let d = v.double ?? v.int.map(Double.init), d >= 0, d < 0.5 else {
                throw HomeError.config(path: path, reason: "merge.trim must be a number in [0, 0.5)")
            }
            m.trim = d
        }
        for (key, keyPath) in [("byzantine", \MergeSettings.byzantine), ("keep", \MergeSettings.keep)] {
            guard let v = t[key] else { continue }
            guard let i = v.int, i >= 0, i <= 100_000 else {
                throw HomeError.config(path: path, reason: "merge.\(key) must be an integer from 0 to 100000")
            }
            m[keyPath: keyPath] = i
        }
        if let v = t["chunk_mb"] {
            guard let d = v.double ?? v.int.map(Double.init), d > 0, d <= 1_048_576 else {
                throw HomeError.config(path: path, reason: "merge.chunk_mb must be a number of MiB in (0, 1048576]")
            }
            m.chunkMiB = d
        }
        if let v = t["strategy"] {
            guard let name = v.string, Strategies.names.contains(name) else {
                throw HomeError.config(
                    path: path,
                    reason:
                        "merge.strategy must be one of \(Strategies.names.map { "\"\($0)\"" }.joined(separator: ", "))")
            }
            m.strategy = name
        }
        if let v = t["accept_codecs"] {
            guard let list = v.array, !list.isEmpty else {
                throw HomeError.config(
                    path: path, reason: "merge.accept_codecs must be a non-empty list of codec names")
            }
            m.acceptCodecs = try list.map { item in
                guard let s = item.string, Codecs.names.contains(s) else {
                    throw HomeError.config(
                        path: path,
                        reason:
                            "merge.accept_codecs: each must be one "
                            + "of \(Codecs.names.sorted().map { "\"\($0)\"" }.joined(separator: ", "))"
                    )
                }
                return s
            }
        }
        if let v = t["regions"] {
            guard let list = v.array else {
                throw HomeError.config(path: path, reason: "merge.regions must be a list of regional collector ids")
            }
            m.regions = try list.map { item in
                guard let s = item.string, ContainerPath.isIdentifier(s) else {
                    throw HomeError.config(
                        path: path,
                        reason:
                            "merge.regions: each must be a regional collector id "
                            + "(\(ContainerPath.identifierRule("id", item.string ?? "?")))"
                    )
                }
                return s
            }
        }
        if let v = t["settle_seconds"] {
            guard let d = v.double ?? v.int.map(Double.init), d >= 0, d <= 86_400 else {
                throw HomeError.config(
                    path: path, reason: "merge.settle_seconds must be a number of seconds from 0 to 86400")
            }
            m.settleSeconds = d
        }
        return m
    }

    private static func parseTraining(_ t: TOMLTable, path: String, text: String) throws -> TrainingDefaults {
        var d = TrainingDefaults()
        try ConfigError.checkKeys(t.keys, allowed: TrainingDefaults.keys, section: "training", path: path, text: text)
        func bad(_ k: String, _ what: String) -> HomeError {
            HomeError.config(path: path, reason: "training.\(k) must be \(what)")
        }
        func number(_ k: String) throws -> Double? {
            guard let v = t[k] else { return nil }
            if let i = v.int { return Double(i) }
            if let f = v.double { return f }
            throw bad(k, "a number")
        }
        func positive(_ k: String) throws -> Int? {
            guard let v = t[k] else { return nil }
            guard let i = v.int, i > 0 else { throw bad(k, "a positive integer") }
            return i
        }
        if let v = t["data"] { guard let s = v.string else { throw bad("data", "a string") }; d.data = s }
        if let v = try positive("epochs") { d.epochs = v }
        if let v = try positive("batch_size") { d.batchSize = v }
        if let v = try number("lr") { guard v > 0, v.isFinite else { throw bad("lr", "positive") }; d.learningRate = v }
        if let v = t["optimizer"] {
            guard let s = v.string, let o = OptimizerKind(rawValue: s) else {
                throw bad("optimizer", "\"sgd\" or \"adam\"")
            }
            d.optimizer = o
        }
        if let v = try number("momentum") {
            guard (0..<1).contains(v) else { throw bad("momentum", "in [0, 1)") }; d.momentum = v
        }
        if let v = try number("weight_decay") {
            guard v >= 0 else { throw bad("weight_decay", "non-negative") }; d.weightDecay = v
        }
        if let v = t["codec"] {
            guard let s = v.string, Codecs.names.contains(s) else {
                throw bad("codec", "one of \(Codecs.names.sorted().map { "\"\($0)\"" }.joined(separator: ", "))")
            }
            d.codec = s
        }
        if let v = try number("topk_fraction") {
            guard v > 0, v <= 1 else { throw bad("topk_fraction", "in (0, 1]") }; d.topkFraction = v
        }
        if let v = try number("prox_mu") { guard v >= 0 else { throw bad("prox_mu", "non-negative") }; d.proxMu = v }
        if let v = t["seed"] {
            guard let i = v.int, i >= 0 else { throw bad("seed", "a non-negative integer") }; d.seed = UInt64(i)
        }
        return d
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
        if let siteID { lines.append("\(role == .region ? "region_id" : "site_id") = \(StrictJSON.quote(siteID))") }
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
        lines += gnupg.render() + metrics.render() + remote.render(withUpstream: role == .region)
        return lines.joined(separator: "\n") + "\n"
    }
}

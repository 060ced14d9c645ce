import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation
import TOMLKit

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
    /// What a generation adds besides the inbox's updates: nothing
    /// (`none`), or for every pinned site that sent nothing new its most
    /// recent accepted update (`mifa`: Gu et al., NeurIPS 2021), read back
    /// from accepted/, within `memoryWindow` generations.
    public var memory = MemoryRule.none
    /// How stale a remembered update may be (nil: `maxStaleness`).
    public var memoryWindow: Int?
    /// Whether FedAvg and the server optimisers merge a chunk of the model
    /// at a time, with the bundles, the base and the output on disk
    /// (fedbatch-merge(1), STREAMING): `auto` does for models above
    /// `StreamMode.autoParameters`.
    public var stream = StreamMode.auto
    public init() {}

    /// The window a remembered update must be within.
    public var effectiveMemoryWindow: Int { memoryWindow ?? maxStaleness }

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
        "momentum", "beta1", "beta2", "tau", "trim", "byzantine", "keep", "chunk_mb", "regions", "memory",
        "memory_window", "stream",
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
            "# Memory for the robust rules' chunked passes over the bundles, and a streaming merge's chunk, in MiB.",
            chunkMiB.map { "chunk_mb = \($0)" } ?? "# chunk_mb = 64",
            "# A model larger than 16M parameters merges a chunk at a time, its bundles, base and output on disk",
            "# (\"auto\"); \"always\" and \"never\" force it either way (fedbatch-merge(1), STREAMING).",
            "stream = \(StrictJSON.quote(stream.rawValue))",
            "# Seconds an inbox file must be unchanged before a merge reads it.",
            "settle_seconds = \(Int(settleSeconds))",
            "# Codecs whose bundles a merge takes (fedbatch-bundle(5)); others are quarantined.",
            "accept_codecs = [\(acceptCodecs.map(StrictJSON.quote).joined(separator: ", "))]",
        ]
            + (region
                ? []
                : [
                    "# memory = \"mifa\": each generation also adds, for every pinned site that sent nothing new, its",
                    "# latest accepted update within memory_window generations (default: max_staleness); see",
                    "# fedbatch-merge(1), MEMORY.",
                    "memory = \(StrictJSON.quote(memory.rawValue))",
                    memoryWindow.map { "memory_window = \($0)" } ?? "# memory_window = 8",
                    "# Hierarchical merges: the pinned senders that are regional collectors, whose partial aggregates",
                    "# this collector merges (fedbatch-merge(1), HIERARCHICAL MERGES).",
                    regions.isEmpty
                        ? "# regions = [\"eu\", \"us\"]"
                        : "regions = [\(regions.map(StrictJSON.quote).joined(separator: ", "))]",
                ])
    }
}

/// When a merge streams (`[merge] stream`).
public enum StreamMode: String, Sendable, CaseIterable {
    case auto, always, never
    /// Above this many parameters `auto` streams: a merge in memory holds
    /// about 28 bytes a parameter (exact sums, base, output) plus three
    /// bundles in flight, 0.5 GB here.
    public static let autoParameters = 1 << 24
}

/// What a merge remembers of the sites that sent nothing new.
public enum MemoryRule: String, Sendable, CaseIterable {
    case none, mifa
}

extension MergeSettings {
    /// Reads `[merge]`, refusing unknown keys and values out of range.
    static func parse(_ t: TOMLTable, path: String, text: String) throws -> MergeSettings {
        var m = MergeSettings()
        let s = try ConfigSection(t, name: "merge", allowed: MergeSettings.keys, path: path, text: text)
        let positive = "a positive integer"
        m.minBundles = try s.int("min_bundles", positive) { $0 > 0 } ?? m.minBundles
        m.maxWait = try s.number("max_wait", "a number of seconds, 0 or more") { $0 >= 0 } ?? m.maxWait
        m.clipNorm = try s.number("clip_norm", "a positive number") { $0 > 0 } ?? m.clipNorm
        m.maxStaleness =
            try s.int("max_staleness", "an integer from 0 to 1000") { (0...1000).contains($0) } ?? m.maxStaleness
        m.staleness = try s.choice("staleness", "\"constant\", \"polynomial\" or \"hinge\"") ?? m.staleness
        for (key, keyPath) in [("staleness_a", \MergeSettings.stalenessA), ("staleness_b", \MergeSettings.stalenessB)] {
            m[keyPath: keyPath] =
                try s.number(key, "a number from 0 to 1000") { (0...1000).contains($0) } ?? m[keyPath: keyPath]
        }
        m.maxExamples = try s.int("max_examples", positive) { $0 > 0 }.map(Int64.init) ?? m.maxExamples
        m.weightCap = try s.int("weight_cap", positive) { $0 > 0 }.map(Int64.init) ?? m.weightCap
        m.serverLearningRate =
            try s.number("server_lr", "a number in (0, 1000]") { $0 > 0 && $0 <= 1000 } ?? m.serverLearningRate
        for (key, keyPath) in [
            ("momentum", \MergeSettings.momentum), ("beta1", \MergeSettings.beta1), ("beta2", \MergeSettings.beta2),
            ("tau", \MergeSettings.tau),
        ] {
            m[keyPath: keyPath] = try s.number(key, "a number in [0, 1)") { $0 >= 0 && $0 < 1 } ?? m[keyPath: keyPath]
        }
        m.trim = try s.number("trim", "a number in [0, 0.5)") { $0 >= 0 && $0 < 0.5 } ?? m.trim
        for (key, keyPath) in [("byzantine", \MergeSettings.byzantine), ("keep", \MergeSettings.keep)] {
            m[keyPath: keyPath] =
                try s.int(key, "an integer from 0 to 100000") { (0...100_000).contains($0) } ?? m[keyPath: keyPath]
        }
        m.chunkMiB =
            try s.number("chunk_mb", "a number of MiB in (0, 1048576]") { $0 > 0 && $0 <= 1_048_576 } ?? m.chunkMiB
        let strategies = Strategies.names.map { "\"\($0)\"" }.joined(separator: ", ")
        m.strategy =
            try s.string("strategy", "one of \(strategies)") { Strategies.names.contains($0) } ?? m.strategy
        let codecs = Codecs.names.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
        m.acceptCodecs =
            try s.strings(
                "accept_codecs", list: "a non-empty list of codec names", each: { _ in "one of \(codecs)" },
                nonEmpty: true, where: Codecs.names.contains) ?? m.acceptCodecs
        m.regions =
            try s.strings(
                "regions", list: "a list of regional collector ids",
                each: { "a regional collector id (\(ContainerPath.identifierRule("id", $0 ?? "?")))" },
                where: ContainerPath.isIdentifier) ?? m.regions
        m.memory = try s.choice("memory", "\"none\" or \"mifa\"") ?? m.memory
        m.stream = try s.choice("stream", "\"auto\", \"always\" or \"never\"") ?? m.stream
        m.memoryWindow =
            try s.int("memory_window", "an integer from 0 to 1000") { (0...1000).contains($0) } ?? m.memoryWindow
        m.settleSeconds =
            try s.number("settle_seconds", "a number of seconds from 0 to 86400") { (0...86_400).contains($0) }
            ?? m.settleSeconds
        return m
    }
}

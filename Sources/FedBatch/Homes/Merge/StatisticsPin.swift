import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What `fedbatch stats` on a collector found, and what `--pin` wrote.
public struct StatisticsReport: Sendable, Codable {
    /// Whether a generation was written.
    public let pinned: Bool
    /// The generation `--pin` wrote, its file and digest.
    public let generation: Int?
    public let file: String?
    public let digest: String?
    /// The statistics bundles combined, in digest order (the order of the
    /// combination).
    public let sites: [Manifest.IncludedStatistics]
    /// Their combination; nil when none passed.
    public let combined: DataStatistics?
    /// The normalisation the combination gives each feature, in the
    /// schema's order.
    public let features: [String]
    public let mean: [Double]?
    public let std: [Double]?
    public let rejected: [MergeReport.Rejection]
    public let waiting: [MergeReport.Waiting]
    /// Updates in the inbox when a pin was written: trained under the old
    /// normalisation, they will still be merged (fedbatch-stats(1)).
    public let updatesWaiting: Int
}

extension Collector {
    /// `fedbatch stats` on a collector: the statistics bundles in the inbox
    /// go through the merge's intake and protocol (refusals are quarantined
    /// with their reasons, as a merge files them), and those that pass are
    /// combined in digest order (`DataStatistics.combined`). With `pin`, the
    /// next generation is written with the current weights, the current
    /// optimiser state, and a schema whose mean and standard deviation come
    /// from the combination; its manifest lists the bundles under
    /// `statistics` and it carries the combination as `statistics.json`, so
    /// anyone holding the bundles can recompute it. The bundles then move to
    /// accepted/. Other inbox entries are left for the merge.
    public func statistics(pin: Bool, settleSeconds: Double? = nil, now: Date = Date()) throws -> StatisticsReport {
        guard home.config.role == .collector else {
            throw HomeError.wrongRole(path: home.layout.root, expected: .collector, actual: home.config.role)
        }
        let lock = try home.lock()
        defer { withExtendedLifetime(lock) {} }
        Filing.removeCrashLeftovers(home.layout)
        let verifier = try home.verifier()
        let (current, weights, ledger) = try prepareToWrite(verifier: verifier)
        guard let schema = try current.tabularSchema() else { throw StatisticsError.noSchema }
        let strategy = try Strategies.make(name: "fedavg", parameters: [:], arch: weights.arch)
        var round = try makeRound(
            current: current, base: .memory(weights), ledger: ledger, strategy: strategy, release: nil, root: true)
        var outcomes = MergeOutcomes()
        let intake = Intake(home: home, arch: weights.arch, decryption: signer.decryption)
        let identified = try identifyInbox(
            intake, settle: settleSeconds ?? home.config.merge.settleSeconds, ledger: ledger, now: now,
            outcomes: &outcomes)
        let updatesWaiting = identified.filter { $0.kind != .stats }.count
        try open(
            identified.filter { $0.kind == .stats }, with: intake, into: &round, verifier: verifier, ledger: ledger,
            now: now, outcomes: &outcomes, progress: { _ in })
        let taken = round.statistics
        let combined = try Self.combine(taken.map(\.figures))
        let normalisation = try combined.map { try $0.normalisation(for: schema) }
        func report(generation: Int? = nil, file: String? = nil, digest: String? = nil) -> StatisticsReport {
            StatisticsReport(
                pinned: generation != nil, generation: generation, file: file, digest: digest,
                sites: taken.map(\.included), combined: combined, features: schema.features,
                mean: normalisation?.mean, std: normalisation?.std, rejected: outcomes.rejected,
                waiting: outcomes.waiting, updatesWaiting: generation != nil ? updatesWaiting : 0)
        }
        guard pin else { return report() }
        guard let combined else { throw StatisticsPinError.none(refused: outcomes.rejected.count) }
        let pinned = try Self.pinnedGeneration(
            current: current, schema: schema, taken: taken.map { ($0.included, $0.created) }, combined: combined,
            rejected: try ledger.pendingRejections().map { .init(digest: $0.id, reason: $0.reason) })
        let (path, digest, _) = try write(
            pinned.manifest, weights: weights, inputs: taken.map { ($0.file, $0.included.digest) }, ledger: ledger,
            carrying: current, members: pinned.members, schema: pinned.schema)
        let number = current.manifest.generation!
        return report(generation: number + 1, file: path, digest: digest)
    }
}

extension Collector {
    /// The combination of statistics taken in digest order (Chan's
    /// pairwise update); nil for none.
    static func combine(_ figures: [DataStatistics]) throws -> DataStatistics? {
        var combined = figures.first
        for f in figures.dropFirst() { combined = try combined!.combined(with: f) }
        return combined
    }

    /// The generation a pin writes on `current` from the statistics
    /// `taken` (in digest order) and their combination: its manifest
    /// (members not yet listed), the members beside the weights, and the
    /// new schema. An audit re-derives a pin through this same function.
    static func pinnedGeneration(
        current: VerifiedContainer, schema: TabularSchema,
        taken: [(included: Manifest.IncludedStatistics, created: String)], combined: DataStatistics,
        rejected: [Manifest.RejectedBundle]
    ) throws -> (manifest: Manifest, members: [(name: String, data: Data)], schema: Data) {
        let normalisation = try combined.normalisation(for: schema)
        let pinned = try TabularSchema(
            features: schema.features, label: schema.label, mean: normalisation.mean, std: normalisation.std,
            labels: schema.labels, drop: schema.drop, missing: schema.missing, categories: schema.categories,
            unknownCategory: schema.unknownCategory)
        let number = current.manifest.generation!
        var manifest = Manifest(
            kind: .generation, model: current.manifest.model,
            // As a merge's: the newest input's time, so that two collectors
            // given the same bundles write the same bytes.
            created: taken.map(\.created).max()!,
            generation: number + 1, parent: .init(number: number, digest: current.digest.hex),
            included: [], rejected: rejected,
            strategy: .init(
                name: "stats-pin",
                parameters: ["sites": Double(taken.count), "rows": Double(combined.rows)]))
        manifest.statistics = taken.map(\.included)
        manifest.metrics = ["bundles": 0, "examples": 0]
        // No noise is drawn, no privacy spent: the record carries forward.
        manifest.privacy = current.manifest.privacy.map {
            var p = $0
            p.noise = nil
            return p
        }
        // The weights do not change, so neither does a server optimiser's state.
        let state = current.container.members[ServerOptimizer.stateMember].map {
            [(name: ServerOptimizer.stateMember, data: $0)]
        }
        return (manifest, (state ?? []) + [(ContainerPath.statistics, combined.encoded)], pinned.encoded)
    }
}

/// Why `stats --pin` wrote nothing.
public enum StatisticsPinError: Error, Equatable, Sendable, ReasonCoded {
    case none(refused: Int)

    public var code: String { "stats.none" }

    public var description: String {
        switch self {
        case .none(let refused):
            return
                "no statistics bundle in the inbox passed"
                + (refused > 0 ? " (\(refused) refused; run fedbatch stats --json for the reasons)" : "")
                + ": sites send them with fedbatch stats and push; nothing was pinned"
        }
    }
}

import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What one `fedbatch stats` at a site computed, and where it went.
public struct WrittenStatistics: Sendable {
    /// The bundle in outbox/, or nil for a dry run.
    public let path: String?
    public let digest: String?
    public let site: String
    public let seq: Int64?
    public let baseGeneration: Int
    public let statistics: DataStatistics
    /// The schema's features, in order.
    public let features: [String]
}

extension Site {
    /// One `fedbatch stats` at a site: under the home's lock, the newest
    /// generation's schema (verified as train verifies it), the statistics
    /// of `[training] data` under it (`DataStatistics.summarise`, with
    /// `[stats] min_count`), and a signed statistics bundle in outbox/ that
    /// push sends like an update. Unless `force`, a second one on the same
    /// generation is refused, as the collector takes one per site and run.
    /// With `dryRun`, nothing is written and no sequence number is used:
    /// what the site would release, for its own review.
    public func writeStatistics(
        data: String? = nil, drop: [String] = [], force: Bool = false, dryRun: Bool = false, now: Date = Date()
    ) throws -> WrittenStatistics {
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        guard let dataPath = data ?? home.config.training.data else {
            throw SiteUsageError(
                description: "give --data, or set data in the [training] table of \(home.layout.config)")
        }
        let (base, _) = try baseGeneration()
        guard let schema = try base.tabularSchema() else { throw StatisticsError.noSchema }
        let number = base.manifest.generation!
        let site = home.config.siteID!
        if !force, !dryRun, let sent = try state.writtenUpdate(base: number, kind: .stats) {
            throw SiteError.alreadySentStatistics(generation: number, seq: sent.seq, file: sent.file)
        }
        let figures = try DataStatistics.summarise(
            csv: dataPath, schema: schema, drop: drop, delimiter: home.config.data.delimiter,
            minCount: home.config.stats.minCount)
        guard !dryRun else {
            return WrittenStatistics(
                path: nil, digest: nil, site: site, seq: nil, baseGeneration: number, statistics: figures,
                features: schema.features)
        }
        let state = try self.state
        let seq = try state.reserveSequence(
            base: number, file: "\(home.layout.outbox)/.pending", numExamples: figures.rows, kind: .stats, now: now)
        let m = base.manifest
        let manifest = Manifest(
            kind: .stats, model: m.model, created: rfc3339(now), codec: Manifest.noTensorsCodec,
            base: .init(number: number, digest: base.digest.hex), site: .init(id: site, seq: seq),
            numExamples: figures.rows)
        let sealed = try signer.sealInParts(
            manifest: manifest, members: [(ContainerPath.statistics, figures.encoded)])
        let name = HomeLayout.statisticsFileName(model: m.model.id, base: number, site: site, seq: seq)
        let path = "\(home.layout.outbox)/\(name)"
        try writeFileAtomically(parts: sealed.parts, to: path)
        try state.markWritten(
            seq: seq, file: path, digest: sealed.digest.hex, bytes: Int64(sealed.parts.reduce(0) { $0 + $1.count }))
        return WrittenStatistics(
            path: path, digest: sealed.digest.hex, site: site, seq: seq, baseGeneration: number, statistics: figures,
            features: schema.features)
    }
}

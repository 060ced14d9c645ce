import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What `fedbatch report` draws, read from a collector home: state.db (the
/// generations, the bundles they included, refusals, the collector's own
/// evaluations) and the sizes of the files in accepted/. Read-only and
/// lock-free, like `fedbatch status`.
public struct ReportData: Sendable {
    public struct Generation: Sendable {
        public let number: Int
        public let digest: String
        public let created: String
        public let accepted: Int
        public let rejected: Int
        public let examples: Int64
    }

    public struct BundleSize: Sendable {
        public let generation: Int
        public let site: String
        public let bytes: Int64
    }

    public let modelID: String
    public let arch: String
    public let generations: [Generation]
    public let evaluations: [Ledger.EvaluationRow]
    /// Each site's evaluations of the generations it started from, as its
    /// bundles carried them (what the sites claim).
    public let siteEvaluations: [Ledger.SiteEvaluationRow]
    /// Every pinned or contributing site, sorted.
    public let sites: [String]
    /// (generation, site) pairs: the site had a bundle in that generation.
    public let participation: [(generation: Int, site: String)]
    public let rejections: [(reason: String, count: Int)]
    /// Included bundles whose file is still in accepted/.
    public let bundleSizes: [BundleSize]
    /// Included bundles whose file is gone (pruned or moved), so no size.
    public let bundlesWithoutSize: Int
    /// How stale each included bundle was (generations behind), by generation.
    public let staleness: [(generation: Int, staleness: Int)]
}

extension ReportData {
    /// What `fedbatch report` draws for a collector home, from its state.db
    /// and pinned keys.
    public static func of(_ home: Home) throws -> ReportData {
        let layout = home.layout
        let path = layout.stateDatabase
        guard FileManager.default.fileExists(atPath: path) else {
            throw HomeError.config(
                path: path, reason: "no state.db yet: run fedbatch merge once before asking for a report")
        }
        let ledger = try Ledger(path: path)
        let generations = try ledger.generations().map {
            ReportData.Generation(
                number: $0.number, digest: $0.digest, created: $0.created, accepted: $0.accepted,
                rejected: $0.rejected, examples: $0.examples)
        }
        let participation = try ledger.participation()
        let pinned = try TrustSet.load(keysDirectory: layout.keys).keys.compactMap { key -> String? in
            if case .site(let s) = key.role { return s } else { return nil }
        }
        var sizes: [ReportData.BundleSize] = []
        var missing = 0
        for b in try ledger.storedBundles() {
            if let name = b.stored, let size = fileSize("\(layout.accepted)/\(name)") {
                sizes.append(.init(generation: b.generation, site: b.site, bytes: size))
            } else {
                missing += 1
            }
        }
        return ReportData(
            modelID: home.config.modelID, arch: home.config.arch ?? "", generations: generations,
            evaluations: try ledger.evaluations(), siteEvaluations: try ledger.siteEvaluations(),
            sites: Set(pinned).union(participation.map(\.site)).sorted(), participation: participation,
            rejections: try ledger.totals().rejected.map { ($0.key, $0.value) }.sorted {
                ($0.count, $1.reason) > ($1.count, $0.reason)
            },
            bundleSizes: sizes, bundlesWithoutSize: missing, staleness: try ledger.stalenessByGeneration())
    }
}

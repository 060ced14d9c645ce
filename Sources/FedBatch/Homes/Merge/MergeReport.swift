import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What a merge did. Every inbox entry appears once: accepted, rejected
/// (quarantined, or removed as a copy the home already keeps), or waiting.
/// Paths are where each file is once the merge has finished, so a script
/// can act on them; `name` is the name it had in the inbox.
public struct MergeReport: Sendable, Codable {
    public enum Outcome: String, Sendable, Codable { case merged, belowQuorum = "below-quorum", empty }

    /// A bundle the new generation includes, now in accepted/.
    public struct Accepted: Sendable, Codable {
        public let name: String
        public let file: String
        public let site: String
        public let seq: Int64
        public let digest: String
        public let numExamples: Int64
        public let weight: Double
        /// The generation it was trained on, how far behind the merged
        /// base that is, and the factor its contribution was scaled by.
        public let base: Int
        public let staleness: Int
        public let stalenessWeight: Double
    }

    public struct Rejection: Sendable, Codable {
        public let name: String
        /// Where the file is now (in quarantine/), or nil when it was
        /// removed as a copy of a file the home already keeps.
        public let file: String?
        /// Its `.reason.json` beside it in quarantine/, or nil when removed.
        public let reasonFile: String?
        /// SHA-256 of the file's bytes; nil for links and other non-files.
        public let digest: String?
        public let code: String
        public let message: String
    }

    /// A site's remembered update the new generation added again
    /// (`[merge] memory`), read from accepted/.
    public struct Remembered: Sendable, Codable {
        public let site: String
        public let seq: Int64
        public let digest: String
        /// The generation that first included it.
        public let generation: Int
        public let base: Int
        public let staleness: Int
        public let stalenessWeight: Double
        public let weight: Double
    }

    /// A site with an earlier update the merge did not add, and why.
    public struct Forgotten: Sendable, Codable {
        public let site: String
        public let digest: String
        public let reason: String
    }

    /// An entry left in the inbox for a later run, and why.
    public struct Waiting: Sendable, Codable {
        public let name: String
        public let file: String
        public let reason: String
    }

    public let outcome: Outcome
    public let generation: Int?
    public let file: String?
    public let digest: String?
    public let quorum: Int
    /// Bundles that passed every check: the accepted ones, or below quorum
    /// those left waiting for it.
    public let passed: Int
    public let strategy: String
    public let accepted: [Accepted]
    public internal(set) var rejected: [Rejection]
    public let waiting: [Waiting]
    /// The new generation's privacy record, under `[privacy]`.
    public var privacy: Manifest.Privacy? = nil
    /// What the merge wrote: a generation, or (a regional collector) a
    /// partial aggregate, `file`, for generation `generation`.
    public var kind: Manifest.Kind = .generation
    /// Under `[merge] memory`: the remembered updates added, and the sites
    /// whose earlier update was not.
    public var remembered: [Remembered] = []
    public var forgotten: [Forgotten] = []
    /// Set when the strategy, on the bundles it merged, was no more robust
    /// than the plain mean (see `AggregationStrategy.degeneracy`).
    public var degenerate: String? = nil
    /// Whether the merge ran a chunk of the model at a time, with the
    /// bundles, the base and the output on disk (`[merge] stream`).
    public var streamed = false
}

/// Where a merge is, for a progress line or a JSON status message.
public struct MergeProgress: Sendable {
    public enum Phase: String, Sendable, Codable {
        /// Hashing settled inbox files to fix the summation order.
        case identify
        /// Verifying, checking and adding bundles in that order.
        case verify
        /// Signing and writing the next generation.
        case write
    }
    public let phase: Phase
    public let done: Int
    public let total: Int
    /// The inbox entry just finished, in the verify phase.
    public let file: String?
}

extension MergeReport.Waiting {
    init(_ entry: DirectoryEntry, _ reason: String) {
        self.init(name: entry.displayName, file: entry.displayPath, reason: reason)
    }
}

/// What a merge decided about each inbox entry that is not (yet) an
/// accepted input: one accumulator, filled by the passes and turned into the
/// report in one place.
struct MergeOutcomes {
    private(set) var rejected: [MergeReport.Rejection] = []
    private(set) var waiting: [MergeReport.Waiting] = []

    mutating func wait(_ entry: DirectoryEntry, _ reason: String) { waiting.append(.init(entry, reason)) }
    mutating func wait(name: String, file: String, reason: String) {
        waiting.append(.init(name: name, file: file, reason: reason))
    }
    mutating func refused(_ rejection: MergeReport.Rejection) { rejected.append(rejection) }

    /// The report of a merge that wrote nothing, or wrote `file`.
    func report(
        _ outcome: MergeReport.Outcome, quorum: Int, passed: Int, strategy: String, generation: Int? = nil,
        file: String? = nil, digest: String? = nil, accepted: [MergeReport.Accepted] = [],
        kind: Manifest.Kind = .generation
    ) -> MergeReport {
        MergeReport(
            outcome: outcome, generation: generation, file: file, digest: digest, quorum: quorum, passed: passed,
            strategy: strategy, accepted: accepted, rejected: rejected, waiting: waiting, kind: kind)
    }
}

extension MergeReport {
    /// The same report with `earlier` listed first among its rejections:
    /// the bundles an earlier attempt of the same merge refused.
    func addingRejections(_ earlier: [Rejection]) -> MergeReport {
        var report = self
        report.rejected = earlier + rejected
        return report
    }
}

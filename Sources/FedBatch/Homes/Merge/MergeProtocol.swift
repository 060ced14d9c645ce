import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The protocol rules a merge applies to an update whose signature and
/// tensors already checked out (fedbatch-merge(1), step 6), as a pure
/// decision: given what the collector knows, accept the update (with its
/// site and example count) or refuse it with a typed reason. The collector
/// supplies what state.db knows through `Knowledge`; nothing here reads or
/// writes a file, so every rule is unit-tested directly.
public struct MergeProtocol {
    /// What the collector knows when it decides.
    public struct Knowledge {
        /// The current generation: updates must be based on it.
        public var current: Manifest.GenerationRef
        public var maxExamples: Int64
        /// Codecs the collector takes (merge.accept_codecs).
        public var acceptedCodecs: [String] = Codecs.names.sorted()
        /// How many generations behind the current one a base may be.
        public var maxStaleness = 0
        /// The digest state.db records for an earlier generation.
        public var generationDigest: (Int) throws -> String? = { _ in nil }
        /// The generation that included a bundle digest, if any.
        public var mergedInto: (String) throws -> Int?
        /// The last sequence number a site used in a merged bundle.
        public var lastSequence: (String) throws -> Int64?
        /// The last sequence number a site used in a statistics bundle a
        /// generation combined.
        public var lastStatisticsSequence: (String) throws -> Int64? = { _ in nil }
        /// Told which bundle digests and sites are about to be asked about
        /// (a merge's inbox, a partial's bundles), so that `mergedInto` and
        /// `lastSequence` can answer them from one query each.
        public var prefetch: (_ digests: [String], _ sites: [String]) throws -> Void = { _, _ in }

        public init(
            current: Manifest.GenerationRef, maxExamples: Int64,
            mergedInto: @escaping (String) throws -> Int?, lastSequence: @escaping (String) throws -> Int64?
        ) {
            self.current = current
            self.maxExamples = maxExamples
            self.mergedInto = mergedInto
            self.lastSequence = lastSequence
        }
    }

    public let knowledge: Knowledge
    /// Sites already accepted in this merge (the first in digest order wins).
    public private(set) var sitesAccepted: Set<String> = []
    /// Sites whose statistics were already accepted in this run.
    public private(set) var statisticsAccepted: Set<String> = []

    public init(knowledge: Knowledge) { self.knowledge = knowledge }

    /// Accepts or refuses one update, and says how stale it is. A copy of a
    /// bundle already merged is named for what it is before the base is
    /// checked: it is not stale, it is a copy. An update trained on an
    /// earlier generation is accepted while it is at most `maxStaleness`
    /// generations behind, if it names that generation's recorded digest.
    public func decide(_ m: Manifest, digest: String) throws -> (site: Manifest.Site, examples: Int64, staleness: Int) {
        guard m.kind == .update, let site = m.site, let base = m.base, let n = m.numExamples else {
            throw ProtocolError.notAnUpdate
        }
        if let g = try knowledge.mergedInto(digest) { throw ProtocolError.alreadyMerged(generation: g) }
        let number = knowledge.current.number
        guard base.number <= number else { throw ProtocolError.staleBase(offered: base.number, current: number) }
        let staleness = number - base.number
        guard staleness <= knowledge.maxStaleness else {
            throw ProtocolError.tooStale(offered: base.number, current: number, max: knowledge.maxStaleness)
        }
        let expected = staleness == 0 ? knowledge.current.digest : try knowledge.generationDigest(base.number)
        guard base.digest == expected else { throw ProtocolError.wrongBaseDigest(number: base.number) }
        if let last = try knowledge.lastSequence(site.id), site.seq <= last {
            throw ProtocolError.sequenceReused(site: site.id, seq: site.seq, last: last)
        }
        guard n <= knowledge.maxExamples else { throw ProtocolError.tooManyExamples(n, cap: knowledge.maxExamples) }
        guard knowledge.acceptedCodecs.contains(m.codec) else {
            throw ProtocolError.codecNotAccepted(m.codec, accepted: knowledge.acceptedCodecs)
        }
        guard !sitesAccepted.contains(site.id) else {
            throw ProtocolError.secondUpdate(site: site.id, generation: number)
        }
        return (site, n, staleness)
    }

    /// Records that an update from `site` was accepted in this merge.
    public mutating func accepted(site: String) { sitesAccepted.insert(site) }

    /// Accepts or refuses one statistics bundle, by the rules an update
    /// follows where they apply: not combined before (by digest), a base
    /// this collector wrote (any age: the schema's columns never change),
    /// a sequence number above the site's last statistics bundle's (each
    /// kind keeps its own order, since one may wait while the other is
    /// merged), one per site. Its row count is not capped: it weighs nothing.
    public func decideStatistics(_ m: Manifest, digest: String) throws -> (site: Manifest.Site, rows: Int64) {
        guard m.kind == .stats, let site = m.site, let base = m.base, let rows = m.numExamples else {
            throw ProtocolError.notAnUpdate
        }
        if let g = try knowledge.mergedInto(digest) { throw ProtocolError.alreadyMerged(generation: g) }
        let number = knowledge.current.number
        guard base.number <= number else { throw ProtocolError.staleBase(offered: base.number, current: number) }
        let expected = base.number == number ? knowledge.current.digest : try knowledge.generationDigest(base.number)
        guard base.digest == expected else { throw ProtocolError.wrongBaseDigest(number: base.number) }
        if let last = try knowledge.lastStatisticsSequence(site.id), site.seq <= last {
            throw ProtocolError.sequenceReused(site: site.id, seq: site.seq, last: last)
        }
        guard !statisticsAccepted.contains(site.id) else { throw ProtocolError.secondStatistics(site: site.id) }
        return (site, rows)
    }

    /// Records that statistics from `site` were accepted in this run.
    public mutating func acceptedStatistics(site: String) { statisticsAccepted.insert(site) }
}

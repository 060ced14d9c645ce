import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// Pass 2 of a merge on the consuming side: each verified, decoded bundle
/// (or partial aggregate), in digest order, is checked against the merge
/// protocol and the strategy and, if it passes, added. Filing what fails
/// (quarantine, state.db) is the collector's business; this type only
/// decides and accumulates, so the order of checks lives in one place.
struct MergeRound {
    /// What became of one input.
    enum Outcome {
        case added
        /// A byte-identical copy of a bundle added earlier in this merge.
        case duplicate(of: String)
        /// A genuine bundle that a generation already includes.
        case alreadyMerged(generation: Int)
        case refused(Error)
    }

    /// One accepted input as the merge report lists it: a bundle, or a
    /// partial aggregate (its region, the sums of its bundles' counts).
    struct Summary {
        let site: String
        let seq: Int64
        let numExamples: Int64
        let weight: Double
        let base: Int
        let staleness: Int
        let stalenessWeight: Double
    }

    private var rules: MergeProtocol
    private let strategy: AggregationStrategy
    private let staleness: StalenessFunction
    /// merge.clip_norm, if set.
    private let clipNorm: Double?
    /// Under [privacy], every update weighs the same (see GaussianNoise).
    private let uniformWeights: Bool
    /// merge.regions: the senders whose partial aggregates this collector takes.
    private let regions: Set<String>
    /// Which region serves each site attached through one (pinned at this
    /// collector with keys add --region); the others reach it directly.
    private let siteRegions: [String: String]
    /// The current weights: in memory, or a streaming merge's on disk.
    enum Base {
        case memory(ModelWeights)
        case streamed(StreamingBase)
    }
    private let base: Base
    /// A streaming merge's base, read a chunk at a time, and what it needs
    /// to check each delta as `add` would (`StreamingMerge.admit`).
    struct StreamingBase {
        let base: DecodedDelta
        let chunk: Int
        /// The rate FedAvg's finiteness check scales a delta by (FedAvg's
        /// server_lr; 1 under a server optimiser, as its check is FedAvg's).
        let learningRate: Double
    }
    /// In a streaming merge: the deltas admitted, in the order added, with
    /// the digest each came from, for the chunk pass.
    private(set) var streamed: [(input: StreamingMerge.Input, digest: String)] = []
    private var firstCopy: [Digest: String] = [:]
    /// Digests of the bundles added so far, directly or inside a partial.
    private var bundleDigests: Set<String> = []
    private(set) var included: [Manifest.IncludedBundle] = []
    private(set) var partials: [Manifest.IncludedPartial] = []
    /// For each added input, its inbox entry, created time and when it
    /// arrived (its inode change time), in order.
    private(set) var inputs: [(entry: DirectoryEntry, digest: String, created: String, arrived: Double)] = []
    private(set) var summaries: [Summary] = []
    /// The model's tabular schema, which statistics must describe.
    var schema: TabularSchema?
    /// False at a regional collector, which refuses statistics.
    var takesStatistics = true
    /// Statistics bundles that passed, in digest order: they wait in the
    /// inbox for `fedbatch stats --pin`, which combines them.
    private(set) var statistics:
        [(file: DirectoryEntry, included: Manifest.IncludedStatistics, figures: DataStatistics, created: String)] = []

    init(
        knowledge: MergeProtocol.Knowledge, strategy: AggregationStrategy, staleness: StalenessFunction,
        clipNorm: Double? = nil,
        uniformWeights: Bool = false, regions: [String] = [], siteRegions: [String: String] = [:], base: Base
    ) {
        rules = MergeProtocol(knowledge: knowledge)
        self.strategy = strategy
        self.staleness = staleness
        self.clipNorm = clipNorm
        self.uniformWeights = uniformWeights
        self.regions = Set(regions)
        self.siteRegions = siteRegions
        self.base = base
    }

    mutating func take(_ v: VerifiedContainer, delta: DecodedDelta, entry: DirectoryEntry, arrived: Double) -> Outcome {
        if let first = firstCopy[v.digest] { return .duplicate(of: first) }
        do {
            let m = v.manifest
            if let id = m.site?.id, regions.contains(id) { throw PartialError.fromARegion(id) }
            // Before the protocol's rules, so that the reason does not depend
            // on whether the region's partial came first in digest order.
            if let id = m.site?.id, let region = siteRegions[id] {
                throw PartialError.viaRegion(site: id, region: region)
            }
            let (site, n, s) = try rules.decide(m, digest: v.digest.hex)
            let (weight, factor) = try add(delta, examples: n, staleness: s, digest: v.digest.hex)
            firstCopy[v.digest] = entry.displayName
            bundleDigests.insert(v.digest.hex)
            rules.accepted(site: site.id)
            included.append(
                .init(
                    digest: v.digest.hex, site: site.id, signer: v.signer.fingerprint, seq: site.seq, numExamples: n,
                    weight: weight,
                    base: m.base!.number, staleness: s, stalenessWeight: factor,
                    // What the site claims of its base generation, carried
                    // (signed again by the collector) for every reader of the chain.
                    evaluation: m.evaluation))
            inputs.append((entry, v.digest.hex, m.created, arrived))
            summaries.append(
                .init(
                    site: site.id, seq: site.seq, numExamples: n, weight: weight, base: m.base!.number, staleness: s,
                    stalenessWeight: factor))
            return .added
        } catch ProtocolError.alreadyMerged(let g) {
            return .alreadyMerged(generation: g)
        } catch {
            return .refused(error)
        }
    }

    /// Checks a delta and adds it to the strategy with its example weight,
    /// its staleness factor and the clip, as every update is added, fresh
    /// or remembered; returns the weight and the factor the manifest records.
    private mutating func add(
        _ delta: DecodedDelta, examples n: Int64, staleness s: Int, digest: String
    ) throws -> (Double, Double) {
        let weight = uniformWeights ? 1 : strategy.weight(examples: n)
        let factor = staleness.weight(staleness: s)
        let weights: ModelWeights
        switch base {
        case .memory(let w): weights = w
        case .streamed(let streaming):
            // The same checks, a chunk at a time; the sums come at the end.
            let clip = try StreamingMerge.admit(
                delta, base: streaming.base, serverLearningRate: streaming.learningRate, weight: weight,
                staleness: factor, clipNorm: clipNorm, chunk: streaming.chunk)
            streamed.append((.init(delta: delta, weight: weight, scale: factor * clip), digest))
            return (weight, factor)
        }
        try strategy.check(delta: delta, base: weights)
        // Clipping scales the whole delta down to the norm bound, the same
        // for every tensor, so its direction is kept.
        var clip = 1.0
        if let bound = clipNorm {
            let norm = delta.l2Norm()
            if norm > bound { clip = bound / norm }
        }
        try strategy.add(delta: delta, weight: weight, scale: factor * clip)
        return (weight, factor)
    }

    /// The remembered updates added (`[merge] memory`), in the order added.
    private(set) var remembered: [MergeReport.Remembered] = []

    /// A site's remembered update (`Collector.remember`): its delta against
    /// its own base, weighed and discounted for its staleness against the
    /// generation being written exactly as a fresh update of that age, and
    /// listed with the generation that first included it. The protocol's
    /// replay rules do not apply: it is no new bundle.
    mutating func take(remembered v: VerifiedContainer, delta: DecodedDelta, firstIncluded: Int) -> Outcome {
        do {
            let m = v.manifest
            guard m.kind == .update, let site = m.site, let base = m.base, let n = m.numExamples else {
                throw ProtocolError.notAnUpdate
            }
            let s = rules.knowledge.current.number - base.number
            let (weight, factor) = try add(delta, examples: n, staleness: s, digest: v.digest.hex)
            included.append(
                .init(
                    digest: v.digest.hex, site: site.id, signer: v.signer.fingerprint, seq: site.seq, numExamples: n,
                    weight: weight, base: base.number, staleness: s, stalenessWeight: factor,
                    remembered: firstIncluded))
            remembered.append(
                .init(
                    site: site.id, seq: site.seq, digest: v.digest.hex, generation: firstIncluded, base: base.number,
                    staleness: s, stalenessWeight: factor, weight: weight))
            return .added
        } catch {
            return .refused(error)
        }
    }

    /// A site's statistics bundle: the protocol's rules for it, and figures
    /// that describe the model's schema. A regional collector takes none:
    /// statistics go to the root, whichever way the site's updates travel.
    mutating func take(statistics figures: DataStatistics, of v: VerifiedContainer, entry: DirectoryEntry) -> Outcome {
        if let first = firstCopy[v.digest] { return .duplicate(of: first) }
        do {
            let m = v.manifest
            if let id = m.site?.id, regions.contains(id) { throw PartialError.fromARegion(id) }
            guard takesStatistics else { throw PartialError.statisticsAtRegion(site: m.site?.id ?? "?") }
            guard let schema else {
                throw StatisticsError.schema("the model has no tabular schema, and statistics describe a CSV table")
            }
            let (site, rows) = try rules.decideStatistics(m, digest: v.digest.hex)
            try figures.check(against: schema)
            firstCopy[v.digest] = entry.displayName
            rules.acceptedStatistics(site: site.id)
            statistics.append(
                (
                    entry,
                    .init(
                        digest: v.digest.hex, site: site.id, signer: v.signer.fingerprint, seq: site.seq, rows: rows,
                        base: m.base!.number), figures, m.created
                ))
            return .added
        } catch ProtocolError.alreadyMerged(let g) {
            return .alreadyMerged(generation: g)
        } catch {
            return .refused(error)
        }
    }

    /// Announces the inputs about to be taken, so that the protocol's
    /// lookups in state.db run as one query each (`Knowledge.prefetch`).
    func prefetch(digests: [String], sites: [String]) throws {
        try rules.knowledge.prefetch(digests, sites)
    }

    /// A regional collector's partial aggregate: taken whole, in place of
    /// the bundles it covers, if it was made on the current generation with
    /// this collector's settings, and if none of its bundles was merged
    /// before or is in this merge already; refused whole otherwise.
    mutating func take(
        partial v: VerifiedContainer, sums: PartialAggregate, entry: DirectoryEntry, arrived: Double
    ) -> Outcome {
        if let first = firstCopy[v.digest] { return .duplicate(of: first) }
        do {
            let m = v.manifest
            let k = rules.knowledge
            guard let region = m.site, let base = m.base, let bundles = m.included else {
                throw ProtocolError.notAnUpdate
            }
            guard regions.contains(region.id) else { throw PartialError.notARegion(region.id) }
            guard let summing = strategy as? PartialAggregating else {
                throw PartialError.strategy(type(of: strategy).name)
            }
            guard !uniformWeights else { throw PartialError.privacy }
            if let g = try k.mergedInto(v.digest.hex) { throw ProtocolError.alreadyMerged(generation: g) }
            guard base.number >= k.current.number else {
                throw PartialError.stale(offered: base.number, current: k.current.number)
            }
            guard base.number == k.current.number else {
                throw ProtocolError.staleBase(offered: base.number, current: k.current.number)
            }
            guard base.digest == k.current.digest else { throw ProtocolError.wrongBaseDigest(number: base.number) }
            if let last = try k.lastSequence(region.id), region.seq <= last {
                throw ProtocolError.sequenceReused(site: region.id, seq: region.seq, last: last)
            }
            guard !rules.sitesAccepted.contains(region.id) else {
                throw ProtocolError.secondUpdate(site: region.id, generation: k.current.number)
            }
            let mine = partialSettings
            let theirs = m.strategy?.parameters ?? [:]
            guard theirs == mine else {
                let keys = Set(mine.keys).union(theirs.keys).sorted().filter { mine[$0] != theirs[$0] }
                throw PartialError.settings(
                    keys.map {
                        "\($0) is \(theirs[$0].map { "\($0)" } ?? "unset") "
                            + "there, \(mine[$0].map { "\($0)" } ?? "unset") here"
                    }
                    .joined(separator: "; "))
            }
            var covered: Set<String> = []
            try k.prefetch(bundles.map(\.digest), bundles.map(\.site))
            for b in bundles {
                // A region speaks only for the sites it serves, once each.
                guard siteRegions[b.site] == region.id else {
                    throw PartialError.foreignSite(site: b.site, region: region.id, servedBy: siteRegions[b.site])
                }
                guard covered.insert(b.site).inserted else {
                    throw PartialError.bundle("it covers site \(b.site) twice")
                }
                if let g = try k.mergedInto(b.digest) {
                    throw PartialError.bundle("bundle \(b.digest) of site \(b.site) was merged into generation \(g)")
                }
                if bundleDigests.contains(b.digest) || rules.sitesAccepted.contains(b.site) {
                    throw PartialError.bundle("site \(b.site) already has an update in this merge")
                }
                if regions.contains(b.site) {
                    throw PartialError.bundle("\(b.site) is a regional collector, not a site")
                }
                if let last = try k.lastSequence(b.site), b.seq <= last {
                    throw PartialError.bundle("site \(b.site) sequence number \(b.seq) was used (last merged: \(last))")
                }
                guard b.numExamples <= k.maxExamples else {
                    throw PartialError.bundle(
                        "bundle \(b.digest) claims \(b.numExamples) examples, above merge.max_examples")
                }
                guard b.weight == strategy.weight(examples: b.numExamples) else {
                    throw PartialError.bundle(
                        "bundle \(b.digest) weighs \(b.weight); \(b.numExamples) examples "
                            + "weigh \(strategy.weight(examples: b.numExamples)) here"
                    )
                }
            }
            guard Set(bundles.map(\.digest)).count == bundles.count else {
                throw PartialError.bundle("it lists a bundle twice")
            }
            // Its counters' increments obey the rule each bundle's would.
            guard case .memory(let weights) = self.base else {
                throw PartialError.tensors("a streaming merge takes no partials")
            }
            try FedAvg.checkIncrements(sums.maxIncrements, base: weights)
            // checkPartial took the total weight and count from this list.
            try summing.add(partial: sums)
            firstCopy[v.digest] = entry.displayName
            rules.accepted(site: region.id)
            for b in bundles {
                rules.accepted(site: b.site)
                bundleDigests.insert(b.digest)
                var carried = b
                carried.partial = v.digest.hex
                // Its staleness against the generation being written, which
                // the partial was made for.
                included.append(carried)
            }
            partials.append(
                .init(
                    digest: v.digest.hex, region: region.id, signer: v.signer.fingerprint, seq: region.seq,
                    bundles: bundles.count,
                    weight: sums.totalWeight))
            inputs.append((entry, v.digest.hex, m.created, arrived))
            summaries.append(
                .init(
                    site: region.id, seq: region.seq, numExamples: m.numExamples ?? 0, weight: sums.totalWeight,
                    base: base.number,
                    staleness: 0, stalenessWeight: 1))
            return .added
        } catch ProtocolError.alreadyMerged(let g) {
            return .alreadyMerged(generation: g)
        } catch {
            return .refused(error)
        }
    }

    /// The staleness rule, recorded with the strategy: its window and the
    /// function's parameters (the function itself is implied by them:
    /// hinge names b, polynomial only a, constant neither).
    var stalenessParameters: [String: Double] {
        staleness.parameters.merging(["max_staleness": Double(rules.knowledge.maxStaleness)]) { a, _ in a }
            .merging(clipNorm.map { ["clip_norm": $0] } ?? [:]) { a, _ in a }
    }

    /// What fixes each bundle's term wᵢ·sᵢ·Δᵢ: the staleness rule, the clip
    /// and the weight cap. A partial records them; the root must agree.
    var partialSettings: [String: Double] {
        stalenessParameters.merging(["weight_cap": strategy.parameters["weight_cap"] ?? 0]) { a, _ in a }
    }

    /// The included bundles by digest, as manifests list them (a merge adds
    /// them in that order, but a partial's bundles come in with it).
    var sortedIncluded: [Manifest.IncludedBundle] { included.sorted { $0.digest < $1.digest } }

    /// The next generation's manifest and weights. Nothing in the manifest
    /// differs between two collectors given the same inputs: its time is the
    /// newest input's, refusals are codes.
    func finish(current: VerifiedContainer, rejected: [Manifest.RejectedBundle]) throws -> (Manifest, ModelWeights) {
        guard case .memory(let weights) = base else { preconditionFailure("a streaming merge finishes by chunks") }
        let next = try strategy.finish(base: weights)
        return (manifest(current: current, rejected: rejected), next)
    }

    /// The next generation's manifest (`finish` without the weights, which
    /// a streaming merge computes itself). After the strategy's `finish`.
    func manifest(current: VerifiedContainer, rejected: [Manifest.RejectedBundle]) -> Manifest {
        let number = current.manifest.generation!
        let selected = strategy.selectedPositions.map { $0.map { included[$0].digest }.sorted() }
        var manifest = Manifest(
            kind: .generation, model: current.manifest.model, created: inputs.map(\.created).max()!,
            generation: number + 1, parent: .init(number: number, digest: current.digest.hex),
            included: sortedIncluded, rejected: rejected,
            strategy: .init(
                name: type(of: strategy).name,
                parameters: strategy.parameters.merging(stalenessParameters) { a, _ in a }, selected: selected))
        if !partials.isEmpty { manifest.partials = partials.sorted { $0.digest < $1.digest } }
        // Bundles and examples new to this generation; remembered ones
        // counted apart.
        let new = included.filter { $0.remembered == nil }
        manifest.metrics = [
            "bundles": Double(new.count), "examples": new.reduce(0.0) { $0 + Double($1.numExamples) },
        ]
        if !remembered.isEmpty { manifest.metrics["remembered"] = Double(remembered.count) }
        return manifest
    }
}

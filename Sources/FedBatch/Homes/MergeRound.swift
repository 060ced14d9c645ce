import Foundation

/// Pass 2 of a merge on the consuming side: each verified, decoded bundle,
/// in digest order, is checked against the merge protocol and the strategy
/// and, if it passes, added. Filing what fails (quarantine, state.db) is the
/// collector's business; this type only decides and accumulates, so the
/// order of checks lives in one place.
struct MergeRound {
    /// What became of one bundle.
    enum Outcome {
        case added
        /// A byte-identical copy of a bundle added earlier in this merge.
        case duplicate(of: String)
        /// A genuine bundle that a generation already includes.
        case alreadyMerged(generation: Int)
        case refused(Error)
    }

    private var rules: MergeProtocol
    private let strategy: AggregationStrategy
    private let staleness: StalenessFunction
    /// merge.clip_norm, if set.
    private let clipNorm: Double?
    /// Under [privacy], every update weighs the same (see GaussianNoise).
    private let uniformWeights: Bool
    private let base: ModelWeights
    private var firstCopy: [Digest: String] = [:]
    private(set) var included: [Manifest.IncludedBundle] = []
    /// For each added bundle, its inbox entry, created time and when it
    /// arrived (its inode change time), in order.
    private(set) var inputs: [(entry: DirectoryEntry, digest: String, created: String, arrived: Double)] = []

    init(knowledge: MergeProtocol.Knowledge, strategy: AggregationStrategy, staleness: StalenessFunction, clipNorm: Double? = nil,
         uniformWeights: Bool = false, base: ModelWeights) {
        rules = MergeProtocol(knowledge: knowledge)
        self.strategy = strategy
        self.staleness = staleness
        self.clipNorm = clipNorm
        self.uniformWeights = uniformWeights
        self.base = base
    }

    mutating func take(_ v: VerifiedContainer, delta: DecodedDelta, entry: DirectoryEntry, arrived: Double) -> Outcome {
        if let first = firstCopy[v.digest] { return .duplicate(of: first) }
        do {
            let m = v.manifest
            let (site, n, s) = try rules.decide(m, digest: v.digest.hex)
            try strategy.check(delta: delta, base: base)
            firstCopy[v.digest] = entry.displayName
            rules.accepted(site: site.id)
            let weight = uniformWeights ? 1 : strategy.weight(examples: n)
            let factor = staleness.weight(staleness: s)
            // Clipping scales the whole delta down to the norm bound, the
            // same for every tensor, so its direction is kept.
            var clip = 1.0
            if let bound = clipNorm {
                let norm = delta.l2Norm()
                if norm > bound { clip = bound / norm }
            }
            strategy.add(delta: delta, weight: weight, scale: factor * clip)
            included.append(.init(digest: v.digest.hex, site: site.id, signer: v.signer.fingerprint, seq: site.seq, numExamples: n, weight: weight,
                                  base: m.base!.number, staleness: s, stalenessWeight: factor))
            inputs.append((entry, v.digest.hex, m.created, arrived))
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

    /// The next generation's manifest and weights. Nothing in the manifest
    /// differs between two collectors given the same inputs: its time is the
    /// newest input's, refusals are codes.
    func finish(current: VerifiedContainer, rejected: [Manifest.RejectedBundle]) throws -> (Manifest, ModelWeights) {
        let number = current.manifest.generation!
        let next = try strategy.finish(base: base)
        let selected = strategy.selectedPositions.map { $0.map { included[$0].digest }.sorted() }
        var manifest = Manifest(kind: .generation, model: current.manifest.model, created: inputs.map(\.created).max()!,
                                generation: number + 1, parent: .init(number: number, digest: current.digest.hex),
                                included: included, rejected: rejected,
                                strategy: .init(name: type(of: strategy).name,
                                                parameters: strategy.parameters.merging(stalenessParameters) { a, _ in a }, selected: selected))
        manifest.metrics = ["bundles": Double(included.count), "examples": included.reduce(0.0) { $0 + Double($1.numExamples) }]
        return (manifest, next)
    }
}

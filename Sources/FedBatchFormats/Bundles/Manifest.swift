import FedBatchNative
import Foundation

/// The version of this fedbatch build, recorded in every manifest it writes.
public enum FedBatchVersion {
    public static let current = "0.1.0"
}

/// `manifest.json`, the first member of every container. See
/// fedbatch-bundle(5) for the field-by-field specification.
public struct Manifest: Codable, Sendable, Equatable {
    /// The container format this build writes; readers refuse newer ones.
    /// Version 3 moved a generation's or partial's list of bundles out of
    /// the manifest into `included.jsonl`; version 2 (the list inline) is
    /// still read, so chains written before stay verifiable.
    public static let formatName = "fedbatch"
    public static let formatVersion = 3
    public static let oldestReadableVersion = 2

    public enum Kind: String, Codable, Sendable {
        /// A site's update; a generation of the model; a regional
        /// collector's partial aggregate of its sites' updates; a site's
        /// summary statistics of its data (fedbatch-stats(1)).
        case update, generation, partial, stats

        /// "an update", "a generation", for messages.
        public var withArticle: String {
            switch self {
            case .update: return "an update"
            case .stats: return "a statistics bundle"
            default: return "a \(rawValue)"
            }
        }
        /// Whether a site (or a region) signs this kind, naming itself in `site`.
        public var isFromSender: Bool { self != .generation }
    }

    /// The codec of a statistics bundle, which holds no tensors.
    public static let noTensorsCodec = "none"

    /// The codec of a partial aggregate: exact fixed-point sums (see
    /// PartialAggregate), never used by an update.
    public static let exactSumCodec = "exact-sum"

    public struct Model: Codable, Sendable, Equatable {
        public var id: String
        public var arch: String
        public init(id: String, arch: String) { self.id = id; self.arch = arch }
    }

    /// A generation named by number and by its digest (the SHA-256 of its payload).
    public struct GenerationRef: Codable, Sendable, Equatable {
        public var number: Int
        public var digest: String
        public init(number: Int, digest: String) { self.number = number; self.digest = digest }
    }

    public struct Site: Codable, Sendable, Equatable {
        public var id: String
        public var seq: Int64
        public init(id: String, seq: Int64) { self.id = id; self.seq = seq }
    }

    /// A member other than the manifest, with its exact length and SHA-256.
    public struct Member: Codable, Sendable, Equatable {
        public var name: String
        public var length: Int64
        public var sha256: String
        public init(name: String, length: Int64, sha256: String) {
            self.name = name; self.length = length; self.sha256 = sha256
        }
    }

    /// A site's evaluation of the generation its update started from, on
    /// its own held-out data: what the site claims, signed with its key
    /// (fedbatch-bundle(5), EVALUATION). `metrics` names figures such as
    /// accuracy and loss; an accuracy lies in [0, 1].
    public struct SiteEvaluation: Codable, Sendable, Equatable {
        public var numExamples: Int64
        public var metrics: [String: Double]
        public init(numExamples: Int64, metrics: [String: Double]) {
            self.numExamples = numExamples
            self.metrics = metrics
        }

        /// At most this many metrics, each name at most 64 bytes.
        public static let maxMetrics = 32

        /// The evaluation's rules: examples counted, every metric a
        /// finite number under a short name, an accuracy a fraction.
        public func check() throws {
            guard numExamples > 0 else {
                throw ContainerError.manifestInvalid("evaluation.num_examples must be positive")
            }
            guard metrics.count <= Self.maxMetrics else {
                throw ContainerError.manifestInvalid("evaluation has more than \(Self.maxMetrics) metrics")
            }
            for (name, v) in metrics {
                guard !name.isEmpty, name.utf8.count <= 64, v.isFinite else {
                    throw ContainerError.manifestInvalid(
                        "evaluation metric \"\(name)\" needs a name of 1 to 64 bytes and a finite value")
                }
            }
            if let a = metrics["accuracy"], !(0...1).contains(a) {
                throw ContainerError.manifestInvalid("evaluation accuracy \(a) is not in [0, 1]")
            }
        }
    }

    /// A bundle a generation aggregated.
    public struct IncludedBundle: Codable, Sendable, Equatable {
        public var digest: String
        public var site: String
        public var signer: String
        public var seq: Int64
        public var numExamples: Int64
        /// The example weight (FedAvg's wᵢ, capped).
        public var weight: Double
        /// The generation the update was trained on, how many generations
        /// behind the merged one that was, and the staleness factor w(s)
        /// its contribution was multiplied by. Absent in generations
        /// written before staleness-aware merging (all fresh then).
        public var base: Int?
        public var staleness: Int?
        public var stalenessWeight: Double?
        /// In a generation of a hierarchical federation: the digest of the
        /// partial aggregate that carried this bundle (listed in
        /// `partials`); absent for a bundle merged directly.
        public var partial: String?
        /// The site's evaluation of the bundle's base generation, as the
        /// bundle carried it.
        public var evaluation: SiteEvaluation?
        /// Under `[merge] memory`: the earlier generation that first
        /// included this bundle, which this one adds again as the site's
        /// remembered update; absent for a bundle included for the first time.
        public var remembered: Int?
        public init(
            digest: String, site: String, signer: String, seq: Int64, numExamples: Int64, weight: Double,
            base: Int? = nil, staleness: Int? = nil, stalenessWeight: Double? = nil, partial: String? = nil,
            evaluation: SiteEvaluation? = nil, remembered: Int? = nil
        ) {
            self.digest = digest; self.site = site; self.signer = signer; self.seq = seq
            self.numExamples = numExamples; self.weight = weight
            self.base = base; self.staleness = staleness; self.stalenessWeight = stalenessWeight
            self.partial = partial; self.evaluation = evaluation; self.remembered = remembered
        }
    }

    /// A partial aggregate a generation merged: which regional collector
    /// signed it, with which key and sequence number, and how many bundles
    /// of what total weight it covers (each listed in `included`).
    public struct IncludedPartial: Codable, Sendable, Equatable {
        public var digest: String
        public var region: String
        public var signer: String
        public var seq: Int64
        public var bundles: Int
        public var weight: Double
        public init(digest: String, region: String, signer: String, seq: Int64, bundles: Int, weight: Double) {
            self.digest = digest; self.region = region; self.signer = signer; self.seq = seq; self.bundles = bundles;
            self.weight = weight
        }
    }

    /// A bundle a merge refused, with the reason code.
    public struct RejectedBundle: Codable, Sendable, Equatable {
        public var digest: String
        public var reason: String
        public init(digest: String, reason: String) { self.digest = digest; self.reason = reason }
    }

    /// The aggregation strategy with its parameters.
    public struct Strategy: Codable, Sendable, Equatable {
        public var name: String
        public var parameters: [String: Double]
        /// For a rule that aggregates only some of the included bundles
        /// (Krum, Multi-Krum, Bulyan): the digests of those it used, sorted.
        public var selected: [String]?
        public init(name: String, parameters: [String: Double], selected: [String]? = nil) {
            self.name = name
            self.parameters = parameters
            self.selected = selected
        }
    }

    /// Central differential privacy: the cumulative guarantee of the
    /// chain up to this generation, and the noise this merge added (nil
    /// for a generation that added none, a revert).
    public struct Privacy: Codable, Sendable, Equatable {
        public struct Noise: Codable, Sendable, Equatable {
            public var noiseMultiplier: Double
            public var clipNorm: Double
            public var expectedSites: Int
            public var sigma: Double
            /// SHA-256 commitment to the secret seed the noise came from.
            public var seedSha256: String
            public init(
                noiseMultiplier: Double, clipNorm: Double, expectedSites: Int, sigma: Double, seedSha256: String
            ) {
                self.noiseMultiplier = noiseMultiplier
                self.clipNorm = clipNorm
                self.expectedSites = expectedSites
                self.sigma = sigma
                self.seedSha256 = seedSha256
            }
        }
        /// Noisy merges in the chain so far, this one included.
        public var rounds: Int
        /// Σ 1/z² over those merges: the whole history, for the accountant.
        public var inverseSquareSum: Double
        public var epsilon: Double
        public var delta: Double
        public var maxEpsilon: Double
        public var noise: Noise?
        public init(
            rounds: Int, inverseSquareSum: Double, epsilon: Double, delta: Double, maxEpsilon: Double, noise: Noise?
        ) {
            self.rounds = rounds
            self.inverseSquareSum = inverseSquareSum
            self.epsilon = epsilon
            self.delta = delta
            self.maxEpsilon = maxEpsilon
            self.noise = noise
        }
    }

    public var format: String = Manifest.formatName
    public var version: Int = Manifest.formatVersion
    public var kind: Kind
    public var model: Model
    /// Generations: their own number (0 for the first).
    public var generation: Int?
    /// Generations: the parent generation; absent only for generation 0.
    public var parent: GenerationRef?
    /// Updates: the generation they were trained from.
    public var base: GenerationRef?
    public var site: Site?
    public var numExamples: Int64?
    /// UTC, RFC 3339, whole seconds.
    public var created: String
    /// How tensors are encoded (`fp32` or a compressed codec).
    public var codec: String
    public var fedbatchVersion: String
    public var members: [Member]
    public var metrics: [String: Double]
    /// The bundles a generation or partial aggregated, in digest order.
    /// Written as the member `included.jsonl` (`IncludedList`) with only
    /// their number, `includedCount`, in the manifest itself; the reader
    /// fills this in from the member once its SHA-256 matched. Generations
    /// written before the member existed list them inline, as `included`.
    public var included: [IncludedBundle]?
    /// How many bundles `included.jsonl` lists; nil where the list is
    /// inline (or absent).
    public var includedCount: Int?
    /// Generations: the partial aggregates merged (hierarchical federations).
    public var partials: [IncludedPartial]?
    public var rejected: [RejectedBundle]?
    public var strategy: Strategy?
    public var privacy: Privacy?
    /// Updates: the site's evaluation of its base generation.
    public var evaluation: SiteEvaluation?
    /// Generations written by `fedbatch stats --pin`: the statistics
    /// bundles whose combination set the schema's normalisation.
    public var statistics: [IncludedStatistics]?

    /// A statistics bundle a generation combined: from which site, signed
    /// with which key, its sequence number, how many rows it summarised and
    /// on which generation's schema.
    public struct IncludedStatistics: Codable, Sendable, Equatable {
        public var digest: String
        public var site: String
        public var signer: String
        public var seq: Int64
        public var rows: Int64
        public var base: Int
        public init(digest: String, site: String, signer: String, seq: Int64, rows: Int64, base: Int) {
            self.digest = digest; self.site = site; self.signer = signer; self.seq = seq; self.rows = rows
            self.base = base
        }
    }

    public init(
        kind: Kind, model: Model, created: String, codec: String = "fp32",
        generation: Int? = nil, parent: GenerationRef? = nil, base: GenerationRef? = nil,
        site: Site? = nil, numExamples: Int64? = nil, metrics: [String: Double] = [:],
        included: [IncludedBundle]? = nil, rejected: [RejectedBundle]? = nil, strategy: Strategy? = nil
    ) {
        self.kind = kind
        self.model = model
        self.created = created
        self.codec = codec
        self.generation = generation
        self.parent = parent
        self.base = base
        self.site = site
        self.numExamples = numExamples
        self.fedbatchVersion = FedBatchVersion.current
        self.members = []
        self.metrics = metrics
        self.included = included
        self.rejected = rejected
        self.strategy = strategy
    }

    /// The canonical encoding: sorted keys, snake_case, no whitespace. A
    /// list kept in `included.jsonl` is not repeated here: the manifest
    /// names its count, and its SHA-256 among the members.
    public func encoded() throws -> Data {
        var m = self
        if includedCount != nil { m.included = nil }
        return try Self.canonicalEncoder().encode(m)
    }

    static func canonicalEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }

    /// The list is declared (`included_count`) but not read yet: checks
    /// that need it wait until the reader has filled it in.
    var includedPending: Bool { includedCount != nil && included == nil }

    /// Parses untrusted manifest bytes: strict JSON first (no duplicate
    /// keys, bounded depth), then exactly the fields of fedbatch-bundle(5)
    /// (see `ManifestDecoder`), then `validate()`.
    public static func decode(_ data: Data) throws -> Manifest {
        let tree: JSONValue
        do {
            tree = try StrictJSON.parse(data)
        } catch let e as JSONSyntaxError {
            throw ContainerError.manifestInvalid("not valid JSON: \(e.description)")
        }
        let m = try ManifestDecoder.decode(tree)
        try m.validate()
        return m
    }

    /// The largest generation number, sequence number or staleness a
    /// manifest may carry: far above any real federation (a generation an
    /// hour for 10^8 years), and far enough below Int64.max that no
    /// arithmetic on such numbers can overflow. Checked first, before any
    /// rule computes with them.
    public static let maxNumber = 1 << 40

    /// Every number of this manifest that later rules compute with, in
    /// range: generation numbers, sequence numbers, stalenesses and counts.
    func checkNumbers() throws {
        let range = 0...Manifest.maxNumber
        func check(_ v: Int?, _ what: String) throws {
            if let v, !range.contains(v) {
                throw ContainerError.manifestInvalid("\(what) \(v) is outside 0...\(Manifest.maxNumber)")
            }
        }
        try check(generation, "generation")
        try check(base?.number, "base generation")
        try check(parent?.number, "parent generation")
        if let seq = site?.seq { try check(Int(exactly: seq) ?? -1, "site seq") }
        if let n = numExamples, n < 0 { throw ContainerError.manifestInvalid("num_examples \(n) is negative") }
        try check(includedCount, "included_count")
        for b in included ?? [] {
            try check(b.base, "included bundle base")
            try check(b.staleness, "included bundle staleness")
            try check(b.remembered, "included bundle remembered")
            try check(Int(exactly: b.seq) ?? -1, "included bundle seq")
            guard b.numExamples >= 0, b.weight.isFinite else {
                throw ContainerError.manifestInvalid(
                    "included bundle \(b.digest): num_examples and weight must be finite and not negative")
            }
        }
        for p in partials ?? [] {
            try check(Int(exactly: p.seq) ?? -1, "partial seq")
            try check(p.bundles, "partial bundle count")
        }
    }

    /// Checks the rules a decoder cannot express: known format and version,
    /// the fields each kind requires, and well-formed member entries.
    public func validate() throws {
        try checkFormat()
        try checkCommonFields()
        switch kind {
        case .update: try checkUpdate()
        case .partial: try checkPartial()
        case .generation: try checkGeneration()
        case .stats: try checkStatistics()
        }
        try checkReferences()
        try checkMembers()
    }

    /// Known format and version, and a codec this build reads that fits the kind.
    private func checkFormat() throws {
        guard format == Manifest.formatName else {
            throw ContainerError.manifestInvalid("format is \"\(format)\", expected \"\(Manifest.formatName)\"")
        }
        guard version >= Manifest.oldestReadableVersion else {
            throw ContainerError.manifestInvalid(
                "version \(version) is an older format than the container's; a format-2 container's manifest "
                    + "says \(Manifest.oldestReadableVersion) or \(Manifest.formatVersion)"
            )
        }
        guard version <= Manifest.formatVersion else {
            throw ContainerError.manifestInvalid(
                "format version \(version) is newer than this fedbatch (\(FedBatchVersion.current)) reads "
                    + "(\(Manifest.formatVersion)); upgrade fedbatch"
            )
        }
        // Version 2 lists bundles inline; version 3 in included.jsonl (the
        // reader fills `included` in from it, after the count).
        if version < 3, includedCount != nil {
            throw ContainerError.manifestInvalid(
                "a version-\(version) manifest lists its bundles inline; included_count is version 3's")
        }
        if version >= 3, included != nil, includedCount == nil {
            throw ContainerError.manifestInvalid(
                "a version-\(version) manifest lists its bundles in \(ContainerPath.included) (included_count), "
                    + "not inline in included")
        }
        guard Manifest.knownCodecs.contains(codec) else {
            throw ContainerError.manifestInvalid(
                "codec \"\(codec)\" is not one this fedbatch reads "
                    + "(\(Manifest.knownCodecs.sorted().joined(separator: ", ")))"
            )
        }
        // Codecs compress updates; a generation is the model itself; a
        // partial holds exact sums.
        switch kind {
        case .generation:
            guard codec == "fp32" else {
                throw ContainerError.manifestInvalid("a generation's codec must be fp32, not \"\(codec)\"")
            }
        case .partial:
            guard codec == Manifest.exactSumCodec else {
                throw ContainerError.manifestInvalid(
                    "a partial aggregate's codec must be \(Manifest.exactSumCodec), not \"\(codec)\"")
            }
        case .update:
            guard codec != Manifest.exactSumCodec, codec != Manifest.noTensorsCodec else {
                throw ContainerError.manifestInvalid("an update's codec cannot be \(codec)")
            }
        case .stats:
            guard codec == Manifest.noTensorsCodec else {
                throw ContainerError.manifestInvalid(
                    "a statistics bundle holds no tensors: its codec is \(Manifest.noTensorsCodec), not \"\(codec)\"")
            }
        }
    }

    /// Rules every kind shares: numbers in range, the creation time, finite
    /// metrics, and where an evaluation may appear.
    private func checkCommonFields() throws {
        try checkNumbers()
        guard Manifest.parseCreated(created) != nil else {
            throw ContainerError.manifestInvalid(
                "created \"\(created)\" is not an RFC 3339 UTC time with whole seconds (2026-11-29T12:00:00Z)")
        }
        for (name, v) in metrics where !v.isFinite {
            throw ContainerError.manifestInvalid("metric \(name) is not finite")
        }
        if let evaluation {
            guard kind == .update else {
                throw ContainerError.manifestInvalid("only an update carries an evaluation of its own")
            }
            try evaluation.check()
        }
        for b in included ?? [] { try b.evaluation?.check() }
    }

    /// An update names its site, its base and a positive example count.
    private func checkUpdate() throws {
        guard let site else { throw ContainerError.manifestInvalid("an update must name its site") }
        guard base != nil else { throw ContainerError.manifestInvalid("an update must name its base generation") }
        guard let n = numExamples, n > 0 else {
            throw ContainerError.manifestInvalid("an update must give a positive num_examples")
        }
        guard site.seq >= 0 else { throw ContainerError.manifestInvalid("site seq \(site.seq) is negative") }
        try Self.checkIdentifier(site.id, what: "site id")
    }

    /// A statistics bundle names its site, the generation whose schema it
    /// follows, and a positive row count; it lists no bundles.
    private func checkStatistics() throws {
        guard let site, base != nil, let n = numExamples, n > 0 else {
            throw ContainerError.manifestInvalid(
                "a statistics bundle must name its site, its base generation and a positive num_examples (rows)")
        }
        try Self.checkIdentifier(site.id, what: "site id")
        guard included == nil, includedCount == nil, partials == nil, statistics == nil, strategy == nil,
            privacy == nil
        else {
            throw ContainerError.manifestInvalid("a statistics bundle lists no bundles, strategy or privacy")
        }
    }

    /// A partial aggregate: its region, base and the bundles it covers, each
    /// fitting a partial on that base.
    private func checkPartial() throws {
        guard let site, let base, let n = numExamples, n > 0, !(included ?? []).isEmpty || (includedCount ?? 0) > 0
        else {
            throw ContainerError.manifestInvalid(
                "a partial aggregate must name its regional collector (site), its base generation, a positive "
                    + "num_examples and the bundles it includes"
            )
        }
        try Self.checkIdentifier(site.id, what: "regional collector id")
        // checkNumbers bounded base.number, so the + 1 cannot overflow.
        guard site.seq == Int64(base.number) + 1 else {
            throw ContainerError.manifestInvalid(
                "a partial aggregate's seq is the generation it is for, \(base.number + 1), not \(site.seq)")
        }
        guard let included else { return }  // checked once the list is read
        guard Set(included.map(\.digest)).count == included.count else {
            throw ContainerError.manifestInvalid("a partial aggregate lists a bundle twice")
        }
        for b in included {
            guard let bb = b.base, bb >= 0, bb <= base.number, b.staleness == base.number - bb, b.partial == nil,
                b.numExamples > 0, b.seq >= 0, b.weight >= 0, b.weight == b.weight.rounded(),
                (b.stalenessWeight ?? 1) > 0, (b.stalenessWeight ?? 1) <= 1
            else {
                throw ContainerError.manifestInvalid(
                    "included bundle \(b.digest) does not fit a partial aggregate on generation \(base.number)")
            }
            try Self.checkIdentifier(b.site, what: "site id")
        }
        guard n == saturatingSum(included.map(\.numExamples)) else {
            throw ContainerError.manifestInvalid("num_examples \(n) is not the sum over the included bundles")
        }
    }

    /// A generation: its number, its partials and included bundles consistent
    /// with each other, a parent after generation 0, and a well-formed privacy
    /// record.
    private func checkGeneration() throws {
        guard let g = generation, g >= 0 else {
            throw ContainerError.manifestInvalid("a generation must give its number")
        }
        if g > 0, parent == nil { throw ContainerError.manifestInvalid("generation \(g) must name its parent") }
        try checkStatisticsList(generation: g)
        try checkPrivacy()
        // The rest needs the list of bundles, checked once it is read.
        guard !includedPending else { return }
        if let partials {
            var carried: [String: Int] = [:]
            for b in included ?? [] { if let p = b.partial { carried[p, default: 0] += 1 } }
            for p in partials {
                guard carried[p.digest, default: 0] == p.bundles, p.bundles > 0 else {
                    throw ContainerError.manifestInvalid(
                        "partial \(p.digest) says it covers \(p.bundles) bundles; included lists "
                            + "\(carried[p.digest, default: 0])")
                }
            }
            let known = Set(partials.map(\.digest))
            guard known.count == partials.count,
                (included ?? []).allSatisfy({ $0.partial.map(known.contains) ?? true })
            else {
                throw ContainerError.manifestInvalid(
                    "included names a partial that partials does not list, or partials lists one twice")
            }
        } else if (included ?? []).contains(where: { $0.partial != nil }) {
            throw ContainerError.manifestInvalid("included names a partial, but the generation lists no partials")
        }
        // A remembered update was first included by an earlier generation,
        // on its own (never inside a partial), and only for a site with no
        // fresh update in this one.
        for b in included ?? [] where b.remembered != nil {
            guard let r = b.remembered, r > 0, r < g, b.partial == nil, b.base != nil, r > b.base! else {
                throw ContainerError.manifestInvalid(
                    "included bundle \(b.digest): remembered must name an earlier generation than \(g), after its base")
            }
        }
        var perSite: [String: Int] = [:]
        for b in included ?? [] { perSite[b.site, default: 0] += 1 }
        for b in included ?? [] where b.remembered != nil && perSite[b.site, default: 0] > 1 {
            throw ContainerError.manifestInvalid("included lists site \(b.site) twice, once remembered")
        }
        for b in included ?? [] {
            if let base = b.base, let g = generation, !(base >= 0 && base < g && b.staleness == g - 1 - base) {
                throw ContainerError.manifestInvalid(
                    "included bundle \(b.digest): base \(base) and "
                        + "staleness \(b.staleness.map(String.init) ?? "none") do not fit generation \(g)"
                )
            }
            if let w = b.stalenessWeight, !(w > 0 && w <= 1) {
                throw ContainerError.manifestInvalid(
                    "included bundle \(b.digest): staleness_weight \(w) is not in (0, 1]")
            }
        }
        if let selected = strategy?.selected {
            let digests = Set((included ?? []).map(\.digest))
            guard selected.allSatisfy(digests.contains), Set(selected).count == selected.count else {
                throw ContainerError.manifestInvalid(
                    "strategy.selected names a bundle the generation does not include, or one twice")
            }
        }
        for b in included ?? [] where b.numExamples < 0 || b.seq < 0 || !(b.weight >= 0) {
            throw ContainerError.manifestInvalid("included bundle \(b.digest) has a negative count or weight")
        }
    }

    /// A statistics pin's list: one entry per site and digest.
    private func checkStatisticsList(generation g: Int) throws {
        if let statistics {
            guard g > 0, Set(statistics.map(\.digest)).count == statistics.count,
                Set(statistics.map(\.site)).count == statistics.count,
                statistics.allSatisfy({ $0.rows > 0 && $0.seq >= 0 && $0.base >= 0 && $0.base < g })
            else {
                throw ContainerError.manifestInvalid(
                    "statistics: one entry per site and digest, each with positive rows and a base before "
                        + "generation \(g)")
            }
            for s in statistics {
                try Self.checkIdentifier(s.site, what: "site id")
                guard Digest(hex: s.digest) != nil else {
                    throw ContainerError.manifestInvalid("statistics: digest \"\(s.digest)\" is not 64 hex digits")
                }
            }
        }
    }

    /// A well-formed privacy record.
    private func checkPrivacy() throws {
        if let p = privacy {
            guard p.rounds >= 0, p.inverseSquareSum >= 0, p.epsilon >= 0, p.delta > 0, p.delta < 1, p.maxEpsilon > 0
            else {
                throw ContainerError.manifestInvalid(
                    "privacy: rounds, inverse_square_sum and epsilon must not be negative, delta must be in (0, 1)")
            }
            if let n = p.noise,
                !(n.noiseMultiplier > 0 && n.clipNorm > 0 && n.expectedSites >= 1 && n.sigma >= 0
                    && Digest(hex: n.seedSha256) != nil)
            {
                throw ContainerError.manifestInvalid(
                    "privacy.noise: a positive noise_multiplier and clip_norm, expected_sites of 1 or more, and "
                        + "a seed_sha256 of 64 hex digits"
                )
            }
        }
    }

    /// The model id and the generation references.
    private func checkReferences() throws {
        try Self.checkIdentifier(model.id, what: "model id")
        for ref in [base, parent].compactMap({ $0 }) {
            guard Digest(hex: ref.digest) != nil else {
                throw ContainerError.manifestInvalid(
                    "generation digest \"\(ref.digest)\" is not 64 lowercase hex digits")
            }
            guard ref.number >= 0 else {
                throw ContainerError.manifestInvalid("generation number \(ref.number) is negative")
            }
        }
    }

    /// Member entries: allowed names, each once, well formed; the tensors
    /// member present.
    private func checkMembers() throws {
        var names = Set<String>()
        for member in members {
            guard ContainerPath.isValid(member.name), member.name != ContainerPath.manifest else {
                throw ContainerError.manifestInvalid("member name \"\(member.name)\" is not allowed")
            }
            guard names.insert(member.name).inserted else {
                throw ContainerError.manifestInvalid("member \"\(member.name)\" is listed twice")
            }
            guard member.length >= 0 else {
                throw ContainerError.manifestInvalid("member \"\(member.name)\" has a negative length")
            }
            guard Digest(hex: member.sha256) != nil else {
                throw ContainerError.manifestInvalid("member \"\(member.name)\" has a malformed sha256")
            }
        }
        // A statistics bundle holds its figures and no tensors; every other
        // kind holds tensors.
        let required = kind == .stats ? ContainerPath.statistics : ContainerPath.tensors
        guard names.contains(required) else {
            throw ContainerError.manifestInvalid("no \(required) member is listed")
        }
        if kind == .stats, names.contains(ContainerPath.tensors) {
            throw ContainerError.manifestInvalid("a statistics bundle holds no \(ContainerPath.tensors)")
        }
        // The list of bundles is a member exactly when the manifest gives
        // its count, and then it holds that many.
        guard names.contains(ContainerPath.included) == (includedCount != nil) else {
            throw ContainerError.manifestInvalid(
                includedCount == nil
                    ? "member \(ContainerPath.included) is listed, but the manifest gives no included_count"
                    : "included_count is given, but no \(ContainerPath.included) member is listed")
        }
        if includedCount != nil, kind != .generation, kind != .partial {
            throw ContainerError.manifestInvalid("only a generation or a partial aggregate lists included bundles")
        }
        if let c = includedCount, let included, included.count != c {
            throw ContainerError.manifestInvalid(
                "included_count is \(c), but \(ContainerPath.included) lists \(included.count) bundles")
        }
    }
    /// Site ids and model ids appear in file names, so they are plain words.
    public static func checkIdentifier(_ s: String, what: String) throws {
        guard ContainerPath.isIdentifier(s) else {
            throw ContainerError.manifestInvalid(ContainerPath.identifierRule(what, s))
        }
    }
}

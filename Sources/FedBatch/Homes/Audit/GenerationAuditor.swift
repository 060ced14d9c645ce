import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// Re-derives one generation at a time, through the code that wrote it:
/// `MergeRound` for a merge, `Collector.revertManifest` for a revert,
/// `Collector.pinnedGeneration` for a statistics pin, and
/// `Collector.generationMembers` for the layout of every one. An audit that
/// reimplemented the merge would check the reimplementation.
struct GenerationAuditor {
    let home: Home
    let verifier: Verifier
    let directories: [String]
    let decryption: BundleDecryption?
    var history = ChainHistory()
    /// Input files by payload digest, read once, when first needed.
    private var index: InputIndex?
    /// Inputs of the generation being audited that were taken by digest.
    private var vouchedCount = 0

    init(home: Home, verifier: Verifier, directories: [String], decryption: BundleDecryption?) {
        self.home = home
        self.verifier = verifier
        self.directories = directories
        self.decryption = decryption
    }

    /// A generation, re-derived as far as this home can.
    typealias Expected = (manifest: Manifest, members: [(name: String, data: Data)], inputs: Int, noiseUnchecked: Bool)

    mutating func audit(
        _ v: VerifiedContainer, pruned: Bool, parent: (v: VerifiedContainer, weights: ModelWeights)?
    ) -> AuditResult {
        let m = v.manifest
        let n = m.generation!
        func result(
            _ verdict: AuditResult.Verdict, inputs: Int = 0, _ failure: AuditError? = nil, notes: [String] = []
        )
            -> AuditResult
        {
            AuditResult(
                generation: n, digest: v.digest.hex, strategy: m.strategy?.name, verdict: verdict, inputs: inputs,
                failure: failure, notes: notes)
        }
        guard n > 0 else {
            return result(.root, notes: ["generation 0 is where the chain starts: it has no inputs to re-derive"])
        }
        guard !pruned else {
            return result(
                .missingInput,
                .missingInput("generation \(n) was pruned: only its signed manifest is kept, not its weights"))
        }
        guard let parent else {
            return result(
                .missingInput,
                .missingInput(
                    "generation \(n - 1) was pruned: its weights, the base of generation \(n), are gone"))
        }
        // A home that pins no sites' keys (a site) takes each input the
        // generation names as the sender's the signed manifest records,
        // bound by its digest; a home that pins them checks every signature.
        var vouched: [String: PinnedKey] = [:]
        func vouch(_ digest: String, _ role: Role, _ fingerprint: String) {
            vouched[digest] = PinnedKey(
                role: role, fingerprint: fingerprint, userID: "", expires: nil, path: "")
        }
        for b in m.included ?? [] where b.partial == nil { vouch(b.digest, .site(b.site), b.signer) }
        for p in m.partials ?? [] { vouch(p.digest, .site(p.region), p.signer) }
        for s in m.statistics ?? [] { vouch(s.digest, .site(s.site), s.signer) }
        verifier.vouchedInputs = vouched
        vouchedCount = 0
        defer { verifier.vouchedInputs = [:] }
        do {
            let expected: Expected
            switch m.strategy?.name {
            case "revert": expected = try revert(v, parent: parent)
            case "stats-pin": expected = try pin(v, parent: parent)
            default: expected = try merge(v, parent: parent)
            }
            var notes: [String] = []
            var skipped: Set<String> = []
            if expected.noiseUnchecked {
                skipped = [ContainerPath.tensors, ServerOptimizer.stateMember]
                notes.append(
                    "the weights were not compared: this merge added noise under [privacy], drawn from a secret "
                        + "seed kept only in the collector's noise-seeds/ (its SHA-256 matches the manifest's "
                        + "commitment when the collector audits)")
            }
            if vouchedCount > 0 {
                notes.append(
                    "\(vouchedCount) of the inputs are signed by keys this home does not pin: their own signatures "
                        + "were not checked, only that each is, byte for byte, the file whose digest the collector "
                        + "signed (pin the sites' keys, as a witness does, to check them)")
            }
            if !(m.rejected ?? []).isEmpty {
                notes.append(
                    "the \(m.rejected!.count) refusals listed are the collector's account: a refused file is no input")
            }
            if let difference = try AuditComparison.difference(
                expected: expected.manifest, members: expected.members, actual: v, skipping: skipped)
            {
                return result(
                    .mismatch, inputs: expected.inputs,
                    .mismatch(
                        "generation \(n) is not what generation \(n - 1) and its \(expected.inputs) inputs give: "
                            + difference),
                    notes: notes)
            }
            return result(
                expected.noiseUnchecked ? .reproducedExceptNoise : .reproduced, inputs: expected.inputs, notes: notes)
        } catch let e as AuditError {
            return result(e.code == "audit.mismatch" ? .mismatch : .missingInput, e)
        } catch {
            return result(.mismatch, .mismatch("generation \(n) cannot be re-derived: \(error)"))
        }
    }

    // MARK: - What wrote the generation

    /// A merge: the round replayed with the recorded strategy, rule and
    /// inputs.
    private mutating func merge(
        _ v: VerifiedContainer, parent p: (v: VerifiedContainer, weights: ModelWeights)
    ) throws -> Expected {
        let m = v.manifest
        let arch = p.weights.arch
        guard let recorded = m.strategy else { throw AuditError.mismatch("the manifest names no strategy") }
        let parameters = recorded.parameters
        let strategy = try Strategies.make(name: recorded.name, parameters: parameters, arch: arch)
        try strategy.restore(
            state: try p.v.container.members[ServerOptimizer.stateMember].map { try SafetensorsFile(bytes: $0) })
        (strategy as? RobustStrategy)?.scratchDirectory = home.layout.root
        let history = self.history
        var knowledge = MergeProtocol.Knowledge(
            current: .init(number: p.v.manifest.generation!, digest: p.v.digest.hex),
            maxExamples: Int64(Manifest.maxNumber), mergedInto: { history.mergedInto[$0] },
            lastSequence: { history.lastSequence[$0] })
        knowledge.maxStaleness = Int(parameters["max_staleness"] ?? 0)
        knowledge.generationDigest = { history.digests[$0] }
        knowledge.lastStatisticsSequence = { history.lastStatisticsSequence[$0] }
        let partials = m.partials ?? []
        let regionOf = Dictionary(partials.map { ($0.digest, $0.region) }, uniquingKeysWith: { a, _ in a })
        let included = m.included ?? []
        var siteRegions: [String: String] = [:]
        for b in included { if let d = b.partial, let r = regionOf[d] { siteRegions[b.site] = r } }
        var round = MergeRound(
            knowledge: knowledge, strategy: strategy, staleness: StalenessFunction(recorded: parameters),
            clipNorm: parameters["clip_norm"], uniformWeights: m.privacy?.noise != nil,
            regions: partials.map(\.region), siteRegions: siteRegions, base: .memory(p.weights))
        round.schema = try p.v.tabularSchema()

        // The fresh inputs in digest order, as the merge summed them.
        var fresh: [(digest: String, what: String)] = included.filter { $0.remembered == nil && $0.partial == nil }
            .map { ($0.digest, "the bundle of site \($0.site) seq \($0.seq)") }
        fresh += partials.map { ($0.digest, "the partial aggregate of region \($0.region) seq \($0.seq)") }
        fresh.sort { $0.digest < $1.digest }
        let intake = Intake(home: home, arch: arch, decryption: decryption, takesPartials: true)
        var read = 0
        for input in fresh {
            let (entry, opened) = try open(input.digest, what: input.what, intake: intake)
            read += 1
            let outcome: MergeRound.Outcome
            switch opened {
            case let .ok(b, delta): outcome = round.take(b, delta: delta, entry: entry, arrived: 0)
            case let .partial(b, sums): outcome = round.take(partial: b, sums: sums, entry: entry, arrived: 0)
            default: throw AuditError.mismatch("\(input.what) (\(input.digest)) is not an update")
            }
            try Self.require(outcome, input.what, input.digest)
        }
        // Remembered updates join after the fresh ones, by site, as
        // `Collector.remember` adds them.
        for b in included.filter({ $0.remembered != nil }).sorted(by: { $0.site < $1.site }) {
            let what = "the remembered bundle of site \(b.site) seq \(b.seq)"
            let (_, opened) = try open(b.digest, what: what, intake: intake)
            read += 1
            guard case let .ok(u, delta) = opened else { throw AuditError.mismatch("\(what) is not an update") }
            try Self.require(round.take(remembered: u, delta: delta, firstIncluded: b.remembered!), what, b.digest)
        }
        guard !round.inputs.isEmpty else { throw AuditError.mismatch("the manifest names no input to merge") }

        var noiseUnchecked = false
        if let noise = m.privacy?.noise {
            if let seed = try keptSeed(generation: m.generation!, commitment: noise.seedSha256) {
                try strategy.privatize(
                    with: GaussianNoise(seed: seed, sigma: noise.sigma, denominator: Double(noise.expectedSites)))
            } else {
                noiseUnchecked = true
            }
        }
        var (manifest, next) = try round.finish(current: p.v, rejected: m.rejected ?? [])
        if let record = m.privacy, let noise = record.noise {
            manifest.privacy = Collector.privacyRecord(
                after: p.v.manifest.privacy, noise: noise, delta: record.delta, maxEpsilon: record.maxEpsilon)
        }
        let state =
            strategy.stateTensors.map {
                [(ServerOptimizer.stateMember, SafetensorsWriter.encode($0, metadata: strategy.stateMetadata))]
            } ?? []
        let members = try Collector.generationMembers(
            weights: next, schema: p.v.container.members[TabularSchema.member], extra: state,
            rotation: Self.rotationMembers(of: v))
        let laid = try Self.layout(manifest, members, like: v)
        return (laid.manifest, laid.members, read, noiseUnchecked)
    }

    /// A revert: the restored generation's weights, which must be the
    /// chain's own generation of that number.
    private func revert(
        _ v: VerifiedContainer, parent p: (v: VerifiedContainer, weights: ModelWeights)
    ) throws
        -> Expected
    {
        let m = v.manifest
        let n = m.generation!
        guard let g = m.strategy?.parameters["generation"], let target = Int(exactly: g), (0..<(n - 1)).contains(target)
        else {
            throw AuditError.mismatch("a revert must name an earlier generation than its parent")
        }
        let path = home.layout.generation(target)
        guard FileManager.default.fileExists(atPath: path) else {
            throw AuditError.missingInput(
                "generation \(target), whose weights the revert restores, is not in \(home.layout.generations) "
                    + "(pruned?)")
        }
        let (old, tensors) = try home.openVerified(path, verifier: verifier)
        guard old.digest.hex == history.digests[target] else {
            throw AuditError.mismatch("\(path) is not the chain's generation \(target)")
        }
        let weights = try ModelWeights(arch: p.weights.arch, file: tensors)
        let manifest = Collector.revertManifest(current: p.v, restoring: target, created: m.created)
        let members = try Collector.generationMembers(
            weights: weights, schema: p.v.container.members[TabularSchema.member], extra: [],
            rotation: Self.rotationMembers(of: v))
        let laid = try Self.layout(manifest, members, like: v)
        return (laid.manifest, laid.members, 0, false)
    }

    /// A statistics pin: the bundles it lists, checked by the protocol and
    /// combined in digest order.
    private mutating func pin(
        _ v: VerifiedContainer, parent p: (v: VerifiedContainer, weights: ModelWeights)
    ) throws
        -> Expected
    {
        let m = v.manifest
        guard let schema = try p.v.tabularSchema() else {
            throw AuditError.mismatch("a statistics pin on a model without a tabular schema")
        }
        let history = self.history
        var knowledge = MergeProtocol.Knowledge(
            current: .init(number: p.v.manifest.generation!, digest: p.v.digest.hex),
            maxExamples: Int64(Manifest.maxNumber), mergedInto: { history.mergedInto[$0] },
            lastSequence: { history.lastSequence[$0] })
        knowledge.generationDigest = { history.digests[$0] }
        knowledge.lastStatisticsSequence = { history.lastStatisticsSequence[$0] }
        var round = MergeRound(
            knowledge: knowledge, strategy: try Strategies.make(name: "fedavg", parameters: [:], arch: p.weights.arch),
            staleness: StalenessFunction(kind: .constant), base: .memory(p.weights))
        round.schema = schema
        let intake = Intake(home: home, arch: p.weights.arch, decryption: decryption, takesPartials: true)
        let listed = (m.statistics ?? []).sorted { $0.digest < $1.digest }
        for s in listed {
            let what = "the statistics of site \(s.site) seq \(s.seq)"
            let (entry, opened) = try open(s.digest, what: what, intake: intake)
            guard case let .stats(b, figures) = opened else { throw AuditError.mismatch("\(what) is not statistics") }
            try Self.require(round.take(statistics: figures, of: b, entry: entry), what, s.digest)
        }
        guard let combined = try Collector.combine(round.statistics.map(\.figures)) else {
            throw AuditError.mismatch("a statistics pin that lists no statistics")
        }
        let pinned = try Collector.pinnedGeneration(
            current: p.v, schema: schema, taken: round.statistics.map { ($0.included, $0.created) },
            combined: combined, rejected: m.rejected ?? [])
        let members = try Collector.generationMembers(
            weights: p.weights, schema: pinned.schema, extra: pinned.members, rotation: Self.rotationMembers(of: v))
        let laid = try Self.layout(pinned.manifest, members, like: v)
        return (laid.manifest, laid.members, listed.count, false)
    }

    // MARK: - Inputs

    /// The input with payload digest `digest`, verified and decoded by the
    /// merge's own intake (signature by its pinned sender, model, codec).
    private mutating func open(
        _ digest: String, what: String, intake: Intake
    ) throws
        -> (DirectoryEntry, Intake.Opened)
    {
        if index == nil { index = InputIndex(directories: directories, intake: intake) }
        guard let entry = index!.files[digest], let d = Digest(hex: digest), let status = try entryStatus(entry) else {
            let searched = directories.filter { FileManager.default.fileExists(atPath: $0) }
            var why = "\(what) (\(digest)) is in none of \(searched.joined(separator: ", "))"
            if index!.unreadable > 0 {
                why += "; \(index!.unreadable) files there could not be identified (encrypted to the collector?)"
            }
            throw AuditError.missingInput(why + "; give the directory holding it with --bundles")
        }
        let opened = intake.open(.init(entry: entry, digest: d, status: status), verifier: verifier)
        switch opened {
        case .ok(let v, _) where v.signer.path.isEmpty, .partial(let v, _) where v.signer.path.isEmpty,
            .stats(let v, _) where v.signer.path.isEmpty:
            vouchedCount += 1
            return (entry, opened)
        case .refused(let error, _):
            throw AuditError.mismatch("\(what), \(entry.displayPath), does not verify: \(error)")
        case .changed:
            throw AuditError.missingInput("\(entry.displayPath) changed while it was read; run the audit again")
        default:
            return (entry, opened)
        }
    }

    /// An input the generation includes must be one the merge takes.
    private static func require(_ outcome: MergeRound.Outcome, _ what: String, _ digest: String) throws {
        switch outcome {
        case .added: return
        case .duplicate: throw AuditError.mismatch("\(what) (\(digest)) is listed twice")
        case .alreadyMerged(let g):
            throw AuditError.mismatch("\(what) (\(digest)) was already merged into generation \(g)")
        case .refused(let error):
            throw AuditError.mismatch("a merge refuses \(what) (\(digest)): \(error)")
        }
    }

    /// The seed a private merge drew its noise from, if this home keeps it
    /// (a collector's noise-seeds/), checked against the commitment.
    private func keptSeed(generation n: Int, commitment: String) throws -> [UInt8]? {
        let path = home.layout.noiseSeedPath(n)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let seed = try GaussianNoise.readSeed(path: path)
        guard GaussianNoise.commitment(to: seed) == commitment else {
            throw AuditError.mismatch(
                "\(path) does not match the noise commitment generation \(n) names (\(commitment))")
        }
        return seed
    }

    /// The re-derived generation as the writer lays it out, with its list
    /// of bundles where the audited generation has it: in `included.jsonl`,
    /// or inline for a generation written before that member existed.
    static func layout(
        _ manifest: Manifest, _ members: [(name: String, data: Data)], like v: VerifiedContainer
    ) throws
        -> (manifest: Manifest, members: [(name: String, data: Data)])
    {
        try ContainerWriter.layout(manifest: manifest, members: members, inlineIncluded: v.manifest.version < 3)
    }

    /// A key rotation's members and a change of the signer set's, as the
    /// generation carries them: they are checked when the chain adopts
    /// them (a rotation's signatures; a set change's threshold, and a
    /// co-signing signer's consent), not re-derived.
    static func rotationMembers(of v: VerifiedContainer) -> [(name: String, data: Data)] {
        v.manifest.members.filter {
            $0.name.hasPrefix(KeyRotation.Files.memberPrefix) || $0.name.hasPrefix(SignerSetChange.Files.memberPrefix)
        }.compactMap { member in
            v.container.members[member.name].map { (member.name, $0) }
        }
    }
}

extension StalenessFunction {
    /// The rule a manifest records with its strategy: hinge names b,
    /// polynomial only a, constant neither (`MergeRound.stalenessParameters`).
    init(recorded p: [String: Double]) {
        if let b = p["staleness_b"] {
            self.init(kind: .hinge, a: p["staleness_a"] ?? 0.5, b: b)
        } else if let a = p["staleness_a"] {
            self.init(kind: .polynomial, a: a)
        } else {
            self.init(kind: .constant)
        }
    }
}

/// Every file of some directories that could be an input, by the payload
/// digest its statement names (read from the file's end, nothing verified:
/// `Intake.open` verifies the one an audit picks).
struct InputIndex {
    var files: [String: DirectoryEntry] = [:]
    /// Files whose statement could not be read.
    var unreadable = 0

    init(directories: [String], intake: Intake) {
        for dir in directories {
            guard let entries = try? listDirectory(dir) else { continue }
            let clock = wallClock()
            for entry in entries.sorted(by: { $0.name.lexicographicallyPrecedes($1.name) }) {
                switch intake.identify(entry, settle: 0, clock: clock) {
                case .ready(let id):
                    if files[id.digest.hex] == nil { files[id.digest.hex] = entry }
                case .refused: unreadable += 1
                case .waiting: continue
                }
            }
        }
    }
}

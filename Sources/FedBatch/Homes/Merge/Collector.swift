import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The collector side: verify the inbox, quarantine the bad, aggregate the
/// good into the next signed generation. fedbatch-merge(1) describes
/// what this does step by step.
public struct Collector {
    public let home: Home
    public let signer: PayloadSigner

    public init(home: Home, signer: PayloadSigner) throws {
        // A rotation interrupted by a crash is finished first, so that the
        // signer is checked against the key the home signs with now.
        let home = try home.completeKeyRotation()
        if home.config.key != signer.fingerprint,
            let rotated = try TrustSet.load(keysDirectory: home.layout.keys).key(for: .collector),
            rotated.fingerprint == home.config.key, rotated.validFrom > 0
        {
            throw TrustError.signingKey(
                fingerprint: signer.fingerprint,
                reason:
                    "the collector's key was rotated to \(rotated.fingerprint) from generation \(rotated.validFrom) "
                    + "(fedbatch.toml now names it): run the command again"
            )
        }
        try home.requireRole(home.config.role == .region ? .region : .collector, signer: signer)
        self.home = home
        self.signer = signer
    }

    /// Runs one merge. `minBundles` overrides the configured quorum,
    /// `maxWait` the configured wait and `settleSeconds` the settle time.
    ///
    /// Updates trained on the current generation or on one up to
    /// `merge.max_staleness` older are taken, each delta against its own
    /// base, its contribution scaled by the staleness function. A
    /// generation is written when the quorum passed, or when the oldest
    /// passing bundle arrived at least `maxWait` seconds ago (FedBuff's
    /// buffer with a timeout): a late site's lone bundle waits no longer.
    ///
    /// The files are summed in digest order (float64 addition is not
    /// associative, and a fixed order makes the result byte-identical on any
    /// machine). So the digests come first, in a pass that only hashes, a
    /// piece at a time; then two workers verify and decode the bundles in
    /// that order, each with its own gpg, while this thread checks the
    /// protocol and adds each delta as it arrives. At most three bundles are
    /// in memory at once, and none can be larger than the model allows.
    ///
    /// Under `[privacy]` the merge is centrally differentially private (see
    /// `GaussianNoise`): it first checks that the cumulative ε after it stays
    /// within privacy.max_epsilon, and refuses before touching the inbox if
    /// not. `noiseSeed` replays an earlier merge's noise for an audit;
    /// otherwise a fresh seed is drawn and kept in noise-seeds/.
    public func merge(
        minBundles: Int? = nil, maxWait: Double? = nil, settleSeconds: Double? = nil, strategyName: String? = nil,
        noiseSeed: [UInt8]? = nil, now: Date = Date(),
        progress: (MergeProgress) -> Void = { _ in }
    ) throws -> MergeReport {
        let lock = try home.lock()
        defer { withExtendedLifetime(lock) {} }
        holdLockForTests()
        Filing.removeCrashLeftovers(home.layout)
        let settings = home.config.merge
        // The run holds `progress` only while this call lasts.
        return try withoutActuallyEscaping(progress) { progress in
            let run = MergeRun(
                quorum: minBundles ?? settings.minBundles, maxWait: maxWait ?? settings.maxWait,
                settleSeconds: settleSeconds ?? settings.settleSeconds,
                strategyName: strategyName ?? settings.strategy, now: now, progress: progress)
            // A regional collector's merge is its own workflow (Region.swift):
            // it writes a partial aggregate, not a generation.
            if home.config.role == .region {
                guard noiseSeed == nil else {
                    throw PrivacyError.badSeed(
                        "a regional collector has no [privacy] table, so its merges draw no noise")
                }
                return try mergeRegion(run)
            }
            return try mergeRoot(run, noiseSeed: noiseSeed)
        }
    }

    /// The collector's merge: gather the inbox into a round, then sign and
    /// write the next generation.
    private func mergeRoot(_ run: MergeRun, noiseSeed: [UInt8]?) throws -> MergeReport {
        let verifier = try home.verifier()
        if let spill = try streamingSpill(strategyName: run.strategyName) {
            var refused: [MergeReport.Rejection] = []
            while true {
                do {
                    return try mergeStreaming(run, noiseSeed: noiseSeed, verifier: verifier, spill: spill)
                        .addingRejections(refused)
                } catch let restart as StreamingRestart {
                    // A sum left the exact grid: the bundle adding whole
                    // would refuse is refused, and the merge runs again.
                    refused.append(restart.rejection)
                }
            }
        }
        let (current, currentWeights, ledger) = try prepareToWrite(verifier: verifier)
        try home.checkNoWaitingProposal(for: current.manifest.generation! + 1)
        let strategy = try makeStrategy(run, current: current, arch: currentWeights.arch)
        try checkMemory(strategy: strategy)
        let release = try privateRelease(strategy: strategy, current: current.manifest, seed: noiseSeed)
        var round = try makeRound(
            current: current, base: .memory(currentWeights), ledger: ledger, strategy: strategy, release: release,
            root: true)
        var outcomes = MergeOutcomes()
        if let waiting = try gather(
            run, into: &round, strategy: strategy, arch: currentWeights.arch, verifier: verifier, ledger: ledger,
            outcomes: &outcomes)
        {
            return waiting
        }
        // Remembered updates join once the fresh ones made the quorum.
        let forgotten = try remember(into: &round, current: current, arch: currentWeights.arch, ledger: ledger)
        run.progress(.init(phase: .write, done: 0, total: 1, file: nil))
        var report = try writeGeneration(
            round: round, strategy: strategy, current: current, ledger: ledger, release: release, quorum: run.quorum,
            outcomes: outcomes)
        report.remembered = round.remembered
        report.forgotten = forgotten
        return report
    }

    /// The strategy a merge adds to, resumed from the state the current
    /// generation carries (a server optimiser's moments).
    func makeStrategy(
        _ run: MergeRun, current: VerifiedContainer, arch: ModelArchitecture
    ) throws -> AggregationStrategy {
        let strategy = try Strategies.make(
            name: run.strategyName, parameters: home.config.merge.strategyParameters, arch: arch)
        try strategy.restore(
            state: try current.container.members[ServerOptimizer.stateMember].map { try SafetensorsFile(bytes: $0) })
        // A robust rule spills the deltas next to the home's other files, on
        // a file system sized for them, not in a small /tmp.
        (strategy as? RobustStrategy)?.scratchDirectory = home.layout.root
        return strategy
    }

    /// The steps every merge shares, root or region: pass 1 identifies the
    /// settled inbox entries and fixes their order by payload digest; pass 2
    /// verifies and decodes them on two workers, each with its own gpg,
    /// while this thread checks the protocol and adds each to `round` in
    /// that order. Then the quorum: nil when the round should be written,
    /// or the report of a merge that writes nothing (the inputs that passed
    /// wait in the inbox).
    func gather(
        _ run: MergeRun, into round: inout MergeRound, strategy: AggregationStrategy, arch: ModelArchitecture,
        verifier: Verifier, ledger: Ledger, outcomes: inout MergeOutcomes, spill: ContainerReader.Spill? = nil
    ) throws -> MergeReport? {
        run.progress(.init(phase: .identify, done: 0, total: 0, file: nil))
        var intake = Intake(home: home, arch: arch, decryption: signer.decryption)
        intake.spill = spill
        let ordered = try identifyInbox(
            intake, settle: run.settleSeconds, ledger: ledger, now: run.now, outcomes: &outcomes)
        try open(
            ordered, with: intake, into: &round, verifier: verifier, ledger: ledger, now: run.now,
            outcomes: &outcomes, progress: run.progress)
        // Statistics are combined by `fedbatch stats --pin`, not by a merge.
        for s in round.statistics {
            outcomes.wait(
                s.file, "statistics of site \(s.included.site) passed every check; waiting for fedbatch stats --pin")
        }

        let inputs = round.inputs
        let oldestWait = inputs.map { run.now.timeIntervalSince1970 - $0.arrived }.max() ?? 0
        // A rule that cannot run on this many bundles (Krum with too few for
        // its f) waits for more, whatever the quorum and the wait say.
        let strategyRefusal = inputs.isEmpty ? nil : strategy.refusal(count: inputs.count)
        if !inputs.isEmpty, strategyRefusal == nil, inputs.count >= run.quorum || oldestWait >= run.maxWait {
            return nil
        }
        // Bundles that passed stay in the inbox for a later run.
        for input in inputs {
            outcomes.wait(
                input.entry,
                strategyRefusal.map { "passed every check; waiting, because \($0)" }
                    ?? "passed every check; waiting for a quorum of \(run.quorum) (\(inputs.count) passed) or for "
                    + "the oldest to have waited merge.max_wait (\(Int(run.maxWait)) s; \(Int(oldestWait)) s so far)"
            )
        }
        let outcome: MergeReport.Outcome = inputs.isEmpty && outcomes.rejected.isEmpty ? .empty : .belowQuorum
        return outcomes.report(
            outcome, quorum: run.quorum, passed: inputs.count, strategy: type(of: strategy).name)
    }

    /// Pass 2 over `ordered`: two workers verify and decode, each with its
    /// own gpg, while this thread checks the protocol and adds each input to
    /// `round` in that order, filing what fails.
    func open(
        _ ordered: [Intake.Identified], with intake: Intake, into round: inout MergeRound, verifier: Verifier,
        ledger: Ledger, now: Date, outcomes: inout MergeOutcomes, progress: (MergeProgress) -> Void
    ) throws {
        let verifiers = [verifier, try home.verifier()]
        try round.prefetch(digests: ordered.map(\.digest.hex), sites: ordered.compactMap(\.site))
        var failure: Error?
        var taken = round, settled = outcomes
        Parallel.orderedPipeline(
            count: ordered.count, workers: 2, inFlight: 3,
            produce: { i, worker in intake.open(ordered[i], verifier: verifiers[worker]) },
            consume: { i, opened in
                guard failure == nil else { return }
                do {
                    try settle(ordered[i], opened, in: &taken, ledger: ledger, now: now, outcomes: &settled)
                } catch {
                    failure = error
                }
                progress(.init(phase: .verify, done: i + 1, total: ordered.count, file: ordered[i].entry.displayPath))
            })
        round = taken
        outcomes = settled
        if let failure { throw failure }
    }

    /// Pass 1: the settled entries in digest order; the others wait or are
    /// refused here (and filed).
    func identifyInbox(
        _ intake: Intake, settle: Double, ledger: Ledger, now: Date, outcomes: inout MergeOutcomes
    ) throws -> [Intake.Identified] {
        let entries = try listDirectory(home.layout.inbox)
        var ordered: [Intake.Identified] = []
        for (entry, identity) in zip(entries, intake.identifyAll(entries, settle: settle)) {
            switch identity {
            case .ready(let identified): ordered.append(identified)
            case .waiting(let why): outcomes.wait(entry, why)
            case .refused(let error):
                try fileRefusal(entry, into: &outcomes) {
                    try refuse(entry, error: error, bundleDigest: nil, ledger: ledger, now: now)
                }
            }
        }
        // Equal digests are copies of one payload; the name breaks the tie so
        // that which copy counts is the same on every run.
        ordered.sort { a, b in
            a.digest != b.digest ? a.digest < b.digest : a.entry.name.lexicographicallyPrecedes(b.entry.name)
        }
        return ordered
    }

    /// The round a merge adds its inputs to: the protocol's knowledge from
    /// state.db, and the strategy with the clip, the staleness rule and, at
    /// a root, who the regions are and which sites each serves.
    func makeRound(
        current: VerifiedContainer, base: MergeRound.Base, ledger: Ledger, strategy: AggregationStrategy,
        release: (settings: PrivacySettings, noise: GaussianNoise, record: Manifest.Privacy)?, root: Bool
    ) throws -> MergeRound {
        let settings = home.config.merge
        let lookups = LedgerLookups(ledger)
        var knowledge = MergeProtocol.Knowledge(
            current: .init(number: current.manifest.generation!, digest: current.digest.hex),
            maxExamples: settings.maxExamples,
            mergedInto: { try lookups.mergedInto($0) }, lastSequence: { try lookups.lastSequence($0) })
        knowledge.prefetch = { try lookups.prefetch(digests: $0, sites: $1) }
        knowledge.acceptedCodecs = settings.acceptCodecs
        knowledge.maxStaleness = settings.maxStaleness
        let digests = try ledger.generationDigests()
        knowledge.generationDigest = { digests[$0] }
        // Under [privacy] every delta is clipped to privacy.clip_norm (or the
        // tighter merge.clip_norm) and weighs the same.
        let clip =
            release.map { r in min(r.settings.clipNorm, settings.clipNorm ?? r.settings.clipNorm) } ?? settings.clipNorm
        knowledge.lastStatisticsSequence = { try ledger.lastStatisticsSequence(site: $0) }
        var round = MergeRound(
            knowledge: knowledge, strategy: strategy, staleness: settings.stalenessFunction, clipNorm: clip,
            uniformWeights: release != nil, regions: root ? settings.regions : [],
            siteRegions: root ? try TrustSet.siteRegions(keysDirectory: home.layout.keys) : [:], base: base)
        round.schema = try current.tabularSchema()
        round.takesStatistics = root
        return round
    }

    /// A collector's last step: the next generation from the round, signed
    /// and written (`write`), with its privacy record and optimiser state.
    func writeGeneration(
        round: MergeRound, strategy: AggregationStrategy, current: VerifiedContainer, ledger: Ledger,
        release: (settings: PrivacySettings, noise: GaussianNoise, record: Manifest.Privacy)?, quorum: Int,
        outcomes: MergeOutcomes, streamed: StreamedOutput? = nil
    ) throws -> MergeReport {
        let rejected = try ledger.pendingRejections().map { Manifest.RejectedBundle(digest: $0.id, reason: $0.reason) }
        var manifest: Manifest
        let weights: GenerationWeights
        if let streamed {
            manifest = round.manifest(current: current, rejected: rejected)
            weights = .spilled(streamed.weights)
        } else {
            let (m, next) = try round.finish(current: current, rejected: rejected)
            manifest = m
            weights = .memory(next)
        }
        if let release {
            manifest.privacy = release.record
            // The seed is kept, secret, before the generation that used it is
            // written: an audit can replay the noise (merge --noise-seed).
            try writeFileAtomically(
                Data(release.noise.seed.map { String(format: "%02x", $0) }.joined().utf8 + [0x0A]),
                to: try home.layout.noiseSeed(manifest.generation!), mode: 0o600)
        }
        let state: [(name: String, contents: ContainerWriter.Contents)] =
            streamed?.state.map { [(ServerOptimizer.stateMember, .spilled($0))] }
            ?? strategy.stateTensors.map {
                [(ServerOptimizer.stateMember, .data(SafetensorsWriter.encode($0, metadata: strategy.stateMetadata)))]
            } ?? []
        let inputs = round.inputs
        let (path, digest, stored) = try write(
            manifest, weights: weights, inputs: inputs.map { ($0.entry, $0.digest) }, ledger: ledger,
            carrying: current, contents: state)
        var report = outcomes.report(
            .merged, quorum: quorum, passed: inputs.count, strategy: type(of: strategy).name,
            generation: manifest.generation, file: path, digest: digest, accepted: accepted(round, stored: stored))
        report.privacy = manifest.privacy
        report.degenerate = strategy.degeneracy(count: inputs.count)
        return report
    }

    /// The report's accepted inputs, where each is now: in accepted/ under
    /// the name `stored` records (nil: the name it had).
    func accepted(_ round: MergeRound, stored: [String: String]?) -> [MergeReport.Accepted] {
        zip(round.inputs, round.summaries).map { input, b in
            MergeReport.Accepted(
                name: input.entry.displayName,
                file: "\(home.layout.accepted)/\(stored?[input.digest] ?? input.entry.displayName)", site: b.site,
                seq: b.seq,
                digest: input.digest, numExamples: b.numExamples, weight: b.weight, base: b.base,
                staleness: b.staleness, stalenessWeight: b.stalenessWeight)
        }
    }

    /// Under [privacy]: the accounting after one more noisy generation, the
    /// refusal if it would overspend, and the noise, handed to the strategy.
    func privateRelease(
        strategy: AggregationStrategy, current: Manifest, seed: [UInt8]?
    )
        throws -> (settings: PrivacySettings, noise: GaussianNoise, record: Manifest.Privacy)?
    {
        guard let p = home.config.privacy else {
            if seed != nil {
                throw PrivacyError.badSeed("this collector has no [privacy] table, so its merges draw no noise")
            }
            return nil
        }
        let noise = GaussianNoise(
            seed: try seed ?? GaussianNoise.freshSeed(), sigma: p.sigma, denominator: Double(p.expectedSites))
        let record = Self.privacyRecord(
            after: current.privacy,
            noise: .init(
                noiseMultiplier: p.noiseMultiplier, clipNorm: p.clipNorm, expectedSites: p.expectedSites,
                sigma: p.sigma, seedSha256: GaussianNoise.commitment(to: noise.seed)),
            delta: p.delta, maxEpsilon: p.maxEpsilon)
        guard record.epsilon <= p.maxEpsilon else {
            throw PrivacyError.budgetExhausted(
                epsilon: record.epsilon, max: p.maxEpsilon, delta: p.delta, generation: current.generation! + 1)
        }
        try strategy.privatize(with: noise)
        return (p, noise, record)
    }

    /// The chain's privacy record after one more noisy merge on top of
    /// `prior`: the accountant's sum grows by this merge's term. An audit
    /// recomputes a generation's record through it.
    static func privacyRecord(
        after prior: Manifest.Privacy?, noise: Manifest.Privacy.Noise, delta: Double, maxEpsilon: Double
    ) -> Manifest.Privacy {
        let sum = (prior?.inverseSquareSum ?? 0) + RenyiAccountant.term(noiseMultiplier: noise.noiseMultiplier)
        return Manifest.Privacy(
            rounds: (prior?.rounds ?? 0) + 1, inverseSquareSum: sum,
            epsilon: RenyiAccountant.epsilon(inverseSquareSum: sum, delta: delta), delta: delta,
            maxEpsilon: maxEpsilon, noise: noise)
    }

    /// Files one entry after pass 2: added to the round, left in the inbox,
    /// quarantined, or removed as a copy of a bundle the home keeps.
    private func settle(
        _ identified: Intake.Identified, _ decoded: Intake.Opened, in round: inout MergeRound, ledger: Ledger,
        now: Date,
        outcomes: inout MergeOutcomes
    ) throws {
        let entry = identified.entry, digest = identified.digest.hex, arrived = identified.status.changed
        switch decoded {
        case .changed:
            outcomes.wait(entry, "changed while the merge read it; left for the next run")
        case let .refused(error, _) where Self.isRetiredKey(error):
            // A retired key is checked after the signature and the payload
            // digest verified, so the digest is the bundle's: a copy of one
            // merged before the key was retired is a replay, not a refusal.
            if let g = try ledger.mergedInto(digest)?.generation {
                try fileRefusal(entry, into: &outcomes) {
                    try refuseMerged(entry, digest: digest, generation: g, ledger: ledger, now: now)
                }
            } else {
                try fileRefusal(entry, into: &outcomes) {
                    try refuse(entry, error: error, bundleDigest: digest, ledger: ledger, now: now)
                }
            }
        case let .refused(error, bundleDigest):
            try fileRefusal(entry, into: &outcomes) {
                try refuse(entry, error: error, bundleDigest: bundleDigest, ledger: ledger, now: now)
            }
        case .ok, .partial, .stats:
            let outcome: MergeRound.Outcome
            let v: VerifiedContainer
            switch decoded {
            case let .ok(verified, delta):
                v = verified; outcome = round.take(verified, delta: delta, entry: entry, arrived: arrived)
            case let .partial(verified, sums):
                v = verified; outcome = round.take(partial: verified, sums: sums, entry: entry, arrived: arrived)
            case let .stats(verified, figures):
                v = verified; outcome = round.take(statistics: figures, of: verified, entry: entry)
            default: return
            }
            switch outcome {
            case .added:
                break
            case .duplicate(let first):
                // Removed once `first` is merged, as a copy of a merged bundle.
                outcomes.wait(entry, ProtocolError.duplicateInMerge(first).description)
            case .alreadyMerged(let g):
                try fileRefusal(entry, into: &outcomes) {
                    try refuseMerged(entry, digest: v.digest.hex, generation: g, ledger: ledger, now: now)
                }
            case .refused(let error):
                try fileRefusal(entry, into: &outcomes) {
                    try refuse(entry, error: error, bundleDigest: v.digest.hex, ledger: ledger, now: now)
                }
            }
        }
    }

    static func isRetiredKey(_ error: Error) -> Bool {
        if case TrustError.retiredKey = error { return true }
        return false
    }

    /// Signs and writes the next generation, then records it, then moves
    /// its inputs to accepted/, in that order: a crash at any step leaves
    /// the old or the new generation, and the next run finishes the rest
    /// (`finishInterruptedMerge`). `extra` members ride beside the weights
    /// (a server optimiser's state, a pin's combined statistics);
    /// `replacement` is a new schema for the one carried forward.
    func write(
        _ manifest: Manifest, weights next: ModelWeights, inputs kept: [(entry: DirectoryEntry, digest: String)],
        ledger: Ledger, carrying current: VerifiedContainer,
        members extra: [(name: String, data: Data)] = [], schema replacement: Data? = nil
    ) throws -> (path: String, digest: String, stored: [String: String]) {
        try write(
            manifest, weights: .memory(next), inputs: kept, ledger: ledger, carrying: current,
            contents: extra.map { ($0.name, .data($0.data)) }, schema: replacement)
    }

    /// `write` with the weights in memory or on disk (a streaming merge's),
    /// and members that may be on disk too.
    func write(
        _ manifest: Manifest, weights: GenerationWeights, inputs kept: [(entry: DirectoryEntry, digest: String)],
        ledger: Ledger, carrying current: VerifiedContainer,
        contents extra: [(name: String, contents: ContainerWriter.Contents)], schema replacement: Data? = nil
    ) throws -> (path: String, digest: String, stored: [String: String]) {
        let layout = home.layout
        let number = manifest.generation!
        // A pending key rotation rides in this generation, the last the old
        // key signs (see KeyRotation).
        let rotation = try pendingRotation()
        if let rotation {
            guard rotation.statement.fromGeneration == number + 1, rotation.statement.oldKey == signer.fingerprint
            else {
                throw HomeError.config(
                    path: TrustSet.Files.pendingRotation(in: layout.keys),
                    reason:
                        "this pending rotation is for generation \(rotation.statement.fromGeneration - 1) "
                        + "by \(rotation.statement.oldKey), not \(number) by \(signer.fingerprint); run fedbatch "
                        + "keys rotate again"
                )
            }
        }
        // A change of the signer set this signer staged rides in its
        // proposal; it takes effect from the generation after, once the
        // proposal has the current set's threshold (SignerSetChange).
        let signerSet =
            home.config.trust.signerSet ? try home.stagedSignerSet()?.from(generation: number + 1) : nil
        // The tabular schema, if the model has one, is carried forward from
        // the current generation, unless this one pins a new normalisation
        // (`fedbatch stats --pin`).
        let members = try Self.generationMembers(
            weights: weights, schema: replacement ?? current.container.members[TabularSchema.member], extra: extra,
            rotation: (rotation?.members ?? []) + (signerSet?.members ?? []))
        let path = layout.generation(number)
        var stored: [String: String] = [:]
        for k in kept { stored[k.digest] = try Filing.freeName(in: layout.accepted, for: k.entry.name) }
        // 1. the generation (temp file, fsync, rename, fsync dir), compressed
        // and hashed as it is written: members on disk (a streaming merge's)
        // are never held whole, nor is the compressed payload.
        let file = try PendingFile(in: layout.generations, prefix: ".\((path as NSString).lastPathComponent).tmp")
        let sealed = try signer.seal(manifest: manifest, members: members, into: file)
        faultPoint("before-generation-rename")
        try file.commit(as: (path as NSString).lastPathComponent, replacing: true)
        faultPoint("after-generation")
        // 2. ... then the index ...
        try ledger.recordGeneration(sealed.manifest, digest: sealed.digest.hex, file: path, stored: stored)
        faultPoint("after-ledger")
        // 3. ... then the inputs leave the inbox. A crash anywhere leaves the
        // old or the new generation, and a rerun finishes steps 2 and 3.
        for (i, k) in kept.enumerated() {
            try moveEntry(k.entry, to: layout.accepted, as: stored[k.digest]!, sync: false)
            if i == 0 { faultPoint("after-first-move") }
        }
        // One sync for all the moves: until it is done the generation is not
        // marked settled, so a crash here is finished by the next run.
        try syncDirectory(layout.accepted)
        try syncDirectory(layout.inbox)
        try ledger.markSettled(number)
        if let rotation { try home.applyRotation(rotation) }
        return (path, sealed.digest.hex, stored)
    }

    /// A generation's members in the order they are written: the weights,
    /// the tabular schema if the model has one, the `extra` members, then
    /// a key rotation's and a change of the signer set's. An audit lays out
    /// what it re-derives the same way.
    static func generationMembers(
        weights: ModelWeights, schema: Data?, extra: [(name: String, data: Data)],
        rotation: [(name: String, data: Data)]
    ) throws -> [(name: String, data: Data)] {
        [(ContainerPath.tensors, try weights.generationMember())] + (schema.map { [(TabularSchema.member, $0)] } ?? [])
            + extra + rotation
    }

    /// The same members, with the weights and the extra members possibly
    /// on disk (a streaming merge's).
    static func generationMembers(
        weights: GenerationWeights, schema: Data?, extra: [(name: String, contents: ContainerWriter.Contents)],
        rotation: [(name: String, data: Data)]
    ) throws -> [(name: String, contents: ContainerWriter.Contents)] {
        let tensors: ContainerWriter.Contents
        switch weights {
        case .memory(let w): tensors = .data(try w.generationMember())
        case .spilled(let s): tensors = .spilled(s)
        }
        return [(ContainerPath.tensors, tensors)] + (schema.map { [(TabularSchema.member, .data($0))] } ?? [])
            + extra + rotation.map { ($0.name, .data($0.data)) }
    }

    /// Files a refused entry; if the file system will not let it be moved
    /// (permissions, a full disk), the entry stays in the inbox with the
    /// reason reported, and the merge goes on with the others. A failure of
    /// state.db itself still stops the merge.
    func fileRefusal(
        _ entry: DirectoryEntry, into outcomes: inout MergeOutcomes,
        _ refuse: () throws -> MergeReport.Rejection
    ) throws {
        do {
            outcomes.refused(try refuse())
        } catch let error as FileError {
            outcomes.wait(entry, "refused, but could not be quarantined: \(error)")
        }
    }
}

/// A new generation's weights: in memory, or written by a streaming merge
/// to a scratch file (already checked chunk by chunk: float32, finite, the
/// model's layout).
enum GenerationWeights {
    case memory(ModelWeights)
    case spilled(Container.SpilledMember)
}

/// The options of one merge run, resolved against `[merge]`.
struct MergeRun {
    let quorum: Int
    let maxWait: Double
    let settleSeconds: Double
    let strategyName: String
    let now: Date
    let progress: (MergeProgress) -> Void
}

import Foundation

/// What a merge did. Every inbox entry appears once: accepted, rejected
/// (quarantined, or removed as a copy the home already keeps), or waiting.
public struct MergeReport: Sendable, Codable {
    public enum Outcome: String, Sendable, Codable { case merged, belowQuorum = "below-quorum", empty }
    public struct Rejection: Sendable, Codable {
        public let file: String
        /// SHA-256 of the file's bytes; nil for links and other non-files.
        public let digest: String?
        public let code: String
        public let message: String
        /// Its name in quarantine/, or nil when it was removed as a copy.
        public let storedAs: String?
    }
    /// An entry left in the inbox for a later run, and why.
    public struct Waiting: Sendable, Codable {
        public let file: String
        public let reason: String
    }
    public let outcome: Outcome
    public let generation: Int?
    public let file: String?
    public let digest: String?
    public let accepted: [String]
    public let rejected: [Rejection]
    public let waiting: [Waiting]
    public let quorum: Int
}

/// The collector side: verify the inbox, quarantine the bad, aggregate the
/// good into the next signed generation. fedbatch-merge(1) describes
/// what this does step by step.
public struct Collector {
    public let home: Home
    public let signer: PayloadSigner

    public init(home: Home, signer: PayloadSigner) throws {
        try home.requireRole(.collector, signer: signer)
        self.home = home
        self.signer = signer
    }


    /// One inbox entry after pass 2: verified and decoded, or refused.
    private enum Decoded: @unchecked Sendable {
        case ok(VerifiedContainer, SafetensorsFile)
        /// The entry changed between the two passes: leave it for next time.
        case changed
        case refused(Error, bundleDigest: String?)
    }

    /// Runs one merge. `minBundles` overrides the configured quorum and
    /// `settleSeconds` the configured settle time.
    ///
    /// The files are summed in digest order (float64 addition is not
    /// associative, and a fixed order makes the result byte-identical on any
    /// machine). So the digests come first, in a pass that only hashes, a
    /// piece at a time; then two workers verify and decode the bundles in
    /// that order, each with its own gpg, while this thread checks the
    /// protocol and adds each delta as it arrives. At most three bundles are
    /// in memory at once, and none can be larger than the model allows.
    public func merge(minBundles: Int? = nil, settleSeconds: Double? = nil, now: Date = Date()) throws -> MergeReport {
        let layout = home.layout
        let lock = try home.lock()
        defer { withExtendedLifetime(lock) {} }
        holdLockForTests()
        Filing.removeCrashLeftovers(layout)

        let verifier = try home.verifier()
        let (current, currentWeights) = try currentGeneration(verifier: verifier)
        let ledger = try openLedger(verifier: verifier)
        try checkAgreement(ledger: ledger, current: current)
        try finishInterruptedMerge(ledger: ledger, current: current)

        let settings = home.config.merge
        let quorum = minBundles ?? settings.minBundles
        let settle = settleSeconds ?? settings.settleSeconds
        let arch = currentWeights.arch
        let number = current.manifest.generation!
        let limits = ContainerLimits.updates(of: arch)
        var rejected: [MergeReport.Rejection] = []
        var waiting: [MergeReport.Waiting] = []

        // Pass 1: identities, from entries that have settled.
        let ordered = try identifyInbox(settle: settle, limits: limits, ledger: ledger, now: now, rejected: &rejected, waiting: &waiting)
        let order = ordered
        let home = self.home

        // Pass 2: verify, decode and add, in digest order.
        let verifiers = [verifier, try home.verifier()]
        let strategy = try Strategies.make(name: settings.strategy, parameters: settings.strategyParameters, arch: arch)
        guard type(of: strategy).access == .streaming else { throw StrategyError.needsChunkedPasses(type(of: strategy).name) }
        var included: [Manifest.IncludedBundle] = []
        var kept: [(entry: DirectoryEntry, digest: String, created: String)] = []
        let knowledge = MergeProtocol.Knowledge(
            current: .init(number: number, digest: current.digest.hex), maxExamples: settings.maxExamples,
            mergedInto: { try ledger.mergedInto($0)?.generation }, lastSequence: { try ledger.lastSequence(site: $0) })
        var rules = MergeProtocol(knowledge: knowledge)
        var digestsSeen: [Digest: String] = [:]
        var failure: Error?
        Parallel.orderedPipeline(count: ordered.count, workers: 2, inFlight: 3, produce: { i, worker in
            Self.decode(order[i].entry, expecting: order[i].digest, status: order[i].status, home: home, verifier: verifiers[worker], limits: limits)
        }, consume: { i, decoded in
            guard failure == nil else { return }
            let entry = ordered[i].entry
            do {
                switch decoded {
                case .changed:
                    waiting.append(.init(file: entry.displayName, reason: "changed while the merge read it; left for the next run"))
                case let .refused(error, bundleDigest):
                    try file(entry, into: &rejected, or: &waiting) { try refuse(entry, error: error, bundleDigest: bundleDigest, ledger: ledger, now: now) }
                case let .ok(v, tensors):
                    do {
                        let m = v.manifest
                        if let first = digestsSeen[v.digest] {
                            // Removed once `first` is merged, as a copy of a merged bundle.
                            waiting.append(.init(file: entry.displayName, reason: ProtocolError.duplicateInMerge(first).description))
                            return
                        }
                        let (site, n) = try rules.decide(m, digest: v.digest.hex)
                        let delta = try Codecs.make(name: m.codec).decode(tensors, arch: arch)
                        try strategy.check(delta: delta, base: currentWeights)
                        digestsSeen[v.digest] = entry.displayName
                        rules.accepted(site: site.id)
                        let weight = strategy.weight(examples: n)
                        strategy.add(delta: delta, weight: weight)
                        included.append(.init(digest: v.digest.hex, site: site.id, signer: v.signer.fingerprint, seq: site.seq, numExamples: n, weight: weight))
                        kept.append((entry, v.digest.hex, m.created))
                    } catch ProtocolError.alreadyMerged(let g) {
                        try file(entry, into: &rejected, or: &waiting) { try refuseMerged(entry, digest: v.digest.hex, generation: g, ledger: ledger, now: now) }
                    } catch {
                        try file(entry, into: &rejected, or: &waiting) { try refuse(entry, error: error, bundleDigest: v.digest.hex, ledger: ledger, now: now) }
                    }
                }
            } catch {
                failure = error
            }
        })
        if let failure { throw failure }

        guard !kept.isEmpty, kept.count >= quorum else {
            let nothing = kept.isEmpty && rejected.isEmpty
            return MergeReport(outcome: nothing ? .empty : .belowQuorum, generation: nil, file: nil, digest: nil,
                               accepted: kept.map(\.entry.displayName), rejected: rejected, waiting: waiting, quorum: quorum)
        }
        let next = try strategy.finish(base: currentWeights)

        // The manifest holds nothing that differs between two collectors
        // given the same inputs: time is the newest input's, reasons are
        // codes, refusals are every one recorded since the last generation.
        var manifest = Manifest(kind: .generation, model: current.manifest.model, created: kept.map(\.created).max()!,
                                generation: number + 1, parent: .init(number: number, digest: current.digest.hex),
                                included: included,
                                rejected: try ledger.pendingRejections().map { .init(digest: $0.id, reason: $0.reason) },
                                strategy: .init(name: type(of: strategy).name, parameters: strategy.parameters))
        manifest.metrics = ["bundles": Double(included.count), "examples": included.reduce(0.0) { $0 + Double($1.numExamples) }]
        let (path, digest) = try write(manifest, weights: next, inputs: kept.map { ($0.entry, $0.digest) }, ledger: ledger)
        return MergeReport(outcome: .merged, generation: number + 1, file: path, digest: digest,
                           accepted: kept.map(\.entry.displayName), rejected: rejected, waiting: waiting, quorum: quorum)
    }

    /// Pass 1: every settled regular file's digest, a piece at a time, two
    /// files at once; entries still arriving wait, and entries that cannot
    /// even be identified (links, junk without a signature slot, files above
    /// the model's size) are refused here. Returns the files in digest order.
    private func identifyInbox(settle: Double, limits: ContainerLimits, ledger: Ledger, now: Date,
                               rejected: inout [MergeReport.Rejection], waiting: inout [MergeReport.Waiting])
        throws -> [(entry: DirectoryEntry, digest: Digest, status: EntryStatus)] {
        let clock = wallClock()
        let entries = try listDirectory(home.layout.inbox)
        let identities = Parallel.map(entries, workers: 2) { entry in Self.identify(entry, settle: settle, clock: clock, limits: limits) }
        var ordered: [(entry: DirectoryEntry, digest: Digest, status: EntryStatus)] = []
        for (entry, identity) in zip(entries, identities) {
            switch identity {
            case let .ready(digest, status): ordered.append((entry, digest, status))
            case .waiting(let why): waiting.append(.init(file: entry.displayName, reason: why))
            case .refused(let error): try file(entry, into: &rejected, or: &waiting) { try refuse(entry, error: error, bundleDigest: nil, ledger: ledger, now: now) }
            }
        }
        ordered.sort { $0.digest < $1.digest }
        return ordered
    }

    /// Signs and writes the next generation, then records it, then moves
    /// its inputs to accepted/, in that order: a crash at any step leaves
    /// the old or the new generation, and the next run finishes the rest
    /// (`finishInterruptedMerge`).
    private func write(_ manifest: Manifest, weights next: ModelWeights, inputs kept: [(entry: DirectoryEntry, digest: String)],
                       ledger: Ledger) throws -> (path: String, digest: String) {
        let layout = home.layout
        let number = manifest.generation!
        let sealed = try signer.seal(manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(next.named))])
        let path = layout.generation(number)
        var stored: [String: String] = [:]
        for k in kept { stored[k.digest] = try Filing.freeName(in: layout.accepted, for: k.entry.name) }
        // 1. the generation (temp file, fsync, rename, fsync dir) ...
        try writeFileAtomically(sealed.file, to: path)
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
        return (path, sealed.digest.hex)
    }

    /// Files a refused entry; if the file system will not let it be moved
    /// (permissions, a full disk), the entry stays in the inbox with the
    /// reason reported, and the merge goes on with the others. A failure of
    /// state.db itself still stops the merge.
    private func file(_ entry: DirectoryEntry, into rejected: inout [MergeReport.Rejection], or waiting: inout [MergeReport.Waiting],
                      _ refuse: () throws -> MergeReport.Rejection) throws {
        do {
            rejected.append(try refuse())
        } catch let error as FileError {
            waiting.append(.init(file: entry.displayName, reason: "refused, but could not be quarantined: \(error)"))
        }
    }

    /// Pass 1 for one entry.
    private enum Identity: @unchecked Sendable {
        case ready(Digest, EntryStatus)
        case waiting(String)
        case refused(Error)
    }

    private static func identify(_ entry: DirectoryEntry, settle: Double, clock: Double, limits: ContainerLimits) -> Identity {
        // rsync writes to a hidden temp name and renames it when complete.
        if entry.name.first == 0x2E { return .waiting("a hidden name, as rsync gives a transfer in progress; left alone") }
        do {
            guard let status = try entryStatus(entry) else { return .waiting("disappeared during the merge") }
            guard status.kind == .regular else {
                throw FileError(path: entry.displayPath, message: "is a \(status.kind.description), not a regular file; fedbatch never follows links")
            }
            let age = clock - status.changed
            if age < settle {
                return .waiting(String(format: "changed %.0f s ago; a file must be still for merge.settle_seconds (%.0f s) before it is read", max(0, age), settle))
            }
            let file = try OpenFile(entry)
            let digest = try ContainerFile.digest(of: file, limits: limits)
            guard try file.currentStatus() == file.status else { return .waiting("changed while the merge read it; left for the next run") }
            return .ready(digest, file.status)
        } catch {
            return .refused(error)
        }
    }

    /// Pass 2 for one entry: the same bytes as pass 1, verified and decoded.
    private static func decode(_ entry: DirectoryEntry, expecting digest: Digest, status: EntryStatus, home: Home,
                               verifier: Verifier, limits: ContainerLimits) -> Decoded {
        let file: OpenFile
        do {
            file = try OpenFile(entry)
            guard file.status == status else { return .changed }
        } catch {
            return (try? entryStatus(entry)) == nil ? .changed : .refused(error, bundleDigest: nil)
        }
        let v: VerifiedContainer
        do {
            v = try verifier.open(file, path: entry.displayPath, limits: limits)
        } catch {
            // The bytes verified must be the bytes the order was built on.
            if let now = try? ContainerFile.digest(of: file, limits: limits), now != digest { return .changed }
            return .refused(error, bundleDigest: nil)
        }
        guard v.digest == digest else { return .changed }
        do {
            let (v, tensors) = try home.checkBelongs(v, limits: limits)
            return .ok(v, tensors)
        } catch {
            return .refused(error, bundleDigest: v.digest.hex)
        }
    }
}

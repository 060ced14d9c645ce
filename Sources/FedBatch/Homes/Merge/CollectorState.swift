import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The collector's state around a merge: the current generation, state.db
/// and its agreement with generations/, interrupted merges, and filing
/// refused entries.
extension Home {
    /// Whether this home's inbox takes partial aggregates: a root collector,
    /// one that lists merge.regions.
    var takesPartials: Bool { config.role == .collector && !config.merge.regions.isEmpty }

    /// The caps of what this home's inbox holds: a root's partial
    /// aggregates take 16 bytes a parameter, updates far less.
    func inboxLimits(of arch: ModelArchitecture) -> ContainerLimits {
        takesPartials ? ContainerLimits.partials(of: arch) : ContainerLimits.updates(of: arch)
    }

    /// The largest file this home's inbox can legitimately hold, encrypted
    /// to the collector (a few hundred bytes more than the plain bundle).
    var largestInboxFile: Int64 {
        guard let spec = config.arch, let arch = try? ModelArchitecture(spec: spec) else {
            return ContainerLimits.default.maxFileBytes
        }
        return inboxLimits(of: arch).maxFileBytes + BundleEncryption.overhead
    }
}

extension Collector {
    /// The newest generation, verified, with weights that are all finite.
    func currentGeneration(verifier: Verifier) throws -> (VerifiedContainer, ModelWeights) {
        try currentGeneration(verifier: verifier) { try home.openGeneration($0, verifier: verifier) }
    }

    /// The current generation with its weights and optimiser state spilled
    /// to scratch files in `spill.directory`, for a merge that may stream.
    func currentGeneration(
        verifier: Verifier, spill: ContainerReader.Spill
    ) throws -> (VerifiedContainer, any TensorSource) {
        try currentGeneration(verifier: verifier) { path in
            try home.openGeneration(path, verifier: verifier) { path in
                let v = try verifier.open(try OpenFile(path: path), path: path, spill: spill)
                return (v, try home.checkBelongs(spilled: v))
            }
        }
    }

    private func currentGeneration<Weights>(
        verifier: Verifier, open: (String) throws -> (VerifiedContainer, Weights)
    ) throws -> (VerifiedContainer, Weights) {
        guard let newest = home.layout.generationNumbers().last else {
            throw HomeError.noGeneration(home.layout.generations)
        }
        let v: VerifiedContainer, weights: Weights
        do {
            (v, weights) = try open(home.layout.generation(newest))
        } catch let e as ThresholdError where home.config.role == .collector {
            // This signer's own proposal, or one it co-signed, that the
            // others have not signed yet: nothing can be built on it.
            throw SignerWait.signatures(e)
        }
        guard v.manifest.generation == newest else {
            throw HomeError.config(
                path: v.path, reason: "holds generation \(v.manifest.generation ?? -1), not \(newest)")
        }
        // A region follows the root's chain as a site does: the rotations
        // it walked through are kept, so the next walk starts here.
        if home.config.role == .region { for r in verifier.adopted { try home.record(r) } }
        // A signer keeps the change of the signer set a valid generation
        // carried: the generations after it are judged by the new set.
        for s in verifier.adoptedSignerSets { try home.record(s) }
        return (v.identityOnly(), weights)
    }

    /// What every command that writes a generation (merge, revert) does
    /// first, under the home's lock: verify the current generation, open
    /// state.db, check that the two agree, and finish a merge a crash
    /// interrupted.
    func prepareToWrite(
        verifier: Verifier
    ) throws -> (current: VerifiedContainer, weights: ModelWeights, ledger: Ledger) {
        try prepareToWrite(verifier: verifier) { try currentGeneration(verifier: verifier) }
    }

    /// `prepareToWrite` with the current generation opened by `open`.
    func prepareToWrite<Weights>(
        verifier: Verifier, open: () throws -> (VerifiedContainer, Weights)
    ) throws -> (current: VerifiedContainer, weights: Weights, ledger: Ledger) {
        let (current, weights) = try open()
        let ledger = try openLedger(verifier: verifier)
        if home.config.role == .region { try catchUp(ledger: ledger, verifier: verifier, current: current) }
        try checkAgreement(ledger: ledger, current: current)
        try finishInterruptedMerge(ledger: ledger, current: current)
        return (current, weights, ledger)
    }

    /// Opens state.db, rebuilding it from the files when it is missing or
    /// was never completed.
    func openLedger(verifier: Verifier) throws -> Ledger {
        let path = home.layout.stateDatabase
        if FileManager.default.fileExists(atPath: path) {
            let ledger = try Ledger(path: path)
            if try ledger.isComplete() { return ledger }
        }
        try rebuild(verifier: verifier)
        return try Ledger(path: path)
    }

    /// Recreates state.db from the signed generations and the reason files.
    public func rebuild(verifier: Verifier) throws {
        var gens: [(Manifest, digest: String, file: String)] = []
        // Only manifests are kept: the weights go to scratch files, freed at
        // once, so that a rebuild never holds a model in memory.
        let spill = ContainerReader.Spill(
            members: [ContainerPath.tensors, ContainerPath.optimizerState], directory: home.layout.root)
        for (_, path, pruned) in home.layout.chainFiles() {
            let v =
                pruned
                ? try verifier.openPruned(path: path)
                : try verifier.open(try OpenFile(path: path), path: path, spill: spill)
            gens.append((v.manifest, v.digest.hex, v.path))
        }
        let q = home.layout.quarantine
        let reasons = ((try? FileManager.default.contentsOfDirectory(atPath: q)) ?? []).filter {
            $0.hasSuffix(Filing.reasonSuffix)
        }.sorted()
            .compactMap { name -> Ledger.Rejection? in
                guard let r = Filing.readReason("\(q)/\(name)"), let digest = r.digest else { return nil }
                return Ledger.Rejection(id: digest, reason: r.code, stored: r.storedAs)
            }
        // A refusal already listed by a generation is not pending again.
        let reported = Set(gens.flatMap { ($0.0.rejected ?? []).map(\.digest) })
        // The collector's own evaluations are not in any signed file; keep
        // what an old (even incomplete) state.db has for generations that
        // still exist.
        let old = home.layout.stateDatabase
        let evaluations =
            FileManager.default.fileExists(atPath: old) ? (try? Ledger(path: old).evaluations()) ?? [] : []
        try Ledger.rebuild(
            at: home.layout.stateDatabase, generations: gens, quarantine: reasons.filter { !reported.contains($0.id) },
            evaluations: evaluations, stored: storedInputs(arch: gens.last.map { $0.0.model.arch }))
    }

    /// Which file in accepted/ holds each payload digest, read from the
    /// files' statements (decrypting one encrypted to the collector): what
    /// a rebuilt state.db needs to remove a replayed copy and to find a
    /// remembered update. A file that cannot be read is skipped.
    func storedInputs(arch spec: String?) -> [String: String] {
        guard let spec, let arch = try? ModelArchitecture(spec: spec),
            let entries = try? listDirectory(home.layout.accepted)
        else { return [:] }
        let limits = ContainerLimits.partials(of: arch)
        var stored: [String: String] = [:]
        for entry in entries.sorted(by: { $0.name.lexicographicallyPrecedes($1.name) }) where entry.name.first != 0x2E {
            guard let file = try? OpenFile(entry) else { continue }
            let digest =
                ((try? signer.decryption.statement(of: file, limits: limits)) ?? nil)?.payloadDigest
                ?? (try? ContainerFile.payloadDigest(of: file))
            if let digest, stored[digest.hex] == nil { stored[digest.hex] = entry.displayName }
        }
        return stored
    }

    /// state.db and generations/ must tell the same story before anything
    /// is written. If the newest generation file went missing (restored
    /// from an old backup, deleted by hand), writing the next generation
    /// would reuse its number with different contents: a fork that every
    /// site which saw the old one refuses.
    func checkAgreement(ledger: Ledger, current: VerifiedContainer) throws {
        guard let latest = try ledger.latestGeneration() else { return }
        let n = current.manifest.generation!
        let file = home.layout.generation(latest.number)
        let advice = "state.db is an index; generations/ holds the signed truth"
        if latest.number > n {
            throw ChainError.ledgerMismatch(
                generation: latest.number,
                message: """
                    state.db records generation \(latest.number) (digest \(latest.digest)), but the newest file in \
                    generations/ is generation \(n): \
                    \(file) is missing. Restore it (from a backup, or from any site's generations/, which keep the \
                    copies they received) and rerun. \
                    Merging now would write a different generation \(latest.number), which sites that saw the old one \
                    refuse as a fork. \
                    Only if generation \(latest.number) never reached any site, move state.db aside and rerun to \
                    rebuild it from the files.
                    """)
        }
        if latest.number == n, latest.digest != current.digest.hex {
            throw ChainError.ledgerMismatch(
                generation: n,
                message: """
                    \(current.path) has digest \(current.digest.hex), but state.db records generation \(n) \
                    as \(latest.digest): \
                    the file was replaced. Restore the generation state.db records, or, if the file is the right one, \
                    move state.db aside \
                    and rerun to rebuild it (\(advice)).
                    """)
        }
        if latest.number == n - 1, current.manifest.parent?.digest != latest.digest {
            throw ChainError.ledgerMismatch(
                generation: n,
                message: """
                    \(current.path) names parent \(current.manifest.parent?.digest ?? "none"), but state.db records \
                    generation \(n - 1) as \
                    \(latest.digest). Move state.db aside and rerun to rebuild it from the files if generations/ is \
                    right (\(advice)).
                    """)
        }
        try checkPrunedManifests(ledger: ledger)
        if latest.number < n - 1 {
            throw ChainError.ledgerMismatch(
                generation: n,
                message: """
                    state.db stops at generation \(latest.number) while generations/ reaches \(n). Move state.db \
                    aside and rerun to \
                    rebuild it from the files (\(advice)).
                    """)
        }
    }

    /// Pruned generations (`gNNNNNN.fbm`) are checked on every merge without
    /// a gpg process each: the statement must name the digest state.db
    /// records for that generation, and the kept manifest must hash to the
    /// digest the statement names. A manifest edited after pruning is thus
    /// caught here, not only by `fedbatch log` (which also checks the
    /// signatures).
    func checkPrunedManifests(ledger: Ledger) throws {
        let recorded = try ledger.generationDigests()
        for n in home.layout.prunedGenerationNumbers() {
            let path = home.layout.prunedGeneration(n)
            do {
                var limits = ContainerLimits.default
                limits.maxFileBytes = PrunedManifest.fileCap(limits)
                let file = try ContainerFile.read(try OpenFile(path: path), limits: limits)
                let statement = try Statement.parse(file.statement)
                guard statement.generation == n, let declared = statement.manifestDigest,
                    Digest.of(PrunedManifest.manifestBytes(of: file.payload)) == declared
                else {
                    throw StatementError.mismatch("its kept manifest does not hash to the digest its statement names")
                }
                if let d = recorded[n], statement.payloadDigest.hex != d {
                    throw StatementError.mismatch(
                        "its statement names digest \(statement.payloadDigest.hex); state.db records \(d)")
                }
            } catch {
                throw ChainError(
                    generation: n,
                    message: "\(path) was altered after pruning: \(error); restore it from a backup or a site's copy")
            }
        }
    }

    /// A crash after the generation was written but before the index or the
    /// moves completed leaves work to finish: record the newest generation
    /// and move the bundles it includes out of the inbox.
    func finishInterruptedMerge(ledger: Ledger, current: VerifiedContainer) throws {
        if try ledger.latestGeneration()?.number != current.manifest.generation {
            try ledger.recordGeneration(current.manifest, digest: current.digest.hex, file: current.path)
        }
        let number = current.manifest.generation!
        // Once settled, a copy of an included bundle is a replay for the
        // protocol checks to deal with, not leftover work.
        guard try !ledger.isSettled(number) else { return }
        // Its inputs: bundles, partial aggregates and statistics bundles.
        let m = current.manifest
        let included = Set(
            (m.included ?? []).map(\.digest) + (m.partials ?? []).map(\.digest) + (m.statistics ?? []).map(\.digest))
        let decryption = signer.decryption
        let limits = ContainerLimits.updates(of: try ModelArchitecture(spec: current.manifest.model.arch))
        for entry in try listDirectory(home.layout.inbox) where !included.isEmpty && entry.name.first != 0x2E {
            guard let file = try? OpenFile(entry) else { continue }
            // An input encrypted to the collector names its digest inside
            // the message: decrypt it (keeping only its tail) to tell.
            var digest: Digest?
            if let statement = (try? decryption.statement(of: file, limits: limits)) ?? nil {
                digest = statement.payloadDigest
            } else {
                digest = try? ContainerFile.payloadDigest(of: file)
            }
            guard let digest, included.contains(digest.hex) else { continue }
            let name = try Filing.freeName(in: home.layout.accepted, for: entry.name)
            try moveEntry(entry, to: home.layout.accepted, as: name)
            try ledger.recordStored(digest: digest.hex, name: name)
        }
        try ledger.markSettled(number)
    }

    /// Files a refused entry: recorded in state.db first (so that a crash
    /// part-way still lists it in the next generation), then its reason
    /// file, then the entry itself moves to quarantine/. A file identical
    /// to one already quarantined for the same reason is removed instead,
    /// so re-deliveries do not pile up copies.
    func refuse(
        _ entry: DirectoryEntry, error: Error, bundleDigest: String?, ledger: Ledger, now: Date
    ) throws -> MergeReport.Rejection {
        let code = reasonCode(of: error)
        let digest = Filing.fileDigest(entry, cap: home.largestInboxFile)?.hex
        let q = home.layout.quarantine
        if let digest, let known = try ledger.rejection(digest), known.reason == code, let stored = known.stored,
            try entryStatus(DirectoryEntry(directory: q, name: stored)) != nil
        {
            try removeEntry(entry)
            return .init(
                name: entry.displayName, file: nil, reasonFile: nil, digest: digest, code: code,
                message:
                    "\(error) (identical to quarantine/\(stored), refused before for the same reason; this copy was "
                    + "removed)"
            )
        }
        // A crash between the reason file and the move left the reason file
        // under the name state.db recorded: reuse it, not a second name.
        var name = try Filing.freeName(in: q, for: entry.name)
        if let digest, let stored = try ledger.rejection(digest)?.stored,
            try entryStatus(DirectoryEntry(directory: q, name: stored)) == nil
        {
            name = stored
        }
        if let digest { try ledger.recordRejection(.init(id: digest, reason: code, stored: name)) }
        let reason = Filing.Reason(
            code: code, message: describe(error), digest: digest, bundleDigest: bundleDigest, time: rfc3339(now),
            file: entry.displayName, storedAs: name)
        try Filing.writeReason(reason, to: "\(q)/\(name)\(Filing.reasonSuffix)")
        faultPoint("after-reason")
        try moveEntry(entry, to: q, as: name)
        return .init(
            name: entry.displayName, file: "\(q)/\(name)", reasonFile: "\(q)/\(name)\(Filing.reasonSuffix)",
            digest: digest, code: code, message: describe(error))
    }

    /// A genuine copy of a bundle already merged: removed when accepted/
    /// still keeps the bundle, quarantined as a replay otherwise.
    func refuseMerged(
        _ entry: DirectoryEntry, digest: String, generation: Int, ledger: Ledger, now: Date
    ) throws -> MergeReport.Rejection {
        let error = ProtocolError.alreadyMerged(generation: generation)
        if let stored = try ledger.mergedInto(digest)?.stored,
            try entryStatus(DirectoryEntry(directory: home.layout.accepted, name: stored)) != nil
        {
            try removeEntry(entry)
            return .init(
                name: entry.displayName, file: nil, reasonFile: nil,
                digest: Filing.fileDigest(entry, cap: home.largestInboxFile)?.hex, code: error.code,
                message: "\(error) (accepted/\(stored) keeps it; this copy was removed)")
        }
        return try refuse(entry, error: error, bundleDigest: digest, ledger: ledger, now: now)
    }
}

/// Why a signer's merge writes nothing yet (exit 5).
public enum SignerWait: Error, Sendable, ReasonCoded, CustomStringConvertible {
    /// The newest generation here lacks the signers' threshold.
    case signatures(ThresholdError)
    /// Another signer's proposal for the next generation waits in
    /// proposals/: co-signing it keeps the set from splitting.
    case proposal(generation: Int, signer: String)

    public var code: String { "merge.awaiting-signers" }

    public var description: String {
        switch self {
        case .signatures(let e):
            return "\(e); fedbatch pull fetches the other signers' cosignatures, and a merge builds on it once they "
                + "suffice"
        case let .proposal(n, signer):
            return "signer \(signer)'s proposal for generation \(n) waits in proposals/: co-sign it (fedbatch "
                + "witness) rather than propose another, which would split the signers' votes"
        }
    }
}

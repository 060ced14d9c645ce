import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// Trust in a generation follows the chain, as TUF clients walk root
/// versions: the key that may sign generation N is the one the chain hands
/// over to N, never merely the first pinned key that happens to verify it.
///
/// A site (or a region, which follows the root's chain) knows the
/// rotations up to the last generation it accepted: they are recorded in
/// keys/rotations/ when it accepts one. To accept a newer generation N it
/// verifies every generation in between, in order, adopting each rotation
/// as it goes, and checks each parent link; a missing link stops it, since
/// the missing generation may be the one that retired the key signing N.
/// A collector signed every generation itself and records its own
/// rotations, so it has nothing to walk.
extension Home {
    /// Where trust starts: the generation this home accepted last (a site's
    /// highest in state.db, a region's newest recorded root generation).
    /// nil on a collector and on a home that has accepted nothing yet.
    func trustAnchor() throws -> (number: Int, digest: String)? {
        guard FileManager.default.fileExists(atPath: layout.stateDatabase) else { return nil }
        switch config.role {
        case .collector: return nil
        case .site: return try SiteState(path: layout.stateDatabase).highestGeneration()
        case .region: return try Ledger(path: layout.stateDatabase).latestGeneration().map { ($0.number, $0.digest) }
        // A witness's anchor is the newest generation it co-signed: what it
        // walks to must extend that.
        case .witness: return try WitnessLedger(path: layout.stateDatabase).newest()
        }
    }

    /// Brings `verifier` up to date for generation `target`: verifies the
    /// generations between the anchor and `target` in order, adopting the
    /// rotations they carry (in memory; the caller records them when it
    /// accepts `target`). Returns the digest `target` must name as its
    /// parent, when the walk established one.
    func walkTrust(to target: Int, verifier: Verifier) throws -> String? {
        guard config.role != .collector else { return nil }
        let anchor = try trustAnchor()
        let chain = layout.chainFiles()
        let first: Int
        var previous: String?
        if let anchor, anchor.number < target {
            first = anchor.number + 1
            previous = anchor.digest
        } else if let anchor, anchor.number >= target {
            // Every rotation up to the anchor is recorded: nothing to walk.
            return nil
        } else {
            // Nothing accepted yet: trust starts at the oldest generation
            // here, verified with the key pinned at init.
            first = chain.first.map { min($0.number, target) } ?? target
        }
        let files = Dictionary(
            chain.map { ($0.number, ($0.path, $0.pruned)) }, uniquingKeysWith: { a, _ in a })
        for n in first..<max(first, target) {
            guard let (path, pruned) = files[n] else {
                throw ChainError(
                    generation: n,
                    message:
                        "missing: generation \(target) is trusted only through every generation before it, since any "
                        + "of them may rotate the collector's key; fetch generations \(n) to \(target - 1) "
                        + "(fedbatch pull)",
                    code: "chain.gap")
            }
            let v: VerifiedContainer
            do {
                v = pruned ? try verifier.openPruned(path: path) : try verifier.open(path: path)
            } catch {
                throw ChainError(
                    generation: n,
                    message: "\(path) does not verify, so generation \(target) cannot be trusted through it: \(error)",
                    code: reasonCode(of: error))
            }
            guard v.manifest.kind == .generation, v.manifest.generation == n else {
                throw ChainError(
                    generation: n, message: "\(path) holds generation \(v.manifest.generation ?? -1), not \(n)")
            }
            if let previous, v.manifest.parent?.digest != previous {
                throw ChainError(
                    generation: n,
                    message:
                        "names parent \(v.manifest.parent?.digest ?? "none"), but generation \(n - 1) is \(previous)")
            }
            // Under a signer set every link must have its threshold: a
            // generation after one that lacks it is trusted through nothing.
            if config.trust.signerSet {
                do { try requireSignatures(v, verifier: verifier) } catch {
                    throw ChainError(
                        generation: n, message: "\(path): \(error)", code: reasonCode(of: error))
                }
            }
            if pruned {
                // Only the manifest is left: its rotation cannot be read.
                if v.manifest.members.contains(where: { $0.name.hasPrefix(KeyRotation.Files.memberPrefix) }),
                    !verifier.trust.keys.contains(where: { $0.role == .collector && $0.validFrom == n + 1 })
                {
                    throw ChainError(
                        generation: n,
                        message:
                            "\(path) is pruned, but generation \(n) carried a key rotation this home has not "
                            + "recorded; fetch the whole generation",
                        code: "chain.gap")
                }
                if v.manifest.members.contains(where: { $0.name.hasPrefix(SignerSetChange.Files.memberPrefix) }),
                    !verifier.trust.signerSets.contains(where: { $0.statement.fromGeneration == n + 1 })
                {
                    throw ChainError(
                        generation: n,
                        message:
                            "\(path) is pruned, but generation \(n) carried a change of the signer set this home "
                            + "has not recorded; fetch the whole generation",
                        code: "chain.gap")
                }
            } else {
                do { try adoptTrustChanges(carriedBy: v, verifier: verifier) } catch {
                    throw ChainError(
                        generation: n,
                        message: "\(path) carries a key rotation or signer set that does not verify: \(error)",
                        code: reasonCode(of: error))
                }
            }
            previous = v.digest.hex
        }
        return previous
    }

    /// The generation number a file claims in its statement, read without
    /// trusting it: only to choose which links to walk before the file is
    /// verified (the verified manifest must then say the same).
    func claimedGeneration(_ path: String) -> Int? {
        // The statement alone, from the file's last bytes: not the payload,
        // which is as large as the model.
        guard let handle = try? OpenFile(path: path), let statement = try? ContainerFile.statement(of: handle),
            statement.kind == .generation
        else { return nil }
        return statement.generation
    }

    /// Opens a generation file after walking the chain to it: the checks of
    /// `openVerified`, a signer the walk hands the number to, the parent
    /// link, and no fork of a generation this home accepted before.
    func openTrusted(_ path: String, verifier: Verifier) throws -> (VerifiedContainer, SafetensorsFile) {
        try openTrusted(path, verifier: verifier) { try openVerified($0, verifier: verifier) }
    }

    /// `openTrusted` with the file itself opened by `open`.
    func openTrusted<Tensors>(
        _ path: String, verifier: Verifier, open: (String) throws -> (VerifiedContainer, Tensors)
    ) throws -> (VerifiedContainer, Tensors) {
        var parent: String?
        if let n = claimedGeneration(path) { parent = try walkTrust(to: n, verifier: verifier) }
        let (v, tensors) = try open(path)
        if v.manifest.kind == .generation, let n = v.manifest.generation {
            if let parent, v.manifest.parent?.digest != parent {
                throw ChainError(
                    generation: n,
                    message: "names parent \(v.manifest.parent?.digest ?? "none"), but generation \(n - 1) is \(parent)"
                )
            }
            if config.role == .site, FileManager.default.fileExists(atPath: layout.stateDatabase) {
                do {
                    try SiteState(path: layout.stateDatabase).check(
                        generation: n, digest: v.digest.hex, rollback: false)
                } catch let e as SiteStateError {
                    throw ChainError(generation: n, message: "\(e)", code: e.code)
                }
            }
        }
        return (v, tensors)
    }
}

import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// Who signs one generation, and how many of them must: the set in
/// fedbatch.toml (`[trust] signers`, `threshold`) from generation 1, then
/// each change of the set the chain carried (`SignerSetChange`), from the
/// generation after the one that carried it.
public struct SignerRule: Sendable, Equatable {
    public let threshold: Int
    /// Each signer's id, and the fingerprints that sign for it.
    public let keys: [String: Set<String>]
    /// The first generation the rule judges.
    public let fromGeneration: Int

    public var ids: [String] { keys.keys.sorted() }

    /// The signer `fingerprint` signs for under this rule, if any.
    public func id(of fingerprint: String) -> String? {
        keys.first { $0.value.contains(fingerprint.uppercased()) }?.key
    }
}

extension Home {
    /// The rule that judges generation `n`, from the sets `trust` holds
    /// (those recorded in keys/signer-sets/ and those a walk adopted).
    public func signerRule(for n: Int, trust: TrustSet) -> SignerRule {
        if let change = trust.signerSets.last(where: { $0.statement.fromGeneration <= n }) {
            return SignerRule(
                threshold: change.statement.threshold,
                keys: Dictionary(uniqueKeysWithValues: change.statement.signers.map { ($0.id, [$0.fingerprint]) }),
                fromGeneration: change.statement.fromGeneration)
        }
        // The set of fedbatch.toml signs with the keys `keys add --signer`
        // pinned in keys/signers/.
        let pinnedDirectory = TrustSet.Files.signerKeys(in: layout.keys) + "/"
        var keys: [String: Set<String>] = [:]
        for id in config.trust.signers { keys[id] = [] }
        for k in trust.keys where k.path.hasPrefix(pinnedDirectory) {
            if case .signer(let id) = k.role, keys[id] != nil { keys[id]!.insert(k.fingerprint) }
        }
        return SignerRule(threshold: config.trust.threshold, keys: keys, fromGeneration: 1)
    }

    /// The rule for the next generation this home would write or co-sign.
    public func currentSignerRule(trust: TrustSet) -> SignerRule {
        signerRule(for: (layout.generationNumbers().last ?? 0) + 1, trust: trust)
    }

    /// Adopts what generation `v` hands to the generations after it: a key
    /// rotation, and a change of the signer set. A change counts only from
    /// a generation that has the threshold of the set that signed it, so
    /// the old set's signatures are what brings the new set in.
    func adoptTrustChanges(carriedBy v: VerifiedContainer, verifier: Verifier) throws {
        try verifier.adoptRotation(carriedBy: v)
        guard v.container.members.keys.contains(where: { $0.hasPrefix(SignerSetChange.Files.memberPrefix) }) else {
            return
        }
        guard config.trust.signerSet else {
            throw SignerSetError.invalid(
                "generation \(v.manifest.generation ?? -1) carries a change of the signer set, and this home has no "
                    + "[trust] threshold")
        }
        try requireSignatures(v, verifier: verifier)
        try verifier.adoptSignerSet(carriedBy: v)
    }

    /// Keeps a change of the signer set this home accepted, so later runs
    /// judge the generations after it by the new set; a staged change it
    /// matches is done.
    func record(_ change: SignerSetChange) throws {
        let dest =
            "\(TrustSet.Files.signerSets(in: layout.keys))/"
            + SignerSetChange.directoryName(fromGeneration: change.statement.fromGeneration)
        if !FileManager.default.fileExists(atPath: dest) { try change.write(to: dest) }
        faultPoint("after-signer-set-recorded")
        try dropStagedSetInEffect()
    }

    /// The change of the signer set this signer staged, if any and not in
    /// effect already.
    public func stagedSignerSet() throws -> SignerSetChange? {
        try dropStagedSetInEffect()
        let path = TrustSet.Files.pendingSignerSet(in: layout.keys)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try SignerSetChange.load(directory: path, staged: true)
    }

    /// Drops the staged change if it is the set in effect (recorded last):
    /// carried again, it would change nothing. That is the case after a
    /// record, and after a run killed between recording and dropping.
    private func dropStagedSetInEffect() throws {
        let path = TrustSet.Files.pendingSignerSet(in: layout.keys)
        guard FileManager.default.fileExists(atPath: path) else { return }
        let recorded = TrustSet.Files.signerSets(in: layout.keys)
        guard
            let newest = ((try? FileManager.default.contentsOfDirectory(atPath: recorded)) ?? []).filter({
                !$0.hasPrefix(".")
            }).max(),
            let current = try? SignerSetChange.load(directory: "\(recorded)/\(newest)", staged: false),
            current.sameSet(as: try SignerSetChange.load(directory: path, staged: true))
        else { return }
        try FileManager.default.removeItem(atPath: path)
    }

    /// `keys signers --set`: stages a change to `ids` with `threshold`, each
    /// signer with the key the current set names for it or, for a new one,
    /// the key pinned with `keys add --signer`. The next generation this
    /// signer proposes carries it, and this signer co-signs another's
    /// proposal that carries a change only if it is this one.
    public func stageSignerSet(ids: [String], threshold: Int) throws -> SignerSetChange {
        _ = try ownSignerID()
        guard Set(ids).count == ids.count else {
            throw HomeError.config(path: layout.keys, reason: "the new set names a signer twice")
        }
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        let trust = try TrustSet.load(keysDirectory: layout.keys)
        let rule = currentSignerRule(trust: trust)
        var chosen: [String: (fingerprint: String, key: Data)] = [:]
        for id in ids {
            guard ContainerPath.isIdentifier(id) else { throw HomeError.invalidName(what: "signer id", value: id) }
            let fingerprint: String
            if let current = rule.keys[id], current.count == 1 {
                fingerprint = current.first!
            } else {
                let pinned = trust.keys.filter { $0.role == .signer(id) && !$0.retired }
                guard pinned.count == 1 else {
                    throw HomeError.config(
                        path: layout.keys,
                        reason: pinned.isEmpty
                            ? "no key is pinned for signer \(id); pin it first with fedbatch keys add --signer \(id)"
                            : "several keys are pinned for signer \(id); keep one")
                }
                fingerprint = pinned[0].fingerprint
            }
            let key = trust.keys.first { $0.fingerprint == fingerprint && $0.role == .signer(id) }!
            chosen[id] = (fingerprint, try readFile(key.path, cap: 1 << 20))
        }
        let change = try SignerSetChange.create(model: config.modelID, threshold: threshold, signers: chosen)
        if change.statement.signers.map(\.id) == rule.ids, threshold == rule.threshold,
            change.statement.signers.allSatisfy({ rule.keys[$0.id] == [$0.fingerprint] })
        {
            throw HomeError.config(path: layout.config, reason: "that is the current set: nothing to change")
        }
        try change.write(to: TrustSet.Files.pendingSignerSet(in: layout.keys))
        return change
    }

    /// `keys signers --cancel`.
    public func cancelStagedSignerSet() throws -> Bool {
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        let path = TrustSet.Files.pendingSignerSet(in: layout.keys)
        guard FileManager.default.fileExists(atPath: path) else { return false }
        try FileManager.default.removeItem(atPath: path)
        return true
    }

    /// Whether this signer consents to the change of the signer set that a
    /// proposal carries: only the one it staged itself. nil when it does.
    func signerSetConsent(_ v: VerifiedContainer) throws -> String? {
        guard let carried = try SignerSetChange.carried(in: v.container.members) else { return nil }
        guard let staged = try stagedSignerSet() else {
            return "it carries a change of the signer set to "
                + carried.statement.signers.map(\.id).joined(separator: ", ")
                + " (threshold \(carried.statement.threshold)), and this signer staged none (fedbatch keys signers)"
        }
        guard staged.sameSet(as: carried) else {
            return "it carries a change of the signer set that differs from the one this signer staged "
                + "(fedbatch keys signers)"
        }
        return nil
    }
}

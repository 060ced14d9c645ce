import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The collector side of a key rotation, and a site's adoption of one.
///
/// On the collector, `keys rotate` only prepares: the rotation waits in
/// `keys/rotation-pending/` until the next generation is written (by a merge
/// or a revert), which carries it and is signed by the old key. So bundles
/// in transit, trained on the current generation, are merged as usual.
/// Once that generation is written and recorded, fedbatch.toml's `key`
/// becomes the new key and the rotation moves to `keys/rotations/`.
extension Collector {
    /// Prepares a rotation to `newSigner`'s key, from the generation after
    /// next. Both secret keys must be at hand: each signs the statement.
    /// Running it again replaces a rotation still pending.
    public func prepareKeyRotation(to newSigner: PayloadSigner) throws -> KeyRotation {
        let lock = try home.lock()
        defer { withExtendedLifetime(lock) {} }
        let verifier = try home.verifier()
        let (current, _) = try currentGeneration(verifier: verifier)
        guard newSigner.fingerprint != signer.fingerprint else {
            throw TrustError.signingKey(fingerprint: newSigner.fingerprint, reason: "is already the collector's key")
        }
        if let other = verifier.trust.key(fingerprint: newSigner.fingerprint) {
            throw TrustError.alreadyPinned(fingerprint: newSigner.fingerprint, role: other.role)
        }
        // The new key must pass the policy every pinned key passes.
        let scratch = try ScratchKeyring()
        let key = try KeyFile.parse(try newSigner.exportPublicKey(), path: "the new key", context: scratch.context)
        try KeyPolicy.check(key, path: "the new key \(newSigner.fingerprint)")
        let rotation = try KeyRotation.create(
            model: home.config.modelID, from: signer, to: newSigner,
            fromGeneration: current.manifest.generation! + 2)
        let pending = TrustSet.Files.pendingRotation(in: home.layout.keys)
        if FileManager.default.fileExists(atPath: pending) { try FileManager.default.removeItem(atPath: pending) }
        try rotation.write(to: pending)
        return rotation
    }

    /// The rotation waiting for the next generation, if any.
    func pendingRotation() throws -> KeyRotation? {
        let pending = TrustSet.Files.pendingRotation(in: home.layout.keys)
        guard FileManager.default.fileExists(atPath: pending) else { return nil }
        return try KeyRotation.load(directory: pending)
    }
}

extension Home {
    /// After the generation carrying `rotation` is written and recorded:
    /// fedbatch.toml names the new key, then the rotation moves from
    /// pending to `keys/rotations/`. `completeKeyRotation` finishes either
    /// step after a crash.
    func applyRotation(_ rotation: KeyRotation) throws {
        try setConfigKey(from: rotation.statement.oldKey, to: rotation.statement.newKey)
        let dest = KeyRotation.directory(of: rotation, in: layout.keys)
        try FileManager.default.createDirectory(
            atPath: TrustSet.Files.rotations(in: layout.keys), withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: dest) { try FileManager.default.removeItem(atPath: dest) }
        try moveFile(TrustSet.Files.pendingRotation(in: layout.keys), to: dest)
    }

    /// Rewrites the `key = "…"` line of fedbatch.toml, keeping the rest of
    /// the file (and an administrator's comments) as it is.
    func setConfigKey(from old: String, to new: String) throws {
        let text = String(decoding: try readFile(layout.config, cap: 1 << 20), as: UTF8.self)
        var lines = text.components(separatedBy: "\n")
        guard
            let i = lines.firstIndex(where: {
                $0.trimmingCharacters(in: .whitespaces) == "key = \"\(old)\""
                    || $0.trimmingCharacters(in: .whitespaces) == "key = \"\(new)\""
            })
        else {
            throw HomeError.config(
                path: layout.config, reason: "no line key = \"\(old)\" to change to the new key \(new); set it by hand")
        }
        lines[i] = "key = \"\(new)\""
        try writeFileAtomically(Data(lines.joined(separator: "\n").utf8), to: layout.config)
    }

    /// Finishes a rotation a crash interrupted: the generation carrying the
    /// pending rotation exists (verified, carrying exactly it), or a
    /// recorded rotation's new key is not yet in fedbatch.toml. Returns the
    /// home as its config now reads.
    public func completeKeyRotation() throws -> Home {
        guard config.role == .collector else { return self }
        let pendingDir = TrustSet.Files.pendingRotation(in: layout.keys)
        var changed = false
        if FileManager.default.fileExists(atPath: pendingDir) {
            let pending = try KeyRotation.load(directory: pendingDir)
            let carrier = layout.generation(pending.statement.fromGeneration - 1)
            if FileManager.default.fileExists(atPath: carrier) {
                let lock = try self.lock()
                defer { withExtendedLifetime(lock) {} }
                let v = try verifier().open(path: carrier)
                if try KeyRotation.carried(in: v.container.members) == pending {
                    try applyRotation(pending)
                    changed = true
                }
            }
        }
        if !changed, let newest = try TrustSet.load(keysDirectory: layout.keys).key(for: .collector),
            newest.fingerprint != config.key,
            newest.validFrom > 0
        {
            try setConfigKey(from: config.key, to: newest.fingerprint)
            changed = true
        }
        return changed ? try Home.open(layout.root, as: .collector) : self
    }

    /// Adopts, into this home's keys/rotations/ when `persist`, every
    /// rotation carried by the generations in generations/ from `first` on,
    /// verifying each in order with the keys adopted so far. A generation
    /// that does not verify is skipped: the command that needs it reports
    /// why. Returns how many rotations were new.
    @discardableResult
    public func adoptRotations(verifier: Verifier, from first: Int = 0, persist: Bool) throws -> Int {
        var adopted = 0
        for n in layout.generationNumbers() where n >= first {
            guard let v = try? verifier.open(path: layout.generation(n)) else { continue }
            if let r = try verifier.adoptRotation(carriedBy: v) {
                adopted += 1
                if persist { try record(r) }
            }
        }
        return adopted
    }

    /// Keeps a rotation a site verified, so later runs know the new key.
    func record(_ r: KeyRotation) throws {
        let dest = KeyRotation.directory(of: r, in: layout.keys)
        guard !FileManager.default.fileExists(atPath: dest) else { return }
        try r.write(to: dest)
    }
}

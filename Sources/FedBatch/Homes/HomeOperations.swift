import Foundation

/// The verdict on one file, as `fedbatch verify` reports it: the verified
/// container, or the reason code and message of the first check it failed.
public struct FileVerdict {
    public let file: String
    public let verified: VerifiedContainer?
    public let failure: (code: String, message: String)?
}

extension Home {
    /// Opens a container, verifies it against this home's pinned keys, and
    /// checks it belongs here: the home's model id, a known architecture
    /// (the home's, on a collector) and tensors that match it, all finite.
    public func openVerified(_ path: String, verifier: Verifier, limits: ContainerLimits = .default) throws -> (VerifiedContainer, SafetensorsFile) {
        try checkBelongs(try verifier.open(path: path, limits: limits), limits: limits)
    }

    /// The checks of `openVerified` on a container already verified.
    func checkBelongs(_ v: VerifiedContainer, limits: ContainerLimits = .default) throws -> (VerifiedContainer, SafetensorsFile) {
        let m = v.manifest
        guard m.model.id == config.modelID else { throw ModelMismatch.modelID(expected: config.modelID, actual: m.model.id) }
        if let arch = config.arch, arch != m.model.arch { throw ModelMismatch.arch(expected: arch, actual: m.model.arch) }
        let arch = try ModelArchitecture(spec: m.model.arch)
        let tensors = try v.container.tensors(limits: limits.safetensors)
        // A generation holds full weights; an update holds a delta in its
        // codec's layout, checked here before anything is decoded.
        if m.kind == .generation { try arch.check(tensors) } else { try Codecs.make(name: m.codec).check(tensors, arch: arch) }
        return (v, tensors)
    }

    /// Opens a generation (a path), verified as `openVerified` does, with
    /// its weights; refuses an update bundle given in its place.
    public func openGeneration(_ path: String, verifier: Verifier) throws -> (VerifiedContainer, ModelWeights) {
        let (v, tensors) = try openVerified(path, verifier: verifier)
        guard v.manifest.kind == .generation, v.manifest.generation != nil else { throw ModelMismatch.kind(expected: .generation, actual: v.manifest.kind) }
        return (v, try ModelWeights(arch: try ModelArchitecture(spec: v.manifest.model.arch), file: tensors))
    }

    /// Verifies each file independently; one bad file does not stop the rest.
    public func verify(paths: [String]) throws -> [FileVerdict] {
        let verifier = try self.verifier()
        return paths.map { path in
            do {
                let (v, _) = try openVerified(path, verifier: verifier)
                return FileVerdict(file: path, verified: v, failure: nil)
            } catch {
                return FileVerdict(file: path, verified: nil, failure: (reasonCode(of: error), "\(error)"))
            }
        }
    }

    /// Verifies a generation and writes its weights as an F32 safetensors
    /// file that `torch.nn.Module.load_state_dict(strict=True)` accepts.
    public func exportGeneration(_ path: String, to out: String) throws -> VerifiedContainer {
        let (v, weights) = try openGeneration(path, verifier: try verifier())
        let arch = weights.arch
        try SafetensorsWriter.write(weights.named, metadata: [
            "fedbatch_model": v.manifest.model.id, "fedbatch_arch": arch.description,
            "fedbatch_generation": String(v.manifest.generation!), "fedbatch_digest": v.digest.hex,
        ], to: out)
        return v
    }

    // MARK: the trust set

    /// Takes the home's lock (the one merge holds), without waiting.
    public func lock() throws -> FileLock {
        guard let lock = try FileLock.tryLock(layout.lockFile) else { throw LockHeld(path: layout.lockFile) }
        return lock
    }

    /// Pins a public key for a role: a site's key on a collector home, or
    /// the collector's key on either home. Refuses secret keys, files
    /// holding several keys, revoked, expired or weak keys, keys that cannot
    /// sign, and a key already pinned for another role. A key with the same
    /// fingerprint as the one pinned replaces it (a renewed expiry, a new
    /// subkey); a different key for a role that has one is refused. Holds
    /// the home's lock, so no merge runs meanwhile.
    public func pinKey(for role: Role, keyFile: String) throws -> (key: PinnedKey, updated: Bool) {
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        let dest: String
        switch role {
        case .site(let site):
            try Home.checkName(site, what: "site id")
            guard config.role == .collector else { throw HomeError.wrongRole(path: layout.root, expected: .collector, actual: config.role) }
            dest = layout.siteKey(site)
        case .collector:
            dest = layout.collectorKey
        }
        let trust = try TrustSet.load(keysDirectory: layout.keys)
        let candidate = try KeyCandidate.read(path: keyFile)
        try KeyPolicy.check(candidate.key, path: keyFile)
        if candidate.revoked { throw TrustError.keyFile(path: keyFile, reason: "key \(candidate.fingerprint) is revoked") }
        if candidate.expired { throw TrustError.keyFile(path: keyFile, reason: "key \(candidate.fingerprint) has expired") }
        let existing = trust.key(for: role)
        if let existing, existing.fingerprint != candidate.fingerprint {
            switch role {
            case .site(let site):
                throw TrustError.keyFile(path: keyFile, reason: "site \(site) already has key \(existing.fingerprint) pinned; remove it first (fedbatch keys remove --site \(site))")
            case .collector:
                throw TrustError.keyFile(path: keyFile, reason: "the collector's pinned key is \(existing.fingerprint); only the same key, renewed, can replace it here")
            }
        }
        if existing == nil, let other = trust.key(fingerprint: candidate.fingerprint) {
            throw TrustError.alreadyPinned(fingerprint: candidate.fingerprint, role: other.role)
        }
        try FileManager.default.createDirectory(atPath: (dest as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try writeFileAtomically(candidate.armored, to: dest)
        return (PinnedKey(role: role, fingerprint: candidate.fingerprint, userID: candidate.userID, expires: candidate.expires, path: dest), existing != nil)
    }

    /// Pins a site's key (see `pinKey`).
    public func pinSiteKey(site: String, keyFile: String) throws -> PinnedKey {
        try pinKey(for: .site(site), keyFile: keyFile).key
    }

    /// Removes a site's pinned key; bundles it signs are refused from then
    /// on. Holds the home's lock, so a merge in progress finishes first.
    public func unpinSiteKey(site: String) throws -> PinnedKey {
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        let trust = try TrustSet.load(keysDirectory: layout.keys)
        guard let key = trust.key(for: .site(site)) else {
            throw TrustError.keyFile(path: layout.siteKey(site), reason: "no key is pinned for site \(site)")
        }
        try removeEntry(DirectoryEntry(directory: layout.siteKeys, name: (key.path as NSString).lastPathComponent))
        try syncDirectory(layout.siteKeys)
        return key
    }
}

/// Another fedbatch process holds the home's lock.
public struct LockHeld: Error, CustomStringConvertible, ReasonCoded {
    public let path: String
    public var code: String { "lock.held" }
    public var description: String { "another fedbatch process holds \(path); nothing was changed" }
}

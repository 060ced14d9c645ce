import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The verdict on one file, as `fedbatch verify` reports it: the verified
/// container, or the reason code and message of the first check it failed.
public struct FileVerdict {
    public let file: String
    public let verified: VerifiedContainer?
    public let failure: (code: String, message: String)?
    /// Something a reader of the verdict should know (a retired key).
    public let note: String?
}

extension Home {
    /// Opens a container, verifies it against this home's pinned keys, and
    /// checks it belongs here: the home's model id, a known architecture
    /// (the home's, on a collector) and tensors that match it, all finite.
    public func openVerified(
        _ path: String, verifier: Verifier, limits: ContainerLimits = .default
    ) throws -> (VerifiedContainer, SafetensorsFile) {
        try checkBelongs(try verifier.open(path: path, limits: limits), limits: limits)
    }

    /// A container's model is this home's: its id, and its architecture
    /// where the home pins one.
    func checkModel(_ m: Manifest) throws -> ModelArchitecture {
        guard m.model.id == config.modelID else {
            throw ModelMismatch.modelID(expected: config.modelID, actual: m.model.id)
        }
        if let arch = config.arch, arch != m.model.arch {
            throw ModelMismatch.arch(expected: arch, actual: m.model.arch)
        }
        return try ModelArchitecture(spec: m.model.arch)
    }

    /// The checks of `openVerified` on a container already verified.
    func checkBelongs(
        _ v: VerifiedContainer, limits: ContainerLimits = .default
    ) throws -> (VerifiedContainer, SafetensorsFile) {
        let tensors = try v.container.tensors(limits: limits.safetensors)
        try checkTensors(tensors, of: v)
        return (v, tensors)
    }

    /// The same checks of a container a streaming merge opened, whose
    /// tensors may be spilled to disk (read a piece at a time).
    func checkBelongs(spilled v: VerifiedContainer, limits: ContainerLimits = .default) throws -> any TensorSource {
        let tensors = try v.container.tensorSource(limits: limits.safetensors)
        try checkTensors(tensors, of: v)
        return tensors
    }

    private func checkTensors(_ tensors: some TensorSource, of v: VerifiedContainer) throws {
        let m = v.manifest
        let arch = try checkModel(m)
        // A generation holds full weights; an update holds a delta in its
        // codec's layout, checked here before anything is decoded; a
        // partial aggregate holds exact sums.
        switch m.kind {
        case .generation: try arch.check(tensors)
        case .update: try Codecs.make(name: m.codec).check(tensors, arch: arch)
        case .partial:
            guard let tensors = tensors as? SafetensorsFile else {
                throw PartialError.tensors("a streaming merge does not take partial aggregates")
            }
            _ = try PartialAggregate(file: tensors, arch: arch, totalWeight: 0, count: 0)
        case .stats: throw ModelMismatch.kind(expected: .update, actual: .stats)
        }
    }

    /// A statistics bundle's checks after its signature: the home's model,
    /// and figures that follow every rule of fedbatch-bundle(5), STATISTICS.
    /// Whether they fit the model's schema is the merge's check, which
    /// knows the current generation.
    func checkStatistics(_ v: VerifiedContainer) throws -> DataStatistics {
        _ = try checkModel(v.manifest)
        guard let data = v.container.members[ContainerPath.statistics] else {
            throw StatisticsError.invalid("the bundle has no \(ContainerPath.statistics)")
        }
        let s = try DataStatistics.parse(data)
        guard s.rows == v.manifest.numExamples, s.sites == 1 else {
            throw StatisticsError.invalid(
                "rows \(s.rows) and sites \(s.sites) must be the manifest's num_examples "
                    + "(\(v.manifest.numExamples ?? 0)) and 1")
        }
        return s
    }

    /// Opens a generation (a path), verified as `openVerified` does after
    /// walking the chain to it (`walkTrust`: the rotations on the way are
    /// adopted into `verifier`, in memory; see `Verifier.adopted`), with its
    /// weights; refuses an update bundle given in its place.
    ///
    /// Where `[trust] min_witnesses` is set, the generation must carry that
    /// many valid cosignatures (`requireWitnesses`); `pull` alone keeps one
    /// without them, as a link of the chain.
    public func openGeneration(
        _ path: String, verifier: Verifier, requireWitnesses: Bool = true
    ) throws -> (VerifiedContainer, ModelWeights) {
        let (v, tensors) = try openGeneration(path, verifier: verifier, requireWitnesses: requireWitnesses) {
            try openVerified($0, verifier: verifier)
        }
        return (v, try ModelWeights(arch: try ModelArchitecture(spec: v.manifest.model.arch), file: tensors))
    }

    /// `openGeneration` with the file opened by `open`: a streaming merge
    /// spills the weights to disk rather than holding them.
    func openGeneration<Tensors>(
        _ path: String, verifier: Verifier, requireWitnesses: Bool = true,
        open: (String) throws -> (VerifiedContainer, Tensors)
    ) throws -> (VerifiedContainer, Tensors) {
        let (v, tensors) = try openTrusted(path, verifier: verifier, open: open)
        guard v.manifest.kind == .generation, v.manifest.generation != nil else {
            throw ModelMismatch.kind(expected: .generation, actual: v.manifest.kind)
        }
        try requireSignatures(v, verifier: verifier)
        if requireWitnesses { try self.requireWitnesses(v, verifier: verifier) }
        // The generation's own rotation or signer set applies to the ones
        // after it.
        try adoptTrustChanges(carriedBy: v, verifier: verifier)
        return (v, tensors)
    }

    /// Verifies each file independently; one bad file does not stop the rest.
    ///
    /// The audit trail survives key changes: a generation signed by a key a
    /// rotation introduced verifies once the rotations in generations/ are
    /// read (in memory), and a bundle signed by a retired site key verifies
    /// if a generation included it (state.db says which), with a note.
    ///
    /// On a collector or a region, a bundle or a partial aggregate goes
    /// through the merge's own intake (`Intake`), with the model's caps and
    /// `decryption` for files encrypted to the collector: what `verify` says
    /// of an inbox file is what the next merge will decide, short of the
    /// protocol's checks (sequence numbers, replays).
    public func verify(paths: [String], decryption: BundleDecryption? = nil) throws -> [FileVerdict] {
        let verifier = try self.verifier()
        verifier.acceptsRetiredKeys = true
        let ledger =
            config.role == .collector && FileManager.default.fileExists(atPath: layout.stateDatabase)
            ? try? Ledger(path: layout.stateDatabase) : nil
        let intake = try? mergeIntake(decryption: decryption)
        return paths.map { path in
            do {
                // A generation is trusted through the chain before it, as
                // train trusts it; any other file against the pinned keys.
                let opened: VerifiedContainer
                if path.hasSuffix(".fbm") {
                    // A pruned generation: its signed manifest is all there is.
                    if let n = claimedGeneration(path) { _ = try walkTrust(to: n, verifier: verifier) }
                    opened = try verifier.openPruned(path: path)
                } else if let intake, claimedGeneration(path) == nil {
                    opened = try intake.check(path: path, verifier: verifier)
                } else {
                    opened = try openTrusted(path, verifier: verifier).0
                    try requireSignatures(opened, verifier: verifier)
                    try requireWitnesses(opened, verifier: verifier)
                }
                var note: String?
                if opened.signer.retired {
                    guard opened.manifest.kind == .update, let g = try ledger?.mergedInto(opened.digest.hex)?.generation
                    else {
                        throw TrustError.retiredKey(fingerprint: opened.signer.fingerprint, role: opened.signer.role)
                    }
                    note =
                        "signed by \(opened.signer.fingerprint), a retired key of \(opened.signer.role); "
                        + "generation \(g) included it"
                }
                return FileVerdict(file: path, verified: opened, failure: nil, note: note)
            } catch {
                return FileVerdict(file: path, verified: nil, failure: (reasonCode(of: error), "\(error)"), note: nil)
            }
        }
    }

    /// The intake a merge of this home uses, for a collector or a region
    /// (nil for a site): its caps follow the model the home pins, or its
    /// newest generation's.
    func mergeIntake(decryption: BundleDecryption?) throws -> Intake? {
        guard config.role != .site else { return nil }
        let spec =
            try config.arch
            ?? layout.generationNumbers().last.map {
                try self.verifier().open(path: layout.generation($0)).manifest.model.arch
            }
        guard let spec else { return nil }
        return Intake(home: self, arch: try ModelArchitecture(spec: spec), decryption: decryption)
    }

    /// Verifies a generation and writes its weights as an F32 safetensors
    /// file that `torch.nn.Module.load_state_dict(strict=True)` accepts.
    public func exportGeneration(_ path: String, to out: String) throws -> VerifiedContainer {
        let (v, weights) = try openGeneration(path, verifier: try verifier())
        try Self.export(weights, of: v, to: out)
        return v
    }

    /// Writes verified `weights` of generation `v` as export does: F32
    /// safetensors whose metadata names the model, the architecture and the
    /// generation (number and digest), so that `pack` finds its base.
    static func export(_ weights: ModelWeights, of v: VerifiedContainer, to out: String) throws {
        try SafetensorsWriter.write(
            try weights.named(),
            metadata: [
                "fedbatch_model": v.manifest.model.id, "fedbatch_arch": weights.arch.description,
                "fedbatch_generation": String(v.manifest.generation!), "fedbatch_digest": v.digest.hex,
            ], to: out)
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
    /// fingerprint as one pinned replaces it (a renewed expiry, a new
    /// subkey). A site may have two keys at once, so that it can rotate its
    /// key with bundles signed by the old one still in transit; a third is
    /// refused. The collector's key changes only by a rotation
    /// (`Collector.prepareKeyRotation`). Holds the home's lock, so no merge
    /// runs meanwhile.
    public func pinKey(for role: Role, keyFile: String) throws -> (key: PinnedKey, updated: Bool) {
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        let trust = try TrustSet.load(keysDirectory: layout.keys)
        let candidate = try KeyCandidate.read(path: keyFile)
        try KeyPolicy.check(candidate.key, path: keyFile)
        if candidate.revoked {
            throw TrustError.keyFile(path: keyFile, reason: "key \(candidate.fingerprint) is revoked")
        }
        if candidate.expired {
            throw TrustError.keyFile(path: keyFile, reason: "key \(candidate.fingerprint) has expired")
        }
        let current = trust.keys(for: role)
        let same = current.first { $0.fingerprint == candidate.fingerprint }
        let dest: String
        switch role {
        case .site(let site):
            try Home.checkName(site, what: "site id")
            guard config.role != .site else {
                throw HomeError.wrongRole(path: layout.root, expected: .collector, actual: config.role)
            }
            if let same {
                dest = same.path
            } else if current.isEmpty {
                dest = layout.siteKey(site)
            } else if current.count == 1 {
                dest = TrustSet.Files.siteKey(site, fingerprint: candidate.fingerprint, in: layout.keys)
            } else {
                throw TrustError.keyFile(
                    path: keyFile,
                    reason:
                        "site \(site) already has two keys pinned "
                        + "(\(current.map(\.fingerprint).joined(separator: ", "))); remove one first (fedbatch "
                        + "keys remove --site \(site) --key FPR)"
                )
            }
        case .witness(let id), .signer(let id):
            // One key per witness or signer: its signatures are judged by the
            // key pinned now, so a different key is a deliberate change (keys
            // remove first), never a renewal.
            let kind = role == .witness(id) ? "witness" : "signer"
            try Home.checkName(id, what: "\(kind) id")
            if let other = current.first, other.fingerprint != candidate.fingerprint {
                throw TrustError.keyFile(
                    path: keyFile,
                    reason:
                        "\(kind) \(id) already has key \(other.fingerprint) pinned; remove it first (fedbatch keys "
                        + "remove --\(kind) \(id))")
            }
            dest =
                role == .witness(id)
                ? TrustSet.Files.witnessKey(id, in: layout.keys) : TrustSet.Files.signerKey(id, in: layout.keys)
        case .collector:
            guard let same, let newest = trust.key(for: .collector), same.fingerprint == newest.fingerprint else {
                throw TrustError.keyFile(
                    path: keyFile,
                    reason:
                        "the collector's pinned key is \(trust.key(for: .collector)?.fingerprint ?? "none"); only "
                        + "the same key, renewed, can replace it here (a new collector key comes by fedbatch keys "
                        + "rotate)"
                )
            }
            guard same.validFrom == 0 else {
                throw TrustError.keyFile(
                    path: keyFile,
                    reason:
                        "the collector key \(same.fingerprint) came with a rotation, whose statement fixes its "
                        + "bytes; rotate to a new key instead of renewing it"
                )
            }
            dest = layout.collectorKey
        }
        // The key that signed generation 0 may also be one of the signers.
        let genesisSigner: Bool = {
            if case .signer = role { return trust.key(fingerprint: candidate.fingerprint)?.role == .collector }
            return false
        }()
        if same == nil, !genesisSigner, let other = trust.key(fingerprint: candidate.fingerprint),
            !(other.retired && other.role == role)
        {
            throw TrustError.alreadyPinned(fingerprint: candidate.fingerprint, role: other.role)
        }
        try FileManager.default.createDirectory(
            atPath: (dest as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try writeFileAtomically(candidate.armored, to: dest)
        // A key pinned again is no longer retired.
        if case .site(let site) = role {
            let retired = "\(TrustSet.Files.retiredSiteKeys(in: layout.keys))/\(site)@\(candidate.fingerprint).asc"
            if FileManager.default.fileExists(atPath: retired) { try FileManager.default.removeItem(atPath: retired) }
        }
        return (
            PinnedKey(
                role: role, fingerprint: candidate.fingerprint, userID: candidate.userID, expires: candidate.expires,
                path: dest), same != nil
        )
    }

    /// Pins a site's key (see `pinKey`).
    public func pinSiteKey(site: String, keyFile: String) throws -> PinnedKey {
        try pinKey(for: .site(site), keyFile: keyFile).key
    }

    /// Pins `site`'s key at a root collector and records that `region`
    /// serves it: from then on the root takes that site's updates only
    /// inside the region's partial aggregates, and refuses a partial of any
    /// region that covers a site it does not serve. The region must be in
    /// merge.regions; that is checked before anything is pinned, so a
    /// refusal changes nothing.
    public func pinSiteKey(
        site: String, keyFile: String, servedBy region: String
    ) throws -> (key: PinnedKey, updated: Bool) {
        guard config.role == .collector else {
            throw HomeError.wrongRole(path: layout.root, expected: .collector, actual: config.role)
        }
        try Home.checkName(region, what: "region id")
        guard config.merge.regions.contains(region) else {
            throw HomeError.config(
                path: layout.config,
                reason: "\(region) is not in merge.regions (\(config.merge.regions.joined(separator: ", "))); "
                    + "list it there first")
        }
        guard site != region, !config.merge.regions.contains(site) else {
            throw HomeError.config(
                path: layout.config, reason: "\(site) is a regional collector; a region is not served by a region")
        }
        let pinned = try pinKey(for: .site(site), keyFile: keyFile)
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        try writeFileAtomically(Data((region + "\n").utf8), to: TrustSet.Files.siteRegion(site, in: layout.keys))
        return pinned
    }

    /// Retires a site's pinned key, or all of them when `fingerprint` is
    /// nil: bundles they sign are refused from then on. The key files move
    /// to `keys/retired/sites/`, so that `fedbatch verify` can still check
    /// the bundles they signed that a generation included. Holds the home's
    /// lock, so a merge in progress finishes first.
    /// Removes a witness's or a signer's key: its signatures count no
    /// more here.
    public func unpin(_ role: Role) throws -> PinnedKey {
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        guard let key = try TrustSet.load(keysDirectory: layout.keys).keys(for: role).first else {
            throw TrustError.keyFile(path: layout.keys, reason: "no key is pinned for \(role)")
        }
        try FileManager.default.removeItem(atPath: key.path)
        try syncDirectory((key.path as NSString).deletingLastPathComponent)
        return key
    }

    public func unpinSiteKey(site: String, fingerprint: String? = nil) throws -> [PinnedKey] {
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        let trust = try TrustSet.load(keysDirectory: layout.keys)
        let current = trust.keys(for: .site(site))
        guard !current.isEmpty else {
            throw TrustError.keyFile(path: layout.siteKey(site), reason: "no key is pinned for site \(site)")
        }
        let chosen =
            try fingerprint.map { f -> [PinnedKey] in
                let wanted = f.replacingOccurrences(of: " ", with: "").uppercased()
                guard let k = current.first(where: { $0.fingerprint == wanted }) else {
                    throw TrustError.keyFile(
                        path: layout.siteKeys,
                        reason:
                            "site \(site) has no pinned key \(f) "
                            + "(pinned: \(current.map(\.fingerprint).joined(separator: ", ")))"
                    )
                }
                return [k]
            } ?? current
        let retired = TrustSet.Files.retiredSiteKeys(in: layout.keys)
        try FileManager.default.createDirectory(atPath: retired, withIntermediateDirectories: true)
        for k in chosen {
            try moveFile(k.path, to: "\(retired)/\(site)@\(k.fingerprint).asc")
        }
        // The site's first key file keeps the plain name: a second key that
        // remains takes it.
        if let remaining = current.first(where: { k in !chosen.contains { $0.fingerprint == k.fingerprint } }),
            remaining.path != layout.siteKey(site)
        {
            try moveFile(remaining.path, to: layout.siteKey(site))
        }
        if chosen.count == current.count {
            try? FileManager.default.removeItem(atPath: TrustSet.Files.siteRegion(site, in: layout.keys))
        }
        try syncDirectory(layout.siteKeys)
        return chosen.map {
            var k = $0; k.retired = true; return k
        }
    }
}

/// Another fedbatch process holds the home's lock.
public struct LockHeld: Error, CustomStringConvertible, ReasonCoded {
    public let path: String
    public var code: String { "lock.held" }
    public var description: String { "another fedbatch process holds \(path); nothing was changed" }
}

extension VerifiedContainer {
    /// The tabular schema a generation pins, if any.
    public func tabularSchema() throws -> TabularSchema? {
        try container.members[TabularSchema.member].map(TabularSchema.parse)
    }
}

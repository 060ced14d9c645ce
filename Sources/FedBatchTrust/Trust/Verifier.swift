import FedBatchFormats
import FedBatchNative
import Foundation

/// A container whose signature verified against a pinned key, whose
/// payload passed every structural check, and whose claimed role matches
/// the key that signed it.
public struct VerifiedContainer: Sendable {
    public let path: String
    public let file: ContainerFile
    public let container: Container
    public let signer: PinnedKey
    /// The signed statement the payload matched.
    public let statement: Statement
    /// SHA-256 of the payload, computed once during verification (and equal
    /// to the one the statement names).
    public let digest: Digest
    public var manifest: Manifest { container.manifest }

    /// The same container without its compressed payload, which nothing
    /// needs once the members are read: a merge holds several bundles and
    /// the current generation at once, and each payload is as large as the
    /// model.
    package func droppingPayload() -> VerifiedContainer {
        VerifiedContainer(
            path: path, file: ContainerFile(payload: Data(), statement: file.statement, signature: file.signature),
            container: container, signer: signer, statement: statement, digest: digest)
    }

    /// Only what identifies the container (manifest, signer, digest), the
    /// tabular schema a generation carries forward and the server
    /// optimiser's state, for a generation whose weights were already
    /// copied out.
    package func identityOnly() -> VerifiedContainer {
        VerifiedContainer(
            path: path, file: ContainerFile(payload: Data(), statement: file.statement, signature: file.signature),
            container: Container(
                manifest: container.manifest, manifestBytes: container.manifestBytes,
                members: container.members.filter {
                    $0.key == ContainerPath.schema || $0.key == ContainerPath.optimizerState
                },
                spilled: container.spilled.filter { $0.key == ContainerPath.optimizerState }),
            signer: signer, statement: statement, digest: digest)
    }
}

/// Verifies containers against a home's pinned keys, in an isolated keyring
/// built once from those keys (the user's own keyring never counts).
///
/// The order is the one fedbatch-bundle(5) requires: locate the slot, check
/// the signature packet's framing, verify it over the statement with gpg,
/// check the key's state and the digest algorithm, parse the statement
/// strictly, hash the payload and compare; only then decompress and parse,
/// check that the manifest says what the statement says, and finally that
/// the signer is pinned for the role they claim.
///
/// Signatures are checked in-process by default (`SignatureVerification`):
/// gpg lists the pinned keys once and says which are valid, and fedbatch
/// checks each signature with libcrypto against the key packets it read
/// from the same files.
///
/// A verifier owns one gpgme context: use each instance from one thread at
/// a time (the merge gives each worker its own).
public final class Verifier: @unchecked Sendable {
    public private(set) var trust: TrustSet
    /// Whether a bundle signed by a retired site key verifies (for
    /// `fedbatch verify` of the audit trail; never for a merge).
    public var acceptsRetiredKeys = false
    /// For an audit on a home that pins no sites' keys (a site): inputs a
    /// verified generation names, by payload digest, with the sender and
    /// key its signed manifest records. Such a file, signed by a key this
    /// home does not pin, is taken as that sender's, bound by its digest
    /// to what the collector signed; its own signature is not checked
    /// (there is no key to check it with). Every other rule still applies.
    package var vouchedInputs: [String: PinnedKey] = [:]
    /// The rotations `adoptRotation` accepted, in order.
    public private(set) var adopted: [KeyRotation] = []
    /// The signer sets `adoptSignerSet` accepted, in order.
    public private(set) var adoptedSignerSets: [SignerSetChange] = []
    private let keyring: ScratchKeyring
    /// The keyring's keys by primary and subkey fingerprint: listed once by
    /// `init` (a lookup per signer is a gpg process each: 200 for a merge
    /// of 200 sites' bundles), and dropped for a key an adoption imports
    /// again, which is then looked up anew.
    private var keys: [String: GPGKey] = [:]
    /// Fingerprints gpg was asked about and does not list.
    private var unlisted: Set<String> = []
    /// The pinned key files, and whether they are in the scratch keyring.
    private var pinnedBlocks: [Data] = []
    private var importedPinned = false
    /// Signatures this verifier handed to gpg (every one for `.gpg`).
    package private(set) var gpgVerifications = 0
    /// The pinned keys' packets as fedbatch read them, for `.builtin`.
    private var material = PublicKeyRing()
    public let verification: SignatureVerification
    /// Strong digests only: SHA-1 and MD5 signatures are refused, and so is
    /// SHA-224, which is below the SHA-256 floor.
    static let acceptedDigests: Set<String> = ["SHA256", "SHA384", "SHA512"]

    public init(keysDirectory: String, verification: SignatureVerification = .builtin) throws {
        self.verification = verification
        keyring = try ScratchKeyring()
        let (trust, blocks, rotations, listings) = try TrustSet.load(
            keysDirectory: keysDirectory, context: keyring.context)
        for block in blocks { material.add(block) }
        // Checking in-process, gpg's listing of each pinned file (made as
        // the trust set was loaded) is all that is needed of gpg: nothing
        // is imported. Importing and listing the keyring took two gpg
        // processes more per verifier, each checking every key's
        // self-signatures again (about 6 s of CPU for 1000 pinned keys).
        // A (sub)key listed in two files is left to gpg's import, which
        // merges them as a keyring does.
        pinnedBlocks = blocks
        self.trust = trust
        let fingerprints = listings.flatMap { Set($0.subkeys.map(\.fingerprint)) }
        if verification == .builtin, Set(fingerprints).count == fingerprints.count {
            for key in listings {
                for fingerprint in key.subkeys.map(\.fingerprint) { keys[fingerprint] = key }
            }
        } else {
            try importPinned()
        }
        // Each recorded rotation must still carry both keys' signatures.
        for r in rotations {
            do { try checkSignatures(of: r) } catch {
                throw TrustError.keyFile(
                    path: KeyRotation.directory(of: r, in: keysDirectory),
                    reason: "\(error)")
            }
        }
    }

    /// Imports the pinned keys into the scratch keyring, once, and lists it:
    /// one import and one listing for all of them, not a gpg process per
    /// key (KeyFileBatch says why). Always for `.gpg`; for `.builtin` only
    /// when a key is in two files, or when gpg must judge a signature
    /// fedbatch cannot (`verifyInProcess`).
    private func importPinned() throws {
        guard !importedPinned else { return }
        var stream = Data()
        for block in pinnedBlocks {
            stream.append(block)
            stream.append(0x0A)
        }
        do {
            if !pinnedBlocks.isEmpty { try keyring.context.importKeys(stream) }
            for key in try keyring.context.allKeys() {
                for fingerprint in Set([key.fingerprint] + key.subkeys.map(\.fingerprint)) { keys[fingerprint] = key }
            }
        } catch let e as GPGError {
            throw TrustError.gpg(e.description)
        }
        importedPinned = true
    }

    /// Drops the cached listing of keys an import just changed.
    private func forgettingCached(_ imported: (fingerprints: [String], secretKeys: Int)) {
        let changed = Set(imported.fingerprints.map { $0.uppercased() })
        keys = keys.filter { !changed.contains($0.value.fingerprint.uppercased()) }
        unlisted = []
    }

    /// Both signatures of a rotation: the old key's and the new key's,
    /// each over the exact statement bytes.
    private func checkSignatures(of r: KeyRotation) throws {
        let bytes = r.statement.encoded
        for (signature, expected, who) in [
            (r.oldSignature, r.statement.oldKey, "old"), (r.newSignature, r.statement.newKey, "new"),
        ] {
            let signer = try verify(ContainerFile(payload: Data(), statement: bytes, signature: signature))
            guard signer.fingerprint == expected else {
                throw RotationError.invalid(
                    "the \(who) key's signature was made by \(signer.fingerprint), not \(expected)")
            }
        }
    }

    /// Adopts the rotation that generation `v` carries, if any: checked
    /// against `v` (verified by the key it retires, naming the next
    /// generation as the first the new key signs), the new key against the
    /// key policy, and both signatures. Returns it when it is new to this
    /// verifier, nil when `v` carries none or it was known already.
    @discardableResult
    public func adoptRotation(carriedBy v: VerifiedContainer) throws -> KeyRotation? {
        guard v.manifest.kind == .generation, let n = v.manifest.generation,
            let r = try KeyRotation.carried(in: v.container.members)
        else { return nil }
        let s = r.statement
        if let known = trust.keys.first(where: { $0.role == .collector && $0.fingerprint == s.newKey }),
            known.validFrom == s.fromGeneration
        {
            return nil
        }
        guard s.model == v.manifest.model.id else {
            throw RotationError.invalid("it names model \(s.model), not \(v.manifest.model.id)")
        }
        guard s.oldKey == v.signer.fingerprint else {
            throw RotationError.invalid(
                "generation \(n) is signed by \(v.signer.fingerprint), but the rotation replaces \(s.oldKey)")
        }
        guard s.fromGeneration == n + 1 else {
            throw RotationError.invalid(
                "generation \(n) carries a rotation from generation \(s.fromGeneration), not \(n + 1)")
        }
        guard let index = trust.keys.lastIndex(where: { $0.role == .collector }),
            trust.keys[index].fingerprint == s.oldKey,
            trust.keys[index].validUntil == nil
        else {
            throw RotationError.invalid("\(s.oldKey) is not the collector's current key here")
        }
        guard Digest.of(r.newKey).hex == s.newKeySHA256 else {
            throw RotationError.invalid("the new key does not match the SHA-256 the statement names")
        }
        let parsed: GPGKey
        do {
            parsed = try KeyFile.parse(
                r.newKey, path: "generation \(n): \(KeyRotation.Files.memberPrefix)\(KeyRotation.Files.newKey)",
                context: keyring.context)
        } catch {
            throw RotationError.invalid("\(error)")
        }
        guard parsed.fingerprint == s.newKey else {
            throw RotationError.invalid("the carried key is \(parsed.fingerprint), not \(s.newKey)")
        }
        try KeyPolicy.check(parsed, path: "the new collector key")
        if parsed.revoked || parsed.expired {
            throw RotationError.invalid("the new key \(s.newKey) is revoked or expired")
        }
        if let other = trust.key(fingerprint: s.newKey) {
            throw TrustError.alreadyPinned(fingerprint: s.newKey, role: other.role)
        }
        material.add(r.newKey)
        do { try forgettingCached(keyring.context.importKeys(r.newKey)) } catch let e as GPGError {
            throw TrustError.gpg(e.description)
        }
        let before = trust
        trust.keys[index].validUntil = s.fromGeneration - 1
        var key = PinnedKey(
            role: .collector, fingerprint: s.newKey, userID: parsed.userIDs.first ?? "",
            expires: parsed.primary.expires,
            path: v.path + ":" + KeyRotation.Files.memberPrefix + KeyRotation.Files.newKey)
        key.validFrom = s.fromGeneration
        trust.keys.append(key)
        do { try checkSignatures(of: r) } catch {
            trust = before
            throw error
        }
        adopted.append(r)
        return r
    }

    /// Adopts the change of the signer set that generation `v` carries, if
    /// any: for the generations from the next one on. The caller has
    /// checked that `v` has the threshold of the set it was signed under
    /// (`Home.adoptTrustChanges`); here the change itself is checked: the
    /// model, the next generation as its first, and each key against the
    /// statement, the key policy, and the roles pinned here (a key may be
    /// pinned for the same signer already, never for another role). Returns
    /// it when it is new to this verifier.
    @discardableResult
    public func adoptSignerSet(carriedBy v: VerifiedContainer) throws -> SignerSetChange? {
        guard v.manifest.kind == .generation, let n = v.manifest.generation,
            let change = try SignerSetChange.carried(in: v.container.members)
        else { return nil }
        let s = change.statement
        if trust.signerSets.contains(change) { return nil }
        guard s.model == v.manifest.model.id else {
            throw SignerSetError.invalid("it names model \(s.model), not \(v.manifest.model.id)")
        }
        guard s.fromGeneration == n + 1 else {
            throw SignerSetError.invalid(
                "generation \(n) carries a signer set from generation \(s.fromGeneration), not \(n + 1)")
        }
        if let last = trust.signerSets.last, last.statement.fromGeneration >= s.fromGeneration {
            throw SignerSetError.invalid(
                "this home holds a signer set from generation \(last.statement.fromGeneration) already")
        }
        var added: [PinnedKey] = []
        for signer in s.signers {
            let key = change.keys[signer.id]!
            let parsed: GPGKey
            do {
                parsed = try KeyFile.parse(
                    key, path: "generation \(n): \(SignerSetChange.Files.memberPrefix)\(signer.id).asc",
                    context: keyring.context)
            } catch {
                throw SignerSetError.invalid("\(error)")
            }
            guard parsed.fingerprint == signer.fingerprint else {
                throw SignerSetError.invalid(
                    "the key carried for \(signer.id) is \(parsed.fingerprint), not \(signer.fingerprint)")
            }
            try KeyPolicy.check(parsed, path: "the key of signer \(signer.id)")
            if parsed.revoked || parsed.expired {
                throw SignerSetError.invalid("the key of signer \(signer.id) is revoked or expired")
            }
            let pinned = trust.keys.filter { $0.fingerprint == signer.fingerprint }
            if pinned.contains(where: { $0.role == .signer(signer.id) }) { continue }
            if let other = pinned.first(where: { $0.role != .collector }) {
                throw TrustError.alreadyPinned(fingerprint: signer.fingerprint, role: other.role)
            }
            if pinned.isEmpty {
                material.add(key)
                do { try forgettingCached(keyring.context.importKeys(key)) } catch let e as GPGError {
                    throw TrustError.gpg(e.description)
                }
            }
            added.append(
                PinnedKey(
                    role: .signer(signer.id), fingerprint: signer.fingerprint, userID: parsed.userIDs.first ?? "",
                    expires: parsed.primary.expires,
                    path: v.path + ":" + SignerSetChange.Files.memberPrefix + SignerSetChange.Files.key(signer.id)))
        }
        trust.keys += added
        trust.signerSets.append(change)
        adoptedSignerSets.append(change)
        return change
    }

    /// Checks that a signature slot holds exactly one well-formed OpenPGP
    /// signature packet, without verifying it (the first step of `verify`,
    /// and a fuzz target).
    public static func checkSignaturePacket(_ signature: Data) throws {
        _ = try SignaturePacket.checkSingle(signature)
    }

    /// When a well-formed signature says it was made, in seconds since the
    /// epoch (see `SignaturePacket.creationTime`).
    public static func signatureCreated(_ signature: Data) -> Int? { SignaturePacket.creationTime(signature) }

    /// Checks the signature over the exact statement bytes; returns the
    /// pinned key that made it. Nothing else of the file is read.
    public func verifySignature(_ file: ContainerFile) throws -> PinnedKey {
        try verify(file)
    }

    /// Verifies a detached signature over a generation's statement (a
    /// witness's cosignature) exactly as a statement's own signature is
    /// verified: one canonical packet, a good signature by a pinned key in
    /// good standing. Returns the key; which role it must have is the
    /// caller's rule.
    public func verifyCosignature(_ signature: Data, over statement: Data) throws -> PinnedKey {
        try verify(ContainerFile(payload: Data(), statement: statement, signature: signature))
    }

    /// Verifies the statement's signature; nothing else of the file is read.
    func verify(_ file: ContainerFile) throws -> PinnedKey {
        guard !file.signature.isEmpty else { throw TrustError.unsigned }
        let parsed = try SignaturePacket.checkSingle(file.signature)
        switch verification {
        case .builtin: return try verifyInProcess(parsed, file)
        case .gpg: return try verifyWithGPG(parsed, file)
        }
    }

    /// The signature checked by gpg, which sees the statement only: one
    /// process per signature.
    private func verifyWithGPG(_ parsed: SignaturePacket.Parsed, _ file: ContainerFile) throws -> PinnedKey {
        gpgVerifications += 1
        let results: [GPGSignatureResult]
        do {
            results = try keyring.context.verifyDetached(signature: file.signature, signed: file.statement)
        } catch let e as GPGError {
            throw TrustError.gpg(e.description)
        }
        guard results.count == 1 else {
            if results.isEmpty { throw TrustError.malformedSignature("gpg found no signature in the slot") }
            throw TrustError.multipleSignatures(results.count)
        }
        let sig = results[0]
        let who = sig.fingerprint.isEmpty ? "an unknown key" : sig.fingerprint
        switch sig.statusCode {
        case GPGErrorCode.noError: break
        case GPGErrorCode.noPublicKey: throw TrustError.unknownSigner(who)
        case GPGErrorCode.badSignature: throw TrustError.badSignature(who)
        case GPGErrorCode.keyExpired: throw TrustError.keyExpired(who)
        case GPGErrorCode.sigExpired: throw TrustError.signatureExpired(who)
        case GPGErrorCode.certRevoked: throw TrustError.keyRevoked(who)
        case GPGErrorCode.wrongKeyUsage, GPGErrorCode.badPublicKey: throw TrustError.wrongKeyUsage(who)
        case GPGErrorCode.digestAlgorithm: throw TrustError.weakDigest(SignaturePacket.hashName(parsed.hashAlgorithm))
        case GPGErrorCode.general:
            // gpg says only "General error" for two refusals; tell them
            // apart as the in-process verifier does.
            if let m = material.material(sig.fingerprint), let needed = m.minimumHashBits,
                (SHA2(openPGPID: parsed.hashAlgorithm)?.bits ?? 0) < needed
            {
                throw TrustError.digestTooShort(
                    sig.fingerprint, digest: SignaturePacket.hashName(parsed.hashAlgorithm), needed: needed)
            }
            if let key = try listedKey(sig.fingerprint), key.fingerprint != sig.fingerprint.uppercased(),
                !material.crossCertified.contains(sig.fingerprint.uppercased())
            {
                throw TrustError.wrongKeyUsage(who)
            }
            throw TrustError.gpg("signature by \(who): \(sig.statusText)")
        case GPGErrorCode.timeConflict:
            throw TrustError.keyNewerThanSignature(
                who, keyCreated: material.material(sig.fingerprint)?.created ?? 0, signed: sig.created)
        default: throw TrustError.gpg("signature by \(who): \(sig.statusText)")
        }
        // A good status alone is not enough (gpgme's GREEN does not rule out
        // an expired key): check the summary and the key itself.
        if sig.keyMissing { throw TrustError.unknownSigner(who) }
        if sig.isRed { throw TrustError.badSignature(who) }
        if sig.keyRevoked { throw TrustError.keyRevoked(who) }
        if sig.keyExpired { throw TrustError.keyExpired(who) }
        if sig.signatureExpired { throw TrustError.signatureExpired(who) }
        if sig.wrongKeyUsage { throw TrustError.wrongKeyUsage(who) }
        guard Self.acceptedDigests.contains(sig.hashAlgorithm) else { throw TrustError.weakDigest(sig.hashAlgorithm) }
        if Double(sig.created) - Date().timeIntervalSince1970 > Manifest.maxClockSkew {
            throw TrustError.signatureFromFuture(who, created: sig.created)
        }

        guard let key = try listedKey(sig.fingerprint) else { throw TrustError.unknownSigner(who) }
        if key.revoked { throw TrustError.keyRevoked(key.fingerprint) }
        if key.expired { throw TrustError.keyExpired(key.fingerprint) }
        if key.disabled || key.invalid { throw TrustError.wrongKeyUsage(key.fingerprint) }
        if let sub = key.subkeys.first(where: { $0.fingerprint == sig.fingerprint.uppercased() }) {
            if sub.revoked { throw TrustError.keyRevoked(sub.fingerprint) }
            if sub.expired { throw TrustError.keyExpired(sub.fingerprint) }
            if !sub.canSign { throw TrustError.wrongKeyUsage(sub.fingerprint) }
            if let why = KeyPolicy.weakness(of: sub) { throw TrustError.weakKey(sub.fingerprint, why) }
        }
        guard let pinned = trust.key(fingerprint: key.fingerprint) else {
            throw TrustError.unknownSigner(key.fingerprint)
        }
        // checkSingle refused any hash but SHA-256, -384 and -512.
        try SignaturePacket.checkQuickCheck(parsed, digest: SignaturePacket.digest(parsed, of: file.statement)!)
        return pinned
    }

    /// The signature checked in-process, as gpg checks it. The key its
    /// issuer names must be one gpg listed from the pinned files (and so
    /// vouched for). Then the checks run in gpg's order, so that both
    /// verifiers give the same reason for a refusal: the times (a key newer
    /// than its signature), the key's usage, cross-certification, the
    /// hash's length for a DSA or ECDSA key, the value over the statement
    /// and the signature's hashed trailer; for a good value the key's and
    /// the signature's standing (expired, revoked), as gpgme reports them;
    /// and last the rules fedbatch adds to gpg's answer (`verifyWithGPG`)
    /// in the same order.
    private func verifyInProcess(_ parsed: SignaturePacket.Parsed, _ file: ContainerFile) throws -> PinnedKey {
        let issuer = hex(parsed.issuerFingerprint ?? parsed.issuerKeyID ?? [])
        let who = issuer.isEmpty ? "an unknown key" : issuer
        // checkSingle refused any hash but SHA-256, -384 and -512.
        let hash = SHA2(openPGPID: parsed.hashAlgorithm)!
        // Only keys gpg lists from the pinned files count.
        let candidates = try material.candidates(for: parsed).filter { try listedKey($0.fingerprint) != nil }
        guard !candidates.isEmpty else {
            // A key gpg lists but whose packets fedbatch cannot read (a
            // version 5 key of a newer gpg, say) is gpg's to judge, in a
            // process of its own, rather than called unknown.
            if gpgListsIssuer(of: parsed) {
                try importPinned()
                return try verifyWithGPG(parsed, file)
            }
            throw TrustError.unknownSigner(who)
        }
        let digest = SignaturePacket.digest(parsed, of: file.statement)!
        // Two keys share a key id only by accident or by design; the first
        // whose value verifies made the signature.
        let signing = candidates.first { $0.verifies(parsed, digest: digest) } ?? candidates[0]
        let fpr = signing.fingerprint
        let key = keys[fpr]!
        guard let sub = key.subkeys.first(where: { $0.fingerprint == fpr }) else { throw TrustError.unknownSigner(fpr) }
        let now = Int(Date().timeIntervalSince1970)
        // gpg refuses a signature older than its key, or a key from the
        // future, as a time conflict, before it checks anything else.
        if signing.created > parsed.created || signing.created > now {
            throw TrustError.keyNewerThanSignature(fpr, keyCreated: signing.created, signed: parsed.created)
        }
        if sub.invalid || !sub.canSign { throw TrustError.wrongKeyUsage(fpr) }
        if sub.fingerprint != key.fingerprint, !material.crossCertified.contains(fpr) {
            // gpg: "signing subkey is not cross-certified".
            throw TrustError.wrongKeyUsage(fpr)
        }
        if let needed = signing.minimumHashBits, hash.bits < needed {
            throw TrustError.digestTooShort(fpr, digest: SignaturePacket.hashName(parsed.hashAlgorithm), needed: needed)
        }
        guard signing.verifies(parsed, digest: digest) else {
            if signing.key == nil {
                throw TrustError.weakKey(
                    fpr, KeyPolicy.weakness(of: sub) ?? "public-key algorithm \(sub.algorithm) cannot be verified here")
            }
            throw TrustError.badSignature(fpr)
        }
        // A good value: gpg's status, then the summary fedbatch reads.
        let signatureExpired = parsed.expiresAfter.map { $0 > 0 && parsed.created + $0 <= now } ?? false
        if signatureExpired { throw TrustError.signatureExpired(fpr) }
        if key.expired || sub.expired { throw TrustError.keyExpired(fpr) }
        if key.revoked || sub.revoked { throw TrustError.keyRevoked(fpr) }
        if parsed.created - now > Int(Manifest.maxClockSkew) {
            throw TrustError.signatureFromFuture(fpr, created: parsed.created)
        }
        if key.disabled || key.invalid { throw TrustError.wrongKeyUsage(key.fingerprint) }
        if let why = KeyPolicy.weakness(of: sub) { throw TrustError.weakKey(sub.fingerprint, why) }
        guard let pinned = trust.key(fingerprint: key.fingerprint) else {
            throw TrustError.unknownSigner(key.fingerprint)
        }
        try SignaturePacket.checkQuickCheck(parsed, digest: digest)
        return pinned
    }

    /// Whether a key gpg listed from the pinned files has the fingerprint
    /// or key id the signature names, though fedbatch has no packet for it.
    private func gpgListsIssuer(of parsed: SignaturePacket.Parsed) -> Bool {
        if let d = parsed.hashedValue(33), d.count > 1, keys[hex(Array(d.dropFirst()))] != nil { return true }
        guard let id = parsed.issuerKeyID.map(hex) else { return false }
        return keys.values.contains { $0.subkeys.contains { $0.keyID.uppercased() == id } }
    }

    /// As if fedbatch could not read this key's packets: for the test of
    /// the fallback to gpg (`verifyInProcess`).
    package func forgetMaterial(_ fingerprint: String) { material.forget(fingerprint) }

    /// The key gpg lists for a (sub)key fingerprint: from the listing made
    /// once, or looked up again after an adoption imported it.
    private func listedKey(_ fingerprint: String) throws -> GPGKey? {
        if let cached = keys[fingerprint] { return cached }
        if unlisted.contains(fingerprint) { return nil }
        do {
            guard let k = try keyring.context.key(fingerprint: fingerprint, secret: false) else {
                unlisted.insert(fingerprint)
                return nil
            }
            keys[fingerprint] = k
            return k
        } catch let e as GPGError {
            throw TrustError.gpg(e.description)
        }
    }

    /// The statement of a file whose signature verified, and the payload
    /// checked against it: its length, then its SHA-256 (one pass, with the
    /// CPU's SHA instructions). Nothing is decompressed before this.
    public func checkPayload(_ file: ContainerFile) throws -> (Statement, Digest) {
        let statement = try Statement.parse(file.statement)
        guard Int64(file.payload.count) == statement.payloadLength else {
            throw StatementError.payloadLength(declared: statement.payloadLength, actual: Int64(file.payload.count))
        }
        let digest = Digest.of(file.payload)
        guard digest == statement.payloadDigest else {
            throw StatementError.payloadDigest(declared: statement.payloadDigest.hex, actual: digest.hex)
        }
        return (statement, digest)
    }

    /// Verifies a pruned generation (`gNNNNNN.fbm`, fedbatch-bundle(5),
    /// PRUNED GENERATIONS): the original statement and signature, and in
    /// place of the payload the manifest whose SHA-256 the statement names.
    /// The result has the generation's identity and manifest, no members.
    public func openPruned(path: String) throws -> VerifiedContainer {
        var limits = ContainerLimits.default
        limits.maxFileBytes = PrunedManifest.fileCap(limits)
        let file = try ContainerFile.read(try OpenFile(path: path), limits: limits)
        let signer = try verify(file)
        let statement = try Statement.parse(file.statement)
        guard statement.kind == .generation, let n = statement.generation, let declared = statement.manifestDigest
        else {
            throw StatementError.invalid(
                "a pruned generation's statement must be a generation's and name its manifest's SHA-256")
        }
        let manifestBytes = PrunedManifest.manifestBytes(of: file.payload)
        let actual = Digest.of(manifestBytes)
        guard actual == declared else {
            throw StatementError.mismatch(
                "the kept manifest's SHA-256 is \(actual.hex), the statement names \(declared.hex)")
        }
        let manifest = try PrunedManifest.decode(file.payload, limits: limits)
        try statement.check(against: manifest)
        guard signer.role.signsGenerations else {
            throw TrustError.wrongSigner(
                fingerprint: signer.fingerprint, pinnedFor: signer.role, claimed: .collector, what: "generation \(n)")
        }
        if !signer.maySign(generation: n) {
            throw TrustError.keyOutOfRange(
                fingerprint: signer.fingerprint, generation: n, from: signer.validFrom, until: signer.validUntil)
        }
        return VerifiedContainer(
            path: path, file: file,
            container: Container(manifest: manifest, manifestBytes: Data(manifestBytes), members: [:]),
            signer: signer, statement: statement, digest: statement.payloadDigest)
    }

    /// Reads, verifies and parses one file.
    public func open(path: String, limits: ContainerLimits = .default) throws -> VerifiedContainer {
        try open(try OpenFile(path: path), path: path, limits: limits)
    }

    /// Verifies and parses a container read from an open file (its end is
    /// read first: see `ContainerFile.read`).
    public func open(_ handle: OpenFile, path: String, limits: ContainerLimits = .default) throws -> VerifiedContainer {
        try open(file: try ContainerFile.read(handle, limits: limits), path: path, limits: limits)
    }

    /// Verifies and parses a container held in memory (a bundle decrypted
    /// there, which must not touch disk before it is verified).
    public func open(bytes: Data, path: String, limits: ContainerLimits = .default) throws -> VerifiedContainer {
        try open(file: try ContainerFile.split(bytes, limits: limits), path: path, limits: limits)
    }

    /// Verifies a container on disk without holding its payload: the
    /// signature from the slot, then the payload hashed a piece at a time
    /// against the statement, and only then decompressed, again a piece at
    /// a time, with the members `spill` names written to scratch files. The
    /// bytes decompressed are hashed a second time and must give the digest
    /// that verified, so a file changed between the two reads is refused.
    /// How a streaming merge opens bundles and the current generation.
    public func open(
        _ handle: OpenFile, path: String, limits: ContainerLimits = .default, spill: ContainerReader.Spill
    ) throws -> VerifiedContainer {
        let (slot, length) = try ContainerFile.slotAndPayloadLength(of: handle, limits: limits)
        let statement = try Statement.parse(slot.statement)
        guard length == statement.payloadLength else {
            throw StatementError.payloadLength(declared: statement.payloadLength, actual: length)
        }
        func digest() throws -> Digest {
            let hasher = SHA2Hasher()
            try hasher.update(file: handle, count: length)
            let digest = hasher.finalize()
            guard digest == statement.payloadDigest else {
                throw StatementError.payloadDigest(declared: statement.payloadDigest.hex, actual: digest.hex)
            }
            return digest
        }
        let signer: PinnedKey
        do {
            signer = try verify(slot)
        } catch TrustError.unknownSigner(let who) where !vouchedInputs.isEmpty {
            guard let vouched = vouchedInputs[try digest().hex] else { throw TrustError.unknownSigner(who) }
            signer = vouched
        }
        let verified = try digest()
        let (container, decompressed) = try ContainerReader.read(
            file: handle, length: length, limits: limits, spill: spill)
        guard decompressed == verified else {
            throw FileError(path: path, message: "changed while it was being read")
        }
        return try accept(
            container, signer: signer, statement: statement, digest: verified, file: slot, path: path)
    }

    private func open(file: ContainerFile, path: String, limits: ContainerLimits) throws -> VerifiedContainer {
        let signer: PinnedKey
        do {
            signer = try verify(file)
        } catch TrustError.unknownSigner(let who) where !vouchedInputs.isEmpty {
            guard let vouched = vouchedInputs[try checkPayload(file).1.hex] else { throw TrustError.unknownSigner(who) }
            signer = vouched
        }
        let (statement, digest) = try checkPayload(file)
        let container = try ContainerReader.read(payload: file.payload, limits: limits)
        return try accept(container, signer: signer, statement: statement, digest: digest, file: file, path: path)
    }

    /// The checks of a container whose signature and payload verified: its
    /// manifest against the statement, and the signer's role and range.
    private func accept(
        _ container: Container, signer: PinnedKey, statement: Statement, digest: Digest, file: ContainerFile,
        path: String
    ) throws -> VerifiedContainer {
        let m = container.manifest
        try statement.check(against: m)
        if let declared = statement.manifestDigest, Digest.of(container.manifestBytes) != declared {
            throw StatementError.mismatch(
                "the manifest's SHA-256 is \(Digest.of(container.manifestBytes).hex), the statement "
                    + "names \(declared.hex)"
            )
        }
        try m.checkCreated(notAfter: Date())
        let claimed: Role = m.kind == .generation ? .collector : .site(m.site!.id)
        // A generation may be signed by the collector or, in a federation
        // of signers, by any of them; how many must sign is the home's rule
        // ([trust] threshold), checked above this layer.
        guard signer.role == claimed || (m.kind == .generation && signer.role.signsGenerations) else {
            let what =
                m.kind == .generation
                ? "generation \(m.generation ?? -1)"
                : "bundle \(m.site!.id) seq \(m.site!.seq)"
            throw TrustError.wrongSigner(
                fingerprint: signer.fingerprint, pinnedFor: signer.role, claimed: claimed, what: what)
        }
        // A collector key signs only its own range of generations: after a
        // rotation, the old key (stolen, say) cannot sign a newer one.
        if let n = m.generation, m.kind == .generation, !signer.maySign(generation: n) {
            throw TrustError.keyOutOfRange(
                fingerprint: signer.fingerprint, generation: n, from: signer.validFrom, until: signer.validUntil)
        }
        if signer.retired && !acceptsRetiredKeys {
            throw TrustError.retiredKey(fingerprint: signer.fingerprint, role: signer.role)
        }
        return VerifiedContainer(
            path: path, file: file, container: container, signer: signer, statement: statement, digest: digest)
    }
}

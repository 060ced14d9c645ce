import FedBatchFormats
import FedBatchNative
import Foundation

/// One v4 public key or subkey packet, parsed by fedbatch (RFC 4880
/// §5.5.2, RFC 9580 §5.5.5): the material the in-process verifier checks
/// signatures with.
///
/// The packet is bound to its key by its v4 fingerprint, the SHA-1 of the
/// packet body that gpg computes too, so the material used for a
/// fingerprint gpgme vouched for is the material gpg would use.
package struct PublicKeyMaterial {
    /// Uppercase hex, as gpgme writes fingerprints.
    package let fingerprint: String
    package let keyID: String
    package let created: Int
    package let algorithm: UInt8
    /// The packet body, hashed into key binding signatures.
    package let body: [UInt8]
    /// nil for an algorithm or curve fedbatch does not verify, which the
    /// key policy refuses anyway. (DSA and secp256k1 are verified, and then
    /// refused by the policy, so that the reason is the one gpg gives.)
    package let key: SignatureKey?
    /// The shortest hash gpg verifies a DSA or ECDSA signature of this key
    /// with: as long as the group's order, but never more than 512 bits.
    package let minimumHashBits: Int?

    /// The curves' OIDs as OpenPGP writes them (RFC 6637, RFC 9580 §9.2).
    static let ecdsaCurves: [[UInt8]: ECDSACurve] = [
        [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]: .p256,
        [0x2B, 0x81, 0x04, 0x00, 0x22]: .p384,
        [0x2B, 0x81, 0x04, 0x00, 0x23]: .p521,
        [0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07]: .brainpoolP256,
        [0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0B]: .brainpoolP384,
        [0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0D]: .brainpoolP512,
        [0x2B, 0x81, 0x04, 0x00, 0x0A]: .secp256k1,
    ]
    /// Ed25519 in the legacy EdDSA encoding (algorithm 22).
    static let legacyEd25519: [UInt8] = [0x2B, 0x06, 0x01, 0x04, 0x01, 0xDA, 0x47, 0x0F, 0x01]

    /// nil for anything but a well-formed v4 key packet body; `key` is nil
    /// for a well-formed key of an algorithm fedbatch does not verify.
    package init?(body: [UInt8]) {
        guard body.count >= 6, body[0] == 4, body.count < 65536 else { return nil }
        var r = Reader(body, at: 6)
        let algorithm = body[5]
        var key: SignatureKey?
        var minimumHashBits: Int?
        switch algorithm {
        case 1, 3:
            guard let n = r.mpi(), let e = r.mpi(), r.atEnd else { return nil }
            key = SignatureKey.rsa(modulus: n, exponent: e)
        case 17:
            guard let p = r.mpi(), let q = r.mpi(), let g = r.mpi(), let y = r.mpi(), r.atEnd else { return nil }
            key = SignatureKey.dsa(p: p, q: q, g: g, y: y)
            let qBits = q.first.map { q.count * 8 - $0.leadingZeroBitCount } ?? 0
            minimumHashBits = min(qBits, 512)
        case 19:
            guard let oid = r.oid(), let point = r.mpi(), r.atEnd else { return nil }
            key = Self.ecdsaCurves[oid].flatMap { SignatureKey.ecdsa(curve: $0, point: point) }
            minimumHashBits = Self.ecdsaCurves[oid].map { min($0.orderBits, 512) }
        case 22:
            guard let oid = r.oid(), let point = r.mpi(), r.atEnd else { return nil }
            // The point is 0x40 then the 32 native octets.
            if oid == Self.legacyEd25519, point.count == 33, point[0] == 0x40 {
                key = SignatureKey.eddsa(.ed25519, publicKey: Array(point[1...]))
            }
        case 27, 28:
            let curve: EdwardsCurve = algorithm == 27 ? .ed25519 : .ed448
            guard let raw = r.take(curve.publicKeyBytes), r.atEnd else { return nil }
            key = SignatureKey.eddsa(curve, publicKey: raw)
        default:
            // Other algorithms: well-formed or not, nothing to verify with.
            break
        }
        fingerprint = hex(openPGPV4Fingerprint(keyPacketBody: body))
        keyID = String(fingerprint.suffix(16))
        created = Int(body[1]) << 24 | Int(body[2]) << 16 | Int(body[3]) << 8 | Int(body[4])
        self.algorithm = algorithm
        self.body = body
        self.key = key
        self.minimumHashBits = minimumHashBits
    }

    /// Checks a signature value over `digest`: the signature's algorithm
    /// must be this key's, and the value must verify.
    func verifies(_ parsed: SignaturePacket.Parsed, digest: [UInt8]) -> Bool {
        guard let key, parsed.publicKeyAlgorithm == algorithm, let hash = SHA2(openPGPID: parsed.hashAlgorithm)
        else { return false }
        switch algorithm {
        case 1, 3:
            return key.verifyRSA(digest: digest, hash: hash, signature: parsed.value[0])
        case 17, 19:
            return key.verifyECDSA(digest: digest, r: parsed.value[0], s: parsed.value[1])
        case 22:
            // r and s are MPIs: their leading zero octets were dropped.
            let (r, s) = (parsed.value[0], parsed.value[1])
            guard r.count <= 32, s.count <= 32 else { return false }
            let native = [UInt8](repeating: 0, count: 32 - r.count) + r + [UInt8](repeating: 0, count: 32 - s.count) + s
            return key.verifyEdDSA(message: digest, signature: native)
        case 27, 28:
            return key.verifyEdDSA(message: digest, signature: parsed.value[0])
        default:
            return false
        }
    }

    /// The prefix a key packet is hashed with in key signatures (RFC 4880
    /// §5.2.4): 0x99 and the body's two-octet length.
    var hashPrefix: [UInt8] { [0x99, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] }

    /// A cursor over a key packet's fields.
    private struct Reader {
        let bytes: [UInt8]
        var i: Int
        init(_ bytes: [UInt8], at i: Int) {
            self.bytes = bytes
            self.i = i
        }
        var atEnd: Bool { i == bytes.count }

        mutating func take(_ n: Int) -> [UInt8]? {
            guard n >= 0, i + n <= bytes.count else { return nil }
            defer { i += n }
            return Array(bytes[i..<(i + n)])
        }

        /// An MPI's value (RFC 4880 §3.2).
        mutating func mpi() -> [UInt8]? {
            guard let l = take(2) else { return nil }
            let bits = Int(l[0]) << 8 | Int(l[1])
            return take((bits + 7) / 8)
        }

        /// A curve OID: a length octet (0 and 0xFF are reserved), then the OID.
        mutating func oid() -> [UInt8]? {
            guard let l = take(1), l[0] != 0, l[0] != 0xFF else { return nil }
            return take(Int(l[0]))
        }
    }
}

extension PublicKeyRing {
    /// The key with this fingerprint, if a pinned file holds it.
    package func material(_ fingerprint: String) -> PublicKeyMaterial? { keys[fingerprint.uppercased()] }

    /// Drops a key's packets (a test's stand-in for a key fedbatch cannot read).
    package mutating func forget(_ fingerprint: String) { keys[fingerprint.uppercased()] = nil }

    /// The math alone, without gpg's word on any key: the key in this ring
    /// whose value verifies a strictly parsed `signature` over `statement`,
    /// or nil. For keys gpg cannot read (native Ed25519 and Ed448 here),
    /// and for the fuzz target; a verifier also checks each key's standing.
    package func signer(of signature: Data, over statement: Data) throws -> PublicKeyMaterial? {
        let parsed = try SignaturePacket.checkSingle(signature)
        guard let digest = SignaturePacket.digest(parsed, of: statement) else { return nil }
        return candidates(for: parsed).first { $0.verifies(parsed, digest: digest) }
    }
}

/// The public keys of a home's pinned key files, as fedbatch reads them
/// itself: each key and subkey packet by fingerprint, and which signing
/// subkeys are cross-certified (carry a valid back signature).
///
/// gpg does not use a signing subkey whose binding lacks a primary key
/// binding signature by the subkey (RFC 4880 §5.2.1, 0x19), although it
/// lists the subkey as able to sign; so that the two verifiers agree,
/// fedbatch checks the back signature of the latest binding that verifies,
/// as gpg selects it.
package struct PublicKeyRing {
    package private(set) var keys: [String: PublicKeyMaterial] = [:]
    package private(set) var crossCertified: Set<String> = []

    package init() {}

    /// Adds every key and subkey packet of one armored or binary key file
    /// (bytes fedbatch cannot frame add nothing).
    package mutating func add(_ data: Data) {
        guard let bytes = KeyPackets.packets(data) else { return }
        var primary: PublicKeyMaterial?
        var subkey: PublicKeyMaterial?
        var bindings: [SignaturePacket.Parsed] = []
        func closeSubkey() {
            if let primary, let subkey, crossCertifies(bindings, primary: primary, subkey: subkey) {
                crossCertified.insert(subkey.fingerprint)
            }
            subkey = nil
            bindings = []
        }
        for (tag, body) in bytes {
            switch tag {
            case 6:
                closeSubkey()
                primary = PublicKeyMaterial(body: body)
                if let primary { keys[primary.fingerprint] = primary }
            case 14:
                closeSubkey()
                subkey = PublicKeyMaterial(body: body)
                if let subkey { keys[subkey.fingerprint] = subkey }
            case 2:
                if subkey != nil, let sig = try? SignaturePacket.parseBody(body), sig.signatureClass == 0x18 {
                    bindings.append(sig)
                }
            case 13, 17:
                closeSubkey()
            default:
                break
            }
        }
        closeSubkey()
    }

    /// Whether the latest subkey binding that the primary key made (and
    /// that verifies) carries a back signature the subkey made.
    private func crossCertifies(
        _ bindings: [SignaturePacket.Parsed], primary: PublicKeyMaterial, subkey: PublicKeyMaterial
    ) -> Bool {
        let valid = bindings.filter { verifies($0, by: primary, primary: primary, subkey: subkey) }
        guard let latest = valid.max(by: { $0.created < $1.created }) else { return false }
        for sp in latest.hashed + latest.unhashed where sp.type == 32 {
            if let back = try? SignaturePacket.parseBody(sp.data), back.signatureClass == 0x19,
                verifies(back, by: subkey, primary: primary, subkey: subkey)
            {
                return true
            }
        }
        return false
    }

    /// A key signature over (primary, subkey), made by `signer`.
    private func verifies(
        _ sig: SignaturePacket.Parsed, by signer: PublicKeyMaterial, primary: PublicKeyMaterial,
        subkey: PublicKeyMaterial
    ) -> Bool {
        let keys = Data(primary.hashPrefix + primary.body + subkey.hashPrefix + subkey.body)
        guard let digest = SignaturePacket.digest(sig, of: keys) else { return false }
        return signer.verifies(sig, digest: digest)
    }

    /// The keys a signature names, looked up as gpg looks them up: by
    /// its hashed issuer fingerprint when a key has it, else by its issuer
    /// key id (the first issuer subpacket, hashed or not, or the
    /// fingerprint's last eight octets); every key with that id, in
    /// fingerprint order.
    func candidates(for parsed: SignaturePacket.Parsed) -> [PublicKeyMaterial] {
        let fpr = parsed.issuerFingerprint
        if let fpr, let key = keys[hex(fpr)] { return [key] }
        guard let id = parsed.issuerKeyID ?? fpr.map({ Array($0.suffix(8)) }) else { return [] }
        let wanted = hex(id)
        return keys.values.filter { $0.keyID == wanted }.sorted { $0.fingerprint < $1.fingerprint }
    }
}

/// Uppercase hex, as gpgme writes fingerprints and key ids.
func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02X", $0) }.joined() }

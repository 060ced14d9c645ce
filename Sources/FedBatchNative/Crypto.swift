internal import CCrypto
import Foundation

// Every call into OpenSSL's libcrypto lives in this file. fedbatch uses it for
// SHA-256, because OpenSSL picks the SHA-NI / AVX2 code path at run time and
// hashing is half the floor of a merge (see BENCHMARKS.md), and for the
// differential-privacy noise: seeds from the system's CSPRNG, expanded by
// ChaCha20.

/// The SHA-2 digests OpenPGP signatures may use here.
public enum SHA2: Sendable {
    case sha256, sha384, sha512

    /// From an OpenPGP hash algorithm id (RFC 4880 §9.4).
    public init?(openPGPID: UInt8) {
        switch openPGPID {
        case 8: self = .sha256
        case 9: self = .sha384
        case 10: self = .sha512
        default: return nil
        }
    }

    public var bits: Int {
        switch self {
        case .sha256: 256
        case .sha384: 384
        case .sha512: 512
        }
    }

    var md: OpaquePointer {
        switch self {
        case .sha256: EVP_sha256()
        case .sha384: EVP_sha384()
        case .sha512: EVP_sha512()
        }
    }
}

/// An OpenPGP v4 key fingerprint (RFC 4880 §12.2): SHA-1 over 0x99, the
/// key packet body's two-byte length and the body. SHA-1 here names a key,
/// as OpenPGP defines it; it is never used to check a signature.
public func openPGPV4Fingerprint(keyPacketBody body: [UInt8]) -> [UInt8] {
    let ctx = EVP_MD_CTX_new()!
    defer { EVP_MD_CTX_free(ctx) }
    EVP_DigestInit_ex(ctx, EVP_sha1(), nil)
    let prefix: [UInt8] = [0x99, UInt8((body.count >> 8) & 0xFF), UInt8(body.count & 0xFF)]
    EVP_DigestUpdate(ctx, prefix, prefix.count)
    EVP_DigestUpdate(ctx, body, body.count)
    var out = [UInt8](repeating: 0, count: 20)
    var len: UInt32 = 0
    EVP_DigestFinal_ex(ctx, &out, &len)
    return out
}

/// Incremental SHA-2 (SHA-256 unless told otherwise).
public final class SHA2Hasher {
    private let ctx: OpaquePointer

    public convenience init() { self.init(.sha256) }

    public init(_ algorithm: SHA2) {
        // EVP_MD_CTX_new only fails on allocation failure, where Swift would trap anyway.
        ctx = EVP_MD_CTX_new()!
        EVP_DigestInit_ex(ctx, algorithm.md, nil)
    }

    private init(copying other: SHA2Hasher) {
        ctx = EVP_MD_CTX_new()!
        EVP_MD_CTX_copy_ex(ctx, other.ctx)
    }

    /// An independent hasher in the same state, so that a common prefix is
    /// hashed once for two digests.
    public func copy() -> SHA2Hasher { SHA2Hasher(copying: self) }

    deinit { EVP_MD_CTX_free(ctx) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { EVP_DigestUpdate(ctx, bytes.baseAddress, bytes.count) }
    }

    public func update(_ data: Data) {
        data.withUnsafeBytes { update($0) }
    }

    /// The digest; the hasher must not be used afterwards.
    public func finalize() -> Digest {
        var out = [UInt8](repeating: 0, count: 64)
        var len: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &out, &len)
        return Digest(bytes: Array(out.prefix(Int(len))))
    }
}

/// A SHA-256 digest, written as lowercase hex.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// Parses 64 lowercase hex digits; nil for anything else.
    public init?(hex: String) {
        guard hex.utf8.count == 64 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(32)
        var it = hex.utf8.makeIterator()
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        while let a = it.next(), let b = it.next() {
            guard let hi = nibble(a), let lo = nibble(b) else { return nil }
            out.append(hi << 4 | lo)
        }
        bytes = out
    }

    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var s = [UInt8]()
        s.reserveCapacity(64)
        for b in bytes { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 15)]) }
        return String(decoding: s, as: UTF8.self)
    }

    public var description: String { hex }
    /// The first 12 hex digits, for human output.
    public var short: String { String(hex.prefix(12)) }

    public static func < (a: Digest, b: Digest) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    public static func of(_ data: Data) -> Digest {
        let h = SHA2Hasher()
        h.update(data)
        return h.finalize()
    }
}

/// Bytes from OpenSSL's CSPRNG, which the kernel's getrandom(2) seeds.
public func secureRandomBytes(_ count: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    guard out.withUnsafeMutableBufferPointer({ RAND_bytes($0.baseAddress, Int32(count)) }) == 1 else {
        throw FileError(path: "(random)", message: "the system's random number generator failed")
    }
    return out
}

/// The ChaCha20 keystream (RFC 8439) for a 32-byte key, from block 0 with
/// a zero nonce: a deterministic, cryptographically strong stream of bits,
/// so that noise drawn from a secret seed cannot be predicted without it,
/// and can be drawn again, bit for bit, by whoever holds it.
public final class ChaCha20Stream {
    private let ctx: OpaquePointer
    private var buffer = [UInt64](repeating: 0, count: 512)
    private var next = 512
    private let zeros = [UInt8](repeating: 0, count: 4096)

    public init(key: [UInt8]) {
        precondition(key.count == 32, "a ChaCha20 key is 32 bytes")
        ctx = EVP_CIPHER_CTX_new()!
        // OpenSSL's 16-byte IV is the 32-bit block counter then the 96-bit nonce.
        let iv = [UInt8](repeating: 0, count: 16)
        EVP_EncryptInit_ex(ctx, EVP_chacha20(), nil, key, iv)
    }

    deinit { EVP_CIPHER_CTX_free(ctx) }

    /// The next 64 bits of the stream (little-endian).
    public func nextUInt64() -> UInt64 {
        if next == buffer.count {
            var n: Int32 = 0
            buffer.withUnsafeMutableBytes { out in
                _ = EVP_EncryptUpdate(
                    ctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &n, zeros, Int32(zeros.count))
            }
            for i in buffer.indices { buffer[i] = UInt64(littleEndian: buffer[i]) }
            next = 0
        }
        defer { next += 1 }
        return buffer[next]
    }
}

// MARK: public-key signatures

/// The elliptic curves fedbatch verifies ECDSA signatures on (KeyPolicy).
public enum ECDSACurve: Sendable {
    case p256, p384, p521, brainpoolP256, brainpoolP384, brainpoolP512
    /// Verified so that a refusal gives gpg's reason; the key policy
    /// refuses the curve.
    case secp256k1

    /// Bits of the group's order.
    public var orderBits: Int {
        switch self {
        case .p256, .brainpoolP256, .secp256k1: 256
        case .p384, .brainpoolP384: 384
        case .p521: 521
        case .brainpoolP512: 512
        }
    }

    /// OpenSSL's name for the group.
    var groupName: StaticString {
        switch self {
        case .p256: "prime256v1"
        case .p384: "secp384r1"
        case .p521: "secp521r1"
        case .brainpoolP256: "brainpoolP256r1"
        case .brainpoolP384: "brainpoolP384r1"
        case .brainpoolP512: "brainpoolP512r1"
        case .secp256k1: "secp256k1"
        }
    }
}

/// The Edwards curves of EdDSA (RFC 8032), both pure, with no context.
public enum EdwardsCurve: Sendable {
    case ed25519, ed448

    /// Bytes of a public key and of a signature.
    public var publicKeyBytes: Int { self == .ed25519 ? 32 : 57 }
    public var signatureBytes: Int { self == .ed25519 ? 64 : 114 }
}

/// A public key loaded into libcrypto once, to verify many signatures
/// with. Every constructor checks the material (an RSA modulus and
/// exponent, a point on the curve, an Edwards key of the right length)
/// and returns nil for anything libcrypto will not load.
///
/// Verification is over a digest the caller computed (OpenPGP hashes the
/// document and the signature's own trailer, RFC 4880 §5.2.4): RSA as
/// PKCS #1 v1.5 with the digest's DigestInfo, ECDSA over the digest
/// (truncated to the order's size by libcrypto, as OpenPGP requires), and
/// EdDSA with the digest as the message, as OpenPGP signs with it.
public final class SignatureKey: @unchecked Sendable {
    public enum Kind: Sendable { case rsa, dsa, ecdsa, eddsa(EdwardsCurve) }
    public let kind: Kind
    /// Bits of the RSA modulus or of the curve's order.
    public let bits: Int
    private let pkey: OpaquePointer

    private init(kind: Kind, pkey: OpaquePointer) {
        self.kind = kind
        self.pkey = pkey
        bits = Int(EVP_PKEY_get_bits(pkey))
    }

    deinit { EVP_PKEY_free(pkey) }

    /// A C string with static storage. The parameter builder keeps the
    /// pointers it is given until it builds the parameters, so a Swift
    /// string bridged for one call (freed right after it) cannot be used.
    private static func cString(_ s: StaticString) -> UnsafePointer<CChar> {
        UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
    }

    /// Builds a key from OpenSSL parameters (`fill` pushes them; whatever
    /// they point to must outlive this call).
    private static func fromParameters(
        _ type: String, _ fill: (OpaquePointer) -> Bool
    ) -> OpaquePointer? {
        guard let builder = OSSL_PARAM_BLD_new() else { return nil }
        defer { OSSL_PARAM_BLD_free(builder) }
        guard fill(builder), let params = OSSL_PARAM_BLD_to_param(builder) else { return nil }
        defer { OSSL_PARAM_free(params) }
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, type, nil) else { return nil }
        defer { EVP_PKEY_CTX_free(ctx) }
        var pkey: OpaquePointer?
        guard EVP_PKEY_fromdata_init(ctx) == 1,
            EVP_PKEY_fromdata(ctx, &pkey, fedbatch_evp_pkey_public_key(), params) == 1
        else { return nil }
        return pkey
    }

    public static func rsa(modulus: [UInt8], exponent: [UInt8]) -> SignatureKey? {
        guard !modulus.isEmpty, !exponent.isEmpty else { return nil }
        let n = BN_bin2bn(modulus, Int32(modulus.count), nil)
        let e = BN_bin2bn(exponent, Int32(exponent.count), nil)
        defer {
            BN_free(n)
            BN_free(e)
        }
        guard let n, let e,
            let pkey = fromParameters(
                "RSA",
                { b in
                    OSSL_PARAM_BLD_push_BN(b, cString("n"), n) == 1 && OSSL_PARAM_BLD_push_BN(b, cString("e"), e) == 1
                })
        else { return nil }
        return SignatureKey(kind: .rsa, pkey: pkey)
    }

    /// A DSA key: checked only so that a refusal gives gpg's reason (bad
    /// signature, or a good one from a key the policy refuses).
    public static func dsa(p: [UInt8], q: [UInt8], g: [UInt8], y: [UInt8]) -> SignatureKey? {
        let numbers: [OpaquePointer?] = [p, q, g, y].map { (v: [UInt8]) in BN_bin2bn(v, Int32(v.count), nil) }
        defer { numbers.forEach { BN_free($0) } }
        guard numbers.allSatisfy({ $0 != nil }),
            let pkey = fromParameters(
                "DSA",
                { b in
                    OSSL_PARAM_BLD_push_BN(b, cString("p"), numbers[0]) == 1
                        && OSSL_PARAM_BLD_push_BN(b, cString("q"), numbers[1]) == 1
                        && OSSL_PARAM_BLD_push_BN(b, cString("g"), numbers[2]) == 1
                        && OSSL_PARAM_BLD_push_BN(b, cString("pub"), numbers[3]) == 1
                })
        else { return nil }
        return SignatureKey(kind: .dsa, pkey: pkey)
    }

    /// `point` is the uncompressed SEC 1 point (0x04, x, y), as OpenPGP
    /// stores an ECDSA key; libcrypto refuses a point off the curve.
    public static func ecdsa(curve: ECDSACurve, point: [UInt8]) -> SignatureKey? {
        guard point.first == 0x04,
            let pkey = point.withUnsafeBufferPointer({ p in
                fromParameters("EC") { b in
                    OSSL_PARAM_BLD_push_utf8_string(b, cString("group"), cString(curve.groupName), 0) == 1
                        && OSSL_PARAM_BLD_push_octet_string(b, cString("pub"), p.baseAddress, p.count) == 1
                }
            })
        else { return nil }
        return SignatureKey(kind: .ecdsa, pkey: pkey)
    }

    public static func eddsa(_ curve: EdwardsCurve, publicKey: [UInt8]) -> SignatureKey? {
        guard publicKey.count == curve.publicKeyBytes,
            let pkey = EVP_PKEY_new_raw_public_key_ex(
                nil, curve == .ed25519 ? "ED25519" : "ED448", nil, publicKey, publicKey.count)
        else { return nil }
        return SignatureKey(kind: .eddsa(curve), pkey: pkey)
    }

    /// An RSA signature (its value, without leading zero bytes, as an
    /// OpenPGP MPI holds it) over `digest`, made with `hash`.
    public func verifyRSA(digest: [UInt8], hash: SHA2, signature: [UInt8]) -> Bool {
        guard case .rsa = kind else { return false }
        // libcrypto wants the value at the modulus's length; a longer one
        // cannot be below the modulus.
        let length = (bits + 7) / 8
        guard signature.count <= length else { return false }
        let padded = [UInt8](repeating: 0, count: length - signature.count) + signature
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, pkey, nil) else { return false }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_verify_init(ctx) == 1, EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1,
            EVP_PKEY_CTX_set_signature_md(ctx, hash.md) == 1
        else { return false }
        return EVP_PKEY_verify(ctx, padded, padded.count, digest, digest.count) == 1
    }

    /// An ECDSA or DSA signature (r, s as big-endian integers) over
    /// `digest`: both are the same DER sequence to libcrypto.
    public func verifyECDSA(digest: [UInt8], r: [UInt8], s: [UInt8]) -> Bool {
        switch kind {
        case .ecdsa, .dsa: break
        default: return false
        }
        guard !r.isEmpty, !s.isEmpty, let sig = ECDSA_SIG_new() else { return false }
        defer { ECDSA_SIG_free(sig) }
        guard let rn = BN_bin2bn(r, Int32(r.count), nil) else { return false }
        guard let sn = BN_bin2bn(s, Int32(s.count), nil) else {
            BN_free(rn)
            return false
        }
        // ECDSA_SIG_set0 takes ownership of both numbers.
        guard ECDSA_SIG_set0(sig, rn, sn) == 1 else {
            BN_free(rn)
            BN_free(sn)
            return false
        }
        let length = i2d_ECDSA_SIG(sig, nil)
        guard length > 0 else { return false }
        var der = [UInt8](repeating: 0, count: Int(length))
        let written = der.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var p = buffer.baseAddress
            return i2d_ECDSA_SIG(sig, &p)
        }
        guard written == length, let ctx = EVP_PKEY_CTX_new_from_pkey(nil, pkey, nil) else { return false }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_verify_init(ctx) == 1 else { return false }
        return EVP_PKEY_verify(ctx, der, der.count, digest, digest.count) == 1
    }

    /// A pure EdDSA signature (R then S, native length) over `message`.
    public func verifyEdDSA(message: [UInt8], signature: [UInt8]) -> Bool {
        guard case .eddsa(let curve) = kind, signature.count == curve.signatureBytes,
            let md = EVP_MD_CTX_new()
        else { return false }
        defer { EVP_MD_CTX_free(md) }
        guard EVP_DigestVerifyInit_ex(md, nil, nil, nil, nil, pkey, nil) == 1 else { return false }
        return EVP_DigestVerify(md, signature, signature.count, message, message.count) == 1
    }
}

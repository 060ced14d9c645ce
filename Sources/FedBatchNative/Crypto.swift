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
        let md: OpaquePointer
        switch algorithm {
        case .sha256: md = EVP_sha256()
        case .sha384: md = EVP_sha384()
        case .sha512: md = EVP_sha512()
        }
        EVP_DigestInit_ex(ctx, md, nil)
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

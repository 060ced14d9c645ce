import CCrypto
import Foundation

// Every call into OpenSSL's libcrypto lives in this file. fedbatch uses it only
// for SHA-256, because OpenSSL picks the SHA-NI / AVX2 code path at run time
// and hashing is half the floor of a merge (see BENCHMARKS.md).

/// Incremental SHA-256.
public final class SHA256Hasher {
    private let ctx: OpaquePointer

    public init() {
        // EVP_MD_CTX_new only fails on allocation failure, where Swift would trap anyway.
        ctx = EVP_MD_CTX_new()!
        EVP_DigestInit_ex(ctx, EVP_sha256(), nil)
    }

    deinit { EVP_MD_CTX_free(ctx) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { EVP_DigestUpdate(ctx, bytes.baseAddress, bytes.count) }
    }

    public func update(_ data: Data) {
        data.withUnsafeBytes { update($0) }
    }

    /// The digest; the hasher must not be used afterwards.
    public func finalize() -> Digest {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &out, &len)
        return Digest(bytes: out)
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
        let h = SHA256Hasher()
        h.update(data)
        return h.finalize()
    }
}

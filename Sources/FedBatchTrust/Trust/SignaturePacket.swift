import FedBatchFormats
import FedBatchNative
import Foundation

/// The framing of the OpenPGP packets in a signature slot (RFC 4880 §4.2),
/// read before gpg sees them: the slot must hold exactly one signature
/// packet and nothing else, so two signatures, a key or literal data
/// smuggled beside the signature, or trailing bytes are all refused here.
enum SignaturePacket {
    struct Header {
        let tag: Int
        let bodyLength: Int
        let headerLength: Int
    }

    static func header(_ bytes: [UInt8], at offset: Int) throws -> Header {
        guard offset < bytes.count else { throw TrustError.malformedSignature("empty packet") }
        let first = bytes[offset]
        guard first & 0x80 != 0 else {
            throw TrustError.malformedSignature(
                "byte \(offset) is not an OpenPGP packet header (the slot must hold a binary signature, not armor)")
        }
        func need(_ n: Int) throws {
            if offset + n > bytes.count { throw TrustError.malformedSignature("packet header truncated") }
        }
        if first & 0x40 != 0 {
            // New format: tag in the low 6 bits, then a 1-, 2- or 5-octet length.
            let tag = Int(first & 0x3F)
            try need(2)
            let o1 = Int(bytes[offset + 1])
            switch o1 {
            case 0..<192:
                return Header(tag: tag, bodyLength: o1, headerLength: 2)
            case 192..<224:
                try need(3)
                return Header(tag: tag, bodyLength: ((o1 - 192) << 8) + Int(bytes[offset + 2]) + 192, headerLength: 3)
            case 255:
                try need(6)
                let n = bytes[(offset + 2)..<(offset + 6)].reduce(0) { $0 << 8 | Int($1) }
                return Header(tag: tag, bodyLength: n, headerLength: 6)
            default:
                throw TrustError.malformedSignature("partial body lengths are not allowed in a signature")
            }
        }
        // Old format: tag in bits 5-2, length type in bits 1-0.
        let tag = Int((first >> 2) & 0x0F)
        switch first & 0x03 {
        case 0:
            try need(2)
            return Header(tag: tag, bodyLength: Int(bytes[offset + 1]), headerLength: 2)
        case 1:
            try need(3)
            return Header(tag: tag, bodyLength: Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2]), headerLength: 3)
        case 2:
            try need(5)
            return Header(
                tag: tag, bodyLength: bytes[(offset + 1)..<(offset + 5)].reduce(0) { $0 << 8 | Int($1) },
                headerLength: 5)
        default:
            throw TrustError.malformedSignature("indeterminate-length packets are not allowed")
        }
    }

    /// One signature subpacket (RFC 4880 §5.2.3.1).
    struct Subpacket {
        let type: Int
        let critical: Bool
        let data: [UInt8]
    }

    /// A v4 signature packet's body, parsed: what recomputing its hash and
    /// checking its value need.
    struct Parsed {
        let signatureClass: UInt8
        let publicKeyAlgorithm: UInt8
        let hashAlgorithm: UInt8
        /// Version through the end of the hashed subpackets: what the
        /// signature hash covers after the document.
        let hashedPart: [UInt8]
        let hashed: [Subpacket]
        let unhashed: [Subpacket]
        let quickCheck: (UInt8, UInt8)
        /// The signature value: the MPIs without their bit counts (one for
        /// RSA, r and s for ECDSA and legacy EdDSA), or the native octets
        /// of an Ed25519 or Ed448 signature (RFC 9580 §5.2.3.4).
        let value: [[UInt8]]

        /// The first hashed subpacket of `type`: gpg reads the times and
        /// the issuer's fingerprint from the hashed area only, and the
        /// first one counts.
        func hashedValue(_ type: Int) -> [UInt8]? { hashed.first { $0.type == type }?.data }

        /// Seconds since the epoch; 0 when the hashed area has none.
        var created: Int { hashedValue(2).map(Self.uint32) ?? 0 }
        /// Seconds after `created`; nil or 0 for a signature that does not
        /// expire.
        var expiresAfter: Int? { hashedValue(3).map(Self.uint32) }
        /// The v4 fingerprint the hashed issuer-fingerprint subpacket names.
        var issuerFingerprint: [UInt8]? {
            guard let d = hashedValue(33), d.count == 21, d[0] == 4 else { return nil }
            return Array(d[1...])
        }
        /// The issuer key id, from either area.
        var issuerKeyID: [UInt8]? {
            (hashed + unhashed).first { $0.type == 16 && $0.data.count == 8 }?.data
        }

        static func uint32(_ b: [UInt8]) -> Int { b.count == 4 ? b.reduce(0) { $0 << 8 | Int($1) } : 0 }
    }

    /// gpg's names of the OpenPGP hash algorithms (RFC 4880 §9.4).
    static func hashName(_ id: UInt8) -> String {
        switch id {
        case 1: "MD5"
        case 2: "SHA1"
        case 3: "RIPEMD160"
        case 8: "SHA256"
        case 9: "SHA384"
        case 10: "SHA512"
        case 11: "SHA224"
        default: "hash algorithm \(id)"
        }
    }

    /// The digest a signature's value is checked against (RFC 4880
    /// §5.2.4): `data`, then the signature's version-through-hashed-area
    /// and its trailer; nil for a hash other than SHA-256, -384 or -512.
    static func digest(_ parsed: Parsed, of data: Data) -> [UInt8]? {
        guard let algorithm = SHA2(openPGPID: parsed.hashAlgorithm) else { return nil }
        let h = SHA2Hasher(algorithm)
        h.update(data)
        let n = UInt32(parsed.hashedPart.count)
        let trailer =
            parsed.hashedPart + [
                0x04, 0xFF, UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF),
            ]
        h.update(Data(trailer))
        return h.finalize().bytes
    }

    /// The quick-check bytes are not part of the signature math, and gpg
    /// does not compare them, so fedbatch requires them to equal the first
    /// two bytes of `digest` (the signature's own): then no bit of the slot
    /// can change without the file being refused.
    static func checkQuickCheck(_ parsed: Parsed, digest d: [UInt8]) throws {
        guard d[0] == parsed.quickCheck.0, d[1] == parsed.quickCheck.1 else {
            throw TrustError.malformedSignature("the quick-check bytes do not match the signed hash")
        }
    }

    /// The hashed subpackets a document signature may mark critical: the
    /// ones fedbatch reads. RFC 4880 §5.2.3.1 requires a critical subpacket
    /// that is not understood to void the signature, and gpg refuses one
    /// too; the set is kept to what fedbatch itself checks, so that nothing
    /// critical goes unread.
    static let understoodCritical: Set<Int> = [2, 3, 16, 33]

    /// Checks that `signature` is exactly one complete v4 signature packet
    /// over a binary document, and that the bytes gpg does not cover are
    /// pinned down too: the unhashed area may hold only an issuer key id
    /// that agrees with the hashed issuer fingerprint. Otherwise a signature
    /// would stay valid while bits in its unhashed area change, and the file
    /// would no longer be one fixed sequence of bytes.
    @discardableResult
    static func checkSingle(_ signature: Data) throws -> Parsed {
        try checkFraming(signature)
        let bytes = [UInt8](signature)
        let h = try header(bytes, at: 0)
        // One encoding only, the one gpg writes: an old-format header with
        // the shortest length that fits. The header is outside the signed
        // hash, so a second encoding of the same packet would verify too
        // and change the file's bytes under the same payload digest.
        let shortest: UInt8 = h.bodyLength < 256 ? 0 : h.bodyLength < 65536 ? 1 : 2
        guard bytes[0] & 0x40 == 0, bytes[0] & 0x03 == shortest else {
            throw TrustError.malformedSignature(
                String(
                    format:
                        "packet header 0x%02x is not the canonical encoding (an old-format header with the shortest "
                        + "length, as gpg writes)",
                    bytes[0]))
        }
        let parsed = try parseBody(Array(bytes[h.headerLength..<(h.headerLength + h.bodyLength)]))
        // SHA-256 and stronger only, refused before any key is looked at:
        // a signature over a weak hash is never checked at all.
        guard SHA2(openPGPID: parsed.hashAlgorithm) != nil else {
            throw TrustError.weakDigest(hashName(parsed.hashAlgorithm))
        }
        guard parsed.signatureClass == 0x00 else {
            throw TrustError.malformedSignature(
                String(
                    format: "signature class 0x%02x; a binary-document signature (0x00) is required",
                    parsed.signatureClass))
        }
        if let sp = parsed.hashed.first(where: { $0.critical && !understoodCritical.contains($0.type) }) {
            throw TrustError.malformedSignature("critical subpacket of type \(sp.type) is not understood")
        }
        guard parsed.hashed.contains(where: { $0.type == 2 && $0.data.count == 4 }) else {
            throw TrustError.malformedSignature("the signature has no hashed creation time")
        }
        // The unhashed area is outside the signature too, so it has one
        // allowed content: the issuer key id gpg writes there, agreeing
        // with the hashed fingerprint; or nothing, when the hashed area
        // names the key id itself. Otherwise adding or dropping the id
        // would give a second encoding that verifies.
        let hashedKeyID = parsed.hashed.contains { $0.type == 16 }
        let expected = hashedKeyID ? 0 : 1
        guard parsed.unhashed.count == expected else {
            throw TrustError.malformedSignature(
                hashedKeyID
                    ? "the unhashed area must be empty when the hashed area names the issuer key id"
                    : "the unhashed area holds \(parsed.unhashed.count) subpackets; exactly one issuer key id is "
                        + "required")
        }
        for sp in parsed.unhashed {
            guard sp.type == 16, sp.data.count == 8, !sp.critical else {
                throw TrustError.malformedSignature("unhashed subpacket of type \(sp.type) is not allowed")
            }
            if let fp = parsed.issuerFingerprint, Array(fp.suffix(8)) != sp.data {
                throw TrustError.malformedSignature(
                    "the unhashed issuer key id disagrees with the signed issuer fingerprint")
            }
        }
        return parsed
    }

    /// Parses a v4 signature packet body of any class (a document
    /// signature, or a key binding read from a pinned key file).
    static func parseBody(_ body: [UInt8]) throws -> Parsed {
        guard body.count >= 6, body[0] == 4 else {
            throw TrustError.malformedSignature(
                "only version 4 signatures are supported (found version \(body.first ?? 0))")
        }
        let hashedLength = Int(body[4]) << 8 | Int(body[5])
        guard 6 + hashedLength + 2 <= body.count else {
            throw TrustError.malformedSignature("hashed subpacket area runs past the packet")
        }
        let hashed = try subpackets(Array(body[6..<(6 + hashedLength)]))
        let u = 6 + hashedLength
        let unhashedLength = Int(body[u]) << 8 | Int(body[u + 1])
        guard u + 2 + unhashedLength + 2 <= body.count else {
            throw TrustError.malformedSignature("unhashed subpacket area runs past the packet")
        }
        let unhashed = try subpackets(Array(body[(u + 2)..<(u + 2 + unhashedLength)]))
        let q = u + 2 + unhashedLength
        let value = try signatureValue(algorithm: body[2], Array(body[(q + 2)...]))
        return Parsed(
            signatureClass: body[1], publicKeyAlgorithm: body[2], hashAlgorithm: body[3],
            hashedPart: Array(body[0..<(6 + hashedLength)]), hashed: hashed, unhashed: unhashed,
            quickCheck: (body[q], body[q + 1]), value: value)
    }

    /// The signature value after the quick-check bytes, in the one shape
    /// its algorithm has. The bit counts of MPIs are not covered by the
    /// signature math either, so they must be canonical (no leading zero
    /// bits), and nothing may follow the value.
    private static func signatureValue(algorithm: UInt8, _ bytes: [UInt8]) throws -> [[UInt8]] {
        switch algorithm {
        case 27, 28:
            // Native EdDSA (RFC 9580): the signature's own octets.
            let n = algorithm == 27 ? EdwardsCurve.ed25519.signatureBytes : EdwardsCurve.ed448.signatureBytes
            guard bytes.count == n else {
                throw TrustError.malformedSignature(
                    "an algorithm-\(algorithm) signature is \(n) octets, not \(bytes.count)")
            }
            return [bytes]
        case 1, 3, 16, 17, 19, 22:
            var i = 0
            var out: [[UInt8]] = []
            while i < bytes.count {
                guard i + 2 <= bytes.count else { throw TrustError.malformedSignature("truncated MPI") }
                let bits = Int(bytes[i]) << 8 | Int(bytes[i + 1])
                let n = (bits + 7) / 8
                guard n > 0, i + 2 + n <= bytes.count else {
                    throw TrustError.malformedSignature("MPI runs past the packet")
                }
                let top = bytes[i + 2]
                guard top != 0, bits == (n - 1) * 8 + (8 - top.leadingZeroBitCount) else {
                    throw TrustError.malformedSignature("MPI bit count \(bits) is not canonical")
                }
                out.append(Array(bytes[(i + 2)..<(i + 2 + n)]))
                i += 2 + n
            }
            let expected = algorithm == 1 || algorithm == 3 ? 1 : 2
            guard out.count == expected else {
                if out.isEmpty { throw TrustError.malformedSignature("the signature packet holds no signature value") }
                let mpis = expected == 1 ? "one MPI" : "two MPIs"
                throw TrustError.malformedSignature(
                    "an algorithm-\(algorithm) signature holds \(mpis), not \(out.count)")
            }
            return out
        default:
            throw TrustError.malformedSignature("public-key algorithm \(algorithm) is not supported")
        }
    }

    /// When a well-formed signature says it was made (its hashed creation
    /// time subpacket, seconds since the epoch): for a generation, when the
    /// collector signed it, after it read the inbox. Covered by the
    /// signature, so it is the signer's own claim.
    public static func creationTime(_ signature: Data) -> Int? {
        guard let parsed = try? checkSingle(signature) else { return nil }
        return parsed.created
    }

    /// Splits a subpacket area into (type, data) pairs (RFC 4880 §5.2.3.1).
    private static func subpackets(_ area: [UInt8]) throws -> [Subpacket] {
        var out: [Subpacket] = []
        var i = 0
        while i < area.count {
            let o1 = Int(area[i])
            var length: Int
            // Each length in its shortest form (RFC 4880 §5.2.3.1), the
            // only one gpg writes.
            switch o1 {
            case 0..<192: length = o1; i += 1
            case 192..<255:
                guard i + 1 < area.count else { throw TrustError.malformedSignature("truncated subpacket length") }
                length = ((o1 - 192) << 8) + Int(area[i + 1]) + 192; i += 2
                guard length >= 192 else {
                    throw TrustError.malformedSignature("a subpacket length is not in its shortest form")
                }
            default:
                guard i + 4 < area.count else { throw TrustError.malformedSignature("truncated subpacket length") }
                length = area[(i + 1)...(i + 4)].reduce(0) { $0 << 8 | Int($1) }; i += 5
                guard length >= 8384 else {
                    throw TrustError.malformedSignature("a subpacket length is not in its shortest form")
                }
            }
            guard length >= 1, i + length <= area.count else {
                throw TrustError.malformedSignature("subpacket runs past its area")
            }
            out.append(
                Subpacket(
                    type: Int(area[i] & 0x7F), critical: area[i] & 0x80 != 0, data: Array(area[(i + 1)..<(i + length)]))
            )
            i += length
        }
        return out
    }

    private static func checkFraming(_ signature: Data) throws {
        let bytes = [UInt8](signature)
        var offset = 0
        var tags: [Int] = []
        while offset < bytes.count {
            let h = try header(bytes, at: offset)
            let end = offset + h.headerLength + h.bodyLength
            guard end <= bytes.count else {
                throw TrustError.malformedSignature("packet body runs past the end of the slot")
            }
            tags.append(h.tag)
            offset = end
        }
        let signatures = tags.filter { $0 == 2 }.count
        if signatures > 1 { throw TrustError.multipleSignatures(signatures) }
        guard tags == [2] else {
            throw TrustError.malformedSignature(
                "the slot holds packets of tags \(tags); exactly one signature packet (tag 2) is allowed")
        }
    }
}

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
        guard first & 0x80 != 0 else { throw TrustError.malformedSignature("byte \(offset) is not an OpenPGP packet header (the slot must hold a binary signature, not armor)") }
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
            return Header(tag: tag, bodyLength: bytes[(offset + 1)..<(offset + 5)].reduce(0) { $0 << 8 | Int($1) }, headerLength: 5)
        default:
            throw TrustError.malformedSignature("indeterminate-length packets are not allowed")
        }
    }

    /// Checks that `signature` is exactly one complete signature packet.
    static func checkSingle(_ signature: Data) throws {
        let bytes = [UInt8](signature)
        var offset = 0
        var tags: [Int] = []
        while offset < bytes.count {
            let h = try header(bytes, at: offset)
            let end = offset + h.headerLength + h.bodyLength
            guard end <= bytes.count else { throw TrustError.malformedSignature("packet body runs past the end of the slot") }
            tags.append(h.tag)
            offset = end
        }
        let signatures = tags.filter { $0 == 2 }.count
        if signatures > 1 { throw TrustError.multipleSignatures(signatures) }
        guard tags == [2] else {
            throw TrustError.malformedSignature("the slot holds packets of tags \(tags); exactly one signature packet (tag 2) is allowed")
        }
    }
}

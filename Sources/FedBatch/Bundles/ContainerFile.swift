import Foundation

/// The outer framing of a container file: the signed payload (one zstd
/// frame) followed by the signature slot, a zstd *skippable frame* that
/// standard decompressors pass over:
///
///     payload     := zstd frame                       (the signed bytes)
///     slot        := u32le 0x184D2A5E                 (skippable-frame magic)
///                    u32le L + 16                     (frame content size)
///                    L bytes                          (binary OpenPGP signature)
///                    u32le L  u32le 0  "fbsig001"     (16-byte trailer)
///
/// The trailer sits at the very end, so a reader finds the slot with one
/// fixed-size read and never has to parse the payload to locate it: that is
/// what lets the signature be checked before any byte is decompressed.
/// fedbatch-bundle(5) is the normative description.
public struct ContainerFile: Sendable {
    public static let slotMagic: UInt32 = 0x184D_2A5E
    public static let trailerMagic = Array("fbsig001".utf8)
    public static let trailerSize = 16
    public static let frameHeaderSize = 8

    /// The exact bytes the signature covers (the zstd payload).
    public let signedBytes: Data
    /// The binary OpenPGP signature; empty for an unsigned file.
    public let signature: Data

    /// The container's identity: SHA-256 of the signed bytes (never its file name).
    public var digest: Digest { Digest.of(signedBytes) }

    /// Splits a file into payload and signature by reading only the
    /// fixed-size trailer and the slot header; nothing is decompressed.
    /// An empty slot is returned as an empty signature (the caller decides).
    public static func split(_ file: Data, limits: ContainerLimits = .default) throws -> ContainerFile {
        let file = file.startIndex == 0 ? file : Data(file)
        let (payloadLength, sig) = try locate(size: Int64(file.count), limits: limits) { offset, count in
            file.subdata(in: Int(offset)..<(Int(offset) + count))
        }
        // A slice, not a copy: payloads run to gigabytes.
        return ContainerFile(signedBytes: file[0..<payloadLength], signature: sig)
    }

    /// Reads a container from an open file, its end first: a file that is
    /// too large or has no valid signature slot is refused before its
    /// payload is read, so junk costs neither time nor memory.
    public static func read(_ file: OpenFile, limits: ContainerLimits = .default) throws -> ContainerFile {
        let (payloadLength, sig) = try locate(size: file.size, limits: limits) { try file.read(at: $0, count: $1) }
        let payload = try file.read(at: 0, count: payloadLength)
        guard payload.count == payloadLength else { throw FileError(path: file.displayPath, message: "shrank while it was being read") }
        return ContainerFile(signedBytes: payload, signature: sig)
    }

    /// The digest of a container's signed bytes, hashed in pieces: memory
    /// stays small whatever the file's size.
    public static func digest(of file: OpenFile, limits: ContainerLimits = .default) throws -> Digest {
        let (payloadLength, _) = try locate(size: file.size, limits: limits) { try file.read(at: $0, count: $1) }
        let hasher = SHA2Hasher()
        try file.stream(from: 0, count: Int64(payloadLength)) { hasher.update($0) }
        return hasher.finalize()
    }

    /// Finds the payload length and the signature from the trailer and the
    /// slot alone; `read(offset, count)` supplies bytes of the file.
    static func locate(size: Int64, limits: ContainerLimits, read: (Int64, Int) throws -> Data) throws -> (payloadLength: Int, signature: Data) {
        if size > limits.maxFileBytes { throw ContainerError.fileTooLarge(size: size, cap: limits.maxFileBytes) }
        guard size >= Int64(trailerSize + frameHeaderSize + 4) else { throw ContainerError.noSignatureTrailer }
        let trailer = try read(size - Int64(trailerSize), trailerSize)
        guard trailer.count == trailerSize else { throw ContainerError.noSignatureTrailer }
        let t = Array(trailer)
        guard Array(t[8..<16]) == trailerMagic else { throw ContainerError.noSignatureTrailer }
        let length = Int(u32(t, 0))
        let reserved = u32(t, 4)
        guard reserved == 0 else { throw ContainerError.badSignatureFrame("reserved trailer field is \(reserved), not 0") }
        guard length <= limits.maxSignatureBytes else { throw ContainerError.signatureTooLarge(size: length, cap: limits.maxSignatureBytes) }
        let frameStart = size - Int64(trailerSize + length + frameHeaderSize)
        guard frameStart >= 4 else { throw ContainerError.badSignatureFrame("signature length \(length) leaves no room for a payload") }
        let slot = Array(try read(frameStart, frameHeaderSize + length))
        guard slot.count == frameHeaderSize + length else { throw ContainerError.noSignatureTrailer }
        let magic = u32(slot, 0), frameSize = u32(slot, 4)
        guard magic == slotMagic else {
            throw ContainerError.badSignatureFrame(String(format: "expected skippable-frame magic 0x%08X before the signature, found 0x%08X", slotMagic, magic))
        }
        guard Int(frameSize) == length + trailerSize else {
            throw ContainerError.badSignatureFrame("frame size \(frameSize) disagrees with signature length \(length)")
        }
        return (Int(frameStart), Data(slot[frameHeaderSize...]))
    }

    private static func u32(_ b: [UInt8], _ i: Int) -> UInt32 {
        UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
    }

    /// Appends the signature slot to a payload.
    public static func seal(payload: Data, signature: Data) -> Data {
        var out = Data(capacity: payload.count + signature.count + frameHeaderSize + trailerSize)
        out.append(payload)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        u32(slotMagic)
        u32(UInt32(signature.count + trailerSize))
        out.append(signature)
        u32(UInt32(signature.count))
        u32(0)
        out.append(contentsOf: trailerMagic)
        return out
    }
}

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
        if Int64(file.count) > limits.maxFileBytes { throw ContainerError.fileTooLarge(size: Int64(file.count), cap: limits.maxFileBytes) }
        guard file.count >= trailerSize + frameHeaderSize + 4 else { throw ContainerError.noSignatureTrailer }
        return try file.withUnsafeBytes { raw -> ContainerFile in
            let t = file.count - trailerSize
            guard Array(raw[(t + 8)..<(t + 16)]) == trailerMagic else { throw ContainerError.noSignatureTrailer }
            let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: t, as: UInt32.self)))
            let reserved = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: t + 4, as: UInt32.self))
            guard reserved == 0 else { throw ContainerError.badSignatureFrame("reserved trailer field is \(reserved), not 0") }
            guard length <= limits.maxSignatureBytes else { throw ContainerError.signatureTooLarge(size: length, cap: limits.maxSignatureBytes) }
            let frameStart = t - length - frameHeaderSize
            guard frameStart >= 4 else { throw ContainerError.badSignatureFrame("signature length \(length) leaves no room for a payload") }
            let magic = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: frameStart, as: UInt32.self))
            let size = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: frameStart + 4, as: UInt32.self))
            guard magic == slotMagic else {
                throw ContainerError.badSignatureFrame(String(format: "expected skippable-frame magic 0x%08X before the signature, found 0x%08X", slotMagic, magic))
            }
            guard Int(size) == length + trailerSize else {
                throw ContainerError.badSignatureFrame("frame size \(size) disagrees with signature length \(length)")
            }
            // A slice, not a copy: payloads run to gigabytes.
            let payload = file[0..<frameStart]
            let sig = file.subdata(in: (frameStart + frameHeaderSize)..<t)
            return ContainerFile(signedBytes: payload, signature: sig)
        }
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

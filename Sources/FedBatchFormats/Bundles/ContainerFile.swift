import FedBatchNative
import Foundation

/// The outer framing of a container file (format 2): the payload (one
/// zstd frame), then one zstd *skippable frame*, which standard
/// decompressors pass over, holding the signed statement and its signature:
///
///     payload     := zstd frame                       (P bytes; the statement names its SHA-256)
///     slot        := u32le 0x184D2A5E                 (skippable-frame magic)
///                    u32le S + L + 16                 (frame content size)
///                    S bytes                          (the statement, canonical JSON)
///                    L bytes                          (binary OpenPGP signature over the statement)
///                    u32le S  u32le L  "fbsig002"     (16-byte trailer)
///
/// The trailer sits at the very end, so a reader finds the slot with one
/// fixed-size read and never has to parse the payload to locate it: the
/// signature and the statement are checked, and the payload hashed against
/// it, before any byte is decompressed. fedbatch-bundle(5) is the normative
/// description.
public struct ContainerFile: Sendable {
    public static let slotMagic: UInt32 = 0x184D_2A5E
    public static let trailerMagic = Array("fbsig002".utf8)
    /// Format 1's trailer, recognised only to refuse it by name.
    static let formatOneMagic = Array("fbsig001".utf8)
    public static let trailerSize = 16
    public static let frameHeaderSize = 8

    /// The compressed archive (manifest and members).
    public let payload: Data
    /// The statement bytes, exactly as signed.
    public let statement: Data
    /// The binary OpenPGP signature over `statement`; empty for an unsigned file.
    public let signature: Data

    package init(payload: Data, statement: Data, signature: Data) {
        self.payload = payload
        self.statement = statement
        self.signature = signature
    }

    /// SHA-256 of the payload, computed here. For a file that verified this
    /// is the digest its statement names: the container's identity (never
    /// its file name).
    public var digest: Digest { Digest.of(payload) }

    /// Where the slot sits and what it holds, from the trailer alone.
    package struct Slot {
        package let payloadLength: Int
        package let statement: Data
        package let signature: Data
    }

    /// Splits a file into payload, statement and signature by reading only
    /// the fixed-size trailer and the slot; nothing is decompressed. An
    /// empty signature is returned as it is (the caller decides).
    public static func split(_ file: Data, limits: ContainerLimits = .default) throws -> ContainerFile {
        let file = file.startIndex == 0 ? file : Data(file)
        let slot = try locate(size: Int64(file.count), limits: limits) { offset, count in
            file.subdata(in: Int(offset)..<(Int(offset) + count))
        }
        // A slice, not a copy: payloads run to gigabytes.
        return ContainerFile(
            payload: file[0..<slot.payloadLength], statement: slot.statement, signature: slot.signature)
    }

    /// Reads a container from an open file, its end first: a file that is
    /// too large or has no valid slot is refused before its payload is read,
    /// so junk costs neither time nor memory.
    public static func read(_ file: OpenFile, limits: ContainerLimits = .default) throws -> ContainerFile {
        let slot = try locate(size: file.size, limits: limits) { try file.read(at: $0, count: $1) }
        let payload = try file.read(at: 0, count: slot.payloadLength)
        guard payload.count == slot.payloadLength else {
            throw FileError(path: file.displayPath, message: "shrank while it was being read")
        }
        return ContainerFile(payload: payload, statement: slot.statement, signature: slot.signature)
    }

    /// A file's statement and signature, from its last few hundred bytes,
    /// with no payload: enough to check a signature or a cosignature.
    public static func slot(of file: OpenFile, limits: ContainerLimits = .default) throws -> ContainerFile {
        try slotAndPayloadLength(of: file, limits: limits).0
    }

    /// `slot(of:)`, with the length of the payload before it.
    public static func slotAndPayloadLength(
        of file: OpenFile, limits: ContainerLimits = .default
    ) throws -> (ContainerFile, payloadLength: Int64) {
        let slot = try locate(size: file.size, limits: limits) { try file.read(at: $0, count: $1) }
        return (
            ContainerFile(payload: Data(), statement: slot.statement, signature: slot.signature),
            Int64(slot.payloadLength)
        )
    }

    /// The statement of a file, parsed but not verified, from its last few
    /// hundred bytes. A merge orders the inbox by the payload digests these
    /// name without reading any payload; verification later proves them.
    public static func statement(of file: OpenFile, limits: ContainerLimits = .default) throws -> Statement {
        let slot = try locate(size: file.size, limits: limits) { try file.read(at: $0, count: $1) }
        return try Statement.parse(slot.statement)
    }

    /// The SHA-256 of a file's payload, hashed in pieces: memory stays small
    /// whatever the file's size.
    public static func payloadDigest(of file: OpenFile, limits: ContainerLimits = .default) throws -> Digest {
        let slot = try locate(size: file.size, limits: limits) { try file.read(at: $0, count: $1) }
        let hasher = SHA2Hasher()
        try hasher.update(file: file, count: Int64(slot.payloadLength))
        return hasher.finalize()
    }

    /// Finds the slot from the trailer; `read(offset, count)` supplies bytes
    /// of the file.
    package static func locate(size: Int64, limits: ContainerLimits, read: (Int64, Int) throws -> Data) throws -> Slot {
        if size > limits.maxFileBytes { throw ContainerError.fileTooLarge(size: size, cap: limits.maxFileBytes) }
        guard size >= Int64(trailerSize + frameHeaderSize + 4) else { throw ContainerError.noSignatureTrailer }
        let trailer = try read(size - Int64(trailerSize), trailerSize)
        guard trailer.count == trailerSize else { throw ContainerError.noSignatureTrailer }
        let t = Array(trailer)
        let magic = Array(t[8..<16])
        if magic == formatOneMagic { throw ContainerError.formatVersion(1) }
        guard magic == trailerMagic else { throw ContainerError.noSignatureTrailer }
        let statementLength = Int(u32(t, 0)), length = Int(u32(t, 4))
        guard statementLength > 0, statementLength <= Statement.maxBytes else {
            throw ContainerError.badSignatureFrame(
                "statement length \(statementLength) is not between 1 and \(Statement.maxBytes)")
        }
        guard length <= limits.maxSignatureBytes else {
            throw ContainerError.signatureTooLarge(size: length, cap: limits.maxSignatureBytes)
        }
        let content = statementLength + length + trailerSize
        let frameStart = size - Int64(content + frameHeaderSize)
        guard frameStart >= 4 else {
            throw ContainerError.badSignatureFrame("statement and signature lengths leave no room for a payload")
        }
        let slot = Array(try read(frameStart, frameHeaderSize + statementLength + length))
        guard slot.count == frameHeaderSize + statementLength + length else { throw ContainerError.noSignatureTrailer }
        let frameMagic = u32(slot, 0), frameSize = u32(slot, 4)
        guard frameMagic == slotMagic else {
            throw ContainerError.badSignatureFrame(
                String(
                    format: "expected skippable-frame magic 0x%08X before the statement, found 0x%08X", slotMagic,
                    frameMagic))
        }
        guard Int(frameSize) == content else {
            throw ContainerError.badSignatureFrame(
                "frame size \(frameSize) disagrees with the statement and signature lengths \(statementLength) "
                    + "+ \(length)"
            )
        }
        let body = Data(slot[frameHeaderSize...])
        return Slot(
            payloadLength: Int(frameStart), statement: body.prefix(statementLength), signature: body.suffix(length))
    }

    private static func u32(_ b: [UInt8], _ i: Int) -> UInt32 {
        UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
    }

    /// Appends the slot to a payload.
    public static func seal(payload: Data, statement: Data, signature: Data) -> Data {
        payload + slot(statement: statement, signature: signature)
    }

    /// The slot that follows a payload: frame header, statement, signature, trailer.
    public static func slot(statement: Data, signature: Data) -> Data {
        var out = Data(capacity: statement.count + signature.count + frameHeaderSize + trailerSize)
        func u32(_ v: UInt32) { out.append(LittleEndian.bytes(of: v)) }
        u32(slotMagic)
        u32(UInt32(statement.count + signature.count + trailerSize))
        out.append(statement)
        out.append(signature)
        u32(UInt32(statement.count))
        u32(UInt32(signature.count))
        out.append(contentsOf: trailerMagic)
        return out
    }
}

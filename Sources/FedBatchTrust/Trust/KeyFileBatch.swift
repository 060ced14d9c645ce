import FedBatchFormats
import FedBatchNative
import Foundation

/// The pinned key files of a home, read by gpg in one process instead of
/// one per file.
///
/// Every command that verifies loads the home's trust set, and reading a
/// key file through gpgme starts a gpg process: with 200 pinned sites an
/// empty merge started about 1000 of them (two verifiers, each parsing,
/// importing and looking up every key) and took 5.5 s. Here the files are
/// handed to gpg together, and each key gpg lists is matched back to its
/// file by fingerprint, which fedbatch computes from the file's own packets
/// (`KeyPackets`). A file is only ever matched when that is unambiguous:
/// one primary public key, no secret key material, armored, and no other
/// file holding the same key with other bytes. Every other file, and every
/// file when gpg refuses the batch, is parsed on its own as before
/// (`KeyFile.parse`), so the batch never changes what is accepted, only
/// how many processes it takes.
package struct KeyFileBatch {
    private var keys: [Digest: GPGKey] = [:]

    /// An empty batch: every file is parsed on its own.
    package init() {}

    /// Reads every `.asc` file below `directory` (hidden names skipped) in
    /// one gpg process.
    init(directory: String, context: GPGContext) {
        var files: [Data] = []
        if let walker = FileManager.default.enumerator(atPath: directory) {
            for case let relative as String in walker
            where relative.hasSuffix(".asc") && !relative.split(separator: "/").contains(where: { $0.hasPrefix(".") }) {
                if let data = try? readFile("\(directory)/\(relative)", cap: 1 << 20) { files.append(data) }
            }
        }
        self.init(files: files, context: context)
    }

    package init(files: [Data], context: GPGContext) {
        var byFingerprint: [String: Set<Digest>] = [:]
        var candidates: [(digest: Digest, data: Data, fingerprint: String)] = []
        for data in files {
            guard let scan = KeyPackets.scan(data), scan.armored, !scan.hasSecret, scan.primaries.count == 1
            else { continue }
            let digest = Digest.of(data)
            byFingerprint[scan.primaries[0], default: []].insert(digest)
            candidates.append((digest, data, scan.primaries[0]))
        }
        // A key held by two files with different bytes (an updated copy)
        // would be merged by gpg: those files are parsed on their own.
        candidates.removeAll { byFingerprint[$0.fingerprint]!.count > 1 }
        var seen: Set<Digest> = []
        candidates.removeAll { !seen.insert($0.digest).inserted }
        guard !candidates.isEmpty else { return }
        var stream = Data()
        for c in candidates {
            stream.append(c.data)
            stream.append(0x0A)
        }
        // A command loads its trust set several times (each verifier, the
        // collector's own checks); the same files are listed once.
        let streamDigest = Digest.of(stream)
        if let cached = Self.listings.value(for: streamDigest) {
            keys = cached
            return
        }
        guard let listed = try? context.keys(inData: stream) else { return }
        defer { Self.listings.store(keys, for: streamDigest) }
        var found: [String: [GPGKey]] = [:]
        for k in listed { found[k.fingerprint, default: []].append(k) }
        for c in candidates {
            if let ks = found[c.fingerprint], ks.count == 1, !ks[0].hasSecret { keys[c.digest] = ks[0] }
        }
    }

    /// The key gpg listed for a file with exactly these bytes, if the batch
    /// could attribute one.
    package func key(for data: Data) -> GPGKey? { keys.isEmpty ? nil : keys[Digest.of(data)] }

    package var count: Int { keys.count }

    /// gpg's listings of the batches this process read, by the digest of
    /// the files handed to gpg: the listing depends on those bytes alone
    /// (and on the clock, for expiry: a command's lifetime).
    private static let listings = ListingCache()
}

/// A small, thread-safe memo of batch listings (the last few, for ten
/// minutes: gpg judged expiry by the clock when it listed them, and a
/// command that runs longer holds its verifiers' listings anyway).
private final class ListingCache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [(digest: Digest, keys: [Digest: GPGKey], listed: Date)] = []
    static let lifetime: TimeInterval = 600

    func value(for digest: Digest) -> [Digest: GPGKey]? {
        lock.withLock {
            entries.first { $0.digest == digest && -$0.listed.timeIntervalSinceNow < Self.lifetime }?.keys
        }
    }

    func store(_ keys: [Digest: GPGKey], for digest: Digest) {
        lock.withLock {
            entries.removeAll { $0.digest == digest }
            entries.append((digest, keys, Date()))
            if entries.count > 4 { entries.removeFirst() }
        }
    }
}

/// The packets of an OpenPGP key file, read without gpg: which primary
/// public keys it holds (by v4 fingerprint) and whether it holds secret key
/// material. Only what `KeyFileBatch` needs to attribute gpg's listing to a
/// file; whether the keys are valid is still gpg's to say.
package enum KeyPackets {
    package struct Scan: Equatable {
        /// Fingerprints of the primary public keys (tag 6), in order.
        package var primaries: [String] = []
        package var hasSecret = false
        package var armored = false
    }

    /// nil for anything but one ASCII-armored or binary key block made of
    /// well-framed packets (then gpg alone decides).
    package static func scan(_ data: Data) -> Scan? {
        guard let packets = packets(data) else { return nil }
        var scan = Scan()
        scan.armored = data.first.map({ $0 & 0x80 == 0 }) == true
        for (tag, body) in packets {
            switch tag {
            case 5, 7: scan.hasSecret = true
            case 6:
                // Only version 4 keys have this fingerprint; any other
                // version is left to gpg.
                guard !body.isEmpty, body.count < 65536, body[0] == 4 else { return nil }
                let fpr = openPGPV4Fingerprint(keyPacketBody: body)
                scan.primaries.append(hex(fpr))
            default: break
            }
        }
        return scan
    }

    /// The packets of one armored or binary key block, as (tag, body);
    /// nil when any packet is badly framed.
    package static func packets(_ data: Data) -> [(tag: Int, body: [UInt8])]? {
        let bytes: [UInt8]
        if data.first.map({ $0 & 0x80 != 0 }) == true {
            bytes = [UInt8](data)
        } else {
            guard let d = dearmor(data) else { return nil }
            bytes = d
        }
        var out: [(Int, [UInt8])] = []
        var offset = 0
        while offset < bytes.count {
            guard let h = try? SignaturePacket.header(bytes, at: offset) else { return nil }
            let start = offset + h.headerLength, end = start + h.bodyLength
            guard end <= bytes.count else { return nil }
            out.append((h.tag, Array(bytes[start..<end])))
            offset = end
        }
        return out
    }

    /// The bytes of one "PGP PUBLIC KEY BLOCK" armor (RFC 4880 §6.2), its
    /// checksum verified; nil for anything else, or for more than
    /// whitespace after the block.
    static func dearmor(_ data: Data) -> [UInt8]? {
        guard let text = String(data: data, encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map {
            $0.hasSuffix("\r") ? $0.dropLast() : $0
        }
        guard let begin = lines.firstIndex(where: { $0 == "-----BEGIN PGP PUBLIC KEY BLOCK-----" }),
            lines[..<begin].allSatisfy({ $0.allSatisfy(\.isWhitespace) })
        else { return nil }
        var i = begin + 1
        // Armor headers ("Comment: ..."), then one blank line.
        while i < lines.count, !lines[i].allSatisfy(\.isWhitespace) {
            guard lines[i].contains(": ") else { break }
            i += 1
        }
        if i < lines.count, lines[i].allSatisfy(\.isWhitespace) { i += 1 }
        var body = ""
        var checksum: Substring?
        while i < lines.count, !lines[i].hasPrefix("-----") {
            let line = lines[i].trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("=") && line.count == 5 {
                checksum = Substring(line.dropFirst())
            } else {
                body += line
            }
            i += 1
        }
        guard i < lines.count, lines[i] == "-----END PGP PUBLIC KEY BLOCK-----",
            lines[(i + 1)...].allSatisfy({ $0.allSatisfy(\.isWhitespace) }),
            let decoded = Data(base64Encoded: body)
        else { return nil }
        let bytes = [UInt8](decoded)
        if let checksum {
            guard let c = Data(base64Encoded: String(checksum)), c.count == 3,
                UInt32(c[0]) << 16 | UInt32(c[1]) << 8 | UInt32(c[2]) == crc24(bytes)
            else { return nil }
        }
        return bytes
    }

    /// OpenPGP's CRC-24 (RFC 4880 §6.1).
    static func crc24(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xB7_04CE
        for b in bytes {
            crc ^= UInt32(b) << 16
            for _ in 0..<8 {
                crc <<= 1
                if crc & 0x100_0000 != 0 { crc ^= 0x186_4CFB }
            }
        }
        return crc & 0xFF_FFFF
    }
}

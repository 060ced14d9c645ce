import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// Filing inbox entries into `accepted/` and `quarantine/`.
///
/// Every entry is handled on its own: it ends accepted, quarantined (beside
/// a reason file), removed as a copy of something the home already keeps,
/// or left in the inbox with a reported reason. Names in `accepted/` and
/// `quarantine/` are made from the original name but are always plain,
/// short, unique, and never end in `.reason.json`, so a data file can
/// collide neither with another nor with a reason file, whatever name it
/// arrived under (240 characters, bytes that are not UTF-8, or a name that
/// itself ends in `.reason.json`).
enum Filing {
    static let reasonSuffix = ".reason.json"
    /// Room for `~N`, `.reason.json` and writeFileAtomically's temp prefix
    /// and suffix within NAME_MAX (255).
    static let maxStem = 160

    /// A plain name from raw bytes: `[A-Za-z0-9._-]` kept, anything else
    /// `_`, no leading dot, at most `maxStem` bytes.
    static func plainName(_ raw: [UInt8]) -> String {
        var bytes = raw.map { b -> UInt8 in ContainerPath.isPlainByte(b) ? b : 0x5F }
        if bytes.count > maxStem { bytes = Array(bytes.prefix(maxStem)) }
        if bytes.first == 0x2E { bytes[0] = 0x5F }
        var name = bytes.isEmpty ? "_" : String(decoding: bytes, as: UTF8.self)
        if name.hasSuffix(reasonSuffix) { name += "_" }
        return name
    }

    /// A name in `directory` that neither exists nor would collide with
    /// an existing reason file (the caller holds the home's lock).
    static func freeName(in directory: String, for raw: [UInt8]) throws -> String {
        let base = plainName(raw)
        var candidate = base
        var i = 1
        while try entryStatus(DirectoryEntry(directory: directory, name: candidate)) != nil
            || entryStatus(DirectoryEntry(directory: directory, name: candidate + reasonSuffix)) != nil
        {
            candidate = "\(base)~\(i)"
            i += 1
        }
        return candidate
    }

    /// The SHA-256 of a regular file's bytes; nil for anything else, and
    /// for a file larger than `cap`: a reason record of an oversized (or
    /// sparse, 8 GiB of holes) file is not worth reading all of it.
    static func fileDigest(_ entry: DirectoryEntry, cap: Int64) -> Digest? {
        guard let file = try? OpenFile(entry), file.size <= cap else { return nil }
        let hasher = SHA2Hasher()
        guard (try? hasher.update(file: file, count: file.size)) != nil else { return nil }
        return hasher.finalize()
    }

    /// The reason file beside a quarantined entry.
    struct Reason: Codable {
        var code: String
        var message: String
        /// SHA-256 of the file's bytes (what `sha256sum` prints); absent for
        /// links, directories and other non-files.
        var digest: String?
        /// The bundle digest, when the signature verified.
        var bundleDigest: String?
        var time: String
        /// The original name, escaped (see `DirectoryEntry.displayName`).
        var file: String
        var storedAs: String
    }

    static func writeReason(_ reason: Reason, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        try writeFileAtomically(try encoder.encode(reason) + Data("\n".utf8), to: path)
    }

    static func readReason(_ path: String) -> Reason? {
        guard let data = try? readFile(path, cap: 1 << 20) else { return nil }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try? decoder.decode(Reason.self, from: data)
    }

    /// Removes what a crash can leave behind: writeFileAtomically's temp
    /// files (`.NAME.tmp-XXXXXX`) and interrupted ledger rebuilds.
    static func removeCrashLeftovers(_ layout: HomeLayout) {
        for dir in [
            layout.generations, layout.quarantine, layout.accepted, layout.outbox, layout.keys, layout.siteKeys,
            layout.root,
            layout.inbox,
        ] {
            for e in (try? listDirectory(dir)) ?? [] where isLeftover(e.name) {
                try? removeEntry(e)
            }
        }
    }

    static func isLeftover(_ name: [UInt8]) -> Bool {
        guard name.first == 0x2E, let s = String(validating: name, as: UTF8.self) else { return false }
        if s.hasPrefix(".state.db.rebuild-") { return true }
        // A download or staged upload of a killed push or pull: every
        // transfer runs under the home's lock, which the caller holds.
        if s.hasPrefix(".fedbatch-transfer-") { return true }
        guard let r = s.range(of: ".tmp-", options: .backwards) else { return false }
        let suffix = s[r.upperBound...]
        return suffix.count == 6 && suffix.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) }
    }
}

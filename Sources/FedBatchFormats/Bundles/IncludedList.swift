import FedBatchNative
import Foundation

/// The member `included.jsonl` of a generation or partial aggregate: the
/// bundles it aggregated, one per line, each line the canonical JSON of
/// one `Manifest.IncludedBundle` (sorted keys, snake_case, no whitespace)
/// followed by a newline, in increasing digest order.
///
/// Why a member and not a manifest field: every reader caps the manifest
/// (4 MiB), and at 225 to 300 bytes an entry that capped a generation at
/// about 14,000 bundles. The manifest now gives only `included_count`
/// and, among its members, the list's length and SHA-256; a reader caps
/// the member by that count times a line cap, so the limit grows with the
/// federation instead of refusing it. Digest order makes the list
/// searchable by bisection (a site looking for its own bundle) and leaves
/// one encoding per set of bundles.
public enum IncludedList {
    /// The member's bytes for `bundles`, which must already be in digest order.
    public static func encode(_ bundles: [Manifest.IncludedBundle]) throws -> Data {
        let encoder = Manifest.canonicalEncoder()
        var out = Data()
        out.reserveCapacity(bundles.count * 340)
        for b in bundles {
            out.append(try encoder.encode(b))
            out.append(0x0A)
        }
        return out
    }

    /// Parses the member of a manifest that declared `count` bundles:
    /// exactly that many lines, each newline-terminated, none longer than
    /// the line cap, each a valid entry, digests strictly increasing (so
    /// none twice). The member's SHA-256 was checked before this runs.
    public static func decode(
        _ data: Data, count: Int, limits: ContainerLimits = .default
    ) throws
        -> [Manifest.IncludedBundle]
    {
        let cap = try limits.includedMemberCap(count: count)
        guard Int64(data.count) <= cap else {
            throw ContainerError.memberTooLarge(name: ContainerPath.included, size: Int64(data.count), cap: cap)
        }
        var bundles: [Manifest.IncludedBundle] = []
        bundles.reserveCapacity(count)
        // One copy into an array: its slices index directly, where a Data
        // slice goes through Data's own indexing on every byte.
        let bytes = [UInt8](data)
        var start = 0
        var previous: String?
        while start < bytes.count {
            let line = bundles.count + 1
            guard line <= count else {
                throw ContainerError.manifestInvalid(
                    "\(ContainerPath.included) has more lines than included_count (\(count))")
            }
            let limit = min(bytes.count, start + limits.maxIncludedLineBytes + 1)
            guard let end = bytes[start..<limit].firstIndex(of: 0x0A) else {
                throw ContainerError.manifestInvalid(
                    limit == bytes.count
                        ? "\(ContainerPath.included) line \(line) has no newline at its end"
                        : "\(ContainerPath.included) line \(line) is longer than \(limits.maxIncludedLineBytes) bytes")
            }
            let value: JSONValue
            do {
                value = try StrictJSON.parse(bytes[start..<end])
            } catch let e as JSONSyntaxError {
                throw ContainerError.manifestInvalid(
                    "\(ContainerPath.included) line \(line) is not valid JSON: \(e.description)")
            }
            let b = try ManifestDecoder.includedBundle(value, line: line)
            guard Digest(hex: b.digest) != nil else {
                throw ContainerError.manifestInvalid(
                    "\(ContainerPath.included) line \(line): digest \"\(b.digest)\" is not 64 lowercase hex digits")
            }
            if let previous, !(previous < b.digest) {
                throw ContainerError.manifestInvalid(
                    "\(ContainerPath.included) line \(line): digests must be in increasing order, each once")
            }
            previous = b.digest
            bundles.append(b)
            start = end + 1
        }
        guard bundles.count == count else {
            throw ContainerError.manifestInvalid(
                "included_count is \(count), but \(ContainerPath.included) lists \(bundles.count) bundles")
        }
        return bundles
    }
}

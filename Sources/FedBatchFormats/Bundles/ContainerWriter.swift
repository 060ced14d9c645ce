import FedBatchNative
import Foundation

/// Writes the payload of a container: a pax tar of `manifest.json` followed
/// by the other members in the order given, compressed as one zstd frame.
/// The same manifest and members give the same bytes with the same libzstd.
public enum ContainerWriter {
    /// zstd level 3 (zstd's default): weights are near-incompressible, so
    /// higher levels cost time for little gain.
    public static let compressionLevel: Int32 = 3

    /// Fills `manifest.members` with each member's length and SHA-256,
    /// then returns the compressed payload and the final manifest.
    public static func payload(
        manifest: Manifest, members: [(name: String, data: Data)]
    ) throws -> (payload: Data, manifest: Manifest) {
        let (manifest, members) = try layout(manifest: manifest, members: members)
        let manifestBytes = try manifest.encoded()

        let out = try tarZstdArchive(
            [(ContainerPath.manifest, manifestBytes)] + members, level: compressionLevel,
            reserve: manifestBytes.count + members.reduce(0) { $0 + $1.data.count } + (64 << 10))
        return (out, manifest)
    }

    /// The manifest exactly as `payload` writes it, members listed, without
    /// compressing anything: what an audit compares with a generation's own
    /// manifest bytes (which commit to every member by its SHA-256).
    public static func describing(manifest: Manifest, members: [(name: String, data: Data)]) throws -> Manifest {
        try layout(manifest: manifest, members: members).manifest
    }

    /// The manifest and the members exactly as `payload` writes them: a
    /// list of included bundles moves into the last member,
    /// `included.jsonl`, sorted by digest, and the manifest keeps its count
    /// (`IncludedList`), in a version-3 manifest. `inlineIncluded` writes
    /// version 2, the list in the manifest, as generations written before
    /// the member did; only an audit of such a generation asks for it.
    public static func layout(
        manifest: Manifest, members: [(name: String, data: Data)], inlineIncluded: Bool = false
    ) throws -> (manifest: Manifest, members: [(name: String, data: Data)]) {
        var manifest = manifest
        // The list is always derived from the manifest's entries: a member
        // of that name passed in (a container read back and sealed again)
        // is replaced, never listed twice.
        var members = members.filter { $0.name != ContainerPath.included }
        if inlineIncluded { manifest.version = Manifest.oldestReadableVersion }
        if let included = manifest.included, !inlineIncluded {
            let sorted = included.sorted { $0.digest < $1.digest }
            manifest.included = sorted
            manifest.includedCount = sorted.count
            members.append((ContainerPath.included, try IncludedList.encode(sorted)))
        } else {
            manifest.includedCount = nil
        }
        manifest.members = members.map {
            Manifest.Member(name: $0.name, length: Int64($0.data.count), sha256: Digest.of($0.data).hex)
        }
        try manifest.validate()
        return (manifest, members)
    }
}

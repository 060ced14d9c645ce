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
        let manifest = try describing(manifest: manifest, members: members)
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
        var manifest = manifest
        manifest.members = members.map {
            Manifest.Member(name: $0.name, length: Int64($0.data.count), sha256: Digest.of($0.data).hex)
        }
        try manifest.validate()
        return manifest
    }
}

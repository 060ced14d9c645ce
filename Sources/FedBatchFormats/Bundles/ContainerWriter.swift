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
        let (final, laid) = try layout(
            manifest: manifest, contents: members.map { ($0.name, .data($0.data)) }, inlineIncluded: inlineIncluded)
        return (
            final,
            laid.compactMap {
                if case .data(let d) = $0.contents { return ($0.name, d) }
                return nil
            }
        )
    }

    /// What a member of a container being written holds: bytes in memory,
    /// or a file a streaming merge wrote (the new weights, the optimiser's
    /// state), which is hashed and archived a piece at a time.
    public enum Contents {
        case data(Data)
        case spilled(Container.SpilledMember)

        var length: Int64 {
            switch self {
            case .data(let d): return Int64(d.count)
            case .spilled(let s): return s.length
            }
        }

        func sha256() throws -> Digest {
            switch self {
            case .data(let d): return Digest.of(d)
            case .spilled(let s):
                let hasher = SHA2Hasher()
                try s.file.forEachPiece(size: s.length, piece: 1 << 20) { hasher.update($0) }
                return hasher.finalize()
            }
        }
    }

    static func layout(
        manifest: Manifest, contents members: [(name: String, contents: Contents)], inlineIncluded: Bool = false
    ) throws -> (manifest: Manifest, members: [(name: String, contents: Contents)]) {
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
            members.append((ContainerPath.included, .data(try IncludedList.encode(sorted))))
        } else {
            manifest.includedCount = nil
        }
        manifest.members = try members.map {
            Manifest.Member(name: $0.name, length: $0.contents.length, sha256: try $0.contents.sha256().hex)
        }
        try manifest.validate()
        return (manifest, members)
    }

    /// The payload `payload` would make, written to `sink` a piece at a
    /// time: members on disk are read, archived and compressed without ever
    /// being held whole. Same manifest and members, same bytes.
    public static func write(
        manifest: Manifest, members: [(name: String, contents: Contents)],
        to sink: @escaping (Data) throws -> Void
    ) throws -> Manifest {
        let (manifest, members) = try layout(manifest: manifest, contents: members)
        let archived: [TarMember] =
            [.data(name: ContainerPath.manifest, try manifest.encoded())]
            + members.map { name, contents in
                switch contents {
                case .data(let d): return .data(name: name, d)
                case .spilled(let s): return .scratch(name: name, s.file, length: s.length)
                }
            }
        try tarZstdStream(archived, level: compressionLevel, sink: sink)
        return manifest
    }
}

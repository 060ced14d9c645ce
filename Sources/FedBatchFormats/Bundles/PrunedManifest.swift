import FedBatchNative
import Foundation

/// What a pruned generation (`gNNNNNN.fbm`, fedbatch-bundle(5), PRUNED
/// GENERATIONS) keeps in place of its payload: the manifest's bytes, then,
/// for a generation whose bundles are listed in `included.jsonl`, a
/// newline and that member's bytes. Canonical JSON holds no raw newline,
/// so the first one divides the two; the statement names the manifest's
/// SHA-256 and the manifest names the list's, so both stay verifiable
/// after the weights are gone, and `log`, `audit` trails and `status`
/// still see which bundles the generation took.
public enum PrunedManifest {
    /// The bytes kept for a generation with these manifest bytes and members.
    public static func keptBytes(manifestBytes: Data, members: [String: Data]) -> Data {
        guard let list = members[ContainerPath.included] else { return manifestBytes }
        return manifestBytes + Data([0x0A]) + list
    }

    /// The manifest bytes, for the statement's digest, before anything is parsed.
    public static func manifestBytes(of kept: Data) -> Data {
        guard let newline = kept.firstIndex(of: 0x0A) else { return kept }
        return kept[kept.startIndex..<newline]
    }

    /// The manifest with its list filled in; the list must match the
    /// length and SHA-256 the manifest gives it.
    public static func decode(_ kept: Data, limits: ContainerLimits = .default) throws -> Manifest {
        let bytes = manifestBytes(of: kept)
        var manifest = try Manifest.decode(bytes)
        let rest = kept.count > bytes.count ? kept[(bytes.endIndex + 1)...] : nil
        guard let count = manifest.includedCount else {
            guard rest == nil else {
                throw ContainerError.manifestInvalid(
                    "the pruned manifest is followed by a list of bundles it does not declare")
            }
            return manifest
        }
        guard let declared = manifest.members.first(where: { $0.name == ContainerPath.included }),
            let list = rest.map({ Data($0) }), Int64(list.count) == declared.length,
            Digest.of(list).hex == declared.sha256
        else {
            throw ContainerError.manifestInvalid(
                "the pruned manifest's \(ContainerPath.included) is missing, or its length or SHA-256 differs from "
                    + "the manifest's")
        }
        manifest.included = try IncludedList.decode(list, count: count, limits: limits)
        try manifest.validate()
        return manifest
    }

    /// The largest `.fbm` a reader accepts: a manifest and the longest
    /// list the limits allow, plus the slot.
    public static func fileCap(_ limits: ContainerLimits = .default) -> Int64 {
        Int64(limits.maxManifestBytes) + Int64(limits.maxIncludedBundles) * Int64(limits.maxIncludedLineBytes)
            + (64 << 10)
    }
}

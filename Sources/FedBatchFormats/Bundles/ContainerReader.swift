import FedBatchNative
import Foundation

/// A container whose payload passed every structural check: the manifest
/// came first and parsed, every member is a plain regular file the manifest
/// lists with the right length and SHA-256, nothing is missing or extra,
/// and nothing but zero padding follows the archive.
public struct Container: Sendable {
    public let manifest: Manifest
    public let manifestBytes: Data
    /// Member contents by name, in memory (nothing is ever extracted to disk).
    public let members: [String: Data]

    package init(manifest: Manifest, manifestBytes: Data, members: [String: Data]) {
        self.manifest = manifest
        self.manifestBytes = manifestBytes
        self.members = members
    }

    /// Parses and validates `tensors.safetensors`.
    public func tensors(limits: SafetensorsLimits = SafetensorsLimits()) throws -> SafetensorsFile {
        guard let data = members[ContainerPath.tensors] else {
            throw ContainerError.missingMember(ContainerPath.tensors)
        }
        do {
            return try SafetensorsFile(bytes: data, limits: limits)
        } catch let e as SafetensorsError {
            throw ContainerError.tensors(e)
        }
    }
}

/// The hardened reader for container payloads. It streams: zstd output goes
/// straight into the tar reader, and only members the manifest declares (and
/// the caps allow) are ever held in memory, so a decompression bomb costs
/// time up to a cap but no memory.
///
/// Callers must verify the signature first (`Trust`); this reader is also
/// what `fedbatch inspect` uses on files it makes no trust decision about.
public enum ContainerReader {
    public static func read(payload: Data, limits: ContainerLimits = .default) throws -> Container {
        do {
            return try readStream(payload: payload, limits: limits)
        } catch let e as ZstdError {
            throw ContainerError.compression(e)
        } catch let e as ArchiveError {
            throw ContainerError.archive(e.message)
        }
    }

    private static func readStream(payload: Data, limits: ContainerLimits) throws -> Container {
        let decoder = try ZstdDecoder(
            frame: payload, windowLogMax: limits.windowLogMax, outputCap: limits.maxDecompressedBytes)
        let tar = try TarReader(reading: decoder)

        guard let first = try tar.next() else { throw ContainerError.emptyArchive }
        try checkHeader(first, limits: limits)
        guard first.pathString == ContainerPath.manifest else {
            throw ContainerError.manifestNotFirst(found: first.pathString)
        }
        let manifestSize = first.size ?? 0
        guard manifestSize <= Int64(limits.maxManifestBytes) else {
            throw ContainerError.manifestTooLarge(size: manifestSize, cap: limits.maxManifestBytes)
        }
        let manifestBytes = try readMember(tar, name: ContainerPath.manifest, size: manifestSize).data
        var manifest = try Manifest.decode(manifestBytes)
        // The list of included bundles is capped by the count the manifest
        // declares, and allowed on top of the other caps.
        let listCap = try manifest.includedCount.map { try limits.includedMemberCap(count: $0) } ?? 0

        var declared: [String: Manifest.Member] = [:]
        for m in manifest.members { declared[m.name] = m }
        var members: [String: Data] = [:]
        var seen: Set<String> = [ContainerPath.manifest]
        var total = manifestSize
        var entries = 1

        while let header = try tar.next() {
            entries += 1
            if entries > limits.maxEntries { throw ContainerError.tooManyEntries(cap: limits.maxEntries) }
            let name = header.pathString
            try checkHeader(header, limits: limits, cap: name == ContainerPath.included ? listCap : nil)
            guard seen.insert(name).inserted else { throw ContainerError.duplicateMember(name) }
            guard let expected = declared[name] else { throw ContainerError.undeclaredMember(name) }
            let size = header.size ?? 0
            guard size == expected.length else {
                throw ContainerError.sizeMismatch(name: name, declared: expected.length, actual: size)
            }
            total += size
            if total > limits.maxDecompressedBytes + listCap {
                throw ContainerError.totalTooLarge(cap: limits.maxDecompressedBytes + listCap)
            }
            let (data, digest) = try readMember(tar, name: name, size: size)
            guard digest.hex == expected.sha256 else {
                throw ContainerError.hashMismatch(name: name, declared: expected.sha256, actual: digest.hex)
            }
            members[name] = data
        }
        for m in manifest.members where members[m.name] == nil {
            throw ContainerError.missingMember(m.name)
        }
        try checkTrailer(tar, limits: limits)
        if let count = manifest.includedCount, let list = members[ContainerPath.included] {
            manifest.included = try IncludedList.decode(list, count: count, limits: limits)
            try manifest.validate()
        }
        return Container(manifest: manifest, manifestBytes: manifestBytes, members: members)
    }

    /// The per-entry rules of fedbatch-bundle(5): plain relative names,
    /// regular files only, a declared size under the cap.
    private static func checkHeader(_ h: TarEntryHeader, limits: ContainerLimits, cap: Int64? = nil) throws {
        guard ContainerPath.isValid(bytes: h.path) else { throw ContainerError.unsafePath(h.pathString) }
        switch h.kind {
        case .regular: break
        case .symlink: throw ContainerError.notRegularFile(path: h.pathString, kind: "symlink")
        case .hardlink: throw ContainerError.notRegularFile(path: h.pathString, kind: "hardlink")
        case .directory: throw ContainerError.notRegularFile(path: h.pathString, kind: "directory")
        case .other(let mode):
            throw ContainerError.notRegularFile(
                path: h.pathString, kind: String(format: "special file (type 0%o)", mode))
        }
        if h.isSparse { throw ContainerError.sparseMember(h.pathString) }
        guard let size = h.size else { throw ContainerError.missingSize(h.pathString) }
        let cap = cap ?? limits.maxMemberBytes
        if size > cap || size < 0 {
            throw ContainerError.memberTooLarge(name: h.pathString, size: size, cap: cap)
        }
    }

    /// Reads exactly `size` bytes of the current member, hashing as it goes.
    private static func readMember(_ tar: TarReader, name: String, size: Int64) throws -> (data: Data, digest: Digest) {
        let hasher = SHA2Hasher()
        let (data, overran) = try tar.readEntry(size: Int(size), hashingInto: hasher)
        // The header's size is authoritative; anything past it is an error.
        if overran { throw ContainerError.sizeMismatch(name: name, declared: size, actual: size + 1) }
        if data.count != Int(size) {
            throw ContainerError.sizeMismatch(name: name, declared: size, actual: Int64(data.count))
        }
        return (data, hasher.finalize())
    }

    /// After the end-of-archive marker only zero padding may follow, and not
    /// much of it: this stops a bomb hidden after a valid archive as soon as
    /// it shows a non-zero byte or exceeds the padding cap.
    private static func checkTrailer(_ tar: TarReader, limits: ContainerLimits) throws {
        guard let tail = tar.unconsumedTailBytes() else {
            throw ContainerError.archive("cannot locate the end of the archive")
        }
        var trailing = Int64(tail.count)
        var nonZero = tail.contains { $0 != 0 }
        while !nonZero && trailing <= limits.maxTrailingZeroBytes {
            let chunk = try tar.readSource(count: 64 * 1024)
            if chunk.isEmpty { break }
            trailing += Int64(chunk.count)
            nonZero = chunk.contains { $0 != 0 }
        }
        if nonZero || trailing > limits.maxTrailingZeroBytes { throw ContainerError.trailingData(bytes: trailing) }
    }
}

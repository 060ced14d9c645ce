import FedBatchNative
import Foundation

/// A container whose payload passed every structural check: the manifest
/// came first and parsed, every member is a plain regular file the manifest
/// lists with the right length and SHA-256, nothing is missing or extra,
/// and nothing but zero padding follows the archive.
public struct Container: Sendable {
    public let manifest: Manifest
    public let manifestBytes: Data
    /// Member contents by name, in memory.
    public let members: [String: Data]
    /// Members a streaming merge decompressed to unnamed scratch files
    /// instead (`ContainerReader.read(file:...)`): the model-sized ones.
    public let spilled: [String: SpilledMember]

    package init(
        manifest: Manifest, manifestBytes: Data, members: [String: Data], spilled: [String: SpilledMember] = [:]
    ) {
        self.manifest = manifest
        self.manifestBytes = manifestBytes
        self.members = members
        self.spilled = spilled
    }

    /// A member on disk, checked against the manifest's length and SHA-256.
    public struct SpilledMember: Sendable {
        public let file: ScratchFile
        public let length: Int64
        public init(file: ScratchFile, length: Int64) {
            self.file = file
            self.length = length
        }
    }

    /// A member's safetensors, in memory or spilled; nil if it is neither.
    public func safetensors(
        _ name: String, limits: SafetensorsLimits = SafetensorsLimits()
    ) throws -> (any TensorSource)? {
        if let s = spilled[name] { return try SpilledSafetensors(file: s.file, size: s.length, limits: limits) }
        return try members[name].map { try SafetensorsFile(bytes: $0, limits: limits) }
    }

    /// `tensors.safetensors`, in memory or spilled, parsed and validated.
    public func tensorSource(limits: SafetensorsLimits = SafetensorsLimits()) throws -> any TensorSource {
        do {
            guard let source = try safetensors(ContainerPath.tensors, limits: limits) else {
                throw ContainerError.missingMember(ContainerPath.tensors)
            }
            return source
        } catch let e as SafetensorsError {
            throw ContainerError.tensors(e)
        }
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
            return try readStream(
                try ZstdDecoder(
                    frame: payload, windowLogMax: limits.windowLogMax, outputCap: limits.maxDecompressedBytes),
                limits: limits, spill: nil)
        } catch let e as ZstdError {
            throw ContainerError.compression(e)
        } catch let e as ArchiveError {
            throw ContainerError.archive(e.message)
        }
    }

    /// What a streaming read writes to disk: the members named, each to an
    /// unnamed scratch file in `directory`.
    public struct Spill: Sendable {
        public let members: Set<String>
        public let directory: String
        public init(members: Set<String>, directory: String) {
            self.members = members
            self.directory = directory
        }
    }

    /// Reads the payload of a container from the first `length` bytes of
    /// `file`, a piece at a time, writing the members `spill` names to
    /// scratch files rather than memory; every other rule is the in-memory
    /// reader's. Returns the container and the SHA-256 of the bytes it
    /// decompressed, which the caller compares with the digest it verified
    /// before: a file changed between the two reads is thereby refused.
    public static func read(
        file: OpenFile, length: Int64, limits: ContainerLimits = .default, spill: Spill
    ) throws -> (Container, Digest) {
        let hasher = SHA2Hasher()
        do {
            let decoder = try decoder(of: file, length: length, limits: limits, hashingInto: hasher)
            let container = try readStream(decoder, limits: limits, spill: spill)
            return (container, hasher.finalize())
        } catch let e as ZstdError {
            throw ContainerError.compression(e)
        } catch let e as ArchiveError {
            throw ContainerError.archive(e.message)
        }
    }

    /// The manifest of a container file, decompressed from the first bytes
    /// of its payload, **unverified**: only for choosing how to read the
    /// file (a streaming merge or not), never for trusting anything in it.
    public static func peekManifest(_ file: OpenFile, limits: ContainerLimits = .default) throws -> Manifest {
        let (_, length) = try ContainerFile.slotAndPayloadLength(of: file, limits: limits)
        let decoder = try decoder(of: file, length: length, limits: limits)
        let tar = try TarReader(reading: decoder)
        guard let first = try tar.next(), first.pathString == ContainerPath.manifest,
            let size = first.size, size <= Int64(limits.maxManifestBytes)
        else { throw ContainerError.manifestNotFirst(found: "?") }
        return try Manifest.decode(try readMember(tar, name: ContainerPath.manifest, size: size).data)
    }

    /// A decoder of the first `length` bytes of `file` (the payload), read
    /// a piece at a time and hashed into `hasher` if one is given.
    private static func decoder(
        of file: OpenFile, length: Int64, limits: ContainerLimits, hashingInto hasher: SHA2Hasher? = nil
    ) throws -> ZstdDecoder {
        var offset: Int64 = 0
        return try ZstdDecoder(windowLogMax: limits.windowLogMax, outputCap: limits.maxDecompressedBytes) { n in
            let count = Int(min(Int64(n), length - offset))
            guard count > 0 else { return Data() }
            let data = try file.read(at: offset, count: count)
            guard data.count == count else {
                throw FileError(path: file.displayPath, message: "shrank while it was being read")
            }
            hasher?.update(data)
            offset += Int64(count)
            return data
        }
    }

    private static func readStream(_ decoder: ZstdDecoder, limits: ContainerLimits, spill: Spill?) throws -> Container {
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
        var spilled: [String: Container.SpilledMember] = [:]
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
            if let spill, spill.members.contains(name) {
                let file = try ScratchFile(in: spill.directory)
                let hasher = SHA2Hasher()
                let (written, overran) = try tar.spillEntry(size: size, to: file, hashingInto: hasher)
                if overran { throw ContainerError.sizeMismatch(name: name, declared: size, actual: size + 1) }
                if written != size { throw ContainerError.sizeMismatch(name: name, declared: size, actual: written) }
                let digest = hasher.finalize()
                guard digest.hex == expected.sha256 else {
                    throw ContainerError.hashMismatch(name: name, declared: expected.sha256, actual: digest.hex)
                }
                spilled[name] = .init(file: file, length: size)
                continue
            }
            let (data, digest) = try readMember(tar, name: name, size: size)
            guard digest.hex == expected.sha256 else {
                throw ContainerError.hashMismatch(name: name, declared: expected.sha256, actual: digest.hex)
            }
            members[name] = data
        }
        for m in manifest.members where members[m.name] == nil && spilled[m.name] == nil {
            throw ContainerError.missingMember(m.name)
        }
        try checkTrailer(tar, limits: limits)
        if let count = manifest.includedCount, let list = members[ContainerPath.included] {
            manifest.included = try IncludedList.decode(list, count: count, limits: limits)
            try manifest.validate()
        }
        return Container(manifest: manifest, manifestBytes: manifestBytes, members: members, spilled: spilled)
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

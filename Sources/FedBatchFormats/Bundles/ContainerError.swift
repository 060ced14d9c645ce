import FedBatchNative
import Foundation

/// Why a container (update bundle or generation) was refused. Every case has
/// a stable `code` for reason files and scripts, and a message that names the
/// member, size or limit at fault.
public enum ContainerError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    case fileTooLarge(size: Int64, cap: Int64)
    case formatVersion(Int)
    case noSignatureTrailer
    case badSignatureFrame(String)
    case signatureTooLarge(size: Int, cap: Int)
    case emptySignature
    case compression(ZstdError)
    case archive(String)
    case emptyArchive
    case unsafePath(String)
    case notRegularFile(path: String, kind: String)
    case sparseMember(String)
    case duplicateMember(String)
    case tooManyEntries(cap: Int)
    case memberTooLarge(name: String, size: Int64, cap: Int64)
    case totalTooLarge(cap: Int64)
    case missingSize(String)
    case manifestNotFirst(found: String)
    case manifestTooLarge(size: Int64, cap: Int)
    case manifestInvalid(String)
    case undeclaredMember(String)
    case missingMember(String)
    case sizeMismatch(name: String, declared: Int64, actual: Int64)
    case hashMismatch(name: String, declared: String, actual: String)
    case trailingData(bytes: Int64)
    case tensors(SafetensorsError)

    public var code: String {
        switch self {
        case .fileTooLarge: return "file.too-large"
        case .formatVersion: return "file.version"
        case .noSignatureTrailer: return "signature.missing"
        case .badSignatureFrame: return "signature.frame"
        case .signatureTooLarge: return "signature.too-large"
        case .emptySignature: return "signature.empty"
        case .compression(let z):
            switch z {
            case .windowTooLarge: return "zstd.window"
            case .outputTooLarge: return "zstd.too-large"
            case .truncated: return "zstd.truncated"
            case .trailingData: return "zstd.trailing-data"
            case .notZstd: return "zstd.not-zstd"
            case .library: return "zstd.corrupt"
            }
        case .archive: return "tar.malformed"
        case .emptyArchive: return "tar.empty"
        case .unsafePath: return "tar.unsafe-path"
        case .notRegularFile(_, let kind):
            switch kind {
            case "symlink": return "tar.symlink"
            case "hardlink": return "tar.hardlink"
            default: return "tar.not-regular"
            }
        case .sparseMember: return "tar.sparse"
        case .duplicateMember: return "tar.duplicate"
        case .tooManyEntries: return "tar.too-many-entries"
        case .memberTooLarge: return "tar.member-too-large"
        case .totalTooLarge: return "tar.total-too-large"
        case .missingSize: return "tar.no-size"
        case .manifestNotFirst: return "manifest.not-first"
        case .manifestTooLarge: return "manifest.too-large"
        case .manifestInvalid: return "manifest.invalid"
        case .undeclaredMember: return "member.undeclared"
        case .missingMember: return "member.missing"
        case .sizeMismatch: return "member.size"
        case .hashMismatch: return "member.hash"
        case .trailingData: return "tar.trailing-data"
        case .tensors: return "tensors.invalid"
        }
    }

    public var description: String {
        switch self {
        case let .fileTooLarge(size, cap):
            return "file is \(size) bytes, above the cap of \(cap) bytes"
        case .formatVersion(let v):
            return
                "this is a format-\(v) container; this fedbatch reads format \(Statement.version) only "
                + "(fedbatch-bundle(5)): ask its sender to write it again with this version"
        case .noSignatureTrailer:
            return
                "file does not end with a fedbatch signature slot: it was truncated, bytes were appended, or it is "
                + "not a fedbatch container"
        case .badSignatureFrame(let why):
            return "signature slot is malformed: \(why)"
        case let .signatureTooLarge(size, cap):
            return "signature slot claims \(size) bytes, above the cap of \(cap)"
        case .emptySignature:
            return "signature slot is empty: the file is unsigned"
        case .compression(let z):
            return z.description
        case .archive(let m):
            return "tar stream is malformed: \(m)"
        case .emptyArchive:
            return "tar stream holds no members"
        case .unsafePath(let p):
            return
                "member name \"\(p)\" is not allowed: names are relative paths of [A-Za-z0-9._-] segments, with no "
                + "'..' or leading '/'"
        case let .notRegularFile(p, kind):
            return "member \"\(p)\" is a \(kind); only regular files are allowed"
        case .sparseMember(let p):
            return "member \"\(p)\" is a sparse file; only plain regular files are allowed"
        case .duplicateMember(let p):
            return "member \"\(p)\" appears twice"
        case .tooManyEntries(let cap):
            return "more than \(cap) tar entries"
        case let .memberTooLarge(name, size, cap):
            return "member \"\(name)\" declares \(size) bytes, above the cap of \(cap)"
        case .totalTooLarge(let cap):
            return "members add up to more than the cap of \(cap) bytes"
        case .missingSize(let p):
            return "member \"\(p)\" has no size in its header"
        case .manifestNotFirst(let found):
            return "the first member is \"\(found)\"; manifest.json must come first"
        case let .manifestTooLarge(size, cap):
            return "manifest.json is \(size) bytes, above the cap of \(cap)"
        case .manifestInvalid(let m):
            return "manifest.json: \(m)"
        case .undeclaredMember(let p):
            return "member \"\(p)\" is not listed in the manifest"
        case .missingMember(let p):
            return "the manifest lists \"\(p)\" but the archive does not hold it"
        case let .sizeMismatch(name, declared, actual):
            return "member \"\(name)\" is \(actual) bytes; the manifest says \(declared)"
        case let .hashMismatch(name, declared, actual):
            return "member \"\(name)\" has SHA-256 \(actual); the manifest says \(declared)"
        case .trailingData(let n):
            return "\(n) or more bytes follow the end of the tar archive; only zero padding, up to 1 MiB, may"
        case .tensors(let e):
            return e.description
        }
    }
}

/// Caps on everything an untrusted container can make fedbatch allocate or
/// loop over. The defaults suit models up to about 1G fp32 parameters; a
/// home's `[limits]` table can tighten them.
public struct ContainerLimits: Sendable {
    public var maxFileBytes: Int64 = 4 << 30
    public var maxSignatureBytes: Int = 16 << 10
    public var maxDecompressedBytes: Int64 = 4 << 30
    /// zstd's own default limit: frames needing a window above 128 MiB are refused.
    public var windowLogMax: Int = 27
    public var maxEntries: Int = 64
    public var maxMemberBytes: Int64 = 4 << 30
    public var maxManifestBytes: Int = 4 << 20
    /// The most bundles a generation or partial may name, and the longest
    /// line of its `included.jsonl` (an entry with a full evaluation of 32
    /// metrics is under 3 KiB). The member is capped by the count the
    /// manifest declares times the line cap, never by a fixed size.
    public var maxIncludedBundles: Int = 1_000_000
    public var maxIncludedLineBytes: Int = 4 << 10
    /// Zero padding tolerated after the end-of-archive marker (tar writers
    /// pad to their block size; fedbatch's own writer adds none).
    public var maxTrailingZeroBytes: Int64 = 1 << 20
    public var safetensors = SafetensorsLimits()

    public init() {}
    public static let `default` = ContainerLimits()
}

extension ContainerLimits {
    /// What a list of `maxIncludedBundles` adds to a file, compressed: a
    /// line is about 310 bytes of JSON, which zstd brings to about 70
    /// (measured on 10⁵ bundles by bench/included.sh: the digests and
    /// fingerprints are random hex, the rest repeats); 192 leaves room for
    /// longer ids and evaluations. A generation's file cap includes it, so a
    /// list of a million bundles is never refused for its size alone.
    public var includedFileAllowance: Int64 { Int64(maxIncludedBundles) * 192 }

    /// The largest `included.jsonl` a manifest declaring `count` bundles
    /// may carry; a count above `maxIncludedBundles` is refused here, the
    /// one place both the container reader and the list's parser ask.
    public func includedMemberCap(count: Int) throws -> Int64 {
        guard count <= maxIncludedBundles else {
            throw ContainerError.manifestInvalid(
                "included_count \(count) is above the cap of \(maxIncludedBundles) bundles")
        }
        return Int64(count) * Int64(maxIncludedLineBytes)
    }

    /// Caps for the update bundles of one model. No member may be larger
    /// than the model's tensors in float32 plus a safetensors header, so
    /// what a bundle claims cannot make a merge allocate more than the model
    /// itself: two 33 KB bundles declaring 1 GiB members, or 1 GiB of junk,
    /// are refused by size before anything is read or decompressed.
    public static func updates(of arch: ModelArchitecture) -> ContainerLimits {
        var l = ContainerLimits()
        let tensors = Int64(arch.parameterCount) * 4 + (64 << 10) + Int64(arch.tensorShapes.count) * 512
        l.maxMemberBytes = max(tensors, 1 << 20)
        l.maxManifestBytes = 1 << 20
        // The tensors, the manifest and small extra members (metrics).
        l.maxDecompressedBytes = l.maxMemberBytes + (2 << 20)
        // zstd never expands incompressible data by more than a few bytes
        // per 128 KiB block; tar adds 512-byte headers and padding.
        l.maxFileBytes = l.maxDecompressedBytes + l.maxDecompressedBytes / 128 + (1 << 20) + Int64(l.maxSignatureBytes)
        return l
    }

    /// Caps for a whole generation of `arch`: the weights, a server
    /// optimiser's state (two more float32 copies and a step), a schema,
    /// a key rotation, and the manifest listing many bundles.
    public static func generations(of arch: ModelArchitecture) -> ContainerLimits {
        var l = ContainerLimits.default
        let tensors = Int64(arch.parameterCount) * 4 + (64 << 10) + Int64(arch.tensorShapes.count) * 512
        let decompressed = 3 * tensors + Int64(l.maxManifestBytes) + (4 << 20)
        l.maxFileBytes = min(
            l.maxFileBytes,
            decompressed + decompressed / 128 + (1 << 20) + Int64(l.maxSignatureBytes) + l.includedFileAllowance)
        return l
    }
}

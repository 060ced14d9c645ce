import FedBatchFormats
import FedBatchNative
import FedBatchTrust
import Foundation

/// An object on a remote: its key (a path below the remote's prefix) and
/// its size in bytes.
public struct RemoteObject: Sendable, Equatable {
    public let key: String
    public let size: Int64
    /// When it last changed, where a remote can say while it is still being
    /// written (a directory: another program may be copying the file in).
    /// An S3 object appears whole, so nil there.
    public let modified: Double?
    public init(key: String, size: Int64, modified: Double? = nil) {
        self.key = key
        self.size = size
        self.modified = modified
    }
}

/// Where bundles and generations travel between homes that share no file
/// system: a directory (a USB stick, an NFS mount) or an S3 bucket.
///
/// Every operation is whole-object: `put` makes an object appear complete
/// or not at all, `get` hands over the complete object or throws, so a
/// transfer killed at any point leaves nothing half-made on either side.
/// None of this is trusted: what comes from a remote is verified by its
/// signature like any file, and `get` stops at a size cap.
///
/// Adding a kind of remote: one file here with a type conforming to this
/// protocol, and its scheme in `Remotes.open`.
///
/// A remote serves several threads at once (`[remote] parallel`): each
/// call is one object's, and calls for different keys do not interfere.
public protocol RemoteStore: AnyObject, Sendable {
    /// The URL, for messages and JSON.
    var url: String { get }
    /// Every object whose key starts with `prefix`, in key order.
    func list(prefix: String) throws -> [RemoteObject]
    /// Uploads a local file as `key`, replacing an object of that key.
    func put(file: String, key: String) throws
    /// Downloads `key` into `into`, refusing an object larger than `cap`
    /// bytes; checks the transfer's integrity where the remote can.
    func get(key: String, into: PendingFile, cap: Int64) throws
    /// Removes `key`; removing a key that is gone is not an error.
    func delete(key: String) throws
}

/// The remote's layout, the same on every kind:
///
///     PREFIX/inbox/SITE/FILE           update bundles, pushed by each site
///     PREFIX/generations/gNNNNNN.fbg   generations, published by the collector
public enum RemoteLayout {
    public static let inbox = "inbox/"
    public static let generations = "generations/"

    public static func bundleKey(site: String, file: String) -> String { "\(inbox)\(site)/\(file)" }
    public static func generationKey(_ number: Int) -> String {
        "\(generations)\(GenerationFile.fileName(number))"
    }

    /// The site and file name of a bundle key, or nil for a key that is not
    /// one (a hidden name, a deeper path, an odd site id).
    public static func parseBundleKey(_ key: String) -> (site: String, file: String)? {
        guard key.hasPrefix(inbox) else { return nil }
        let parts = key.dropFirst(inbox.count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, ContainerPath.isIdentifier(String(parts[0])), let file = parts.last,
            !file.isEmpty, !file.hasPrefix("."), file.utf8.count <= 200,
            // No control characters (C0, DEL, C1) in a name that becomes
            // a file in the inbox and a line of output.
            !file.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) })
        else { return nil }
        return (String(parts[0]), String(file))
    }

    /// The inputs a collector publishes for witnesses, by payload digest.
    public static let bundles = "bundles/"

    /// `bundles/<digest>.<ext>`: an input, named by its payload digest so
    /// that a second upload of it is the same object.
    public static func publishedBundleKey(digest: String, ext: String) -> String { "\(bundles)\(digest).\(ext)" }

    /// The file name of a published input's key, or nil for a key that is
    /// not one: a 64-hex-digit digest and a known extension.
    public static func parsePublishedBundleKey(_ key: String) -> String? {
        guard key.hasPrefix(bundles) else { return nil }
        let name = String(key.dropFirst(bundles.count))
        let parts = name.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2, parts[0].count == 64, parts[0].allSatisfy({ $0.isHexDigit && !$0.isUppercase }),
            ["fbu", "fbp", "fbs"].contains(parts[1])
        else { return nil }
        return name
    }

    /// Signers' proposals (a federation with no single collector).
    public static let proposals = "proposals/"

    /// `proposals/gNNNNNN-S.fbg`: signer S's proposal for generation N.
    public static func proposalKey(_ number: Int, signer: String) -> String {
        "\(proposals)\(GenerationFile.proposalFileName(number, signer: signer))"
    }

    /// The generation and signer of a proposal key, or nil.
    public static func parseProposalKey(_ key: String) -> (number: Int, signer: String)? {
        guard key.hasPrefix(proposals) else { return nil }
        return GenerationFile.proposal(String(key.dropFirst(proposals.count)))
    }

    /// `generations/gNNNNNN-W.fbc`: witness W's cosignature.
    public static func cosignatureKey(_ number: Int, witness: String) -> String {
        "\(generations)\(GenerationFile.cosignatureFileName(number, witness: witness))"
    }

    /// The generation and witness of a cosignature key, or nil.
    public static func parseCosignatureKey(_ key: String) -> (number: Int, witness: String)? {
        guard key.hasPrefix(generations) else { return nil }
        return GenerationFile.cosignature(String(key.dropFirst(generations.count)))
    }

    /// The generation number of a generation key, or nil.
    public static func parseGenerationKey(_ key: String) -> Int? {
        guard key.hasPrefix(generations) else { return nil }
        return GenerationFile.number(String(key.dropFirst(generations.count)))
    }
}

public enum Remotes {
    /// The remote a URL names: `s3://BUCKET/PREFIX` or a directory path
    /// (relative paths are taken from `base`).
    public static func open(url: String, base: String, pathStyle: Bool? = nil) throws -> RemoteStore {
        if url.hasPrefix("s3://") {
            return try S3Remote(url: url, environment: ProcessInfo.processInfo.environment, pathStyle: pathStyle)
        }
        if url.contains("://") { throw RemoteError.unsupportedURL(url) }
        return try DirectoryRemote(path: url.hasPrefix("/") ? url : "\(base)/\(url)")
    }
}

/// Why a transfer failed.
public enum RemoteError: Error, Equatable, Sendable, ReasonCoded, CustomStringConvertible {
    case unsupportedURL(String)
    case notConfigured
    case unreachable(url: String, reason: String)
    case denied(url: String, reason: String)
    case tooLarge(key: String, size: Int64, cap: Int64)
    case integrity(key: String, reason: String)
    case failed(url: String, reason: String)

    public var code: String {
        switch self {
        case .unsupportedURL, .notConfigured: return "remote.config"
        case .unreachable: return "remote.unreachable"
        case .denied: return "remote.denied"
        case .tooLarge: return "remote.too-large"
        case .integrity: return "remote.integrity"
        case .failed: return "remote.failed"
        }
    }

    public var description: String {
        switch self {
        case .unsupportedURL(let url): return "\(url): a remote is s3://BUCKET/PREFIX or a directory path"
        case .notConfigured: return "no remote: set [remote] url in fedbatch.toml, or give --remote"
        case let .unreachable(url, reason): return "\(url): cannot reach the remote: \(reason)"
        case let .denied(url, reason):
            return
                "\(url): access denied: \(reason); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
                + "AWS_SESSION_TOKEN)"
        case let .tooLarge(key, size, cap):
            return "\(key): \(size) bytes, above the cap of \(cap) for this model; left on the remote"
        case let .integrity(key, reason): return "\(key): the transfer was damaged: \(reason)"
        case let .failed(url, reason): return "\(url): \(reason)"
        }
    }
}

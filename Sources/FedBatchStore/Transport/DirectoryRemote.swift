import FedBatchFormats
import FedBatchNative
import FedBatchTrust
import Foundation

/// A remote that is a directory: a USB stick carried to an air-gapped
/// site, or an NFS mount. Objects are files under it; an upload is written
/// under a hidden temporary name, fsynced and renamed, so that the other
/// side never lists a half-copied file, and listing skips hidden names.
///
/// A writer of the remote is not trusted: every operation is confined
/// below the root (see ConfinedDirectory), so no link or race planted
/// there reaches a file outside it.
///
/// Safe from several threads: every operation works below the root's
/// descriptor, and each upload has its own temporary name.
public final class DirectoryRemote: RemoteStore, @unchecked Sendable {
    public let root: String
    private let confined: ConfinedDirectory
    public var url: String { root }

    /// The directory must exist: a missing mount point is more likely an
    /// unplugged stick than a remote to create.
    public init(path: String) throws {
        root = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard isDirectory(atPath: root) else {
            throw RemoteError.unreachable(url: root, reason: "no such directory (is the medium mounted?)")
        }
        confined = try ConfinedDirectory(path: root)
    }

    public func list(prefix: String) throws -> [RemoteObject] {
        var out: [RemoteObject] = []
        func walk(_ components: [String]) throws {
            for entry in try confined.list(components) {
                guard let name = String(validating: entry.name, as: UTF8.self), !name.hasPrefix(".") else { continue }
                let key = (components + [name]).joined(separator: "/")
                switch entry.status.kind {
                case .directory where prefix.hasPrefix(key + "/") || key.hasPrefix(prefix):
                    try walk(components + [name])
                case .regular where key.hasPrefix(prefix):
                    out.append(RemoteObject(key: key, size: entry.status.size, modified: entry.status.changed))
                default: continue  // links, devices, FIFOs: never followed or read
                }
            }
        }
        try walk([])
        return out.sorted { $0.key < $1.key }
    }

    public func put(file: String, key: String) throws {
        let (dir, name) = try place(key)
        let source = try OpenFile(path: file)
        try confined.write(dir, name, copying: source)
    }

    public func get(key: String, into pending: PendingFile, cap: Int64) throws {
        let (dir, name) = try place(key)
        let file = try confined.openFile(dir, name)
        guard file.size <= cap else { throw RemoteError.tooLarge(key: key, size: file.size, cap: cap) }
        try pending.append(file: file, count: file.size)
    }

    public func delete(key: String) throws {
        let (dir, name) = try place(key)
        try confined.remove(dir, name)
    }

    /// The directory components and file name of a key, refusing keys
    /// that would leave the remote's root.
    private func place(_ key: String) throws -> ([String], String) {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else {
            throw RemoteError.failed(url: root, reason: "bad object key \(key)")
        }
        return (Array(parts.dropLast()), parts.last!)
    }
}

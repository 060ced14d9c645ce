import Foundation

/// A remote that is a directory: a USB stick carried to an air-gapped
/// site, or an NFS mount. Objects are files under it; an upload is written
/// under a hidden temporary name, fsynced and renamed, so that the other
/// side never lists a half-copied file, and listing skips hidden names.
public final class DirectoryRemote: RemoteStore {
    public let root: String
    public var url: String { root }

    /// The directory must exist: a missing mount point is more likely an
    /// unplugged stick than a remote to create.
    public init(path: String) throws {
        root = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw RemoteError.unreachable(url: root, reason: "no such directory (is the medium mounted?)")
        }
    }

    public func list(prefix: String) throws -> [RemoteObject] {
        var out: [RemoteObject] = []
        func walk(_ relative: String) throws {
            let dir = relative.isEmpty ? root : "\(root)/\(relative)"
            guard FileManager.default.fileExists(atPath: dir) else { return }
            for entry in try listDirectory(dir) {
                let name = entry.displayName
                guard !name.hasPrefix("."), name == String(decoding: entry.name, as: UTF8.self) else { continue }
                let key = relative.isEmpty ? name : "\(relative)/\(name)"
                guard let status = try entryStatus(entry) else { continue }
                switch status.kind {
                case .directory where prefix.hasPrefix(key + "/") || key.hasPrefix(prefix): try walk(key)
                case .regular where key.hasPrefix(prefix): out.append(RemoteObject(key: key, size: status.size))
                default: continue
                }
            }
        }
        try walk("")
        return out.sorted { $0.key < $1.key }
    }

    public func put(file: String, key: String) throws {
        let (dir, name) = try place(key)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let pending = try PendingFile(in: dir)
        let source = try OpenFile(path: file)
        try copy(source, into: pending)
        try pending.commit(as: name, replacing: true)
    }

    public func get(key: String, into pending: PendingFile, cap: Int64) throws {
        let (dir, name) = try place(key)
        let file = try OpenFile(DirectoryEntry(directory: dir, name: name))
        guard file.size <= cap else { throw RemoteError.tooLarge(key: key, size: file.size, cap: cap) }
        try copy(file, into: pending)
    }

    private func copy(_ file: OpenFile, into pending: PendingFile) throws {
        var failure: Error?
        try file.stream(from: 0, count: file.size) { bytes in
            guard failure == nil else { return }
            do { try pending.write(bytes) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    public func delete(key: String) throws {
        let (dir, name) = try place(key)
        if unlink("\(dir)/\(name)") != 0, errno != ENOENT { throw FileError(path: "\(dir)/\(name)", message: "cannot remove: \(String(cString: strerror(errno)))") }
        try syncDirectory(dir)
    }

    /// The directory and file name of a key, refusing keys that would leave
    /// the remote's root.
    private func place(_ key: String) throws -> (String, String) {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else { throw RemoteError.failed(url: root, reason: "bad object key \(key)") }
        return (([root] + parts.dropLast()).joined(separator: "/"), parts.last!)
    }
}

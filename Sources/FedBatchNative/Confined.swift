import Foundation

#if canImport(Glibc)
import Glibc
#endif

// A directory that others write to (a shared NFS remote, a USB stick) is
// untrusted: a writer can swap any directory below it for a symbolic link,
// at any moment. So every operation below its root is resolved from the
// root's descriptor one component at a time with O_NOFOLLOW, and acts on
// the final directory's descriptor (openat, mkdirat, renameat, unlinkat).
// A link anywhere, or one swapped in mid-operation, makes the call fail
// with ELOOP or ENOTDIR; nothing is ever reached outside the root.

/// A directory tree confined below one root descriptor.
public final class ConfinedDirectory: @unchecked Sendable {
    private let rootFD: Int32
    public let root: String

    /// Opens `path` (links in the root's own path are followed: the user
    /// named it).
    public init(path: String) throws {
        root = path
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw FileError.errno(path, "cannot open directory") }
        rootFD = fd
    }

    deinit { close(rootFD) }

    private func display(_ components: [String], _ name: String? = nil) -> String {
        ([root] + components + (name.map { [$0] } ?? [])).joined(separator: "/")
    }

    /// A descriptor of the directory `components` below the root, every
    /// component opened without following links; nil when one is missing
    /// (and `create` is false). The caller closes it.
    private func directory(_ components: [String], create: Bool) throws -> Int32? {
        // A fresh open of the root, not a dup: a dup shares the directory's
        // read position, so a second listing in one process would start
        // where the first ended and see nothing.
        var fd = openat(rootFD, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw FileError.errno(root, "cannot open directory") }
        for (i, c) in components.enumerated() {
            var next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0, errno == ENOENT, create {
                if mkdirat(fd, c, 0o755) != 0, errno != EEXIST {
                    let e = FileError.errno(display(Array(components[...i])), "cannot create directory")
                    close(fd)
                    throw e
                }
                _ = fsync(fd)
                next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            if next < 0 {
                let code = errno
                close(fd)
                if code == ENOENT { return nil }
                if code == ELOOP || code == ENOTDIR {
                    throw FileError(
                        path: display(Array(components[...i])),
                        message: "is not a plain directory (a symbolic link?); fedbatch never follows links on a remote"
                    )
                }
                errno = code
                throw FileError.errno(display(Array(components[...i])), "cannot open directory")
            }
            close(fd)
            fd = next
        }
        return fd
    }

    /// The entries of directory `components`, each with its lstat status
    /// (a link is reported as a link). Empty when the directory does not
    /// exist.
    public func list(_ components: [String]) throws -> [(name: [UInt8], status: EntryStatus)] {
        guard let fd = try directory(components, create: false) else { return [] }
        guard let d = fdopendir(fd) else {
            let e = FileError.errno(display(components), "cannot list directory")
            close(fd)
            throw e
        }
        defer { closedir(d) }
        var out: [(name: [UInt8], status: EntryStatus)] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            var st = stat()
            let rc = (name + [0]).withUnsafeBufferPointer { p in
                p.withMemoryRebound(to: CChar.self) { fstatat(fd, $0.baseAddress!, &st, AT_SYMLINK_NOFOLLOW) }
            }
            if rc != 0 { continue }  // removed meanwhile
            out.append((name, EntryStatus(st)))
        }
        return out.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    /// Opens the regular file `name` in directory `components` for reading,
    /// never through a link.
    public func openFile(_ components: [String], _ name: String) throws -> OpenFile {
        guard let dir = try directory(components, create: false) else {
            throw FileError(path: display(components, name), message: "does not exist")
        }
        defer { close(dir) }
        let fd = openat(dir, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW)
        if fd < 0 {
            if errno == ELOOP {
                throw FileError(
                    path: display(components, name),
                    message: "is a symbolic link; fedbatch never follows links on a remote")
            }
            throw FileError.errno(display(components, name), "cannot open")
        }
        return try OpenFile(fd: fd, displayPath: display(components, name))
    }

    /// Writes `name` in directory `components` (created as needed) the
    /// crash-safe way: a hidden temporary file, filled by `fill`, fsynced,
    /// renamed over `name`, and the directory fsynced.
    public func write(
        _ components: [String], _ name: String, fill: (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void
    ) throws {
        guard let dir = try directory(components, create: true) else {
            throw FileError(path: display(components), message: "cannot create directory")
        }
        defer { close(dir) }
        let temp = ".fedbatch-transfer-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = openat(dir, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        if fd < 0 { throw FileError.errno(display(components, temp), "cannot create") }
        var done = false
        defer {
            close(fd)
            if !done { _ = unlinkat(dir, temp, 0) }
        }
        try fill { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileError.errno(display(components, temp), "write failed")
                }
                offset += n
            }
        }
        if fsync(fd) != 0 { throw FileError.errno(display(components, temp), "fsync failed") }
        if renameat(dir, temp, dir, name) != 0 {
            throw FileError.errno(display(components, name), "cannot rename into place")
        }
        done = true
        if fsync(dir) != 0 { throw FileError.errno(display(components), "fsync of the directory failed") }
    }

    /// Removes the file `name` in directory `components`; a missing file
    /// (or directory) is not an error.
    public func remove(_ components: [String], _ name: String) throws {
        guard let dir = try directory(components, create: false) else { return }
        defer { close(dir) }
        if unlinkat(dir, name, 0) != 0, errno != ENOENT {
            throw FileError.errno(display(components, name), "cannot remove")
        }
        if fsync(dir) != 0 { throw FileError.errno(display(components), "fsync of the directory failed") }
    }
}

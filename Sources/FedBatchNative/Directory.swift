import Foundation

#if canImport(Glibc)
import Glibc
#endif

// Raw directory calls for the inbox and the folders a merge files things
// into. Inbox names come from other systems (a FAT-formatted USB stick, a
// Windows share) and need not be UTF-8, so entries are named by their raw
// bytes: a Swift String would repair invalid bytes and then name a file
// that does not exist. Links are never followed.

/// One directory entry, named by its exact bytes.
public struct DirectoryEntry: Sendable, Hashable {
    public let directory: String
    public let name: [UInt8]

    public init(directory: String, name: [UInt8]) {
        self.directory = directory
        self.name = name
    }

    public init(directory: String, name: String) {
        self.init(directory: directory, name: Array(name.utf8))
    }

    /// The name for people and JSON: valid UTF-8 as it is (control
    /// characters escaped), any other byte as `\xNN`.
    public var displayName: String { Self.escape(name) }

    /// The full path for messages.
    public var displayPath: String { "\(directory)/\(displayName)" }

    public static func escape(_ bytes: [UInt8]) -> String {
        if let s = String(validating: bytes, as: UTF8.self),
            !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || $0 == "\\" })
        {
            return s
        }
        var out = ""
        var i = 0
        while i < bytes.count {
            // Keep valid multi-byte sequences readable; escape the rest.
            let b = bytes[i]
            if b >= 0x20 && b < 0x7F && b != 0x5C { out.unicodeScalars.append(Unicode.Scalar(b)); i += 1; continue }
            if b >= 0xC2 {
                let len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2
                if i + len <= bytes.count, let s = String(validating: bytes[i..<(i + len)], as: UTF8.self) {
                    out += s
                    i += len
                    continue
                }
            }
            out += String(format: "\\x%02X", b)
            i += 1
        }
        return out
    }

    /// NUL-terminated path bytes for a system call.
    func cPath() -> [CChar] {
        (Array(directory.utf8) + [0x2F] + name + [0]).map { CChar(bitPattern: $0) }
    }
}

/// What an entry is, from lstat(2): a link is reported as a link.
public enum EntryKind: Sendable, Equatable {
    case regular, symlink, directory, other

    public init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFLNK: self = .symlink
        case S_IFDIR: self = .directory
        default: self = .other
        }
    }

    public var description: String {
        switch self {
        case .regular: return "regular file"
        case .symlink: return "symbolic link"
        case .directory: return "directory"
        case .other: return "special file (FIFO, socket or device)"
        }
    }
}

/// Size and times of an entry, for telling finished files from arriving ones.
public struct EntryStatus: Sendable, Equatable {
    public let kind: EntryKind
    public let size: Int64
    /// The later of the modification and the status-change time: a rename
    /// (rsync's last step) or a write both move it forward.
    public let changed: Double
    let device: UInt64
    let inode: UInt64

    public init(_ st: stat) {
        kind = EntryKind(mode: st.st_mode)
        size = Int64(st.st_size)
        let m = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
        let c = Double(st.st_ctim.tv_sec) + Double(st.st_ctim.tv_nsec) / 1e9
        changed = max(m, c)
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}

/// The entries of a directory other than `.` and `..`, by raw name, sorted bytewise.
public func listDirectory(_ dir: String) throws -> [DirectoryEntry] {
    guard let d = opendir(dir) else { throw FileError.errno(dir, "cannot list directory") }
    defer { closedir(d) }
    var names: [[UInt8]] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { raw -> [UInt8] in
            Array(raw.prefix(while: { $0 != 0 }))
        }
        if name == [0x2E] || name == [0x2E, 0x2E] { continue }
        names.append(name)
    }
    return names.sorted { $0.lexicographicallyPrecedes($1) }.map { DirectoryEntry(directory: dir, name: $0) }
}

/// lstat(2) of an entry; nil when it does not exist.
public func entryStatus(_ entry: DirectoryEntry) throws -> EntryStatus? {
    var st = stat()
    let rc = entry.cPath().withUnsafeBufferPointer { lstat($0.baseAddress!, &st) }
    if rc != 0 {
        if errno == ENOENT { return nil }
        throw FileError.errno(entry.displayPath, "cannot stat")
    }
    return EntryStatus(st)
}

/// A regular file opened for reading, never through a link and never
/// blocking (a FIFO is refused, not waited on). Reads are positional, so a
/// caller can check the end of a file before reading the rest of it.
public final class OpenFile {
    let fd: Int32
    public let displayPath: String
    public let status: EntryStatus

    public convenience init(path: String) throws {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        try self.init(DirectoryEntry(directory: dir.isEmpty ? "/" : dir, name: name), followLinks: true)
    }

    /// - Parameter followLinks: false for inbox entries: a link there is
    ///   refused, never read through.
    public convenience init(_ entry: DirectoryEntry, followLinks: Bool = false) throws {
        let flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | (followLinks ? 0 : O_NOFOLLOW)
        let fd = entry.cPath().withUnsafeBufferPointer { open($0.baseAddress!, flags) }
        if fd < 0 {
            if errno == ELOOP {
                throw FileError(
                    path: entry.displayPath, message: "is a symbolic link; fedbatch never follows links in the inbox")
            }
            throw FileError.errno(entry.displayPath, "cannot open")
        }
        try self.init(fd: fd, displayPath: entry.displayPath)
    }

    /// Takes over an open descriptor (see ConfinedDirectory); refuses and
    /// closes it if it is not a regular file.
    init(fd: Int32, displayPath: String) throws {
        self.displayPath = displayPath
        var st = stat()
        if fstat(fd, &st) != 0 {
            let e = FileError.errno(displayPath, "cannot stat")
            close(fd)
            throw e
        }
        status = EntryStatus(st)
        guard status.kind == .regular else {
            close(fd)
            throw FileError(path: displayPath, message: "is a \(status.kind.description), not a regular file")
        }
        self.fd = fd
    }

    deinit { close(fd) }

    public var size: Int64 { status.size }

    /// Exactly `count` bytes at `offset` (fewer only if the file shrank).
    public func read(at offset: Int64, count: Int) throws -> Data {
        var data = count >= LargeBuffer.threshold ? LargeBuffer.uninitialized(count: count) : Data(count: count)
        var total = 0
        try data.withUnsafeMutableBytes { buf in
            while total < count {
                let n = pread(fd, buf.baseAddress! + total, count - total, off_t(offset) + off_t(total))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileError.errno(displayPath, "read failed")
                }
                if n == 0 { break }
                total += n
            }
        }
        if total < count { data.removeSubrange(total...) }
        return data
    }

    /// Feeds `count` bytes from `offset` to `body` in 1 MiB pieces, for
    /// hashing a file without holding it in memory.
    public func stream(from offset: Int64, count: Int64, _ body: (UnsafeRawBufferPointer) -> Void) throws {
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        var done: Int64 = 0
        while done < count {
            let want = Int(min(Int64(chunk), count - done))
            let n = pread(fd, buffer.baseAddress!, want, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError.errno(displayPath, "read failed")
            }
            if n == 0 { throw FileError(path: displayPath, message: "shrank while it was being read") }
            body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            done += Int64(n)
        }
    }

    /// The file's status now, to tell whether it changed while being read.
    public func currentStatus() throws -> EntryStatus {
        var st = stat()
        if fstat(fd, &st) != 0 { throw FileError.errno(displayPath, "cannot stat") }
        return EntryStatus(st)
    }
}

/// Renames an entry into `directory` as `newName`; never replaces an
/// existing entry (the caller picks a free name while holding the home's
/// lock, and link(2) would not move a directory, so rename is checked first).
public func moveEntry(_ entry: DirectoryEntry, to directory: String, as newName: String, sync: Bool = true) throws {
    let dest = DirectoryEntry(directory: directory, name: newName)
    if try entryStatus(dest) != nil {
        throw FileError(path: dest.displayPath, message: "already exists; refusing to replace it")
    }
    let rc = entry.cPath().withUnsafeBufferPointer { from in
        dest.cPath().withUnsafeBufferPointer { to in rename(from.baseAddress!, to.baseAddress!) }
    }
    if rc != 0 { throw FileError.errno(entry.displayPath, "cannot move to \(dest.displayPath)") }
    if sync {
        try syncDirectory(directory)
        try syncDirectory(entry.directory)
    }
}

/// Removes an entry (not a directory).
public func removeEntry(_ entry: DirectoryEntry) throws {
    let rc = entry.cPath().withUnsafeBufferPointer { unlink($0.baseAddress!) }
    if rc != 0 && errno != ENOENT { throw FileError.errno(entry.displayPath, "cannot remove") }
}

/// Seconds since the epoch, as the file system's times count them.
public func wallClock() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

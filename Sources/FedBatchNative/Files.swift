import Foundation

#if canImport(Glibc)
import Glibc
#endif

// Every raw POSIX file call lives in this file: capped reads, read-only
// mappings and crash-safe replacement of a file.

/// A file-system failure, naming the path and the errno text.
public struct FileError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public var code: String { "io.error" }
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(path): \(message)" }

    static func errno(_ path: String, _ what: String) -> FileError {
        FileError(path: path, message: "\(what): \(String(cString: strerror(Glibc.errno)))")
    }
}

/// Opens a regular file (following links: the caller named it) and
/// refuses files above `cap`; see OpenFile for the rest.
private func openCapped(_ path: String, cap: Int64) throws -> OpenFile {
    let file = try OpenFile(path: path)
    if file.size > cap {
        throw FileError(path: path, message: "file is \(file.size) bytes, above the cap of \(cap) bytes")
    }
    return file
}

/// Reads a whole file into memory, refusing files larger than `cap`.
///
/// Untrusted containers are read (not mapped) on purpose: the bytes whose
/// signature is checked must be the very bytes later parsed, even if the
/// file is rewritten or truncated on disk in between (a mapping would see the
/// change, or die of SIGBUS on truncation).
public func readFile(_ path: String, cap: Int64) throws -> Data {
    let file = try openCapped(path, cap: cap)
    return try file.read(at: 0, count: Int(file.size))
}

/// Maps a file read-only and returns it as `Data` without copying; the
/// mapping lives as long as the returned value.
public func mapFile(_ path: String, cap: Int64) throws -> Data {
    let file = try openCapped(path, cap: cap)
    let size = Int(file.size)
    if size == 0 { return Data() }
    guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, file.fd, 0), p != MAP_FAILED else {
        throw FileError.errno(path, "cannot map")
    }
    return Data(bytesNoCopy: p, count: size, deallocator: .custom { ptr, count in munmap(ptr, count) })
}

/// Replaces `path` with `data` so that a crash at any point leaves either
/// the old file or the complete new one: write a temp file in the same
/// directory, fsync it, rename it over the target, fsync the directory.
public func writeFileAtomically(_ data: Data, to path: String, mode: mode_t = 0o644) throws {
    try writeFileAtomically(parts: [data], to: path, mode: mode)
}

/// The same, for a file given as consecutive parts (a container's payload
/// and slot), so that a large file is never copied just to be joined.
public func writeFileAtomically(parts: [Data], to path: String, mode: mode_t = 0o644) throws {
    let dir = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
    let base = (path as NSString).lastPathComponent
    var template = Array("\(dir)/.\(base).tmp-XXXXXX".utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    if fd < 0 { throw FileError.errno(path, "cannot create a temporary file in \(dir)") }
    let tmp = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    var ok = false
    defer {
        if !ok { unlink(tmp) }
    }
    do {
        defer { close(fd) }
        fchmod(fd, mode)
        for data in parts {
            try data.withUnsafeBytes { buf in
                var off = 0
                while off < buf.count {
                    let n = write(fd, buf.baseAddress! + off, buf.count - off)
                    if n < 0 {
                        if Glibc.errno == EINTR { continue }
                        throw FileError.errno(tmp, "write failed")
                    }
                    off += n
                }
            }
        }
        if fsync(fd) != 0 { throw FileError.errno(tmp, "fsync failed") }
    }
    if rename(tmp, path) != 0 { throw FileError.errno(path, "cannot rename \(tmp) into place") }
    ok = true
    try syncDirectory(dir)
}

/// fsyncs a file that was written through another API (SQLite).
/// A file's size in bytes, or nil when it cannot be read (gone, say).
public func fileSize(_ path: String) -> Int64? {
    (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value
}

public func syncFile(_ path: String) throws {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw FileError.errno(path, "cannot open") }
    defer { close(fd) }
    if fsync(fd) != 0 { throw FileError.errno(path, "fsync failed") }
}

/// fsyncs a directory so that a rename or unlink in it survives a crash.
public func syncDirectory(_ dir: String) throws {
    let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fd < 0 { throw FileError.errno(dir, "cannot open directory") }
    defer { close(fd) }
    if fsync(fd) != 0 { throw FileError.errno(dir, "fsync failed") }
}

/// An exclusive flock(2) on a lock file, held until the value is released
/// or the process ends (the kernel drops it even after a crash).
public final class FileLock {
    private let fd: Int32

    /// Takes the lock without waiting; nil when another process holds it.
    public static func tryLock(_ path: String) throws -> FileLock? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { throw FileError.errno(path, "cannot open lock file") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = Glibc.errno
            close(fd)
            if e == EWOULDBLOCK { return nil }
            throw FileError(path: path, message: "flock failed: \(String(cString: strerror(e)))")
        }
        return FileLock(fd: fd)
    }

    private init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// Moves a file within one file system; with `sync`, makes the move
/// durable at once (callers moving many files sync the directories once).
public func moveFile(_ from: String, to: String, sync: Bool = true) throws {
    if rename(from, to) != 0 { throw FileError.errno(from, "cannot move to \(to)") }
    if sync {
        try syncDirectory((to as NSString).deletingLastPathComponent)
        try syncDirectory((from as NSString).deletingLastPathComponent)
    }
}

/// Large buffers are mapped with MADV_DONTFORK. gpgme starts gpg with
/// fork(), and a forked child of a process holding gigabytes of tensors
/// copies all its page tables and turns every later write in the parent
/// into a copy-on-write fault; measured on a 20-bundle merge, that was half
/// of all CPU time. Pages marked DONTFORK are simply absent in the child,
/// which execs gpg at once and never needed them.
public enum LargeBuffer {
    static let threshold = 1 << 20

    /// Zero-filled memory of `count` bytes as Data, unmapped when released.
    static func data(count: Int) -> Data {
        guard count >= threshold, let p = mapUnforked(count) else { return Data(count: count) }
        return Data(bytesNoCopy: p, count: count, deallocator: .custom { ptr, n in munmap(ptr, n) })
    }

    /// `count` bytes whose contents are undefined, for a caller that fills
    /// all of them (file reads, decompressed members). Released mappings go
    /// back to a small pool: a merge reads bundle after bundle of the same
    /// size, and reusing a mapping saves the page faults and the kernel's
    /// zeroing of fresh pages.
    public static func uninitialized(count: Int) -> Data {
        guard count >= threshold else { return Data(count: count) }
        let needed = (count + (2 << 20) - 1) & ~((2 << 20) - 1)
        let (p, capacity) = pool.take(needed) ?? (mapUnforked(needed), needed)
        guard let p else { return Data(count: count) }
        return Data(bytesNoCopy: p, count: count, deallocator: .custom { ptr, _ in pool.give(ptr, capacity) })
    }

    private final class Pool: @unchecked Sendable {
        private var free: [(UnsafeMutableRawPointer, Int)] = []
        private let lock = NSLock()
        /// Enough for the buffers a merge has in flight (three bundles, two each).
        private let limit = 8

        /// The smallest free mapping that fits, if it wastes at most an
        /// eighth: bundles of one model differ in compressed size by a few
        /// megabytes, and each should reuse the last one's mapping.
        func take(_ needed: Int) -> (UnsafeMutableRawPointer, Int)? {
            lock.lock(); defer { lock.unlock() }
            let fits = free.indices.filter { free[$0].1 >= needed && free[$0].1 <= needed + needed / 8 }
            guard let i = fits.min(by: { free[$0].1 < free[$1].1 }) else { return nil }
            return free.remove(at: i)
        }

        func give(_ p: UnsafeMutableRawPointer, _ capacity: Int) {
            lock.lock()
            if free.count < limit {
                free.append((p, capacity))
                lock.unlock()
            } else {
                lock.unlock()
                munmap(p, capacity)
            }
        }
    }

    private static let pool = Pool()

    /// Anonymous memory for a large buffer, aligned to 2 MiB and backed by
    /// transparent huge pages where the kernel has them. A merge streams
    /// gigabytes through buffers like these: with 4 KiB pages every first
    /// touch is a fault (and, in a threaded process, a TLB shoot-down on the
    /// other cores), which profiled as a fifth of the merge's time.
    /// MADV_DONTFORK keeps the buffers out of the children gpgme forks, so a
    /// fork neither copies their page tables nor makes them copy-on-write.
    static func mapUnforked(_ count: Int) -> UnsafeMutableRawPointer? {
        let huge = 2 << 20
        guard let raw = mmap(nil, count + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            raw != MAP_FAILED
        else { return nil }
        // Keep the 2 MiB-aligned part; give back the slack on either side.
        let start = (Int(bitPattern: raw) + huge - 1) & ~(huge - 1)
        let head = start - Int(bitPattern: raw)
        let length = (count + Int(getpagesize()) - 1) & ~(Int(getpagesize()) - 1)
        if head > 0 { munmap(raw, head) }
        let tail = count + huge - head - length
        if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: start + length), tail) }
        let p = UnsafeMutableRawPointer(bitPattern: start)!
        madvise(p, length, 14 /* MADV_HUGEPAGE */)
        madvise(p, length, 10 /* MADV_DONTFORK */)
        return p
    }
}

/// An unnamed scratch file: created in `directory` and unlinked at once
/// (O_TMPFILE where the file system has it), so it takes disk space only
/// while this value lives and a crash leaves nothing behind to clean up.
/// The robust merge strategies spill each decoded delta here and read it
/// back one coordinate range at a time, so that memory holds N × chunk
/// numbers instead of N whole models.
public final class ScratchFile: @unchecked Sendable {
    private let fd: Int32
    private let label: String

    public init(in directory: String) throws {
        label = "\(directory)/(scratch)"
        // O_TMPFILE is a macro Swift does not import: __O_TMPFILE (0o20000000
        // on Linux's x86-64 and arm64 alike) with O_DIRECTORY.
        let tmpfile: Int32 = 0o20000000 | O_DIRECTORY
        var fd = open(directory, O_RDWR | tmpfile | O_CLOEXEC, 0o600)
        if fd < 0 {
            // Some file systems (older NFS, for one) have no O_TMPFILE.
            var template = Array("\(directory)/.fedbatch-scratch-XXXXXX".utf8CString)
            fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            if fd < 0 { throw FileError.errno(directory, "cannot create a scratch file") }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Writes all of `bytes` at `offset`.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw FileError.errno(label, "write failed (is the disk full?)")
            }
            done += n
        }
    }

    /// Fills all of `buffer` from `offset`; the range must have been written.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw FileError.errno(label, "read failed")
            }
            if n == 0 { throw FileError(path: label, message: "ended early") }
            done += n
        }
    }
}

/// A file being written under a hidden temporary name in its final
/// directory, which becomes visible under its real name only when complete:
/// written, fsynced, renamed, the directory fsynced. Dropped without
/// `commit`, it is removed. What a transfer writes goes through here, so a
/// kill at any point leaves either nothing or the whole file, never a
/// half-written one under a name a merge or a site would read.
public final class PendingFile {
    public let directory: String
    public let path: String
    private var fd: Int32
    private var committed = false
    public private(set) var size: Int64 = 0
    private var hasher = SHA2Hasher()

    public init(in directory: String, prefix: String = ".fedbatch-transfer") throws {
        self.directory = directory
        var template = Array("\(directory)/\(prefix)-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if fd < 0 { throw FileError.errno(directory, "cannot create a temporary file") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        fchmod(fd, 0o644)
        self.fd = fd
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    deinit {
        if fd >= 0 { close(fd) }
        if !committed { unlink(path) }
    }

    /// Appends `bytes`.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw FileError.errno(path, "write failed (is the disk full?)")
            }
            done += n
        }
        hasher.update(bytes)
        size += Int64(bytes.count)
    }

    /// Discards what was written, to start again (a retried download).
    public func reset() throws {
        if ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) < 0 { throw FileError.errno(path, "cannot truncate") }
        size = 0
        hasher = SHA2Hasher()
    }

    /// The SHA-256 of what was written so far.
    public var digest: Digest { hasher.copy().finalize() }

    /// fsyncs the data, then renames the file to `name` in its directory
    /// and fsyncs the directory. With `replacing` false an existing file of
    /// that name is never replaced (link(2), which fails if it exists, then
    /// unlink of the temporary name).
    public func commit(as name: String, replacing: Bool = false) throws {
        if fsync(fd) != 0 { throw FileError.errno(path, "fsync failed") }
        close(fd)
        fd = -1
        let target = "\(directory)/\(name)"
        if replacing {
            if rename(path, target) != 0 { throw FileError.errno(target, "cannot rename \(path) into place") }
        } else {
            if link(path, target) != 0 {
                throw Glibc.errno == EEXIST
                    ? FileError(path: target, message: "already exists; refusing to replace it")
                    : FileError.errno(target, "cannot link \(path) into place")
            }
            unlink(path)
        }
        committed = true
        try syncDirectory(directory)
    }
}

internal import CArchive
import Foundation

// Every call into libarchive lives in this file. Only the tar format is
// enabled, with no filters: fedbatch decompresses with libzstd itself, since
// libarchive's zstd filter can fall back to running an external program.

/// A failure reported by libarchive, with its own message.
public struct ArchiveError: Error, Equatable, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { "tar: \(message)" }
}

private func archiveMessage(_ a: OpaquePointer?, _ fallback: String) -> String {
    if let a, let cstr = archive_error_string(a) { return String(cString: cstr) }
    return fallback
}

// MARK: - Writing

/// Writes a pax tar stream deterministically: entries in the order given,
/// regular files only, mode 0644, mtime 0, uid/gid 0, no owner names and no
/// padding past the two end-of-archive blocks.
public final class TarWriter {
    private final class SinkBox {
        let sink: (UnsafeRawBufferPointer) throws -> Void
        var error: Error?
        init(_ sink: @escaping (UnsafeRawBufferPointer) throws -> Void) { self.sink = sink }
    }

    private var handle: OpaquePointer?
    private let box: SinkBox
    private var closed = false

    public init(sink: @escaping (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let a = archive_write_new() else { throw ArchiveError(message: "cannot allocate a writer") }
        handle = a
        box = SinkBox(sink)
        try check(archive_write_set_format_pax_restricted(a))
        try check(archive_write_add_filter_none(a))
        try check(archive_write_set_bytes_per_block(a, 10240))
        try check(archive_write_set_bytes_in_last_block(a, 1))
        let client = Unmanaged.passUnretained(box).toOpaque()
        try check(
            archive_write_open(
                a, client, nil,
                { _, client, buffer, length in
                    let box = Unmanaged<SinkBox>.fromOpaque(client!).takeUnretainedValue()
                    do {
                        try box.sink(UnsafeRawBufferPointer(start: buffer, count: length))
                        return la_ssize_t(length)
                    } catch {
                        box.error = error
                        return -1
                    }
                }, nil))
    }

    deinit {
        if let handle { archive_write_free(handle) }
    }

    private func check(_ r: Int32) throws {
        if r < ARCHIVE_WARN {
            if let e = box.error { throw e }
            throw ArchiveError(message: archiveMessage(handle, "write failed (\(r))"))
        }
    }

    public func add(name: String, contents: Data) throws {
        try add(name: name, size: Int64(contents.count)) { write in try contents.withUnsafeBytes { try write($0) } }
    }

    /// Adds an entry of `size` bytes whose contents `produce` hands, a
    /// piece at a time, to the function it is given: a member written from
    /// a scratch file without being held in memory. Exactly `size` bytes
    /// must be handed over.
    public func add(
        name: String, size: Int64, produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void
    ) throws {
        guard let a = handle else { throw ArchiveError(message: "writer already closed") }
        guard let entry = archive_entry_new() else { throw ArchiveError(message: "cannot allocate an entry") }
        defer { archive_entry_free(entry) }
        archive_entry_set_pathname(entry, name)
        archive_entry_set_size(entry, la_int64_t(size))
        archive_entry_set_filetype(entry, fb_AE_IFREG)
        archive_entry_set_perm(entry, 0o644)
        archive_entry_set_mtime(entry, 0, 0)
        archive_entry_set_uid(entry, 0)
        archive_entry_set_gid(entry, 0)
        try check(archive_write_header(a, entry))
        var total: Int64 = 0
        try produce { raw in
            var offset = 0
            while offset < raw.count {
                let n = archive_write_data(a, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { try check(Int32(n == 0 ? ARCHIVE_FATAL : Int32(truncatingIfNeeded: n))) }
                offset += n
            }
            total += Int64(raw.count)
        }
        guard total == size else { throw ArchiveError(message: "\(name): \(total) bytes written, \(size) declared") }
    }

    public func finish() throws {
        guard let a = handle, !closed else { return }
        closed = true
        try check(archive_write_close(a))
    }
}

// MARK: - Reading

/// What a tar header says about one entry, before any of its data is read.
public struct TarEntryHeader: Sendable {
    public enum Kind: Sendable, Equatable { case regular, symlink, hardlink, directory, other(UInt32) }
    /// The raw path bytes, never interpreted through the locale.
    public let path: [UInt8]
    public let kind: Kind
    /// The declared size; nil when the header does not set one.
    public let size: Int64?
    public let isSparse: Bool
    public var pathString: String { String(decoding: path, as: UTF8.self) }
}

/// Reads a tar stream pulled from `source` (which fills the buffer it is
/// given and returns 0 at the end). Never writes anything to disk.
public final class TarReader {
    static let chunkSize = 64 * 1024

    private final class SourceBox {
        let source: (UnsafeMutableRawBufferPointer) throws -> Int
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: TarReader.chunkSize, alignment: 64)
        var chunkLength = 0
        var served: Int64 = 0
        var error: Error?
        init(_ source: @escaping (UnsafeMutableRawBufferPointer) throws -> Int) { self.source = source }
        deinit { chunk.deallocate() }

        /// Fills the whole chunk unless the source ends, so that 512-byte tar
        /// blocks never straddle two chunks (see `unconsumedTail`).
        func fill() throws -> Int {
            var n = 0
            while n < chunk.count {
                let got = try source(UnsafeMutableRawBufferPointer(rebasing: chunk[n...]))
                if got == 0 { break }
                n += got
            }
            chunkLength = n
            served += Int64(n)
            return n
        }
    }

    private var handle: OpaquePointer?
    private let box: SourceBox

    public init(source: @escaping (UnsafeMutableRawBufferPointer) throws -> Int) throws {
        guard let a = archive_read_new() else { throw ArchiveError(message: "cannot allocate a reader") }
        handle = a
        box = SourceBox(source)
        try check(archive_read_support_format_tar(a))
        let client = Unmanaged.passUnretained(box).toOpaque()
        try check(
            archive_read_open(
                a, client, nil,
                { _, client, buffer in
                    let box = Unmanaged<SourceBox>.fromOpaque(client!).takeUnretainedValue()
                    do {
                        let n = try box.fill()
                        buffer!.pointee = UnsafeRawPointer(box.chunk.baseAddress)
                        return la_ssize_t(n)
                    } catch {
                        box.error = error
                        return -1
                    }
                }, nil))
    }

    deinit {
        if let handle { archive_read_free(handle) }
    }

    private func check(_ r: Int32) throws {
        if r < ARCHIVE_WARN {
            if let e = box.error { throw e }
            throw ArchiveError(message: archiveMessage(handle, "read failed (\(r))"))
        }
    }

    /// The next entry's header, or nil at the end-of-archive marker.
    public func next() throws -> TarEntryHeader? {
        guard let a = handle else { return nil }
        var entry: OpaquePointer?
        let r = archive_read_next_header(a, &entry)
        if r == ARCHIVE_EOF { return nil }
        try check(r)
        guard let e = entry else { throw ArchiveError(message: "no entry returned") }
        var path: [UInt8] = []
        if let p = archive_entry_pathname(e) {
            path = Array(
                UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
        }
        let kind: TarEntryHeader.Kind
        let type = UInt32(archive_entry_filetype(e)) & fb_AE_IFMT
        if archive_entry_hardlink(e) != nil {
            kind = .hardlink
        } else if type == fb_AE_IFREG {
            kind = .regular
        } else if type == fb_AE_IFLNK {
            kind = .symlink
        } else if type == fb_AE_IFDIR {
            kind = .directory
        } else {
            kind = .other(type)
        }
        let size: Int64? = archive_entry_size_is_set(e) != 0 ? Int64(archive_entry_size(e)) : nil
        return TarEntryHeader(path: path, kind: kind, size: size, isSparse: archive_entry_sparse_count(e) > 0)
    }

    /// Reads the current entry's data; returns 0 at its end.
    public func readData(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let a = handle else { return 0 }
        let n = archive_read_data(a, buffer.baseAddress, buffer.count)
        if n < 0 { try check(Int32(truncatingIfNeeded: n)) }
        return max(0, n)
    }

    /// After `next()` returned nil: the stream bytes that libarchive was
    /// handed but did not consume (whatever followed the end-of-archive
    /// marker in the last chunk). Nil if they cannot be located, which the
    /// caller treats as a failure.
    public func unconsumedTail() -> UnsafeRawBufferPointer? {
        guard let a = handle else { return nil }
        let consumed = Int64(archive_filter_bytes(a, 0))
        let chunkStart = box.served - Int64(box.chunkLength)
        guard consumed >= chunkStart, consumed <= box.served else { return nil }
        let from = Int(consumed - chunkStart)
        return UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(box.chunk)[from..<box.chunkLength])
    }

    /// Pulls more bytes straight from the source, past what libarchive saw.
    public func readSource(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try box.source(buffer)
    }
}

import Foundation

#if canImport(Glibc)
import Glibc
#endif

// Safe forms of the native types' buffer-pointer APIs, for the layers above,
// which are compiled with strict memory-safety checking: each takes or gives
// whole files, `Data` or arrays, so that no pointer crosses the boundary.

extension SHA2Hasher {
    /// Hashes `count` bytes of `file` from `offset`, a piece at a time.
    public func update(file: OpenFile, from offset: Int64 = 0, count: Int64) throws {
        try file.stream(from: offset, count: count) { update($0) }
    }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }
}

extension PendingFile {
    /// Appends `data`.
    public func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write($0) }
    }

    /// Appends `count` bytes of `file` from `offset`, a piece at a time.
    public func append(file: OpenFile, from offset: Int64 = 0, count: Int64) throws {
        var failure: Error?
        try file.stream(from: offset, count: count) { bytes in
            guard failure == nil else { return }
            do { try write(bytes) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}

extension ConfinedDirectory {
    /// Writes `name` in directory `components` as a copy of `source`, the
    /// crash-safe way `write(_:_:fill:)` describes.
    public func write(_ components: [String], _ name: String, copying source: OpenFile) throws {
        try write(components, name) { write in
            var failure: Error?
            try source.stream(from: 0, count: source.size) { bytes in
                guard failure == nil else { return }
                do { try write(bytes) } catch { failure = error }
            }
            if let failure { throw failure }
        }
    }
}

/// Whether `path` names a directory (following a final symbolic link, as
/// `FileManager.fileExists(atPath:isDirectory:)` does).
public func isDirectory(atPath path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

/// The C library's text for an errno value ("No space left on device").
public func systemErrorDescription(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// A deterministic tar archive of `entries` (see `TarWriter`), compressed as
/// one zstd frame at `level`: the container's payload.
public func tarZstdArchive(_ entries: [(name: String, data: Data)], level: Int32, reserve: Int = 0) throws -> Data {
    var out = Data()
    // Weights barely compress: reserving what the archive takes keeps the
    // output from being copied each time it grows.
    out.reserveCapacity(reserve)
    let encoder = try ZstdEncoder(level: level) { chunk in out.append(contentsOf: chunk) }
    let tar = try TarWriter { chunk in try encoder.write(chunk) }
    for entry in entries { try tar.add(name: entry.name, contents: entry.data) }
    try tar.finish()
    try encoder.finish()
    return out
}

/// A member of an archive `tarZstdStream` writes: bytes in memory, or the
/// first `length` bytes of a scratch file, read a piece at a time.
public enum TarMember {
    case data(name: String, Data)
    case scratch(name: String, ScratchFile, length: Int64)
}

/// `tarZstdArchive` written to `sink` a piece at a time, the same bytes for
/// the same members: what a streaming merge writes a generation with.
public func tarZstdStream(_ members: [TarMember], level: Int32, sink: @escaping (Data) throws -> Void) throws {
    let encoder = try ZstdEncoder(level: level) { chunk in try sink(Data(chunk)) }
    let tar = try TarWriter { chunk in try encoder.write(chunk) }
    for member in members {
        switch member {
        case .data(let name, let data): try tar.add(name: name, contents: data)
        case .scratch(let name, let file, let length):
            try tar.add(name: name, size: length) { write in
                try file.forEachPiece(size: length, piece: 1 << 20) { piece in
                    try piece.withUnsafeBytes { try write($0) }
                }
            }
        }
    }
    try tar.finish()
    try encoder.finish()
}

extension ScratchFile {
    /// Writes `data` at `offset`.
    public func write(_ data: Data, at offset: Int64) throws {
        try data.withUnsafeBytes { try write($0, at: offset) }
    }

    /// Writes the first `count` elements of `buffer` at `offset`, in the
    /// machine's byte order (little-endian on every machine fedbatch runs
    /// on, as safetensors wants).
    public func write<T>(_ buffer: NumericBuffer<T>, count: Int, at offset: Int64) throws {
        precondition(count <= buffer.count, "\(count) is more than the buffer holds")
        try write(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buffer.buffer[0..<count])), at: offset)
    }

    /// `count` bytes from `offset`, which must have been written.
    public func read(count: Int, at offset: Int64) throws -> Data {
        var out = Data(count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return out
    }

    /// The file's first `size` bytes, in order, a piece at a time.
    public func forEachPiece(size: Int64, piece: Int, _ body: (Data) throws -> Void) throws {
        var offset: Int64 = 0
        while offset < size {
            let n = Int(min(Int64(piece), size - offset))
            try body(try read(count: n, at: offset))
            offset += Int64(n)
        }
    }
    /// Writes the bytes of `values` at byte `offset`.
    public func write<T: BitwiseCopyable>(_ values: Span<T>, at offset: Int64) throws {
        try values.withUnsafeBytes { try write($0, at: offset) }
    }

    /// Fills elements `range` of `buffer` with the bytes at `offset`.
    public func read<T>(into buffer: NumericBuffer<T>, elements range: Range<Int>, at offset: Int64) throws {
        precondition(range.lowerBound >= 0 && range.upperBound <= buffer.count, "\(range) is outside the buffer")
        let stride = MemoryLayout<T>.stride
        let raw = UnsafeMutableRawBufferPointer(buffer.buffer)
        try read(
            into: UnsafeMutableRawBufferPointer(
                rebasing: raw[(range.lowerBound * stride)..<(range.upperBound * stride)]), at: offset)
    }
}

extension TarReader {
    /// A reader of the tar stream that `decoder` decompresses.
    public convenience init(reading decoder: ZstdDecoder) throws {
        try self.init { buffer in try decoder.read(into: buffer) }
    }

    /// The current entry's data, read up to `size` bytes (the header's
    /// size) and hashed into `hasher` as it arrives: the bytes read, fewer
    /// when the entry is short, and whether any byte followed them.
    public func readEntry(size: Int, hashingInto hasher: SHA2Hasher) throws -> (data: Data, overran: Bool) {
        var data = LargeBuffer.uninitialized(count: size)
        var filled = 0
        try data.withUnsafeMutableBytes { buf in
            while filled < buf.count {
                let n = try readData(into: UnsafeMutableRawBufferPointer(rebasing: buf[filled...]))
                if n == 0 { break }
                hasher.update(UnsafeRawBufferPointer(rebasing: buf[filled..<(filled + n)]))
                filled += n
            }
        }
        var probe: UInt8 = 0
        let overran = try withUnsafeMutableBytes(of: &probe) { try readData(into: $0) } != 0
        if filled < size { data.removeSubrange(filled...) }
        return (data, overran)
    }

    /// The current entry's data, up to `size` bytes, written to `file` from
    /// offset 0 and hashed into `hasher` a piece at a time: the bytes
    /// written, and whether any byte followed them.
    public func spillEntry(
        size: Int64, to file: ScratchFile, hashingInto hasher: SHA2Hasher
    ) throws -> (written: Int64, overran: Bool) {
        let piece = NumericBuffer<UInt8>(count: 1 << 20)
        let buf = UnsafeMutableRawBufferPointer(piece.buffer)
        var written: Int64 = 0
        while written < size {
            let want = Int(min(Int64(buf.count), size - written))
            let n = try readData(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<want]))
            if n == 0 { break }
            let got = UnsafeRawBufferPointer(rebasing: buf[0..<n])
            hasher.update(got)
            try file.write(got, at: written)
            written += Int64(n)
        }
        var probe: UInt8 = 0
        let overran = try withUnsafeMutableBytes(of: &probe) { try readData(into: $0) } != 0
        return (written, overran)
    }

    /// `unconsumedTail()`, copied.
    public func unconsumedTailBytes() -> Data? {
        unconsumedTail().map { Data($0) }
    }

    /// Up to `count` more bytes straight from the source (empty at its end).
    public func readSource(count: Int) throws -> Data {
        var chunk = Data(count: count)
        let n = try chunk.withUnsafeMutableBytes { try readSource(into: $0) }
        chunk.removeSubrange(n...)
        return chunk
    }
}

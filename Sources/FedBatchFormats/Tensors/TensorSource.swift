import FedBatchNative
import Foundation

/// Stored tensors read a piece at a time: a safetensors file held in memory,
/// or one a streaming merge spilled to disk (`SpilledSafetensors`). Codecs
/// check and decode through this, so that a bundle of any size is checked
/// and summed in pieces of `merge.chunk_mb`, never whole.
public protocol TensorSource: Sendable {
    /// Entries in data order.
    var entries: [SafetensorsFile.Entry] { get }
    var metadata: [String: String] { get }
    func entry(_ name: String) -> SafetensorsFile.Entry?
    /// Bytes `range` of `entry`'s data (counted from the tensor's first
    /// byte): a slice of the file in memory, a copy read from disk.
    func bytes(of entry: SafetensorsFile.Entry, range: Range<Int>) -> Data
}

extension SafetensorsFile: TensorSource {
    public func bytes(of entry: Entry, range: Range<Int>) -> Data {
        precondition(range.lowerBound >= 0 && range.upperBound <= entry.range.count, "\(range) is outside the tensor")
        let start = entry.range.lowerBound + range.lowerBound
        return bytes[start..<(start + range.count)]
    }
}

extension TensorSource {
    /// The elements `range` of a tensor of `Element`s, as little-endian
    /// values passed to `body` one piece of at most `piece` elements at a
    /// time, with the index of each piece's first element.
    public func forEachPiece<Element: FixedWidthInteger>(
        of entry: SafetensorsFile.Entry, as: Element.Type, elements range: Range<Int>? = nil, piece: Int = 1 << 20,
        _ body: (Int, [Element]) throws -> Void
    ) rethrows {
        let size = MemoryLayout<Element>.size
        let range = range ?? 0..<(entry.range.count / size)
        var start = range.lowerBound
        while start < range.upperBound {
            let end = min(range.upperBound, start + piece)
            let values = LittleEndian.map(
                bytes(of: entry, range: (start * size)..<(end * size)), as: Element.self, count: end - start
            ) { $0 }
            try body(start, values)
            start = end
        }
    }

    /// Whether every value of a floating-point tensor is finite, read a
    /// piece at a time.
    public func allFinite(_ entry: SafetensorsFile.Entry, piece: Int = 4 << 20) -> Bool {
        var start = 0
        while start < entry.range.count {
            let end = min(entry.range.count, start + piece)
            if !Tensor.allFinite(bytes(of: entry, range: start..<end), dtype: entry.dtype) { return false }
            start = end
        }
        return true
    }

    /// Whether any byte of `entry`'s data is `byte`.
    public func contains(byte: UInt8, in entry: SafetensorsFile.Entry, piece: Int = 4 << 20) -> Bool {
        var start = 0
        while start < entry.range.count {
            let end = min(entry.range.count, start + piece)
            // Through the bytes in place: Data's own iterator takes a call a byte.
            if LittleEndian.contains(bytes(of: entry, range: start..<end), as: UInt8.self, where: { $0 == byte }) {
                return true
            }
            start = end
        }
        return false
    }

    /// Whether an integer tensor holds a value of magnitude `bound` or more.
    public func containsInteger(in entry: SafetensorsFile.Entry, atLeast bound: UInt64) -> Bool {
        func scan<T: FixedWidthInteger>(_: T.Type) -> Bool {
            var found = false
            forEachPiece(of: entry, as: T.self) { _, v in
                if !found { found = v.contains { UInt64($0.magnitude) >= bound } }
            }
            return found
        }
        switch entry.dtype {
        case .i8: return scan(Int8.self)
        case .u8: return scan(UInt8.self)
        case .i32: return scan(Int32.self)
        case .i64: return scan(Int64.self)
        default: return false
        }
    }

    /// Elements `range` of a float32 tensor.
    public func floats(_ entry: SafetensorsFile.Entry, elements range: Range<Int>) -> [Float] {
        LittleEndian.map(
            bytes(of: entry, range: (range.lowerBound * 4)..<(range.upperBound * 4)), as: UInt32.self,
            count: range.count
        ) { Float(bitPattern: $0) }
    }
}

/// A safetensors file a streaming merge decompressed to an unnamed scratch
/// file: its header parsed and checked by the same rules as one in memory
/// (`SafetensorsFile.layout`), its tensors read back with pread a piece at
/// a time. A read that fails (the disk) is remembered and reported by
/// `checkReads`, so that decoding need not throw at every element; a merge
/// checks it before it signs anything.
public final class SpilledSafetensors: TensorSource, @unchecked Sendable {
    public let entries: [SafetensorsFile.Entry]
    public let metadata: [String: String]
    private let file: ScratchFile
    private let index: [String: Int]
    private let lock = NSLock()
    private var readError: Error?

    public init(file: ScratchFile, size: Int64, limits: SafetensorsLimits = SafetensorsLimits()) throws {
        guard size >= 8 else { throw SafetensorsError.tooShort(bytes: Int(size)) }
        let lengthBytes = try file.read(count: 8, at: 0)
        let headerLength = LittleEndian.load(UInt64.self, from: lengthBytes)
        guard headerLength <= UInt64(limits.maxHeaderBytes) else {
            throw SafetensorsError.headerTooLarge(length: headerLength, cap: limits.maxHeaderBytes)
        }
        guard headerLength <= UInt64(size - 8) else {
            throw SafetensorsError.headerBeyondFile(length: headerLength, fileSize: Int(size))
        }
        let header = try file.read(count: Int(headerLength), at: 8)
        (entries, metadata) = try SafetensorsFile.layout(
            header: header, dataStart: 8 + Int(headerLength), fileSize: Int(size), limits: limits)
        self.file = file
        var index: [String: Int] = [:]
        for (i, e) in entries.enumerated() { index[e.name] = i }
        self.index = index
    }

    public func entry(_ name: String) -> SafetensorsFile.Entry? { index[name].map { entries[$0] } }

    public func bytes(of entry: SafetensorsFile.Entry, range: Range<Int>) -> Data {
        precondition(range.lowerBound >= 0 && range.upperBound <= entry.range.count, "\(range) is outside the tensor")
        do {
            return try file.read(count: range.count, at: Int64(entry.range.lowerBound + range.lowerBound))
        } catch {
            // Zeros stand in for what could not be read; checkReads fails
            // the merge before anything computed from them is signed.
            lock.withLock { if readError == nil { readError = error } }
            return Data(count: range.count)
        }
    }

    /// Throws the first read that failed, if one did.
    public func checkReads() throws {
        if let e = lock.withLock({ readError }) { throw e }
    }
}

import FedBatchNative
import Foundation

/// Why a safetensors file was refused. Each case names the tensor or the
/// header field at fault.
public enum SafetensorsError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public var code: String { "tensors.invalid" }

    case tooShort(bytes: Int)
    case headerTooLarge(length: UInt64, cap: Int)
    case headerBeyondFile(length: UInt64, fileSize: Int)
    case headerSyntax(String)
    case headerNotObject
    case badMetadata(String)
    case badEntry(name: String, reason: String)
    case unsupportedDType(name: String, dtype: String)
    case sizeMismatch(name: String, dtype: DType, shape: [Int], expected: Int, actual: Int)
    case offsetsOutOfRange(name: String, begin: Int, end: Int, dataSize: Int)
    case overlap(first: String, second: String)
    case gap(before: String, bytes: Int)
    case trailingBytes(Int)
    case tooManyTensors(count: Int, cap: Int)
    /// A `torch.save` file (a zip archive or a pickle), not safetensors.
    case pytorchPickle(zip: Bool)

    public var description: String {
        switch self {
        case .pytorchPickle(let zip):
            return
                "this is a PyTorch \(zip ? "checkpoint (torch.save's zip of pickles)" : "pickle"), not safetensors; "
                + "save the weights with safetensors instead:\n"
                + "    from safetensors.torch import save_file\n"
                + "    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, \"weights.safetensors\")"
        case .tooShort(let n):
            return "safetensors: file is \(n) bytes, too short for the 8-byte header length"
        case let .headerTooLarge(len, cap):
            return "safetensors: header length \(len) is above the cap of \(cap) bytes"
        case let .headerBeyondFile(len, size):
            return "safetensors: header length \(len) is larger than the file (\(size) bytes)"
        case .headerSyntax(let why):
            return "safetensors: header is not valid JSON: \(why)"
        case .headerNotObject:
            return "safetensors: header is not a JSON object"
        case .badMetadata(let why):
            return "safetensors: __metadata__ \(why)"
        case let .badEntry(name, reason):
            return "safetensors: tensor \"\(name)\": \(reason)"
        case let .unsupportedDType(name, dtype):
            return
                "safetensors: tensor \"\(name)\" has dtype \(dtype); "
                + "supported: \(DType.allCases.map(\.rawValue).joined(separator: ", "))"
        case let .sizeMismatch(name, dtype, shape, expected, actual):
            return
                "safetensors: tensor \"\(name)\" is \(dtype.rawValue) \(shape), which needs \(expected) bytes, but "
                + "its offsets span \(actual)"
        case let .offsetsOutOfRange(name, b, e, size):
            return "safetensors: tensor \"\(name)\" has offsets [\(b), \(e)] outside the \(size)-byte data section"
        case let .overlap(a, b):
            return "safetensors: tensors \"\(a)\" and \"\(b)\" overlap"
        case let .gap(name, n):
            return "safetensors: \(n) unclaimed bytes before tensor \"\(name)\""
        case .trailingBytes(let n):
            return "safetensors: \(n) bytes after the last tensor belong to no tensor"
        case let .tooManyTensors(n, cap):
            return "safetensors: \(n) tensors, above the cap of \(cap)"
        }
    }
}

/// Caps applied while reading an untrusted safetensors header.
public struct SafetensorsLimits: Sendable {
    public var maxHeaderBytes: Int = 16 << 20
    public var maxTensors: Int = 10_000
    public var maxRank: Int = 8
    public init() {}
}

/// A parsed, validated safetensors file over bytes it does not copy (a
/// mapping of a file, or a member decompressed from a container).
///
/// Validation follows the reference implementation's rules: the header
/// length is capped and inside the file; every dtype is supported; each
/// tensor's offsets lie in the data section, agree with dtype × shape, and
/// the tensors tile the data section exactly (no overlap, gap or tail).
public struct SafetensorsFile: Sendable {
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range within the whole file.
        public let range: Range<Int>
    }

    /// Entries in data order.
    public let entries: [Entry]
    public let metadata: [String: String]
    public let bytes: Data
    private let index: [String: Int]

    public init(bytes: Data, limits: SafetensorsLimits = SafetensorsLimits()) throws {
        // Data slices keep their parent's indices; rebase so offsets start at 0.
        let bytes = bytes.startIndex == 0 ? bytes : Data(bytes)
        guard bytes.count >= 8 else { throw SafetensorsError.tooShort(bytes: bytes.count) }
        let headerLength = LittleEndian.load(UInt64.self, from: bytes)
        guard headerLength <= UInt64(limits.maxHeaderBytes), headerLength <= UInt64(bytes.count - 8) else {
            // torch.save writes a zip archive (PK\3\4), or with the legacy
            // format a pickle (protocol 2 to 5: 0x80 then the version): said
            // plainly, not as a header length of 578712552184433488. Only a
            // file whose header length is impossible is judged so.
            if bytes.starts(with: [0x50, 0x4B, 0x03, 0x04]) { throw SafetensorsError.pytorchPickle(zip: true) }
            if bytes[0] == 0x80, (2...5).contains(bytes[1]) { throw SafetensorsError.pytorchPickle(zip: false) }
            guard headerLength <= UInt64(limits.maxHeaderBytes) else {
                throw SafetensorsError.headerTooLarge(length: headerLength, cap: limits.maxHeaderBytes)
            }
            throw SafetensorsError.headerBeyondFile(length: headerLength, fileSize: bytes.count)
        }
        let dataStart = 8 + Int(headerLength)
        (entries, metadata) = try Self.layout(
            header: bytes[8..<dataStart], dataStart: dataStart, fileSize: bytes.count, limits: limits)
        self.bytes = bytes
        var index: [String: Int] = [:]
        for (i, e) in entries.enumerated() { index[e.name] = i }
        self.index = index
    }

    /// The entries (in data order) and metadata a header describes, checked
    /// against a file of `fileSize` bytes whose data section starts at
    /// `dataStart`: the same rules whether the file is in memory or on disk.
    package static func layout(
        header headerBytes: Data, dataStart: Int, fileSize: Int, limits: SafetensorsLimits
    ) throws -> (entries: [Entry], metadata: [String: String]) {
        let dataSize = fileSize - dataStart
        let header: JSONValue
        do {
            header = try StrictJSON.parse(headerBytes)
        } catch let e as JSONSyntaxError {
            throw SafetensorsError.headerSyntax(e.description)
        }
        guard case .object(let members) = header else { throw SafetensorsError.headerNotObject }
        if members.count > limits.maxTensors + 1 {
            throw SafetensorsError.tooManyTensors(count: members.count, cap: limits.maxTensors)
        }

        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in members {
            if name == "__metadata__" {
                guard case .object(let kv) = value else { throw SafetensorsError.badMetadata("is not an object") }
                for (k, v) in kv {
                    guard let s = v.stringValue else {
                        throw SafetensorsError.badMetadata("value of \"\(k)\" is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            guard !name.isEmpty else { throw SafetensorsError.badEntry(name: name, reason: "empty tensor name") }
            guard case .object(let fields) = value else {
                throw SafetensorsError.badEntry(name: name, reason: "entry is not an object")
            }
            var dtypeText: String?, shapeValue: JSONValue?, offsetsValue: JSONValue?
            for (k, v) in fields {
                switch k {
                case "dtype": dtypeText = v.stringValue
                case "shape": shapeValue = v
                case "data_offsets": offsetsValue = v
                default: throw SafetensorsError.badEntry(name: name, reason: "unknown field \"\(k)\"")
                }
            }
            guard let dtypeText else {
                throw SafetensorsError.badEntry(name: name, reason: "missing or non-string dtype")
            }
            guard let dtype = DType(rawValue: dtypeText) else {
                throw SafetensorsError.unsupportedDType(name: name, dtype: dtypeText)
            }
            guard case .array(let dims)? = shapeValue else {
                throw SafetensorsError.badEntry(name: name, reason: "missing or non-array shape")
            }
            guard dims.count <= limits.maxRank else {
                throw SafetensorsError.badEntry(name: name, reason: "rank \(dims.count) is above \(limits.maxRank)")
            }
            let shape = try dims.map { d -> Int in
                guard let v = d.nonNegativeInt else {
                    throw SafetensorsError.badEntry(
                        name: name, reason: "shape holds a value that is not a non-negative integer")
                }
                return v
            }
            guard case .array(let offs)? = offsetsValue, offs.count == 2,
                let begin = offs[0].nonNegativeInt, let end = offs[1].nonNegativeInt
            else {
                throw SafetensorsError.badEntry(name: name, reason: "data_offsets must be two non-negative integers")
            }
            guard begin <= end, end <= dataSize else {
                throw SafetensorsError.offsetsOutOfRange(name: name, begin: begin, end: end, dataSize: dataSize)
            }
            guard let n = elementCount(shape) else {
                throw SafetensorsError.badEntry(name: name, reason: "shape \(shape) overflows")
            }
            let (expected, overflow) = n.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, expected == end - begin else {
                throw SafetensorsError.sizeMismatch(
                    name: name, dtype: dtype, shape: shape, expected: overflow ? Int.max : expected, actual: end - begin
                )
            }
            entries.append(
                Entry(name: name, dtype: dtype, shape: shape, range: (dataStart + begin)..<(dataStart + end)))
        }
        entries.sort { ($0.range.lowerBound, $0.range.upperBound) < ($1.range.lowerBound, $1.range.upperBound) }
        var cursor = dataStart
        var previous: String?
        for e in entries {
            if e.range.lowerBound < cursor, let previous {
                throw SafetensorsError.overlap(first: previous, second: e.name)
            }
            if e.range.lowerBound > cursor {
                throw SafetensorsError.gap(before: e.name, bytes: e.range.lowerBound - cursor)
            }
            cursor = e.range.upperBound
            previous = e.name
        }
        if cursor != fileSize { throw SafetensorsError.trailingBytes(fileSize - cursor) }
        return (entries, metadata)

    }

    /// Maps a file and validates it; the tensors are not copied.
    public static func open(
        path: String, limits: SafetensorsLimits = SafetensorsLimits(), cap: Int64 = 1 << 40
    ) throws -> SafetensorsFile {
        try SafetensorsFile(bytes: try mapFile(path, cap: cap), limits: limits)
    }

    public var names: [String] { entries.map(\.name) }

    public func entry(_ name: String) -> Entry? { index[name].map { entries[$0] } }

    /// The named tensor, sharing this file's bytes.
    public func tensor(_ name: String) -> Tensor? {
        guard let e = entry(name) else { return nil }
        return try? Tensor(dtype: e.dtype, shape: e.shape, data: bytes[e.range])
    }

    /// Calls `body` with the raw little-endian bytes of one tensor.
    public func withBytes<R>(of entry: Entry, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try unsafe bytes.withUnsafeBytes { try unsafe body(UnsafeRawBufferPointer(rebasing: $0[entry.range])) }
    }
}

/// Writes safetensors files deterministically: tensors in the order given,
/// laid out back to back, the header padded with spaces so the data section
/// starts 8-byte aligned (as the reference implementation does).
public enum SafetensorsWriter {
    public static func encode(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:]) -> Data {
        var out = header(tensors.map { ($0.name, $0.tensor.dtype, $0.tensor.shape) }, metadata: metadata)
        out.reserveCapacity(out.count + tensors.reduce(0) { $0 + $1.tensor.data.count })
        for (_, t) in tensors { out.append(t.data) }
        return out
    }

    /// The header `encode` writes for tensors of these names, dtypes and
    /// shapes, in this order: its 8-byte length, then the padded JSON. The
    /// data follows it, each tensor's bytes at the offset the header gives:
    /// what a streaming merge writes a piece at a time.
    public static func header(
        _ layout: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String] = [:]
    ) -> Data {
        var header = "{"
        var first = true
        if !metadata.isEmpty {
            header += "\"__metadata__\":{"
            header += metadata.keys.sorted().map { "\(StrictJSON.quote($0)):\(StrictJSON.quote(metadata[$0]!))" }
                .joined(separator: ",")
            header += "}"
            first = false
        }
        var offset = 0
        for (name, dtype, shape) in layout {
            if !first { header += "," }
            first = false
            let end = offset + elementCount(shape)! * dtype.byteSize
            let dims = shape.map(String.init).joined(separator: ",")
            header += "\(StrictJSON.quote(name)):{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[\(dims)],"
            header += "\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(0x20) }
        var out = Data(capacity: 8 + headerBytes.count)
        out.append(LittleEndian.bytes(of: UInt64(headerBytes.count)))
        out.append(contentsOf: headerBytes)
        return out
    }

    /// Encodes and writes atomically.
    public static func write(
        _ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:], to path: String
    ) throws {
        try writeFileAtomically(encode(tensors, metadata: metadata), to: path)
    }
}

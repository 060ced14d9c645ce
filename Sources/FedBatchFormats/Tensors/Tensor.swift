import FedBatchNative
import Foundation

/// The element types fedbatch reads and writes, named as in safetensors.
public enum DType: String, CaseIterable, Sendable, Codable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", i8 = "I8", u8 = "U8", i32 = "I32", i64 = "I64"

    public var byteSize: Int {
        switch self {
        case .u8, .i8: return 1
        case .f16, .bf16: return 2
        case .f32, .i32: return 4
        case .i64: return 8
        }
    }

    public var isFloatingPoint: Bool { self == .f32 || self == .f16 || self == .bf16 }

    /// The values an integer dtype holds (nil for floating point).
    public var integerRange: ClosedRange<Int64>? {
        switch self {
        case .i8: return Int64(Int8.min)...Int64(Int8.max)
        case .u8: return 0...Int64(UInt8.max)
        case .i32: return Int64(Int32.min)...Int64(Int32.max)
        case .i64: return Int64.min...Int64.max
        case .f32, .f16, .bf16: return nil
        }
    }
}

/// A failure to build or convert a tensor.
public enum TensorError: Error, Equatable, Sendable, CustomStringConvertible {
    case byteCountMismatch(dtype: DType, shape: [Int], expected: Int, actual: Int)
    case invalidShape([Int])
    case notFloatingPoint(DType)
    /// A value an integer dtype cannot hold (or a non-finite one).
    case integerRange(dtype: DType, value: Float)

    public var description: String {
        switch self {
        case let .integerRange(dtype, value):
            return "\(value) does not fit in a \(dtype.rawValue) tensor"
        case let .byteCountMismatch(dtype, shape, expected, actual):
            return "a \(dtype.rawValue) tensor of shape \(shape) needs \(expected) bytes, not \(actual)"
        case .invalidShape(let shape):
            return "shape \(shape) is invalid (negative or too large)"
        case .notFloatingPoint(let d):
            return "dtype \(d.rawValue) is not a floating-point type"
        }
    }
}

/// Element count of a shape, or nil if a dimension is negative or the
/// product overflows.
package func elementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = p
    }
    return n
}

/// A dense tensor: dtype, shape and its little-endian bytes, row-major.
public struct Tensor: Sendable, Equatable {
    public let dtype: DType
    public let shape: [Int]
    public let data: Data

    public init(dtype: DType, shape: [Int], data: Data) throws {
        guard let n = elementCount(shape), n.multipliedReportingOverflow(by: dtype.byteSize).overflow == false else {
            throw TensorError.invalidShape(shape)
        }
        guard n * dtype.byteSize == data.count else {
            throw TensorError.byteCountMismatch(
                dtype: dtype, shape: shape, expected: n * dtype.byteSize, actual: data.count)
        }
        self.dtype = dtype
        self.shape = shape
        self.data = data
    }

    /// An F32 tensor from floats.
    public init(shape: [Int], floats: [Float]) {
        precondition(elementCount(shape) == floats.count, "shape \(shape) does not hold \(floats.count) values")
        self.dtype = .f32
        self.shape = shape
        self.data = LittleEndian.bytes(of: floats)
    }

    public var count: Int { data.count / dtype.byteSize }

    /// A tensor of `dtype` from float values: rounded to nearest even for
    /// F16 and BF16, to the nearest integer for the integer dtypes. A value
    /// an integer dtype cannot hold is refused, never converted with a trap.
    public init(shape: [Int], dtype: DType, values: [Float]) throws {
        if dtype == .f32 { self.init(shape: shape, floats: values); return }
        if dtype.isFloatingPoint { self = try Tensor(shape: shape, floats: values).converted(to: dtype); return }
        let range = dtype.integerRange!
        // Int64(exactly:) is nil for NaN, infinities and anything beyond
        // Int64, where Int64(_:) would trap.
        let integers = values.map { v in Int64(exactly: v.rounded()).flatMap { range.contains($0) ? $0 : nil } }
        if let i = integers.firstIndex(of: nil) { throw TensorError.integerRange(dtype: dtype, value: values[i]) }
        let out: Data
        switch dtype {
        case .i64: out = LittleEndian.bytes(of: integers, as: Int64.self) { $0! }
        case .i32: out = LittleEndian.bytes(of: integers, as: Int32.self) { Int32(truncatingIfNeeded: $0!) }
        case .i8: out = LittleEndian.bytes(of: integers, as: Int8.self) { Int8(truncatingIfNeeded: $0!) }
        default: out = LittleEndian.bytes(of: integers, as: UInt8.self) { UInt8(truncatingIfNeeded: $0!) }
        }
        try self.init(dtype: dtype, shape: shape, data: out)
    }

    /// The values widened to Float (exact for F16, BF16, I8, U8; I32 and
    /// I64 round as Float does).
    public func floats() -> [Float] {
        switch dtype {
        case .f32: return LittleEndian.map(data, as: UInt32.self, count: count) { Float(bitPattern: $0) }
        case .f16: return LittleEndian.map(data, as: UInt16.self, count: count) { Float(Float16(bitPattern: $0)) }
        case .bf16: return LittleEndian.map(data, as: UInt16.self, count: count) { Float(bitPattern: UInt32($0) << 16) }
        case .i8: return LittleEndian.map(data, as: Int8.self, count: count) { Float($0) }
        case .u8: return LittleEndian.map(data, as: UInt8.self, count: count) { Float($0) }
        case .i32: return LittleEndian.map(data, as: Int32.self, count: count) { Float($0) }
        case .i64: return LittleEndian.map(data, as: Int64.self, count: count) { Float($0) }
        }
    }

    /// The values as Int64, for integer dtypes (label vectors).
    public func integers() -> [Int64]? {
        switch dtype {
        case .i8: return LittleEndian.map(data, as: Int8.self, count: count) { Int64($0) }
        case .u8: return LittleEndian.map(data, as: UInt8.self, count: count) { Int64($0) }
        case .i32: return LittleEndian.map(data, as: Int32.self, count: count) { Int64($0) }
        case .i64: return LittleEndian.map(data, as: Int64.self, count: count) { $0 }
        default: return nil
        }
    }

    /// The same values in another floating-point dtype, rounding to nearest
    /// even when narrowing (as PyTorch's `.half()` and `.bfloat16()` do).
    public func converted(to target: DType) throws -> Tensor {
        guard dtype.isFloatingPoint else { throw TensorError.notFloatingPoint(dtype) }
        guard target.isFloatingPoint else { throw TensorError.notFloatingPoint(target) }
        if target == dtype { return self }
        let values = floats()
        let out: Data
        switch target {
        case .f16: out = LittleEndian.bytes(of: values, as: UInt16.self) { Float16($0).bitPattern }
        case .bf16: out = LittleEndian.bytes(of: values, as: UInt16.self) { bfloat16Bits($0) }
        default: out = LittleEndian.bytes(of: values)
        }
        return try Tensor(dtype: target, shape: shape, data: out)
    }

    /// True when no element is NaN or infinite (integers always are).
    public func allFinite() -> Bool { Self.allFinite(data, dtype: dtype) }

    /// Whether the `dtype` values in `data` are all finite: a whole tensor's
    /// bytes, or a piece of them.
    static func allFinite(_ data: Data, dtype: DType) -> Bool {
        switch dtype {
        // Exponent bits all ones means Inf or NaN.
        case .f32: return !LittleEndian.contains(data, as: UInt32.self) { $0 & 0x7F80_0000 == 0x7F80_0000 }
        case .f16: return !LittleEndian.contains(data, as: UInt16.self) { $0 & 0x7C00 == 0x7C00 }
        case .bf16: return !LittleEndian.contains(data, as: UInt16.self) { $0 & 0x7F80 == 0x7F80 }
        default:
            return true
        }
    }
}

/// Rounds a Float to bfloat16 (round to nearest, ties to even), keeping NaN a NaN.
func bfloat16Bits(_ v: Float) -> UInt16 {
    let bits = v.bitPattern
    if v.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: rounded >> 16)
}

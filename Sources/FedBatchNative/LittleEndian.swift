import Foundation

/// Fixed-width numbers read from and written to little-endian bytes: what
/// tensors, codecs and headers need, with the only pointer arithmetic here.
/// Every read is checked against the buffer's length first, so the layers
/// above (which are compiled with strict memory-safety checking) get the
/// speed of an unaligned load without holding a pointer themselves.
///
/// The functions are `@inlinable` so that each call site is specialised
/// for its element type and closure: a generic call across the module
/// boundary would box every element.
public enum LittleEndian {
    /// `count` values of `T` from the start of `data`, each passed through
    /// `transform`. Traps if `data` is shorter than `count` values: callers
    /// size `count` from the data they hold.
    @inlinable
    public static func map<T: FixedWidthInteger, R>(
        _ data: Data, as _: T.Type, count: Int? = nil, _ transform: (T) throws -> R
    ) rethrows -> [R] {
        let size = MemoryLayout<T>.size
        let n = count ?? data.count / size
        precondition(n >= 0 && n * size <= data.count, "\(n) values of \(size) bytes do not fit in \(data.count)")
        return try data.withUnsafeBytes { raw in
            try [R](unsafeUninitializedCapacity: n) { out, initialized in
                for i in 0..<n {
                    out.initializeElement(
                        at: i,
                        to: try transform(T(littleEndian: raw.loadUnaligned(fromByteOffset: i * size, as: T.self))))
                    initialized = i + 1
                }
            }
        }
    }

    /// Whether any of the values of `T` in `data` satisfies `predicate`,
    /// stopping at the first.
    @inlinable
    public static func contains<T: FixedWidthInteger>(_ data: Data, as _: T.Type, where predicate: (T) -> Bool) -> Bool
    {
        let size = MemoryLayout<T>.size
        return data.withUnsafeBytes { raw in
            for i in 0..<(raw.count / size)
            where predicate(T(littleEndian: raw.loadUnaligned(fromByteOffset: i * size, as: T.self))) {
                return true
            }
            return false
        }
    }

    /// The value of `T` at byte `offset` of `data` (relative to its start).
    @inlinable
    public static func load<T: FixedWidthInteger>(_: T.Type, from data: Data, at offset: Int = 0) -> T {
        let size = MemoryLayout<T>.size
        precondition(offset >= 0 && offset + size <= data.count, "reading \(size) bytes at \(offset) of \(data.count)")
        return data.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }

    /// The bytes of `values`, each mapped to `T` by `transform`, in order.
    @inlinable
    public static func bytes<S: Collection, T: FixedWidthInteger>(
        of values: S, as _: T.Type, _ transform: (S.Element) throws -> T
    ) rethrows -> Data {
        let size = MemoryLayout<T>.size
        var out = Data(count: values.count * size)
        try out.withUnsafeMutableBytes { raw in
            for (i, v) in values.enumerated() {
                raw.storeBytes(of: try transform(v).littleEndian, toByteOffset: i * size, as: T.self)
            }
        }
        return out
    }

    /// The bytes of one value.
    @inlinable
    public static func bytes<T: FixedWidthInteger>(of value: T) -> Data {
        withUnsafeBytes(of: value.littleEndian) { Data($0) }
    }

    /// The raw bytes of an array of floats, as safetensors stores F32.
    @inlinable
    public static func bytes(of floats: [Float]) -> Data {
        floats.withUnsafeBytes { Data($0) }
    }
}

extension LittleEndian {
    /// Calls `body(i, value)` for the first `count` values of `T` in `data`.
    @inlinable
    public static func forEach<T: FixedWidthInteger>(
        _ data: Data, as _: T.Type, count: Int, _ body: (Int, T) throws -> Void
    ) rethrows {
        let size = MemoryLayout<T>.size
        precondition(count >= 0 && count * size <= data.count, "\(count) values of \(size) bytes do not fit")
        try data.withUnsafeBytes { raw in
            for i in 0..<count { try body(i, T(littleEndian: raw.loadUnaligned(fromByteOffset: i * size, as: T.self))) }
        }
    }
}

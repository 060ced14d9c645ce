import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A zero-filled buffer of numbers that owns its memory and frees it when
/// released: what training and aggregation compute in, instead of raw
/// allocations of their own. Memory is 64-byte aligned (a cache line, and
/// AVX-512's width); buffers of 1 MiB or more are mapped with MADV_DONTFORK
/// like LargeBuffer, so that gpgme's fork does not copy their page tables.
///
/// `buffer` is a view that is valid as long as this object lives; keep the
/// object, not the view.
public final class NumericBuffer<Element: Numeric>: @unchecked Sendable {
    public let buffer: UnsafeMutableBufferPointer<Element>
    private let mapped: Int

    public init(count: Int) {
        let bytes = Swift.max(1, count) * MemoryLayout<Element>.stride
        if bytes >= LargeBuffer.threshold, let p = LargeBuffer.mapUnforked(bytes) {
            // Anonymous mappings read as zeros, but through the shared zero
            // page: the first write to each page would fault a second time.
            // Writing the zeros now takes every fault here, once, in huge pages.
            memset(p, 0, bytes)
            mapped = bytes
            buffer = UnsafeMutableBufferPointer(start: p.bindMemory(to: Element.self, capacity: count), count: count)
        } else {
            mapped = 0
            let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            p.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            buffer = UnsafeMutableBufferPointer(start: p.bindMemory(to: Element.self, capacity: count), count: count)
        }
    }

    /// A buffer holding a copy of `values`.
    public convenience init(copying values: [Element]) {
        self.init(count: values.count)
        _ = buffer.update(fromContentsOf: values)
    }

    deinit {
        guard let base = buffer.baseAddress else { return }
        if mapped > 0 {
            munmap(UnsafeMutableRawPointer(base), mapped)
        } else {
            UnsafeMutableRawPointer(base).deallocate()
        }
    }

    public var count: Int { buffer.count }
    public var array: [Element] { Array(buffer) }
}

/// Element access with bounds checked, so that code above this target can
/// compute in a buffer without holding its pointer: a buffer is a mutable,
/// random-access collection of its elements (`map`, `enumerated`, `for in`
/// and subscripts all work). The accessors are `@inlinable` so that a loop
/// over them compiles to the same loads and stores as one over `buffer`.
extension NumericBuffer: RandomAccessCollection, MutableCollection {
    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { buffer.count }

    @inlinable
    public subscript(i: Int) -> Element {
        get {
            precondition(i >= 0 && i < buffer.count, "index \(i) out of range 0..<\(buffer.count)")
            return buffer[i]
        }
        set {
            precondition(i >= 0 && i < buffer.count, "index \(i) out of range 0..<\(buffer.count)")
            buffer[i] = newValue
        }
    }
}

extension NumericBuffer where Element: FixedWidthInteger {
    /// A buffer of the first `count` little-endian values in `data`, which
    /// must hold them.
    public convenience init(littleEndian data: Data, count: Int) {
        precondition(count * MemoryLayout<Element>.size <= data.count, "\(count) values do not fit in \(data.count)")
        self.init(count: count)
        data.withUnsafeBytes { raw in
            for i in 0..<count {
                buffer[i] = Element(
                    littleEndian: raw.loadUnaligned(fromByteOffset: i * MemoryLayout<Element>.size, as: Element.self))
            }
        }
    }
}

import FedBatchNative
import Foundation

/// `topk`: sparsification. Of each tensor only the k values largest in
/// magnitude are stored (k = max(1, round(fraction × count)); ties go to
/// the lower index), as fp16, with their flat indices. The rest decode as
/// zero. What is left out is not lost: the site keeps it as a residual and
/// adds it to its next update (error feedback, as in Deep Gradient
/// Compression and STC), so every part of a site's training reaches the
/// model eventually.
///
/// Stored, for each model tensor NAME: NAME#indices (I32, [k], strictly
/// increasing, each in [0, count)) and NAME#values (F16, [k], finite).
public struct TopKCodec: TensorCodec {
    public let name = "topk"
    public let fraction: Double
    public var feedsBackError: Bool { true }
    public static let defaultFraction = 0.01

    public init(fraction: Double = TopKCodec.defaultFraction) { self.fraction = fraction }

    static func indicesName(_ tensor: String) -> String { tensor + "#indices" }
    static func valuesName(_ tensor: String) -> String { tensor + "#values" }

    public func encode(_ delta: ModelWeights) throws -> [(name: String, tensor: Tensor)] {
        var out: [(name: String, tensor: Tensor)] = []
        for (t, (tensorName, _)) in delta.arch.tensorShapes.enumerated() {
            let x = delta.tensors[t]
            let k = max(1, min(x.count, Int((fraction * Double(x.count)).rounded())))
            let kept = Self.largest(k, of: x)
            let indices = LittleEndian.bytes(of: kept, as: Int32.self) { Int32($0) }
            let values = try Tensor(shape: [k], floats: kept.map { x[$0] }).converted(to: .f16)
            guard values.allFinite() else {
                throw EncodeError(description: "a value of \(tensorName) is beyond fp16's range (±65504)")
            }
            out.append((Self.indicesName(tensorName), try Tensor(dtype: .i32, shape: [k], data: indices)))
            out.append((Self.valuesName(tensorName), values))
        }
        return out
    }

    /// The indices of the k values largest in magnitude, ascending. A
    /// threshold from a selection (not a full sort) keeps this linear.
    public static func largest(_ k: Int, of x: [Float]) -> [Int] {
        var magnitudes = x.map { abs($0) }
        let threshold = select(&magnitudes, rank: x.count - k)
        var above: [Int] = [], tied: [Int] = []
        for (i, v) in x.enumerated() {
            let m = abs(v)
            if m > threshold { above.append(i) } else if m == threshold { tied.append(i) }
        }
        // Ties at the threshold go to the lowest indices, so that the same
        // delta always keeps the same values.
        return (above + tied.prefix(k - above.count)).sorted()
    }

    /// The value that would stand at `rank` if `a` were sorted ascending
    /// (Hoare's selection, median-of-three pivots); reorders `a`.
    static func select(_ a: inout [Float], rank: Int) -> Float {
        var lo = 0, hi = a.count - 1
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            let pivot = [a[lo], a[mid], a[hi]].sorted()[1]
            var i = lo, j = hi
            while i <= j {
                while a[i] < pivot { i += 1 }
                while a[j] > pivot { j -= 1 }
                if i <= j { a.swapAt(i, j); i += 1; j -= 1 }
            }
            if rank <= j { hi = j } else if rank >= i { lo = i } else { return a[rank] }
        }
        return a[rank]
    }

    public func check(_ stored: some TensorSource, arch: ModelArchitecture) throws {
        var expected: [(name: String, dtype: DType, shape: [Int])] = []
        for (tensorName, shape) in arch.tensorShapes {
            let count = elementCount(shape)!
            guard let k = stored.entry(Self.indicesName(tensorName))?.shape.first else {
                throw CodecError(
                    codec: name, tensor: Self.indicesName(tensorName), problem: "is missing", kind: .missing)
            }
            guard k >= 1, k <= count else {
                throw CodecError(
                    codec: name, tensor: Self.indicesName(tensorName),
                    problem: "keeps \(k) values of a tensor of \(count)")
            }
            expected.append((Self.indicesName(tensorName), .i32, [k]))
            expected.append((Self.valuesName(tensorName), .f16, [k]))
        }
        try Codecs.checkLayout(stored, codec: name, expected: expected)
        for (tensorName, shape) in arch.tensorShapes {
            let count = elementCount(shape)!
            let indicesName = Self.indicesName(tensorName)
            var previous = -1
            try stored.forEachPiece(of: stored.entry(indicesName)!, as: UInt32.self) { first, piece in
                for (offset, bits) in piece.enumerated() {
                    let i = Int(Int32(bitPattern: bits))
                    guard i > previous else {
                        throw CodecError(
                            codec: name, tensor: indicesName,
                            problem:
                                "index \(i) at position \(first + offset) is not above the one before (\(previous)): "
                                + "indices must be strictly increasing"
                        )
                    }
                    guard i < count else {
                        throw CodecError(
                            codec: name, tensor: indicesName, problem: "index \(i) is outside a tensor of \(count)")
                    }
                    previous = i
                }
            }
            guard stored.allFinite(stored.entry(Self.valuesName(tensorName))!) else {
                throw CodecError(
                    codec: name, tensor: Self.valuesName(tensorName), problem: "holds a NaN or an infinity",
                    kind: .nonFinite)
            }
        }
    }

    public func decode(
        _ stored: some TensorSource, tensor t: Int, elements range: Range<Int>, arch: ModelArchitecture,
        into out: NumericBuffer<Float>
    ) {
        let tensorName = arch.tensorShapes[t].name
        for i in 0..<range.count { out[i] = 0 }
        let indices = stored.entry(Self.indicesName(tensorName))!
        let values = stored.entry(Self.valuesName(tensorName))!
        // The indices are strictly increasing (check), so those inside the
        // range are one run, found by two binary searches; the run is no
        // longer than the range.
        func index(_ j: Int) -> Int {
            Int(
                Int32(
                    bitPattern: LittleEndian.load(
                        UInt32.self, from: stored.bytes(of: indices, range: (j * 4)..<(j * 4 + 4)))))
        }
        func firstPosition(atLeast bound: Int) -> Int {
            var lo = 0, hi = indices.shape[0]
            while lo < hi {
                let mid = lo + (hi - lo) / 2
                if index(mid) < bound { lo = mid + 1 } else { hi = mid }
            }
            return lo
        }
        let lo = firstPosition(atLeast: range.lowerBound), hi = firstPosition(atLeast: range.upperBound)
        guard lo < hi else { return }
        let at = LittleEndian.map(stored.bytes(of: indices, range: (lo * 4)..<(hi * 4)), as: Int32.self) { Int($0) }
        let v = LittleEndian.map(stored.bytes(of: values, range: (lo * 2)..<(hi * 2)), as: UInt16.self) {
            Float(Float16(bitPattern: $0))
        }
        for (j, i) in at.enumerated() { out[i - range.lowerBound] = v[j] }
    }
}

import FedBatchNative
import Foundation

/// `int8`: blockwise absmax quantisation, as NVFlare's and bitsandbytes'
/// 8-bit exchange formats do it. Each tensor is cut, in its flat order, into
/// blocks of 256 values (the last may be shorter); a block stores one
/// float32 scale s = max|x| / 127 and each value as q = round(x / s), an
/// integer from -127 to 127 (0 throughout a block of zeros, where s = 0).
/// It decodes to q × s in float32: a quarter of fp32's size, with an error
/// of at most s / 2 per value.
///
/// Stored, for each model tensor NAME: NAME (I8, the tensor's shape) and
/// NAME#scale (F32, [ceil(count / 256)]).
public struct Int8Codec: TensorCodec {
    public let name = "int8"
    public static let blockSize = 256
    public init() {}

    static func scaleName(_ tensor: String) -> String { tensor + "#scale" }
    static func blocks(_ count: Int) -> Int { (count + blockSize - 1) / blockSize }

    public func encode(_ delta: ModelWeights) throws -> [(name: String, tensor: Tensor)] {
        var out: [(name: String, tensor: Tensor)] = []
        for (t, (tensorName, shape)) in delta.arch.tensorShapes.enumerated() {
            let x = delta.tensors[t]
            var q = [Int8](repeating: 0, count: x.count)
            var scales = [Float](repeating: 0, count: Self.blocks(x.count))
            for b in scales.indices {
                let range = (b * Self.blockSize)..<min(x.count, (b + 1) * Self.blockSize)
                let absmax = x[range].reduce(Float(0)) { max($0, abs($1)) }
                let s = absmax / 127
                scales[b] = s
                guard s > 0 else { continue }
                for i in range { q[i] = Int8(max(-127, min(127, (x[i] / s).rounded(.toNearestOrEven)))) }
            }
            guard scales.allSatisfy(\.isFinite) else {
                throw EncodeError(description: "\(tensorName) holds a non-finite value")
            }
            out.append(
                (
                    tensorName,
                    try Tensor(dtype: .i8, shape: shape, data: LittleEndian.bytes(of: q, as: Int8.self) { $0 })
                ))
            out.append((Self.scaleName(tensorName), Tensor(shape: [scales.count], floats: scales)))
        }
        return out
    }

    public func check(_ stored: some TensorSource, arch: ModelArchitecture) throws {
        var expected: [(name: String, dtype: DType, shape: [Int])] = []
        for (tensorName, shape) in arch.tensorShapes {
            expected.append((tensorName, .i8, shape))
            expected.append((Self.scaleName(tensorName), .f32, [Self.blocks(elementCount(shape)!)]))
        }
        try Codecs.checkLayout(stored, codec: name, expected: expected)
        for (tensorName, _) in arch.tensorShapes {
            let scaleName = Self.scaleName(tensorName)
            try stored.forEachPiece(of: stored.entry(scaleName)!, as: UInt32.self) { _, bits in
                for s in bits.lazy.map({ Float(bitPattern: $0) }) where !(s.isFinite && s >= 0) {
                    throw CodecError(
                        codec: name, tensor: scaleName,
                        problem: "holds the scale \(s); scales must be finite and not negative")
                }
            }
            if stored.contains(byte: 0x80, in: stored.entry(tensorName)!) {
                throw CodecError(codec: name, tensor: tensorName, problem: "holds -128; values run from -127 to 127")
            }
        }
    }

    public func decode(
        _ stored: some TensorSource, tensor t: Int, elements range: Range<Int>, arch: ModelArchitecture,
        into out: NumericBuffer<Float>
    ) {
        guard !range.isEmpty else { return }
        let tensorName = arch.tensorShapes[t].name
        let firstBlock = range.lowerBound / Self.blockSize
        let scales = stored.floats(
            stored.entry(Self.scaleName(tensorName))!,
            elements: firstBlock..<((range.upperBound - 1) / Self.blockSize + 1))
        let q = LittleEndian.map(
            stored.bytes(of: stored.entry(tensorName)!, range: range), as: Int8.self, count: range.count
        ) { $0 }
        // Block by block, so the inner loop is a plain multiply by one scale.
        for (b, s) in scales.enumerated() {
            let start = max(range.lowerBound, (firstBlock + b) * Self.blockSize)
            let end = min(range.upperBound, (firstBlock + b + 1) * Self.blockSize)
            for i in start..<end { out[i - range.lowerBound] = Float(q[i - range.lowerBound]) * s }
        }
    }
}

import FedBatchNative
import Foundation

/// `fp16` and `bf16`: the delta rounded to nearest even in a 16-bit float,
/// half the size of fp32. fp16 keeps 11 bits of precision within ±65504;
/// bf16 keeps fp32's range with 8 bits. A delta value beyond fp16's range
/// is refused at the site rather than stored as an infinity.
public struct HalfCodec: TensorCodec {
    public static let fp16 = HalfCodec(dtype: .f16)
    public static let bf16 = HalfCodec(dtype: .bf16)
    public var name: String { dtype == .f16 ? "fp16" : "bf16" }
    let dtype: DType

    public func encode(_ delta: ModelWeights) throws -> [(name: String, tensor: Tensor)] {
        try delta.namedF32.map { named in
            let t = try named.tensor.converted(to: dtype)
            guard t.allFinite() else {
                throw EncodeError(
                    description: "a value of \(named.name) is beyond \(name)'s range (±65504); use bf16 or fp32")
            }
            return (named.name, t)
        }
    }

    public func check(_ stored: some TensorSource, arch: ModelArchitecture) throws {
        try Codecs.checkLayout(stored, codec: name, expected: arch.tensorShapes.map { ($0.name, dtype, $0.shape) })
        for (tensor, _) in arch.tensorShapes where !stored.allFinite(stored.entry(tensor)!) {
            throw CodecError(codec: name, tensor: tensor, problem: "holds a NaN or an infinity", kind: .nonFinite)
        }
    }

    public func decode(
        _ stored: some TensorSource, tensor t: Int, elements range: Range<Int>, arch: ModelArchitecture,
        into out: NumericBuffer<Float>
    ) {
        let entry = stored.entry(arch.tensorShapes[t].name)!
        let data = stored.bytes(of: entry, range: (range.lowerBound * 2)..<(range.upperBound * 2))
        let bf16 = dtype == .bf16
        LittleEndian.forEach(data, as: UInt16.self, count: range.count) { i, bits in
            out[i] = bf16 ? Float(bitPattern: UInt32(bits) << 16) : Float(Float16(bitPattern: bits))
        }
    }
}

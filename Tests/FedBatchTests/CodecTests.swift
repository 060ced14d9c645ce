import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Every codec against an independent numpy decoder written from
/// fedbatch-bundle(5) (Tests/Fixtures/codec_decode.py), and against hostile
/// stored tensors.
@Suite("Codecs")
struct CodecTests {
    static let arch = try! ModelArchitecture(spec: "mlp:300-40-10")

    /// A delta like a real one (small, signed, varied), with the edges a
    /// codec must get right: a block of zeros, a lone large value, tiny
    /// values, a short last block.
    static func delta(seed: UInt64 = 7) -> ModelWeights {
        var rng = SeededRandom(seed: seed)
        return ModelWeights(
            arch: arch,
            tensors: arch.tensorShapes.enumerated().map { t, shape in
                var x = (0..<shape.shape.reduce(1, *)).map { _ in rng.uniform(-1, 1) * 0.01 }
                if t == 0 {
                    for i in 0..<256 { x[i] = 0 }  // a whole int8 block of zeros
                    x[300] = 0.75  // one value far above the rest
                    x[301] = 1e-30  // below fp16's smallest subnormal
                    x[302] = -3e-6
                }
                return x
            })
    }

    func numpyDecode(_ codec: String, _ stored: Data, in dir: TempDir) throws -> (ProcessResult, [Float]) {
        let shapes = try JSONSerialization.data(
            withJSONObject: Self.arch.tensorShapes.map { [$0.name, $0.shape] as [Any] })
        let r = try Subprocess.python(
            "codec_decode.py",
            [
                codec, try dir.write("shapes.json", shapes), try dir.write("stored.safetensors", stored),
                dir.file("out.f32"),
            ])
        guard r.status == 0 else { return (r, []) }
        let raw = try Data(contentsOf: URL(fileURLWithPath: dir.file("out.f32")))
        return (
            r,
            raw.withUnsafeBytes { b in
                (0..<(raw.count / 4)).map {
                    Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
                }
            }
        )
    }

    @Test(
        "each codec's decoded delta agrees bit for bit with the numpy decoder",
        arguments: ["fp32", "fp16", "bf16", "int8", "topk"])
    func againstNumpy(name: String) throws {
        let dir = TempDir()
        let codec = try Codecs.make(name: name, topkFraction: 0.05)
        let delta = Self.delta()
        let stored = SafetensorsWriter.encode(try codec.encode(delta))
        let file = try SafetensorsFile(bytes: stored)
        try codec.check(file, arch: Self.arch)
        let ours = codec.decodeAll(file, arch: Self.arch).tensors.flatMap { $0 }
        let (r, theirs) = try numpyDecode(name, stored, in: dir)
        #expect(r.status == 0, "\(r.out)\(r.err)")
        #expect(ours.map(\.bitPattern) == theirs.map(\.bitPattern))
        // And what each codec keeps of the delta is what it promises.
        let x = delta.tensors.flatMap { $0 }
        switch name {
        case "fp32": #expect(ours == x)
        case "int8":
            // At most half a step (max|x| / 127 / 2) per value, per block.
            for t in 0..<delta.tensors.count {
                let v = delta.tensors[t], d = codec.decodeAll(file, arch: Self.arch).tensors[t]
                for b in stride(from: 0, to: v.count, by: 256) {
                    let r = b..<min(v.count, b + 256)
                    let step = r.map { abs(v[$0]) }.max()! / 127
                    #expect(r.allSatisfy { abs(d[$0] - v[$0]) <= step / 2 * 1.0001 })
                }
            }
        case "topk":
            let kept = ours.filter { $0 != 0 }.count
            #expect(kept <= Int(Double(x.count) * 0.05) + Self.arch.tensorShapes.count)
            #expect(ours[300] == Float(Float16(0.75)))
        default:
            #expect(zip(ours, x).allSatisfy { abs($0 - $1) <= abs($1) / 128 + 1e-7 })
        }
    }

    @Test("int8 is a quarter of fp32 and topk at 1% under two hundredths, in the bundle's tensors (mlp:784-256-128-10)")
    func sizes() throws {
        let arch = try ModelArchitecture(spec: "mlp:784-256-128-10")
        var rng = SeededRandom(seed: 1)
        let delta = ModelWeights(
            arch: arch,
            tensors: arch.tensorShapes.map { s in (0..<s.shape.reduce(1, *)).map { _ in rng.uniform(-0.01, 0.01) } })
        func size(_ name: String, _ f: Double = 0.01) throws -> Int {
            SafetensorsWriter.encode(try Codecs.make(name: name, topkFraction: f).encode(delta)).count
        }
        let fp32 = try size("fp32")
        #expect(Double(try size("int8")) / Double(fp32) < 0.27)
        #expect(Double(try size("fp16")) / Double(fp32) < 0.51)
        #expect(Double(try size("topk")) / Double(fp32) < 0.02)
    }

    /// Stored tensors with one thing wrong, each refused by name before decoding.
    @Test(
        "hostile stored tensors are refused: indices out of range, unsorted or repeated, k above the tensor, NaN or negative scales, -128, wrong shapes, extra tensors"
    )
    func hostile() throws {
        let dir = TempDir()
        let delta = Self.delta()
        func refused(_ codec: String, _ edit: (inout [(name: String, tensor: Tensor)]) throws -> Void) throws -> String
        {
            var stored = try Codecs.make(name: codec).encode(delta)
            try edit(&stored)
            let bytes = SafetensorsWriter.encode(stored)
            // The numpy decoder must refuse it too.
            let (r, _) = try numpyDecode(codec, bytes, in: dir)
            #expect(r.status != 0, "numpy accepted a \(codec) payload fedbatch must refuse")
            do {
                try Codecs.make(name: codec).check(try SafetensorsFile(bytes: bytes), arch: Self.arch)
                return "accepted"
            } catch {
                return reasonCode(of: error) + ": \(error)"
            }
        }
        func replace(_ s: inout [(name: String, tensor: Tensor)], _ name: String, _ t: Tensor) {
            s[s.firstIndex { $0.name == name }!].tensor = t
        }
        func i32(_ values: [Int32]) throws -> Tensor {
            var d = Data()
            for v in values { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
            return try Tensor(dtype: .i32, shape: [values.count], data: d)
        }
        let n = 40 * 300
        let k = Int((0.01 * Double(n)).rounded())
        let values = try Tensor(shape: [k], floats: [Float](repeating: 0.5, count: k)).converted(to: .f16)
        #expect(
            try refused("topk") {
                replace(&$0, "0.weight#indices", try i32((0..<Int32(k)).map { $0 == 5 ? Int32(n) : $0 }))
            }.contains("outside a tensor of 12000"))
        #expect(
            try refused("topk") { replace(&$0, "0.weight#indices", try i32((0..<Int32(k)).reversed())) }.contains(
                "strictly increasing"))
        #expect(
            try refused("topk") { replace(&$0, "0.weight#indices", try i32((0..<Int32(k)).map { $0 == 3 ? 2 : $0 })) }
                .contains("strictly increasing"))
        #expect(
            try refused("topk") { replace(&$0, "0.weight#indices", try i32((0..<Int32(k)).map { $0 == 0 ? -1 : $0 })) }
                .hasPrefix("codec.invalid"))
        #expect(
            try refused("topk") {
                replace(&$0, "0.bias#indices", try i32((0..<41).map { Int32($0) }))
                replace(
                    &$0, "0.bias#values",
                    try Tensor(shape: [41], floats: [Float](repeating: 1, count: 41)).converted(to: .f16))
            }.contains("keeps 41 values of a tensor of 40"))
        #expect(
            try refused("topk") { replace(&$0, "0.weight#values", try values.replacing(0, with: .nan)) }.contains("NaN")
        )
        #expect(
            try refused("int8") {
                replace(&$0, "0.weight#scale", Tensor(shape: [47], floats: [Float](repeating: .nan, count: 47)))
            }.contains("scale nan"))
        #expect(
            try refused("int8") { replace(&$0, "0.bias#scale", Tensor(shape: [1], floats: [-1])) }.contains("scale -1"))
        #expect(
            try refused("int8") {
                replace(
                    &$0, "0.bias",
                    try Tensor(dtype: .i8, shape: [40], data: Data([0x80] + [UInt8](repeating: 1, count: 39))))
            }.contains("-128"))
        #expect(
            try refused("int8") { replace(&$0, "0.bias#scale", Tensor(shape: [2], floats: [1, 1])) }.contains(
                "has shape [2], not [1]"))
        #expect(
            try refused("fp16") { $0.append(("extra", Tensor(shape: [1], floats: [1]))) }.contains(
                "extra: is not a tensor this codec stores"))
        #expect(
            try refused("fp32") {
                replace(
                    &$0, "0.bias", try Tensor(shape: [40], floats: [Float](repeating: 1, count: 40)).converted(to: .f16)
                )
            }.contains("is F16, not F32"))
    }

    @Test("topk's selection keeps exactly the k largest magnitudes, ties to the lower index")
    func topkSelection() throws {
        let x: [Float] = [0.1, -0.5, 0.5, 0.2, -0.9, 0.5, 0, 0.3]
        #expect(TopKCodec.largest(3, of: x) == [1, 2, 4])
        #expect(TopKCodec.largest(1, of: x) == [4])
        #expect(TopKCodec.largest(8, of: x) == Array(0..<8))
        var rng = SeededRandom(seed: 3)
        let y = (0..<10_000).map { _ in rng.uniform(-1, 1) }
        let kept = TopKCodec.largest(100, of: y)
        let threshold = y.map(abs).sorted(by: >)[99]
        #expect(kept.count == 100 && kept.allSatisfy { abs(y[$0]) >= threshold } && kept == kept.sorted())
    }
}

extension Tensor {
    /// A copy with element `i` set (floating dtypes).
    func replacing(_ i: Int, with v: Float) throws -> Tensor {
        var f = floats()
        f[i] = v
        return try Tensor(shape: shape, floats: f).converted(to: dtype)
    }
}

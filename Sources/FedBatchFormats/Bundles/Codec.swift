import FedBatchNative
import Foundation

/// How an update's tensors are stored in a bundle: the manifest's `codec`.
///
/// Encoding turns a float32 delta into the tensors a bundle holds. A reader
/// first checks the stored tensors' layout and values against the model
/// (`check`: names, dtypes, shapes, scales, indices), before anything is
/// decoded or any buffer sized by the payload is allocated; then a merge
/// decodes one tensor at a time into float32, so memory stays flat in the
/// number of bundles. Adding a codec: one file in Bundles/ with a type
/// conforming to this protocol, its entry in `Codecs.registry`, its section
/// in fedbatch-bundle(5) and its tests against the numpy decoder
/// (Tests/Fixtures/codec_decode.py); a reader refuses any codec it does not
/// know.
public protocol TensorCodec: Sendable {
    /// The manifest's `codec`.
    var name: String { get }
    /// Whether what encoding drops should be carried into the site's next
    /// update (error feedback), as sparsification needs to converge.
    var feedsBackError: Bool { get }
    /// The tensors to store for `delta`, in the model's order.
    func encode(_ delta: ModelWeights) throws -> [(name: String, tensor: Tensor)]
    /// Refuses stored tensors that do not decode to exactly the model's
    /// tensors: a missing, extra or misshapen tensor, a wrong dtype, a
    /// non-finite value or scale, an index out of order or range. Values
    /// are read a piece at a time, so a spilled bundle is never read whole.
    func check(_ stored: some TensorSource, arch: ModelArchitecture) throws
    /// Decodes elements `range` of tensor `t` of the model (already
    /// checked) into the first `range.count` elements of `out`.
    func decode(
        _ stored: some TensorSource, tensor t: Int, elements range: Range<Int>, arch: ModelArchitecture,
        into out: NumericBuffer<Float>)
}

extension TensorCodec {
    public var feedsBackError: Bool { false }

    /// Decodes tensor `t` of the model (already checked) into `out`, which
    /// holds exactly that tensor's element count.
    public func decode(
        _ stored: some TensorSource, tensor t: Int, arch: ModelArchitecture, into out: NumericBuffer<Float>
    ) {
        decode(stored, tensor: t, elements: 0..<out.count, arch: arch, into: out)
    }

    /// The whole delta, decoded (for error feedback and tests).
    public func decodeAll(_ stored: SafetensorsFile, arch: ModelArchitecture) -> ModelWeights {
        ModelWeights(
            arch: arch,
            tensors: arch.tensorShapes.indices.map { t in
                let out = NumericBuffer<Float>(count: elementCount(arch.tensorShapes[t].shape)!)
                decode(stored, tensor: t, arch: arch, into: out)
                return out.array
            })
    }
}

/// An update's delta as float32, tensor by tensor in the model's order.
public struct DecodedDelta: @unchecked Sendable {
    public let arch: ModelArchitecture
    private let stored: any TensorSource
    private let codec: any TensorCodec
    /// Every tensor decoded ahead of use (`materialized`), or nil.
    private var dense: [NumericBuffer<Float>]?

    package init(arch: ModelArchitecture, stored: any TensorSource, codec: any TensorCodec) {
        self.arch = arch
        self.stored = stored
        self.codec = codec
    }

    /// The same delta with every tensor decoded now, so that a merge's
    /// worker threads decode while the aggregating thread adds, and no
    /// tensor is decoded twice (a strategy reads each bundle more than once).
    /// fp32 is read in place and needs no copy.
    public func materialized() -> DecodedDelta {
        guard !(codec is FP32Codec), dense == nil else { return self }
        var copy = self
        copy.dense = arch.tensorShapes.indices.map { t in
            let buffer = NumericBuffer<Float>(count: elementCount(arch.tensorShapes[t].shape)!)
            codec.decode(stored, tensor: t, arch: arch, into: buffer)
            return buffer
        }
        return copy
    }

    /// The L2 norm over every tensor together, in float64.
    public func l2Norm() -> Double {
        var sum = 0.0
        for t in arch.tensorShapes.indices {
            withTensor(t) { d in for i in d.indices { sum += Double(d[i]) * Double(d[i]) } }
        }
        return sum.squareRoot()
    }

    /// Elements `range` of tensor `t`, decoded into the first `range.count`
    /// elements of `out`: how a streaming merge reads a spilled bundle.
    public func decode(_ t: Int, elements range: Range<Int>, into out: NumericBuffer<Float>) {
        if let dense {
            for i in range { out[i - range.lowerBound] = dense[t][i] }
            return
        }
        codec.decode(stored, tensor: t, elements: range, arch: arch, into: out)
    }

    /// Throws the first failed read of a spilled bundle, if one did.
    public func checkReads() throws {
        try (stored as? SpilledSafetensors)?.checkReads()
    }

    /// Checks `stored` with `codec`, then wraps it for aggregation.
    public static func checked(
        _ stored: any TensorSource, codec: any TensorCodec, arch: ModelArchitecture
    ) throws -> DecodedDelta {
        try codec.check(stored, arch: arch)
        return DecodedDelta(arch: arch, stored: stored, codec: codec)
    }

    /// Calls `body` with tensor `t`'s values. fp32 data is read in place
    /// when it is aligned; anything else is decoded into a temporary array
    /// the size of that one tensor. `body` gets a `Span`: it reads with
    /// bounds checked and cannot keep the view past the call.
    public func withTensor<R>(_ t: Int, _ body: (Span<Float>) throws -> R) rethrows -> R {
        // The views below point into memory that outlives the call: the
        // dense buffers and `stored` are this value's, `values` is local.
        if let dense { return try unsafe body(Span(_unsafeElements: UnsafeBufferPointer(dense[t].buffer))) }
        if codec is FP32Codec, let stored = stored as? SafetensorsFile {
            let entry = stored.entry(arch.tensorShapes[t].name)!
            if unsafe stored.withBytes(
                of: entry, { Int(bitPattern: $0.baseAddress) % MemoryLayout<Float>.alignment == 0 })
            {
                return try unsafe stored.withBytes(of: entry) {
                    try unsafe body(Span(_unsafeElements: $0.assumingMemoryBound(to: Float.self)))
                }
            }
        }
        let values = NumericBuffer<Float>(count: elementCount(arch.tensorShapes[t].shape)!)
        codec.decode(stored, tensor: t, arch: arch, into: values)
        return try unsafe body(Span(_unsafeElements: UnsafeBufferPointer(values.buffer)))
    }
}

/// Why stored tensors do not decode to the model's. The layout faults
/// share the `tensors.*` codes a generation's tensors get; faults in a
/// codec's own values (indices, scales) are `codec.invalid`.
public struct CodecError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public enum Kind: String, Sendable {
        case missing = "tensors.missing", extra = "tensors.extra", shape = "tensors.shape", dtype = "tensors.dtype"
        case nonFinite = "tensors.non-finite", value = "codec.invalid"
    }
    public let codec: String
    public let tensor: String
    public let problem: String
    public let kind: Kind

    public init(codec: String, tensor: String, problem: String, kind: Kind = .value) {
        self.codec = codec
        self.tensor = tensor
        self.problem = problem
        self.kind = kind
    }

    public var code: String { kind.rawValue }
    public var description: String { "\(codec) tensor \(tensor): \(problem)" }
}

/// Why a delta cannot be stored with a codec (a site-side failure).
public struct EncodeError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public let description: String
    public var code: String { "site.encode" }
}

/// The codecs this build writes and reads.
public enum Codecs {
    static let registry: [String: any TensorCodec] = [
        "fp32": FP32Codec(), "fp16": HalfCodec.fp16, "bf16": HalfCodec.bf16, "int8": Int8Codec(), "topk": TopKCodec(),
    ]

    public static var names: Set<String> { Set(registry.keys) }

    /// The codec `name`, or a refusal naming the ones this build reads.
    public static func make(name: String) throws -> any TensorCodec {
        guard let codec = registry[name] else {
            throw ContainerError.manifestInvalid(
                "codec \"\(name)\" is not one this fedbatch reads (\(names.sorted().joined(separator: ", ")))")
        }
        return codec
    }

    /// The codec to write with: `topk` takes the fraction of each tensor
    /// it keeps.
    public static func make(name: String, topkFraction: Double) throws -> any TensorCodec {
        if name == "topk" { return TopKCodec(fraction: topkFraction) }
        return try make(name: name)
    }

    /// Checks that `stored` holds exactly `expected` (name, dtype, shape),
    /// in any order, and nothing else.
    static func checkLayout(
        _ stored: some TensorSource, codec: String, expected: [(name: String, dtype: DType, shape: [Int])]
    ) throws {
        let names = Set(expected.map(\.name))
        for e in stored.entries where !names.contains(e.name) {
            throw CodecError(
                codec: codec, tensor: e.name, problem: "is not a tensor this codec stores for the model", kind: .extra)
        }
        for x in expected {
            guard let e = stored.entry(x.name) else {
                throw CodecError(codec: codec, tensor: x.name, problem: "is missing", kind: .missing)
            }
            guard e.dtype == x.dtype else {
                throw CodecError(
                    codec: codec, tensor: x.name, problem: "is \(e.dtype.rawValue), not \(x.dtype.rawValue)",
                    kind: .dtype)
            }
            guard e.shape == x.shape else {
                throw CodecError(
                    codec: codec, tensor: x.name, problem: "has shape \(e.shape), not \(x.shape)", kind: .shape)
            }
        }
    }
}

/// `fp32`: the delta stored as it is, little-endian float32.
public struct FP32Codec: TensorCodec {
    public let name = "fp32"
    public init() {}

    public func encode(_ delta: ModelWeights) -> [(name: String, tensor: Tensor)] { delta.namedF32 }

    public func check(_ stored: some TensorSource, arch: ModelArchitecture) throws {
        try Codecs.checkLayout(stored, codec: name, expected: arch.tensorShapes.map { ($0.name, .f32, $0.shape) })
        for (name, _) in arch.tensorShapes where !stored.allFinite(stored.entry(name)!) {
            throw CodecError(codec: self.name, tensor: name, problem: "holds a NaN or an infinity", kind: .nonFinite)
        }
    }

    public func decode(
        _ stored: some TensorSource, tensor t: Int, elements range: Range<Int>, arch: ModelArchitecture,
        into out: NumericBuffer<Float>
    ) {
        let entry = stored.entry(arch.tensorShapes[t].name)!
        let data = stored.bytes(of: entry, range: (range.lowerBound * 4)..<(range.upperBound * 4))
        LittleEndian.forEach(data, as: UInt32.self, count: range.count) { i, bits in out[i] = Float(bitPattern: bits) }
    }
}

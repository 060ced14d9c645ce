import Foundation

/// How an update's tensors are stored in a bundle: the manifest's `codec`.
///
/// Encoding turns a float32 delta into the tensors a bundle holds; decoding
/// hands a merge each stored tensor back as float32 values, one tensor at a
/// time, without copying where the stored form allows it. Adding a codec:
/// one file in Bundles/ with a type conforming to this protocol, its entry
/// in `Codecs.registry`, and its tests; a reader refuses any codec it does
/// not know (fedbatch-bundle(5)).
public protocol TensorCodec: Sendable {
    static var name: String { get }
    /// The tensors to store for `delta`, in the model's order.
    func encode(_ delta: ModelWeights) -> [(name: String, tensor: Tensor)]
    /// The stored tensors of an update, already checked against `arch`
    /// (names, shapes, finite values), as float32.
    func decode(_ stored: SafetensorsFile, arch: ModelArchitecture) throws -> DecodedDelta
}

/// An update's delta as float32, tensor by tensor in the model's order.
public struct DecodedDelta {
    public let arch: ModelArchitecture
    private let stored: SafetensorsFile

    init(arch: ModelArchitecture, stored: SafetensorsFile) {
        self.arch = arch
        self.stored = stored
    }

    /// Calls `body` with tensor `t`'s values. F32 data is read in place
    /// when it is aligned; anything else (F16, BF16, an F32 tensor at an
    /// odd offset) is widened into a temporary array.
    public func withTensor<R>(_ t: Int, _ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        let name = arch.tensorShapes[t].name
        let entry = stored.entry(name)!
        if entry.dtype == .f32, stored.withBytes(of: entry, { Int(bitPattern: $0.baseAddress) % MemoryLayout<Float>.alignment == 0 }) {
            return try stored.withBytes(of: entry) { try body($0.assumingMemoryBound(to: Float.self)) }
        }
        let values = stored.tensor(name)!.floats()
        return try values.withUnsafeBufferPointer(body)
    }
}

/// `fp32`: the delta stored as it is, little-endian float32.
public struct FP32Codec: TensorCodec {
    public static let name = "fp32"
    public init() {}

    public func encode(_ delta: ModelWeights) -> [(name: String, tensor: Tensor)] { delta.named }

    public func decode(_ stored: SafetensorsFile, arch: ModelArchitecture) throws -> DecodedDelta {
        DecodedDelta(arch: arch, stored: stored)
    }
}

/// The codecs this build writes and reads.
public enum Codecs {
    static let registry: [String: any TensorCodec] = [FP32Codec.name: FP32Codec()]

    public static var names: Set<String> { Set(registry.keys) }

    /// The codec `name`, or a refusal naming the ones this build reads.
    public static func make(name: String) throws -> any TensorCodec {
        guard let codec = registry[name] else {
            throw ContainerError.manifestInvalid("codec \"\(name)\" is not one this fedbatch reads (\(names.sorted().joined(separator: ", ")))")
        }
        return codec
    }
}

import FedBatchNative
import Foundation

/// Model weights in PyTorch's layout and order (`0.weight`, `0.bias`, …),
/// each tensor a flat row-major Float array.
public struct ModelWeights: Sendable, Equatable {
    public let arch: ModelArchitecture
    public var tensors: [[Float]]

    public init(arch: ModelArchitecture, tensors: [[Float]]) {
        precondition(tensors.count == arch.tensorShapes.count)
        self.arch = arch
        self.tensors = tensors
    }

    /// Reads weights from a checked tensor file (widening F16/BF16).
    public init(arch: ModelArchitecture, file: SafetensorsFile) throws {
        try arch.check(file)
        self.init(arch: arch, tensors: arch.tensorShapes.map { file.tensor($0.name)!.floats() })
    }

    public init(arch: ModelArchitecture, named: [(name: String, tensor: Tensor)]) {
        let byName = Dictionary(named.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        self.init(arch: arch, tensors: arch.tensorShapes.map { byName[$0.name]!.floats() })
    }

    /// Named tensors, ready for `SafetensorsWriter`: F32 for the built-in
    /// kinds, each in its pinned dtype for a `tensors:` model (so PyTorch's
    /// `load_state_dict(strict=True)` gets back an int64 counter as int64).
    /// Throws when an integer tensor holds a value its dtype cannot.
    public func named() throws -> [(name: String, tensor: Tensor)] {
        try zip(zip(arch.tensorShapes, arch.dtypes), tensors).map { spec, values in
            (
                spec.0.name,
                spec.1 == .f32
                    ? Tensor(shape: spec.0.shape, floats: values)
                    : try Tensor(shape: spec.0.shape, dtype: spec.1, values: values)
            )
        }
    }

    /// The `tensors.safetensors` member of a generation, checked exactly as
    /// every site will check it before training (`ModelArchitecture.check`):
    /// a collector never signs weights its own sites would refuse.
    public func generationMember() throws -> Data {
        let data: Data
        do {
            data = SafetensorsWriter.encode(try named())
            try arch.check(try SafetensorsFile(bytes: data))
        } catch {
            throw GenerationCheckError(reason: "\(error)", code: reasonCode(of: error))
        }
        return data
    }

    /// The same tensors as F32, whatever the model pins: an update's delta
    /// (a counter's increment is a float like any other delta).
    public var namedF32: [(name: String, tensor: Tensor)] {
        zip(arch.tensorShapes, tensors).map { ($0.name, Tensor(shape: $0.shape, floats: $1)) }
    }

    /// self − other, tensor by tensor.
    public func subtracting(_ other: ModelWeights) -> ModelWeights {
        ModelWeights(
            arch: arch,
            tensors: zip(tensors, other.tensors).map { a, b in
                zip(a, b).map { $0 - $1 }
            })
    }

    /// self + other, tensor by tensor.
    public func adding(_ other: ModelWeights) -> ModelWeights {
        ModelWeights(
            arch: arch,
            tensors: zip(tensors, other.tensors).map { a, b in
                zip(a, b).map { $0 + $1 }
            })
    }
}

/// The weights a collector was about to sign would not verify at a site;
/// nothing was signed. The merge's per-bundle checks should have refused
/// the input that caused it, so this is a last line of defence.
public struct GenerationCheckError: Error, Sendable, ReasonCoded, CustomStringConvertible {
    public let reason: String
    public let underlying: String
    public var code: String { "merge.unverifiable" }
    init(reason: String, code: String) { self.reason = reason; self.underlying = code }
    public var description: String {
        "the new generation would not verify at the sites (\(underlying): \(reason)); nothing was signed"
    }
}

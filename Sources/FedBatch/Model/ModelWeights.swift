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
    public var named: [(name: String, tensor: Tensor)] {
        zip(zip(arch.tensorShapes, arch.dtypes), tensors).map { spec, values in
            (spec.0.name, spec.1 == .f32 ? Tensor(shape: spec.0.shape, floats: values) : try! Tensor(shape: spec.0.shape, dtype: spec.1, values: values))
        }
    }

    /// The same tensors as F32, whatever the model pins: an update's delta
    /// (a counter's increment is a float like any other delta).
    public var namedF32: [(name: String, tensor: Tensor)] {
        zip(arch.tensorShapes, tensors).map { ($0.name, Tensor(shape: $0.shape, floats: $1)) }
    }

    /// self − other, tensor by tensor.
    public func subtracting(_ other: ModelWeights) -> ModelWeights {
        ModelWeights(arch: arch, tensors: zip(tensors, other.tensors).map { a, b in
            [Float](unsafeUninitializedCapacity: a.count) { out, n in
                for i in 0..<a.count { out[i] = a[i] - b[i] }
                n = a.count
            }
        })
    }

    /// self + other, tensor by tensor.
    public func adding(_ other: ModelWeights) -> ModelWeights {
        ModelWeights(arch: arch, tensors: zip(tensors, other.tensors).map { a, b in
            [Float](unsafeUninitializedCapacity: a.count) { out, n in
                for i in 0..<a.count { out[i] = a[i] + b[i] }
                n = a.count
            }
        })
    }
}

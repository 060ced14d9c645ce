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

    /// Named F32 tensors, ready for `SafetensorsWriter`.
    public var named: [(name: String, tensor: Tensor)] {
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

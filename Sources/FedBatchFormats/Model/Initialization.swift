import FedBatchNative
import Foundation

extension ModelArchitecture {
    /// Seeded initial weights with PyTorch's defaults for `nn.Linear`:
    /// weight and bias both uniform in ±1/√fan_in (kaiming_uniform with
    /// a = √5 reduces to that bound). Same seed, same bits.
    public func initialWeights(seed: UInt64) -> [(name: String, tensor: Tensor)] {
        precondition(isBuiltIn, "a tensors: model starts from given weights")
        var rng = SeededRandom(seed: seed)
        return tensorShapes.map { name, shape in
            let fanIn = widths[(Int(name.split(separator: ".")[0])! / 2)]
            let bound = 1 / Float(fanIn).squareRoot()
            let n = elementCount(shape)!
            let values = (0..<n).map { _ in rng.uniform(-bound, bound) }
            return (name, Tensor(shape: shape, floats: values))
        }
    }

    /// Weights from a safetensors file, checked against this architecture
    /// and widened to F32 (a `tensors:` model keeps every pinned dtype), in
    /// the model's order.
    public func loadWeights(path: String) throws -> [(name: String, tensor: Tensor)] {
        let file = try SafetensorsFile.open(path: path)
        try check(file)
        if kind == .tensors { return tensorShapes.map { name, _ in (name, file.tensor(name)!) } }
        return try tensorShapes.map { name, _ in (name, try file.tensor(name)!.converted(to: .f32)) }
    }
}

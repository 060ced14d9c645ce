import Foundation

/// Federated averaging (McMahan et al., 2017) over update deltas:
///
///     new = base + η · Σ wᵢ·Δᵢ / Σ wᵢ
///
/// with wᵢ the bundle's example count (capped). Deltas are added one bundle
/// at a time into float64 sums, so memory does not grow with the number of
/// bundles, and the result is rounded to float32 once at the end. Callers
/// add bundles in a canonical order (by digest): float64 addition is not
/// associative, and a fixed order makes the result byte-identical.
public struct FedAvg: Sendable {
    public let serverLearningRate: Double
    private var sums: [[Double]]
    public private(set) var totalWeight: Double = 0
    public private(set) var count = 0

    public init(arch: ModelArchitecture, serverLearningRate: Double = 1) {
        self.serverLearningRate = serverLearningRate
        sums = arch.tensorShapes.map { [Double](repeating: 0, count: elementCount($0.shape)!) }
    }

    /// Adds one delta (checked against the architecture beforehand).
    public mutating func add(delta file: SafetensorsFile, arch: ModelArchitecture, weight: Double) {
        for (t, shape) in arch.tensorShapes.enumerated() {
            let values = file.tensor(shape.name)!.floats()
            sums[t].withUnsafeMutableBufferPointer { s in
                values.withUnsafeBufferPointer { v in
                    for i in 0..<v.count { s[i] += weight * Double(v[i]) }
                }
            }
        }
        totalWeight += weight
        count += 1
    }

    /// The new weights.
    public func apply(to base: ModelWeights) -> ModelWeights {
        guard totalWeight > 0 else { return base }
        let scale = serverLearningRate / totalWeight
        return ModelWeights(arch: base.arch, tensors: zip(base.tensors, sums).map { b, s in
            (0..<b.count).map { Float(Double(b[$0]) + scale * s[$0]) }
        })
    }
}

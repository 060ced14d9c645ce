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
public final class FedAvg {
    public let serverLearningRate: Double
    /// One float64 sum per tensor, outside the Swift heap (see LargeBuffer).
    private var sums: [UnsafeMutableBufferPointer<Double>]
    public private(set) var totalWeight: Double = 0
    public private(set) var count = 0

    public init(arch: ModelArchitecture, serverLearningRate: Double = 1) {
        self.serverLearningRate = serverLearningRate
        sums = arch.tensorShapes.map { LargeBuffer.doubles(count: elementCount($0.shape)!) }
    }

    deinit { sums.forEach(LargeBuffer.release) }

    /// Adds one delta (checked against the architecture beforehand).
    public func add(delta file: SafetensorsFile, arch: ModelArchitecture, weight: Double) {
        for (t, shape) in arch.tensorShapes.enumerated() {
            let entry = file.entry(shape.name)!
            do {
                let s = sums[t]
                if entry.dtype == .f32 {
                    // The common case, read in place: no intermediate array.
                    file.withBytes(of: entry) { raw in
                        for i in 0..<s.count {
                            s[i] += weight * Double(Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))))
                        }
                    }
                } else {
                    let values = file.tensor(shape.name)!.floats()
                    for i in 0..<s.count { s[i] += weight * Double(values[i]) }
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
            [Float](unsafeUninitializedCapacity: b.count) { out, n in
                for i in 0..<b.count { out[i] = Float(Double(b[i]) + scale * s[i]) }
                n = b.count
            }
        })
    }
}

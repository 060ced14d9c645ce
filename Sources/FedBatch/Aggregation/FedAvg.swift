import Foundation

/// Federated averaging (McMahan et al., 2017) over update deltas:
///
///     new = base + η · Σ wᵢ·sᵢ·Δᵢ / Σ wᵢ
///
/// with wᵢ the bundle's example count (capped) and sᵢ its staleness factor
/// (1 for an update trained on the current generation; see
/// `StalenessFunction`). Each Δᵢ is the update against its own base.
///
/// Integer tensors of a `tensors:` model (BatchNorm's num_batches_tracked)
/// are not averaged: a mean of counters is not a count, and PyTorch's
/// `load_state_dict` wants an integer back. The new value is the base plus
/// the largest increment any included bundle reports (rounded to an
/// integer), that is, the count of the site that went furthest; it never
/// decreases, as a counter should not. Deltas are added one bundle
/// at a time into float64 sums, so memory does not grow with the number of
/// bundles, and the result is rounded to float32 once at the end. Callers
/// add bundles in a canonical order (by digest): float64 addition is not
/// associative, and a fixed order makes the result byte-identical.
public final class FedAvg: AggregationStrategy {
    public static let name = "fedavg"
    public static let access = StrategyAccess.streaming
    public let serverLearningRate: Double
    /// Weights are min(num_examples, weight_cap): one site claiming a huge
    /// count cannot outweigh the rest by more than the cap allows.
    public let weightCap: Int64
    private let arch: ModelArchitecture
    /// One float64 sum per tensor, outside the Swift heap (see LargeBuffer).
    private let sums: [NumericBuffer<Double>]
    /// For integer tensors, the largest rounded increment seen so far.
    private var maxIncrements: [Int: [Double]] = [:]
    public private(set) var totalWeight: Double = 0
    public private(set) var count = 0
    /// Central differential privacy: when set, the mean is the sum over the
    /// fixed denominator m plus Gaussian noise (see GaussianNoise).
    public private(set) var noise: GaussianNoise?

    /// Makes this merge private. Integer tensors are refused: their
    /// largest-increment rule would pass without noise.
    public func privatize(with noise: GaussianNoise) throws {
        if let t = arch.dtypes.firstIndex(where: { !$0.isFloatingPoint }) { throw PrivacyError.integerTensors(arch.tensorShapes[t].name) }
        self.noise = noise
    }

    public init(arch: ModelArchitecture, serverLearningRate: Double = 1, weightCap: Int64 = 100_000_000) {
        self.serverLearningRate = serverLearningRate
        self.weightCap = weightCap
        self.arch = arch
        sums = zip(arch.tensorShapes, arch.dtypes).map { NumericBuffer<Double>(count: $1.isFloatingPoint ? elementCount($0.shape)! : 0) }
        for (t, dtype) in arch.dtypes.enumerated() where !dtype.isFloatingPoint {
            maxIncrements[t] = [Double](repeating: -.infinity, count: elementCount(arch.tensorShapes[t].shape)!)
        }
    }

    /// Refuses a delta that would make the model non-finite.
    ///
    /// The new weights are a weighted mean of `base + η·Δᵢ` over the
    /// bundles, so if every bundle's own `base + η·Δᵢ` fits in float32, so
    /// does the result (for η ≤ 1; `apply` checks again regardless). A
    /// finite but enormous delta (3e38) is thus refused here, with the
    /// bundle named, instead of turning into Inf in a signed generation.
    public var parameters: [String: Double] { ["server_lr": serverLearningRate, "weight_cap": Double(weightCap)] }

    public func weight(examples: Int64) -> Double { Double(min(examples, weightCap)) }

    public func check(delta: DecodedDelta, base: ModelWeights) throws {
        try Self.checkStaysFinite(delta: delta, base: base, serverLearningRate: serverLearningRate)
    }

    /// Refuses a delta for which `base + lr·Δ` leaves float32 somewhere:
    /// every rule here yields, coordinate by coordinate, a value within the
    /// range of the bundles' own (for lr ≤ 1), so this bounds the result.
    static func checkStaysFinite(delta: DecodedDelta, base: ModelWeights, serverLearningRate lr: Double) throws {
        let limit = Double(Float.greatestFiniteMagnitude)
        for (t, shape) in base.arch.tensorShapes.enumerated() {
            let b = base.tensors[t]
            let bad = delta.withTensor(t) { d in (0..<b.count).first { !(abs(Double(b[$0]) + lr * Double(d[$0])) <= limit) } }
            if let bad { throw AggregationError.nonFiniteResult(tensor: shape.name, index: bad) }
        }
    }

    /// Adds one delta (checked against the architecture beforehand).
    public func add(delta: DecodedDelta, weight: Double, scale: Double = 1) {
        let factor = weight * scale
        for t in sums.indices {
            if var m = maxIncrements[t] {
                delta.withTensor(t) { d in
                    for i in 0..<m.count { m[i] = max(m[i], Double(d[i]).rounded()) }
                }
                maxIncrements[t] = m
                continue
            }
            let s = sums[t].buffer
            delta.withTensor(t) { d in
                for i in 0..<s.count { s[i] += factor * Double(d[i]) }
            }
        }
        totalWeight += weight
        count += 1
    }

    /// Σ wᵢ·sᵢ·Δᵢ / Σ wᵢ per tensor in float64 (for integer tensors, the
    /// largest rounded increment): the pseudo-gradient a server optimiser
    /// steps along.
    public func meanDelta() -> [[Double]] {
        sums.indices.map { t in
            if let m = maxIncrements[t] { return m.map { $0.isFinite ? $0 : 0 } }
            let s = sums[t].buffer
            if let noise { return s.map { $0 / noise.denominator + noise.next() } }
            return totalWeight > 0 ? s.map { $0 / totalWeight } : [Double](repeating: 0, count: s.count)
        }
    }

    /// The new weights; refuses to return anything non-finite, so that no
    /// such model is ever signed.
    public func finish(base: ModelWeights) throws -> ModelWeights {
        guard totalWeight > 0 else { return base }
        let lr = serverLearningRate
        let scale = lr / (noise?.denominator ?? totalWeight)
        let next = ModelWeights(arch: base.arch, tensors: zip(base.tensors, sums.map(\.buffer)).enumerated().map { t, pair in
            let (b, s) = pair
            if let m = maxIncrements[t] { return zip(b, m).map { Float(Double($0) + $1) } }
            return [Float](unsafeUninitializedCapacity: b.count) { out, n in
                if let noise {
                    for i in 0..<b.count { out[i] = Float(Double(b[i]) + scale * s[i] + lr * noise.next()) }
                } else {
                    for i in 0..<b.count { out[i] = Float(Double(b[i]) + scale * s[i]) }
                }
                n = b.count
            }
        })
        for (t, shape) in base.arch.tensorShapes.enumerated() {
            if let i = next.tensors[t].firstIndex(where: { !$0.isFinite }) { throw AggregationError.nonFiniteResult(tensor: shape.name, index: i) }
        }
        return next
    }
}

/// Why aggregation refused.
public enum AggregationError: Error, Equatable, Sendable, ReasonCoded {
    case nonFiniteResult(tensor: String, index: Int)

    public var code: String { "aggregation.non-finite" }

    public var description: String {
        switch self {
        case let .nonFiniteResult(tensor, index):
            return "with this update, element \(index) of tensor \"\(tensor)\" would no longer be a finite float32: the update is too large to merge"
        }
    }
}

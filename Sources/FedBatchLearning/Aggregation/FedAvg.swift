import FedBatchFormats
import FedBatchNative
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
/// at a time into exact fixed-point sums (see FixedPoint), so memory does
/// not grow with the number of bundles, the order of the bundles does not
/// matter, and a regional collector's partial sums add up to exactly what
/// one collector would have summed. The result is rounded to float64 once,
/// then to float32.
public final class FedAvg: AggregationStrategy, PartialAggregating {
    public static let name = "fedavg"
    public static let access = StrategyAccess.streaming
    public let serverLearningRate: Double
    /// Weights are min(num_examples, weight_cap): one site claiming a huge
    /// count cannot outweigh the rest by more than the cap allows.
    public let weightCap: Int64
    private let arch: ModelArchitecture
    /// One exact sum per float tensor (nil for integer tensors), outside
    /// the Swift heap (see LargeBuffer); made at the first addition, so that
    /// a streaming merge, which sums a chunk at a time, never holds them.
    private lazy var sums: [NumericBuffer<Int128>?] = zip(arch.tensorShapes, arch.dtypes).map {
        $1.isFloatingPoint ? NumericBuffer<Int128>(count: elementCount($0.shape)!) : nil
    }
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
        if let t = arch.dtypes.firstIndex(where: { !$0.isFloatingPoint }) {
            throw PrivacyError.integerTensors(arch.tensorShapes[t].name)
        }
        self.noise = noise
    }

    public init(arch: ModelArchitecture, serverLearningRate: Double = 1, weightCap: Int64 = 100_000_000) {
        self.serverLearningRate = serverLearningRate
        self.weightCap = weightCap
        self.arch = arch
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
            if let range = integerRange(base.arch.dtypes[t]) {
                // An integer tensor moves by the rounded increment, unscaled
                // (see FedAvg); every rule's result lies between the base
                // and some bundle's base + increment, so checking each
                // bundle bounds the result.
                let bad = delta.withTensor(t) { d in
                    (0..<b.count).first { !range.contains(Double(b[$0]) + Double(d[$0]).rounded()) }
                }
                if let bad {
                    throw AggregationError.integerRange(tensor: shape.name, index: bad, dtype: base.arch.dtypes[t])
                }
                continue
            }
            let bad = delta.withTensor(t) { d in
                (0..<b.count).first { !(abs(Double(b[$0]) + lr * Double(d[$0])) <= limit) }
            }
            if let bad { throw AggregationError.nonFiniteResult(tensor: shape.name, index: bad) }
        }
    }

    /// `checkStaysFinite` on a plain delta (tests and the fuzz target).
    public static func checkDelta(_ delta: ModelWeights, base: ModelWeights, serverLearningRate lr: Double = 1) throws {
        let stored = try SafetensorsFile(bytes: SafetensorsWriter.encode(delta.namedF32))
        try checkStaysFinite(
            delta: DecodedDelta(arch: delta.arch, stored: stored, codec: FP32Codec()), base: base,
            serverLearningRate: lr)
    }

    /// The values an integer tensor of `dtype` may take in a generation: its
    /// dtype's range, and below 2^24 in magnitude, where float32 carries
    /// integers exactly (`ModelArchitecture.maxIntegerMagnitude`). nil for
    /// floating-point tensors. A NaN is in no range.
    static func integerRange(_ dtype: DType) -> ClosedRange<Double>? {
        guard let r = dtype.integerRange else { return nil }
        let m = Double(ModelArchitecture.maxIntegerMagnitude - 1)
        return max(Double(r.lowerBound), -m)...min(Double(r.upperBound), m)
    }

    /// The same rule for a regional collector's largest increments.
    package static func checkIncrements(_ increments: [Int: [Double]], base: ModelWeights) throws {
        for (t, m) in increments {
            guard let range = integerRange(base.arch.dtypes[t]) else { continue }
            let b = base.tensors[t]
            // -inf marks "no bundle reported an increment": no change.
            if let bad = m.indices.first(where: { m[$0] != -.infinity && !range.contains(Double(b[$0]) + m[$0]) }) {
                throw AggregationError.integerRange(
                    tensor: base.arch.tensorShapes[t].name, index: bad, dtype: base.arch.dtypes[t])
            }
        }
    }

    /// Adds one delta (checked against the architecture beforehand). A
    /// term or sum out of the fixed-point range refuses the delta and
    /// leaves the sums as they were.
    public func add(delta: DecodedDelta, weight: Double, scale: Double = 1) throws {
        let factor = weight * scale
        var outOfRange = false, overflow = false
        var touched: [Int] = []
        for t in sums.indices {
            guard let s = sums[t] else { continue }
            delta.withTensor(t) { d in
                for i in 0..<s.count {
                    let (r, o) = s[i].addingReportingOverflow(
                        FixedPoint.fixed(factor * Double(d[i]), &outOfRange))
                    s[i] = r
                    overflow = overflow || o
                }
            }
            touched.append(t)
            if outOfRange || overflow { break }
        }
        if outOfRange || overflow {
            var ignored = false
            for t in touched {
                let s = sums[t]!
                delta.withTensor(t) { d in
                    for i in 0..<s.count {
                        s[i] = s[i] &- FixedPoint.fixed(factor * Double(d[i]), &ignored)
                    }
                }
            }
            throw AggregationError.outOfRange(tensor: arch.tensorShapes[touched.last!].name, sum: overflow)
        }
        for (t, var m) in maxIncrements {
            delta.withTensor(t) { d in
                for i in 0..<m.count { m[i] = max(m[i], Double(d[i]).rounded()) }
            }
            maxIncrements[t] = m
        }
        totalWeight += weight
        count += 1
    }

    /// Adds a regional collector's sums: the same as adding its bundles.
    public func add(partial p: PartialAggregate) throws {
        var overflow = false
        var touched: [Int] = []
        for t in sums.indices {
            guard let s = sums[t], let q = p.sums[t] else { continue }
            for i in 0..<s.count {
                let (r, o) = s[i].addingReportingOverflow(q[i])
                s[i] = r
                overflow = overflow || o
            }
            touched.append(t)
            if overflow { break }
        }
        if overflow {
            for t in touched {
                let s = sums[t]!, q = p.sums[t]!
                for i in 0..<s.count { s[i] = s[i] &- q[i] }
            }
            throw AggregationError.outOfRange(tensor: arch.tensorShapes[touched.last!].name, sum: true)
        }
        for (t, var m) in maxIncrements {
            if let q = p.maxIncrements[t] { for i in 0..<m.count { m[i] = max(m[i], q[i]) } }
            maxIncrements[t] = m
        }
        totalWeight += p.totalWeight
        count += p.count
    }

    public func partial() -> PartialAggregate {
        PartialAggregate(sums: sums, maxIncrements: maxIncrements, totalWeight: totalWeight, count: count)
    }

    /// Σ wᵢ·sᵢ·Δᵢ / Σ wᵢ per tensor in float64 (for integer tensors, the
    /// largest rounded increment): the pseudo-gradient a server optimiser
    /// steps along.
    public func meanDelta() -> [[Double]] {
        sums.indices.map { t in
            if let m = maxIncrements[t] { return m.map { $0.isFinite ? $0 : 0 } }
            let s = sums[t]!
            if let noise { return s.map { FixedPoint.double($0) / noise.denominator + noise.next() } }
            return totalWeight > 0
                ? s.map { FixedPoint.double($0) / totalWeight } : [Double](repeating: 0, count: s.count)
        }
    }

    /// The new weights; refuses to return anything non-finite, so that no
    /// such model is ever signed.
    public func finish(base: ModelWeights) throws -> ModelWeights {
        guard totalWeight > 0 else { return base }
        let lr = serverLearningRate
        let scale = lr / (noise?.denominator ?? totalWeight)
        let next = ModelWeights(
            arch: base.arch,
            tensors: base.tensors.enumerated().map { t, b in
                if let m = maxIncrements[t] { return zip(b, m).map { Float(Double($0) + ($1.isFinite ? $1 : 0)) } }
                let s = sums[t]!
                if let noise {
                    return b.indices.map { i in
                        Float(Double(b[i]) + scale * FixedPoint.double(s[i]) + lr * noise.next())
                    }
                }
                return b.indices.map { i in Float(Double(b[i]) + scale * FixedPoint.double(s[i])) }
            })
        for (t, shape) in base.arch.tensorShapes.enumerated() {
            if let i = next.tensors[t].firstIndex(where: { !$0.isFinite }) {
                throw AggregationError.nonFiniteResult(tensor: shape.name, index: i)
            }
        }
        return next
    }
}

/// Why aggregation refused.
public enum AggregationError: Error, Equatable, Sendable, ReasonCoded {
    case nonFiniteResult(tensor: String, index: Int)
    case outOfRange(tensor: String, sum: Bool)
    case integerRange(tensor: String, index: Int, dtype: DType)

    public var code: String {
        switch self {
        case .integerRange: return "aggregation.integer-range"
        case .nonFiniteResult: return "aggregation.non-finite"
        case .outOfRange: return "aggregation.out-of-range"
        }
    }

    public var description: String {
        switch self {
        case let .integerRange(tensor, index, dtype):
            return
                "with this update, element \(index) of integer tensor \"\(tensor)\" (\(dtype.rawValue)) would leave "
                + "the range a generation may hold (the dtype's, and below 2^24 in magnitude)"
        case let .outOfRange(tensor, sum):
            return sum
                ? "with this update the sum of tensor \"\(tensor)\" would pass 1.8e19, beyond the range fedbatch "
                    + "sums exactly"
                : "an element of tensor \"\(tensor)\" times its weight is 4.6e18 or more, beyond the range fedbatch "
                    + "sums exactly"
        case let .nonFiniteResult(tensor, index):
            return
                "with this update, element \(index) of tensor \"\(tensor)\" would no longer be a finite float32: the "
                + "update is too large to merge"
        }
    }
}

extension FedAvg: StreamingAggregation {
    public func beginStreaming(inputs: [StreamingMerge.Input], state: (any TensorSource)?) throws {
        if let t = arch.dtypes.firstIndex(where: { !$0.isFloatingPoint }) {
            throw StreamingError.integerTensor(arch.tensorShapes[t].name)
        }
        // The same additions, in the same order, as `add` makes.
        for input in inputs { totalWeight += input.weight }
        count += inputs.count
    }

    public func finish(
        tensor t: Int, elements range: Range<Int>, sums: NumericBuffer<Int128>, base b: NumericBuffer<Float>,
        into out: NumericBuffer<Float>, moments: (m: NumericBuffer<Float>, v: NumericBuffer<Float>)?
    ) throws {
        guard totalWeight > 0 else {
            for i in 0..<range.count { out[i] = b[i] }
            return
        }
        // `finish`'s formula, element by element.
        let lr = serverLearningRate
        let scale = lr / (noise?.denominator ?? totalWeight)
        if let noise {
            for i in 0..<range.count {
                out[i] = Float(Double(b[i]) + scale * FixedPoint.double(sums[i]) + lr * noise.next())
            }
        } else {
            for i in 0..<range.count { out[i] = Float(Double(b[i]) + scale * FixedPoint.double(sums[i])) }
        }
        if let i = (0..<range.count).first(where: { !out[$0].isFinite }) {
            throw AggregationError.nonFiniteResult(tensor: arch.tensorShapes[t].name, index: range.lowerBound + i)
        }
    }

    public var streamedState: StreamedState? { nil }
}

/// Why a merge cannot stream.
public enum StreamingError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    case integerTensor(String)
    public var code: String { "merge.streaming" }
    public var description: String {
        switch self {
        case .integerTensor(let name):
            return
                "the model's integer tensor \"\(name)\" follows the largest-increment rule, which a streaming merge "
                + "does not implement; this merge holds the model in memory"
        }
    }
}

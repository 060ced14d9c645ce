import Dispatch
import FedBatchFormats
import FedBatchNative
import Foundation

/// Aggregation rules that a few compromised sites cannot steer, because no
/// single update moves the result far: the coordinate-wise median and
/// trimmed mean, and Krum, Multi-Krum and Bulyan, which pick the updates
/// closest to their neighbours. Their results follow Flower's
/// `aggregate_median`, `aggregate_trimmed_avg`, `aggregate_krum` and
/// `aggregate_bulyan`, which the tests run as the oracle:
///
///     new = base + η · rule(s₁·Δ₁, …, sₙ·Δₙ)
///
/// with sᵢ each update's staleness factor times its clipping factor.
/// Flower applies the rule to the clients' weights; fedbatch applies it to
/// the deltas, which for updates on one base is the same thing (each rule
/// commutes with adding a constant) and for stale updates compares what
/// each site changed rather than where it started. Example counts do not
/// weigh in, except in Multi-Krum's final average (as in Flower).
///
/// Every bundle is needed at each coordinate, so `add` spills each delta
/// to a scratch file (`DeltaSpill`) and `finish` makes passes over
/// coordinate ranges: memory is about `chunk_mb` plus the model, never N
/// models. Integer tensors (BatchNorm's counters) take the same rule,
/// rounded to an integer.
public class RobustStrategy: AggregationStrategy {
    public class var name: String { "robust" }
    public static var access: StrategyAccess { .chunkedPasses }

    let arch: ModelArchitecture
    let eta: Double
    let weightCap: Int64
    /// Bytes the chunked passes may use for bundle values.
    let budget: Double
    /// Where the spill goes; the collector points it at the home, whose file
    /// system has room for the bundles it keeps anyway.
    public var scratchDirectory = NSTemporaryDirectory()
    private var spill: DeltaSpill?
    /// A failed spill write (a full disk); reported by `finish`, since
    /// `add` cannot throw.
    private var spillFailure: Error?
    /// The rows a selecting rule used (spill rows are in the order added).
    public private(set) var selectedPositions: [Int]?

    required init(arch: ModelArchitecture, parameters p: [String: Double]) {
        self.arch = arch
        eta = p["server_lr"] ?? 1
        weightCap = Strategies.count(p["weight_cap"] ?? 1e8)
        budget = (p["chunk_mb"] ?? 64) * 1_048_576
    }

    /// The rule's own parameters, for the manifest.
    var ruleParameters: [String: Double] { [:] }
    public var parameters: [String: Double] { ruleParameters.merging(["server_lr": eta]) { a, _ in a } }

    public func weight(examples: Int64) -> Double { Double(min(examples, weightCap)) }

    public func check(delta: DecodedDelta, base: ModelWeights) throws {
        try FedAvg.checkStaysFinite(delta: delta, base: base, serverLearningRate: eta)
    }

    public func add(delta: DecodedDelta, weight: Double, scale: Double) throws {
        guard spillFailure == nil else { return }
        do {
            if spill == nil { spill = try DeltaSpill(arch: arch, directory: scratchDirectory) }
            try spill!.append(delta, weight: weight, scale: scale)
        } catch {
            spillFailure = error
        }
    }

    /// Why this rule cannot run on `count` bundles, or nil.
    public func refusal(count: Int) -> String? { nil }
    public func degeneracy(count: Int) -> String? { nil }

    /// The rows (in spill order) the per-coordinate rule reads; all of them
    /// unless a selection (Krum) comes first.
    func selectRows(_ spill: DeltaSpill) throws -> [Int] { Array(0..<spill.count) }

    /// The rule at one coordinate: `values` are the selected rows' scaled
    /// values there (the rule may reorder them), `weights` their example
    /// weights in row order.
    func combine(_ values: inout [Double], weights: [Double]) -> Double { fatalError("subclass") }

    public func finish(base: ModelWeights) throws -> ModelWeights {
        if let spillFailure { throw spillFailure }
        guard let spill, spill.count > 0 else { return base }
        if let why = refusal(count: spill.count) { throw StrategyError.tooFewBundles(Self.name, why) }
        let rows = try selectRows(spill)
        selectedPositions = rows.count < spill.count ? rows : nil
        let scales = rows.map { spill.scales[$0] }
        let weights = rows.map { spill.weights[$0] }
        var out = base.tensors
        let integer = arch.dtypes.map { !$0.isFloatingPoint }
        let eta = self.eta
        try spill.forEachChunk(rows: rows, budget: budget) { start, length, values in
            let r = NumericBuffer<Double>(count: length)
            // Two workers on disjoint halves; each coordinate is computed the
            // same way whoever computes it, so the result does not depend on
            // the split.
            let n = rows.count
            let parts = length >= 8192 ? 2 : 1
            Parallel.parts(parts) { part in
                var column = [Double](repeating: 0, count: n)
                let lo = length * part / parts, hi = length * (part + 1) / parts
                for j in lo..<hi {
                    for i in 0..<n { column[i] = scales[i] * Double(values[i * length + j]) }
                    r[j] = self.combine(&column, weights: weights)
                }
            }
            for s in spill.segments(start: start, length: length) {
                for k in 0..<s.count {
                    let v = Double(out[s.tensor][s.local + k]) + eta * r[s.position + k]
                    out[s.tensor][s.local + k] = Float(integer[s.tensor] ? v.rounded() : v)
                }
            }
        }
        for (t, shape) in arch.tensorShapes.enumerated() {
            if let i = out[t].firstIndex(where: { !$0.isFinite }) {
                throw AggregationError.nonFiniteResult(tensor: shape.name, index: i)
            }
        }
        return ModelWeights(arch: base.arch, tensors: out)
    }

    /// The median of `values`, sorting them in place: the middle value, or
    /// the mean of the two middle ones (as numpy's median).
    static func median(sorting values: inout [Double]) -> Double {
        values.sort()
        let n = values.count
        return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2
    }
}

/// Coordinate-wise median (Yin et al., 2018; Flower's FedMedian).
public final class Median: RobustStrategy {
    public override class var name: String { "median" }

    public override func degeneracy(count: Int) -> String? {
        count <= 2
            ? "the median of \(count) bundle\(count == 1 ? "" : "s") is their mean: one attacker among them moves "
                + "the model as far as it likes"
            : nil
    }

    override func combine(_ values: inout [Double], weights: [Double]) -> Double {
        Self.median(sorting: &values)
    }
}

/// Coordinate-wise trimmed mean (Yin et al., 2018; Flower's FedTrimmedAvg):
/// at each coordinate, drop the ⌊trim·n⌋ smallest and largest values and
/// average the rest. `trim` defaults to Flower's 0.2.
public final class TrimmedMean: RobustStrategy {
    public override class var name: String { "trimmed-mean" }
    let trim: Double

    required init(arch: ModelArchitecture, parameters p: [String: Double]) {
        trim = p["trim"] ?? 0.2
        super.init(arch: arch, parameters: p)
    }

    override var ruleParameters: [String: Double] { ["trim": trim] }

    public override func degeneracy(count: Int) -> String? {
        Int(trim * Double(count)) == 0
            ? "trim = \(trim) cuts int(\(trim) × \(count)) = 0 values at each end of \(count) bundles: this is the "
                + "plain mean; raise trim or wait for more bundles"
            : nil
    }

    override func combine(_ values: inout [Double], weights: [Double]) -> Double {
        values.sort()
        let n = values.count
        // As scipy and Flower: the cut is int(trim · n), truncated.
        let cut = Int(trim * Double(n))
        var sum = 0.0
        for i in cut..<(n - cut) { sum += values[i] }
        return sum / Double(n - 2 * cut)
    }
}

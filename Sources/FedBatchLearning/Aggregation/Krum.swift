import Dispatch
import FedBatchFormats
import FedBatchNative
import Foundation

/// The pairwise squared distances between the spilled deltas (scaled),
/// from their Gram matrix G (Gᵢⱼ = ⟨xᵢ, xⱼ⟩) accumulated one chunk at a
/// time: ‖xᵢ − xⱼ‖² = Gᵢᵢ + Gⱼⱼ − 2Gᵢⱼ. Memory is N × chunk plus N².
///
/// The sums run in fixed blocks of `DeltaSpill.block` coordinates in a
/// fixed order, in plain float64 loops rather than BLAS, whose summation
/// order changes with the CPU's kernel: the distances, and so which
/// bundles Krum picks, are the same on every machine and for every chunk
/// size. The pairs are split between two workers, each pair always summed
/// by one of them in block order.
struct PairwiseDistances {
    let squared: [[Double]]

    init(_ spill: DeltaSpill, budget: Double) throws {
        let n = spill.count
        let pairs = (0..<n).flatMap { i in (i..<n).map { (i, $0) } }
        let gram = NumericBuffer<Double>(count: pairs.count)
        try spill.forEachChunk(rows: Array(0..<n), budget: budget) { _, length, values in
            // The hot loop of Krum (n² dot products over the whole model)
            // reads through raw pointers: four accumulators, no bounds
            // checks. i, j < n and k < length keep every read inside the
            // chunk's n × length values.
            let v = unsafe values.buffer
            Parallel.parts(2) { worker in
                var p = worker
                while p < pairs.count {
                    let (i, j) = pairs[p]
                    let x = unsafe v.baseAddress! + i * length, y = unsafe v.baseAddress! + j * length
                    var start = 0
                    while start < length {
                        let end = min(length, start + DeltaSpill.block)
                        var a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0
                        var k = start
                        while k + 4 <= end {
                            unsafe a0 += Double(x[k]) * Double(y[k])
                            unsafe a1 += Double(x[k + 1]) * Double(y[k + 1])
                            unsafe a2 += Double(x[k + 2]) * Double(y[k + 2])
                            unsafe a3 += Double(x[k + 3]) * Double(y[k + 3])
                            k += 4
                        }
                        while k < end { unsafe a0 += Double(x[k]) * Double(y[k]); k += 1 }
                        gram[p] += (a0 + a1) + (a2 + a3)
                        start = end
                    }
                    p += 2
                }
            }
        }
        var gm = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        for (p, (i, j)) in pairs.enumerated() {
            let v = gram[p] * spill.scales[i] * spill.scales[j]
            gm[i][j] = v
            gm[j][i] = v
        }
        var squared = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        for i in 0..<n {
            for j in 0..<n where i != j {
                let d: Double = gm[i][i] + gm[j][j] - 2 * gm[i][j]
                squared[i][j] = max(0, d)
            }
        }
        self.squared = squared
    }

    /// Krum's score of each of `candidates` among themselves, as Flower
    /// computes it: the sum of the squared distances to its
    /// max(1, n − f − 2) nearest others (the row's sorted distances,
    /// skipping the first, itself at 0).
    func krumScores(_ candidates: [Int], byzantine f: Int) -> [Double] {
        let closest = max(1, candidates.count - f - 2)
        return candidates.map { i in
            let sorted = candidates.map { squared[i][$0] }.sorted()
            return sorted.dropFirst().prefix(closest).reduce(0, +)
        }
    }

    /// The position in `candidates` of the lowest score, the first on a tie.
    func krumChoice(_ candidates: [Int], byzantine f: Int) -> Int {
        let scores = krumScores(candidates, byzantine: f)
        return scores.indices.min { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }!
    }
}

/// Krum (Blanchard et al., 2017): the one update whose n − f − 2 nearest
/// neighbours are closest, with f the number of Byzantine sites tolerated
/// (`byzantine`, Flower's default 0). Needs n ≥ 2f + 3.
public class Krum: RobustStrategy {
    public override class var name: String { "krum" }
    let byzantine: Int

    required init(arch: ModelArchitecture, parameters p: [String: Double]) {
        byzantine = Int(p["byzantine"] ?? 0)
        super.init(arch: arch, parameters: p)
    }

    override var ruleParameters: [String: Double] { ["byzantine": Double(byzantine)] }

    public override func refusal(count: Int) -> String? {
        count >= 2 * byzantine + 3
            ? nil
            : "\(Self.name) with byzantine = \(byzantine) needs at least \(2 * byzantine + 3) bundles (n ≥ 2f + "
                + "3); \(count) passed"
    }

    override func selectRows(_ spill: DeltaSpill) throws -> [Int] {
        let distances = try PairwiseDistances(spill, budget: budget)
        let all = Array(0..<spill.count)
        return [all[distances.krumChoice(all, byzantine: byzantine)]]
    }

    override func combine(_ values: inout [Double], weights: [Double]) -> Double {
        values[0]
    }
}

/// Multi-Krum: the `keep` updates with the lowest Krum scores, averaged
/// with their example weights (Flower's `aggregate_krum` with to_keep > 0).
/// `keep` = 0, the default, means n − f, as Blanchard et al. suggest.
public final class MultiKrum: Krum {
    public override class var name: String { "multikrum" }
    let keep: Int

    required init(arch: ModelArchitecture, parameters p: [String: Double]) {
        keep = Int(p["keep"] ?? 0)
        super.init(arch: arch, parameters: p)
    }

    override var ruleParameters: [String: Double] { ["byzantine": Double(byzantine), "keep": Double(keep)] }

    public override func refusal(count: Int) -> String? {
        if let why = super.refusal(count: count) { return why }
        return keep <= count ? nil : "multikrum with keep = \(keep) needs at least \(keep) bundles; \(count) passed"
    }

    public override func degeneracy(count: Int) -> String? {
        let kept = keep > 0 ? keep : count - byzantine
        return kept >= count
            ? "multikrum with byzantine = \(byzantine) and keep = \(keep) keeps all \(count) bundles: this is the "
                + "plain mean, with no protection; set byzantine to the number of attackers to tolerate"
            : nil
    }

    override func selectRows(_ spill: DeltaSpill) throws -> [Int] {
        let distances = try PairwiseDistances(spill, budget: budget)
        let all = Array(0..<spill.count)
        let scores = distances.krumScores(all, byzantine: byzantine)
        let m = keep > 0 ? keep : spill.count - byzantine
        return Array(all.sorted { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }.prefix(m)).sorted()
    }

    override func combine(_ values: inout [Double], weights: [Double]) -> Double {
        var sum = 0.0, total = 0.0
        for i in 0..<values.count {
            sum += weights[i] * values[i]
            total += weights[i]
        }
        return sum / total
    }
}

/// Bulyan (El Mhamdi et al., 2018), as Flower's `aggregate_bulyan` with
/// Krum as its first rule: pick θ = n − 2f updates by Krum one at a time
/// (each pick leaves the pool), then at each coordinate average the
/// β = θ − 2f picked values closest to their median. Needs n ≥ 4f + 3.
/// It shares Krum's parameter f and its distances, hence the subclass.
public final class Bulyan: Krum {
    public override class var name: String { "bulyan" }
    private var beta = 0

    public override func refusal(count: Int) -> String? {
        count >= 4 * byzantine + 3
            ? nil
            : "bulyan with byzantine = \(byzantine) needs at least \(4 * byzantine + 3) bundles (n ≥ 4f + "
                + "3); \(count) passed"
    }

    override func selectRows(_ spill: DeltaSpill) throws -> [Int] {
        let distances = try PairwiseDistances(spill, budget: budget)
        var pool = Array(0..<spill.count)
        var picked: [Int] = []
        let theta = spill.count - 2 * byzantine
        for _ in 0..<theta { picked.append(pool.remove(at: distances.krumChoice(pool, byzantine: byzantine))) }
        beta = theta - 2 * byzantine
        return picked.sorted()
    }

    /// The β values closest to the median: after sorting they form one
    /// run around the middle, grown one value at a time toward the closer
    /// side (the lower on a tie).
    override func combine(_ values: inout [Double], weights: [Double]) -> Double {
        let median = Self.median(sorting: &values)
        let n = values.count
        // Start from the value nearest the median (for even n, the lower middle).
        var lo = (n - 1) / 2, hi = lo + 1
        if n % 2 == 0, abs(values[n / 2] - median) < abs(values[lo] - median) { lo = n / 2; hi = lo + 1 }
        while hi - lo < beta {
            if lo == 0 {
                hi += 1
            } else if hi == n {
                lo -= 1
            } else if abs(values[lo - 1] - median) <= abs(values[hi] - median) {
                lo -= 1
            } else {
                hi += 1
            }
        }
        var sum = 0.0
        for i in lo..<hi { sum += values[i] }
        return sum / Double(beta)
    }
}

import FedBatchFormats
import FedBatchNative
import Foundation

/// Server optimisers on the FedAvg pseudo-gradient (Reddi et al., "Adaptive
/// Federated Optimization", 2021), with the update rules and defaults of
/// Flower's strategy classes, which the tests run as the oracle:
///
///     Δ      = Σ wᵢ·sᵢ·Δᵢ / Σ wᵢ            (FedAvg's mean delta, as `fedavg`)
///     fedavgm:    m = μ·m + Δ (m = Δ at the first step);      x += η·m
///     fedadagrad: m = β₁·m + (1−β₁)·Δ;  v = v + Δ²;           x += η·m / (√v + τ)
///     fedadam:    m = β₁·m + (1−β₁)·Δ;  v = β₂·v + (1−β₂)·Δ²;
///                 x += η·√(1−β₂^(t+1)) / (1−β₁^(t+1)) · m / (√v + τ)
///     fedyogi:    m = β₁·m + (1−β₁)·Δ;  v = v − (1−β₂)·Δ²·sign(v − Δ²);
///                                                        x += η·m / (√v + τ)
///
/// t counts this strategy's steps, from 1. The bias correction of fedadam is
/// Flower's, which departs from the paper (it has none) and uses t + 1; we
/// follow Flower and test exactly that. m and v start at zero.
///
/// State (m, v and t) travels in the signed generation as the member
/// `optimizer.safetensors`, so a merge is reproducible from the files alone.
/// A generation written by another strategy, or by `revert`, carries none,
/// and the optimiser starts afresh. Integer tensors of a `tensors:` model
/// keep FedAvg's rule (the largest increment).
public class ServerOptimizer: AggregationStrategy, PartialAggregating {
    public class var name: String { "fedopt" }
    public static var access: StrategyAccess { .streaming }
    public static let stateMember = ContainerPath.optimizerState

    let arch: ModelArchitecture
    let average: FedAvg
    let eta: Double, beta1: Double, beta2: Double, tau: Double
    var m: [[Double]]?
    var v: [[Double]]?
    var step = 0
    private(set) var newState: [(name: String, tensor: Tensor)]?
    /// A streaming merge's restored m and v, read a chunk at a time, and
    /// where it writes the new ones.
    private var restoredMoments: (source: any TensorSource, m: [SafetensorsFile.Entry], v: [SafetensorsFile.Entry])?
    public private(set) var streamedState: StreamedState?

    required init(arch: ModelArchitecture, parameters p: [String: Double], defaults d: [String: Double]) {
        self.arch = arch
        eta = p["server_lr"] ?? d["server_lr"]!
        beta1 = p["beta1"] ?? p["momentum"] ?? d["beta1"] ?? 0
        beta2 = p["beta2"] ?? d["beta2"] ?? 0
        tau = p["tau"] ?? d["tau"] ?? 0
        average = FedAvg(arch: arch, serverLearningRate: 1, weightCap: Strategies.count(p["weight_cap"] ?? 1e8))
    }

    public var parameters: [String: Double] {
        ["server_lr": eta, "beta1": beta1, "beta2": beta2, "tau": tau, "weight_cap": Double(average.weightCap)]
    }
    public func weight(examples: Int64) -> Double { average.weight(examples: examples) }
    public func check(delta: DecodedDelta, base: ModelWeights) throws { try average.check(delta: delta, base: base) }
    public func add(delta: DecodedDelta, weight: Double, scale: Double) throws {
        try average.add(delta: delta, weight: weight, scale: scale)
    }
    public func add(partial: PartialAggregate) throws { try average.add(partial: partial) }
    public func partial() -> PartialAggregate { average.partial() }
    /// The optimiser steps along the noisy mean: post-processing of a
    /// private release, so the guarantee holds for the state it keeps too.
    public func privatize(with noise: GaussianNoise) throws { try average.privatize(with: noise) }

    /// Reads m, v and t from the current generation's state member, if it
    /// was written by this same strategy for this model.
    public func restore(state: SafetensorsFile?) throws {
        guard let state, state.metadata["fedbatch_strategy"] == Self.name,
            let t = state.tensor("step")?.floats().first, t >= 1, let count = Int(exactly: t)
        else { return }
        func read(_ prefix: String) -> [[Double]]? {
            var out: [[Double]] = []
            for (name, shape) in arch.tensorShapes {
                guard let x = state.tensor("\(prefix)/\(name)"), x.shape == shape, x.dtype == .f32, x.allFinite() else {
                    return nil
                }
                out.append(x.floats().map(Double.init))
            }
            return out
        }
        guard let m = read("m"), let v = read("v") else { return }
        self.m = m
        self.v = v
        step = count
    }

    public var stateTensors: [(name: String, tensor: Tensor)]? { newState }
    public var stateMetadata: [String: String] { ["fedbatch_strategy": Self.name] }

    /// The rule's new m and v and the step to add to the weights, per element.
    func update(delta: Double, m: inout Double, v: inout Double, first: Bool) -> Double { fatalError("subclass") }

    public func finish(base: ModelWeights) throws -> ModelWeights {
        guard average.count > 0 else { return base }
        let mean = average.meanDelta()
        let first = m == nil
        var m = self.m ?? mean.map { [Double](repeating: 0, count: $0.count) }
        var v = self.v ?? mean.map { [Double](repeating: 0, count: $0.count) }
        step += 1
        var tensors = base.tensors
        for t in tensors.indices {
            if !arch.dtypes[t].isFloatingPoint {
                tensors[t] = zip(base.tensors[t], mean[t]).map { Float(Double($0) + $1) }
                continue
            }
            for i in tensors[t].indices {
                let x = update(delta: mean[t][i], m: &m[t][i], v: &v[t][i], first: first)
                tensors[t][i] = Float(Double(base.tensors[t][i]) + x)
            }
            if let bad = tensors[t].firstIndex(where: { !$0.isFinite }) {
                throw AggregationError.nonFiniteResult(tensor: arch.tensorShapes[t].name, index: bad)
            }
        }
        self.m = m
        self.v = v
        newState =
            [("step", Tensor(shape: [1], floats: [Float(step)]))]
            + zip(arch.tensorShapes, m).map { ("m/\($0.name)", Tensor(shape: $0.shape, floats: $1.map(Float.init))) }
            + zip(arch.tensorShapes, v).map { ("v/\($0.name)", Tensor(shape: $0.shape, floats: $1.map(Float.init))) }
        return ModelWeights(arch: base.arch, tensors: tensors)
    }
}

extension ServerOptimizer: StreamingAggregation {
    public func beginStreaming(inputs: [StreamingMerge.Input], state: (any TensorSource)?) throws {
        try average.beginStreaming(inputs: inputs, state: nil)
        restoredMoments = nil
        // `restore`'s rules, with the tensors read a piece at a time.
        if let state, state.metadata["fedbatch_strategy"] == Self.name, let stepEntry = state.entry("step"),
            stepEntry.dtype == .f32, stepEntry.shape == [1],
            let t = state.floats(stepEntry, elements: 0..<1).first, t >= 1, let count = Int(exactly: t)
        {
            func entries(_ prefix: String) -> [SafetensorsFile.Entry]? {
                var out: [SafetensorsFile.Entry] = []
                for (name, shape) in arch.tensorShapes {
                    guard let e = state.entry("\(prefix)/\(name)"), e.shape == shape, e.dtype == .f32,
                        state.allFinite(e)
                    else { return nil }
                    out.append(e)
                }
                return out
            }
            if let m = entries("m"), let v = entries("v") {
                restoredMoments = (state, m, v)
                step = count
            }
        }
        step += 1
        let sizes = arch.tensorShapes.map { elementCount($0.shape)! }
        let total = sizes.reduce(0, +)
        var offsets: [(m: Int, v: Int)] = []
        var at = 1
        for n in sizes {
            offsets.append((at, at + total))
            at += n
        }
        streamedState = StreamedState(
            header: SafetensorsWriter.header(
                [("step", .f32, [1])] + arch.tensorShapes.map { ("m/\($0.name)", .f32, $0.shape) }
                    + arch.tensorShapes.map { ("v/\($0.name)", .f32, $0.shape) },
                metadata: stateMetadata),
            step: Float(step), offsets: offsets)
    }

    /// One chunk of the new weights into `out` and of the new moments into
    /// `moments`, by `finish`'s formulas element by element.
    public func finish(
        tensor t: Int, elements range: Range<Int>, sums: NumericBuffer<Int128>, base b: NumericBuffer<Float>,
        into out: NumericBuffer<Float>, moments: (m: NumericBuffer<Float>, v: NumericBuffer<Float>)?
    ) throws {
        // streamedState told the merge to give the moments a place.
        guard let (newM, newV) = moments else { preconditionFailure("a server optimiser's moments need a place") }
        let first = restoredMoments == nil
        let oldM = restoredMoments.map { $0.source.floats($0.m[t], elements: range) }
        let oldV = restoredMoments.map { $0.source.floats($0.v[t], elements: range) }
        let noise = average.noise, total = average.totalWeight
        for i in 0..<range.count {
            // FedAvg's mean delta (`meanDelta`), then the rule.
            let s = FixedPoint.double(sums[i])
            let mean = noise.map { s / $0.denominator + $0.next() } ?? (total > 0 ? s / total : 0)
            var m = oldM.map { Double($0[i]) } ?? 0
            var v = oldV.map { Double($0[i]) } ?? 0
            let x = update(delta: mean, m: &m, v: &v, first: first)
            out[i] = Float(Double(b[i]) + x)
            newM[i] = Float(m)
            newV[i] = Float(v)
        }
        if let i = (0..<range.count).first(where: { !out[$0].isFinite }) {
            throw AggregationError.nonFiniteResult(tensor: arch.tensorShapes[t].name, index: range.lowerBound + i)
        }
    }
}

/// Server momentum, as Flower's FedAvgM (default momentum 0, as Flower's).
public final class FedAvgM: ServerOptimizer {
    override public class var name: String { "fedavgm" }
    static let defaults: [String: Double] = ["server_lr": 1, "beta1": 0]
    override func update(delta: Double, m: inout Double, v: inout Double, first: Bool) -> Double {
        m = first ? delta : beta1 * m + delta
        return eta * m
    }
}

public final class FedAdagrad: ServerOptimizer {
    override public class var name: String { "fedadagrad" }
    static let defaults: [String: Double] = ["server_lr": 0.1, "beta1": 0, "beta2": 0, "tau": 1e-9]
    override func update(delta: Double, m: inout Double, v: inout Double, first: Bool) -> Double {
        m = beta1 * m + (1 - beta1) * delta
        v += delta * delta
        return eta * m / (v.squareRoot() + tau)
    }
}

public final class FedAdam: ServerOptimizer {
    override public class var name: String { "fedadam" }
    static let defaults: [String: Double] = ["server_lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-9]
    override func update(delta: Double, m: inout Double, v: inout Double, first: Bool) -> Double {
        m = beta1 * m + (1 - beta1) * delta
        v = beta2 * v + (1 - beta2) * delta * delta
        let t = Double(step) + 1
        let etaNorm = eta * (1 - pow(beta2, t)).squareRoot() / (1 - pow(beta1, t))
        return etaNorm * m / (v.squareRoot() + tau)
    }
}

public final class FedYogi: ServerOptimizer {
    override public class var name: String { "fedyogi" }
    static let defaults: [String: Double] = ["server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3]
    override func update(delta: Double, m: inout Double, v: inout Double, first: Bool) -> Double {
        m = beta1 * m + (1 - beta1) * delta
        let d2 = delta * delta
        let diff = v - d2
        v -= (1 - beta2) * d2 * (diff > 0 ? 1 : diff < 0 ? -1 : 0)
        return eta * m / (v.squareRoot() + tau)
    }
}

/// DiLoCo's outer step (Douillard et al., 2023): SGD with Nesterov momentum
/// on the outer gradient −Δ, as PyTorch's `SGD(nesterov=True)` takes it
/// (which DiLoCo uses): m = μ·m + Δ (m = Δ at the first step),
/// x += η·(Δ + μ·m). Defaults: server_lr 0.7, momentum 0.9, the paper's.
public final class DiLoCo: ServerOptimizer {
    override public class var name: String { "diloco" }
    static let defaults: [String: Double] = ["server_lr": 0.7, "beta1": 0.9]
    override func update(delta: Double, m: inout Double, v: inout Double, first: Bool) -> Double {
        m = first ? delta : beta1 * m + delta
        return eta * (delta + beta1 * m)
    }
}

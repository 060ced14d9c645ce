import FedBatchFormats
import FedBatchNative
import Foundation

/// The optimizers `fedbatch train` offers, with PyTorch's update rules so
/// that hyperparameters carry over from PyTorch code.
public enum OptimizerKind: String, Sendable, CaseIterable {
    case sgd, adam
}

public struct OptimizerOptions: Sendable, Equatable {
    public var kind: OptimizerKind = .sgd
    public var learningRate: Float = 0.05
    /// SGD momentum (torch.optim.SGD's `momentum`).
    public var momentum: Float = 0.9
    /// L2 penalty added to the gradient (torch.optim's `weight_decay`).
    public var weightDecay: Float = 0
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    public init() {}
}

/// Optimizer state for one network: momentum buffers, or Adam's moments.
final class Optimizer {
    let options: OptimizerOptions
    private var first: [[Float]]
    private var second: [[Float]]
    private var step = 0
    private var started = false

    init(options: OptimizerOptions, shapes: [Int]) {
        self.options = options
        first = shapes.map { [Float](repeating: 0, count: $0) }
        second = options.kind == .adam ? shapes.map { [Float](repeating: 0, count: $0) } : []
    }

    /// One update. `prox` is FedProx's μ and the global weights: it adds
    /// μ·(w − w_global) to each gradient, pulling local training towards
    /// the generation it started from.
    func apply(to network: Network, prox: (mu: Float, anchor: [[Float]])?) {
        step += 1
        let o = options
        let bias1 = 1 - powf(o.beta1, Float(step)), bias2 = 1 - powf(o.beta2, Float(step))
        let firstStep = !started
        started = true
        unsafe network.forEachParameter { i, p, g in
            let n = p.count
            if let prox, prox.mu > 0 {
                unsafe prox.anchor[i].withUnsafeBufferPointer { a in
                    for j in 0..<n { unsafe g[j] += prox.mu * (p[j] - a[j]) }
                }
            }
            if o.weightDecay != 0 { for j in 0..<n { unsafe g[j] += o.weightDecay * p[j] } }
            unsafe first[i].withUnsafeMutableBufferPointer { m in
                switch o.kind {
                case .sgd where o.momentum == 0:
                    for j in 0..<n { unsafe p[j] -= o.learningRate * g[j] }
                case .sgd:
                    // torch.optim.SGD: the first step seeds the buffer with the gradient.
                    if firstStep {
                        for j in 0..<n { unsafe m[j] = unsafe g[j]; unsafe p[j] -= o.learningRate * g[j] }
                    } else {
                        for j in 0..<n {
                            unsafe m[j] = unsafe o.momentum * m[j] + g[j]; unsafe p[j] -= o.learningRate * m[j]
                        }
                    }
                case .adam:
                    unsafe second[i].withUnsafeMutableBufferPointer { v in
                        let stepSize = o.learningRate / bias1
                        let invBias2 = 1 / bias2.squareRoot()
                        for j in 0..<n {
                            unsafe m[j] = unsafe o.beta1 * m[j] + (1 - o.beta1) * g[j]
                            unsafe v[j] = unsafe o.beta2 * v[j] + (1 - o.beta2) * g[j] * g[j]
                            unsafe p[j] -= stepSize * m[j] / (v[j].squareRoot() * invBias2 + o.epsilon)
                        }
                    }
                }
            }
        }
    }
}

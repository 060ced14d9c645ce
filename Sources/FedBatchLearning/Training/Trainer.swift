import FedBatchFormats
import FedBatchNative
import Foundation

/// Hyperparameters of one local training run.
public struct TrainingOptions: Sendable, Equatable {
    public var epochs = 1
    public var batchSize = 64
    public var optimizer = OptimizerOptions()
    /// FedProx's μ: 0 is plain local SGD (FedAvg).
    public var proxMu: Float = 0
    /// Seeds the shuffling; the same seed and inputs give the same bits
    /// (on the same BLAS kernel and thread count).
    public var seed: UInt64 = 0
    public init() {}
}

/// Progress within a run, for a terminal display.
public struct TrainingProgress: Sendable {
    public let epoch: Int
    public let epochs: Int
    public let examplesDone: Int
    public let examplesPerEpoch: Int
    public let runningLoss: Double
    /// Set once, when an epoch (and its held-out evaluation) is complete.
    public var finished: EpochReport? = nil
}

/// One epoch's figures.
public struct EpochReport: Sendable, Codable {
    public let epoch: Int
    public let loss: Double
    public let accuracy: Double
    public let seconds: Double
    public let samplesPerSecond: Double
    /// Loss and accuracy on held-out data, when some was given.
    public var evalLoss: Double?
    public var evalAccuracy: Double?
}

public struct TrainingResult: Sendable {
    public let weights: ModelWeights
    public let epochs: [EpochReport]
    /// Loss and accuracy over the last epoch, on the training data.
    public var loss: Double { epochs.last?.loss ?? .nan }
    public var accuracy: Double { epochs.last?.accuracy ?? .nan }
}

/// Why a training run stopped.
public enum TrainingError: Error, Equatable, Sendable, ReasonCoded {
    case diverged(epoch: Int, step: Int, learningRate: Float)
    case noData

    public var code: String {
        switch self {
        case .diverged: return "training.diverged"
        case .noData: return "training.no-data"
        }
    }

    public var description: String {
        switch self {
        case let .diverged(epoch, step, lr):
            return
                "training diverged at epoch \(epoch), step \(step): the loss is no longer finite (learning "
                + "rate \(lr)); lower --lr and run again. Nothing was written."
        case .noData:
            return "there are no training examples"
        }
    }
}

/// Mini-batch training of a `ModelArchitecture` on a `Dataset`.
public enum Trainer {
    /// - Parameter heldOut: evaluated after every epoch (not timed).
    /// - Throws: `TrainingError.diverged` as soon as a step's loss or the
    ///   weights stop being finite.
    public static func train(
        _ start: ModelWeights, on data: Dataset, options: TrainingOptions, heldOut: Dataset? = nil,
        progress: ((TrainingProgress) -> Void)? = nil
    ) throws -> TrainingResult {
        guard data.count > 0 else { throw TrainingError.noData }
        return try BLAS.exclusive {
            try trainExclusively(start, on: data, options: options, heldOut: heldOut, progress: progress)
        }
    }

    private static func trainExclusively(
        _ start: ModelWeights, on data: Dataset, options: TrainingOptions, heldOut: Dataset?,
        progress: ((TrainingProgress) -> Void)?
    ) throws -> TrainingResult {
        let arch = start.arch
        let batch = max(1, min(options.batchSize, data.count))
        let net = Network(weights: start, batchCapacity: batch)
        BLAS.useThreads(forRows: batch)
        let opt = Optimizer(options: options.optimizer, shapes: start.tensors.map(\.count))
        let anchor = options.proxMu > 0 ? (mu: options.proxMu, anchor: start.tensors) : nil
        var rng = SeededRandom(seed: options.seed)
        var order = Array(0..<data.count)
        let width = arch.inputWidth
        let xs = NumericBuffer<Float>(count: batch * width), ys = NumericBuffer<Int32>(count: batch)
        let x = unsafe xs.buffer, y = unsafe ys.buffer
        defer { withExtendedLifetime((xs, ys)) {} }
        var reports: [EpochReport] = []

        try unsafe data.features.withUnsafeBufferPointer { features in
            for epoch in 1...max(1, options.epochs) {
                rng.shuffle(&order)
                let started = DispatchTime.now().uptimeNanoseconds
                var lossSum = 0.0, correct = 0, seen = 0
                var start = 0, step = 0
                while start < order.count {
                    step += 1
                    let rows = min(batch, order.count - start)
                    for r in 0..<rows {
                        let src = order[start + r]
                        unsafe (x.baseAddress! + r * width).update(
                            from: features.baseAddress! + src * width, count: width)
                        unsafe y[r] = data.labels[src]
                    }
                    unsafe net.forward(x.baseAddress!, rows: rows)
                    let (l, c) = unsafe net.lossAndGradient(labels: y.baseAddress!, rows: rows)
                    unsafe net.backward(x.baseAddress!, rows: rows)
                    // A non-finite loss means the weights already are; stop
                    // here rather than train on and sign nothing useful.
                    guard l.isFinite else {
                        throw TrainingError.diverged(
                            epoch: epoch, step: step, learningRate: options.optimizer.learningRate)
                    }
                    opt.apply(to: net, prox: anchor)
                    lossSum += l
                    correct += c
                    seen += rows
                    start += rows
                    progress?(
                        TrainingProgress(
                            epoch: epoch, epochs: options.epochs, examplesDone: seen,
                            examplesPerEpoch: order.count, runningLoss: lossSum / Double(seen)))
                }
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                var report = EpochReport(
                    epoch: epoch, loss: lossSum / Double(seen), accuracy: Double(correct) / Double(seen),
                    seconds: seconds, samplesPerSecond: Double(seen) / max(seconds, 1e-9))
                if let heldOut {
                    let e = Evaluation.evaluateExclusively(net.weights, on: heldOut, batchSize: 1024)
                    BLAS.useThreads(forRows: batch)
                    report.evalLoss = e.loss
                    report.evalAccuracy = e.accuracy
                }
                reports.append(report)
                progress?(
                    TrainingProgress(
                        epoch: epoch, epochs: options.epochs, examplesDone: seen, examplesPerEpoch: order.count,
                        runningLoss: report.loss, finished: report))
            }
        }
        let weights = net.weights
        guard weights.tensors.allSatisfy({ $0.allSatisfy(\.isFinite) }) else {
            throw TrainingError.diverged(
                epoch: options.epochs, step: (data.count + batch - 1) / batch,
                learningRate: options.optimizer.learningRate)
        }
        return TrainingResult(weights: weights, epochs: reports)
    }
}

/// Accuracy and loss of weights on a dataset.
public struct Evaluation: Sendable, Codable {
    public let examples: Int
    public let loss: Double
    public let accuracy: Double
    /// Per class: the share of that class's examples predicted correctly
    /// (nil for a class with no examples).
    public let perClassAccuracy: [Double?]
    public let classCounts: [Int]

    public static func evaluate(_ weights: ModelWeights, on data: Dataset, batchSize: Int = 1024) -> Evaluation {
        BLAS.exclusive { evaluateExclusively(weights, on: data, batchSize: batchSize) }
    }

    /// For callers already holding the BLAS lock (the trainer).
    static func evaluateExclusively(_ weights: ModelWeights, on data: Dataset, batchSize: Int) -> Evaluation {
        let arch = weights.arch
        let batch = max(1, min(batchSize, data.count))
        let net = Network(weights: weights, batchCapacity: batch)
        BLAS.useThreads(forRows: batch)
        var lossSum = 0.0, correct = 0
        var hits = [Int](repeating: 0, count: arch.classes), counts = [Int](repeating: 0, count: arch.classes)
        unsafe data.features.withUnsafeBufferPointer { f in
            unsafe data.labels.withUnsafeBufferPointer { l in
                var start = 0
                while start < data.count {
                    let rows = min(batch, data.count - start)
                    let logits = unsafe net.forward(f.baseAddress! + start * arch.inputWidth, rows: rows)
                    let c = arch.classes
                    for r in 0..<rows {
                        let z = unsafe logits.baseAddress! + r * c
                        var arg = 0
                        for j in 1..<c where unsafe z[j] > z[arg] { arg = j }
                        let label = unsafe Int(l[start + r])
                        counts[label] += 1
                        if arg == label { hits[label] += 1 }
                    }
                    let (loss, ok) = unsafe net.lossAndGradient(labels: l.baseAddress! + start, rows: rows)
                    lossSum += loss
                    correct += ok
                    start += rows
                }
            }
        }
        return Evaluation(
            examples: data.count, loss: lossSum / Double(max(1, data.count)),
            accuracy: Double(correct) / Double(max(1, data.count)),
            perClassAccuracy: zip(hits, counts).map { $1 == 0 ? nil : Double($0) / Double($1) },
            classCounts: counts)
    }
}

import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What one `fedbatch train` run was asked for. A nil field means the
/// command line said nothing, so the home's `[training]` table decides.
public struct TrainingRequest: Sendable {
    public var data: String?
    public var split = DataSplit.train
    public var labelColumn = "label"
    /// CSV columns to leave out (an id column), for a model with a schema.
    public var drop: [String] = []
    public var limit: Int?
    public var epochs: Int?
    public var batchSize: Int?
    public var learningRate: Double?
    public var optimizer: OptimizerKind?
    public var momentum: Double?
    public var weightDecay: Double?
    public var proxMu: Double?
    public var seed: UInt64?
    /// A generation file instead of the newest in generations/.
    public var base: String?
    public var evalData: String?
    public var evalSplit = DataSplit.test
    /// Write a bundle even if one was already sent for this generation.
    public var force = false
    /// How to store the update, and topk's share.
    public var codec: String?
    public var topkFraction: Double?

    public init() {}

    /// The codec to write with: the command line over the home's defaults.
    public func codec(defaults d: TrainingDefaults) throws -> any TensorCodec {
        try Codecs.make(name: codec ?? d.codec, topkFraction: topkFraction ?? d.topkFraction)
    }

    /// The options the trainer runs with: the command line over the home's
    /// defaults. Without --seed the shuffle differs each generation yet is
    /// reproducible from the inputs.
    public func options(defaults d: TrainingDefaults, generation: Int) -> TrainingOptions {
        var o = TrainingOptions()
        o.epochs = epochs ?? d.epochs
        o.batchSize = batchSize ?? d.batchSize
        o.optimizer.kind = optimizer ?? d.optimizer
        o.optimizer.learningRate = Float(learningRate ?? d.learningRate)
        o.optimizer.momentum = Float(momentum ?? d.momentum)
        o.optimizer.weightDecay = Float(weightDecay ?? d.weightDecay)
        o.proxMu = Float(proxMu ?? d.proxMu)
        o.seed = seed ?? (d.seed &+ UInt64(generation) &* 0x9E37_79B9)
        return o
    }
}

/// What a training run produced: the bundle, and each epoch's figures.
public struct TrainingRun: Sendable {
    public let bundle: WrittenBundle
    public let epochs: [EpochReport]
}

/// A train or pack run that was asked to do something impossible.
public struct SiteUsageError: Error, Sendable, ReasonCoded, CustomStringConvertible {
    public let description: String
    public var code: String { "usage.site" }
}

extension Site {
    /// One `fedbatch train`: under the home's lock, the base generation
    /// (verified, not older than one already seen), unless --force a check
    /// that no update was sent for it yet, the data (checked against the
    /// model before anything is consumed), training, and the signed bundle.
    public func train(
        _ request: TrainingRequest, progress: @escaping (TrainingProgress) -> Void = { _ in }
    ) throws -> TrainingRun {
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        let defaults = home.config.training
        guard let dataPath = request.data ?? defaults.data else {
            throw SiteUsageError(
                description: "give --data, or set data in the [training] table of \(home.layout.config)")
        }
        let (base, baseWeights) = try baseGeneration(request.base)
        guard baseWeights.arch.isBuiltIn else { throw NotBuiltInError("train") }
        if !request.force { try checkNotSent(base: base) }
        // A tabular model's generation pins its columns: the CSV is read by name.
        let schema = try base.tabularSchema()
        let delimiter = home.config.data.delimiter
        var dataset = try DataLoader.load(
            dataPath, split: request.split, labelColumn: request.labelColumn, schema: schema, drop: request.drop,
            delimiter: delimiter)
        let imputed = dataset.imputed
        if let limit = request.limit { dataset = dataset.prefix(limit) }
        try dataset.check(against: baseWeights.arch, path: dataPath)
        // Held-out data: --eval-data, else training.eval_data, else
        // training.eval_fraction of the data, which is then not trained on.
        var heldOut = try (request.evalData ?? defaults.evalData.map(home.resolve)).map { path -> Dataset in
            let d = try DataLoader.load(
                path, split: request.evalSplit, labelColumn: request.labelColumn, schema: schema, drop: request.drop,
                delimiter: delimiter)
            try d.check(against: baseWeights.arch, path: path)
            return d
        }
        if heldOut == nil, defaults.evalFraction > 0 {
            let (rest, held) = dataset.holdingOut(defaults.evalFraction)
            dataset = rest
            heldOut = held.count > 0 ? held : nil
        }
        // The site's evaluation of the generation it starts from, before
        // training: how the federation's model does on this site's data.
        let evaluation = heldOut.map { d -> SiteEvaluation in
            let e = Evaluation.evaluate(baseWeights, on: d)
            return SiteEvaluation(numExamples: Int64(d.count), metrics: ["accuracy": e.accuracy, "loss": e.loss])
        }
        let options = request.options(defaults: defaults, generation: base.manifest.generation!)
        let codec = try request.codec(defaults: defaults)
        let result = try Trainer.train(baseWeights, on: dataset, options: options, heldOut: heldOut, progress: progress)
        var metrics = Self.metrics(of: result, options: options)
        // Blank cells the schema's means filled: worth knowing at the collector.
        if imputed > 0 { metrics["imputed_cells"] = Double(imputed) }
        let written = try writeUpdate(
            base: base, baseWeights: baseWeights, trained: result.weights,
            numExamples: Int64(dataset.count), metrics: metrics, codec: codec, evaluation: evaluation)
        return TrainingRun(bundle: written, epochs: result.epochs)
    }

    /// One `fedbatch pack`: weights trained elsewhere, checked against the
    /// base generation's model, signed as an update exactly as train does.
    public func pack(
        weights path: String, numExamples: Int64, metrics: [String: Double], base explicit: String? = nil,
        force: Bool = false, codec: String? = nil, topkFraction: Double? = nil,
        converted: (([String], DType, DType) -> Void)? = nil
    ) throws -> (bundle: WrittenBundle, base: PackBase) {
        let defaults = home.config.training
        let codec = try Codecs.make(name: codec ?? defaults.codec, topkFraction: topkFraction ?? defaults.topkFraction)
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        let file = try SafetensorsFile.open(path: path)
        // The generation the weights came from decides the base: a delta
        // against any other generation would undo that one's progress.
        let source = try PackBase.of(file, path: path)
        let (base, baseWeights) = try baseGeneration(explicit ?? source.map { String($0.number) })
        let chosen: PackBase
        if let source {
            guard base.manifest.generation == source.number, base.digest.hex == source.digest else {
                throw PackError.baseMismatch(
                    weights: path, generation: source.number, digest: source.digest,
                    offered: base.manifest.generation ?? -1, offeredDigest: base.digest.hex)
            }
            chosen = .metadata(source.number)
        } else {
            chosen = explicit == nil ? .newest(base.manifest.generation!) : .given(base.manifest.generation!)
        }
        if !force { try checkNotSent(base: base) }
        let (fitted, changes) = try Self.convertingFloats(file, to: baseWeights.arch)
        for c in changes { converted?(c.names, c.from, c.to) }
        let trained = try ModelWeights(arch: baseWeights.arch, file: fitted)
        return (
            try writeUpdate(
                base: base, baseWeights: baseWeights, trained: trained, numExamples: numExamples, metrics: metrics,
                codec: codec), chosen
        )
    }

    /// F32 weights of tensors the model pins as BF16 or F16 (PyTorch
    /// trains in F32) converted to
    /// the pinned one, rounding to nearest even as PyTorch's `.to()` does;
    /// with the tensors converted, by (from, to). Integer tensors are never
    /// converted: a mismatch there is refused by the model's check.
    static func convertingFloats(
        _ file: SafetensorsFile, to arch: ModelArchitecture
    ) throws -> (SafetensorsFile, [(names: [String], from: DType, to: DType)]) {
        guard arch.kind == .tensors else { return (file, []) }
        let pinned = Dictionary(
            zip(arch.tensorShapes.map(\.name), arch.dtypes).map { ($0, $1) }, uniquingKeysWith: { a, _ in a })
        var changes: [String: (from: DType, to: DType, names: [String])] = [:]
        var named: [(name: String, tensor: Tensor)] = []
        for e in file.entries {
            guard let t = file.tensor(e.name) else { continue }
            // Only narrowing from F32, as PyTorch leaves full-precision
            // weights; any other mismatch is refused by the model's check.
            if let want = pinned[e.name], e.dtype == .f32, want == .f16 || want == .bf16 {
                named.append((e.name, try t.converted(to: want)))
                changes["\(e.dtype.rawValue)>\(want.rawValue)", default: (e.dtype, want, [])].names.append(e.name)
            } else {
                named.append((e.name, t))
            }
        }
        guard !changes.isEmpty else { return (file, []) }
        return (
            try SafetensorsFile(bytes: SafetensorsWriter.encode(named, metadata: file.metadata)),
            changes.keys.sorted().map { (changes[$0]!.names, changes[$0]!.from, changes[$0]!.to) }
        )
    }

    /// The metrics a trained bundle records: the last epoch's figures and
    /// the hyperparameters a reader needs to interpret them.
    static func metrics(of result: TrainingResult, options o: TrainingOptions) -> [String: Double] {
        var metrics: [String: Double] = [
            "loss": result.loss, "accuracy": result.accuracy, "epochs": Double(o.epochs),
            "lr": Double(o.optimizer.learningRate), "batch_size": Double(o.batchSize),
        ]
        if o.proxMu > 0 { metrics["prox_mu"] = Double(o.proxMu) }
        if let last = result.epochs.last, let acc = last.evalAccuracy, let loss = last.evalLoss {
            metrics["eval_accuracy"] = acc
            metrics["eval_loss"] = loss
        }
        return metrics
    }
}

/// Which generation `pack` took as the base, and why.
public enum PackBase: Sendable, Equatable {
    /// The weights' own metadata named it (fedbatch export writes it).
    case metadata(Int)
    /// --base named it.
    case given(Int)
    /// Neither did: the newest generation in generations/.
    case newest(Int)

    /// The generation `fedbatch_generation` and `fedbatch_digest` name in a
    /// weights file's metadata; nil when it carries neither. Only one of
    /// the two, or a malformed value, is refused: the file was edited.
    static func of(_ file: SafetensorsFile, path: String) throws -> (number: Int, digest: String)? {
        let g = file.metadata["fedbatch_generation"], d = file.metadata["fedbatch_digest"]
        if g == nil && d == nil { return nil }
        guard let g, let n = Int(g), n >= 0, n <= Manifest.maxNumber, let d, Digest(hex: d) != nil else {
            throw PackError.badMetadata(path)
        }
        return (n, d)
    }
}

/// Why pack wrote nothing.
public enum PackError: Error, Sendable, ReasonCoded {
    case baseMismatch(weights: String, generation: Int, digest: String, offered: Int, offeredDigest: String)
    case badMetadata(String)

    public var code: String {
        switch self {
        case .baseMismatch: return "pack.base-mismatch"
        case .badMetadata: return "pack.metadata"
        }
    }

    public var description: String {
        switch self {
        case let .baseMismatch(weights, generation, digest, offered, offeredDigest):
            return offered == generation
                ? "\(weights) was exported from generation \(generation) with digest \(digest), but "
                    + "generation \(generation) here is \(offeredDigest); nothing was written"
                : "\(weights) was exported from generation \(generation) (its fedbatch_generation metadata), "
                    + "not \(offered): the update must be the change from the generation training started from; drop "
                    + "--base, or export that generation again; nothing was written"
        case .badMetadata(let path):
            return
                "\(path): fedbatch_generation and fedbatch_digest in the metadata must both be there, a generation "
                + "number and 64 hex digits (fedbatch export writes them)"
        }
    }
}

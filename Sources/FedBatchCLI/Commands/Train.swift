import ArgumentParser
import FedBatch
import Foundation

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Site: train on local data and write a signed update bundle to outbox/.",
        discussion: """
        Takes the newest generation in generations/ (or --base), verifies it \
        against the pinned collector key, refuses it if it is older than a \
        generation this site has already seen, trains on --data, and writes \
        the delta from the generation's weights as a signed bundle named \
        <model>-g<generation>-<site>-<seq>.fbu. Prints the bundle's path (or \
        JSON). Defaults come from the [training] table of fedbatch.toml. \
        A progress line is shown on a terminal; under cron nothing but the \
        path is printed. If this site already sent an update for the newest \
        generation, exits 5 without training (use --force to write another). \
        A run whose loss stops being finite stops and exits 1, naming the \
        epoch and step; bad data is refused before anything is consumed.
        """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Option(help: ArgumentHelp("Training data: an IDX directory, a .csv file or a .safetensors shard (default: training.data).", valueName: "path"))
    var data: String?

    @Option(help: "Which IDX split to read.")
    var split: String = "train"

    @Option(name: .customLong("label-column"), help: "The label column of a CSV file.")
    var labelColumn: String = "label"

    @Option(help: "Train on the first N examples only.")
    var limit: Int?

    @Option(help: "Passes over the data.") var epochs: Int?
    @Option(name: .customLong("batch-size"), help: "Examples per step.") var batchSize: Int?
    @Option(help: "Learning rate.") var lr: Double?
    @Option(help: "sgd or adam.") var optimizer: String?
    @Option(help: "SGD momentum.") var momentum: Double?
    @Option(name: .customLong("weight-decay"), help: "L2 penalty.") var weightDecay: Double?
    @Option(name: .customLong("prox-mu"), help: "FedProx proximal term μ (0: plain FedAvg local training).") var proxMu: Double?
    @Option(help: "Seed for shuffling (default: training.seed plus the generation number).") var seed: UInt64?

    @Option(help: ArgumentHelp("Train on this generation file instead of the newest in generations/.", valueName: "file"))
    var base: String?

    @Option(name: .customLong("eval-data"), help: ArgumentHelp("Held-out data to evaluate after each epoch; its figures go into the bundle's metrics.", valueName: "path"))
    var evalData: String?

    @Option(name: .customLong("eval-split"), help: "Which IDX split of --eval-data to read.")
    var evalSplit: String = "test"

    @Flag(help: "Write a bundle even if one was already sent for this generation (the collector keeps one per site).")
    var force = false

    func validate() throws {
        if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let lr, !(lr > 0) { throw ValidationError("--lr must be positive") }
        if let optimizer, OptimizerKind(rawValue: optimizer) == nil { throw ValidationError("--optimizer must be sgd or adam") }
        if let momentum, !(0..<1).contains(momentum) { throw ValidationError("--momentum must be in [0, 1)") }
        if let proxMu, proxMu < 0 { throw ValidationError("--prox-mu must be non-negative") }
        if DataSplit(rawValue: split) == nil || DataSplit(rawValue: evalSplit) == nil { throw ValidationError("--split and --eval-split must be train or test") }
        if let limit, limit < 1 { throw ValidationError("--limit must be positive") }
    }

    func run() throws {
        ensureFastBLAS()
        let console = Console(global)
        let home = try Home.open(global.resolvedHome, as: .site)
        let site = try Site(home: home, signer: try global.signer(fingerprint: home.config.key))
        let lock = try site.lock()
        defer { withExtendedLifetime(lock) {} }
        let d = home.config.training
        guard let dataPath = data ?? d.data else {
            throw ValidationError("give --data, or set data in the [training] table of \(home.layout.config)")
        }
        console.warnAboutForeignFiles(in: home)
        let (base, baseWeights) = try site.baseGeneration(self.base)
        if !force { try site.checkNotSent(base: base) }
        var dataset = try DataLoader.load(dataPath, split: DataSplit(rawValue: split)!, labelColumn: labelColumn)
        if let limit { dataset = dataset.prefix(limit) }
        try dataset.check(against: baseWeights.arch, path: dataPath)
        let heldOut = try evalData.map { path -> Dataset in
            let d = try DataLoader.load(path, split: DataSplit(rawValue: evalSplit)!, labelColumn: labelColumn)
            try d.check(against: baseWeights.arch, path: path)
            return d
        }

        var o = TrainingOptions()
        o.epochs = epochs ?? d.epochs
        o.batchSize = batchSize ?? d.batchSize
        o.optimizer.kind = optimizer.flatMap(OptimizerKind.init(rawValue:)) ?? d.optimizer
        o.optimizer.learningRate = Float(lr ?? d.learningRate)
        o.optimizer.momentum = Float(momentum ?? d.momentum)
        o.optimizer.weightDecay = Float(weightDecay ?? d.weightDecay)
        o.proxMu = Float(proxMu ?? d.proxMu)
        // A different shuffle each round, yet reproducible from the inputs.
        o.seed = seed ?? (d.seed &+ UInt64(base.manifest.generation!) &* 0x9E37_79B9)

        let progress = ProgressLine(console: console)
        let result = try Trainer.train(baseWeights, on: dataset, options: o, heldOut: heldOut) { p in
            progress.update(String(format: "epoch %d/%d  %3d%%  loss %.4f", p.epoch, p.epochs,
                                   100 * p.examplesDone / max(1, p.examplesPerEpoch), p.runningLoss))
        }
        progress.finish()
        var metrics: [String: Double] = ["loss": result.loss, "accuracy": result.accuracy, "epochs": Double(o.epochs),
                                         "lr": Double(o.optimizer.learningRate), "batch_size": Double(o.batchSize)]
        if o.proxMu > 0 { metrics["prox_mu"] = Double(o.proxMu) }
        if let last = result.epochs.last, let acc = last.evalAccuracy, let loss = last.evalLoss {
            metrics["eval_accuracy"] = acc
            metrics["eval_loss"] = loss
        }
        let written = try site.writeUpdate(base: base, baseWeights: baseWeights, trained: result.weights,
                                           numExamples: Int64(dataset.count), metrics: metrics)
        if global.json {
            try console.emit(TrainReport(bundle: written, epochs: result.epochs, backend: NumericBackend.description))
        } else {
            if !global.quiet {
                for e in result.epochs {
                    var line = String(format: "epoch %d: loss %.4f, accuracy %.4f, %.0f examples/s", e.epoch, e.loss, e.accuracy, e.samplesPerSecond)
                    if let a = e.evalAccuracy, let l = e.evalLoss { line += String(format: "; held-out loss %.4f, accuracy %.4f", l, a) }
                    Console.writeErr(line + "\n")
                }
            }
            Console.writeOut(written.path + "\n")
        }
    }
}

struct TrainReport: Encodable {
    let bundle: WrittenBundle
    let epochs: [EpochReport]
    let backend: String
}

import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Train: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Site: train on local data and write a signed update bundle to outbox/.",
        discussion: """
            Takes the newest generation in generations/ (or --base), verifies it \
            against the pinned collector key, refuses it if it is older than a \
            generation this site has already seen, trains on --data, and writes \
            the delta from the generation's weights as a signed bundle named \
            <model>-g<generation>-<site>-<seq>.fbu. Prints the bundle's path (or \
            JSON). Defaults come from the [training] table of fedbatch.toml. \
            A progress line is shown on a terminal; with --quiet (cron) nothing \
            is printed unless something goes wrong. If this site already sent an update for the newest \
            generation, exits 5 without training (use --force to write another). \
            A run whose loss stops being finite stops and exits 1, naming the \
            epoch and step; bad data is refused before anything is consumed. \
            With --command (or training.command) your own trainer runs instead, \
            through /bin/sh, in a private directory: it reads the generation from \
            $FEDBATCH_START, writes the trained weights to $FEDBATCH_OUT and \
            {"num_examples": N} to $FEDBATCH_RESULT, and fedbatch packs them \
            against the generation it exported (fedbatch-train(1), COMMAND TRAINERS).
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Option(
        help: ArgumentHelp(
            "Training data: an IDX directory, a .csv file or a .safetensors shard (default: training.data).",
            valueName: "path"))
    var data: String?

    @Option(help: "Which IDX split to read.")
    var split: String = "train"

    @Option(
        name: [.customLong("label"), .customLong("label-column")],
        help: "The label column of a CSV file (a model with a schema names its own).")
    var labelColumn: String = "label"

    @Option(
        name: .customLong("drop"),
        help: ArgumentHelp(
            "A CSV column to leave out, such as an id (repeatable); only for a model with a schema.",
            valueName: "column"))
    var drop: [String] = []

    @Option(help: "Train on the first N examples only.")
    var limit: Int?

    @Option(help: "Passes over the data.") var epochs: Int?
    @Option(name: .customLong("batch-size"), help: "Examples per step.") var batchSize: Int?
    @Option(help: "Learning rate.") var lr: Double?
    @Option(help: "sgd or adam.") var optimizer: String?
    @Option(help: "SGD momentum.") var momentum: Double?
    @Option(name: .customLong("weight-decay"), help: "L2 penalty.") var weightDecay: Double?
    @Option(name: .customLong("prox-mu"), help: "FedProx proximal term μ (0: plain FedAvg local training).")
    var proxMu: Double?
    @Option(help: "Seed for shuffling (default: training.seed plus the generation number).") var seed: UInt64?

    @Option(
        help: ArgumentHelp(
            "Train on this generation instead of the newest in generations/: a .fbg file, or latest, 7 or g7.",
            valueName: "generation"))
    var base: String?

    @Option(
        name: .customLong("eval-data"),
        help: ArgumentHelp(
            "Held-out data to evaluate after each epoch; its figures go into the bundle's metrics.", valueName: "path"))
    var evalData: String?

    @Option(name: .customLong("eval-split"), help: "Which IDX split of --eval-data to read.")
    var evalSplit: String = "test"

    @Flag(help: "Write a bundle even if one was already sent for this generation (the collector keeps one per site).")
    var force = false

    @Option(
        help: ArgumentHelp(
            "How to store the update: fp32, fp16, bf16, int8 or topk (default: training.codec).", valueName: "name"))
    var codec: String?

    @Option(
        help: ArgumentHelp(
            "Run this trainer through /bin/sh instead of the built-in one (default: training.command).",
            valueName: "command"))
    var command: String?

    @Option(
        help: ArgumentHelp(
            "Seconds the command may run before its process group is killed (default: training.timeout, none).",
            valueName: "seconds"))
    var timeout: Double?

    @Option(
        name: .customLong("topk-fraction"),
        help: ArgumentHelp(
            "The share of each tensor topk keeps (default: training.topk_fraction, 0.01).", valueName: "fraction"))
    var topkFraction: Double?

    func validate() throws {
        if let codec, !Codecs.names.contains(codec) {
            throw ValidationError("--codec must be one of \(Codecs.names.sorted().joined(separator: ", "))")
        }
        if let topkFraction, !(topkFraction > 0 && topkFraction <= 1) {
            throw ValidationError("--topk-fraction must be in (0, 1]")
        }
        if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let lr, !(lr > 0) { throw ValidationError("--lr must be positive") }
        if let optimizer, OptimizerKind(rawValue: optimizer) == nil {
            throw ValidationError("--optimizer must be sgd or adam")
        }
        if let momentum, !(0..<1).contains(momentum) { throw ValidationError("--momentum must be in [0, 1)") }
        if let proxMu, proxMu < 0 { throw ValidationError("--prox-mu must be non-negative") }
        if DataSplit(rawValue: split) == nil || DataSplit(rawValue: evalSplit) == nil {
            throw ValidationError("--split and --eval-split must be train or test")
        }
        if let limit, limit < 1 { throw ValidationError("--limit must be positive") }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout must be a number of seconds above 0") }
        if let command, command.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("--command must not be empty")
        }
    }

    func run(_ context: CommandContext) throws -> TrainOutput {
        ensureFastBLAS()
        let home = try context.home(as: .site)
        let site = try Site(home: home, signer: try context.signer(fingerprint: home.config.key, for: home))
        context.warnAboutForeignFiles(in: home)
        var request = TrainingRequest()
        request.data = data
        request.split = DataSplit(rawValue: split)!
        request.labelColumn = labelColumn
        request.drop = drop
        request.limit = limit
        request.epochs = epochs
        request.batchSize = batchSize
        request.learningRate = lr
        request.optimizer = optimizer.flatMap(OptimizerKind.init(rawValue:))
        request.momentum = momentum
        request.weightDecay = weightDecay
        request.proxMu = proxMu
        request.seed = seed
        request.base = base
        request.evalData = evalData
        request.evalSplit = DataSplit(rawValue: evalSplit)!
        request.force = force
        request.codec = codec
        request.topkFraction = topkFraction

        let console = context.console
        if base == nil, let why = home.witnessWarning() { console.warn(why, code: "trust.witnesses") }
        // Nothing to do (an update already sent for this generation) is an
        // outcome with a summary, as merge's "below quorum" is, exit 5.
        do {
            return try train(site: site, home: home, request: request, console: console, context: context)
        } catch let e as SiteError {
            guard case .alreadySent = e else { throw e }
            return TrainOutput(
                outcome: "already-sent", reason: e.description, bundle: nil, epochs: [],
                backend: NumericBackend.description,
                trainer: (command ?? home.config.training.command) == nil
                    ? "built-in" : "command", log: nil)
        }
    }

    private func train(
        site: Site, home: Home, request: TrainingRequest, console: Console, context: CommandContext
    ) throws -> TrainOutput {
        if let command = command ?? home.config.training.command {
            return try context.recordingMetrics("train", home: home) {
                let progress = ProgressLine(console: console)
                progress.update("running the training command (its output: \(home.layout.logs)/)")
                let run = try site.train(
                    command: command, request: request, timeout: timeout ?? home.config.training.timeout)
                progress.finish()
                return TrainOutput(
                    bundle: BundleInfo(run.bundle), epochs: [], backend: "command", trainer: "command", log: run.log)
            }
        }
        return try context.recordingMetrics("train", home: home) {
            let progress = ProgressLine(console: console)
            let run = try site.train(request) { p in
                if let finished = p.finished {
                    console.status(TrainStatus(done: p.epoch, total: p.epochs, epoch: EpochInfo(finished)))
                }
                progress.update(
                    String(
                        format: "epoch %d/%d  %3d%%  loss %.4f", p.epoch, p.epochs,
                        100 * p.examplesDone / max(1, p.examplesPerEpoch), p.runningLoss))
            }
            progress.finish()
            return TrainOutput(
                bundle: BundleInfo(run.bundle), epochs: run.epochs.map(EpochInfo.init),
                backend: NumericBackend.description, trainer: "built-in", log: nil)
        }
    }
}

/// After each epoch, under --json.
struct TrainStatus: Encodable {
    let phase = "train"
    let done: Int
    let total: Int
    let epoch: EpochInfo
}

struct TrainOutput: CommandOutput {
    /// "trained", or "already-sent" (exit 5).
    var outcome = "trained"
    /// Why nothing was trained.
    @OrNull var reason: String? = nil
    @OrNull var bundle: BundleInfo?
    let epochs: [EpochInfo]
    let backend: String
    /// "built-in" or "command".
    let trainer: String
    /// A command trainer's output.
    @OrNull var log: String? = nil

    var exitStatus: ExitStatus { bundle == nil ? .nothingToDo : .success }

    func render(into text: inout TextRendering) {
        text.notes = epochs.map(\.text) + (reason.map { ["fedbatch: \($0)"] } ?? [])
        text.out = bundle.map { [$0.file] } ?? []
    }
}

import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation
import TOMLKit

/// A site's default training settings, the `[training]` table of its
/// fedbatch.toml; command-line flags override them.
public struct TrainingDefaults: Sendable, Equatable {
    public var data: String?
    public var epochs = 1
    public var batchSize = 64
    public var learningRate = 0.05
    public var optimizer = OptimizerKind.sgd
    public var momentum = 0.9
    public var weightDecay = 0.0
    public var proxMu = 0.0
    public var seed: UInt64 = 0
    /// How updates are stored (fedbatch-bundle(5), CODECS).
    public var codec = TrainingDefaults.defaultCodec
    /// The share of each tensor the topk codec keeps.
    public var topkFraction = TopKCodec.defaultFraction
    /// A training command of the site's own (fedbatch-train(1), COMMAND
    /// TRAINERS): run through /bin/sh instead of the built-in trainer.
    public var command: String?
    /// Seconds a command may run before its process group is killed.
    public var timeout: Double?
    /// Held-out data for the site's evaluation of each generation it
    /// starts from (and the per-epoch figures); see fedbatch-train(1),
    /// EVALUATION.
    public var evalData: String?
    /// Without eval_data: the share of `data` set aside, the same examples
    /// every run, to evaluate on and not train on. 0: none.
    public var evalFraction = 0.0
    /// Whether the evaluation goes into the bundle (signed) for the
    /// collector to record.
    public var reportEvaluation = true
    public init() {}

    public static let defaultCodec = "int8"

    static let keys: Set<String> = [
        "data", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "prox_mu", "seed",
        "codec", "topk_fraction", "command", "timeout", "eval_data", "eval_fraction", "report_evaluation",
    ]

    func render() -> [String] {
        var lines = ["", "# Defaults for `fedbatch train`; its flags override them.", "[training]"]
        lines.append(
            data.map { "data = \(StrictJSON.quote($0))" }
                ?? "# data = \"/path/to/data\"   # IDX directory, .csv or .safetensors shard")
        lines += [
            "epochs = \(epochs)", "batch_size = \(batchSize)", "lr = \(learningRate)",
            "optimizer = \"\(optimizer.rawValue)\"",
            "momentum = \(momentum)", "weight_decay = \(weightDecay)", "prox_mu = \(proxMu)", "seed = \(seed)",
            "# How updates are stored: fp32, fp16, bf16, int8 or topk (fedbatch-bundle(5)).",
            "codec = \(StrictJSON.quote(codec))", "topk_fraction = \(topkFraction)",
            "# Your own trainer, run through /bin/sh with FEDBATCH_START, FEDBATCH_OUT, FEDBATCH_RESULT",
            "# and the others fedbatch-train(1) lists (COMMAND TRAINERS); the hyperparameters above",
            "# are then the command's business. timeout is in seconds.",
            command.map { "command = \(StrictJSON.quote($0))" }
                ?? "# command = \"python3 /opt/site/train.py\"",
            timeout.map { "timeout = \($0)" } ?? "# timeout = 3600",
            "# Before training, evaluate the generation on held-out data of this site's own: eval_data, or",
            "# eval_fraction of data set aside (the same examples every run). The figures go into the bundle,",
            "# signed, unless report_evaluation = false (fedbatch-train(1), EVALUATION).",
            evalData.map { "eval_data = \(StrictJSON.quote($0))" } ?? "# eval_data = \"/path/to/held-out\"",
            "eval_fraction = \(evalFraction)", "report_evaluation = \(reportEvaluation)",
        ]
        return lines
    }
}

extension TrainingDefaults {
    /// Reads `[training]`, refusing unknown keys and values out of range.
    static func parse(_ t: TOMLTable, path: String, text: String) throws -> TrainingDefaults {
        var d = TrainingDefaults()
        let s = try ConfigSection(t, name: "training", allowed: TrainingDefaults.keys, path: path, text: text)
        d.data = try s.string("data", "a string") ?? d.data
        d.epochs = try s.int("epochs", "a positive integer") { $0 > 0 } ?? d.epochs
        d.batchSize = try s.int("batch_size", "a positive integer") { $0 > 0 } ?? d.batchSize
        d.learningRate = try s.number("lr", "a positive number") { $0 > 0 } ?? d.learningRate
        d.optimizer = try s.choice("optimizer", "\"sgd\" or \"adam\"") ?? d.optimizer
        d.momentum = try s.number("momentum", "a number in [0, 1)") { (0..<1).contains($0) } ?? d.momentum
        d.weightDecay = try s.number("weight_decay", "a number, 0 or more") { $0 >= 0 } ?? d.weightDecay
        let codecs = Codecs.names.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
        d.codec = try s.string("codec", "one of \(codecs)") { Codecs.names.contains($0) } ?? d.codec
        d.topkFraction = try s.number("topk_fraction", "a number in (0, 1]") { $0 > 0 && $0 <= 1 } ?? d.topkFraction
        d.proxMu = try s.number("prox_mu", "a number, 0 or more") { $0 >= 0 } ?? d.proxMu
        d.seed = try s.int("seed", "a non-negative integer") { $0 >= 0 }.map(UInt64.init) ?? d.seed
        d.command = try s.string("command", "a non-empty shell command") {
            !$0.trimmingCharacters(in: .whitespaces).isEmpty
        }
        d.timeout = try s.number("timeout", "a number of seconds above 0") { $0 > 0 }
        d.evalData = try s.string("eval_data", "a non-empty path") { !$0.isEmpty }
        d.evalFraction =
            try s.number("eval_fraction", "a number in [0, 0.5]") { (0...0.5).contains($0) } ?? d.evalFraction
        d.reportEvaluation = try s.bool("report_evaluation") ?? d.reportEvaluation
        return d
    }
}

import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Eval: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Accuracy and loss of a generation on a dataset.",
        discussion: """
            Verifies the generation against the home's pinned collector key, then \
            reports the mean cross-entropy loss, the accuracy and the accuracy of \
            each class on --data (an IDX directory with --split, a CSV file or a \
            safetensors shard).
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Argument(
        help: ArgumentHelp(
            "A generation: a .fbg file, or latest, 7 or g7 for one in generations/.", valueName: "generation"))
    var file: String

    @Option(help: ArgumentHelp("Evaluation data.", valueName: "path"))
    var data: String

    @Option(help: "Which IDX split to read.")
    var split: String = "test"

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

    func validate() throws {
        if DataSplit(rawValue: split) == nil { throw ValidationError("--split must be train or test") }
    }

    func run(_ context: CommandContext) throws -> EvalOutput {
        ensureFastBLAS()
        let home = try context.home()
        let file = try home.layout.generation(named: self.file)
        let (v, weights) = try home.openGeneration(file, verifier: try home.verifier())
        guard weights.arch.isBuiltIn else { throw NotBuiltInError("evaluate") }
        let dataset = try DataLoader.load(
            data, split: DataSplit(rawValue: split)!, labelColumn: labelColumn, schema: try v.tabularSchema(),
            drop: drop, delimiter: home.config.data.delimiter)
        try dataset.check(against: weights.arch, path: data)
        let e = Evaluation.evaluate(weights, on: dataset)
        return EvalOutput(
            file: file, generation: v.manifest.generation!, modelId: v.manifest.model.id, digest: v.digest.hex,
            examples: dataset.count, imputed: dataset.imputed, accuracy: e.accuracy, loss: e.loss,
            classes: e.perClassAccuracy.enumerated().map {
                .init(label: $0.offset, examples: e.classCounts[$0.offset], accuracy: $0.element)
            })
    }
}

struct EvalOutput: CommandOutput {
    struct PerClass: Encodable {
        let label: Int
        let examples: Int
        /// Null for a class with no examples in the data.
        @OrNull var accuracy: Double?
    }

    let file: String
    let generation: Int
    let modelId: String
    let digest: String
    let examples: Int
    /// Blank cells filled with the schema's means (missing = "mean").
    let imputed: Int
    let accuracy: Double
    let loss: Double
    let classes: [PerClass]

    func render(into text: inout TextRendering) {
        text.out =
            [
                "generation \(generation) of \(modelId) on \(examples) examples"
                    + (imputed > 0 ? " (\(imputed) blank cells imputed with the schema's means)" : ""),
                String(format: "accuracy  %.4f", accuracy),
                String(format: "loss      %.4f", loss),
                "class  examples  accuracy",
            ]
            + classes.map { c in
                String(
                    format: "%5d  %8d  %@", c.label, c.examples, c.accuracy.map { String(format: "%.4f", $0) } ?? "-")
            }
    }
}

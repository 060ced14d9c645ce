import ArgumentParser
import FedBatch
import Foundation

struct Eval: ParsableCommand {
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

    @Argument(help: ArgumentHelp("A generation (.fbg).", valueName: "file"))
    var file: String

    @Option(help: ArgumentHelp("Evaluation data.", valueName: "path"))
    var data: String

    @Option(help: "Which IDX split to read.")
    var split: String = "test"

    @Option(name: .customLong("label-column"), help: "The label column of a CSV file.")
    var labelColumn: String = "label"

    func validate() throws {
        if DataSplit(rawValue: split) == nil { throw ValidationError("--split must be train or test") }
    }

    func run() throws {
        ensureFastBLAS()
        let home = try Home.open(global.resolvedHome)
        let (v, weights) = try home.openGeneration(file, verifier: try home.verifier())
        let dataset = try DataLoader.load(data, split: DataSplit(rawValue: split)!, labelColumn: labelColumn)
        try dataset.check(against: weights.arch, path: data)
        let e = Evaluation.evaluate(weights, on: dataset)
        let console = Console(global)
        if global.json {
            try console.emit(EvalReport(file: file, generation: v.manifest.generation!, digest: v.digest.hex, evaluation: e))
            return
        }
        var lines = [
            "generation \(v.manifest.generation!) of \(v.manifest.model.id) on \(dataset.count) examples",
            String(format: "accuracy  %.4f", e.accuracy),
            String(format: "loss      %.4f", e.loss),
            "class  examples  accuracy",
        ]
        for (c, acc) in e.perClassAccuracy.enumerated() {
            lines.append(String(format: "%5d  %8d  %@", c, e.classCounts[c], acc.map { String(format: "%.4f", $0) } ?? "-"))
        }
        console.say(lines.joined(separator: "\n"))
    }
}

struct EvalReport: Encodable {
    let file: String
    let generation: Int
    let digest: String
    let evaluation: Evaluation
}

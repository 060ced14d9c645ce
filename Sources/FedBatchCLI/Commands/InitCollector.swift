import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct InitCollector: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "collector",
        abstract: "Create a collector home and its generation 0, signed.",
        discussion: """
            Creates fedbatch.toml, keys/collector.asc (the public part of --key), \
            inbox/, accepted/, quarantine/ and generations/g000000.fbg. Generation 0 \
            holds PyTorch-style initial weights drawn from --seed, or the weights in \
            --weights after their names and shapes are checked against --arch.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Init
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(name: .customLong("model-id"), help: "The model id every bundle and generation must carry.")
    var modelID: String

    @Option(
        help: ArgumentHelp(
            "The architecture: mlp:IN-H1-…-OUT or softmax:IN-OUT. Without it, --weights defines the model by its "
                + "tensors (any PyTorch state_dict).",
            valueName: "spec"))
    var arch: String?

    @Option(help: ArgumentHelp("Fingerprint of the collector's signing key.", valueName: "fpr"))
    var key: String

    @Option(
        help: ArgumentHelp(
            "Initial weights (safetensors, PyTorch names) instead of a seeded initialisation.", valueName: "file"))
    var weights: String?

    @Option(help: "Seed for the initial weights.")
    var seed: UInt64 = 0

    @Option(
        name: .customLong("schema-from"),
        help: ArgumentHelp(
            "A CSV file whose header names the feature columns: the model then reads CSV data by column name (a "
                + "pinned schema).",
            valueName: "file.csv"))
    var schemaFrom: String?

    @Option(
        help: ArgumentHelp(
            "The field delimiter of --schema-from and of the home's CSV files ([data] delimiter): , ; | or \\t.",
            valueName: "character"))
    var delimiter: String?

    @Option(help: ArgumentHelp("The label column of --schema-from.", valueName: "column"))
    var label: String = "label"

    @Option(
        help: ArgumentHelp(
            "The label map: the classes' names in class order (default: the sorted distinct labels of --schema-from, "
                + "if they are not integers).",
            valueName: "a,b,..."))
    var labels: String?

    @Option(
        help: ArgumentHelp(
            "What a blank feature cell becomes: refuse (an error, the default) or mean (the pinned mean, from "
                + "--normalize or fedbatch stats --pin).",
            valueName: "rule"))
    var missing: String?

    @Option(
        help: ArgumentHelp(
            "A column of --schema-from that holds categories, one-hot encoded; its categories are the file's "
                + "distinct values, sorted (repeatable).",
            valueName: "column"))
    var categorical: [String] = []

    @Option(
        name: .customLong("unknown-category"),
        help: ArgumentHelp(
            "What a category outside the pinned ones becomes: error (the default) or ignore (all zeros).",
            valueName: "rule"))
    var unknownCategory: String?

    @Option(
        help: ArgumentHelp(
            "A column of --schema-from that is not a feature, such as an id (repeatable).", valueName: "column"))
    var drop: [String] = []

    @Option(
        help: ArgumentHelp(
            "Standardise each feature with this JSON file's {\"mean\": {column: value}, \"std\": {column: value}}.",
            valueName: "stats.json"))
    var normalize: String?

    @Option(
        name: .customLong("eval-data"),
        help: ArgumentHelp(
            "Held-out data each merge evaluates its generation on ([eval] data; fedbatch report).", valueName: "path"))
    var evalData: String?

    func validate() throws {
        if let arch {
            do { try ModelArchitecture(spec: arch).checkFitsInMemory() } catch {
                throw ValidationError("--arch: \(error)")
            }
        } else if weights == nil {
            throw ValidationError("give --arch, or --weights for a model defined by its tensors")
        }
        if weights != nil && seed != 0 { throw ValidationError("--weights and --seed exclude each other") }
        if schemaFrom == nil
            && (normalize != nil || !drop.isEmpty || labels != nil || missing != nil || !categorical.isEmpty
                || unknownCategory != nil)
        {
            throw ValidationError(
                "--drop, --labels, --missing, --categorical, --unknown-category and --normalize need --schema-from")
        }
    }

    func run(_ context: CommandContext) throws -> InitCollectorOutput {
        // Without --arch the weights file defines the model: every tensor's
        // name, dtype and shape, pinned in the generation.
        let arch =
            try self.arch.map { try ModelArchitecture(spec: $0) }
            ?? ModelArchitecture(tensorsOf: try SafetensorsFile.open(path: weights!))
        try arch.checkFitsInMemory()
        let initial = try weights.map { try arch.loadWeights(path: $0) }
        let signer = try context.signer(fingerprint: key)
        var data = DataSettings()
        if let delimiter {
            guard let b = CSVReader.delimiter(delimiter) else {
                throw ValidationError("--delimiter must be one of , ; | or \\t")
            }
            data.delimiter = b
        }
        let schema = try schemaFrom.map { path -> TabularSchema in
            // Text labels need a label map: given, or the file's distinct
            // values, sorted, which only works if every class appears there.
            var map = labels.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            if map == nil, let inferred = try TabularSchema.inferLabels(path, label: label, delimiter: data.delimiter) {
                context.console.warn(
                    "labels taken from \(path) as \(inferred.joined(separator: ", ")) (classes 0 to "
                        + "\(inferred.count - 1), in that order); every class must appear in that file, or give them "
                        + "with --labels",
                    code: "init.labels-inferred")
                map = inferred
            }
            if let map, arch.isBuiltIn, map.count != arch.classes {
                throw ValidationError(
                    "the label map has \(map.count) classes (\(map.joined(separator: ", "))); the model "
                        + "\(arch.description) has \(arch.classes) outputs")
            }
            var categories: [String: [String]] = [:]
            for column in categorical {
                let values = try TabularSchema.inferCategories(path, column: column, delimiter: data.delimiter)
                context.console.warn(
                    "categories of \(column) taken from \(path): \(values.joined(separator: ", ")); another value "
                        + "at a site is \(unknownCategory == "ignore" ? "encoded as all zeros" : "an error")",
                    code: "init.categories-inferred")
                categories[column] = values
            }
            return try TabularSchema.fromCSVHeader(
                path, label: label, drop: drop, stats: try normalize.map { try readFile($0, cap: 1 << 20) },
                delimiter: data.delimiter, labels: map, missing: missing, categories: categories,
                unknownCategory: unknownCategory)
        }
        let result = try Home.createCollector(
            at: context.options.resolvedHome, modelID: modelID, arch: arch.description,
            signer: signer, weights: initial, seed: seed,
            evalData: evalData.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 },
            schema: schema, data: data)
        return InitCollectorOutput(
            home: result.home.layout.root, modelId: modelID, arch: arch.description,
            parameters: arch.parameterCount, key: signer.fingerprint, generation: 0,
            file: result.generation, digest: result.digest.hex)
    }
}

struct InitCollectorOutput: CommandOutput {
    let home: String
    let modelId: String
    let arch: String
    let parameters: Int
    let key: String
    let generation: Int
    let file: String
    let digest: String

    func render(into text: inout TextRendering) {
        text.out = [
            """
            created collector home \(home)
              model       \(modelId) (\(arch.hasPrefix("tensors:") ? "defined by its tensors" : arch), \(parameters) \
              parameters)
              key         \(key)
              generation  \(file)
              digest      \(digest)
            next: pin each site's key with `fedbatch keys add --site ID FILE.asc`,
            and give sites keys/collector.asc and the generation.
            """
        ]
    }
}

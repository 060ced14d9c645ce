import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct DataSplitCommand: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "split",
        abstract: "Partition a dataset into one safetensors shard per site.",
        discussion: """
            --iid deals examples out uniformly at random; --dirichlet A gives each \
            class to the sites in proportions drawn from Dirichlet(A), the usual \
            label-skew benchmark (A = 0.5 is strongly non-IID). Shards are named \
            site-01.safetensors, … and hold x (U8 pixels or F32) and y (I64); \
            `fedbatch train --data` reads them. The same seed gives the same \
            split. Prints the label count of every site.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: DataCommand
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(
        help: ArgumentHelp("The dataset: an IDX directory, a .csv file or a .safetensors shard.", valueName: "path"))
    var data: String

    @Option(help: "Which IDX split to read.")
    var split: String = "train"

    @Option(name: .customLong("label-column"), help: "The label column of a CSV file.")
    var labelColumn: String = "label"

    @Option(help: "Number of sites.")
    var sites: Int

    @Option(help: ArgumentHelp("Dirichlet concentration α for a label-skewed split.", valueName: "alpha"))
    var dirichlet: Double?

    @Flag(help: "An IID split.")
    var iid = false

    @Option(help: ArgumentHelp("Directory for the shards.", valueName: "dir"))
    var out: String

    @Option(help: "Seed of the split.")
    var seed: UInt64 = 0

    @Option(help: ArgumentHelp("A CSV file's field delimiter: , ; | or \\t.", valueName: "character"))
    var delimiter: String = ","

    func validate() throws {
        if (dirichlet == nil) == !iid { throw ValidationError("give exactly one of --dirichlet A and --iid") }
        if sites < 1 { throw ValidationError("--sites must be at least 1") }
        if let dirichlet, !(dirichlet > 0) { throw ValidationError("--dirichlet must be positive") }
        if DataSplit(rawValue: split) == nil { throw ValidationError("--split must be train or test") }
        if CSVReader.delimiter(delimiter) == nil {
            throw ValidationError("--delimiter must be one of , ; | or \\t")
        }
    }

    func run(_ context: CommandContext) throws -> SplitOutput {
        let dataset = try DataLoader.load(
            data, split: DataSplit(rawValue: split)!, labelColumn: labelColumn,
            delimiter: CSVReader.delimiter(delimiter)!)
        let parts = try Partition.assign(
            labels: dataset.labels, sites: sites, scheme: iid ? .iid : .dirichlet(alpha: dirichlet!), seed: seed)
        let paths = try Partition.writeShards(dataset, parts: parts, to: out)
        let classes = Int(dataset.labels.max() ?? 0) + 1
        return SplitOutput(
            out: out,
            shards: zip(paths, parts).map { path, idx in
                .init(file: path, examples: idx.count, labelCounts: dataset.subset(idx).labelCounts(classes: classes))
            })
    }
}

struct SplitOutput: CommandOutput {
    struct Shard: Encodable {
        let file: String
        let examples: Int
        /// Examples of each label, from label 0.
        let labelCounts: [Int]
    }

    let out: String
    let shards: [Shard]

    func render(into text: inout TextRendering) {
        let classes = shards.first?.labelCounts.count ?? 0
        let header =
            ["site".padding(toLength: 8, withPad: " ", startingAt: 0), String(repeating: " ", count: 3) + "total"]
            + (0..<classes).map { String(repeating: " ", count: max(0, 6 - String($0).count)) + String($0) }
        text.out = [header.joined(separator: " ")]
        for r in shards {
            let name = ((r.file as NSString).lastPathComponent as NSString).deletingPathExtension
            text.out.append(
                ([name.padding(toLength: 8, withPad: " ", startingAt: 0), String(format: "%8d", r.examples)]
                    + r.labelCounts.map { String(format: "%6d", $0) }).joined(separator: " "))
        }
        text.out.append("wrote \(shards.count) shards to \(out)")
    }
}

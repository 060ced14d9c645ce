import ArgumentParser

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Prepare datasets for simulations.",
        subcommands: [DataSplitCommand.self]
    )

    @ParentCommand var root: FedBatchCommand
}

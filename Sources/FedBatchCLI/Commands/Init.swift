import ArgumentParser

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a collector home or a site home.",
        subcommands: [InitCollector.self, InitSite.self]
    )

    @ParentCommand var root: FedBatchCommand
}

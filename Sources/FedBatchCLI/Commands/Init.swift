import ArgumentParser

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a collector home, a site home or a regional collector's home.",
        subcommands: [InitCollector.self, InitSite.self, InitRegion.self, InitWitness.self]
    )

    @ParentCommand var root: FedBatchCommand
}

import ArgumentParser

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage a collector's trust set: the site keys it pins.",
        subcommands: [KeysAdd.self, KeysList.self, KeysRemove.self]
    )

    @ParentCommand var root: FedBatchCommand
}

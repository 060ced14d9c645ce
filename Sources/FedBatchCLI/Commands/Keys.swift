import ArgumentParser

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage a home's trust set: the site keys a collector pins, and the collector's own key.",
        subcommands: [KeysAdd.self, KeysList.self, KeysRemove.self, KeysRotate.self, KeysSigners.self]
    )

    @ParentCommand var root: FedBatchCommand
}

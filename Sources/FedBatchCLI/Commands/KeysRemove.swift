import ArgumentParser
import FedBatch
import Foundation

struct KeysRemove: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Unpin a site's key; its bundles are refused from then on."
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Keys
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(help: "The site whose key to remove.")
    var site: String

    func run(_ context: CommandContext) throws -> KeyChange {
        let key = try context.home(as: .collector).unpinSiteKey(site: site)
        return KeyChange(action: "removed", key: KeyInfo(key))
    }
}

import ArgumentParser
import FedBatch
import Foundation

struct KeysRemove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Unpin a site's key; its bundles are refused from then on."
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Keys
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(help: "The site whose key to remove.")
    var site: String

    func run() throws {
        let home = try Home.open(global.resolvedHome, as: .collector)
        let key = try home.unpinSiteKey(site: site)
        let console = Console(global)
        if global.json {
            try console.emit(KeyRow(key))
        } else {
            console.say("removed \(key.fingerprint) for site \(site)")
        }
    }
}

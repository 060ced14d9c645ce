import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct KeysRemove: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Retire a site's key (or all its keys); bundles it signs are refused from then on.",
        discussion: """
            With --key, only that key of the site is retired: the way to finish \
            a site's key rotation once its bundles signed with the old key have \
            arrived. Without it, every key of the site is. Retired keys move to \
            keys/retired/sites/, so fedbatch verify still checks the bundles \
            they signed that a generation included. Takes the home's lock.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Keys
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(help: "The site whose key to retire.")
    var site: String

    @Option(help: ArgumentHelp("Retire only this key of the site (its fingerprint).", valueName: "fpr"))
    var key: String?

    func run(_ context: CommandContext) throws -> KeyRemoval {
        let home = try context.home()
        guard home.config.role != .site else {
            throw HomeError.wrongRole(path: home.layout.root, expected: .collector, actual: .site)
        }
        let keys = try home.unpinSiteKey(site: site, fingerprint: key)
        return KeyRemoval(keys: keys.map(KeyInfo.init))
    }
}

struct KeyRemoval: CommandOutput {
    let action = "retired"
    let keys: [KeyInfo]

    func render(into text: inout TextRendering) {
        text.out = keys.map { "retired \($0.fingerprint) of site \($0.site ?? "") (\($0.userId))" }
    }
}

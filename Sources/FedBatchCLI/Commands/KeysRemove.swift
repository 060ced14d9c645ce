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
        abstract: "Retire a site's key (or all its keys), or remove a witness's key.",
        discussion: """
            With --key, only that key of the site is retired: the way to finish \
            a site's key rotation once its bundles signed with the old key have \
            arrived. Without it, every key of the site is. Retired keys move to \
            keys/retired/sites/, so fedbatch verify still checks the bundles \
            they signed that a generation included. --witness removes a witness's \
            key: its cosignatures count no more on this home. Takes the home's lock.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Keys
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(help: "The site whose key to retire.")
    var site: String?

    @Option(help: "The witness whose key to remove.")
    var witness: String?

    @Option(help: "The signer whose key to remove (see [trust] signers).")
    var signer: String?

    @Option(help: ArgumentHelp("Retire only this key of the site (its fingerprint).", valueName: "fpr"))
    var key: String?

    func validate() throws {
        if [site, witness, signer].compactMap({ $0 }).count != 1 {
            throw ValidationError("give exactly one of --site ID, --witness ID and --signer ID")
        }
        if key != nil && site == nil { throw ValidationError("--key goes with --site") }
    }

    func run(_ context: CommandContext) throws -> KeyRemoval {
        let home = try context.home()
        if let role: Role = witness.map({ .witness($0) }) ?? signer.map({ .signer($0) }) {
            var removed = KeyRemoval(keys: [KeyInfo(try home.unpin(role))])
            removed.action = "removed"
            return removed
        }
        guard let site else { throw ValidationError("give --site ID or --witness ID") }
        guard home.config.role != .site else {
            throw HomeError.wrongRole(path: home.layout.root, expected: .collector, actual: .site)
        }
        let keys = try home.unpinSiteKey(site: site, fingerprint: key)
        return KeyRemoval(keys: keys.map(KeyInfo.init))
    }
}

struct KeyRemoval: CommandOutput {
    var action = "retired"
    let keys: [KeyInfo]

    func render(into text: inout TextRendering) {
        text.out = keys.map { "\(action) \($0.fingerprint) of \($0.role) \($0.site ?? "") (\($0.userId))" }
    }
}

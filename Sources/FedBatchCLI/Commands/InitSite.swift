import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct InitSite: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "site",
        abstract: "Create a site home that trusts one collector key.",
        discussion: """
            Creates fedbatch.toml, keys/collector.asc (the pinned collector key), \
            generations/ and outbox/. The site signs its bundles with --key; give \
            its public part (gpg --armor --export FPR) to the collector.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Init
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(name: .customLong("site-id"), help: "This site's id, as the collector pins it.")
    var siteID: String

    @Option(help: ArgumentHelp("Fingerprint of this site's signing key.", valueName: "fpr"))
    var key: String

    @Option(
        name: .customLong("collector-key"),
        help: ArgumentHelp("The collector's public key to pin.", valueName: "file.asc"))
    var collectorKey: String

    @Option(name: .customLong("model-id"), help: "The model id this site trains.")
    var modelID: String

    func run(_ context: CommandContext) throws -> InitSiteOutput {
        let signer = try context.signer(fingerprint: key)
        let home = try Home.createSite(
            at: context.options.resolvedHome, siteID: siteID, modelID: modelID,
            signer: signer, collectorKeyPath: collectorKey)
        let pinned = try TrustSet.load(keysDirectory: home.layout.keys).key(for: .collector)!
        return InitSiteOutput(
            home: home.layout.root, site: siteID, modelId: modelID, key: signer.fingerprint,
            collectorKey: KeyInfo(pinned))
    }
}

/// `init site` and `init region`: the same shape; `role` tells them apart.
struct InitSiteOutput: CommandOutput {
    let home: String
    /// The site id, the region id or the witness id.
    let site: String
    let modelId: String
    let key: String
    let collectorKey: KeyInfo
    var role = "site"

    func render(into text: inout TextRendering) {
        let next: String
        switch role {
        case "region":
            next =
                "pin this region's sites (fedbatch keys add --site), and bring the root's generations into "
                + "\(home)/generations/ (fedbatch pull)"
        case "witness":
            next =
                "pin the sites' keys (fedbatch keys add --site), bring the collector's generations and their inputs "
                + "here (fedbatch pull), then fedbatch witness"
        default: next = "copy generations from the collector into \(home)/generations/"
        }
        text.out = [
            """
            created \(role) home \(home)
              \(role.padding(toLength: 14, withPad: " ", startingAt: 0)) \(site)
              key            \(key)
              collector key  \(collectorKey.fingerprint) \(collectorKey.userId)
            next: \(next)
            """
        ]
    }
}

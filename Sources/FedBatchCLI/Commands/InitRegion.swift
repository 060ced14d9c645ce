import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct InitRegion: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "region",
        abstract:
            "Create a regional collector's home: it merges its sites' bundles into partial aggregates for the root "
            + "collector.",
        discussion: """
            Creates fedbatch.toml (role region), keys/collector.asc (the root \
            collector's key, pinned), keys/sites/, inbox/, accepted/, \
            quarantine/, generations/ and outbox/. The region signs its partial \
            aggregates with --key; give its public part to the root collector, \
            which pins it with `fedbatch keys add --site REGION` and lists REGION \
            in merge.regions. Pin this region's sites here with `fedbatch keys \
            add --site`. Generations come from the root (fedbatch pull with \
            [remote] upstream, or copies into generations/). See \
            fedbatch-merge(1), HIERARCHICAL MERGES.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Init
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(name: .customLong("region-id"), help: "This regional collector's id, as the root collector pins it.")
    var regionID: String

    @Option(help: ArgumentHelp("Fingerprint of this region's signing key.", valueName: "fpr"))
    var key: String

    @Option(
        name: .customLong("collector-key"),
        help: ArgumentHelp("The root collector's public key to pin.", valueName: "file.asc"))
    var collectorKey: String

    @Option(name: .customLong("model-id"), help: "The model id, as the root collector's.")
    var modelID: String

    @Option(
        help: ArgumentHelp(
            "The model architecture, as the root collector's (fedbatch init collector --arch).", valueName: "spec"))
    var arch: String

    func run(_ context: CommandContext) throws -> InitSiteOutput {
        let signer = try context.signer(fingerprint: key)
        let home = try Home.createRegion(
            at: context.options.resolvedHome, regionID: regionID, modelID: modelID, arch: arch,
            signer: signer, collectorKeyPath: collectorKey)
        let pinned = try TrustSet.load(keysDirectory: home.layout.keys).key(for: .collector)!
        return InitSiteOutput(
            home: home.layout.root, site: regionID, modelId: modelID, key: signer.fingerprint,
            collectorKey: KeyInfo(pinned), role: "region")
    }
}

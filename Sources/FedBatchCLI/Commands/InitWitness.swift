import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct InitWitness: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "witness",
        abstract: "Create a witness's home: it audits the collector's generations and co-signs those that re-derive.",
        discussion: """
            Creates fedbatch.toml (role witness), keys/collector.asc (the \
            collector's key, pinned), keys/sites/, generations/ and inputs/. Pin \
            every site's key here with `fedbatch keys add --site`, so that the \
            inputs can be verified; give this witness's public key to the sites, \
            which pin it with `fedbatch keys add --witness W` and require \
            cosignatures with [trust] min_witnesses. Generations and the inputs \
            they name come from the collector's remote (fedbatch pull, with \
            [remote] publish_bundles at the collector) or as copies into \
            generations/ and inputs/. See fedbatch-witness(1).
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Init
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(name: .customLong("witness-id"), help: "This witness's id, as the sites pin it.")
    var witnessID: String

    @Option(help: ArgumentHelp("Fingerprint of this witness's signing key.", valueName: "fpr"))
    var key: String

    @Option(
        name: .customLong("collector-key"),
        help: ArgumentHelp("The collector's public key to pin.", valueName: "file.asc"))
    var collectorKey: String

    @Option(name: .customLong("model-id"), help: "The model id, as the collector's.")
    var modelID: String

    func run(_ context: CommandContext) throws -> InitSiteOutput {
        let signer = try context.signer(fingerprint: key)
        let home = try Home.createWitness(
            at: context.options.resolvedHome, witnessID: witnessID, modelID: modelID, signer: signer,
            collectorKeyPath: collectorKey)
        let pinned = try TrustSet.load(keysDirectory: home.layout.keys).key(for: .collector)!
        return InitSiteOutput(
            home: home.layout.root, site: witnessID, modelId: modelID, key: signer.fingerprint,
            collectorKey: KeyInfo(pinned), role: "witness")
    }
}

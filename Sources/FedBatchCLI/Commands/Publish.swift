import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Publish: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Collector: upload the generations the remote does not have yet; witness: its cosignatures.",
        discussion: """
            Every generations/gNNNNNN.fbg the remote ([remote] url, or --remote) \
            lacks, or holds with another size, is uploaded as \
            generations/gNNNNNN.fbg, whole or not at all. Sites take them with \
            fedbatch pull, which verifies each. With [remote] publish_bundles, \
            the inputs each generation names follow, as bundles/DIGEST.EXT, for \
            witnesses (a bundle encrypted to the collector is not published). On \
            a witness home, its cosignatures are uploaded, as \
            generations/gNNNNNN-W.fbc. Takes the home's lock. Exit status 5 when \
            the remote has them all.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @OptionGroup var remoteOption: RemoteOption

    func run(_ context: CommandContext) throws -> TransferOutput {
        let home = try context.home()
        return TransferOutput(
            direction: "upload", try Transfers(home: home).publish(to: try remoteOption.open(for: home)))
    }
}

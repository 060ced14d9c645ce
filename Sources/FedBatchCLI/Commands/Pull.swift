import ArgumentParser
import FedBatch
import Foundation

struct Pull: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Download from the remote: new bundles into a collector's inbox, new generations into a site's.",
        discussion: """
        On a collector, every inbox/SITE/FILE on the remote is downloaded \
        into inbox/ under a hidden name, fsynced and renamed, and removed \
        from the remote only then; a file the inbox already holds byte for \
        byte is not placed twice, and one larger than the model allows stays \
        on the remote, refused. fedbatch merge verifies them. On a site, \
        every generation the remote has and generations/ lacks is downloaded \
        and verified (collector's signature, model, number) before it is \
        renamed into place; one that fails stays out, and the exit status is \
        3. Takes the home's lock. Exit status 5 when there is nothing new.
        """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @OptionGroup var remoteOption: RemoteOption

    func run(_ context: CommandContext) throws -> TransferOutput {
        let home = try context.home()
        let store = try remoteOption.open(for: home)
        let report = home.config.role == .collector ? try home.pullBundles(from: store) : try home.pullGenerations(from: store)
        return TransferOutput(direction: "download", report)
    }
}

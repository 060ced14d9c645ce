import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
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
            3. On a regional collector, both: bundles from its own remote \
            ([remote] url, --remote) and generations from the root's \
            ([remote] upstream, --upstream). On a site, each generation is \
            trusted only through the ones before it (fedbatch-keys(1)), so they \
            are taken in order. Takes the home's lock. A file that changed on a \
            directory remote within merge.settle_seconds is left for the next \
            run, links there are never followed, and one object that fails is \
            refused with its reason while the others still move (exit 1). Exit \
            status 5 when there is nothing new.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @OptionGroup var remoteOption: RemoteOption

    @Option(
        help: ArgumentHelp(
            "Regional collector: the root's remote for this run (default: [remote] upstream).", valueName: "url"))
    var upstream: String?

    func run(_ context: CommandContext) throws -> TransferOutput {
        let home = try context.home()
        // With the collector's key, a download encrypted to it is checked
        // before it enters the inbox, as any other; without, the merge does.
        let decryption =
            home.config.role == .site ? nil : (try? context.signer(fingerprint: home.config.key, for: home))?.decryption
        switch home.config.role {
        case .collector:
            let remote = try remoteOption.open(for: home)
            // A signer also takes the other signers' generations,
            // cosignatures and proposals, first: a generation that reached
            // the threshold with them lets its inputs leave the shared
            // inbox, and a bundle trained on it merges in this round.
            guard home.config.trust.signerSet else {
                return TransferOutput(
                    direction: "download", try Transfers(home: home).pullBundles(from: remote, decryption: decryption))
            }
            var report = try Transfers(home: home).pullAsSigner(from: remote)
            report.append(try Transfers(home: home).pullBundles(from: remote, decryption: decryption))
            return TransferOutput(direction: "download", report)
        case .site, .witness:
            return TransferOutput(
                direction: "download", try Transfers(home: home).pullGenerations(from: try remoteOption.open(for: home))
            )
        case .region:
            // Generations first: a bundle on a generation this region has
            // not seen yet then merges in this round.
            var report = try Transfers(home: home).pullGenerations(
                from: try Transfers(home: home).upstream(override: upstream))
            // (Its bundles' waiting list included: a file still being
            // copied onto a directory remote is reported, not dropped.)
            report.append(
                try Transfers(home: home).pullBundles(from: try remoteOption.open(for: home), decryption: decryption))
            return TransferOutput(direction: "download", report)
        }
    }
}

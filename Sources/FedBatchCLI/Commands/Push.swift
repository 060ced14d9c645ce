import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Push: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Site: upload the bundles in outbox/ to the remote, then move them to sent/.",
        discussion: """
            Each bundle becomes inbox/SITE/FILE on the remote ([remote] url, or \
            --remote: s3://BUCKET/PREFIX or a directory such as a USB stick), \
            whole or not at all, and only then moves to sent/. A push killed \
            between the two uploads it again next time; the collector takes one \
            copy. With --encrypt (or [remote] encrypt = true) each bundle is \
            first encrypted to the collector key's encryption subkey and \
            uploaded as inbox/SITE/FILE.gpg: only the collector can read it. \
            A regional collector pushes its partial aggregates from outbox/ to \
            the root's remote ([remote] upstream, or --remote) the same way. \
            Takes the home's lock. A bundle that cannot be uploaded stays in \
            outbox/ with its reason and the others still go (exit 1); a link on \
            a directory remote is never followed. Exit status 5 when outbox/ is \
            empty.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @OptionGroup var remoteOption: RemoteOption

    @Flag(
        inversion: .prefixedNo, help: "Encrypt each bundle to the collector's key (default: [remote] encrypt, else no)."
    )
    var encrypt: Bool?

    func run(_ context: CommandContext) throws -> TransferOutput {
        let home = try context.home()
        // A regional collector's partial aggregates go up to the root.
        let store =
            home.config.role == .region
            ? try Transfers(home: home).upstream(override: remoteOption.remote) : try remoteOption.open(for: home)
        return TransferOutput(direction: "upload", try Transfers(home: home).push(to: store, encrypt: encrypt))
    }
}

import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Check: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that this home will work unattended: config, keys, chain, data, directories, remote.",
        discussion: """
            Runs every check that applies to the home and prints one line each: \
            ok, warning or failed, with a reason code. The config parses with no \
            unknown keys; the home is writable; the signing key is in its GnuPG \
            home, signs a scratch text without a prompt and does not expire within \
            30 days, nor does any pinned key; the chain verifies to the newest \
            generation; at a site, [training] data reads and fits the model, or \
            the [training] command's program is executable; a collector's [eval] \
            data likewise; [metrics] textfile_dir is writable; the remote (and a \
            region's upstream) answers a listing with the configured credentials. \
            Exit status 0 when nothing failed (warnings allowed), 1 otherwise. \
            What passed is printed on standard output, warnings and failures on \
            standard error (so --quiet prints only those).
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    func run(_ context: CommandContext) throws -> CheckOutput {
        let items = HomeCheck.run(root: context.options.resolvedHome) { home in
            try context.signer(fingerprint: home.config.key, for: home)
        }
        return CheckOutput(items: items.map(CheckOutput.Item.init))
    }
}

struct CheckOutput: CommandOutput {
    struct Item: Encodable {
        let name: String
        /// ok, warning or failed.
        let status: String
        let code: String
        let message: String

        init(_ i: CheckItem) {
            name = i.name
            status = i.status.rawValue
            code = i.code
            message = i.message
        }

        var text: String {
            "\(status.padding(toLength: 8, withPad: " ", startingAt: 0)) "
                + "\(name.padding(toLength: 17, withPad: " ", startingAt: 0)) \(message)"
                + (status == "ok" ? "" : " [\(code)]")
        }
    }

    let ok: Bool
    let failed: Int
    let warnings: Int
    let items: [Item]

    init(items: [Item]) {
        self.items = items
        failed = items.filter { $0.status == "failed" }.count
        warnings = items.filter { $0.status == "warning" }.count
        ok = failed == 0
    }

    var exitStatus: ExitStatus { ok ? .success : .failure }

    func render(into text: inout TextRendering) {
        // Problems go to stderr, so that a quiet run (cron) still reports
        // them; what passed goes to stdout, which --quiet drops.
        text.out = items.filter { $0.status == "ok" }.map(\.text)
        text.warnings = items.filter { $0.status != "ok" }.map(\.text)
    }
}

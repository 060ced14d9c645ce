import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// Options every subcommand takes, pulled in with `@OptionGroup`.
public struct GlobalOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The fedbatch home directory (default: $FEDBATCH_HOME, else the current directory).", valueName: "dir"))
    public var home: String?

    @Flag(name: .long, help: "Write machine-readable JSON to stdout; human text goes to stderr.")
    public var json = false

    @Flag(
        name: [.long, .customShort("q")],
        help: "Print only warnings and errors: nothing on success or when there is nothing to do (exit 5), for cron.")
    public var quiet = false

    @Option(
        name: .customLong("gnupg-home"),
        help: ArgumentHelp("Where the signing key lives (default: $GNUPGHOME, else ~/.gnupg).", valueName: "dir"))
    public var gnupgHome: String?

    @Option(
        name: .customLong("passphrase-file"),
        help: ArgumentHelp(
            "Read the signing key's passphrase from this file, for unattended signing.", valueName: "file"))
    public var passphraseFile: String?

    public init() {}

    /// These options as given after the subcommand, falling back to those
    /// given before it (`fedbatch --json inspect F` and `fedbatch inspect
    /// --json F` mean the same).
    public func merged(over outer: GlobalOptions) -> GlobalOptions {
        var m = self
        m.home = home ?? outer.home
        m.json = json || outer.json
        m.quiet = quiet || outer.quiet
        m.gnupgHome = gnupgHome ?? outer.gnupgHome
        m.passphraseFile = passphraseFile ?? outer.passphraseFile
        return m
    }

    /// --home, then $FEDBATCH_HOME, then the current directory.
    public var resolvedHome: String {
        if let home { return home }
        if let env = ProcessInfo.processInfo.environment["FEDBATCH_HOME"], !env.isEmpty { return env }
        return FileManager.default.currentDirectoryPath
    }
}

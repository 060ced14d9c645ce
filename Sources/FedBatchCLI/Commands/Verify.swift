import ArgumentParser
import FedBatch
import Foundation

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check files against the home's pinned keys.",
        discussion: """
        Each file's signature is checked first, against an isolated keyring \
        holding only the home's pinned keys: exactly one signature, good, by a \
        key that is neither expired nor revoked, with SHA-256 or stronger, and \
        pinned for the role the file claims (its site, or the collector). Only \
        then is the file decompressed and parsed, its model id compared with \
        the home's and its tensors checked against its architecture.

        Prints one verdict per file. Exit status 0 when every file verifies, \
        3 when any does not.
        """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Argument(help: ArgumentHelp("Update bundles (.fbu) or generations (.fbg).", valueName: "file"))
    var files: [String]

    func validate() throws {
        if files.isEmpty { throw ValidationError("give at least one file to verify") }
    }

    func run() throws {
        let home = try Home.open(global.resolvedHome)
        let verdicts = try home.verify(paths: files)
        let console = Console(global)
        if global.json {
            try console.emit(verdicts)
        } else {
            for v in verdicts {
                if v.ok {
                    console.say("ok    \(v.file): \(v.subject!), signed by \(v.signer!) (\(v.role!)), digest \(v.digest!)")
                } else {
                    // Failures go to stderr even without --json, so that a
                    // cron mail shows them.
                    Console.writeErr("FAIL  \(v.file): \(v.message!) [\(v.code!)]\n")
                }
            }
        }
        if verdicts.contains(where: { !$0.ok }) { throw ExitCode(ExitStatus.verificationFailed.rawValue) }
    }
}

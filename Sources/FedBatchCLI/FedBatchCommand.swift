import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The root command. Subcommands live in Commands/, one file each.
public struct FedBatchCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fedbatch",
        abstract: "Offline, batch federated learning through signed files.",
        discussion: """
            Sites train on their own data and write signed, zstd-compressed update \
            bundles; a collector verifies them and merges them into the next signed \
            model generation. Every exchange is a file that carries its own proof \
            of origin. See fedbatch(1) and fedbatch-bundle(5).

            EXIT STATUS
            \(ExitStatus.table)
            """,
        version: FedBatchVersion.current,
        subcommands: [
            Init.self, Keys.self, Train.self, Pack.self, Push.self, Pull.self, Merge.self, Publish.self, Revert.self,
            Prune.self, Status.self, Check.self, Report.self, Verify.self, Log.self, Export.self, Eval.self,
            Inspect.self, Audit.self, Witness.self,
            DataCommand.self, Stats.self,
        ]
    )

    /// Global options given before the subcommand.
    @OptionGroup(title: "Global options") var global: GlobalOptions

    public init() {}

    /// Parses, runs, and maps every failure to the documented exit table;
    /// under --json the error is a JSON line on stderr (fedbatch-json(7)).
    public static func main() {
        // --help under --json: the help text as a summary line, like every
        // other command's output (ArgumentParser would print it itself).
        let words = CommandLine.arguments.dropFirst().prefix { $0 != "--" }
        if words.contains("--json"), words.contains("--help") || words.contains("-h") {
            try? Console(json: true, quiet: false).finish(
                HelpOutput(help: helpMessage(for: commandType(named: Array(words)), columns: 80)))
            Foundation.exit(ExitStatus.success.rawValue)
        }
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            // Help, --version and argument errors belong to ArgumentParser;
            // usage errors are renumbered from its 64 to our 2.
            if exitCode(for: error) == .validationFailure {
                if jsonRequested(by: nil) {
                    Console(json: true, quiet: false).fail(code: "usage", message: message(for: error), status: .usage)
                } else {
                    Console.writeErr(fullMessage(for: error) + "\n")
                }
                Foundation.exit(ExitStatus.usage.rawValue)
            }
            // --help and --version under --json: the text as a summary line,
            // like every other command's output.
            if exitCode(for: error) == .success, jsonRequested(by: nil) {
                let text = fullMessage(for: error)
                let output: any CommandOutput =
                    words.contains("--version")
                    ? VersionOutput(version: text.trimmingCharacters(in: .whitespacesAndNewlines))
                    : HelpOutput(help: text)
                try? Console(json: true, quiet: false).finish(output)
                Foundation.exit(ExitStatus.success.rawValue)
            }
            Self.exit(withError: error)
        }
        let console = Console(json: jsonRequested(by: command), quiet: quietRequested(by: command))
        do {
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch let error as ValidationError {
            console.fail(code: "usage", message: error.message, status: .usage)
            Foundation.exit(ExitStatus.usage.rawValue)
        } catch {
            // A root command run without a subcommand asks ArgumentParser for help.
            if exitCode(for: error) == .success { Self.exit(withError: error) }
            let status = ExitStatus.of(error)
            // "Nothing to do" is not an error: under --quiet it prints nothing.
            if status == .nothingToDo && console.quiet && !console.json { Foundation.exit(status.rawValue) }
            console.fail(code: reasonCode(of: error), message: describe(error), status: status)
            Foundation.exit(status.rawValue)
        }
    }

    /// The (sub)command the words name: `keys add --json --help` names
    /// `keys add`. Options and their values are skipped.
    static func commandType(named words: [String]) -> ParsableCommand.Type {
        var type: ParsableCommand.Type = FedBatchCommand.self
        for w in words where !w.hasPrefix("-") {
            guard let sub = type.configuration.subcommands.first(where: { $0._commandName == w }) else { continue }
            type = sub
        }
        return type
    }

    private static func quietRequested(by command: ParsableCommand) -> Bool {
        (command as? any Subcommand)?.global.quiet ?? false
    }

    /// Whether the command line asked for JSON. Once parsed, the command
    /// knows; when parsing itself failed, the raw arguments are all there is.
    private static func jsonRequested(by command: ParsableCommand?) -> Bool {
        if let command = command as? any Subcommand { return command.global.json }
        if let root = command as? FedBatchCommand { return root.global.json }
        return CommandLine.arguments.dropFirst().prefix { $0 != "--" }.contains("--json")
    }
}

/// `--version` under --json.
struct VersionOutput: CommandOutput {
    let version: String
    func render(into text: inout TextRendering) { text.out = [version] }
}

/// `--help` (of any command) under --json: the text as it would print.
struct HelpOutput: CommandOutput {
    let help: String
    func render(into text: inout TextRendering) { text.out = [help] }
}

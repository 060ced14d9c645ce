import ArgumentParser
import FedBatch
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
        subcommands: [Init.self, Keys.self, Train.self, Pack.self, Merge.self, Verify.self, Log.self, Export.self, Eval.self, Inspect.self, DataCommand.self]
    )

    /// Global options given before the subcommand.
    @OptionGroup(title: "Global options") var global: GlobalOptions

    public init() {}

    /// Parses, runs, and maps every failure to the documented exit table.
    public static func main() {
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            // Help, --version and argument errors belong to ArgumentParser;
            // usage errors are renumbered from its 64 to our 2.
            if exitCode(for: error) == .validationFailure {
                Console.writeErr(fullMessage(for: error) + "\n")
                Foundation.exit(ExitStatus.usage.rawValue)
            }
            Self.exit(withError: error)
        }
        do {
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch let error as ValidationError {
            Console.writeErr("fedbatch: error: \(error.message)\n")
            Foundation.exit(ExitStatus.usage.rawValue)
        } catch {
            // A root command run without a subcommand asks ArgumentParser for help.
            if exitCode(for: error) == .success { Self.exit(withError: error) }
            Console.writeErr("fedbatch: error: \(error)\n")
            Foundation.exit(ExitStatus.of(error).rawValue)
        }
    }
}

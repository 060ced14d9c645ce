import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What every subcommand is given: its options, its console, and the home
/// they name.
struct CommandContext {
    let options: GlobalOptions
    let console: Console

    init(_ options: GlobalOptions) {
        self.options = options
        console = Console(json: options.json, quiet: options.quiet)
    }

    /// The home named by --home, $FEDBATCH_HOME or the current directory,
    /// required to have `role` when one is given.
    func home(as role: HomeRole? = nil) throws -> Home {
        if let role { return try Home.open(options.resolvedHome, as: role) }
        return try Home.open(options.resolvedHome)
    }

    /// The signer for a key in --gnupg-home, with --passphrase-file; for a
    /// home that exists, its `[gnupg]` table fills in what the command line
    /// does not give (paths relative to the home).
    func signer(fingerprint: String, for home: Home? = nil) throws -> PayloadSigner {
        func resolved(_ path: String?) -> String? {
            guard let path, let home else { return path }
            return path.hasPrefix("/") ? path : "\(home.layout.root)/\(path)"
        }
        return try PayloadSigner(
            gnupgHome: options.gnupgHome ?? resolved(home?.config.gnupg.home), fingerprint: fingerprint,
            passphraseFile: options.passphraseFile ?? resolved(home?.config.gnupg.passphraseFile))
    }

    /// Runs a `train` or `merge`, then rewrites the home's metrics textfile
    /// (`[metrics] textfile_dir`) with the outcome, whether it succeeded or
    /// not: a failing cron job must show up in monitoring. A metrics file
    /// that cannot be written is a warning; it never fails the run.
    func recordingMetrics<Output: CommandOutput>(
        _ command: String, home: Home, _ body: () throws -> Output
    ) throws -> Output {
        let started = Date()
        func record(_ status: ExitStatus) {
            let run = RunRecord(
                command: command, exitCode: status.rawValue, started: started,
                duration: Date().timeIntervalSince(started))
            do { try HomeMetrics(home: home).writeMetrics(run: run) } catch {
                console.warn("cannot write the metrics textfile: \(error)", code: "metrics.write")
            }
        }
        do {
            let output = try body()
            record(output.exitStatus)
            return output
        } catch {
            record(ExitStatus.of(error))
            throw error
        }
    }

    /// Warns about files in generations/ that are not generations, which
    /// every command ignores.
    func warnAboutForeignFiles(in home: Home) {
        for name in home.layout.foreignGenerationFiles() {
            console.warn(
                "ignoring \(home.layout.generations)/\(name): not a generation file name (gNNNNNN.fbg)",
                code: "home.foreign-file")
        }
    }
}

/// A subcommand: it computes a result, and the console renders it. No
/// subcommand prints its result or picks an exit status itself.
protocol Subcommand: ParsableCommand {
    associatedtype Output: CommandOutput
    /// The global options, merged from before and after the subcommand.
    var global: GlobalOptions { get }
    func run(_ context: CommandContext) throws -> Output
}

extension Subcommand {
    func run() throws {
        let context = CommandContext(global)
        let output = try run(context)
        try context.console.finish(output)
        if output.exitStatus != .success { throw ExitCode(output.exitStatus.rawValue) }
    }
}

/// A command's result: JSON through its Encodable fields (the summary
/// message of fedbatch-json(7)), text through `render`.
protocol CommandOutput: Encodable {
    func render(into text: inout TextRendering)
    /// 0 unless the result itself is a failure or "nothing to do".
    var exitStatus: ExitStatus { get }
}

extension CommandOutput {
    var exitStatus: ExitStatus { .success }
}

/// A result as text: `out` for stdout, `notes` for stderr (both dropped by
/// --quiet), `warnings` for stderr always.
struct TextRendering {
    var out: [String] = []
    var notes: [String] = []
    var warnings: [String] = []
}

/// An optional field that is written as null rather than left out, so that
/// every documented field is present in every message.
@propertyWrapper
struct OrNull<Value: Encodable>: Encodable {
    var wrappedValue: Value?

    init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }

    func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(wrappedValue)
    }
}

import FedBatch
import Foundation

/// Where a command's output goes. With `--json`, stdout carries exactly one
/// JSON document and human text moves to stderr; `--quiet` silences human
/// text but never JSON or errors.
struct Console {
    let json: Bool
    let quiet: Bool

    init(_ options: GlobalOptions) {
        json = options.json
        quiet = options.quiet
    }

    /// Human-readable output: stdout normally, stderr under --json.
    func say(_ text: String) {
        if quiet { return }
        if json { Self.writeErr(text + "\n") } else { Self.writeOut(text + "\n") }
    }

    /// Emits a JSON document on stdout (snake_case keys, sorted, pretty).
    func emit<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        Self.writeOut(String(decoding: try encoder.encode(value), as: UTF8.self) + "\n")
    }

    /// True when a person is watching: stderr is a terminal and neither
    /// --json nor --quiet asked for silence. Cron gets no progress lines.
    var showsProgress: Bool { !json && !quiet && isatty(2) != 0 }

    static func writeOut(_ s: String) { FileHandle.standardOutput.write(Data(s.utf8)) }
    static func writeErr(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }
}

/// A single self-overwriting status line on stderr, redrawn at most five
/// times a second.
final class ProgressLine {
    private let enabled: Bool
    private var last: UInt64 = 0
    private var drawn = false

    init(console: Console) { enabled = console.showsProgress }

    func update(_ text: @autoclosure () -> String, force: Bool = false) {
        guard enabled else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        guard force || now - last > 200_000_000 else { return }
        last = now
        drawn = true
        Console.writeErr("\r\u{1B}[K" + text())
    }

    func finish() {
        if enabled && drawn { Console.writeErr("\r\u{1B}[K") }
    }
}

extension Console {
    /// Warns about files in generations/ that are not generations, which
    /// every command ignores.
    func warnAboutForeignFiles(in home: Home) {
        for name in home.layout.foreignGenerationFiles() {
            Self.writeErr("fedbatch: warning: ignoring \(home.layout.generations)/\(name): not a generation file name (gNNNNNN.fbg)\n")
        }
    }
}

/// Re-executes with a fast OpenBLAS kernel when the library fell back to a
/// generic one (see NumericBackend.preferredCoreType); called first by the
/// commands that train or evaluate.
func ensureFastBLAS() {
    if let core = NumericBackend.preferredCoreType() {
        reexecuteSelf(setting: "OPENBLAS_CORETYPE", to: core)
    }
}

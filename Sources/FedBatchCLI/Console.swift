import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The one place that decides what a command prints and where.
///
/// In text mode the command's result goes to stdout, notes and a progress
/// line to stderr, and warnings and errors to stderr as
/// `fedbatch: warning: …`. `--quiet` drops the result, notes and progress:
/// only warnings and errors remain, so cron mails only when something is
/// wrong. With `--json`, stdout carries JSON lines (zero or more `status`
/// messages, then one `summary`) and stderr carries only JSON lines too
/// (`warning` and `error`); fedbatch-json(7) documents every field.
struct Console {
    let json: Bool
    let quiet: Bool

    init(json: Bool, quiet: Bool) {
        self.json = json
        self.quiet = quiet
    }

    /// A command's result, rendered in the form the options ask for.
    func finish<Output: CommandOutput>(_ output: Output) throws {
        if json {
            Self.writeOut(try Self.line(output, type: "summary"))
            return
        }
        var text = TextRendering()
        output.render(into: &text)
        for w in text.warnings { Self.writeErr(Self.printable(w) + "\n") }
        guard !quiet else { return }
        for n in text.notes { Self.writeErr(Self.printable(n) + "\n") }
        if !text.out.isEmpty { Self.writeOut(text.out.map(Self.printable).joined(separator: "\n") + "\n") }
    }

    /// A status message of a long command: a JSON line under --json; in text
    /// mode, the progress line shows it instead.
    func status<Status: Encodable>(_ status: Status) {
        guard json else { return }
        if let line = try? Self.line(status, type: "status") { Self.writeOut(line) }
    }

    /// Something the user should know that does not stop the command.
    func warn(_ message: String, code: String) {
        if json {
            if let line = try? Self.line(Problem(code: code, message: message), type: "warning") { Self.writeErr(line) }
        } else {
            Self.writeErr("fedbatch: warning: \(Self.printable(message))\n")
        }
    }

    /// The error that ended the command, with the exit status it causes.
    func fail(code: String, message: String, status: ExitStatus) {
        if json,
            let line = try? Self.line(
                Failure(code: code, message: message, exitCode: Int(status.rawValue)), type: "error")
        {
            Self.writeErr(line)
        } else {
            Self.writeErr("fedbatch: error: \(Self.printable(message))\n")
        }
    }

    /// True when a person is watching: stderr is a terminal and neither
    /// --json nor --quiet asked for silence. Cron gets no progress lines.
    var showsProgress: Bool { !json && !quiet && isatty(2) != 0 }

    /// One JSON line: the value's fields plus `message_type`, keys sorted
    /// and in snake_case, so that equal results print equal bytes.
    static func line<T: Encodable>(_ value: T, type: String) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: try encoder.encode(Tagged(messageType: type, value: value)), as: UTF8.self) + "\n"
    }

    /// Text for a terminal, where names, keys and manifest strings come
    /// from outsiders: control characters (C0 but tab and newline, DEL, C1)
    /// and the bidirectional controls that reorder what a reader sees
    /// (U+061C, U+200E/F, U+202A-E, U+2066-9) are shown as escapes, never
    /// sent raw. JSON output escapes them by itself.
    static func printable(_ s: String) -> String {
        func isControl(_ v: UInt32) -> Bool {
            (v < 0x20 && v != 0x0A && v != 0x09) || (0x7F...0x9F).contains(v) || v == 0x061C || v == 0x200E
                || v == 0x200F
                || (0x202A...0x202E).contains(v) || (0x2066...0x2069).contains(v)
        }
        guard s.unicodeScalars.contains(where: { isControl($0.value) }) else { return s }
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            if isControl(u.value) {
                out.append(
                    contentsOf: (u.value <= 0xFF
                        ? String(format: "\\x%02X", u.value) : String(format: "\\u{%04X}", u.value)).unicodeScalars)
            } else {
                out.append(u)
            }
        }
        return String(out)
    }

    static func writeOut(_ s: String) { FileHandle.standardOutput.write(Data(s.utf8)) }
    static func writeErr(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }
}

/// A value with a `message_type` field added beside its own.
private struct Tagged<Value: Encodable>: Encodable {
    let messageType: String
    let value: Value

    private enum CodingKeys: String, CodingKey { case messageType }

    func encode(to encoder: Encoder) throws {
        try value.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(messageType, forKey: .messageType)
    }
}

/// The body of a `warning` message.
private struct Problem: Encodable {
    let code: String
    let message: String
}

/// The body of an `error` message.
private struct Failure: Encodable {
    let code: String
    let message: String
    let exitCode: Int
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

/// Re-executes with a fast OpenBLAS kernel when the library fell back to a
/// generic one (see NumericBackend.preferredCoreType); called first by the
/// commands that train or evaluate.
func ensureFastBLAS() {
    if let core = NumericBackend.preferredCoreType() {
        reexecuteSelf(setting: "OPENBLAS_CORETYPE", to: core)
    }
}

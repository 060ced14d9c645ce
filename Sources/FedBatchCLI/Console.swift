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

    static func writeOut(_ s: String) { FileHandle.standardOutput.write(Data(s.utf8)) }
    static func writeErr(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }
}

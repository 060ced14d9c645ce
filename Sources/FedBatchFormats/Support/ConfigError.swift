import FedBatchNative
import Foundation

/// A setting that cannot be used: which file (or option) and why. It
/// depends on nothing, so that each feature's settings can live beside the
/// feature, below the homes that read them. The code is the one
/// `HomeError.config` has, so a bad setting exits the same way wherever it
/// is read.
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public let path: String
    public let reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var code: String { "home.error" }
    public var description: String { "\(path): \(reason)" }
}

extension ConfigError {
    /// Refuses a key of table `section` (nil: the top level) that is not in
    /// `allowed`, naming the line it is on in `text` and the allowed key it
    /// most likely meant: `merge.min_bundle is not a setting; did you mean
    /// merge.min_bundles?`. Every feature's settings check their table so.
    public static func checkKeys(
        _ keys: some Sequence<String>, allowed: Set<String>, section: String?, path: String, text: String?
    ) throws {
        for key in keys.sorted() where !allowed.contains(key) {
            let full = section.map { "\($0).\(key)" } ?? key
            let line = text.flatMap { lineNumber(of: key, in: section, text: $0) }.map { "line \($0): " } ?? ""
            var near: (key: String, distance: Int)?
            for candidate in allowed.sorted() {
                let d = editDistance(candidate, key)
                if d <= max(2, max(candidate.count, key.count) / 2), d < (near?.distance ?? Int.max) {
                    near = (candidate, d)
                }
            }
            let prefix = section.map { "\($0)." } ?? ""
            let hint: String
            if let near {
                hint = "; did you mean \(prefix)\(near.key)?"
            } else {
                hint = "; the keys here are " + allowed.sorted().joined(separator: ", ")
            }
            throw ConfigError(path: path, reason: "\(line)\(full) is not a setting\(hint)")
        }
    }

    /// A setting's refusal (`merge.max_wait must be …`) with the line that
    /// sets it in front, so that every wrong value, not only an unknown
    /// key, points at its line; a reason that names no setting, or already
    /// names its line, is returned as it is.
    public static func locate(_ reason: String, in text: String) -> String {
        guard !reason.hasPrefix("line "), let first = reason.split(separator: " ").first else { return reason }
        let parts = first.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2,
            let line = lineNumber(
                of: parts[1].trimmingCharacters(in: CharacterSet(charactersIn: ":,")), in: parts[0], text: text)
        else { return reason }
        return "line \(line): \(reason)"
    }

    /// The 1-based line where `key` is set in table `section` of a TOML
    /// text, found by reading the lines (a bare or quoted key before `=`).
    static func lineNumber(of key: String, in section: String?, text: String) -> Int? {
        var current: String? = nil
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") {
                current = String(line.dropFirst().prefix { $0 != "]" }).trimmingCharacters(in: .whitespaces)
                continue
            }
            guard current == section, let eq = line.firstIndex(of: "=") else { continue }
            let name = line[..<eq].trimmingCharacters(in: .whitespaces).trimmingCharacters(
                in: CharacterSet(charactersIn: "\"'"))
            if name == key { return i + 1 }
        }
        return nil
    }

    /// Levenshtein distance, for suggesting the key a typo meant.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let next = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = row[j]
                row[j] = next
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }
}

import Foundation
import TOMLKit

/// One table of fedbatch.toml as a feature reads it: unknown keys are
/// refused as soon as the section is opened (with the line and the key it
/// most likely meant), and each typed accessor refuses a value of the wrong
/// type or out of range with the key's full name and its line, so that a
/// feature's settings say only what they accept.
///
///     let s = try ConfigSection(t, name: "merge", allowed: keys, path: path, text: text)
///     m.maxWait = try s.number("max_wait", "a number of seconds, 0 or more") { $0 >= 0 } ?? m.maxWait
public struct ConfigSection {
    public let name: String
    let table: TOMLTable
    let path: String
    let text: String?

    public init(_ table: TOMLTable, name: String, allowed: Set<String>, path: String, text: String?) throws {
        try ConfigError.checkKeys(table.keys, allowed: allowed, section: name, path: path, text: text)
        self.table = table
        self.name = name
        self.path = path
        self.text = text
    }

    /// Opens `[name]` from a value that must be a table.
    public init(_ value: TOMLValueConvertible, name: String, allowed: Set<String>, path: String, text: String?) throws {
        try self.init(
            try Self.table(value, name: name, path: path), name: name, allowed: allowed, path: path, text: text)
    }

    /// `value` as a table, or the refusal of `[name]` that is not one.
    public static func table(_ value: TOMLValueConvertible, name: String, path: String) throws -> TOMLTable {
        guard let t = value.table else { throw ConfigError(path: path, reason: "[\(name)] must be a table") }
        return t
    }

    public func has(_ key: String) -> Bool { table[key] != nil }

    /// The refusal of `key`: `line 12: merge.max_wait must be …`.
    public func invalid(_ key: String, must requirement: String) -> ConfigError {
        invalid(key, "\(name).\(key) must be \(requirement)")
    }

    /// A refusal of `key` in words of the caller's own, with the line.
    public func invalid(_ key: String, _ reason: String) -> ConfigError {
        let line = text.flatMap { ConfigError.lineNumber(of: key, in: name, text: $0) }.map { "line \($0): " } ?? ""
        return ConfigError(path: path, reason: line + reason)
    }

    /// A key the feature cannot do without.
    public func required<T>(_ key: String, _ value: T?, needs: String) throws -> T {
        guard let value else { throw ConfigError(path: path, reason: "\(name).\(key) is missing: \(needs)") }
        return value
    }

    /// An integer that `valid` accepts; nil when the key is absent.
    public func int(_ key: String, _ requirement: String, where valid: (Int) -> Bool = { _ in true }) throws -> Int? {
        guard let v = table[key] else { return nil }
        guard let i = v.int, valid(i) else { throw invalid(key, must: requirement) }
        return i
    }

    /// A finite number (an integer or a float) that `valid` accepts.
    public func number(
        _ key: String, _ requirement: String, where valid: (Double) -> Bool = { _ in true }
    ) throws -> Double? {
        guard let v = table[key] else { return nil }
        guard let d = v.double ?? v.int.map(Double.init), d.isFinite, valid(d) else {
            throw invalid(key, must: requirement)
        }
        return d
    }

    /// A string that `valid` accepts.
    public func string(
        _ key: String, _ requirement: String, where valid: (String) -> Bool = { _ in true }
    ) throws -> String? {
        guard let v = table[key] else { return nil }
        guard let s = v.string, valid(s) else { throw invalid(key, must: requirement) }
        return s
    }

    /// One of an enumeration's raw values.
    public func choice<E: RawRepresentable<String>>(_ key: String, _ requirement: String) throws -> E? {
        guard let v = table[key] else { return nil }
        guard let s = v.string, let e = E(rawValue: s) else { throw invalid(key, must: requirement) }
        return e
    }

    public func bool(_ key: String) throws -> Bool? {
        guard let v = table[key] else { return nil }
        guard let b = v.bool else { throw invalid(key, must: "true or false") }
        return b
    }

    /// A list of strings: `list` describes the whole (`a non-empty list of
    /// codec names`), `each` one item, which `valid` must accept.
    public func strings(
        _ key: String, list: String, each: (String?) -> String, nonEmpty: Bool = false,
        where valid: (String) -> Bool
    ) throws -> [String]? {
        guard let v = table[key] else { return nil }
        guard let items = v.array, !nonEmpty || !items.isEmpty else { throw invalid(key, must: list) }
        return try items.map { item in
            guard let s = item.string, valid(s) else {
                throw invalid(key, "\(name).\(key): each must be \(each(item.string))")
            }
            return s
        }
    }
}

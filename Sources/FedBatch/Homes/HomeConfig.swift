import Foundation
import TOMLKit

/// The role a home plays.
public enum HomeRole: String, Sendable {
    case collector, site
}

/// Why a home or its config could not be used.
public enum HomeError: Error, Equatable, Sendable, CustomStringConvertible {
    case notAHome(String)
    case alreadyAHome(String)
    case wrongRole(path: String, expected: HomeRole, actual: HomeRole)
    case config(path: String, reason: String)
    case noGeneration(String)
    case invalidName(what: String, value: String)

    public var description: String {
        switch self {
        case .notAHome(let p): return "\(p) is not a fedbatch home (no fedbatch.toml); create one with fedbatch init, or pass --home"
        case .alreadyAHome(let p): return "\(p) is already a fedbatch home; refusing to overwrite it"
        case let .wrongRole(p, expected, actual): return "\(p) is a \(actual.rawValue) home; this command needs a \(expected.rawValue) home"
        case let .config(p, reason): return "\(p): \(reason)"
        case .noGeneration(let p): return "no generation in \(p)"
        case let .invalidName(what, value): return "\(what) \"\(value)\" must be 1-64 characters of A-Z a-z 0-9 . _ - and not start with . or -"
        }
    }
}

/// `fedbatch.toml`. fedbatch writes it with comments; administrators may
/// edit it. Unknown keys are refused so that a typo does not silently fall
/// back to a default.
public struct HomeConfig: Sendable, Equatable {
    public var role: HomeRole
    public var modelID: String
    /// The architecture spec (collector homes).
    public var arch: String?
    /// The signing key's primary fingerprint.
    public var key: String
    /// The site id (site homes).
    public var siteID: String?

    public init(role: HomeRole, modelID: String, arch: String? = nil, key: String, siteID: String? = nil) {
        self.role = role
        self.modelID = modelID
        self.arch = arch
        self.key = key
        self.siteID = siteID
    }

    static let allowedKeys: [HomeRole: Set<String>] = [
        .collector: ["role", "model_id", "arch", "key"],
        .site: ["role", "model_id", "site_id", "key"],
    ]

    public static func parse(_ text: String, path: String) throws -> HomeConfig {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            throw HomeError.config(path: path, reason: "line \(e.source.begin.line), column \(e.source.begin.column): \(e.description)")
        } catch {
            throw HomeError.config(path: path, reason: "not valid TOML: \(error)")
        }
        func string(_ key: String, required: Bool = true) throws -> String? {
            guard let v = table[key] else {
                if required { throw HomeError.config(path: path, reason: "missing key \"\(key)\"") }
                return nil
            }
            guard let s = v.string else { throw HomeError.config(path: path, reason: "\"\(key)\" must be a string") }
            return s
        }
        guard let roleText = try string("role"), let role = HomeRole(rawValue: roleText) else {
            throw HomeError.config(path: path, reason: "role must be \"collector\" or \"site\"")
        }
        for k in table.keys where !(allowedKeys[role]!.contains(k)) {
            throw HomeError.config(path: path, reason: "unknown key \"\(k)\" for a \(role.rawValue) home")
        }
        let config = HomeConfig(
            role: role, modelID: try string("model_id")!,
            arch: try string("arch", required: role == .collector),
            key: try string("key")!,
            siteID: try string("site_id", required: role == .site))
        try config.validate(path: path)
        return config
    }

    func validate(path: String) throws {
        guard ContainerPath.isIdentifier(modelID) else { throw HomeError.config(path: path, reason: "model_id \"\(modelID)\" must be 1-64 characters of A-Z a-z 0-9 . _ -") }
        if let siteID, !ContainerPath.isIdentifier(siteID) { throw HomeError.config(path: path, reason: "site_id \"\(siteID)\" must be 1-64 characters of A-Z a-z 0-9 . _ -") }
        if let arch {
            do { _ = try ModelArchitecture(spec: arch) } catch { throw HomeError.config(path: path, reason: "\(error)") }
        }
        guard key.count == 40, key.allSatisfy(\.isHexDigit) else { throw HomeError.config(path: path, reason: "key must be a 40-digit fingerprint") }
    }

    /// The file as fedbatch writes it.
    public func render() -> String {
        var lines = ["# fedbatch \(role.rawValue) home. See fedbatch(1).", "role = \(StrictJSON.quote(role.rawValue))"]
        if let siteID { lines.append("site_id = \(StrictJSON.quote(siteID))") }
        lines.append("model_id = \(StrictJSON.quote(modelID))")
        if let arch { lines.append("arch = \(StrictJSON.quote(arch))") }
        lines.append("# Fingerprint of the key this home signs with.")
        lines.append("key = \(StrictJSON.quote(key))")
        return lines.joined(separator: "\n") + "\n"
    }
}

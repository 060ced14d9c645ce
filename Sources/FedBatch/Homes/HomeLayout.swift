import Foundation

/// Where things live in a home. Every path a command touches comes from here.
public struct HomeLayout: Sendable {
    public let root: String

    public init(root: String) {
        self.root = root.hasSuffix("/") && root.count > 1 ? String(root.dropLast()) : root
    }

    public var config: String { "\(root)/fedbatch.toml" }
    public var keys: String { "\(root)/keys" }
    public var generations: String { "\(root)/generations" }
    public var inbox: String { "\(root)/inbox" }
    public var accepted: String { "\(root)/accepted" }
    public var quarantine: String { "\(root)/quarantine" }
    public var outbox: String { "\(root)/outbox" }
    public var stateDatabase: String { "\(root)/state.db" }
    public var lockFile: String { "\(root)/.fedbatch.lock" }

    public var collectorKey: String { Self.collectorKey(in: keys) }
    public func siteKey(_ site: String) -> String { "\(Self.siteKeysDirectory(in: keys))/\(site).asc" }

    static func collectorKey(in keys: String) -> String { "\(keys)/collector.asc" }
    static func siteKeysDirectory(in keys: String) -> String { "\(keys)/sites" }

    /// `g000042.fbg`
    public static func generationFileName(_ number: Int) -> String { String(format: "g%06d.fbg", number) }

    public func generation(_ number: Int) -> String { "\(generations)/\(Self.generationFileName(number))" }

    /// Generation numbers present in `generations/`, ascending.
    public func generationNumbers() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: generations)) ?? []
        return names.compactMap { name -> Int? in
            guard name.count == 11, name.hasPrefix("g"), name.hasSuffix(".fbg") else { return nil }
            return Int(name.dropFirst().prefix(6))
        }.sorted()
    }
}

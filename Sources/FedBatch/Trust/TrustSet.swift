import Foundation

/// A key pinned in a home, and the role it speaks for.
public struct PinnedKey: Sendable, Equatable {
    public let role: Role
    /// The primary key's fingerprint, 40 uppercase hex digits.
    public let fingerprint: String
    public let userID: String
    /// Seconds since the epoch; nil when the key never expires.
    public let expires: Int?
    public let path: String
}

/// The keys a home trusts: `keys/collector.asc` for the collector and, on a
/// collector home, `keys/sites/<site-id>.asc` for each site. A fingerprint
/// may be pinned for one role only.
public struct TrustSet: Sendable {
    public let keys: [PinnedKey]

    /// Where the pinned keys lie inside a keys directory.
    public enum Files {
        public static func collectorKey(in keys: String) -> String { "\(keys)/collector.asc" }
        public static func siteKeys(in keys: String) -> String { "\(keys)/sites" }
        public static func siteKey(_ site: String, in keys: String) -> String { "\(siteKeys(in: keys))/\(site).asc" }
    }

    public func key(for role: Role) -> PinnedKey? { keys.first { $0.role == role } }

    public func key(fingerprint: String) -> PinnedKey? {
        let f = fingerprint.uppercased()
        return keys.first { $0.fingerprint == f }
    }

    /// Reads every pinned key file below `keysDirectory`.
    static func load(keysDirectory: String, context: GPGContext) throws -> (TrustSet, [Data]) {
        var pinned: [PinnedKey] = []
        var blocks: [Data] = []
        func add(_ path: String, _ role: Role) throws {
            let data = try readFile(path, cap: 1 << 20)
            let key = try KeyFile.parse(data, path: path, context: context)
            if let other = pinned.first(where: { $0.fingerprint == key.fingerprint }) {
                throw TrustError.keyFile(path: path, reason: "key \(key.fingerprint) is also pinned for \(other.role); a key may speak for one role only")
            }
            pinned.append(PinnedKey(role: role, fingerprint: key.fingerprint, userID: key.userIDs.first ?? "",
                                    expires: key.primary.expires, path: path))
            blocks.append(data)
        }
        let collector = Files.collectorKey(in: keysDirectory)
        if FileManager.default.fileExists(atPath: collector) { try add(collector, .collector) }
        let sitesDir = Files.siteKeys(in: keysDirectory)
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: sitesDir)) ?? []).filter { $0.hasSuffix(".asc") }.sorted()
        for f in files {
            let site = String(f.dropLast(4))
            guard ContainerPath.isIdentifier(site) else {
                throw TrustError.keyFile(path: "\(sitesDir)/\(f)", reason: "file name is not <site-id>.asc with a valid site id")
            }
            try add("\(sitesDir)/\(f)", .site(site))
        }
        return (TrustSet(keys: pinned), blocks)
    }

    /// Reads the pinned keys (for listing); no verification keyring is kept.
    public static func load(keysDirectory: String) throws -> TrustSet {
        let scratch = try ScratchKeyring()
        return try load(keysDirectory: keysDirectory, context: scratch.context).0
    }
}

/// A public key read from a file, before it is pinned.
public struct KeyCandidate: Sendable {
    public let fingerprint: String
    public let key: GPGKey
    public let userID: String
    public let expires: Int?
    public let revoked: Bool
    public let expired: Bool
    /// The key normalised to one armored public key block.
    public let armored: Data

    /// Reads `path`, refusing secret keys and files with several keys.
    public static func read(path: String) throws -> KeyCandidate {
        let data = try readFile(path, cap: 1 << 20)
        let scratch = try ScratchKeyring()
        let key = try KeyFile.parse(data, path: path, context: scratch.context)
        do {
            try scratch.context.importKeys(data)
            let armored = try scratch.context.exportPublicKey(fingerprint: key.fingerprint)
            return KeyCandidate(fingerprint: key.fingerprint, key: key, userID: key.userIDs.first ?? "", expires: key.primary.expires,
                                revoked: key.revoked, expired: key.expired, armored: armored)
        } catch let e as GPGError {
            throw TrustError.keyFile(path: path, reason: e.message)
        }
    }
}

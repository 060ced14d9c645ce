import FedBatchFormats
import FedBatchNative
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
    /// For a collector key: the generations it may sign, first and last
    /// (nil: no last yet). A rotation ends the old key's range.
    public var validFrom = 0
    public var validUntil: Int?
    /// A site key that `keys remove` retired: no bundle it signs is merged
    /// any more, but `verify` still checks the bundles it signed that a
    /// generation included, so the audit trail survives.
    public var retired = false

    public init(role: Role, fingerprint: String, userID: String, expires: Int?, path: String) {
        self.role = role
        self.fingerprint = fingerprint
        self.userID = userID
        self.expires = expires
        self.path = path
    }

    /// Whether this collector key may sign generation `n`.
    public func maySign(generation n: Int) -> Bool { n >= validFrom && n <= (validUntil ?? Int.max) }
}

/// The keys a home trusts:
/// - `keys/collector.asc`, the collector key pinned at init, then each key
///   a verified rotation introduced (`keys/rotations/gNNNNNN/`), each valid
///   for its own range of generations;
/// - on a collector home, each site's keys: `keys/sites/<site-id>.asc` and,
///   during a rotation's overlap, a second one `keys/sites/<site-id>@<FPR>.asc`;
///   and the site keys `keys remove` retired, in `keys/retired/sites/`.
/// A fingerprint may be pinned for one role only.
public struct TrustSet: Sendable {
    public internal(set) var keys: [PinnedKey]
    /// The changes of the signer set this home accepted, in order of the
    /// generation each takes effect from (`keys/signer-sets/`).
    public internal(set) var signerSets: [SignerSetChange] = []

    /// Where the pinned keys lie inside a keys directory.
    public enum Files {
        public static func collectorKey(in keys: String) -> String { "\(keys)/collector.asc" }
        public static func siteKeys(in keys: String) -> String { "\(keys)/sites" }
        public static func siteKey(_ site: String, in keys: String) -> String { "\(siteKeys(in: keys))/\(site).asc" }
        /// A site's second key, pinned beside the first during a rotation.
        public static func siteKey(_ site: String, fingerprint: String, in keys: String) -> String {
            "\(siteKeys(in: keys))/\(site)@\(fingerprint).asc"
        }
        public static func retiredSiteKeys(in keys: String) -> String { "\(keys)/retired/sites" }
        /// At a root collector: the region that serves a site (keys add --region).
        public static func siteRegion(_ site: String, in keys: String) -> String {
            "\(siteKeys(in: keys))/\(site).region"
        }
        public static func rotations(in keys: String) -> String { "\(keys)/rotations" }
        /// A federation's signers (keys add --signer).
        public static func signerKeys(in keys: String) -> String { "\(keys)/signers" }
        public static func signerKey(_ signer: String, in keys: String) -> String {
            "\(signerKeys(in: keys))/\(signer).asc"
        }
        /// Witnesses whose cosignatures count (keys add --witness).
        public static func witnessKeys(in keys: String) -> String { "\(keys)/witnesses" }
        public static func witnessKey(_ witness: String, in keys: String) -> String {
            "\(witnessKeys(in: keys))/\(witness).asc"
        }
        public static func pendingRotation(in keys: String) -> String { "\(keys)/rotation-pending" }
        /// Accepted changes of the signer set, and one a signer staged.
        public static func signerSets(in keys: String) -> String { "\(keys)/signer-sets" }
        public static func pendingSignerSet(in keys: String) -> String { "\(keys)/signer-set-pending" }
    }

    /// The key that speaks for `role` now: for the collector the newest,
    /// for a site its first current key.
    public func key(for role: Role) -> PinnedKey? {
        keys.last { $0.role == role && !$0.retired && $0.validUntil == nil }
            ?? keys.first { $0.role == role && !$0.retired }
    }

    /// The sites with a current (not retired) key: those a collector
    /// takes updates from.
    public var pinnedSites: [String] {
        Set(
            keys.compactMap { k -> String? in
                guard !k.retired, case .site(let id) = k.role else { return nil }
                return id
            }
        ).sorted()
    }

    /// The witnesses pinned here, by id.
    public var pinnedWitnesses: [String] {
        keys.compactMap { k -> String? in
            guard case .witness(let id) = k.role else { return nil }
            return id
        }.sorted()
    }

    /// Every current (not retired) key of `role`.
    public func keys(for role: Role) -> [PinnedKey] { keys.filter { $0.role == role && !$0.retired } }

    public func key(fingerprint: String) -> PinnedKey? {
        let f = fingerprint.uppercased()
        return keys.first { $0.fingerprint == f && !$0.retired } ?? keys.first { $0.fingerprint == f }
    }

    /// The signer a key speaks for, if it is pinned as one (the collector
    /// key that signed generation 0 may be a signer too).
    public func signerID(fingerprint: String) -> String? {
        let f = fingerprint.uppercased()
        for k in keys where k.fingerprint == f {
            if case .signer(let id) = k.role { return id }
        }
        return nil
    }

    /// Reads every pinned key file below `keysDirectory`.
    /// Reads every pinned key file below `keysDirectory`, and the rotations
    /// in order. The rotations' signatures are checked by `Verifier`, which
    /// has the keyring to check them in.
    static func load(
        keysDirectory: String, context: GPGContext
    ) throws -> (TrustSet, [Data], [KeyRotation], [GPGKey]) {
        var pinned: [PinnedKey] = []
        var blocks: [Data] = []
        // gpg's listing of each block, as it read the file alone.
        var listings: [GPGKey] = []
        let batch = KeyFileBatch(directory: keysDirectory, context: context)
        @discardableResult
        func add(
            _ data: Data, path: String, _ role: Role, retired: Bool = false, expect fingerprint: String? = nil
        ) throws -> PinnedKey {
            let key = try KeyFile.parse(data, path: path, context: context, batch: batch)
            if let fingerprint, fingerprint != key.fingerprint {
                throw TrustError.keyFile(
                    path: path, reason: "holds key \(key.fingerprint), not the \(fingerprint) its name says")
            }
            // A signer's key is named again by each signer set that keeps it.
            if case .signer = role,
                let same = pinned.first(where: { $0.fingerprint == key.fingerprint && $0.role == role })
            {
                return same
            }
            if let other = pinned.first(where: { $0.fingerprint == key.fingerprint }) {
                // A retired copy of a key pinned again for the same site is
                // harmless; anything else is one key speaking for two roles,
                // except that the key which signed generation 0 may be one
                // of the signers that sign the generations after it.
                if other.role == role && (other.retired || retired) { return other }
                if case .signer = role, other.role == .collector {
                    var k = PinnedKey(
                        role: role, fingerprint: key.fingerprint, userID: key.userIDs.first ?? "",
                        expires: key.primary.expires, path: path)
                    k.retired = retired
                    pinned.append(k)
                    return k
                }
                throw TrustError.keyFile(
                    path: path,
                    reason: "key \(key.fingerprint) is also pinned for \(other.role); a key may speak for one role only"
                )
            }
            var k = PinnedKey(
                role: role, fingerprint: key.fingerprint, userID: key.userIDs.first ?? "", expires: key.primary.expires,
                path: path)
            k.retired = retired
            pinned.append(k)
            blocks.append(data)
            listings.append(key)
            return k
        }
        let collector = Files.collectorKey(in: keysDirectory)
        var rotations: [KeyRotation] = []
        if FileManager.default.fileExists(atPath: collector) {
            try add(try readFile(collector, cap: 1 << 20), path: collector, .collector)
            let dir = Files.rotations(in: keysDirectory)
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter({
                !$0.hasPrefix(".")
            }).sorted() {
                let path = "\(dir)/\(name)"
                let r = try KeyRotation.load(directory: path)
                guard name == KeyRotation.directoryName(fromGeneration: r.statement.fromGeneration) else {
                    throw TrustError.keyFile(
                        path: path,
                        reason:
                            "a rotation from generation \(r.statement.fromGeneration) must be "
                            + "in \(KeyRotation.directoryName(fromGeneration: r.statement.fromGeneration))"
                    )
                }
                let index = pinned.lastIndex { $0.role == .collector }!
                let previous = pinned[index]
                guard r.statement.oldKey == previous.fingerprint, r.statement.fromGeneration > previous.validFrom else {
                    throw TrustError.keyFile(
                        path: path,
                        reason:
                            "this rotation replaces \(r.statement.oldKey) from "
                            + "generation \(r.statement.fromGeneration), but the collector key then "
                            + "is \(previous.fingerprint) (from generation \(previous.validFrom))"
                    )
                }
                guard Digest.of(r.newKey).hex == r.statement.newKeySHA256 else {
                    throw TrustError.keyFile(
                        path: path, reason: "\(KeyRotation.Files.newKey) does not match the SHA-256 its statement names"
                    )
                }
                pinned[index].validUntil = r.statement.fromGeneration - 1
                let new = try add(
                    r.newKey, path: "\(path)/\(KeyRotation.Files.newKey)", .collector, expect: r.statement.newKey)
                if let i = pinned.lastIndex(where: { $0.fingerprint == new.fingerprint }) {
                    pinned[i].validFrom = r.statement.fromGeneration
                }
                rotations.append(r)
            }
        }
        for (dir, retired) in [
            (Files.siteKeys(in: keysDirectory), false), (Files.retiredSiteKeys(in: keysDirectory), true),
        ] {
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter {
                $0.hasSuffix(".asc")
            }.sorted()
            for f in files {
                let stem = String(f.dropLast(4))
                let parts = stem.split(separator: "@", maxSplits: 1).map(String.init)
                let fingerprint = parts.count == 2 ? parts[1] : nil
                guard let site = parts.first, ContainerPath.isIdentifier(site),
                    fingerprint.map({ $0.count == 40 && $0.allSatisfy(\.isHexDigit) }) ?? !retired
                else {
                    throw TrustError.keyFile(
                        path: "\(dir)/\(f)",
                        reason: retired
                            ? "file name is not <site-id>@<fingerprint>.asc"
                            : "file name is not <site-id>.asc or <site-id>@<fingerprint>.asc with a valid site id")
                }
                try add(
                    try readFile("\(dir)/\(f)", cap: 1 << 20), path: "\(dir)/\(f)", .site(site), retired: retired,
                    expect: fingerprint)
            }
        }
        // One key per witness and per signer, named by its id.
        for (dir, what, role) in [
            (Files.witnessKeys(in: keysDirectory), "witness", { Role.witness($0) }),
            (Files.signerKeys(in: keysDirectory), "signer", { Role.signer($0) }),
        ] as [(String, String, (String) -> Role)] {
            for f in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter({
                $0.hasSuffix(".asc")
            }).sorted() {
                let id = String(f.dropLast(4))
                guard ContainerPath.isIdentifier(id) else {
                    throw TrustError.keyFile(path: "\(dir)/\(f)", reason: "file name is not <\(what)-id>.asc")
                }
                try add(try readFile("\(dir)/\(f)", cap: 1 << 20), path: "\(dir)/\(f)", role(id))
            }
        }
        var sets: [SignerSetChange] = []
        let setsDirectory = Files.signerSets(in: keysDirectory)
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: setsDirectory)) ?? []).filter({
            !$0.hasPrefix(".")
        }).sorted() {
            let path = "\(setsDirectory)/\(name)"
            let change: SignerSetChange
            do { change = try SignerSetChange.load(directory: path, staged: false) } catch {
                throw TrustError.keyFile(path: path, reason: "\(error)")
            }
            guard name == SignerSetChange.directoryName(fromGeneration: change.statement.fromGeneration) else {
                throw TrustError.keyFile(
                    path: path,
                    reason: "a signer set from generation \(change.statement.fromGeneration) must be in "
                        + SignerSetChange.directoryName(fromGeneration: change.statement.fromGeneration))
            }
            for signer in change.statement.signers {
                try add(
                    change.keys[signer.id]!, path: "\(path)/\(SignerSetChange.Files.key(signer.id))",
                    .signer(signer.id), expect: signer.fingerprint)
            }
            sets.append(change)
        }
        // A key pinned again after it was retired counts as current.
        for (i, k) in pinned.enumerated() where k.retired {
            if pinned.contains(where: { !$0.retired && $0.fingerprint == k.fingerprint }) { pinned[i].retired = false }
        }
        var set = TrustSet(keys: pinned)
        set.signerSets = sets
        return (set, blocks, rotations, listings)
    }

    /// At a root collector: which region serves each site attached through
    /// one (`keys/sites/<site>.region`, holding the region id).
    public static func siteRegions(keysDirectory: String) throws -> [String: String] {
        let dir = Files.siteKeys(in: keysDirectory)
        var map: [String: String] = [:]
        for f in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
        where f.hasSuffix(".region") && !f.hasPrefix(".") {
            let site = String(f.dropLast(7))
            let region = String(decoding: try readFile("\(dir)/\(f)", cap: 256), as: UTF8.self).trimmingCharacters(
                in: .whitespacesAndNewlines)
            guard ContainerPath.isIdentifier(site), ContainerPath.isIdentifier(region) else {
                throw TrustError.keyFile(path: "\(dir)/\(f)", reason: "must be <site-id>.region holding one region id")
            }
            map[site] = region
        }
        return map
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
            return KeyCandidate(
                fingerprint: key.fingerprint, key: key, userID: key.userIDs.first ?? "", expires: key.primary.expires,
                revoked: key.revoked, expired: key.expired, armored: armored)
        } catch let e as GPGError {
            throw TrustError.keyFile(path: path, reason: e.message)
        }
    }
}

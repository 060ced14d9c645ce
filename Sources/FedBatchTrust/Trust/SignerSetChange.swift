import FedBatchFormats
import FedBatchNative
import Foundation

/// A change of a federation's signers (fedbatch-merge(1), NO SINGLE
/// COLLECTOR), carried in the chain the way TUF rotates a root: the new
/// set (ids, their keys, the threshold) rides in a generation as members
/// `signer-set/…`, and that generation must reach the threshold of the set
/// it was signed under. Its manifest commits to the members, so the old
/// set's signatures over its statement are the old set's signatures over
/// the new set; nothing else is signed separately. From `fromGeneration` on
/// (the generation after the one carrying it) the new set judges every
/// generation; the old set still judges the ones before, so the chain
/// verifies back to generation 0.
///
/// A signer stages a change with `fedbatch keys signers` (kept in
/// `keys/signer-set-pending/`, `fromGeneration` 0) and co-signs a
/// proposal that carries a change only if it staged the same one: a
/// change needs the consent of a threshold of the old signers, not just
/// one proposer. Accepted changes are kept in `keys/signer-sets/gNNNNNN/`
/// (NNNNNN = `fromGeneration`).
public struct SignerSetChange: Sendable, Equatable {
    public struct Signer: Codable, Equatable, Sendable {
        public let id: String
        public let fingerprint: String
        /// SHA-256 of the signer's key file as carried (`signer-set/ID.asc`).
        public let keySHA256: String

        enum CodingKeys: String, CodingKey {
            case id, fingerprint
            case keySHA256 = "key_sha256"
        }

        public init(id: String, fingerprint: String, keySHA256: String) {
            self.id = id
            self.fingerprint = fingerprint
            self.keySHA256 = keySHA256
        }
    }

    public struct Statement: CanonicalJSON {
        public var format = "fedbatch-signer-set"
        public var version = 1
        public let model: String
        /// The first generation the new set judges (0 while staged).
        public let fromGeneration: Int
        public let threshold: Int
        /// Sorted by id.
        public let signers: [Signer]

        enum CodingKeys: String, CodingKey {
            case format, version, model, threshold, signers
            case fromGeneration = "from_generation"
        }

        public init(model: String, fromGeneration: Int, threshold: Int, signers: [Signer]) {
            self.model = model
            self.fromGeneration = fromGeneration
            self.threshold = threshold
            self.signers = signers
        }
    }

    public let statement: Statement
    /// Each signer's public key file, by id.
    public let keys: [String: Data]

    public enum Files {
        public static let statement = "signers.json"
        public static let memberPrefix = "signer-set/"
        public static func key(_ id: String) -> String { "\(id).asc" }
        /// The most signers a set may name.
        public static let maxSigners = 100
    }

    public init(statement: Statement, keys: [String: Data]) {
        self.statement = statement
        self.keys = keys
    }

    /// A change to `signers` (id → public key file and its fingerprint)
    /// with `threshold`, checked as a carried one is.
    public static func create(
        model: String, threshold: Int, signers: [String: (fingerprint: String, key: Data)], fromGeneration: Int = 0
    ) throws -> SignerSetChange {
        let list = signers.keys.sorted().map { id in
            Signer(id: id, fingerprint: signers[id]!.fingerprint, keySHA256: Digest.of(signers[id]!.key).hex)
        }
        let change = SignerSetChange(
            statement: Statement(model: model, fromGeneration: fromGeneration, threshold: threshold, signers: list),
            keys: signers.mapValues(\.key))
        _ = try parse(change.statement.encoded, staged: fromGeneration == 0)
        try change.checkKeyDigests()
        return change
    }

    /// The same set, to take effect from generation `n`.
    public func from(generation n: Int) -> SignerSetChange {
        SignerSetChange(
            statement: Statement(
                model: statement.model, fromGeneration: n, threshold: statement.threshold,
                signers: statement.signers),
            keys: keys)
    }

    /// Whether two changes name the same set (ids, fingerprints,
    /// threshold), whatever generation each takes effect from. The key
    /// files may differ in bytes (another export of the same key): the
    /// fingerprints are what each signer consented to.
    public func sameSet(as other: SignerSetChange) -> Bool {
        statement.model == other.statement.model && statement.threshold == other.statement.threshold
            && statement.signers.map { [$0.id, $0.fingerprint] }
                == other.statement.signers.map { [$0.id, $0.fingerprint] }
    }

    /// The members a generation carries it as: the statement, then each
    /// key in the order of the ids.
    public var members: [(name: String, data: Data)] {
        [(Files.memberPrefix + Files.statement, statement.encoded)]
            + statement.signers.map { (Files.memberPrefix + Files.key($0.id), keys[$0.id]!) }
    }

    /// The change a container carries, or nil. The statement and exactly
    /// one key per signer it names; nothing else under the prefix.
    public static func carried(in members: [String: Data]) throws -> SignerSetChange? {
        let names = members.keys.filter { $0.hasPrefix(Files.memberPrefix) }
        if names.isEmpty { return nil }
        guard let bytes = members[Files.memberPrefix + Files.statement] else {
            throw SignerSetError.invalid("\(Files.memberPrefix) members without \(Files.statement)")
        }
        let s = try parse(bytes, staged: false)
        let expected = Set([Files.statement] + s.signers.map { Files.key($0.id) }).map { Files.memberPrefix + $0 }
        guard Set(names) == Set(expected) else {
            throw SignerSetError.invalid(
                "the members under \(Files.memberPrefix) must be \(Files.statement) and one key per signer it names")
        }
        var keys: [String: Data] = [:]
        for signer in s.signers { keys[signer.id] = members[Files.memberPrefix + Files.key(signer.id)]! }
        let change = SignerSetChange(statement: s, keys: keys)
        try change.checkKeyDigests()
        return change
    }

    /// Parses a statement, refusing any bytes but the canonical encoding of
    /// what they say, and a set two conflicting generations could both
    /// satisfy (a threshold of half the set or less).
    public static func parse(_ bytes: Data, staged: Bool) throws -> Statement {
        guard bytes.count <= 64 << 10 else { throw SignerSetError.invalid("the statement is over 64 KiB") }
        guard let s = Statement.decodeCanonical(bytes) else {
            throw SignerSetError.invalid("the statement is not canonical JSON of the expected form")
        }
        guard s.format == "fedbatch-signer-set", s.version == 1 else {
            throw SignerSetError.invalid("unknown format \(s.format) version \(s.version)")
        }
        guard staged ? s.fromGeneration == 0 : s.fromGeneration >= 2 else {
            throw SignerSetError.invalid(
                staged
                    ? "a staged change has from_generation 0"
                    : "from_generation must be at least 2 (generation 1 is judged by the set in fedbatch.toml)")
        }
        guard (1...Files.maxSigners).contains(s.signers.count) else {
            throw SignerSetError.invalid("a set names 1 to \(Files.maxSigners) signers, not \(s.signers.count)")
        }
        let ids = s.signers.map(\.id)
        guard ids == ids.sorted(), Set(ids).count == ids.count else {
            throw SignerSetError.invalid("the signers must be sorted by id, each once")
        }
        guard Set(s.signers.map(\.fingerprint)).count == ids.count else {
            throw SignerSetError.invalid("two signers name the same key")
        }
        for signer in s.signers {
            guard ContainerPath.isIdentifier(signer.id) else {
                throw SignerSetError.invalid("\(signer.id) is not a valid signer id")
            }
            guard signer.fingerprint.count == 40, signer.fingerprint.allSatisfy({ $0.isHexDigit && !$0.isLowercase })
            else {
                throw SignerSetError.invalid("\(signer.fingerprint) is not a 40-digit uppercase fingerprint")
            }
            guard signer.keySHA256.count == 64, signer.keySHA256.allSatisfy({ $0.isHexDigit && !$0.isUppercase })
            else {
                throw SignerSetError.invalid("the key_sha256 of \(signer.id) is not 64 lowercase hex digits")
            }
        }
        // With t ≤ n/2, two disjoint halves of the set could each sign a
        // different generation under one number, and both would count.
        guard s.threshold >= 1, 2 * s.threshold > s.signers.count, s.threshold <= s.signers.count else {
            throw SignerSetError.invalid(
                "threshold \(s.threshold) must be more than half of the \(s.signers.count) signers and at most all")
        }
        return s
    }

    private func checkKeyDigests() throws {
        for signer in statement.signers {
            guard let key = keys[signer.id], Digest.of(key).hex == signer.keySHA256 else {
                throw SignerSetError.invalid("the key of signer \(signer.id) does not match the SHA-256 it names")
            }
        }
    }

    // MARK: Files in a keys directory

    public static func directoryName(fromGeneration n: Int) -> String { String(format: "g%06d", n) }

    public static func load(directory: String, staged: Bool) throws -> SignerSetChange {
        let s = try parse(try readFile("\(directory)/\(Files.statement)", cap: 64 << 10), staged: staged)
        var keys: [String: Data] = [:]
        for signer in s.signers { keys[signer.id] = try readFile("\(directory)/\(Files.key(signer.id))", cap: 1 << 20) }
        let change = SignerSetChange(statement: s, keys: keys)
        try change.checkKeyDigests()
        return change
    }

    /// Writes the files into `directory`, never half of them.
    public func write(to directory: String) throws {
        try writeDirectoryAtomically(
            [(Files.statement, statement.encoded)] + statement.signers.map { (Files.key($0.id), keys[$0.id]!) },
            to: directory)
    }
}

/// Why a change of the signer set was refused.
public enum SignerSetError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    case invalid(String)

    public var code: String { "trust.signer-set" }

    public var description: String {
        switch self {
        case .invalid(let why): return "signer set change refused: \(why)"
        }
    }
}

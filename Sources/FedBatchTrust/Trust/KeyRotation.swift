import FedBatchFormats
import FedBatchNative
import Foundation

/// A change of the collector's signing key, the way TUF rotates a root key:
/// a statement naming the old key, the new key and the first generation the
/// new key signs, signed by both keys. The old key's signature makes it
/// authentic to anyone who pins the old key; the new key's signature shows
/// that the collector holds the new secret key.
///
/// The generation before `fromGeneration` carries the rotation as four
/// members (`rotation/...`) and is still signed by the old key, so a site
/// verifies it with the key it already pins and adopts the new key from it.
/// From `fromGeneration` on only the new key may sign generations; the old
/// key stays pinned for the generations before, so the chain verifies back
/// to generation 0. A home keeps every rotation it has accepted in
/// `keys/rotations/gNNNNNN/` (NNNNNN = `fromGeneration`).
public struct KeyRotation: Sendable, Equatable {
    public struct Statement: CanonicalJSON {
        public var format = "fedbatch-key-rotation"
        public var version = 1
        public let model: String
        public let oldKey: String
        public let newKey: String
        /// SHA-256 of `new-key.asc`, the exact bytes carried.
        public let newKeySHA256: String
        /// The first generation the new key signs.
        public let fromGeneration: Int

        enum CodingKeys: String, CodingKey {
            case format, version, model
            case oldKey = "old_key", newKey = "new_key", newKeySHA256 = "new_key_sha256", fromGeneration =
                "from_generation"
        }

        public init(model: String, oldKey: String, newKey: String, newKeySHA256: String, fromGeneration: Int) {
            self.model = model
            self.oldKey = oldKey
            self.newKey = newKey
            self.newKeySHA256 = newKeySHA256
            self.fromGeneration = fromGeneration
        }

    }

    public let statement: Statement
    public let newKey: Data
    public let oldSignature: Data
    public let newSignature: Data

    /// Member names inside a generation, and file names in a keys directory.
    public enum Files {
        public static let statement = "statement.json", newKey = "new-key.asc", oldSignature = "old-key.sig",
            newSignature = "new-key.sig"
        public static let all = [statement, newKey, oldSignature, newSignature]
        public static let memberPrefix = "rotation/"
    }

    public init(statement: Statement, newKey: Data, oldSignature: Data, newSignature: Data) {
        self.statement = statement
        self.newKey = newKey
        self.oldSignature = oldSignature
        self.newSignature = newSignature
    }

    /// Creates a rotation signed by both keys (`keys rotate`).
    public static func create(
        model: String, from old: PayloadSigner, to new: PayloadSigner, fromGeneration: Int
    ) throws -> KeyRotation {
        let key = try new.exportPublicKey()
        let statement = Statement(
            model: model, oldKey: old.fingerprint, newKey: new.fingerprint,
            newKeySHA256: Digest.of(key).hex, fromGeneration: fromGeneration)
        let bytes = statement.encoded
        return KeyRotation(
            statement: statement, newKey: key, oldSignature: try old.sign(bytes), newSignature: try new.sign(bytes))
    }

    /// Where a keys directory keeps the rotation `r` once accepted.
    public static func directory(of r: KeyRotation, in keys: String) -> String {
        "\(TrustSet.Files.rotations(in: keys))/\(directoryName(fromGeneration: r.statement.fromGeneration))"
    }

    /// The members a generation carries it as.
    public var members: [(name: String, data: Data)] {
        [
            (Files.memberPrefix + Files.statement, statement.encoded), (Files.memberPrefix + Files.newKey, newKey),
            (Files.memberPrefix + Files.oldSignature, oldSignature),
            (Files.memberPrefix + Files.newSignature, newSignature),
        ]
    }

    /// The rotation a container carries, or nil when it carries none. All
    /// four members or none; the statement is parsed strictly.
    public static func carried(in members: [String: Data]) throws -> KeyRotation? {
        let present = Files.all.filter { members[Files.memberPrefix + $0] != nil }
        if present.isEmpty { return nil }
        guard present.count == Files.all.count else {
            throw RotationError.invalid(
                "a key rotation needs all of \(Files.all.map { Files.memberPrefix + $0 }.joined(separator: ", "))")
        }
        func member(_ name: String) -> Data { members[Files.memberPrefix + name]! }
        return KeyRotation(
            statement: try parse(member(Files.statement)), newKey: member(Files.newKey),
            oldSignature: member(Files.oldSignature), newSignature: member(Files.newSignature))
    }

    /// Parses a statement, refusing any bytes but the canonical encoding of
    /// what they say (no extra fields, no other spelling).
    public static func parse(_ bytes: Data) throws -> Statement {
        guard bytes.count <= 4096 else { throw RotationError.invalid("the rotation statement is over 4096 bytes") }
        guard let s = Statement.decodeCanonical(bytes) else {
            throw RotationError.invalid("the rotation statement is not canonical JSON of the expected form")
        }
        guard s.format == "fedbatch-key-rotation", s.version == 1 else {
            throw RotationError.invalid("unknown rotation format \(s.format) version \(s.version)")
        }
        for f in [s.oldKey, s.newKey] where !(f.count == 40 && f.allSatisfy { $0.isHexDigit && !$0.isLowercase }) {
            throw RotationError.invalid("\(f) is not a 40-digit uppercase fingerprint")
        }
        guard s.oldKey != s.newKey else { throw RotationError.invalid("the old and the new key are the same") }
        guard s.fromGeneration >= 1 else { throw RotationError.invalid("from_generation must be at least 1") }
        return s
    }

    // MARK: Files in a keys directory

    public static func directoryName(fromGeneration n: Int) -> String { String(format: "g%06d", n) }

    public static func load(directory: String) throws -> KeyRotation {
        func read(_ name: String) throws -> Data { try readFile("\(directory)/\(name)", cap: 1 << 20) }
        return KeyRotation(
            statement: try parse(try read(Files.statement)), newKey: try read(Files.newKey),
            oldSignature: try read(Files.oldSignature), newSignature: try read(Files.newSignature))
    }

    /// Writes the four files into `directory`, never half of them.
    public func write(to directory: String) throws {
        try writeDirectoryAtomically(
            Array(zip(Files.all, [statement.encoded, newKey, oldSignature, newSignature])), to: directory)
    }
}

/// A signed statement's JSON: one canonical encoding (sorted keys, no
/// spaces, one trailing newline), so that equal statements are equal bytes
/// and a reader can refuse any other spelling of the same content.
public protocol CanonicalJSON: Codable, Equatable, Sendable {}

extension CanonicalJSON {
    public var encoded: Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try! encoder.encode(self)) + Data("\n".utf8)
    }

    /// The statement `bytes` hold, or nil unless they are its canonical
    /// encoding.
    public static func decodeCanonical(_ bytes: Data) -> Self? {
        guard let s = try? JSONDecoder().decode(Self.self, from: bytes), s.encoded == bytes else { return nil }
        return s
    }
}

/// Writes `files` into a new directory beside `directory` and renames it
/// into place (replacing what was there), so a reader never sees half of
/// them.
func writeDirectoryAtomically(_ files: [(name: String, data: Data)], to directory: String) throws {
    let parent = (directory as NSString).deletingLastPathComponent
    try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
    let tmp = "\(parent)/.\((directory as NSString).lastPathComponent).tmp-\(getpid())"
    try? FileManager.default.removeItem(atPath: tmp)
    try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: false)
    for (name, data) in files { try writeFileAtomically(data, to: "\(tmp)/\(name)") }
    if FileManager.default.fileExists(atPath: directory) { try FileManager.default.removeItem(atPath: directory) }
    try moveFile(tmp, to: directory)
}

/// Why a key rotation was refused.
public enum RotationError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    case invalid(String)

    public var code: String { "signature.rotation" }

    public var description: String {
        switch self {
        case .invalid(let why): return "key rotation refused: \(why)"
        }
    }
}

import FedBatchNative
import Foundation

/// What the signature of a format-2 container covers: a few hundred bytes
/// naming the payload by its SHA-256 and length, plus who the container is
/// from and for. gpg then hashes only these bytes, and the payload, which
/// runs to gigabytes, is hashed once, natively (the way apt's InRelease and
/// TUF protect large files).
///
/// The bytes are canonical JSON: keys sorted, no white space, integers in
/// plain decimal. A reader accepts a statement only if re-encoding what it
/// parsed gives back exactly the bytes it read, so every bit of it is
/// pinned down (fedbatch-bundle(5), "The statement").
public struct Statement: Equatable, Sendable {
    public static let format = "fedbatch"
    public static let version = 2
    /// Far above any real statement (about 250 bytes), far below anything
    /// that could cost memory.
    public static let maxBytes = 4096

    public var kind: Manifest.Kind
    public var model: String
    /// For a generation, its number.
    public var generation: Int?
    /// For an update, the site and its sequence number.
    public var site: Manifest.Site?
    public var payloadLength: Int64
    public var payloadDigest: Digest
    /// For a generation, the SHA-256 of its manifest.json: what lets
    /// `fedbatch prune` drop the weights and keep a manifest that still
    /// verifies (fedbatch-bundle(5), PRUNED GENERATIONS). Generations
    /// written before it existed have none, and are never pruned.
    public var manifestDigest: Digest?

    public init(
        kind: Manifest.Kind, model: String, generation: Int? = nil, site: Manifest.Site? = nil,
        payloadLength: Int64, payloadDigest: Digest, manifestDigest: Digest? = nil
    ) {
        self.kind = kind
        self.model = model
        self.generation = generation
        self.site = site
        self.payloadLength = payloadLength
        self.payloadDigest = payloadDigest
        self.manifestDigest = manifestDigest
    }

    /// The statement for a payload holding `manifest`, encoded as
    /// `manifestBytes`.
    public init(for manifest: Manifest, payload: Data, manifestBytes: Data? = nil) {
        self.init(
            for: manifest, payloadLength: Int64(payload.count), payloadDigest: Digest.of(payload),
            manifestBytes: manifestBytes)
    }

    /// The statement of a payload written a piece at a time, by its length
    /// and SHA-256.
    public init(for manifest: Manifest, payloadLength: Int64, payloadDigest: Digest, manifestBytes: Data? = nil) {
        self.init(
            kind: manifest.kind, model: manifest.model.id,
            generation: manifest.kind == .generation ? manifest.generation : nil,
            site: manifest.kind != .generation ? manifest.site : nil, payloadLength: payloadLength,
            payloadDigest: payloadDigest,
            manifestDigest: manifest.kind == .generation ? manifestBytes.map(Digest.of) : nil)
    }

    /// The canonical bytes. Identifiers are checked on the way in, so no
    /// string here ever needs escaping.
    public var encoded: Data {
        var fields: [String] = ["\"format\":\"\(Self.format)\""]
        if let generation { fields.append("\"generation\":\(generation)") }
        fields.append("\"kind\":\"\(kind.rawValue)\"")
        if let manifestDigest { fields.append("\"manifest\":{\"sha256\":\"\(manifestDigest.hex)\"}") }
        fields.append("\"model\":\"\(model)\"")
        fields.append("\"payload\":{\"length\":\(payloadLength),\"sha256\":\"\(payloadDigest.hex)\"}")
        if let site { fields.append("\"site\":{\"id\":\"\(site.id)\",\"seq\":\(site.seq)}") }
        fields.append("\"version\":\(Self.version)")
        return Data(("{" + fields.joined(separator: ",") + "}").utf8)
    }

    /// Parses statement bytes strictly: the exact fields for the kind, each
    /// of its type, and no other spelling of them than the canonical one.
    public static func parse(_ bytes: Data) throws -> Statement {
        guard bytes.count <= maxBytes else {
            throw StatementError.invalid("\(bytes.count) bytes, above the cap of \(maxBytes)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any] else {
            throw StatementError.invalid("not a JSON object")
        }
        guard object["format"] as? String == format else { throw StatementError.invalid("format is not \"\(format)\"") }
        guard let version = object["version"] as? Int else { throw StatementError.invalid("no version") }
        guard version == Self.version else { throw StatementError.version(version) }
        guard let kindName = object["kind"] as? String, let kind = Manifest.Kind(rawValue: kindName) else {
            throw StatementError.invalid("kind must be \"update\", \"generation\", \"partial\" or \"stats\"")
        }
        var expected: Set<String> =
            kind != .generation
            ? ["format", "version", "kind", "model", "payload", "site"]
            : ["format", "version", "kind", "model", "payload", "generation"]
        // A generation's statement may name its manifest's digest.
        if kind == .generation, object["manifest"] != nil { expected.insert("manifest") }
        guard Set(object.keys) == expected else {
            throw StatementError.invalid(
                "fields \(object.keys.sorted()) are not those of \(kind.withArticle): \(expected.sorted())"
            )
        }
        guard let model = object["model"] as? String, ContainerPath.isIdentifier(model) else {
            throw StatementError.invalid("model is not an identifier")
        }
        guard let payload = object["payload"] as? [String: Any], Set(payload.keys) == ["length", "sha256"],
            let length = payload["length"] as? Int64, length > 0,
            let hex = payload["sha256"] as? String, let digest = Digest(hex: hex)
        else {
            throw StatementError.invalid(
                "payload must be {length, sha256} with a positive length and 64 lowercase hex digits")
        }
        var statement = Statement(kind: kind, model: model, payloadLength: length, payloadDigest: digest)
        if kind != .generation {
            guard let site = object["site"] as? [String: Any], Set(site.keys) == ["id", "seq"],
                let id = site["id"] as? String, ContainerPath.isIdentifier(id), let seq = site["seq"] as? Int64, seq > 0
            else {
                throw StatementError.invalid("site must be {id, seq} with an identifier and a positive sequence number")
            }
            statement.site = .init(id: id, seq: seq)
        } else {
            guard let g = object["generation"] as? Int, g >= 0 else {
                throw StatementError.invalid("generation must be a non-negative integer")
            }
            statement.generation = g
            if let m = object["manifest"] {
                guard let manifest = m as? [String: Any], Set(manifest.keys) == ["sha256"],
                    let hex = manifest["sha256"] as? String,
                    let digest = Digest(hex: hex)
                else {
                    throw StatementError.invalid("manifest must be {sha256} with 64 lowercase hex digits")
                }
                statement.manifestDigest = digest
            }
        }
        // Anything JSONSerialization accepts but the canonical form does not
        // spell that way (white space, 1.0 for 1, escapes, key order).
        guard statement.encoded == bytes else {
            throw StatementError.invalid("not in canonical form (sorted keys, no white space)")
        }
        return statement
    }

    /// The payload's manifest must say what the signed statement says.
    public func check(against m: Manifest) throws {
        guard m.kind == kind else {
            throw StatementError.mismatch(
                "the statement is for \(kind.withArticle), the manifest for \(m.kind.withArticle)"
            )
        }
        guard m.model.id == model else {
            throw StatementError.mismatch("the statement names model \(model), the manifest \(m.model.id)")
        }
        if kind == .generation, m.generation != generation {
            throw StatementError.mismatch(
                "the statement names generation \(generation ?? -1), the manifest \(m.generation ?? -1)")
        }
        if kind != .generation, m.site != site {
            throw StatementError.mismatch(
                "the statement names \(site.map { "\($0.id) seq \($0.seq)" } ?? "no site"), the "
                    + "manifest \(m.site.map { "\($0.id) seq \($0.seq)" } ?? "none")"
            )
        }
    }
}

/// Why a statement, or the payload it names, was refused.
public enum StatementError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    case invalid(String)
    case version(Int)
    case mismatch(String)
    case payloadLength(declared: Int64, actual: Int64)
    case payloadDigest(declared: String, actual: String)

    public var code: String {
        switch self {
        case .invalid: return "statement.invalid"
        case .version: return "statement.version"
        case .mismatch: return "statement.mismatch"
        case .payloadLength: return "payload.length"
        case .payloadDigest: return "payload.digest"
        }
    }

    public var description: String {
        switch self {
        case .invalid(let why): return "the signed statement is malformed: \(why)"
        case .version(let v):
            return "the signed statement is format version \(v); this fedbatch reads version \(Statement.version)"
        case .mismatch(let why): return "the manifest contradicts the signed statement: \(why)"
        case let .payloadLength(declared, actual):
            return "the payload is \(actual) bytes, but the signed statement says \(declared)"
        case let .payloadDigest(declared, actual):
            return
                "the payload's SHA-256 is \(actual), but the signed statement says \(declared): the payload was "
                + "altered after signing"
        }
    }
}

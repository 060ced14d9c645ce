import FedBatchNative
import Foundation

/// Reads a manifest from the strict JSON tree, field by field, exactly as
/// fedbatch-bundle(5) names the fields.
///
/// Foundation's JSONDecoder with `convertFromSnakeCase` also accepts the
/// camelCase spelling of every key, so `{"num_examples": 100,
/// "numExamples": 99999999}` read as 99,999,999 where jq and Python read
/// 100: a parser differential. Here a key is its snake_case name and
/// nothing else; unknown keys are ignored, as the spec asks, so every
/// reader agrees. Integers must be written as integers (no fraction, no
/// exponent) and fit in 64 bits; other numbers must be finite.
struct ManifestDecoder {
    private let fields: [(String, JSONValue)]
    private let path: String

    private init(_ value: JSONValue, path: String) throws {
        guard case .object(let fields) = value else {
            throw ContainerError.manifestInvalid(
                path.isEmpty ? "the manifest is not a JSON object" : "field \(path) must be an object")
        }
        self.fields = fields
        self.path = path
    }

    static func decode(_ root: JSONValue) throws -> Manifest {
        let d = try ManifestDecoder(root, path: "")
        let format = try d.string("format")
        let version = try d.int("version")
        let kindText = try d.string("kind")
        guard let kind = Manifest.Kind(rawValue: kindText) else {
            throw ContainerError.manifestInvalid("kind \"\(kindText)\" is not update, generation, partial or stats")
        }
        let model = try d.object("model")
        var m = Manifest(
            kind: kind, model: .init(id: try model.string("id"), arch: try model.string("arch")),
            created: try d.string("created"), codec: try d.string("codec"))
        m.format = format
        m.version = version
        m.fedbatchVersion = try d.string("fedbatch_version")
        m.members = try d.array("members").map {
            try Manifest.Member(name: $0.string("name"), length: $0.int64("length"), sha256: $0.string("sha256"))
        }
        m.metrics = try d.numbers("metrics")
        m.generation = try d.optional("generation") { try d.int("generation") }
        m.parent = try d.optional("parent") { try d.object("parent").generationRef() }
        m.base = try d.optional("base") { try d.object("base").generationRef() }
        m.site = try d.optional("site") {
            let s = try d.object("site")
            return Manifest.Site(id: try s.string("id"), seq: try s.int64("seq"))
        }
        m.numExamples = try d.optional("num_examples") { try d.int64("num_examples") }
        m.included = try d.optional("included") { try d.array("included").map { try $0.includedBundle() } }
        m.includedCount = try d.optional("included_count") { try d.int("included_count") }
        // Once read, the member's list fills `included`: an inline list
        // beside the count would be silently replaced, so it is refused.
        if m.included != nil && m.includedCount != nil {
            throw ContainerError.manifestInvalid(
                "a manifest lists its bundles inline (included) or in \(ContainerPath.included) "
                    + "(included_count), not both")
        }
        m.evaluation = try d.optional("evaluation") { try d.object("evaluation").siteEvaluation() }
        m.partials = try d.optional("partials") {
            try d.array("partials").map {
                Manifest.IncludedPartial(
                    digest: try $0.string("digest"), region: try $0.string("region"), signer: try $0.string("signer"),
                    seq: try $0.int64("seq"), bundles: try $0.int("bundles"), weight: try $0.double("weight"))
            }
        }
        m.statistics = try d.optional("statistics") {
            try d.array("statistics").map {
                Manifest.IncludedStatistics(
                    digest: try $0.string("digest"), site: try $0.string("site"), signer: try $0.string("signer"),
                    seq: try $0.int64("seq"), rows: try $0.int64("rows"), base: try $0.int("base"))
            }
        }
        m.rejected = try d.optional("rejected") {
            try d.array("rejected").map {
                Manifest.RejectedBundle(digest: try $0.string("digest"), reason: try $0.string("reason"))
            }
        }
        m.strategy = try d.optional("strategy") {
            let s = try d.object("strategy")
            return Manifest.Strategy(
                name: try s.string("name"), parameters: try s.numbers("parameters"),
                selected: try s.optional("selected") { try s.strings("selected") })
        }
        m.privacy = try d.optional("privacy") {
            let p = try d.object("privacy")
            return Manifest.Privacy(
                rounds: try p.int("rounds"), inverseSquareSum: try p.double("inverse_square_sum"),
                epsilon: try p.double("epsilon"),
                delta: try p.double("delta"), maxEpsilon: try p.double("max_epsilon"),
                noise: try p.optional("noise") {
                    let n = try p.object("noise")
                    return Manifest.Privacy.Noise(
                        noiseMultiplier: try n.double("noise_multiplier"), clipNorm: try n.double("clip_norm"),
                        expectedSites: try n.int("expected_sites"), sigma: try n.double("sigma"),
                        seedSha256: try n.string("seed_sha256"))
                })
        }
        return m
    }

    // MARK: fields

    private func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    private func value(_ key: String) throws -> JSONValue {
        guard let v = fields.first(where: { $0.0 == key })?.1 else {
            throw ContainerError.manifestInvalid("missing field \(name(key))")
        }
        return v
    }

    /// Absent and null both mean "not given" for optional fields.
    private func optional<T>(_ key: String, _ read: () throws -> T) throws -> T? {
        guard let v = fields.first(where: { $0.0 == key })?.1, v != .null else { return nil }
        return try read()
    }

    private func string(_ key: String) throws -> String {
        guard case .string(let s) = try value(key) else {
            throw ContainerError.manifestInvalid("field \(name(key)) must be a string")
        }
        return s
    }

    private func int64(_ key: String) throws -> Int64 {
        guard case .number(let text) = try value(key), let n = Self.integer(text) else {
            throw ContainerError.manifestInvalid("field \(name(key)) must be an integer (digits only, within 64 bits)")
        }
        return n
    }

    private func int(_ key: String) throws -> Int { Int(try int64(key)) }

    private func double(_ key: String) throws -> Double {
        guard case .number(let text) = try value(key) else {
            throw ContainerError.manifestInvalid("field \(name(key)) must be a number")
        }
        guard let d = Double(text), d.isFinite else {
            throw ContainerError.manifestInvalid("field \(name(key)) is not a finite number")
        }
        return d
    }

    private func object(_ key: String) throws -> ManifestDecoder {
        try ManifestDecoder(try value(key), path: name(key))
    }

    private func array(_ key: String) throws -> [ManifestDecoder] {
        guard case .array(let items) = try value(key) else {
            throw ContainerError.manifestInvalid("field \(name(key)) must be an array")
        }
        return try items.enumerated().map { try ManifestDecoder($1, path: "\(name(key))[\($0)]") }
    }

    /// An array of strings.
    private func strings(_ key: String) throws -> [String] {
        guard case .array(let items) = try value(key) else {
            throw ContainerError.manifestInvalid("field \(name(key)) must be an array")
        }
        return try items.map {
            guard case .string(let s) = $0 else {
                throw ContainerError.manifestInvalid("field \(name(key)) must hold strings")
            }
            return s
        }
    }

    /// An object whose every value is a finite number.
    private func numbers(_ key: String) throws -> [String: Double] {
        let o = try object(key)
        var out: [String: Double] = [:]
        for (k, _) in o.fields { out[k] = try o.double(k) }
        return out
    }

    /// One line of `included.jsonl`, held to the rules of a manifest field.
    static func includedBundle(_ value: JSONValue, line: Int) throws -> Manifest.IncludedBundle {
        try ManifestDecoder(value, path: "\(ContainerPath.included) line \(line)").includedBundle()
    }

    private func includedBundle() throws -> Manifest.IncludedBundle {
        Manifest.IncludedBundle(
            digest: try string("digest"), site: try string("site"), signer: try string("signer"),
            seq: try int64("seq"), numExamples: try int64("num_examples"), weight: try double("weight"),
            base: try optional("base") { try int("base") },
            staleness: try optional("staleness") { try int("staleness") },
            stalenessWeight: try optional("staleness_weight") { try double("staleness_weight") },
            partial: try optional("partial") { try string("partial") },
            evaluation: try optional("evaluation") { try object("evaluation").siteEvaluation() },
            remembered: try optional("remembered") { try int("remembered") })
    }

    private func siteEvaluation() throws -> Manifest.SiteEvaluation {
        Manifest.SiteEvaluation(numExamples: try int64("num_examples"), metrics: try numbers("metrics"))
    }

    private func generationRef() throws -> Manifest.GenerationRef {
        Manifest.GenerationRef(number: try int("number"), digest: try string("digest"))
    }

    /// A JSON integer literal: an optional minus and digits, nothing else.
    static func integer(_ text: String) -> Int64? {
        let digits = text.hasPrefix("-") ? text.dropFirst() : Substring(text)
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int64(text)
    }
}

extension Manifest {
    /// The codecs this build reads; any other is refused, never read as fp32.
    public static var knownCodecs: Set<String> {
        Codecs.names.union([Manifest.exactSumCodec, Manifest.noTensorsCodec])
    }

    /// How far in the future a `created` time (or a signature) may lie:
    /// clocks at sites drift, but not by days.
    public static let maxClockSkew: TimeInterval = 24 * 3600

    /// `created` as a date, if it is RFC 3339 UTC with whole seconds
    /// (`2026-11-29T12:00:00Z`) and a real calendar time.
    public static func parseCreated(_ s: String) -> Date? {
        let b = Array(s.utf8)
        guard b.count == 20, b[4] == 0x2D, b[7] == 0x2D, b[10] == 0x54, b[13] == 0x3A, b[16] == 0x3A, b[19] == 0x5A
        else { return nil }
        func num(_ r: Range<Int>) -> Int? {
            guard b[r].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return Int(String(decoding: b[r], as: UTF8.self))
        }
        guard let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10), let h = num(11..<13), let mi = num(14..<16),
            let sec = num(17..<19),
            (1...12).contains(mo), d >= 1, d <= daysIn(month: mo, year: y), h < 24, mi < 60, sec < 60
        else { return nil }
        // Days since 1970-01-01 in the proleptic Gregorian calendar
        // (H. Hinnant's days_from_civil), without a Calendar per call.
        let yy = mo <= 2 ? y - 1 : y
        let era = yy / 400
        let yoe = yy - era * 400
        let doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return Date(timeIntervalSince1970: TimeInterval(days * 86_400 + h * 3600 + mi * 60 + sec))
    }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Refuses a container dated further in the future than clock skew
    /// explains (a manifest can be backdated, but not sent from 2035).
    public func checkCreated(notAfter now: Date) throws {
        guard let date = Manifest.parseCreated(created) else {
            throw ContainerError.manifestInvalid("created \"\(created)\" is not RFC 3339 UTC")
        }
        if date.timeIntervalSince(now) > Manifest.maxClockSkew {
            throw ContainerError.manifestInvalid(
                "created \(created) is more than 24 hours after this machine's clock (\(rfc3339(now)))")
        }
    }
}

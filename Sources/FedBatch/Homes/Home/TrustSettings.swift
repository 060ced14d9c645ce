import FedBatchFormats
import FedBatchTrust
import Foundation
import TOMLKit

/// What a home requires of a generation beyond one collector's signature:
/// the `[trust]` table (fedbatch-witness(1), and fedbatch-merge(1), NO
/// SINGLE COLLECTOR).
public struct TrustSettings: Sendable, Equatable {
    /// Valid cosignatures from distinct pinned witnesses a generation needs
    /// before this home trains on it, packs for it, exports it or verifies
    /// it (0: the collector's signature alone).
    public var minWitnesses = 0
    /// The federation's signers, by id (pinned with `keys add --signer`),
    /// and how many of them must have signed a generation after generation
    /// 0 for it to count (0: one collector signs alone).
    public var signers: [String] = []
    public var threshold = 0
    /// Who checks signatures: fedbatch in-process (the default) or one
    /// gpg process per signature.
    public var verify = SignatureVerification.builtin
    public init() {}

    /// Whether generations are signed by a set of signers.
    public var signerSet: Bool { threshold > 0 }

    static let keys: Set<String> = ["min_witnesses", "signers", "threshold", "verify"]

    static func parse(_ value: TOMLValueConvertible, path: String, text: String) throws -> TrustSettings {
        let s = try ConfigSection(value, name: "trust", allowed: keys, path: path, text: text)
        var t = TrustSettings()
        if let n = try s.int("min_witnesses", "an integer from 0 to 100", where: { (0...100).contains($0) }) {
            t.minWitnesses = n
        }
        t.signers =
            try s.strings("signers", list: "a list of signer ids", each: { _ in "a signer id" }) {
                ContainerPath.isIdentifier($0)
            } ?? []
        t.threshold = try s.int("threshold", "an integer from 0 to 100", where: { (0...100).contains($0) }) ?? 0
        t.verify = try s.choice("verify", "\"builtin\" or \"gpg\"") ?? .builtin
        guard Set(t.signers).count == t.signers.count else {
            throw ConfigError(path: path, reason: "trust.signers names a signer twice")
        }
        guard t.threshold <= t.signers.count else {
            throw ConfigError(
                path: path,
                reason: "trust.threshold is \(t.threshold), but trust.signers names \(t.signers.count) signers")
        }
        // With t ≤ n/2, two disjoint halves of the set could each sign a
        // different generation under one number, and both would count.
        if t.threshold > 0, 2 * t.threshold <= t.signers.count {
            throw ConfigError(
                path: path,
                reason:
                    "trust.threshold must be more than half of trust.signers (\(t.signers.count) signers: at least "
                    + "\(t.signers.count / 2 + 1)), or two conflicting generations could both reach it")
        }
        if t.threshold == 0, !t.signers.isEmpty {
            throw ConfigError(path: path, reason: "trust.signers needs trust.threshold (more than half of them)")
        }
        return t
    }

    func render() -> [String] {
        [
            "",
            "# Cosignatures a generation needs from distinct witnesses pinned with `fedbatch keys add --witness`",
            "# before this home uses it (fedbatch-witness(1)); 0 trusts the collector's signature alone.",
            "[trust]", "min_witnesses = \(minWitnesses)",
            "# No single collector (fedbatch-merge(1)): the signers pinned with `fedbatch keys add --signer`, and",
            "# how many must sign each generation after 0 (more than half of them).",
            signers.isEmpty
                ? "# signers = [\"a\", \"b\", \"c\"]"
                : "signers = [\(signers.map { StrictJSON.quote($0) }.joined(separator: ", "))]",
            threshold > 0 ? "threshold = \(threshold)" : "# threshold = 2",
            "# Signatures are checked in-process (\"builtin\"); \"gpg\" starts a gpg process for each instead.",
            verify == .builtin ? "# verify = \"gpg\"" : "verify = \"\(verify.rawValue)\"",
        ]
    }
}

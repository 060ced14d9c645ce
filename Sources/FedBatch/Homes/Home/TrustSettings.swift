import FedBatchFormats
import Foundation
import TOMLKit

/// What a site (or a regional collector) requires of a generation beyond
/// the collector's signature: the `[trust]` table (fedbatch-witness(1)).
public struct TrustSettings: Sendable, Equatable {
    /// Valid cosignatures from distinct pinned witnesses a generation needs
    /// before this home trains on it, packs for it, exports it or verifies
    /// it (0: the collector's signature alone).
    public var minWitnesses = 0
    public init() {}

    static let keys: Set<String> = ["min_witnesses"]

    static func parse(_ value: TOMLValueConvertible, path: String, text: String) throws -> TrustSettings {
        let s = try ConfigSection(value, name: "trust", allowed: keys, path: path, text: text)
        var t = TrustSettings()
        if let n = try s.int("min_witnesses", "an integer from 0 to 100", where: { (0...100).contains($0) }) {
            t.minWitnesses = n
        }
        return t
    }

    func render() -> [String] {
        [
            "",
            "# Cosignatures a generation needs from distinct witnesses pinned with `fedbatch keys add --witness`",
            "# before this home uses it (fedbatch-witness(1)); 0 trusts the collector's signature alone.",
            "[trust]", "min_witnesses = \(minWitnesses)",
        ]
    }
}

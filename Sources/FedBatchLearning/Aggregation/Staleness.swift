import FedBatchFormats
import FedBatchNative
import Foundation

/// How much a stale update counts: w(s) for an update trained on a
/// generation s generations older than the current one. These are the
/// functions of FedAsync (Xie et al., 2019), which FedBuff and Plato use too:
///
///     constant:    w(s) = 1
///     polynomial:  w(s) = (1 + s)^(−a)
///     hinge:       w(s) = 1 if s ≤ b, else 1 / (a·(s − b) + 1)
///
/// w(0) = 1 for each, so a merge of fresh updates is plain FedAvg.
public struct StalenessFunction: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case constant, polynomial, hinge }
    public let kind: Kind
    public let a: Double
    public let b: Double

    public init(kind: Kind, a: Double = 0.5, b: Double = 4) {
        self.kind = kind
        self.a = a
        self.b = b
    }

    public func weight(staleness s: Int) -> Double {
        let s = Double(max(s, 0))
        switch kind {
        case .constant: return 1
        case .polynomial: return pow(1 + s, -a)
        case .hinge: return s <= b ? 1 : 1 / (a * (s - b) + 1)
        }
    }

    /// Recorded in the generation's manifest with the strategy.
    public var parameters: [String: Double] {
        switch kind {
        case .constant: return [:]
        case .polynomial: return ["staleness_a": a]
        case .hinge: return ["staleness_a": a, "staleness_b": b]
        }
    }
}

import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// Why a bundle that verified was still refused by a merge.
public enum ProtocolError: Error, Equatable, Sendable, ReasonCoded {
    case notAnUpdate
    case staleBase(offered: Int, current: Int)
    case tooStale(offered: Int, current: Int, max: Int)
    case wrongBaseDigest(number: Int)
    case alreadyMerged(generation: Int)
    case duplicateInMerge(String)
    case sequenceReused(site: String, seq: Int64, last: Int64)
    case secondUpdate(site: String, generation: Int)
    case secondStatistics(site: String)
    case tooManyExamples(Int64, cap: Int64)
    case codecNotAccepted(String, accepted: [String])

    public var code: String {
        switch self {
        case .notAnUpdate: return "protocol.kind"
        case .staleBase, .wrongBaseDigest: return "protocol.stale-base"
        case .tooStale: return "protocol.too-stale"
        case .alreadyMerged, .duplicateInMerge: return "protocol.replay"
        case .sequenceReused: return "protocol.seq-reused"
        case .secondUpdate, .secondStatistics: return "protocol.one-per-site"
        case .tooManyExamples: return "protocol.num-examples"
        case .codecNotAccepted: return "protocol.codec"
        }
    }

    public var description: String {
        switch self {
        case .notAnUpdate: return "the file is a generation, not an update bundle"
        case let .staleBase(o, c):
            return
                "the update was trained on generation \(o), but the current generation is \(c): this collector never "
                + "wrote generation \(o)"
        case let .tooStale(o, c, max):
            return
                "the update was trained on generation \(o), \(c - o) generations behind the current \(c); "
                + "merge.max_staleness is \(max)"
        case let .wrongBaseDigest(n):
            return "the update names generation \(n) with a digest that is not this collector's generation \(n)"
        case .alreadyMerged(let g):
            return "already merged into generation \(g): this is a second copy of a bundle the collector has used"
        case .duplicateInMerge(let other): return "the same bundle as \(other) in this merge: a second copy"
        case let .sequenceReused(site, seq, last):
            return "site \(site) already used sequence number \(last), so \(seq) is a replay or a rewrite"
        case let .secondUpdate(site, g):
            return "site \(site) already has an update for generation \(g) in this merge; one per site"
        case .secondStatistics(let site):
            return "site \(site) already has a statistics bundle in this run; one per site"
        case let .tooManyExamples(n, cap): return "num_examples \(n) is above the cap of \(cap)"
        case let .codecNotAccepted(c, accepted):
            return "codec \(c) is not in merge.accept_codecs (\(accepted.joined(separator: ", ")))"
        }
    }
}

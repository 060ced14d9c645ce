import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

// JSON objects that more than one command prints; fedbatch-json(7) names
// each after the struct here.

/// A pinned key (`key` in fedbatch-json(7)).
struct KeyInfo: Encodable {
    let role: String
    @OrNull var site: String?
    let fingerprint: String
    let userId: String
    @OrNull var expires: String?
    /// "current" or "retired".
    let status: String
    /// For a collector key, the generations it signs (until: nil while it
    /// is the current key); null for a site key.
    @OrNull var validFrom: Int?
    @OrNull var validUntil: Int?

    init(_ k: PinnedKey) {
        status = k.retired ? "retired" : "current"
        validFrom = k.role == .collector ? k.validFrom : nil
        validUntil = k.role == .collector ? k.validUntil : nil
        switch k.role {
        case .collector: role = "collector"; site = nil
        case .site(let s): role = "site"; site = s
        case .witness(let w): role = "witness"; site = w
        case .signer(let s): role = "signer"; site = s
        }
        fingerprint = k.fingerprint
        userId = k.userID
        expires = k.expires.map { rfc3339(Date(timeIntervalSince1970: TimeInterval($0))) }
    }
}

/// An update bundle a site wrote (`bundle`): the same for train and pack.
struct BundleInfo: Encodable {
    let file: String
    let digest: String
    let site: String
    let seq: Int64
    let baseGeneration: Int
    let baseDigest: String
    let numExamples: Int64
    let metrics: [String: Double]
    let codec: String
    /// The site's evaluation of the base generation, as the bundle carries it.
    @OrNull var evaluation: BundleEvaluation?

    init(_ b: WrittenBundle) {
        file = b.path
        digest = b.digest
        site = b.site
        seq = b.seq
        baseGeneration = b.baseGeneration
        baseDigest = b.baseDigest
        numExamples = b.numExamples
        metrics = b.metrics
        codec = b.codec
        evaluation = b.evaluation.map { BundleEvaluation(examples: $0.numExamples, metrics: $0.metrics) }
    }
}

/// `bundle_evaluation` in fedbatch-json(7).
struct BundleEvaluation: Encodable {
    let examples: Int64
    let metrics: [String: Double]
}

/// One epoch of training (`epoch`).
struct EpochInfo: Encodable {
    let epoch: Int
    let loss: Double
    let accuracy: Double
    let seconds: Double
    let examplesPerSecond: Double
    @OrNull var evalLoss: Double?
    @OrNull var evalAccuracy: Double?

    init(_ e: EpochReport) {
        epoch = e.epoch
        loss = e.loss
        accuracy = e.accuracy
        seconds = e.seconds
        examplesPerSecond = e.samplesPerSecond
        evalLoss = e.evalLoss
        evalAccuracy = e.evalAccuracy
    }

    var text: String {
        var line = String(
            format: "epoch %d: loss %.4f, accuracy %.4f, %.0f examples/s", epoch, loss, accuracy, examplesPerSecond)
        if let a = evalAccuracy, let l = evalLoss {
            line += String(format: "; held-out loss %.4f, accuracy %.4f", l, a)
        }
        return line
    }
}

/// A site's evaluation of a generation on its own held-out data (what the
/// site claims): `site_evaluation` in fedbatch-json(7).
struct SiteEvaluationInfo: Encodable {
    let generation: Int
    let examples: Int64
    let metrics: [String: Double]

    init(_ row: Ledger.SiteEvaluationRow) {
        generation = row.generation
        examples = row.examples
        metrics = row.metrics
    }

    /// "g7: accuracy 0.8123 on 1000" (the first of accuracy, loss, or any metric).
    var text: String {
        let name = metrics["accuracy"] != nil ? "accuracy" : metrics.keys.sorted().first
        let figure = name.map { "\($0) " + String(format: "%.4f", metrics[$0]!) } ?? "no metrics"
        return "g\(generation): \(figure) on \(examples)"
    }
}

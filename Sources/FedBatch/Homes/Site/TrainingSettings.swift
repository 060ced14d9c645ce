import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation
import TOMLKit

/// A site's default training settings, the `[training]` table of its
/// fedbatch.toml; command-line flags override them.
public struct TrainingDefaults: Sendable, Equatable {
    public var data: String?
    public var epochs = 1
    public var batchSize = 64
    public var learningRate = 0.05
    public var optimizer = OptimizerKind.sgd
    public var momentum = 0.9
    public var weightDecay = 0.0
    public var proxMu = 0.0
    public var seed: UInt64 = 0
    /// How updates are stored (fedbatch-bundle(5), CODECS).
    public var codec = TrainingDefaults.defaultCodec
    /// The share of each tensor the topk codec keeps.
    public var topkFraction = TopKCodec.defaultFraction
    public init() {}

    public static let defaultCodec = "int8"

    static let keys: Set<String> = [
        "data", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "prox_mu", "seed",
        "codec", "topk_fraction",
    ]

    func render() -> [String] {
        var lines = ["", "# Defaults for `fedbatch train`; its flags override them.", "[training]"]
        lines.append(
            data.map { "data = \(StrictJSON.quote($0))" }
                ?? "# data = \"/path/to/data\"   # IDX directory, .csv or .safetensors shard")
        lines += [
            "epochs = \(epochs)", "batch_size = \(batchSize)", "lr = \(learningRate)",
            "optimizer = \"\(optimizer.rawValue)\"",
            "momentum = \(momentum)", "weight_decay = \(weightDecay)", "prox_mu = \(proxMu)", "seed = \(seed)",
            "# How updates are stored: fp32, fp16, bf16, int8 or topk (fedbatch-bundle(5)).",
            "codec = \(StrictJSON.quote(codec))", "topk_fraction = \(topkFraction)",
        ]
        return lines
    }
}

extension TrainingDefaults {
    /// Reads `[training]`, refusing unknown keys and values out of range.
    static func parse(_ t: TOMLTable, path: String, text: String) throws -> TrainingDefaults {
        var d = TrainingDefaults()
        try ConfigError.checkKeys(t.keys, allowed: TrainingDefaults.keys, section: "training", path: path, text: text)
        func bad(_ k: String, _ what: String) -> HomeError {
            HomeError.config(path: path, reason: "training.\(k) must be \(what)")
        }
        func number(_ k: String) throws -> Double? {
            guard let v = t[k] else { return nil }
            if let i = v.int { return Double(i) }
            if let f = v.double { return f }
            throw bad(k, "a number")
        }
        func positive(_ k: String) throws -> Int? {
            guard let v = t[k] else { return nil }
            guard let i = v.int, i > 0 else { throw bad(k, "a positive integer") }
            return i
        }
        if let v = t["data"] { guard let s = v.string else { throw bad("data", "a string") }; d.data = s }
        if let v = try positive("epochs") { d.epochs = v }
        if let v = try positive("batch_size") { d.batchSize = v }
        if let v = try number("lr") { guard v > 0, v.isFinite else { throw bad("lr", "positive") }; d.learningRate = v }
        if let v = t["optimizer"] {
            guard let s = v.string, let o = OptimizerKind(rawValue: s) else {
                throw bad("optimizer", "\"sgd\" or \"adam\"")
            }
            d.optimizer = o
        }
        if let v = try number("momentum") {
            guard (0..<1).contains(v) else { throw bad("momentum", "in [0, 1)") }; d.momentum = v
        }
        if let v = try number("weight_decay") {
            guard v >= 0 else { throw bad("weight_decay", "non-negative") }; d.weightDecay = v
        }
        if let v = t["codec"] {
            guard let s = v.string, Codecs.names.contains(s) else {
                throw bad("codec", "one of \(Codecs.names.sorted().map { "\"\($0)\"" }.joined(separator: ", "))")
            }
            d.codec = s
        }
        if let v = try number("topk_fraction") {
            guard v > 0, v <= 1 else { throw bad("topk_fraction", "in (0, 1]") }; d.topkFraction = v
        }
        if let v = try number("prox_mu") { guard v >= 0 else { throw bad("prox_mu", "non-negative") }; d.proxMu = v }
        if let v = t["seed"] {
            guard let i = v.int, i >= 0 else { throw bad("seed", "a non-negative integer") }; d.seed = UInt64(i)
        }
        return d
    }
}

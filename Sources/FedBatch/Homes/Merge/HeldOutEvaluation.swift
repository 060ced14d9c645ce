import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation
import TOMLKit

extension Collector {
    /// Evaluates the newest generation on the home's `[eval] data` and
    /// records the figures in state.db, where `fedbatch report` and the
    /// metrics read them. Nil when no eval data is configured.
    ///
    /// It runs after the merge has written and recorded the generation, so
    /// a failure here (the data moved, a model mismatch) never undoes a
    /// merge; the caller reports it as a warning.
    public func evaluateNewest(now: Date = Date()) throws -> Ledger.EvaluationRow? {
        let settings = home.config.eval
        guard let path = settings.data else { return nil }
        let resolved = path.hasPrefix("/") ? path : "\(home.layout.root)/\(path)"
        guard let newest = home.layout.generationNumbers().last else {
            throw HomeError.noGeneration(home.layout.generations)
        }
        let (v, weights) = try home.openGeneration(home.layout.generation(newest), verifier: try home.verifier())
        guard weights.arch.isBuiltIn else { throw NotBuiltInError("evaluate") }
        let dataset = try DataLoader.load(
            resolved, split: settings.split, labelColumn: settings.labelColumn, schema: try v.tabularSchema(),
            delimiter: home.config.data.delimiter)
        try dataset.check(against: weights.arch, path: resolved)
        let e = Evaluation.evaluate(weights, on: dataset)
        let row = Ledger.EvaluationRow(
            generation: newest, accuracy: e.accuracy, loss: e.loss, examples: dataset.count,
            data: resolved, evaluated: rfc3339(now))
        try Ledger(path: home.layout.stateDatabase).recordEvaluation(row)
        return row
    }
}

/// The collector's own held-out data: the `[eval]` table. After each merge
/// the new generation is evaluated on it and the figures are recorded in
/// state.db, for `fedbatch report` and the metrics.
public struct EvalSettings: Sendable, Equatable {
    public var data: String?
    public var split = DataSplit.test
    public var labelColumn = "label"
    public init() {}

    static let keys: Set<String> = ["data", "split", "label"]

    static func parse(_ value: TOMLValueConvertible, path: String, text: String) throws -> EvalSettings {
        let s = try ConfigSection(value, name: "eval", allowed: keys, path: path, text: text)
        var e = EvalSettings()
        e.data = try s.string("data", "a non-empty path") { !$0.isEmpty }
        e.split = try s.choice("split", "\"train\" or \"test\"") ?? e.split
        e.labelColumn = try s.string("label", "a column name") { !$0.isEmpty } ?? e.labelColumn
        return e
    }

    func render() -> [String] {
        [
            "", "# Held-out data to evaluate each new generation on (fedbatch report).", "[eval]",
            data.map { "data = \(StrictJSON.quote($0))" } ?? "# data = \"/usr/share/datasets/fashion-mnist\"",
            "split = \(StrictJSON.quote(split.rawValue))",
        ]
    }
}

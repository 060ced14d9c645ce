import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

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
            resolved, split: settings.split, labelColumn: settings.labelColumn, schema: try v.tabularSchema())
        try dataset.check(against: weights.arch, path: resolved)
        let e = Evaluation.evaluate(weights, on: dataset)
        let row = Ledger.EvaluationRow(
            generation: newest, accuracy: e.accuracy, loss: e.loss, examples: dataset.count,
            data: resolved, evaluated: rfc3339(now))
        try Ledger(path: home.layout.stateDatabase).recordEvaluation(row)
        return row
    }
}

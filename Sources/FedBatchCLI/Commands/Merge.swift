import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Merge: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Collector: verify the inbox, quarantine bad bundles, write the next generation.",
        discussion: """
            Takes the home's lock (a second merge exits 4 and changes nothing). \
            Files changed in the last --settle seconds, and hidden names (rsync's \
            temporary files), are left for the next run. \
            Every other file in inbox/ is verified like `fedbatch verify`, then checked \
            against the protocol: an update, based on the current generation or \
            one at most merge.max_staleness older, not \
            seen before by digest or by (site, seq), one per site, num_examples \
            within merge.max_examples, a codec in merge.accept_codecs whose stored \
            tensors fit the model. Refused files move to quarantine/ beside a \
            <name>.reason.json (code, message, digest, time); to retry one, \
            move it back into inbox/. If at least \
            --min-bundles (merge.min_bundles, 3) pass, or the oldest of them \
            arrived --max-wait (merge.max_wait, a day) ago, the strategy \
            (--strategy, merge.strategy: fedavg, fedavgm, fedadam, fedyogi, \
            fedadagrad, diloco, or the robust median, trimmed-mean, krum, \
            multikrum and bulyan) aggregates \
            them in digest order, a stale update's delta scaled by \
            merge.staleness (polynomial: (1+s)^-0.5), and the next generation is \
            written and signed, then recorded in state.db, then the inputs move \
            to accepted/. Otherwise nothing is written, they stay in the inbox, \
            and the exit status is 5. \
            With [privacy], deltas are clipped, weighed equally and noised, and a \
            merge that would take the cumulative epsilon above \
            privacy.max_epsilon refuses with exit status 6 and writes nothing. \
            With [eval] data set, the new generation is then evaluated on it and \
            the figures recorded in state.db (fedbatch report). With [metrics] \
            textfile_dir set, every run rewrites its Prometheus textfile \
            (fedbatch-metrics(7)). \
            On a regional collector's home (fedbatch init region) the merge \
            writes a signed partial aggregate for the root collector into \
            outbox/ instead of a generation, one per root generation \
            (fedbatch-merge(1), HIERARCHICAL MERGES).
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Option(
        name: .customLong("min-bundles"),
        help: "Quorum: the fewest accepted bundles that make a generation (default: merge.min_bundles).")
    var minBundles: Int?

    @Option(
        help: ArgumentHelp(
            "Seconds an inbox file must be unchanged before it is read (default: merge.settle_seconds, 60).",
            valueName: "seconds"))
    var settle: Double?

    @Option(
        help: ArgumentHelp(
            "The aggregation strategy for this run (default: merge.strategy): fedavg, fedavgm, fedadam, fedyogi, "
                + "fedadagrad, diloco, median, trimmed-mean, krum, multikrum or bulyan.",
            valueName: "name"))
    var strategy: String?

    @Option(
        name: .customLong("max-wait"),
        help: ArgumentHelp(
            "Merge below quorum once the oldest passing bundle has waited this long (default: merge.max_wait, 86400).",
            valueName: "seconds"))
    var maxWait: Double?

    @Option(
        name: .customLong("noise-seed"),
        help: ArgumentHelp(
            "Under [privacy]: draw the noise from this seed (a file of 64 hex digits, as noise-seeds/gNNNNNN.seed "
                + "holds) instead of a fresh one, to replay a merge for an audit.",
            valueName: "file"))
    var noiseSeed: String?

    func validate() throws {
        if let minBundles, minBundles < 1 { throw ValidationError("--min-bundles must be at least 1") }
        if let settle, !(0...86_400).contains(settle) {
            throw ValidationError("--settle must be from 0 to 86400 seconds")
        }
        if let strategy, !Strategies.names.contains(strategy) {
            throw ValidationError("--strategy must be one of \(Strategies.names.joined(separator: ", "))")
        }
        if let maxWait, !(maxWait >= 0 && maxWait.isFinite) {
            throw ValidationError("--max-wait must be a number of seconds, 0 or more")
        }
    }

    func run(_ context: CommandContext) throws -> MergeOutput {
        let home = try context.home()
        guard home.config.role != .site else {
            throw HomeError.wrongRole(path: home.layout.root, expected: .collector, actual: .site)
        }
        if home.config.eval.data != nil { ensureFastBLAS() }
        let collector = try Collector(home: home, signer: try context.signer(fingerprint: home.config.key, for: home))
        let console = context.console
        return try context.recordingMetrics("merge", home: home) {
            let progress = ProgressLine(console: console)
            // A held lock is LockHeld, which the exit table maps to 4.
            let seed = try noiseSeed.map { try GaussianNoise.readSeed(path: $0) }
            let report = try collector.merge(
                minBundles: minBundles, maxWait: maxWait, settleSeconds: settle, strategyName: strategy, noiseSeed: seed
            ) { p in
                console.status(MergeStatus(p))
                switch p.phase {
                case .identify: progress.update("hashing the inbox", force: true)
                case .verify: progress.update("verified \(p.done)/\(p.total) bundles")
                case .write: progress.update("writing the next generation", force: true)
                }
            }
            if let why = report.degenerate {
                console.warn("strategy \(report.strategy): \(why)", code: "strategy.degenerate")
            }
            var evaluation: Ledger.EvaluationRow?
            if report.outcome == .merged, home.config.eval.data != nil {
                progress.update("evaluating the new generation", force: true)
                // The generation is written and recorded: a failure here
                // is reported, and undoes nothing.
                do { evaluation = try collector.evaluateNewest() } catch {
                    console.warn(
                        "cannot evaluate generation \(report.generation ?? -1) on [eval] data: \(error)",
                        code: "eval.failed")
                }
            }
            progress.finish()
            return MergeOutput(report, evaluation: evaluation)
        }
    }
}

/// One step of a merge, under --json.
struct MergeStatus: Encodable {
    let phase: String
    let done: Int
    let total: Int
    @OrNull var file: String?

    init(_ p: MergeProgress) {
        phase = p.phase.rawValue
        done = p.done
        total = p.total
        file = p.file
    }
}

struct MergeOutput: CommandOutput {
    struct Rejected: Encodable {
        let name: String
        @OrNull var file: String?
        @OrNull var reasonFile: String?
        @OrNull var digest: String?
        let code: String
        let message: String
    }

    let outcome: String
    /// generation, or partial (a regional collector's merge).
    let kind: String
    @OrNull var generation: Int?
    @OrNull var file: String?
    @OrNull var digest: String?
    let quorum: Int
    let passed: Int
    let strategy: String
    let accepted: [MergeReport.Accepted]
    let rejected: [Rejected]
    let waiting: [MergeReport.Waiting]
    /// Under [merge] memory: the remembered updates added, and the sites
    /// whose earlier update was not.
    let remembered: [MergeReport.Remembered]
    let forgotten: [MergeReport.Forgotten]
    /// Whether the merge ran a chunk of the model at a time ([merge] stream).
    let streamed: Bool
    /// The new generation on the collector's [eval] data, when configured.
    @OrNull var evaluation: EvaluationInfo?
    /// Under [privacy], the generation's privacy record.
    @OrNull var privacy: PrivacyInfo?

    struct PrivacyInfo: Encodable {
        let epsilon: Double
        let delta: Double
        let maxEpsilon: Double
        let rounds: Int
        let noiseMultiplier: Double
        let sigma: Double
        let seedSha256: String
    }

    init(_ r: MergeReport, evaluation e: Ledger.EvaluationRow? = nil) {
        evaluation = e.map {
            EvaluationInfo(generation: $0.generation, examples: $0.examples, accuracy: $0.accuracy, loss: $0.loss)
        }
        outcome = r.outcome.rawValue
        kind = r.kind.rawValue
        generation = r.generation
        file = r.file
        digest = r.digest
        quorum = r.quorum
        passed = r.passed
        strategy = r.strategy
        accepted = r.accepted
        rejected = r.rejected.map {
            Rejected(
                name: $0.name, file: $0.file, reasonFile: $0.reasonFile, digest: $0.digest, code: $0.code,
                message: $0.message)
        }
        waiting = r.waiting
        remembered = r.remembered
        forgotten = r.forgotten
        streamed = r.streamed
        privacy = r.privacy.flatMap { p in
            p.noise.map {
                PrivacyInfo(
                    epsilon: p.epsilon, delta: p.delta, maxEpsilon: p.maxEpsilon, rounds: p.rounds,
                    noiseMultiplier: $0.noiseMultiplier, sigma: $0.sigma, seedSha256: $0.seedSha256)
            }
        }
    }

    var exitStatus: ExitStatus { outcome == MergeReport.Outcome.merged.rawValue ? .success : .nothingToDo }

    func render(into text: inout TextRendering) {
        // A refused bundle is a warning even under --quiet: someone should
        // look at quarantine/.
        text.warnings = rejected.map { r in
            let action = r.file.map { "quarantined \(r.name) as \($0)" } ?? "removed \(r.name)"
            return "\(action): \(r.message) [\(r.code)]"
        }
        text.notes = waiting.map { "left \($0.name) in the inbox: \($0.reason)" }
        switch outcome {
        case MergeReport.Outcome.merged.rawValue:
            text.out = [
                kind == "partial"
                    ? "partial aggregate for generation \(generation!) from \(accepted.count) bundles: \(file!)"
                    : "generation \(generation!) from \(accepted.count) bundles"
                        + (remembered.isEmpty ? "" : " and \(remembered.count) remembered") + ": \(file!)"
            ]
            text.notes += remembered.map {
                "remembered \($0.site)'s update from generation \($0.generation) (staleness \($0.staleness), weight "
                    + String(format: "%.3g", $0.stalenessWeight) + ")"
            }
            text.notes += forgotten.map { "forgot \($0.site)'s update: \($0.reason)" }
            if let p = privacy {
                text.notes.append(
                    String(
                        format:
                            "private: noise sigma %.4g (z %.4g); cumulative epsilon %.4g of %.4g at delta %.3g after "
                            + "%d noisy generations",
                        p.sigma, p.noiseMultiplier, p.epsilon, p.maxEpsilon, p.delta, p.rounds))
            }
            if let e = evaluation {
                text.notes.append(
                    String(
                        format: "generation %d on [eval] data: accuracy %.4f, loss %.4f (%d examples)",
                        e.generation, e.accuracy, e.loss, e.examples))
            }
        case MergeReport.Outcome.belowQuorum.rawValue:
            text.notes.append("\(passed) bundles passed, quorum is \(quorum): nothing written")
        default:
            text.notes.append("the inbox is empty: nothing to do")
        }
    }
}

/// A generation's figures on the collector's held-out data.
struct EvaluationInfo: Encodable {
    let generation: Int
    let examples: Int
    let accuracy: Double
    let loss: Double
}

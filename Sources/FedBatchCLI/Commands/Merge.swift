import ArgumentParser
import FedBatch
import Foundation

struct Merge: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Collector: verify the inbox, quarantine bad bundles, write the next generation.",
        discussion: """
        Takes the home's lock (a second merge exits 4 and changes nothing). \
        Files changed in the last --settle seconds, and hidden names (rsync's \
        temporary files), are left for the next run. \
        Every other file in inbox/ is verified like `fedbatch verify`, then checked \
        against the protocol: an update, based on the current generation, not \
        seen before by digest or by (site, seq), one per site, num_examples \
        within merge.max_examples, a codec in merge.accept_codecs whose stored \
        tensors fit the model. Refused files move to quarantine/ beside a \
        <name>.reason.json (code, message, digest, time); to retry one, \
        move it back into inbox/. If at least \
        --min-bundles (merge.min_bundles) pass, FedAvg aggregates them in \
        digest order and the next generation is written and signed, then \
        recorded in state.db, then the inputs move to accepted/. Otherwise \
        nothing is written, they stay in the inbox, and the exit status is 5.
        """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Option(name: .customLong("min-bundles"), help: "Quorum: the fewest accepted bundles that make a generation (default: merge.min_bundles).")
    var minBundles: Int?

    @Option(help: ArgumentHelp("Seconds an inbox file must be unchanged before it is read (default: merge.settle_seconds, 60).", valueName: "seconds"))
    var settle: Double?

    func validate() throws {
        if let minBundles, minBundles < 1 { throw ValidationError("--min-bundles must be at least 1") }
        if let settle, !(0...86_400).contains(settle) { throw ValidationError("--settle must be from 0 to 86400 seconds") }
    }

    func run(_ context: CommandContext) throws -> MergeOutput {
        let home = try context.home(as: .collector)
        let collector = try Collector(home: home, signer: try context.signer(fingerprint: home.config.key, for: home))
        let console = context.console
        let progress = ProgressLine(console: console)
        // A held lock is LockHeld, which the exit table maps to 4.
        let report = try collector.merge(minBundles: minBundles, settleSeconds: settle) { p in
            console.status(MergeStatus(p))
            switch p.phase {
            case .identify: progress.update("hashing the inbox", force: true)
            case .verify: progress.update("verified \(p.done)/\(p.total) bundles")
            case .write: progress.update("writing the next generation", force: true)
            }
        }
        progress.finish()
        return MergeOutput(report)
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
    @OrNull var generation: Int?
    @OrNull var file: String?
    @OrNull var digest: String?
    let quorum: Int
    let passed: Int
    let strategy: String
    let accepted: [MergeReport.Accepted]
    let rejected: [Rejected]
    let waiting: [MergeReport.Waiting]

    init(_ r: MergeReport) {
        outcome = r.outcome.rawValue
        generation = r.generation
        file = r.file
        digest = r.digest
        quorum = r.quorum
        passed = r.passed
        strategy = r.strategy
        accepted = r.accepted
        rejected = r.rejected.map { Rejected(name: $0.name, file: $0.file, reasonFile: $0.reasonFile, digest: $0.digest, code: $0.code, message: $0.message) }
        waiting = r.waiting
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
            text.out = ["generation \(generation!) from \(accepted.count) bundles: \(file!)"]
        case MergeReport.Outcome.belowQuorum.rawValue:
            text.notes.append("\(passed) bundles passed, quorum is \(quorum): nothing written")
        default:
            text.notes.append("the inbox is empty: nothing to do")
        }
    }
}

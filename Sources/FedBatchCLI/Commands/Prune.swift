import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Prune: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Drop old generations' weights, and the bundles and quarantined files only they needed.",
        discussion: """
            Every generation but the newest --keep (and those younger than \
            --older-than) becomes gNNNNNN.fbm: its manifest and its list of \
            included bundles with its original statement and signature, which \
            still verify, so fedbatch log checks the chain back to generation 0 \
            and still counts each generation's bundles. On a collector, the bundles in \
            accepted/ that a pruned generation included and the files in \
            quarantine/ that it reported go too. A generation that carries a key \
            rotation, or was written before statements named the manifest's \
            digest, is kept whole. Takes the home's lock. A pruned generation \
            can no longer be exported, evaluated or restored by revert.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Option(help: "Keep the weights of the newest N generations (at least 1).")
    var keep: Int = 10

    @Option(
        name: .customLong("older-than"),
        help: ArgumentHelp("Also keep generations younger than this many days.", valueName: "days"))
    var olderThan: Double?

    @Flag(name: .customLong("dry-run"), help: "Say what would be removed; change nothing.")
    var dryRun = false

    func validate() throws {
        if keep < 1 { throw ValidationError("--keep must be at least 1: the newest generation is never pruned") }
        if let olderThan, !(olderThan >= 0 && olderThan.isFinite) {
            throw ValidationError("--older-than must be a number of days, 0 or more")
        }
    }

    func run(_ context: CommandContext) throws -> PruneOutput {
        let home = try context.home()
        var policy = PrunePolicy()
        policy.keep = keep
        policy.olderThan = olderThan.map { $0 * 86_400 }
        policy.dryRun = dryRun
        let r = try home.prune(policy)
        return PruneOutput(
            dryRun: dryRun, generations: r.generations,
            skipped: r.skipped.map { .init(generation: $0.generation, reason: $0.reason) },
            accepted: r.accepted.count, quarantined: r.quarantined.count, bytesFreed: r.bytesFreed)
    }
}

struct PruneOutput: CommandOutput {
    struct Skipped: Encodable {
        let generation: Int
        let reason: String
    }

    let dryRun: Bool
    let generations: [Int]
    let skipped: [Skipped]
    let accepted: Int
    let quarantined: Int
    let bytesFreed: Int64

    /// Nothing to remove is "nothing to do", as for merge and train.
    var exitStatus: ExitStatus { generations.isEmpty && accepted == 0 && quarantined == 0 ? .nothingToDo : .success }

    func render(into text: inout TextRendering) {
        let verb = dryRun ? "would prune" : "pruned"
        text.notes = skipped.map { "kept generation \($0.generation) whole: \($0.reason)" }
        if exitStatus == .nothingToDo {
            text.notes.append("nothing to prune")
            return
        }
        let gens =
            generations.isEmpty
            ? "no generation" : "generations " + generations.map(String.init).joined(separator: ", ")
        text.out = [
            "\(verb) \(gens); \(accepted) accepted and \(quarantined) quarantined "
                + "files; \(ByteCountFormatter.string(fromByteCount: bytesFreed, countStyle: .binary)) freed"
        ]
    }
}

import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchTrust
import Foundation

struct KeysSigners: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "signers",
        abstract: "Signer: show the signer sets of the chain, or stage a change of the set.",
        discussion: """
            Without options: the set in fedbatch.toml (from generation 1), each \
            change the chain carried since (from the generation after the one \
            that carried it), and the change this signer staged, if any. \
            With --set and --threshold: stages a change to that set (a signer \
            new to the set must be pinned first with keys add --signer). The \
            next proposal this signer writes carries it, and it takes effect \
            once that generation has the current set's threshold; this signer \
            co-signs another's proposal that carries a change only if it staged \
            the same one, so a change needs the threshold of the old set, not \
            one proposer. --cancel drops a staged change. Staging and cancelling take \
            the home's lock.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Keys
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(
        name: .customLong("set"),
        help: ArgumentHelp("The new set of signers, by id, separated by commas.", valueName: "ids"))
    var set: String?

    @Option(help: "How many of the new set must sign each generation (more than half of them).")
    var threshold: Int?

    @Flag(help: "Drop the change this signer staged.")
    var cancel = false

    func validate() throws {
        if (set == nil) != (threshold == nil) { throw ValidationError("--set and --threshold go together") }
        if cancel && set != nil { throw ValidationError("give --set or --cancel, not both") }
    }

    func run(_ context: CommandContext) throws -> SignerSets {
        let home = try context.home(as: .collector)
        var action = "listed"
        if let set, let threshold {
            let ids = set.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            _ = try home.stageSignerSet(ids: ids, threshold: threshold)
            action = "staged"
        } else if cancel {
            action = try home.cancelStagedSignerSet() ? "cancelled" : "nothing-staged"
        }
        let verifier = try home.verifier()
        let starts = [1] + verifier.trust.signerSets.map(\.statement.fromGeneration)
        let sets = starts.map { n -> SignerSets.Set in
            let rule = home.signerRule(for: n, trust: verifier.trust)
            return .init(
                fromGeneration: n, threshold: rule.threshold,
                signers: rule.ids.map { .init(id: $0, fingerprints: rule.keys[$0]!.sorted()) })
        }
        let staged = try home.stagedSignerSet().map { change in
            SignerSets.Set(
                fromGeneration: nil, threshold: change.statement.threshold,
                signers: change.statement.signers.map { .init(id: $0.id, fingerprints: [$0.fingerprint]) })
        }
        return SignerSets(action: action, sets: sets, staged: staged)
    }
}

struct SignerSets: CommandOutput {
    struct Signer: Encodable {
        let id: String
        let fingerprints: [String]
    }
    struct Set: Encodable {
        /// nil for a staged change: the generation after the one that
        /// carries it.
        @OrNull var fromGeneration: Int?
        let threshold: Int
        let signers: [Signer]
    }
    /// listed, staged, cancelled or nothing-staged.
    let action: String
    let sets: [Set]
    @OrNull var staged: Set?

    func render(into text: inout TextRendering) {
        func line(_ s: Set) -> String {
            "\(s.threshold) of "
                + s.signers.map { "\($0.id) (\($0.fingerprints.joined(separator: ", ")))" }.joined(separator: ", ")
        }
        text.out =
            sets.map { "from generation \($0.fromGeneration ?? 0): \(line($0))" }
            + [staged.map { "staged: \(line($0)); the next proposal this signer writes carries it" } ?? "staged: none"]
        if action == "cancelled" { text.out.insert("the staged change is dropped", at: 0) }
        if action == "nothing-staged" { text.out.insert("no change was staged", at: 0) }
    }
}

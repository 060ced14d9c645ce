import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Revert: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Collector: write the next generation with an earlier generation's weights.",
        discussion: """
            For a generation that turned out bad: the chain moves forward, as \
            git revert does. The new generation's parent is the current one, its \
            weights are those of GENERATION (verified first), it includes no \
            bundle, and its manifest records strategy "revert" with the \
            generation restored. Sites accept it like any newer generation; \
            bundles already trained on the bad one are stale at the next merge. \
            Takes the home's lock (exit 4 while a merge runs).
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Argument(help: ArgumentHelp("The generation whose weights to restore: 7 or g7.", valueName: "generation"))
    var generation: String

    func run(_ context: CommandContext) throws -> RevertOutput {
        let home = try context.home(as: .collector)
        let collector = try Collector(home: home, signer: try context.signer(fingerprint: home.config.key, for: home))
        // A number (7, g7, g000007.fbg) names the file in generations/,
        // which revert verifies itself.
        let path = try home.layout.generation(named: generation)
        guard let target = HomeLayout.generationNumber((path as NSString).lastPathComponent) else {
            throw ValidationError("\(generation) does not name a generation (7, g7 or g000007.fbg)")
        }
        let r = try collector.revert(to: target)
        return RevertOutput(generation: r.generation, file: r.file, digest: r.digest, revertedTo: r.revertedTo)
    }
}

struct RevertOutput: CommandOutput {
    let generation: Int
    let file: String
    let digest: String
    let revertedTo: Int

    func render(into text: inout TextRendering) {
        text.out = ["generation \(generation) restores generation \(revertedTo)'s weights: \(file)"]
    }
}

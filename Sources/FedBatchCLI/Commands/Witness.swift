import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Witness: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Witness: audit a generation and, only if it re-derives bit for bit, co-sign it.",
        discussion: """
            Audits GENERATION (default: the newest) as fedbatch audit does, with \
            the inputs in inputs/ and each --bundles directory, and only if it \
            re-derives exactly writes a cosignature beside it: a detached OpenPGP \
            signature by this witness's key over the generation's statement, \
            generations/gNNNNNN-W.fbc, which fedbatch publish uploads and sites \
            fetch with fedbatch pull. A witness co-signs forward only and never \
            two different generations under one number: state.db records each \
            before its cosignature is written, and a fork is refused \
            (witness.fork). A private merge's noise cannot be re-derived without \
            the collector's seed, so such a generation is not co-signed. \

            On a signer's home (a collector home with [trust] threshold: no \
            single collector), co-signs another signer's proposal for the next \
            generation instead: GENERATION is then a proposal file, by default the \
            first in proposals/ (by signer id) that re-derives from this home's \
            chain and inputs (inbox/, accepted/, inputs/). It becomes this \
            signer's generation of that number, and no other can. Takes the \
            home's lock. Exit status 3 when nothing is co-signed.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Argument(
        help: ArgumentHelp(
            "The generation to co-sign: 7, g7 or latest; on a signer's home, a proposal file.",
            valueName: "generation"))
    var generation: String = "latest"

    @Option(
        name: .customLong("bundles"),
        help: ArgumentHelp("Also look for inputs in this directory (repeatable).", valueName: "dir"))
    var bundles: [String] = []

    func run(_ context: CommandContext) throws -> WitnessOutput {
        let home = try context.home()
        context.warnAboutForeignFiles(in: home)
        let signer = try context.signer(fingerprint: home.config.key, for: home)
        let progress = ProgressLine(console: context.console)
        defer { progress.finish() }
        let directories = bundles.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        let r: CosignReport
        if home.config.role == .collector, home.config.trust.signerSet {
            r = try home.cosignProposal(
                generation == "latest" ? nil : generation, signer: signer, bundles: directories
            ) { p in progress.update("auditing the proposal for generation \(p.generation)", force: true) }
        } else {
            guard home.config.role == .witness else {
                throw HomeError.wrongRole(path: home.layout.root, expected: .witness, actual: home.config.role)
            }
            guard generation == "latest" || Audit.number(generation) != nil else {
                throw ValidationError("\(generation) does not name a generation (7, g7 or latest)")
            }
            r = try home.cosign(
                generation: generation == "latest" ? nil : Audit.number(generation), signer: signer,
                bundles: directories
            ) { p in progress.update("auditing generation \(p.generation)", force: true) }
        }
        return WitnessOutput(
            generation: r.generation, digest: r.digest, witness: r.witness, file: r.file, again: r.again,
            inputs: r.audit.inputs, strategy: r.audit.strategy)
    }
}

struct WitnessOutput: CommandOutput {
    let generation: Int
    let digest: String
    let witness: String
    let file: String
    let again: Bool
    let inputs: Int
    @OrNull var strategy: String?

    func render(into text: inout TextRendering) {
        text.out = [
            "co-signed generation \(generation) (\(String(digest.prefix(12)))) as witness \(witness)"
                + (again ? " again" : "") + ": re-derived from \(inputs) input\(inputs == 1 ? "" : "s"); \(file)"
        ]
    }
}

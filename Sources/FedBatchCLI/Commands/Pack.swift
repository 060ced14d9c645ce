import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Pack: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Site: make a signed update bundle from weights trained elsewhere.",
        discussion: """
            For sites that train with PyTorch or anything else: --weights is a \
            safetensors file of the full model with PyTorch's names, as \
            `safetensors.torch.save_file(model.state_dict(), F)` writes it. Its \
            names and shapes are checked against the base generation's \
            architecture and every value must be finite. The bundle holds the \
            delta from the base generation, exactly as `fedbatch train` writes it. \
            The base is the generation the weights came from, as the \
            fedbatch_generation and fedbatch_digest that `fedbatch export` writes \
            into their metadata name it (keep that metadata when saving); --base \
            must agree with it. Without that metadata, --base or else the newest \
            generation is used, with a warning.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Option(help: ArgumentHelp("The trained weights (full model, not a delta).", valueName: "file.safetensors"))
    var weights: String

    @Option(name: .customLong("num-examples"), help: "How many training examples produced them.")
    var numExamples: Int64

    @Option(
        help: ArgumentHelp(
            "The generation they were trained from: a .fbg file, or latest, 7 or g7 (default: the newest in "
                + "generations/).",
            valueName: "generation"))
    var base: String?

    @Option(
        name: .customLong("metric"),
        help: ArgumentHelp("A metric to record, as name=value (repeatable).", valueName: "name=value"))
    var metrics: [String] = []

    @Flag(help: "Write a bundle even if one was already sent for this generation (the collector keeps one per site).")
    var force = false

    @Option(
        help: ArgumentHelp(
            "How to store the update: fp32, fp16, bf16, int8 or topk (default: training.codec).", valueName: "name"))
    var codec: String?

    @Option(
        name: .customLong("topk-fraction"),
        help: ArgumentHelp(
            "The share of each tensor topk keeps (default: training.topk_fraction, 0.01).", valueName: "fraction"))
    var topkFraction: Double?

    func validate() throws {
        if let codec, !Codecs.names.contains(codec) {
            throw ValidationError("--codec must be one of \(Codecs.names.sorted().joined(separator: ", "))")
        }
        if let topkFraction, !(topkFraction > 0 && topkFraction <= 1) {
            throw ValidationError("--topk-fraction must be in (0, 1]")
        }
        if numExamples < 1 { throw ValidationError("--num-examples must be positive") }
        for m in metrics {
            let parts = m.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, ContainerPath.isIdentifier(String(parts[0])), let v = Double(parts[1]), v.isFinite
            else {
                throw ValidationError("--metric \(m): expected name=number")
            }
        }
    }

    func run(_ context: CommandContext) throws -> PackOutput {
        let home = try context.home(as: .site)
        let site = try Site(home: home, signer: try context.signer(fingerprint: home.config.key, for: home))
        context.warnAboutForeignFiles(in: home)
        var recorded: [String: Double] = [:]
        for m in metrics {
            let parts = m.split(separator: "=", maxSplits: 1)
            recorded[String(parts[0])] = Double(parts[1])!
        }
        let console = context.console
        let (written, chosen) = try site.pack(
            weights: weights, numExamples: numExamples, metrics: recorded, base: base, force: force,
            codec: codec, topkFraction: topkFraction
        ) { names, from, to in
            let shown = names.prefix(3).joined(separator: ", ") + (names.count > 3 ? ", …" : "")
            console.warn(
                "converted \(names.count) tensor\(names.count == 1 ? "" : "s") (\(shown)) from \(from.rawValue) to "
                    + "\(to.rawValue), as the model pins them, rounding to nearest even",
                code: "pack.converted")
        }
        if case .newest(let n) = chosen {
            context.console.warn(
                "\(weights) names no generation in its metadata (fedbatch_generation, which fedbatch export writes): "
                    + "packed against generation \(n), the newest here; if training started from another, pass --base",
                code: "pack.base-guessed")
        }
        let from: String
        switch chosen {
        case .metadata: from = "metadata"
        case .given: from = "option"
        case .newest: from = "newest"
        }
        return PackOutput(bundle: BundleInfo(written), baseFrom: from)
    }
}

struct PackOutput: CommandOutput {
    let bundle: BundleInfo
    /// What chose the base: the weights' metadata, --base, or the newest.
    let baseFrom: String

    func render(into text: inout TextRendering) { text.out = [bundle.file] }
}

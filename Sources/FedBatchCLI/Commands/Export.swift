import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Export: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a generation's weights as a safetensors file.",
        discussion: """
            The generation is verified against the home's pinned collector key \
            first. The output holds F32 tensors with PyTorch's names and shapes, \
            so `model.load_state_dict(safetensors.torch.load_file(OUT), strict=True)` \
            loads it into the matching nn.Sequential. It is written atomically.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Argument(
        help: ArgumentHelp(
            "A generation: a .fbg file, or latest, 7 or g7 for one in generations/.", valueName: "generation"))
    var file: String

    @Option(help: ArgumentHelp("Where to write the weights.", valueName: "file.safetensors"))
    var out: String

    func run(_ context: CommandContext) throws -> ExportOutput {
        let home = try context.home()
        let file = try home.layout.generation(named: self.file)
        let v = try home.exportGeneration(file, to: out)
        let m = v.manifest
        return ExportOutput(
            file: file, out: out, generation: m.generation!, modelId: m.model.id, arch: m.model.arch,
            digest: v.digest.hex)
    }
}

struct ExportOutput: CommandOutput {
    let file: String
    let out: String
    let generation: Int
    let modelId: String
    let arch: String
    let digest: String

    func render(into text: inout TextRendering) {
        text.out = ["wrote generation \(generation) of \(modelId) (\(arch)) to \(out)"]
    }
}

import ArgumentParser
import FedBatch
import Foundation

struct Export: ParsableCommand {
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

    @Argument(help: ArgumentHelp("A generation (.fbg).", valueName: "file"))
    var file: String

    @Option(help: ArgumentHelp("Where to write the weights.", valueName: "file.safetensors"))
    var out: String

    func run() throws {
        let home = try Home.open(global.resolvedHome)
        let v = try home.exportGeneration(file, to: out)
        let console = Console(global)
        if global.json {
            try console.emit(["file": file, "out": out, "generation": String(v.manifest.generation!), "digest": v.digest.hex])
        } else {
            console.say("wrote generation \(v.manifest.generation!) of \(v.manifest.model.id) (\(v.manifest.model.arch)) to \(out)")
        }
    }
}

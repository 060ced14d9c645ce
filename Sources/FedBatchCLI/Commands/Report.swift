import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Report: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Collector: write a self-contained HTML report with charts of the federation's history.",
        discussion: """
            One HTML file with inline SVG charts and no script or link out, so it \
            opens anywhere, also offline: accuracy and loss per generation (from \
            the evaluations that [eval] data makes after each merge), which site \
            each generation included, refused files by reason, the size of \
            every included bundle still in accepted/, and how stale the included \
            bundles were; then a table of the generations. It reads state.db without a lock and verifies nothing \
            (fedbatch log does). The file is written atomically.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Option(help: ArgumentHelp("Where to write the report.", valueName: "file"))
    var out: String = "report.html"

    func run(_ context: CommandContext) throws -> ReportOutput {
        let home = try context.home(as: .collector)
        let data = try ReportData.of(home)
        let html = HTMLReport.render(data)
        try writeFileAtomically(Data(html.utf8), to: out, mode: 0o644)
        return ReportOutput(
            file: out, generations: data.generations.count, evaluations: data.evaluations.count,
            sites: data.sites.count, bytes: html.utf8.count)
    }
}

struct ReportOutput: CommandOutput {
    let file: String
    let generations: Int
    let evaluations: Int
    let sites: Int
    let bytes: Int

    func render(into text: inout TextRendering) {
        text.out = [file]
        if evaluations == 0 {
            text.notes = [
                "no accuracy chart yet: set data in the [eval] table of fedbatch.toml, and each merge evaluates its "
                    + "generation"
            ]
        }
    }
}

import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Inspect: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a bundle's or generation's manifest, with no trust decision.",
        discussion: """
            The file is read with the same hardened reader as merge and verify use \
            (every size capped, every member hashed), but its signature is only \
            located, not checked: use `fedbatch verify` for a verdict. Exit status \
            3 means the file is malformed.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Argument(
        help: ArgumentHelp(
            "A .fbu update bundle, .fbs statistics bundle, .fbp partial or .fbg generation.",
            valueName: "file"))
    var file: String

    func run(_ context: CommandContext) throws -> Inspection {
        try Inspection.inspect(path: file)
    }
}

/// inspect prints the library's report as it is: the manifest inside it
/// is fedbatch-bundle(5)'s, which has its own specification.
extension Inspection: CommandOutput {
    func render(into text: inout TextRendering) {
        let m = manifest
        var lines: [String] = []
        func row(_ k: String, _ v: String) { lines.append(k.padding(toLength: 12, withPad: " ", startingAt: 0) + v) }
        row("file", file)
        row("digest", digest)
        row("statement", statement)
        row("payload", payloadMatches ? "matches the statement" : "does NOT match the statement")
        row(
            "signature",
            signatureBytes > 0
                ? "\(signatureBytes) bytes, not checked (use fedbatch verify)" : "none: the file is unsigned")
        row("kind", m.kind.rawValue)
        row("model", "\(m.model.id) (\(m.model.arch))")
        if let g = m.generation { row("generation", String(g)) }
        if let p = m.parent { row("parent", "\(HomeLayout.generationName(p.number)) \(p.digest)") }
        if let b = m.base { row("base", "\(HomeLayout.generationName(b.number)) \(b.digest)") }
        if let s = m.site { row("site", "\(s.id) seq \(s.seq)") }
        if let n = m.numExamples { row("examples", String(n)) }
        row("created", m.created)
        row("codec", m.codec)
        row("fedbatch", m.fedbatchVersion)
        if let s = m.strategy {
            row(
                "strategy",
                ([s.name] + s.parameters.keys.sorted().map { "\($0)=\(s.parameters[$0]!)" }).joined(separator: " "))
        }
        if let inc = m.included {
            row("included", "\(inc.count) bundles, \(saturatingSum(inc.map(\.numExamples))) examples")
        }
        if let rej = m.rejected { row("rejected", "\(rej.count) bundles") }
        if let st = m.statistics {
            row("statistics", "\(st.count) bundles, \(saturatingSum(st.map(\.rows))) rows (fedbatch stats --pin)")
        }
        lines.append("members")
        for member in m.members { lines.append("  \(member.name)  \(member.length) bytes  sha256 \(member.sha256)") }
        if m.kind != .stats { lines.append("tensors") }
        for t in tensors { lines.append("  \(t.name)  \(t.dtype) \(t.shape)") }
        if !m.metrics.isEmpty {
            lines.append("metrics")
            for k in m.metrics.keys.sorted() { lines.append("  \(k)  \(m.metrics[k]!)") }
        }
        text.out = lines
    }
}

import ArgumentParser
import FedBatch
import Foundation

struct Log: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the generation chain and verify every link back to generation 0.",
        discussion: """
        Verifies each generation in generations/ against the pinned collector \
        key and checks that each names its predecessor's digest as its \
        parent. Prints number, digest, parent, accepted and rejected bundles, \
        total examples and time. Exit status 3 when a link is broken.
        """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    func run() throws {
        let home = try Home.open(global.resolvedHome)
        let console = Console(global)
        console.warnAboutForeignFiles(in: home)
        let links = try home.chain()
        if global.json {
            try console.emit(ChainReport(verified: true, links: links))
            return
        }
        var lines = ["GEN     DIGEST        PARENT        ACCEPTED  REJECTED  EXAMPLES  CREATED"]
        for l in links {
            lines.append(String(format: "%-6d  %@  %@  %8d  %8d  %8lld  %@", l.generation, String(l.digest.prefix(12)),
                                (l.parent.map { String($0.prefix(12)) } ?? "-").padding(toLength: 12, withPad: " ", startingAt: 0),
                                l.accepted, l.rejected, l.examples, l.created))
        }
        lines.append("chain verified: \(links.count) generation\(links.count == 1 ? "" : "s"), every link back to generation 0 checks out")
        console.say(lines.joined(separator: "\n"))
    }
}

struct ChainReport: Encodable {
    let verified: Bool
    let links: [ChainLink]
}

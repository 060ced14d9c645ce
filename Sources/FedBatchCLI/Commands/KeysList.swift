import ArgumentParser
import FedBatch
import Foundation

struct KeysList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the pinned keys: site, fingerprint, user id and expiry."
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Keys
    var global: GlobalOptions { options.merged(over: group.root.global) }

    func run() throws {
        let home = try Home.open(global.resolvedHome)
        let rows = try TrustSet.load(keysDirectory: home.layout.keys).keys.map(KeyRow.init)
        let console = Console(global)
        if global.json {
            try console.emit(rows)
            return
        }
        let table = [["SITE", "FINGERPRINT", "EXPIRES", "USER ID"]]
            + rows.map { [$0.site ?? "(collector)", $0.fingerprint, $0.expires ?? "never", $0.userID] }
        let widths = (0..<3).map { c in table.map { $0[c].count }.max()! }
        console.say(table.map { row in
            (0..<3).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ") + "  " + row[3]
        }.joined(separator: "\n"))
    }
}

import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct KeysList: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the pinned keys: site, fingerprint, user id and expiry."
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Keys
    var global: GlobalOptions { options.merged(over: group.root.global) }

    func run(_ context: CommandContext) throws -> KeyList {
        let home = try context.home()
        return KeyList(keys: try TrustSet.load(keysDirectory: home.layout.keys).keys.map(KeyInfo.init))
    }
}

struct KeyList: CommandOutput {
    let keys: [KeyInfo]

    func render(into text: inout TextRendering) {
        func who(_ k: KeyInfo) -> String {
            guard let site = k.site else {
                // A key never rotated signs every generation: no range to show.
                if k.validFrom == 0 && k.validUntil == nil { return "(collector)" }
                let range = k.validUntil.map { "g\(k.validFrom ?? 0)-g\($0)" } ?? "g\(k.validFrom ?? 0)-"
                return "(collector \(range))"
            }
            return k.status == "retired" ? "\(site) (retired)" : site
        }
        let table =
            [["SITE", "FINGERPRINT", "EXPIRES", "USER ID"]]
            + keys.map { [who($0), $0.fingerprint, $0.expires ?? "never", $0.userId] }
        let widths = (0..<3).map { c in table.map { $0[c].count }.max()! }
        text.out = table.map { row in
            (0..<3).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
                + "  " + row[3]
        }
    }
}

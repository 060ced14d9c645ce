import ArgumentParser
import FedBatch
import Foundation

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Collector: verify the inbox, quarantine bad bundles, write the next generation.",
        discussion: """
        Takes the home's lock (a second merge exits 4 and changes nothing). \
        Files changed in the last --settle seconds, and hidden names (rsync's \
        temporary files), are left for the next run. \
        Every other file in inbox/ is verified like `fedbatch verify`, then checked \
        against the protocol: an update, based on the current generation, not \
        seen before by digest or by (site, seq), one per site, num_examples \
        within merge.max_examples. Refused files move to quarantine/ beside a \
        <name>.reason.json (code, message, digest, time); to retry one, \
        move it back into inbox/. If at least \
        --min-bundles (merge.min_bundles) pass, FedAvg aggregates them in \
        digest order and the next generation is written and signed, then \
        recorded in state.db, then the inputs move to accepted/. Otherwise \
        nothing is written, they stay in the inbox, and the exit status is 5.
        """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Option(name: .customLong("min-bundles"), help: "Quorum: the fewest accepted bundles that make a generation (default: merge.min_bundles).")
    var minBundles: Int?

    @Option(help: ArgumentHelp("Seconds an inbox file must be unchanged before it is read (default: merge.settle_seconds, 60).", valueName: "seconds"))
    var settle: Double?

    func validate() throws {
        if let minBundles, minBundles < 1 { throw ValidationError("--min-bundles must be at least 1") }
        if let settle, !(0...86_400).contains(settle) { throw ValidationError("--settle must be from 0 to 86400 seconds") }
    }

    func run() throws {
        let home = try Home.open(global.resolvedHome, as: .collector)
        let collector = try Collector(home: home, signer: try global.signer(fingerprint: home.config.key))
        // A held lock is LockHeld, which the exit table maps to 4.
        let report = try collector.merge(minBundles: minBundles, settleSeconds: settle)
        let console = Console(global)
        if global.json {
            try console.emit(report)
        } else {
            for r in report.rejected {
                let action = r.storedAs.map { "quarantined \(r.file) as quarantine/\($0)" } ?? "removed \(r.file)"
                Console.writeErr("\(action): \(r.message) [\(r.code)]\n")
            }
            if !global.quiet {
                for w in report.waiting { Console.writeErr("left \(w.file) in the inbox: \(w.reason)\n") }
            }
            switch report.outcome {
            case .merged:
                console.say("generation \(report.generation!) from \(report.accepted.count) bundles: \(report.file!)")
            case .belowQuorum:
                Console.writeErr("\(report.accepted.count) bundles accepted, quorum is \(report.quorum): nothing written\n")
            case .empty:
                if !global.quiet { Console.writeErr("the inbox is empty: nothing to do\n") }
            }
        }
        if report.outcome != .merged { throw ExitCode(ExitStatus.nothingToDo.rawValue) }
    }
}

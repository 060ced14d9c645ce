import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Log: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the generation chain and verify every link back to generation 0.",
        discussion: """
            Verifies each generation in generations/ against the pinned collector \
            key and checks that each names its predecessor's digest as its \
            parent. Prints number, digest, parent, accepted and rejected bundles, \
            total examples and time, the key that signed it and the pinned \
            witnesses whose cosignature verified. With --audit, also re-derives \
            every generation from its inputs, as fedbatch audit all does. Exit \
            status 3 when a link is broken or, with --audit, a generation does not \
            re-derive.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Flag(help: "Also re-derive every generation from its parent and inputs (fedbatch audit all).")
    var audit = false

    @Option(
        name: .customLong("bundles"),
        help: ArgumentHelp("With --audit: also look for inputs in this directory (repeatable).", valueName: "dir"))
    var bundles: [String] = []

    func run(_ context: CommandContext) throws -> LogOutput {
        let home = try context.home()
        context.warnAboutForeignFiles(in: home)
        let (links, failure) = home.checkChain()
        var output = LogOutput(
            verified: failure == nil, generations: links.map(LogOutput.Link.init),
            error: failure.map { LogOutput.Broken(code: reasonCode(of: $0), message: "\($0)") })
        if audit, failure == nil {
            let results = try context.audit(home, generations: nil, bundles: bundles)
            let byNumber = Dictionary(results.map { ($0.generation, $0) }, uniquingKeysWith: { a, _ in a })
            for i in output.generations.indices {
                output.generations[i].audit = byNumber[output.generations[i].generation].map(
                    AuditOutput.Generation.init)
            }
        }
        return output
    }
}

/// The chain as far as it verifies; `error` says where and why it breaks.
struct LogOutput: CommandOutput {
    struct Link: Encodable {
        let generation: Int
        let file: String
        let digest: String
        @OrNull var parent: String?
        let accepted: Int
        let rejected: Int
        let examples: Int64
        let created: String
        let pruned: Bool
        /// The cumulative differential privacy at this generation, or null.
        @OrNull var epsilon: Double?
        @OrNull var delta: Double?
        @OrNull var strategy: String?
        let remembered: Int
        let statistics: Int
        let signer: String
        let cosigners: [String]
        let signers: [String]
        /// With --audit: the generation's audit.
        @OrNull var audit: AuditOutput.Generation?

        init(_ l: ChainLink) {
            signer = l.signer
            cosigners = l.cosigners
            signers = l.signers
            strategy = l.strategy
            remembered = l.remembered
            statistics = l.statistics
            epsilon = l.epsilon
            delta = l.delta
            pruned = l.pruned
            generation = l.generation
            file = l.file
            digest = l.digest
            parent = l.parent
            accepted = l.accepted
            rejected = l.rejected
            examples = l.examples
            created = l.created
            restored = l.restored
        }

        /// The restored generation of a revert (text only).
        private let restored: Int?

        enum CodingKeys: String, CodingKey {
            case generation, file, digest, parent, accepted, rejected, examples, created, pruned, epsilon, delta
            case strategy, remembered, statistics, signer, cosigners, signers, audit
        }

        /// What the text table adds after a generation that is not a plain merge.
        var note: String {
            switch strategy {
            case "revert": return "  (revert to \(restored.map(String.init) ?? "?"))"
            case "stats-pin": return "  (statistics pinned from \(statistics) site\(statistics == 1 ? "" : "s"))"
            default: return remembered > 0 ? "  (+\(remembered) remembered)" : ""
            }
        }
    }

    struct Broken: Encodable {
        let code: String
        let message: String
    }

    let verified: Bool
    var generations: [Link]
    @OrNull var error: Broken?

    var exitStatus: ExitStatus {
        if let error { return ExitStatus.of(code: error.code) }
        return generations.compactMap { $0.audit?.code.map { ExitStatus.of(code: $0) } }.max {
            $0.rawValue < $1.rawValue
        }
            ?? .success
    }

    func render(into text: inout TextRendering) {
        if !generations.isEmpty {
            // The privacy column appears once any generation has a record.
            let privacy = generations.contains { $0.epsilon != nil }
            text.out = [
                "GEN     DIGEST        PARENT        ACCEPTED  REJECTED  EXAMPLES  CREATED"
                    + (privacy ? "               EPSILON (DELTA)" : "")
            ]
            for l in generations {
                let eps =
                    !privacy ? "" : l.epsilon.map { String(format: "  %8.4g (%.0e)", $0, l.delta ?? 0) } ?? "         -"
                text.out.append(
                    String(
                        format: "%-6d  %@  %@  %8d  %8d  %8lld  %@", l.generation, String(l.digest.prefix(12)),
                        (l.parent.map { String($0.prefix(12)) } ?? "-").padding(
                            toLength: 12, withPad: " ", startingAt: 0),
                        l.accepted, l.rejected, l.examples, l.created) + eps + (l.pruned ? "  (pruned)" : "") + l.note
                        + (l.signers.isEmpty ? "" : "  signed by \(l.signers.joined(separator: ", "))")
                        + (l.cosigners.isEmpty ? "" : "  co-signed by \(l.cosigners.joined(separator: ", "))"))
                if let a = l.audit, !a.ok {
                    text.warnings.append(
                        "audit: generation \(a.generation): \(a.message ?? a.verdict) [\(a.code ?? "")]")
                }
            }
            if generations.contains(where: { $0.audit != nil }) {
                let done = generations.filter { $0.audit?.ok == true }.count
                text.out.append("audit: \(done) of \(generations.count) generations re-derive from their inputs")
            }
        }
        if let error {
            text.warnings += ["chain broken: \(error.message) [\(error.code)]"]
        } else {
            let n = generations.count
            text.out.append(
                "chain verified: \(n) generation\(n == 1 ? "" : "s"), every link back to generation 0 checks out")
        }
    }
}

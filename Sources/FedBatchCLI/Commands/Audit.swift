import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Audit: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-derive generations from their inputs and compare them, bit for bit.",
        discussion: """
            For each generation named (default: latest; all for the whole chain), \
            replays what wrote it from its parent and the inputs its manifest \
            names: the bundles and partial aggregates of a merge (found by digest \
            in accepted/ and in each --bundles directory, each verified against the \
            home's pinned keys), the strategy, the staleness rule and the clip as \
            recorded, the server optimiser's state, remembered updates; the \
            restored weights of a revert; the statistics of a pin. The result must \
            be the generation's own manifest, byte for byte, which commits to \
            every member by its SHA-256.

            Exit status 0 when every generation re-derives; 3 when one does not \
            (audit.mismatch, naming the first manifest field or tensor element \
            that differs) or when an input is missing (audit.missing-input). A \
            private merge's noise needs its seed, which only the collector keeps \
            (noise-seeds/): elsewhere the weights of such a generation are not \
            compared, and the verdict says so.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Argument(help: ArgumentHelp("Generations to audit: 7, g7, latest, or all.", valueName: "generation"))
    var generations: [String] = []

    @Option(
        name: .customLong("bundles"),
        help: ArgumentHelp(
            "Also look for inputs in this directory (repeatable); accepted/ is always searched.", valueName: "dir"))
    var bundles: [String] = []

    func validate() throws {
        for g in generations where g != "all" && g != "latest" && Self.number(g) == nil {
            throw ValidationError("\(g) does not name a generation (7, g7, latest or all)")
        }
    }

    static func number(_ reference: String) -> Int? { HomeLayout.generationReference(reference) }

    func run(_ context: CommandContext) throws -> AuditOutput {
        let home = try context.home()
        context.warnAboutForeignFiles(in: home)
        var numbers: [Int]? = []
        if generations.contains("all") {
            numbers = nil
        } else {
            for g in generations.isEmpty ? ["latest"] : generations {
                if g == "latest" {
                    guard let newest = home.layout.chainFiles().last else {
                        throw HomeError.noGeneration(home.layout.generations)
                    }
                    numbers?.append(newest.number)
                } else {
                    numbers?.append(Self.number(g)!)
                }
            }
        }
        let results = try context.audit(home, generations: numbers, bundles: bundles)
        return AuditOutput(generations: results.map(AuditOutput.Generation.init))
    }
}

extension CommandContext {
    /// `audit` and `log --audit`: the audit with a progress line, and on a
    /// collector its own key, which opens the bundles encrypted to it.
    func audit(_ home: Home, generations: [Int]?, bundles: [String]) throws -> [AuditResult] {
        let decryption =
            home.config.role == .collector
            ? (try? signer(fingerprint: home.config.key, for: home))?.decryption : nil
        let progress = ProgressLine(console: console)
        defer { progress.finish() }
        return try home.audit(
            generations: generations, bundles: bundles.map { URL(fileURLWithPath: $0).standardizedFileURL.path },
            decryption: decryption
        ) { p in
            progress.update("auditing generation \(p.generation) (\(p.done + 1) of \(p.total))", force: true)
        }
    }
}

struct AuditOutput: CommandOutput {
    struct Generation: Encodable {
        let generation: Int
        let digest: String
        let ok: Bool
        let verdict: String
        @OrNull var strategy: String?
        let inputs: Int
        @OrNull var code: String?
        @OrNull var message: String?
        let notes: [String]

        init(_ r: AuditResult) {
            generation = r.generation
            digest = r.digest
            ok = r.failure == nil
            verdict = r.verdict.rawValue
            strategy = r.strategy
            inputs = r.inputs
            code = r.failure?.code
            message = r.failure?.message
            notes = r.notes
        }
    }

    let ok: Bool
    let generations: [Generation]

    init(generations: [Generation]) {
        self.generations = generations
        ok = generations.allSatisfy(\.ok)
    }

    var exitStatus: ExitStatus {
        generations.compactMap { $0.code.map { ExitStatus.of(code: $0) } }.max { $0.rawValue < $1.rawValue }
            ?? .success
    }

    func render(into text: inout TextRendering) {
        for g in generations {
            let what = g.strategy.map { " (\($0), \(g.inputs) input\(g.inputs == 1 ? "" : "s"))" } ?? ""
            switch g.verdict {
            case "reproduced": text.out.append("ok    generation \(g.generation)\(what): re-derived bit for bit")
            case "reproduced-except-noise":
                text.out.append("ok    generation \(g.generation)\(what): re-derived, except the noise")
            case "root": text.out.append("ok    generation 0: where the chain starts")
            default: text.warnings.append("FAIL  generation \(g.generation)\(what): \(g.message!) [\(g.code!)]")
            }
            for note in g.notes where g.verdict != "root" { text.out.append("      note: \(note)") }
        }
    }
}

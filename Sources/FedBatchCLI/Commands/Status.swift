import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Status: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Where the federation stands, from this home's point of view.",
        discussion: """
            On a collector: the newest generation, the quorum, how many files wait \
            in inbox/ and how old the oldest is, quarantine/ by reason, and for \
            every pinned site the last generation that included one of its \
            bundles. On a site: the newest generation it accepted, and its last \
            bundle: still in outbox/ or taken, and whether a generation in \
            generations/ included it. Reads only; takes no lock.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    func run(_ context: CommandContext) throws -> StatusOutput {
        let home = try context.home()
        switch home.config.role {
        case .collector: return StatusOutput(collector: try home.collectorStatus())
        // A regional collector's inbox, quorum and sites are a collector's;
        // its generations are the root's.
        case .region: return .collector(StatusOutput.CollectorView(try home.collectorStatus(), role: "region"))
        case .site: return StatusOutput(site: try home.siteStatus())
        case .witness: return .witness(StatusOutput.WitnessView(try home.witnessStatus()))
        }
    }
}

/// `status`: one of two shapes, told apart by `role` (fedbatch-json(7),
/// "status collector" and "status site").
enum StatusOutput: CommandOutput {
    case collector(CollectorView)
    case site(SiteView)
    case witness(WitnessView)

    init(collector s: CollectorStatus) { self = .collector(CollectorView(s)) }
    init(site s: SiteStatus) { self = .site(SiteView(s)) }

    func encode(to encoder: Encoder) throws {
        switch self {
        case .collector(let v): try v.encode(to: encoder)
        case .site(let v): try v.encode(to: encoder)
        case .witness(let v): try v.encode(to: encoder)
        }
    }

    func render(into text: inout TextRendering) {
        switch self {
        case .collector(let v): v.render(into: &text)
        case .site(let v): v.render(into: &text)
        case .witness(let v): v.render(into: &text)
        }
    }

    struct Generation: Encodable {
        let number: Int
        let digest: String
        @OrNull var created: String?
    }

    struct CollectorView: Encodable {
        struct Inbox: Encodable {
            let files: Int
            @OrNull var oldestAgeSeconds: Double?
        }
        struct Reason: Encodable {
            let code: String
            let files: Int
        }
        struct Site: Encodable {
            let site: String
            @OrNull var lastGeneration: Int?
            @OrNull var lastSeq: Int64?
            @OrNull var lastCreated: String?
            let bundles: Int
            @OrNull var evaluation: SiteEvaluationInfo?
        }

        var role = "collector"
        @OrNull var generation: Generation?
        let quorum: Int
        let inbox: Inbox
        let quarantine: [Reason]
        let sites: [Site]

        init(_ s: CollectorStatus, role: String = "collector") {
            self.role = role
            generation = s.generation.map { Generation(number: $0, digest: s.digest ?? "", created: s.created) }
            quorum = s.quorum
            inbox = Inbox(files: s.inboxFiles, oldestAgeSeconds: s.oldestInboxSeconds.map { ($0 * 10).rounded() / 10 })
            quarantine = s.quarantine.keys.sorted().map { Reason(code: $0, files: s.quarantine[$0]!) }
            sites = s.sites.map {
                Site(
                    site: $0.site, lastGeneration: $0.lastGeneration, lastSeq: $0.lastSeq, lastCreated: $0.lastCreated,
                    bundles: $0.bundles, evaluation: $0.evaluation.map(SiteEvaluationInfo.init))
            }
        }

        func render(into text: inout TextRendering) {
            text.out.append(
                "generation  "
                    + (generation.map { "\($0.number) (\(String($0.digest.prefix(12))), \($0.created ?? "?"))" }
                        ?? "none yet"))
            text.out.append("quorum      \(quorum)")
            let age = inbox.oldestAgeSeconds.map { String(format: ", oldest %.0f s", $0) } ?? ""
            text.out.append("inbox       \(inbox.files) file\(inbox.files == 1 ? "" : "s")\(age)")
            text.out.append(
                "quarantine  "
                    + (quarantine.isEmpty
                        ? "empty" : quarantine.map { "\($0.files) \($0.code)" }.joined(separator: ", ")))
            text.out.append(
                "SITE        LAST GEN     SEQ  BUNDLES  LAST CREATED          ITS EVALUATION (as it claims)")
            func right(_ v: String, _ width: Int) -> String {
                String(repeating: " ", count: max(0, width - v.count)) + v
            }
            for s in sites {
                text.out.append(
                    s.site.padding(toLength: 10, withPad: " ", startingAt: 0) + "  "
                        + right(s.lastGeneration.map(String.init) ?? "-", 8)
                        + "  " + right(s.lastSeq.map { String($0) } ?? "-", 6) + "  " + right(String(s.bundles), 7)
                        + "  " + (s.lastCreated ?? "never").padding(toLength: 20, withPad: " ", startingAt: 0)
                        + "  " + (s.evaluation?.text ?? "-"))
            }
        }
    }

    struct SiteView: Encodable {
        struct Bundle: Encodable {
            let file: String
            let digest: String
            let seq: Int64
            let baseGeneration: Int
            let inOutbox: Bool
            @OrNull var includedIn: Int?
            @OrNull var pushed: String?
            let leftOutBy: [Int]
        }

        struct Cosigned: Encodable {
            let generation: Int
            let witnesses: [String]
        }

        let role = "site"
        let site: String
        @OrNull var newestGeneration: Generation?
        @OrNull var lastBundle: Bundle?
        let minWitnesses: Int
        let cosigners: [Cosigned]

        init(_ s: SiteStatus) {
            minWitnesses = s.minWitnesses
            cosigners = s.cosigners.map { Cosigned(generation: $0.generation, witnesses: $0.witnesses) }
            site = s.site
            newestGeneration = s.newestGeneration.map {
                Generation(number: $0, digest: s.newestDigest ?? "", created: nil)
            }
            lastBundle = s.lastBundle.map {
                Bundle(
                    file: $0.file, digest: $0.digest, seq: $0.seq, baseGeneration: $0.baseGeneration,
                    inOutbox: $0.inOutbox, includedIn: $0.includedIn, pushed: $0.pushed, leftOutBy: $0.leftOutBy)
            }
        }

        func render(into text: inout TextRendering) {
            text.out.append("site        \(site)")
            text.out.append(
                "generation  "
                    + (newestGeneration.map { "\($0.number) (\(String($0.digest.prefix(12))))" } ?? "none accepted yet")
            )
            if let b = lastBundle {
                let place = b.inOutbox ? "in outbox/" : "taken from outbox/"
                let used = b.includedIn.map { "included in generation \($0)" } ?? "not (yet) in any generation here"
                text.out.append("last bundle seq \(b.seq) on generation \(b.baseGeneration), \(place), \(used)")
                if !b.leftOutBy.isEmpty {
                    let which = b.leftOutBy.map(String.init).joined(separator: ", ")
                    text.out.append(
                        "            pushed \(b.pushed ?? "?"), then left out of generation"
                            + "\(b.leftOutBy.count == 1 ? "" : "s") \(which), "
                            + "signed after it while it was within their staleness window"
                            + (b.leftOutBy.count > 1 ? ": passed over" : ""))
                }
            } else {
                text.out.append("last bundle none written yet")
            }
            if minWitnesses > 0 || cosigners.contains(where: { !$0.witnesses.isEmpty }) {
                text.out.append("witnesses   \(minWitnesses) required (trust.min_witnesses)")
                for c in cosigners {
                    let enough = c.witnesses.count >= minWitnesses ? "" : "  (not enough: not used)"
                    text.out.append(
                        "  generation \(c.generation): "
                            + (c.witnesses.isEmpty
                                ? "no cosignature" : "co-signed by \(c.witnesses.joined(separator: ", "))")
                            + enough)
                }
            }
        }
    }

    struct WitnessView: Encodable {
        struct Cosigned: Encodable {
            let generation: Int
            let digest: String
        }
        let role = "witness"
        let witness: String
        @OrNull var newestGeneration: Int?
        let cosigned: [Cosigned]
        let pending: [Int]

        init(_ s: WitnessStatus) {
            witness = s.witness
            newestGeneration = s.newestGeneration
            cosigned = s.cosigned.map { Cosigned(generation: $0.generation, digest: $0.digest) }
            pending = s.pending
        }

        func render(into text: inout TextRendering) {
            text.out.append("witness     \(witness)")
            text.out.append("generation  \(newestGeneration.map(String.init) ?? "none yet")")
            text.out.append(
                "co-signed   "
                    + (cosigned.isEmpty
                        ? "none yet"
                        : cosigned.map { "\($0.generation) (\(String($0.digest.prefix(12))))" }.joined(
                            separator: ", ")))
            if !pending.isEmpty {
                text.out.append("pending     \(pending.map(String.init).joined(separator: ", ")) (fedbatch witness)")
            }
        }
    }
}

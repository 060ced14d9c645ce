import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// One link of the generation chain, as `fedbatch log` shows it.
public struct ChainLink: Sendable, Codable {
    public let generation: Int
    public let digest: String
    public let parent: String?
    public let accepted: Int
    public let rejected: Int
    public let examples: Int64
    public let created: String
    public let file: String
    /// Only the signed manifest is kept (fedbatch prune).
    public let pruned: Bool
    /// The chain's cumulative differential privacy at this generation, if
    /// it was merged under [privacy] (or reverted after such a merge).
    public var epsilon: Double? = nil
    public var delta: Double? = nil
    /// What wrote the generation: a strategy (fedavg, …), `revert` or
    /// `stats-pin`; nil for generation 0.
    public var strategy: String? = nil
    /// For a revert, the generation it restored.
    public var restored: Int? = nil
    /// Remembered updates it added again (`[merge] memory`).
    public var remembered: Int = 0
    /// Statistics bundles a pin combined.
    public var statistics: Int = 0
    /// The collector key that signed it.
    public var signer: String = ""
    /// The pinned witnesses whose cosignature beside it verified.
    public var cosigners: [String] = []
    /// Under `[trust] threshold`: the signers whose signature counted.
    public var signers: [String] = []
}

/// Why the chain does not hold together, or does not agree with the
/// home's own record of it.
public struct ChainError: Error, Equatable, Sendable, ReasonCoded {
    public let generation: Int
    public let message: String
    public let code: String

    public init(generation: Int, message: String, code: String = "chain.broken") {
        self.generation = generation
        self.message = message
        self.code = code
    }

    /// generations/ and state.db disagree: see `Collector.checkAgreement`.
    static func ledgerMismatch(generation: Int, message: String) -> ChainError {
        ChainError(generation: generation, message: message, code: "chain.ledger-mismatch")
    }

    public var description: String { "generation \(generation): \(message)" }
}

extension Home {
    /// Verifies every generation in `generations/` and every link back to
    /// generation 0: numbers consecutive from 0, each naming its
    /// predecessor's digest as its parent, weights that a site would train
    /// on (the model's tensors, all finite). Then checks that the chain
    /// agrees with this home's record: on a collector, the generations
    /// state.db lists; on a site, the generations it has accepted, by the
    /// same rules `train` applies, so that `log` never calls verified a
    /// chain that `train` refuses.
    public func chain() throws -> [ChainLink] {
        let check = checkChain()
        if let failure = check.failure { throw failure }
        return check.links
    }

    /// The chain as far as it verifies, and why it stops there, so that a
    /// broken chain still shows the generations that do check out.
    public func checkChain() -> (links: [ChainLink], failure: Error?) {
        var links: [ChainLink] = []
        do {
            try walkChain(into: &links)
            return (links, nil)
        } catch {
            return (links, error)
        }
    }

    private func walkChain(into links: inout [ChainLink]) throws {
        let verifier = try self.verifier()
        let files = layout.chainFiles()
        for (n, path, pruned) in files {
            let v: VerifiedContainer
            do {
                // A pruned generation keeps its signed manifest: enough for
                // the link, which is all log checks of it.
                v = pruned ? try verifier.openPruned(path: path) : try openVerified(path, verifier: verifier).0
            } catch {
                throw ChainError(generation: n, message: "\(path) does not verify: \(error)")
            }
            let m = v.manifest
            guard m.kind == .generation, m.generation == n else {
                throw ChainError(generation: n, message: "\(path) holds generation \(m.generation ?? -1)")
            }
            // A rotation this generation announces applies to the links
            // after it (in memory: log writes nothing).
            // (None after the newest: on a signer it may be a proposal.)
            do { if n != files.last?.number { try adoptTrustChanges(carriedBy: v, verifier: verifier) } } catch {
                throw ChainError(
                    generation: n,
                    message: "\(path) carries a key rotation or signer set that does not verify: \(error)")
            }
            if let previous = links.last {
                guard previous.generation == n - 1 else {
                    throw ChainError(generation: n, message: "generation \(n - 1) is missing")
                }
                guard m.parent?.number == n - 1, m.parent?.digest == previous.digest else {
                    throw ChainError(
                        generation: n,
                        message:
                            "names parent \(m.parent?.digest ?? "none"), but generation \(n - 1) is \(previous.digest)")
                }
            } else if n != 0 {
                throw ChainError(generation: n, message: "the chain does not start at generation 0")
            }
            // Bundles new to the generation: a remembered update
            // ([merge] memory) was counted where it was first included.
            let included = (m.included ?? []).filter { $0.remembered == nil }
            var link = ChainLink(
                generation: n, digest: v.digest.hex, parent: m.parent?.digest, accepted: included.count,
                rejected: m.rejected?.count ?? 0, examples: saturatingSum(included.map(\.numExamples)),
                created: m.created, file: path, pruned: pruned, epsilon: m.privacy?.epsilon,
                delta: m.privacy?.delta,
                strategy: m.strategy?.name,
                restored: m.strategy?.name == "revert" ? m.strategy?.parameters["generation"].map { Int($0) } : nil,
                remembered: (m.included ?? []).count - included.count, statistics: m.statistics?.count ?? 0)
            link.signer = v.signer.fingerprint
            let signatories = signatories(of: v, verifier: verifier)
            link.cosigners = signatories.cosigners.valid
            link.signers = signatories.ids
            links.append(link)
        }
        guard let newest = links.last else { throw HomeError.noGeneration(layout.generations) }
        guard FileManager.default.fileExists(atPath: layout.stateDatabase) else { return }
        switch config.role {
        case .collector, .region:
            let recorded = try Ledger(path: layout.stateDatabase).generationDigests()
            for l in links {
                if let d = recorded[l.generation], d != l.digest {
                    throw ChainError.ledgerMismatch(
                        generation: l.generation,
                        message: "\(l.file) has digest \(l.digest), but state.db records \(d): the file was replaced")
                }
            }
            if let top = recorded.keys.max(), top > newest.generation {
                throw ChainError.ledgerMismatch(
                    generation: top,
                    message:
                        "state.db records generation \(top) (\(recorded[top]!)), but \(layout.generation(top)) is "
                        + "missing; restore it before the next merge"
                )
            }
        case .witness:
            let cosigned = try WitnessLedger(path: layout.stateDatabase).cosigned()
            for l in links {
                if let d = cosigned[l.generation], d != l.digest {
                    throw ChainError(
                        generation: l.generation,
                        message: "\(l.file) has digest \(l.digest), but this witness co-signed \(d): a fork",
                        code: "witness.fork")
                }
            }
        case .site:
            let state = try SiteState(path: layout.stateDatabase)
            do {
                for l in links {
                    try state.check(
                        generation: l.generation, digest: l.digest, rollback: l.generation == newest.generation)
                }
            } catch let e as SiteStateError {
                // The refusal `train` would give, so that the two agree.
                throw ChainError(
                    generation: newest.generation, message: "\(e); fedbatch train refuses this chain", code: e.code)
            }
        }
    }
}

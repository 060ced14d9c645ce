import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What `fedbatch audit` found for one generation.
public struct AuditResult: Sendable {
    public enum Verdict: String, Sendable {
        /// Re-derived from its parent and its inputs, bit for bit.
        case reproduced
        /// Everything re-derived but the weights (and a server optimiser's
        /// state): a differentially private merge's noise comes from a
        /// secret seed that only the collector keeps.
        case reproducedExceptNoise = "reproduced-except-noise"
        case mismatch
        case missingInput = "missing-input"
        /// Generation 0, where the chain starts: nothing to re-derive.
        case root
    }

    public let generation: Int
    public let digest: String
    /// What wrote the generation (a strategy, `revert`, `stats-pin`).
    public let strategy: String?
    public let verdict: Verdict
    /// Input files read again: bundles, partial aggregates, statistics.
    public let inputs: Int
    public let failure: AuditError?
    /// What this audit did not check, and why.
    public let notes: [String]
}

/// Why a generation did not re-derive: a difference, or an input this home
/// cannot find or read.
public struct AuditError: Error, Sendable, Equatable, ReasonCoded, CustomStringConvertible {
    public let code: String
    public let message: String
    public var description: String { message }

    static func mismatch(_ message: String) -> AuditError { .init(code: "audit.mismatch", message: message) }
    static func missingInput(_ message: String) -> AuditError {
        .init(code: "audit.missing-input", message: message)
    }
}

/// Where an audit is: generation `generation`, the `done`th of `total`.
public struct AuditProgress: Sendable {
    public let generation: Int
    public let done: Int
    public let total: Int
}

extension Home {
    /// Re-derives generations from their parents and the inputs their
    /// manifests name, and compares: `numbers` (nil for every generation).
    ///
    /// The chain is walked from generation 0 as `log` walks it (each link
    /// verified, each key rotation adopted in order), so that every
    /// generation is judged with the keys that were valid for it. A merge
    /// is replayed exactly: the strategy and its parameters, the staleness
    /// rule and the clip as the manifest records them, the server
    /// optimiser's state from the parent, the protocol's rules with what
    /// the chain before it knew (replays, sequence numbers, bases), the
    /// inputs in digest order, remembered updates after them. Inputs are
    /// found by payload digest in accepted/ and in `directories`. The
    /// result must be the generation's own manifest, byte for byte, which
    /// commits to every member by its SHA-256; a difference is named down
    /// to the manifest field or the tensor element. What cannot be
    /// re-derived is said: the refusals a manifest lists are the
    /// collector's account (a refused file is not an input), and a
    /// private merge's noise needs its seed (noise-seeds/, kept only at
    /// the collector).
    public func audit(
        generations numbers: [Int]?, bundles directories: [String] = [], decryption: BundleDecryption? = nil,
        progress: (AuditProgress) -> Void = { _ in }
    ) throws -> [AuditResult] {
        try auditChain(generations: numbers, bundles: directories, decryption: decryption, progress: progress).results
    }

    /// `audit`, with the digest of every generation the walk verified (up
    /// to the newest audited), by number. A `candidate` (a signer's
    /// proposal, not in generations/) is audited as the generation of its
    /// number, on the chain before it.
    func auditChain(
        generations numbers: [Int]?, bundles directories: [String], decryption: BundleDecryption?,
        candidate: (number: Int, path: String)? = nil, progress: (AuditProgress) -> Void
    ) throws -> (results: [AuditResult], digests: [Int: String]) {
        var files = layout.chainFiles()
        if let candidate {
            files = files.filter { $0.number < candidate.number } + [(candidate.number, candidate.path, false)]
        }
        guard !files.isEmpty else { throw HomeError.noGeneration(layout.generations) }
        let wanted = Set(numbers ?? files.map(\.number))
        for n in wanted.sorted() where !files.contains(where: { $0.number == n }) {
            throw AuditError.missingInput("there is no generation \(n) in \(layout.generations)")
        }
        let top = wanted.max() ?? 0
        let verifier = try self.verifier()
        // A bundle signed by a key retired since verifies: it was valid
        // when the generation included it.
        verifier.acceptsRetiredKeys = true
        var auditor = GenerationAuditor(
            home: self, verifier: verifier,
            directories: [layout.accepted, layout.inputs]
                + (config.role == .collector && config.trust.signerSet ? [layout.inbox] : []) + directories,
            decryption: decryption)
        var previous: (v: VerifiedContainer, weights: ModelWeights)?
        var previousLink: (number: Int, digest: String)?
        var results: [AuditResult] = []
        for (n, path, pruned) in files where n <= top {
            let v: VerifiedContainer
            var weights: ModelWeights?
            do {
                if pruned {
                    v = try verifier.openPruned(path: path)
                } else {
                    let (c, t) = try openVerified(path, verifier: verifier)
                    v = c.droppingPayload()
                    weights = try ModelWeights(arch: try ModelArchitecture(spec: c.manifest.model.arch), file: t)
                }
            } catch {
                throw ChainError(
                    generation: n, message: "\(path) does not verify: \(error)", code: reasonCode(of: error))
            }
            guard v.manifest.kind == .generation, v.manifest.generation == n else {
                throw ChainError(generation: n, message: "\(path) holds generation \(v.manifest.generation ?? -1)")
            }
            if let link = previousLink {
                guard link.number == n - 1 else {
                    throw ChainError(generation: n, message: "generation \(n - 1) is missing")
                }
                guard v.manifest.parent?.digest == link.digest else {
                    throw ChainError(
                        generation: n,
                        message: "names parent \(v.manifest.parent?.digest ?? "none"), but generation \(n - 1) is "
                            + "\(link.digest)")
                }
            } else if n != 0 {
                throw ChainError(generation: n, message: "the chain does not start at generation 0")
            }
            if wanted.contains(n) {
                progress(.init(generation: n, done: results.count, total: wanted.count))
                results.append(auditor.audit(v, pruned: pruned, parent: previous))
            }
            // The generation's own rotation or signer set applies to the
            // ones after it (none after the last: a signer's candidate has
            // no threshold yet, which adopting a set would ask of it).
            if !pruned, n < top { try adoptTrustChanges(carriedBy: v, verifier: verifier) }
            auditor.history.record(v.manifest, digest: v.digest.hex)
            previous = weights.map { (v, $0) }
            previousLink = (n, v.digest.hex)
        }
        progress(.init(generation: top, done: results.count, total: wanted.count))
        return (results, auditor.history.digests)
    }
}

/// What the chain before a generation knew, as a collector's state.db knew
/// it when it merged: which bundles were merged where, each sender's last
/// sequence number, each generation's digest.
struct ChainHistory {
    var digests: [Int: String] = [:]
    var mergedInto: [String: Int] = [:]
    var lastSequence: [String: Int64] = [:]
    var lastStatisticsSequence: [String: Int64] = [:]

    /// Adds a generation, as `Ledger.insert` records one.
    mutating func record(_ m: Manifest, digest: String) {
        let g = m.generation!
        digests[g] = digest
        for b in m.included ?? [] {
            // A remembered update keeps the generation that first merged it.
            if mergedInto[b.digest] == nil { mergedInto[b.digest] = g }
            lastSequence[b.site] = max(lastSequence[b.site] ?? b.seq, b.seq)
        }
        for p in m.partials ?? [] {
            mergedInto[p.digest] = g
            lastSequence[p.region] = max(lastSequence[p.region] ?? p.seq, p.seq)
        }
        for s in m.statistics ?? [] {
            mergedInto[s.digest] = g
            lastStatisticsSequence[s.site] = max(lastStatisticsSequence[s.site] ?? s.seq, s.seq)
        }
    }
}

import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What `fedbatch revert` wrote.
public struct RevertReport: Sendable {
    public let generation: Int
    public let file: String
    public let digest: String
    public let revertedTo: Int
}

extension Collector {
    /// Writes the next generation with generation `target`'s weights, as
    /// `git revert` moves forward: the chain stays linear (its parent is the
    /// current generation), so sites accept it like any newer generation,
    /// and nothing is deleted. It includes no bundle, and its strategy is
    /// recorded as `revert` with the generation it restores. Refusals still
    /// pending stay pending for the next merge. The write is crash-ordered
    /// exactly as a merge's.
    public func revert(to target: Int, now: Date = Date()) throws -> RevertReport {
        let layout = home.layout
        let lock = try home.lock()
        defer { withExtendedLifetime(lock) {} }
        Filing.removeCrashLeftovers(layout)
        let verifier = try home.verifier()
        let (current, _, ledger) = try prepareToWrite(verifier: verifier)
        let number = current.manifest.generation!
        guard target >= 0, target < number else {
            throw HomeError.config(
                path: layout.generations,
                reason: "revert restores an earlier generation: give 0 to \(number - 1), not \(target)")
        }
        // The restored weights must verify like any generation a site would train on.
        let (old, weights) = try home.openGeneration(layout.generation(target), verifier: verifier)
        guard old.manifest.generation == target else {
            throw HomeError.config(
                path: old.path, reason: "holds generation \(old.manifest.generation ?? -1), not \(target)")
        }
        let manifest = Self.revertManifest(current: current, restoring: target, created: rfc3339(now))
        let (path, digest, _) = try write(manifest, weights: weights, inputs: [], ledger: ledger, carrying: current)
        return RevertReport(generation: number + 1, file: path, digest: digest, revertedTo: target)
    }

    /// The manifest of a revert on `current` restoring generation `target`
    /// (members not yet listed); an audit re-derives a revert through it.
    static func revertManifest(current: VerifiedContainer, restoring target: Int, created: String) -> Manifest {
        let number = current.manifest.generation!
        var manifest = Manifest(
            kind: .generation, model: current.manifest.model, created: created,
            generation: number + 1, parent: .init(number: number, digest: current.digest.hex),
            included: [], rejected: [],
            strategy: .init(name: "revert", parameters: ["generation": Double(target)]))
        manifest.metrics = ["bundles": 0, "examples": 0]
        // Reverting releases nothing new, but the privacy spent stays spent:
        // the record carries forward, without noise of its own.
        manifest.privacy = current.manifest.privacy.map {
            var p = $0
            p.noise = nil
            return p
        }
        return manifest
    }
}

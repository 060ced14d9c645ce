import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What `fedbatch prune` may remove.
public struct PrunePolicy: Sendable {
    /// The newest `keep` generations keep their weights (at least 1).
    public var keep = 10
    /// When set, generations created less than this many seconds ago keep
    /// their weights too, whatever `keep` says.
    public var olderThan: TimeInterval?
    /// Report what would go, change nothing.
    public var dryRun = false
    public init() {}
}

/// What a prune removed (or, dry, would remove).
public struct PruneReport: Sendable {
    public struct Skipped: Sendable {
        public let generation: Int
        public let reason: String
    }
    public var generations: [Int] = []
    public var skipped: [Skipped] = []
    /// Files removed from accepted/ and quarantine/ (a reason file counts
    /// with its entry).
    public var accepted: [String] = []
    public var quarantined: [String] = []
    public var bytesFreed: Int64 = 0
}

extension Home {
    /// Drops the weights of old generations and the files that only they
    /// needed, keeping everything `fedbatch log` needs to verify the chain
    /// back to generation 0: each pruned generation becomes `gNNNNNN.fbm`,
    /// its manifest followed by its original statement and signature, which
    /// verifies because the statement names the manifest's SHA-256.
    ///
    /// Kept whole: the newest `policy.keep` generations, those younger than
    /// `policy.olderThan`, one that carries a key rotation (sites adopt the
    /// new key from its members), and one whose statement predates manifest
    /// digests. On a collector, the accepted bundles a pruned generation
    /// included and the quarantined files it reported go too; refusals not
    /// yet reported in a generation stay.
    ///
    /// Each generation is verified first; its `.fbm` is written beside it
    /// (temporary name, fsync, rename), verified, and only then is the
    /// `.fbg` removed, so a crash leaves one or both, never neither.
    public func prune(_ policy: PrunePolicy, now: Date = Date()) throws -> PruneReport {
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        Filing.removeCrashLeftovers(layout)
        var report = PruneReport()
        let verifier = try self.verifier()
        let whole = layout.generationNumbers()
        guard let newest = whole.last else { throw HomeError.noGeneration(layout.generations) }
        let keepFrom = newest - max(policy.keep, 1) + 1
        var pruned = Set(layout.prunedGenerationNumbers())
        for (n, path, isPruned) in layout.chainFiles() {
            // In chain order, so that rotations are adopted before the
            // generations their new key signed.
            if isPruned {
                _ = try verifier.openPruned(path: path)
                continue
            }
            let v = try verifier.open(path: path)
            try verifier.adoptRotation(carriedBy: v)
            guard n < keepFrom else { continue }
            if let age = policy.olderThan, let created = Manifest.parseCreated(v.manifest.created),
                now.timeIntervalSince(created) < age
            {
                report.skipped.append(.init(generation: n, reason: "younger than --older-than"))
                continue
            }
            guard v.statement.manifestDigest != nil else {
                report.skipped.append(
                    .init(
                        generation: n,
                        reason: "its statement names no manifest digest (written by an older fedbatch); kept whole"))
                continue
            }
            if v.manifest.members.contains(where: { $0.name.hasPrefix(KeyRotation.Files.memberPrefix) }) {
                report.skipped.append(
                    .init(
                        generation: n, reason: "carries a key rotation, which sites adopt from its members; kept whole")
                )
                continue
            }
            let size = fileSize(path) ?? 0
            if !policy.dryRun {
                let dest = layout.prunedGeneration(n)
                try writeFileAtomically(
                    parts: [
                        PrunedManifest.keptBytes(
                            manifestBytes: v.container.manifestBytes, members: v.container.members),
                        ContainerFile.slot(statement: v.file.statement, signature: v.file.signature),
                    ], to: dest)
                let check = try verifier.openPruned(path: dest)
                guard check.digest == v.digest, check.manifest.generation == n else {
                    throw HomeError.config(
                        path: dest, reason: "the pruned copy of generation \(n) does not verify as it; \(path) is kept")
                }
                try FileManager.default.removeItem(atPath: path)
                try syncDirectory(layout.generations)
                report.bytesFreed += size - (fileSize(dest) ?? 0)
            } else {
                report.bytesFreed +=
                    size
                    - Int64(
                        PrunedManifest.keptBytes(manifestBytes: v.container.manifestBytes, members: v.container.members)
                            .count + v.file.statement.count + v.file.signature.count + 16)
            }
            report.generations.append(n)
            pruned.insert(n)
        }
        guard config.role == .collector, let last = pruned.max(),
            FileManager.default.fileExists(atPath: layout.stateDatabase)
        else { return report }
        let ledger = try Ledger(path: layout.stateDatabase)
        for b in try ledger.storedBundles() where pruned.contains(b.generation) {
            guard let name = b.stored else { continue }
            let file = "\(layout.accepted)/\(name)"
            guard FileManager.default.fileExists(atPath: file) else { continue }
            report.bytesFreed += fileSize(file) ?? 0
            if !policy.dryRun { try FileManager.default.removeItem(atPath: file) }
            report.accepted.append(name)
        }
        for name in try ledger.reportedRejections(upTo: last) {
            let file = "\(layout.quarantine)/\(name)", reason = file + Filing.reasonSuffix
            guard FileManager.default.fileExists(atPath: file) || FileManager.default.fileExists(atPath: reason) else {
                continue
            }
            report.bytesFreed += (fileSize(file) ?? 0) + (fileSize(reason) ?? 0)
            if !policy.dryRun {
                try? FileManager.default.removeItem(atPath: file)
                try? FileManager.default.removeItem(atPath: reason)
            }
            report.quarantined.append(name)
        }
        if !policy.dryRun {
            try syncDirectory(layout.accepted)
            try syncDirectory(layout.quarantine)
        }
        return report
    }
}

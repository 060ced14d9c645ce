import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// `[merge] memory = "mifa"`: the collector remembers each site's latest
/// update and adds it to every generation the site sends nothing new for
/// (Gu et al., "Fast Federated Learning in the Presence of Arbitrary Device
/// Unavailability", NeurIPS 2021). A site away on a weekly USB cycle then
/// steers every generation, not one in seven, which removes the bias
/// against it. The remembered update is the bundle itself, read back from
/// accepted/ and verified again, so a generation that uses it is re-derived
/// from signed files exactly as any other (the exact sums do not depend on
/// the order of addition).
extension Collector {
    /// Refuses memory where its meaning breaks, before the inbox is touched.
    func checkMemory(strategy: AggregationStrategy) throws {
        let settings = home.config.merge
        guard settings.memory != .none else { return }
        if home.config.role == .region || !settings.regions.isEmpty { throw MemoryError.hierarchical }
        if strategy is RobustStrategy { throw MemoryError.robust(type(of: strategy).name) }
        if home.config.privacy != nil { throw MemoryError.privacy }
    }

    /// Adds to `round` the remembered update of every pinned site that has
    /// none in it: the site's newest update a generation included, if that
    /// generation comes after the last revert or statistics pin, if it is
    /// at most `memory_window` generations stale against the generation
    /// being written, and if its file in accepted/ still verifies. Returns
    /// why each other site with an earlier update was forgotten.
    func remember(
        into round: inout MergeRound, current: VerifiedContainer, arch: ModelArchitecture, ledger: Ledger,
        spill: ContainerReader.Spill? = nil
    ) throws -> [MergeReport.Forgotten] {
        let settings = home.config.merge
        guard settings.memory != .none else { return [] }
        let number = current.manifest.generation!
        let reset = try ledger.lastMemoryReset() ?? -1
        let fresh = Set(round.included.map(\.site))
        var intake = Intake(home: home, arch: arch, decryption: signer.decryption)
        intake.spill = spill
        // A bundle signed by a key since rotated verifies, as `verify` lets
        // it: its site is still pinned. A removed site is not in the list.
        let verifier = try home.verifier()
        verifier.acceptsRetiredKeys = true
        var forgotten: [MergeReport.Forgotten] = []
        let sites = try TrustSet.load(keysDirectory: home.layout.keys).pinnedSites
        for site in sites where !fresh.contains(site) {
            guard let u = try ledger.latestUpdate(site: site) else { continue }
            func forget(_ why: String) { forgotten.append(.init(site: site, digest: u.digest, reason: why)) }
            guard u.generation > reset else {
                forget("generation \(reset) (a revert or a statistics pin) came after it")
                continue
            }
            let staleness = number - u.base
            guard staleness <= settings.effectiveMemoryWindow else {
                forget(
                    "trained on generation \(u.base), \(staleness) behind; merge.memory_window is "
                        + "\(settings.effectiveMemoryWindow)")
                continue
            }
            guard let stored = u.stored else {
                forget("its file in accepted/ is not recorded (state.db was rebuilt without it)")
                continue
            }
            let entry = DirectoryEntry(directory: home.layout.accepted, name: stored)
            guard let status = try? entryStatus(entry), let digest = Digest(hex: u.digest) else {
                forget("accepted/\(stored) is gone (pruned or removed)")
                continue
            }
            switch intake.open(.init(entry: entry, digest: digest, status: status), verifier: verifier) {
            case .ok(let v, let delta) where v.digest == digest:
                if case .refused(let error) = round.take(remembered: v, delta: delta, firstIncluded: u.generation) {
                    forget("no longer fits the merge: \(error)")
                }
            case .refused(let error, _):
                forget("accepted/\(stored) no longer verifies: \(error)")
            default:
                forget("accepted/\(stored) is not the update generation \(u.generation) included")
            }
        }
        return forgotten
    }
}

/// Why a merge with `[merge] memory` refused to run.
public enum MemoryError: Error, Equatable, Sendable, ReasonCoded {
    case robust(String)
    case privacy
    case hierarchical

    public var code: String {
        switch self {
        case .robust: return "memory.strategy"
        case .privacy: return "memory.privacy"
        case .hierarchical: return "memory.hierarchical"
        }
    }

    public var description: String {
        switch self {
        case .robust(let name):
            return
                "merge.memory cannot be used with \(name): a robust rule weighs the updates of one round against each "
                + "other to find the outliers, and a remembered update, counted again round after round, would let "
                + "one site's old update outvote fresh ones; use fedavg or a server optimiser, or memory = \"none\""
        case .privacy:
            return
                "merge.memory cannot be used under [privacy]: the accountant charges each site's update once, and a "
                + "remembered update enters every generation again, so the guarantee stated would not hold"
        case .hierarchical:
            return
                "merge.memory is not available in a hierarchical federation: a root collector sees partial "
                + "aggregates, not the sites' own updates, and a region's partial must cover its sites' fresh "
                + "bundles only; set memory = \"none\""
        }
    }
}

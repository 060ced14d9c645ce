import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What `fedbatch status` reports about a collector home: read from the
/// files and state.db, with no lock taken and nothing written, so it is
/// safe beside a running merge.
public struct CollectorStatus: Sendable {
    public struct Site: Sendable {
        public let site: String
        /// The newest generation that included one of its bundles (nil: none yet).
        public let lastGeneration: Int?
        public let lastSeq: Int64?
        public let lastCreated: String?
        public let bundles: Int
        /// The site's newest evaluation: of which generation, on how many
        /// examples, with which figures (what the site claims).
        public let evaluation: Ledger.SiteEvaluationRow?
    }
    public let generation: Int?
    public let digest: String?
    public let created: String?
    public let quorum: Int
    /// Regular files waiting in inbox/, and the age of the oldest.
    public let inboxFiles: Int
    public let oldestInboxSeconds: Double?
    /// quarantine/ reason files by code.
    public let quarantine: [String: Int]
    /// Every pinned site, merged or not.
    public let sites: [Site]
}

/// What `fedbatch status` reports about a site home.
public struct SiteStatus: Sendable {
    public struct Bundle: Sendable {
        public let file: String
        public let digest: String
        public let seq: Int64
        public let baseGeneration: Int
        /// Still in outbox/ (not yet taken away by the transport).
        public let inOutbox: Bool
        /// The generation that included it, if one in generations/ does.
        public let includedIn: Int?
        /// When push moved it to sent/, if it did.
        public var pushed: String? = nil
        /// Generations signed after it was pushed that left it out while
        /// it was within their staleness window: evidence, from the site's
        /// own sent/ and the generations' signed manifests and signature
        /// times, that the collector passed it over (one such generation
        /// can be a bundle that reached the collector just after its pull).
        public var leftOutBy: [Int] = []
    }
    public let site: String
    public let newestGeneration: Int?
    public let newestDigest: String?
    public let lastBundle: Bundle?
    /// `[trust] min_witnesses`, and for the newest generations here (at
    /// most ten) the pinned witnesses whose cosignature verified.
    public var minWitnesses = 0
    public var cosigners: [(generation: Int, witnesses: [String])] = []
}

/// What `fedbatch status` reports about a witness home.
public struct WitnessStatus: Sendable {
    public let witness: String
    /// The newest generation in generations/.
    public let newestGeneration: Int?
    /// The generations it co-signed (newest first, at most ten).
    public let cosigned: [(generation: Int, digest: String)]
    /// Generations here newer than the newest it co-signed.
    public let pending: [Int]
}

extension Home {
    public func collectorStatus(now: Date = Date()) throws -> CollectorStatus {
        let layout = self.layout
        let ledger =
            FileManager.default.fileExists(atPath: layout.stateDatabase) ? try Ledger(path: layout.stateDatabase) : nil
        var newest: (number: Int, digest: String, created: String?)? = try ledger?.latestGeneration().map {
            ($0.number, $0.digest, $0.created)
        }
        if newest == nil, let n = layout.generationNumbers().last {
            // Before the first merge there is no state.db: read the newest
            // generation itself, verified like everything else.
            let v = try openVerified(layout.generation(n), verifier: try verifier()).0
            newest = (n, v.digest.hex, v.manifest.created)
        }
        let clock = now.timeIntervalSince1970
        var files = 0
        var oldest: Double?
        for entry in try listDirectory(layout.inbox) where entry.name.first != 0x2E {
            guard let status = try entryStatus(entry), status.kind == .regular else { continue }
            files += 1
            oldest = max(oldest ?? 0, clock - status.changed)
        }
        var quarantine: [String: Int] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: layout.quarantine)) ?? []
        where name.hasSuffix(Filing.reasonSuffix) {
            let code = Filing.readReason("\(layout.quarantine)/\(name)")?.code ?? "unreadable"
            quarantine[code, default: 0] += 1
        }
        let activity = Dictionary(
            (try ledger?.siteActivity() ?? []).map { ($0.site, $0) }, uniquingKeysWith: { a, _ in a })
        let pinned = try TrustSet.load(keysDirectory: layout.keys).keys.compactMap { key -> String? in
            if case .site(let s) = key.role { return s } else { return nil }
        }
        // Ordered by generation: the last row of a site is its newest.
        var evaluations: [String: Ledger.SiteEvaluationRow] = [:]
        for e in try ledger?.siteEvaluations() ?? [] { evaluations[e.site] = e }
        let sites = Set(pinned).union(activity.keys).sorted().map { s in
            CollectorStatus.Site(
                site: s, lastGeneration: activity[s]?.generation, lastSeq: activity[s]?.seq,
                lastCreated: activity[s]?.created, bundles: activity[s]?.bundles ?? 0, evaluation: evaluations[s])
        }
        return CollectorStatus(
            generation: newest?.number, digest: newest?.digest, created: newest?.created,
            quorum: config.merge.minBundles, inboxFiles: files, oldestInboxSeconds: oldest,
            quarantine: quarantine, sites: sites)
    }

    /// The site's state; whether its last bundle was included is read from
    /// the generations in generations/ newer than its base, each verified.
    public func siteStatus() throws -> SiteStatus {
        let state =
            FileManager.default.fileExists(atPath: layout.stateDatabase)
            ? try SiteState(path: layout.stateDatabase) : nil
        let newest = try state?.highestGeneration()
        var bundle: SiteStatus.Bundle?
        if let last = try state?.lastWritten() {
            var includedIn: Int?
            var leftOutBy: [Int] = []
            let verifier = try self.verifier()
            let sent = "\(layout.sent)/\((last.file as NSString).lastPathComponent)"
            // Moved to sent/ by push: the rename sets its change time.
            let pushed = (try? OpenFile(path: sent))?.status.changed
            for (n, path, pruned) in layout.chainFiles() where n > last.base {
                // Only what the chain vouches for counts (walkTrust): a
                // generation signed by a retired key proves nothing.
                do { _ = try walkTrust(to: n, verifier: verifier) } catch { break }
                guard let v = try? (pruned ? verifier.openPruned(path: path) : verifier.open(path: path)) else { break }
                if v.manifest.included?.contains(where: { $0.digest == last.digest }) == true { includedIn = n; break }
                let m = v.manifest
                let window = Int(m.strategy?.parameters["max_staleness"] ?? 0)
                if let pushed, let signed = Verifier.signatureCreated(v.file.signature), Double(signed) > pushed,
                    !["revert", "stats-pin"].contains(m.strategy?.name ?? ""), n - 1 - last.base <= window
                {
                    leftOutBy.append(n)
                }
            }
            var b = SiteStatus.Bundle(
                file: last.file, digest: last.digest, seq: last.seq, baseGeneration: last.base,
                inOutbox: FileManager.default.fileExists(atPath: last.file), includedIn: includedIn)
            b.pushed = pushed.map { rfc3339(Date(timeIntervalSince1970: $0)) }
            b.leftOutBy = leftOutBy
            bundle = b
        }
        var status = SiteStatus(
            site: config.siteID ?? "", newestGeneration: newest?.number, newestDigest: newest?.digest,
            lastBundle: bundle)
        status.minWitnesses = config.trust.minWitnesses
        status.cosigners = try recentCosigners()
        return status
    }

    /// The newest generations here (at most ten) with the pinned witnesses
    /// whose cosignature verified over each, newest first.
    func recentCosigners() throws -> [(generation: Int, witnesses: [String])] {
        let verifier = try self.verifier()
        return layout.generationNumbers().suffix(10).reversed().map { n in
            guard let handle = try? OpenFile(path: layout.generation(n)), let file = try? ContainerFile.slot(of: handle)
            else { return (n, []) }
            return (n, cosigners(of: n, statement: file.statement, verifier: verifier).valid)
        }
    }

    public func witnessStatus() throws -> WitnessStatus {
        let cosigned =
            FileManager.default.fileExists(atPath: layout.stateDatabase)
            ? try WitnessLedger(path: layout.stateDatabase).cosigned() : [:]
        let newestCosigned = cosigned.keys.max() ?? -1
        return WitnessStatus(
            witness: config.siteID ?? "", newestGeneration: layout.chainFiles().last?.number,
            cosigned: cosigned.sorted { $0.key > $1.key }.prefix(10).map { ($0.key, $0.value) },
            pending: layout.generationNumbers().filter { $0 > newestCosigned })
    }
}

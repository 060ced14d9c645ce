import Foundation

/// Why a bundle that verified was still refused by a merge.
public enum ProtocolError: Error, Equatable, Sendable, ReasonCoded {
    case notAnUpdate
    case staleBase(offered: Int, current: Int)
    case wrongBaseDigest(number: Int)
    case replay(String)
    case sequenceReused(site: String, seq: Int64, last: Int64)
    case secondUpdate(site: String, generation: Int)
    case tooManyExamples(Int64, cap: Int64)

    public var code: String {
        switch self {
        case .notAnUpdate: return "protocol.kind"
        case .staleBase, .wrongBaseDigest: return "protocol.stale-base"
        case .replay: return "protocol.replay"
        case .sequenceReused: return "protocol.seq-reused"
        case .secondUpdate: return "protocol.one-per-site"
        case .tooManyExamples: return "protocol.num-examples"
        }
    }

    public var description: String {
        switch self {
        case .notAnUpdate: return "the file is a generation, not an update bundle"
        case let .staleBase(o, c): return "the update was trained on generation \(o); the current generation is \(c)"
        case let .wrongBaseDigest(n): return "the update names generation \(n) with a digest that is not this collector's generation \(n)"
        case .replay(let status): return "a bundle with this digest was already \(status): a replay"
        case let .sequenceReused(site, seq, last): return "site \(site) already used sequence number \(last), so \(seq) is a replay or a rewrite"
        case let .secondUpdate(site, g): return "site \(site) already has an update for generation \(g) in this merge; one per site"
        case let .tooManyExamples(n, cap): return "num_examples \(n) is above the cap of \(cap)"
        }
    }
}

/// What a merge did.
public struct MergeReport: Sendable, Codable {
    public enum Outcome: String, Sendable, Codable { case merged, belowQuorum = "below-quorum", empty }
    public struct Rejection: Sendable, Codable {
        public let file: String
        public let digest: String
        public let code: String
        public let message: String
    }
    public let outcome: Outcome
    public let generation: Int?
    public let file: String?
    public let digest: String?
    public let accepted: [String]
    public let rejected: [Rejection]
    public let quorum: Int
}

/// The collector side: verify the inbox, quarantine the bad, aggregate the
/// good into the next signed generation. See ARCHITECTURE.md, "Merge:
/// required behaviour", which this follows step by step.
public struct Collector {
    public let home: Home
    public let signer: PayloadSigner

    public init(home: Home, signer: PayloadSigner) throws {
        try home.requireRole(.collector, signer: signer)
        self.home = home
        self.signer = signer
    }

    public struct LockHeld: Error, CustomStringConvertible {
        public let path: String
        public var description: String { "another fedbatch merge holds \(path); nothing was changed" }
    }

    /// One inbox file after decoding: verified, parsed, tensors checked.
    private struct Decoded: Sendable {
        let verified: VerifiedContainer
        let tensors: SafetensorsFile
    }

    /// Runs one merge. `minBundles` overrides the configured quorum.
    ///
    /// The files are summed in digest order (float64 addition is not
    /// associative, and a fixed order makes the result byte-identical on any
    /// machine). So the digests come first, in a cheap pass that only hashes;
    /// then two workers verify and decode the bundles in that order, each
    /// with its own gpg, while this thread checks the protocol and adds each
    /// delta as it arrives. At most three bundles are in memory at once,
    /// whatever the size of the inbox.
    public func merge(minBundles: Int? = nil, now: Date = Date()) throws -> MergeReport {
        let layout = home.layout
        guard let lock = try FileLock.tryLock(layout.lockFile) else { throw LockHeld(path: layout.lockFile) }
        defer { withExtendedLifetime(lock) {} }
        if let ms = ProcessInfo.processInfo.environment["FEDBATCH_TEST_HOLD_LOCK_MS"], let n = UInt32(ms) { usleep(n * 1000) }

        let verifier = try home.verifier()
        let ledger = try openLedger(verifier: verifier)
        let (current, currentWeights) = try currentGeneration(verifier: verifier)
        try finishInterruptedMerge(ledger: ledger, current: current)

        let settings = home.config.merge
        let quorum = minBundles ?? settings.minBundles
        let arch = currentWeights.arch
        let number = current.manifest.generation!
        var rejected: [MergeReport.Rejection] = []

        // Pass 1: identities. A file that cannot even be split is refused here.
        let files = inboxFiles()
        let identities = Parallel.map(files, workers: 2) { path in
            Result { try ContainerFile.split(try readFile(path, cap: ContainerLimits.default.maxFileBytes)).digest }
        }
        var ordered: [(path: String, digest: Digest)] = []
        for (path, identity) in zip(files, identities) {
            switch identity {
            case .success(let d): ordered.append((path, d))
            case .failure(let e): rejected.append(try quarantine(path, error: e, ledger: ledger, now: now))
            }
        }
        ordered.sort { $0.digest < $1.digest }
        let order = ordered
        let home = self.home

        // Pass 2: verify, decode and add, in digest order.
        let verifiers = [verifier, try home.verifier()]
        let fedavg = FedAvg(arch: arch, serverLearningRate: settings.serverLearningRate)
        var included: [Manifest.IncludedBundle] = []
        var kept: [(path: String, created: String)] = []
        var sitesSeen = Set<String>()
        var digestsSeen = Set<Digest>()
        var failure: Error?
        Parallel.orderedPipeline(count: ordered.count, workers: 2, inFlight: 3, produce: { i, worker in
            Result { () throws -> Decoded in
                let (v, tensors) = try home.openVerified(order[i].path, verifier: verifiers[worker])
                return Decoded(verified: v, tensors: tensors)
            }
        }, consume: { i, result in
            guard failure == nil else { return }
            let path = ordered[i].path
            do {
                do {
                    let d = try result.get()
                    let v = d.verified, m = v.manifest
                    // The bytes that verified must be the bytes the order was built on.
                    guard v.digest == ordered[i].digest else { throw FileError(path: path, message: "changed on disk during the merge; rerun") }
                    guard m.kind == .update, let site = m.site, let base = m.base, let n = m.numExamples else { throw ProtocolError.notAnUpdate }
                    guard base.number == number else { throw ProtocolError.staleBase(offered: base.number, current: number) }
                    guard base.digest == current.digest.hex else { throw ProtocolError.wrongBaseDigest(number: base.number) }
                    if let status = try ledger.bundleStatus(v.digest.hex) { throw ProtocolError.replay(status) }
                    guard digestsSeen.insert(v.digest).inserted else { throw ProtocolError.replay("in this inbox under another name") }
                    if let last = try ledger.lastSequence(site: site.id), site.seq <= last {
                        throw ProtocolError.sequenceReused(site: site.id, seq: site.seq, last: last)
                    }
                    guard n <= settings.maxExamples else { throw ProtocolError.tooManyExamples(n, cap: settings.maxExamples) }
                    // One update per site and generation: the first in digest order.
                    guard sitesSeen.insert(site.id).inserted else { throw ProtocolError.secondUpdate(site: site.id, generation: number) }
                    let weight = Double(min(n, settings.weightCap))
                    fedavg.add(delta: d.tensors, arch: arch, weight: weight)
                    included.append(.init(digest: v.digest.hex, site: site.id, signer: v.signer.fingerprint, seq: site.seq, numExamples: n, weight: weight))
                    kept.append((path, m.created))
                } catch let e as FileError where e.message.hasPrefix("changed on disk") {
                    throw e
                } catch {
                    rejected.append(try quarantine(path, error: error, ledger: ledger, now: now))
                }
            } catch {
                failure = error
            }
        })
        if let failure { throw failure }

        guard !kept.isEmpty, kept.count >= quorum else {
            return MergeReport(outcome: kept.isEmpty && rejected.isEmpty ? .empty : .belowQuorum, generation: nil, file: nil, digest: nil,
                               accepted: kept.map(\.path), rejected: rejected, quorum: quorum)
        }
        let next = fedavg.apply(to: currentWeights)

        // The manifest holds nothing that differs between two collectors
        // given the same inputs: time is the newest input's, reasons are codes.
        var manifest = Manifest(kind: .generation, model: current.manifest.model, created: kept.map(\.created).max()!,
                                generation: number + 1, parent: .init(number: number, digest: current.digest.hex),
                                included: included,
                                rejected: rejected.map { .init(digest: $0.digest, reason: $0.code) }.sorted { $0.digest < $1.digest },
                                strategy: .init(name: "fedavg", parameters: ["server_lr": settings.serverLearningRate, "weight_cap": Double(settings.weightCap)]))
        manifest.metrics = ["bundles": Double(included.count), "examples": Double(included.reduce(0) { $0 + $1.numExamples })]
        let sealed = try signer.seal(manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(next.named))])
        let path = layout.generation(number + 1)
        // 1. the generation (temp file, fsync, rename, fsync dir) ...
        try writeFileAtomically(sealed.file, to: path)
        faultPoint("after-generation")
        // 2. ... then the index ...
        try ledger.recordGeneration(sealed.manifest, digest: sealed.digest.hex, file: path)
        faultPoint("after-ledger")
        // 3. ... then the inputs leave the inbox. A crash anywhere leaves the
        // old or the new generation, and a rerun finishes steps 2 and 3.
        for (i, c) in kept.enumerated() {
            try moveFile(c.path, to: uniqueDestination(in: layout.accepted, for: c.path), sync: false)
            if i == 0 { faultPoint("after-first-move") }
        }
        // One sync for all the moves: until it is done the generation is not
        // marked settled, so a crash here is finished by the next run.
        try syncDirectory(layout.accepted)
        try syncDirectory(layout.inbox)
        try ledger.markSettled(number + 1)
        return MergeReport(outcome: .merged, generation: number + 1, file: path, digest: sealed.digest.hex,
                           accepted: kept.map(\.path), rejected: rejected, quorum: quorum)
    }

    // MARK: steps

    private func inboxFiles() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: home.layout.inbox)) ?? []
        // Dotfiles are transfers in progress (rsync's temp names).
        return names.filter { !$0.hasPrefix(".") }.sorted().map { "\(home.layout.inbox)/\($0)" }
    }

    /// The newest generation, verified.
    func currentGeneration(verifier: Verifier) throws -> (VerifiedContainer, ModelWeights) {
        guard let newest = home.layout.generationNumbers().last else { throw HomeError.noGeneration(home.layout.generations) }
        let (v, tensors) = try home.openVerified(home.layout.generation(newest), verifier: verifier)
        guard v.manifest.kind == .generation, v.manifest.generation == newest else {
            throw HomeError.config(path: v.path, reason: "holds generation \(v.manifest.generation ?? -1), not \(newest)")
        }
        return (v, try ModelWeights(arch: try ModelArchitecture(spec: v.manifest.model.arch), file: tensors))
    }

    /// Opens state.db, rebuilding it from the files when it is missing.
    func openLedger(verifier: Verifier) throws -> Ledger {
        let exists = FileManager.default.fileExists(atPath: home.layout.stateDatabase)
        let ledger = try Ledger(path: home.layout.stateDatabase)
        if !exists { try rebuild(ledger, verifier: verifier) }
        return ledger
    }

    /// Recreates state.db from the signed generations and the reason files.
    public func rebuild(_ ledger: Ledger, verifier: Verifier) throws {
        var gens: [(Manifest, digest: String, file: String)] = []
        for n in home.layout.generationNumbers() {
            let v = try verifier.open(path: home.layout.generation(n))
            gens.append((v.manifest, v.digest.hex, v.path))
        }
        let q = home.layout.quarantine
        let reasons = ((try? FileManager.default.contentsOfDirectory(atPath: q)) ?? []).filter { $0.hasSuffix(".reason.json") }.compactMap { name -> (String, String)? in
            guard let data = try? readFile("\(q)/\(name)", cap: 1 << 20),
                  let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let digest = obj["digest"] as? String, let code = obj["code"] as? String else { return nil }
            return (digest, code)
        }
        try ledger.rebuild(generations: gens, quarantineReasons: reasons)
    }

    /// A crash after the generation was written but before the index or the
    /// moves completed leaves work to finish: record the newest generation
    /// and move the bundles it includes out of the inbox.
    private func finishInterruptedMerge(ledger: Ledger, current: VerifiedContainer) throws {
        if try ledger.latestGeneration()?.number != current.manifest.generation {
            try ledger.recordGeneration(current.manifest, digest: current.digest.hex, file: current.path)
        }
        let number = current.manifest.generation!
        // Once settled, a copy of an included bundle is a replay for the
        // protocol checks to quarantine, not leftover work.
        guard try !ledger.isSettled(number) else { return }
        let included = Set((current.manifest.included ?? []).map(\.digest))
        for path in inboxFiles() where !included.isEmpty {
            guard let file = try? ContainerFile.split(try readFile(path, cap: ContainerLimits.default.maxFileBytes)),
                  included.contains(file.digest.hex) else { continue }
            try moveFile(path, to: uniqueDestination(in: home.layout.accepted, for: path))
        }
        try ledger.markSettled(number)
    }

    /// Moves a refused file to quarantine/ beside a JSON reason file.
    private func quarantine(_ path: String, error: Error, ledger: Ledger, now: Date) throws -> MergeReport.Rejection {
        let bytes = try? readFile(path, cap: ContainerLimits.default.maxFileBytes)
        // The identity of a file that cannot even be split is its whole hash.
        let digest = (bytes.flatMap { try? ContainerFile.split($0) }?.digest ?? bytes.map(Digest.of) ?? Digest.of(Data()))
        let code = reasonCode(of: error)
        let dest = uniqueDestination(in: home.layout.quarantine, for: path)
        let reason: [String: String] = ["code": code, "message": "\(error)", "digest": digest.hex, "time": rfc3339(now),
                                        "file": (path as NSString).lastPathComponent]
        let json = try JSONSerialization.data(withJSONObject: reason, options: [.sortedKeys, .prettyPrinted])
        try writeFileAtomically(json, to: dest + ".reason.json")
        try moveFile(path, to: dest)
        try ledger.recordRejection(digest: digest.hex, site: nil, seq: nil, reason: code)
        return .init(file: path, digest: digest.hex, code: code, message: "\(error)")
    }

    private func uniqueDestination(in dir: String, for path: String) -> String {
        let name = (path as NSString).lastPathComponent
        var dest = "\(dir)/\(name)"
        var i = 1
        while FileManager.default.fileExists(atPath: dest) {
            dest = "\(dir)/\(name).\(i)"
            i += 1
        }
        return dest
    }
}

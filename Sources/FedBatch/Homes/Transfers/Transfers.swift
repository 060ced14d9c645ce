import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What one transfer command did, file by file.
public struct TransferReport: Sendable {
    public struct Item: Sendable {
        /// The remote object's key.
        public let key: String
        /// The local file, where it is now.
        public let file: String
        public let bytes: Int64
    }
    public struct Refusal: Sendable {
        public let key: String
        public let code: String
        public let message: String
    }
    public let remote: String
    /// Files moved across (uploaded, or downloaded and placed).
    public var transferred: [Item] = []
    /// Objects already where they belong (a rerun after a kill).
    public var skipped: [Item] = []
    public var refused: [Refusal] = []
    /// Objects left for a later run: still being written (a directory
    /// remote's file changed within merge.settle_seconds).
    public var waiting: [Refusal] = []
    /// Objects deleted from a shared inbox: inputs of a generation that
    /// has the signers' threshold (`pullBundles`).
    public var removed: [Item] = []

    /// Adds another transfer's outcomes to this one's (a command that pulls
    /// generations and bundles reports both).
    public mutating func append(_ other: TransferReport) {
        transferred += other.transferred
        skipped += other.skipped
        refused += other.refused
        waiting += other.waiting
        removed += other.removed
    }
}

/// push, pull and publish for one home: a transfer takes the home it
/// works for, as metrics and the report do, rather than extending it.
public struct Transfers {
    public let home: Home
    var layout: HomeLayout { home.layout }
    var config: HomeConfig { home.config }

    public init(home: Home) { self.home = home }

    /// What every transfer does first: take the home's lock (a merge or
    /// another transfer meanwhile exits 4), then remove the temporary files
    /// a killed transfer left, which no one else can be writing now.
    private func begin() throws -> FileLock {
        let lock = try home.lock()
        Filing.removeCrashLeftovers(layout)
        return lock
    }
    /// The remote `override` (a command's --remote) or `[remote] url` names.
    public func remote(override: String?) throws -> RemoteStore {
        if let override {
            return try Remotes.open(
                url: override, base: FileManager.default.currentDirectoryPath, pathStyle: config.remote.pathStyle)
        }
        guard let url = config.remote.url else { throw RemoteError.notConfigured }
        return try Remotes.open(url: url, base: layout.root, pathStyle: config.remote.pathStyle)
    }

    /// A regional collector's upstream: the root collector's remote
    /// (`override`, a command's --upstream, or `[remote] upstream`).
    public func upstream(override: String?) throws -> RemoteStore {
        if let override {
            return try Remotes.open(
                url: override, base: FileManager.default.currentDirectoryPath, pathStyle: config.remote.pathStyle)
        }
        guard let url = config.remote.upstream else { throw RemoteError.notConfigured }
        return try Remotes.open(url: url, base: layout.root, pathStyle: config.remote.pathStyle)
    }

    /// Site: uploads every bundle in outbox/ to `inbox/SITE/` on the remote,
    /// then moves it to sent/. Killed between the two, the next push
    /// uploads it again (the same object, the same bytes) and moves it.
    ///
    /// With `encrypt` (`[remote] encrypt`, or --encrypt), each bundle is
    /// encrypted to the collector key pinned now and uploaded as
    /// `inbox/SITE/FILE.gpg`; the signed plain bundle moves to sent/.
    ///
    /// A regional collector pushes its partial aggregates (`.fbp`) the same
    /// way, to the root's remote, as `inbox/REGION/FILE`.
    public func push(to remote: RemoteStore, encrypt: Bool? = nil) throws -> TransferReport {
        guard config.role == .site || config.role == .region else {
            throw HomeError.wrongRole(path: layout.root, expected: .site, actual: config.role)
        }
        let lock = try begin()
        defer { withExtendedLifetime(lock) {} }
        var report = TransferReport(remote: remote.url)
        let site = config.siteID!
        // The newest collector key: after a rotation, the one the collector
        // holds the secret of now.
        let recipient =
            (encrypt ?? config.remote.encrypt)
            ? try TrustSet.load(keysDirectory: layout.keys).key(for: .collector)?.path
                ?? TrustSet.Files.collectorKey(in: layout.keys) : nil
        // What goes up: each bundle as it is, or encrypted first (gpg, one
        // at a time, into a hidden file that lives as long as this run).
        var uploads: [(entry: DirectoryEntry, key: String, source: String, size: Int64, staged: PendingFile?)] = []
        for entry in try listDirectory(layout.outbox).sorted(by: { $0.name.lexicographicallyPrecedes($1.name) }) {
            let name = entry.displayName
            guard !name.hasPrefix("."), [".fbu", ".fbp", ".fbs"].contains(where: name.hasSuffix),
                let status = try entryStatus(entry), status.kind == .regular
            else { continue }
            let key = RemoteLayout.bundleKey(site: site, file: name + (recipient == nil ? "" : BundleEncryption.suffix))
            guard let recipient else {
                uploads.append((entry, key, entry.displayPath, status.size, nil))
                continue
            }
            do {
                let sealed = try BundleEncryption.encrypt(
                    try readFile(entry.displayPath, cap: status.size), toKeyFile: recipient)
                let staged = try PendingFile(in: layout.outbox)
                try staged.write(sealed)
                uploads.append((entry, key, staged.path, status.size, staged))
            } catch {
                // This bundle stays in outbox/ for the next push; the rest go.
                report.refused.append(.init(key: key, code: reasonCode(of: error), message: describe(error)))
            }
        }
        try FileManager.default.createDirectory(atPath: layout.sent, withIntermediateDirectories: true)
        // Uploaded, then moved to sent/: a bundle whose upload failed stays
        // in outbox/ for the next push, and the rest go.
        let sent = layout.sent
        let naming = NSLock()
        try moveConcurrently(uploads.map(\.key), into: &report) { i in
            let u = uploads[i]
            try remote.put(file: u.source, key: u.key)
            faultPoint("push-before-move")
            let stored = try naming.withLock {
                let stored = try Filing.freeName(in: sent, for: u.entry.name)
                try moveEntry(u.entry, to: sent, as: stored)
                return stored
            }
            return .transferred(.init(key: u.key, file: "\(sent)/\(stored)", bytes: u.size))
        }
        withExtendedLifetime(uploads) {}
        return report
    }

    /// Collector: downloads every bundle under `inbox/` on the remote into
    /// inbox/ (a hidden temporary name, fsync, rename), and removes it from
    /// the remote only once it is safe on local disk. A bundle already in
    /// the inbox byte for byte (a rerun after a kill) is not placed twice.
    /// Each download first passes the merge's intake as far as a file's
    /// statement goes (`Intake.statement(of:)`): what the merge would refuse
    /// unread (larger than the model allows, not a container, a partial
    /// aggregate where none is taken) stays on the remote, refused with the
    /// code the merge would give, and never reaches the inbox.
    public func pullBundles(from remote: RemoteStore, decryption: BundleDecryption? = nil) throws -> TransferReport {
        guard config.role != .site else {
            throw HomeError.wrongRole(path: layout.root, expected: .collector, actual: config.role)
        }
        let lock = try begin()
        defer { withExtendedLifetime(lock) {} }
        var report = TransferReport(remote: remote.url)
        let cap = home.largestInboxFile
        let settle = config.merge.settleSeconds
        let intake = try home.mergeIntake(decryption: decryption)
        // Signers share one inbox: each takes a copy, and none deletes a
        // bundle until a generation with the threshold has merged it.
        let shared = config.trust.signerSet
        var settled: [Int: Bool] = [:]
        var wanted: [(RemoteObject, String)] = []
        for object in try remote.list(prefix: RemoteLayout.inbox) {
            guard let (_, file) = RemoteLayout.parseBundleKey(object.key) else {
                report.refused.append(
                    .init(
                        key: object.key, code: "remote.foreign-object",
                        message: "\(object.key) is not inbox/SITE/FILE; left on the remote"))
                continue
            }
            // A file another program is still copying onto a directory
            // remote would be taken half-written and its source deleted.
            if let changed = object.modified, wallClock() - changed < settle {
                report.waiting.append(
                    .init(
                        key: object.key, code: "remote.settling",
                        message: String(
                            format:
                                "changed %.0f s ago; left until it has been still for merge.settle_seconds (%.0f s)",
                            max(0, wallClock() - changed), settle)))
                continue
            }
            if shared, let merged = try mergedCopy(of: file, size: object.size, settled: &settled) {
                try remote.delete(key: object.key)
                report.removed.append(.init(key: object.key, file: merged, bytes: object.size))
                continue
            }
            if shared,
                [layout.inbox, layout.accepted, layout.quarantine].contains(where: {
                    fileSize("\($0)/\(file)") == object.size
                })
            {
                report.skipped.append(.init(key: object.key, file: file, bytes: object.size))
                continue
            }
            wanted.append((object, file))
        }
        // The downloads, `[remote] parallel` at a time. Choosing a name in
        // inbox/ and renaming into it is one step under `naming`, so two
        // objects of the same file name never take the same one.
        let inbox = layout.inbox
        let naming = NSLock()
        try moveConcurrently(wanted.map(\.0.key), into: &report) { i in
            let (object, file) = wanted[i]
            let pending = try PendingFile(in: inbox)
            try remote.get(key: object.key, into: pending, cap: cap)
            try intake?.screen(download: try OpenFile(path: pending.path))
            let digest = pending.digest
            let moved: Moved = try naming.withLock {
                let existing = DirectoryEntry(directory: inbox, name: file)
                if try entryStatus(existing) != nil, Filing.fileDigest(existing, cap: cap) == digest {
                    return .skipped(.init(key: object.key, file: existing.displayPath, bytes: pending.size))
                }
                let name = try Filing.freeName(in: inbox, for: Array(file.utf8))
                try pending.commit(as: name)
                return .transferred(.init(key: object.key, file: "\(inbox)/\(name)", bytes: pending.size))
            }
            faultPoint("pull-before-delete")
            if !shared { try remote.delete(key: object.key) }
            return moved
        }
        return report
    }

    /// One object's outcome, as a transfer reports it.
    enum Moved {
        case transferred(TransferReport.Item)
        case skipped(TransferReport.Item)
    }

    /// Runs `move(i)` for every object key in `keys` on up to `[remote]
    /// parallel` threads (each S3 request over a kept-open connection), and
    /// adds the outcomes to `report` in the keys' order, whatever order
    /// they finished in. One object's failure is that object's: it is
    /// refused with its reason and the others still move (the exit status
    /// says so). A failure no other object would escape (the remote is
    /// unreachable or refuses the credentials) starts no further object
    /// and is thrown once the running ones are done.
    func moveConcurrently(
        _ keys: [String], into report: inout TransferReport, _ move: @escaping (Int) throws -> Moved
    ) throws {
        let shared = ConcurrentMoves(move)
        var outcomes: [ConcurrentMoves.Outcome] = []
        let width = config.remote.parallel
        Parallel.orderedPipeline(
            count: keys.count, workers: width, inFlight: 2 * width,
            produce: { i, _ in shared.run(i, key: keys[i]) }, consume: { _, outcome in outcomes.append(outcome) })
        for outcome in outcomes {
            switch outcome {
            case .moved(.transferred(let item)): report.transferred.append(item)
            case .moved(.skipped(let item)): report.skipped.append(item)
            case .refused(let refusal): report.refused.append(refusal)
            case .notStarted: break
            }
        }
        if let stop = shared.stop { throw stop }
    }

    /// On a signer: the path of this home's copy of shared-inbox file
    /// `name`, if that copy (the same name and size in accepted/) is an
    /// input of a generation that has the signers' threshold. No signer
    /// needs it on the remote any more: the others place that generation
    /// on its signatures, without re-deriving it (its inputs are on the
    /// remote under bundles/ where `publish_bundles` is set). An input of a
    /// proposal stays: the other signers re-derive it from the inbox.
    private func mergedCopy(of name: String, size: Int64, settled: inout [Int: Bool]) throws -> String? {
        let path = "\(layout.accepted)/\(name)"
        guard fileSize(path) == size, FileManager.default.fileExists(atPath: layout.stateDatabase),
            let statement = try? ContainerFile.statement(of: try OpenFile(path: path)),
            let merged = try Ledger(path: layout.stateDatabase).mergedInto(statement.payloadDigest.hex),
            merged.stored == name
        else { return nil }
        if settled[merged.generation] == nil {
            settled[merged.generation] = home.hasSignatures(
                layout.generation(merged.generation), verifier: try home.verifier())
        }
        return settled[merged.generation]! ? path : nil
    }

    /// Rethrows an error that no other object would escape (the remote
    /// cannot be reached, or refuses the credentials); any other failure
    /// belongs to one object.
    static func stopIfRemoteWide(_ error: Error) throws {
        guard let e = error as? RemoteError else { return }
        switch e {
        case .unreachable, .denied, .notConfigured, .unsupportedURL: throw e
        default: return
        }
    }

    /// Collector: uploads every generation in generations/ that the remote
    /// lacks (or holds with another size) as `generations/gNNNNNN.fbg`;
    /// with `[remote] publish_bundles`, then the inputs each generation
    /// names (`bundles/<digest>.<ext>`), so that witnesses can re-derive it.
    /// A regional collector publishes the root's generations to its own
    /// remote, for its sites. A witness uploads its cosignatures
    /// (`generations/gNNNNNN-W.fbc`).
    public func publish(to remote: RemoteStore) throws -> TransferReport {
        guard config.role != .site else {
            throw HomeError.wrongRole(path: layout.root, expected: .collector, actual: config.role)
        }
        let lock = try begin()
        defer { withExtendedLifetime(lock) {} }
        var report = TransferReport(remote: remote.url)
        let there = Dictionary(
            try remote.list(prefix: RemoteLayout.generations).map { ($0.key, $0.size) }, uniquingKeysWith: { a, _ in a }
        )
        var files: [(path: String, key: String)] = []
        if config.role == .witness {
            for n in layout.generationNumbers() + layout.prunedGenerationNumbers() {
                let path = layout.cosignature(n, witness: config.siteID!)
                if FileManager.default.fileExists(atPath: path) {
                    files.append((path, RemoteLayout.cosignatureKey(n, witness: config.siteID!)))
                }
            }
        } else if config.role == .collector, config.trust.signerSet {
            files = try signerFiles()
        } else {
            files = layout.generationNumbers().map { (layout.generation($0), RemoteLayout.generationKey($0)) }
        }
        try upload(files, to: remote, there: there, into: &report)
        if config.role == .collector, config.remote.publishBundles {
            try publishInputs(to: remote, into: &report)
        }
        return report
    }

    /// What a signer publishes: each generation that has the signers'
    /// threshold as a generation, its own proposal as a proposal, and its
    /// cosignatures beside the generations.
    private func signerFiles() throws -> [(path: String, key: String)] {
        let me = try home.ownSignerID()
        let verifier = try home.verifier()
        var files: [(path: String, key: String)] = []
        for n in layout.generationNumbers() {
            let path = layout.generation(n)
            if n == 0 || home.hasSignatures(path, verifier: verifier) {
                files.append((path, RemoteLayout.generationKey(n)))
            } else if let v = try? verifier.open(path: path),
                verifier.trust.signerID(fingerprint: v.signer.fingerprint) == me
            {
                files.append((path, RemoteLayout.proposalKey(n, signer: me)))
            }
            let cosignature = layout.cosignature(n, witness: me)
            if FileManager.default.fileExists(atPath: cosignature) {
                files.append((cosignature, RemoteLayout.cosignatureKey(n, witness: me)))
            }
        }
        return files
    }

    /// Whole-file uploads, `[remote] parallel` at a time, except of files
    /// the remote holds with the same size already.
    private func upload(
        _ files: [(path: String, key: String)], to remote: RemoteStore, there: [String: Int64],
        into report: inout TransferReport
    ) throws {
        try moveConcurrently(files.map(\.key), into: &report) { i in
            let (path, key) = files[i]
            let size = fileSize(path) ?? 0
            if there[key] == size { return .skipped(.init(key: key, file: path, bytes: size)) }
            try remote.put(file: path, key: key)
            return .transferred(.init(key: key, file: path, bytes: size))
        }
    }

    /// `publish_bundles`: the bundles, partial aggregates and statistics
    /// the generations in generations/ name, from accepted/. A bundle
    /// encrypted to the collector is not published (a witness could not
    /// read it, and publishing it decrypted would show the world what its
    /// site hid from the transport); a bundle a region's partial carried is
    /// not here to publish (the partial is).
    private func publishInputs(to remote: RemoteStore, into report: inout TransferReport) throws {
        guard FileManager.default.fileExists(atPath: layout.stateDatabase) else { return }
        let ledger = try Ledger(path: layout.stateDatabase)
        let there = Dictionary(
            try remote.list(prefix: RemoteLayout.bundles).map { ($0.key, $0.size) }, uniquingKeysWith: { a, _ in a })
        var seen: Set<String> = []
        var files: [(path: String, key: String)] = []
        let verifier = try home.verifier()
        for n in layout.generationNumbers() {
            let m = try verifier.open(path: layout.generation(n)).manifest
            let digests =
                (m.included ?? []).filter { $0.partial == nil }.map(\.digest) + (m.partials ?? []).map(\.digest)
                + (m.statistics ?? []).map(\.digest)
            for digest in digests where seen.insert(digest).inserted {
                guard let stored = try ledger.mergedInto(digest)?.stored else { continue }
                let path = "\(layout.accepted)/\(stored)"
                guard let ext = ["fbu", "fbp", "fbs"].first(where: { stored.hasSuffix("." + $0) }) else {
                    report.waiting.append(
                        .init(
                            key: RemoteLayout.publishedBundleKey(digest: digest, ext: "gpg"), code: "publish.encrypted",
                            message:
                                "accepted/\(stored) is encrypted to the collector: not published, so no witness can "
                                + "re-derive generation \(n)"))
                    continue
                }
                guard FileManager.default.fileExists(atPath: path) else { continue }
                files.append((path, RemoteLayout.publishedBundleKey(digest: digest, ext: ext)))
            }
        }
        try upload(files, to: remote, there: there, into: &report)
    }

    /// Site: downloads the generations the remote has and generations/ does
    /// not, each verified (signature, model, number) before it is renamed
    /// into place; one that fails stays out, refused with its reason.
    public func pullGenerations(from remote: RemoteStore) throws -> TransferReport {
        guard config.role != .collector else {
            throw HomeError.wrongRole(path: layout.root, expected: .site, actual: config.role)
        }
        let lock = try begin()
        defer { withExtendedLifetime(lock) {} }
        var report = TransferReport(remote: remote.url)
        let have = Set(layout.generationNumbers())
        let verifier = try home.verifier()
        // A generation can be no larger than the model makes it: the arch
        // of the newest generation here (verified), or of this home's
        // config; an endless body stops there, not at 4 GiB.
        var cap = ContainerLimits.default.maxFileBytes
        let spec =
            config.arch
            ?? layout.generationNumbers().last.flatMap {
                try? verifier.open(path: layout.generation($0)).manifest.model.arch
            }
        if let spec, let arch = try? ModelArchitecture(spec: spec) {
            cap = ContainerLimits.generations(of: arch).maxFileBytes
        }
        let objects = try remote.list(prefix: RemoteLayout.generations)
        // Cosignatures first, so that a generation arriving in this run is
        // judged with them.
        try pullCosignatures(
            objects, from: remote, except: config.role == .witness ? config.siteID : nil, into: &report)
        // In order: each is trusted through the ones before it (walkTrust).
        let listed = objects.compactMap { o in RemoteLayout.parseGenerationKey(o.key).map { (n: $0, object: o) } }
        for (n, object) in listed.sorted(by: { $0.n < $1.n }) {
            guard !have.contains(n) else { continue }
            do {
                let pending = try PendingFile(in: layout.generations)
                try remote.get(key: object.key, into: pending, cap: cap)
                // A generation without the cosignatures [trust] asks for is
                // still a link of the chain (a later, co-signed one is
                // trusted only through it): it is kept, and train, pack,
                // export and verify refuse it until the witnesses sign.
                let v: VerifiedContainer
                do {
                    v = try home.openGeneration(pending.path, verifier: verifier, requireWitnesses: false).0
                } catch let e as ThresholdError {
                    // Not yet a generation: left on the remote, and the ones
                    // after it wait too (they are trusted through it).
                    report.waiting.append(.init(key: object.key, code: e.code, message: e.description))
                    break
                }
                guard v.manifest.generation == n else {
                    throw ModelMismatch.generationNumber(expected: n, actual: v.manifest.generation ?? -1)
                }
                try pending.commit(as: HomeLayout.generationFileName(n))
                report.transferred.append(.init(key: object.key, file: layout.generation(n), bytes: pending.size))
                if !home.hasWitnesses(n, verifier: verifier) {
                    report.waiting.append(
                        .init(
                            key: object.key, code: "trust.witnesses",
                            message:
                                "generation \(n) is kept as a link of the chain, but not used until "
                                + "\(config.trust.minWitnesses) pinned witness(es) co-sign it (trust.min_witnesses)"))
                }
            } catch {
                try Self.stopIfRemoteWide(error)
                report.refused.append(.init(key: object.key, code: reasonCode(of: error), message: describe(error)))
            }
        }
        if config.role == .witness {
            try pullInputs(from: remote, cap: cap, into: &report)
        }
        return report
    }

    /// Witness: downloads the inputs a collector published
    /// (`bundles/<digest>.<ext>`) into inputs/, each only if its statement
    /// names the digest its key does; they stay on the remote for others.
    /// `audit` and `witness` verify each before it counts.
    private func pullInputs(
        from remote: RemoteStore, cap generationCap: Int64, into report: inout TransferReport
    )
        throws
    {
        try FileManager.default.createDirectory(atPath: layout.inputs, withIntermediateDirectories: true)
        // A partial aggregate holds 16 bytes a parameter, a generation 4.
        let cap = generationCap.multipliedReportingOverflow(by: 4).overflow ? generationCap : generationCap * 4
        var wanted: [(object: RemoteObject, name: String)] = []
        for object in try remote.list(prefix: RemoteLayout.bundles) {
            guard let name = RemoteLayout.parsePublishedBundleKey(object.key) else {
                report.refused.append(
                    .init(
                        key: object.key, code: "remote.foreign-object",
                        message: "\(object.key) is not bundles/<digest>.<fbu|fbp|fbs>; left on the remote"))
                continue
            }
            if fileSize("\(layout.inputs)/\(name)") != object.size { wanted.append((object, name)) }
        }
        let inputs = layout.inputs
        try moveConcurrently(wanted.map(\.object.key), into: &report) { i in
            let (object, name) = wanted[i]
            let pending = try PendingFile(in: inputs)
            try remote.get(key: object.key, into: pending, cap: cap)
            let file = try ContainerFile.read(try OpenFile(path: pending.path))
            let statement = try Statement.parse(file.statement)
            guard name.hasPrefix(statement.payloadDigest.hex + ".") else {
                throw StatementError.mismatch(
                    "\(object.key) holds the bundle \(statement.payloadDigest.hex), not the one its name says")
            }
            try pending.commit(as: name)
            return .transferred(.init(key: object.key, file: "\(inputs)/\(name)", bytes: pending.size))
        }
    }

    /// Witnesses' and signers' cosignatures on the remote, except those
    /// by `own` (this home's): each a small file placed beside the
    /// generations, verified whenever it is used, never here.
    private func pullCosignatures(
        _ objects: [RemoteObject], from remote: RemoteStore, except own: String?, into report: inout TransferReport
    ) throws {
        for object in objects {
            guard let (n, id) = RemoteLayout.parseCosignatureKey(object.key), id != own else { continue }
            let path = layout.cosignature(n, witness: id)
            if fileSize(path) == object.size { continue }
            do {
                let pending = try PendingFile(in: layout.generations)
                try remote.get(key: object.key, into: pending, cap: 64 << 10)
                try pending.commit(as: (path as NSString).lastPathComponent)
                report.transferred.append(.init(key: object.key, file: path, bytes: pending.size))
            } catch {
                try Self.stopIfRemoteWide(error)
                report.refused.append(.init(key: object.key, code: reasonCode(of: error), message: describe(error)))
            }
        }
    }

    /// A valid generation's change of the signer set, adopted and kept.
    private func adoptSignerSet(carriedBy v: VerifiedContainer, verifier: Verifier) throws {
        try home.adoptTrustChanges(carriedBy: v, verifier: verifier)
        for s in verifier.adoptedSignerSets { try home.record(s) }
    }

    /// A signer (a collector home in a set of signers): the other signers'
    /// cosignatures, the generations that reached the threshold and this
    /// home lacks (in order, each on the one before it; the next command
    /// records them as a merge of its own would), and the other signers'
    /// proposals into proposals/, for `fedbatch witness`.
    ///
    /// A generation that changes the signer set is recorded as soon as it
    /// is placed: the ones after it are judged by the new set.
    public func pullAsSigner(from remote: RemoteStore) throws -> TransferReport {
        // A signer that joins through a change of the set is not one of the
        // set its newest generation knows until it has pulled the
        // generation that carries the change: it pulls as the signer its
        // key is pinned for.
        let me =
            try (try? home.ownSignerID())
            ?? TrustSet.load(keysDirectory: layout.keys).signerID(fingerprint: config.key) ?? home.ownSignerID()
        return try pullAsSigner(from: remote, me: me)
    }

    private func pullAsSigner(from remote: RemoteStore, me: String) throws -> TransferReport {
        let lock = try begin()
        defer { withExtendedLifetime(lock) {} }
        var report = TransferReport(remote: remote.url)
        let verifier = try home.verifier()
        let spec = config.arch ?? ""
        let cap =
            (try? ModelArchitecture(spec: spec)).map { ContainerLimits.generations(of: $0).maxFileBytes }
            ?? ContainerLimits.default.maxFileBytes
        let objects = try remote.list(prefix: RemoteLayout.generations)
        try pullCosignatures(objects, from: remote, except: me, into: &report)
        var newest = layout.generationNumbers().last ?? -1
        // This signer's own proposal (or one it co-signed) may have just
        // reached the threshold with the cosignatures pulled: a change of
        // the signer set it carries judges the generations pulled next.
        if newest > 0, home.hasSignatures(layout.generation(newest), verifier: verifier) {
            try adoptSignerSet(carriedBy: try verifier.open(path: layout.generation(newest)), verifier: verifier)
        }
        let listed = objects.compactMap { o in RemoteLayout.parseGenerationKey(o.key).map { (n: $0, object: o) } }
        func digest(_ n: Int) throws -> String {
            try ContainerFile.statement(of: try OpenFile(path: layout.generation(n))).payloadDigest.hex
        }
        for (n, object) in listed.sorted(by: { $0.n < $1.n }) where n > 0 {
            // A generation here that has the threshold is the only valid one
            // of its number (the threshold is above half the signers):
            // nothing to fetch. Only this signer's unconfirmed proposal can
            // turn out to have lost.
            if n <= newest, home.hasSignatures(layout.generation(n), verifier: verifier) { continue }
            do {
                let pending = try PendingFile(in: layout.generations)
                try remote.get(key: object.key, into: pending, cap: cap)
                let v = try verifier.open(path: pending.path)
                guard v.manifest.generation == n else {
                    throw ModelMismatch.generationNumber(expected: n, actual: v.manifest.generation ?? -1)
                }
                try home.requireSignatures(v, verifier: verifier)
                if n <= newest {
                    let here = try digest(n)
                    guard here == v.digest.hex else {
                        throw SignerConflict(generation: n, valid: v.digest.hex, here: here)
                    }
                    // The same generation, signed in its slot by another
                    // signer (it proposed the same one): that copy has the
                    // threshold, this signer's own may not. Same payload,
                    // same statement, so nothing but the slot changes.
                    if !home.hasSignatures(layout.generation(n), verifier: verifier) {
                        try pending.commit(as: HomeLayout.generationFileName(n), replacing: true)
                        report.transferred.append(
                            .init(key: object.key, file: layout.generation(n), bytes: pending.size))
                    }
                    try adoptSignerSet(carriedBy: v, verifier: verifier)
                    continue
                }
                guard n == newest + 1, v.manifest.parent?.digest == (try digest(newest)) else {
                    throw ChainError(
                        generation: n, message: "does not follow generation \(newest) here", code: "chain.gap")
                }
                try pending.commit(as: HomeLayout.generationFileName(n))
                try adoptSignerSet(carriedBy: v, verifier: verifier)
                newest = n
                report.transferred.append(.init(key: object.key, file: layout.generation(n), bytes: pending.size))
            } catch {
                try Self.stopIfRemoteWide(error)
                report.refused.append(.init(key: object.key, code: reasonCode(of: error), message: describe(error)))
                break
            }
        }
        try FileManager.default.createDirectory(atPath: layout.proposals, withIntermediateDirectories: true)
        for object in try remote.list(prefix: RemoteLayout.proposals) {
            // Also another's proposal for the number of this signer's own
            // unconfirmed one: the same generation, if they merged the same
            // inbox (`cosignProposal`).
            guard let (n, signer) = RemoteLayout.parseProposalKey(object.key), signer != me,
                n > newest || (n == newest && !home.hasSignatures(layout.generation(n), verifier: verifier))
            else {
                continue
            }
            let path = "\(layout.proposals)/\(GenerationFile.proposalFileName(n, signer: signer))"
            if fileSize(path) == object.size { continue }
            do {
                let pending = try PendingFile(in: layout.proposals)
                try remote.get(key: object.key, into: pending, cap: cap)
                try pending.commit(as: (path as NSString).lastPathComponent)
                report.transferred.append(.init(key: object.key, file: path, bytes: pending.size))
            } catch {
                try Self.stopIfRemoteWide(error)
                report.refused.append(.init(key: object.key, code: reasonCode(of: error), message: describe(error)))
            }
        }
        return report
    }
}

/// A signer holds a generation of a number for which the signers' valid
/// generation is another: its own proposal, which can no longer reach the
/// threshold (the signers of the valid one sign no other).
public struct SignerConflict: Error, Sendable, ReasonCoded, CustomStringConvertible {
    public let generation: Int
    public let valid: String
    public let here: String
    public var code: String { "signer.superseded" }
    public var description: String {
        "the signers' generation \(generation) is \(valid), but generations/ here holds \(here), a proposal that can "
            + "no longer reach trust.threshold; move it and state.db aside (they are rebuilt from the files) and pull "
            + "again (fedbatch-merge(1), NO SINGLE COLLECTOR)"
    }
}

/// What the threads of `Transfers.moveConcurrently` share: the work, and
/// the first failure that stops the rest.
private final class ConcurrentMoves: @unchecked Sendable {
    enum Outcome: @unchecked Sendable {
        case moved(Transfers.Moved)
        case refused(TransferReport.Refusal)
        case notStarted
    }
    private let move: (Int) throws -> Transfers.Moved
    private let lock = NSLock()
    private var firstStop: Error?
    var stop: Error? { lock.withLock { firstStop } }

    init(_ move: @escaping (Int) throws -> Transfers.Moved) { self.move = move }

    func run(_ i: Int, key: String) -> Outcome {
        if stop != nil { return .notStarted }
        do {
            return .moved(try move(i))
        } catch {
            do { try Transfers.stopIfRemoteWide(error) } catch {
                lock.withLock { if firstStop == nil { firstStop = error } }
                return .notStarted
            }
            return .refused(.init(key: key, code: reasonCode(of: error), message: describe(error)))
        }
    }
}

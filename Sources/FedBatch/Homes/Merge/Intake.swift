import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The one way an inbox entry comes in, for a collector or a regional
/// collector: identified from its statement alone (pass 1: a file's last few
/// hundred bytes, enough to fix the summation order by payload digest), then
/// opened once into a verified, decoded input or a typed refusal (pass 2).
/// Both run on worker threads and touch nothing but the entry they are given.
struct Intake: @unchecked Sendable {
    let home: Home
    /// The caps of what this home merges.
    let limits: ContainerLimits
    /// The caps of the largest container any inbox may hold (a partial
    /// aggregate's): statements are read under them, so that a partial sent
    /// to a collector that takes none is refused as what it is.
    let wide: ContainerLimits
    let takesPartials: Bool
    /// The collector's secret key, for bundles encrypted to it; nil where
    /// the command has none (`verify` on a copy of the public keys).
    let decryption: BundleDecryption?
    /// In a streaming merge, where bundles' tensors go instead of memory.
    var spill: ContainerReader.Spill?

    /// `takesPartials` overrides the home's own rule: an audit reads the
    /// partial aggregates a generation names on any home.
    init(home: Home, arch: ModelArchitecture, decryption: BundleDecryption?, takesPartials: Bool? = nil) {
        self.home = home
        self.takesPartials = takesPartials ?? home.takesPartials
        limits =
            self.takesPartials ? ContainerLimits.partials(of: arch) : ContainerLimits.updates(of: arch)
        wide = ContainerLimits.partials(of: arch)
        self.decryption = decryption
    }

    /// An entry pass 1 identified: its payload digest (from the unverified
    /// statement: it only orders the work, and pass 2 proves it) and the
    /// status pass 2 must find unchanged.
    struct Identified: Sendable {
        let entry: DirectoryEntry
        let digest: Digest
        let status: EntryStatus
        /// What the statement says the entry is, and from which site.
        var kind: Manifest.Kind = .update
        var site: String?
    }

    /// Pass 1 for one entry.
    enum Identity: @unchecked Sendable {
        case ready(Identified)
        case waiting(String)
        case refused(Error)
    }

    /// Pass 2 for one entry: verified and decoded, or refused.
    enum Opened: @unchecked Sendable {
        case ok(VerifiedContainer, DecodedDelta)
        /// A regional collector's partial aggregate (root collectors).
        case partial(VerifiedContainer, PartialAggregate)
        /// A site's statistics of its data (fedbatch-stats(1)).
        case stats(VerifiedContainer, DataStatistics)
        /// The entry changed between the two passes: leave it for next time.
        case changed
        case refused(Error, bundleDigest: String?)
    }

    /// Pass 1 over the whole inbox, on two workers, in the inbox's order.
    func identifyAll(_ entries: [DirectoryEntry], settle: Double) -> [Identity] {
        let clock = wallClock()
        return Parallel.map(entries, workers: 2) { entry in identify(entry, settle: settle, clock: clock) }
    }

    /// Settled regular files only; entries still arriving wait, and entries
    /// that cannot even be identified (links, junk without a slot or with a
    /// malformed statement, files above the model's size) are refused.
    func identify(_ entry: DirectoryEntry, settle: Double, clock: Double) -> Identity {
        // rsync writes to a hidden temp name and renames it when complete.
        if entry.name.first == 0x2E {
            return .waiting("a hidden name, as rsync gives a transfer in progress; left alone")
        }
        do {
            guard let status = try entryStatus(entry) else { return .waiting("disappeared during the merge") }
            guard status.kind == .regular else {
                throw FileError(
                    path: entry.displayPath,
                    message: "is a \(status.kind.description), not a regular file; fedbatch never follows links")
            }
            let age = clock - status.changed
            if age < settle {
                return .waiting(
                    String(
                        format:
                            "changed %.0f s ago; a file must be still for merge.settle_seconds (%.0f s) before it is "
                            + "read",
                        max(0, age), settle))
            }
            // By its size first: nothing of a file larger than any container
            // this home takes is read (50 sparse files of 8 GiB cost nothing).
            if status.size > wide.maxFileBytes + BundleEncryption.overhead {
                throw ContainerError.fileTooLarge(size: status.size, cap: wide.maxFileBytes)
            }
            let file = try OpenFile(entry)
            let statement = try self.statement(of: file)
            guard try file.currentStatus() == file.status else {
                return .waiting("changed while the merge read it; left for the next run")
            }
            return .ready(
                Identified(
                    entry: entry, digest: statement.payloadDigest, status: file.status, kind: statement.kind,
                    site: statement.site?.id))
        } catch {
            return .refused(error)
        }
    }

    /// The statement of an open file that could be an input of this home,
    /// or the refusal of one that cannot: not a container, a partial
    /// aggregate where none is taken, larger than the model allows. What
    /// pass 1 checks of a file, and what `pull` checks before it places a
    /// download in the inbox.
    func statement(of file: OpenFile) throws -> Statement {
        if file.size > wide.maxFileBytes + BundleEncryption.overhead {
            throw ContainerError.fileTooLarge(size: file.size, cap: wide.maxFileBytes)
        }
        // An encrypted bundle is decrypted here only to read its statement
        // (keeping the plaintext's last bytes), and again in pass 2: holding
        // every decrypted bundle from pass 1 to pass 2 would cost memory the
        // size of the inbox.
        let statement =
            try decrypted(file) { try $0.statement(of: file, limits: limits) }
            ?? ContainerFile.statement(of: file, limits: wide)
        if statement.kind == .partial, !takesPartials {
            throw PartialError.notARegion(statement.site?.id ?? "an unnamed sender")
        }
        if statement.kind != .partial, file.size > limits.maxFileBytes + BundleEncryption.overhead {
            throw ContainerError.fileTooLarge(size: file.size, cap: limits.maxFileBytes)
        }
        return statement
    }

    /// `pull`'s check of a download before it enters the inbox: the
    /// statement's checks, except that a file encrypted to the collector
    /// passes unread when this command cannot decrypt it (the merge, which
    /// holds the key, decides).
    func screen(download file: OpenFile) throws {
        if decryption == nil, file.size > 0,
            BundleEncryption.looksEncrypted(firstByte: try file.read(at: 0, count: 1).first ?? 0)
        {
            guard file.size <= limits.maxFileBytes + BundleEncryption.overhead else {
                throw ContainerError.fileTooLarge(size: file.size, cap: limits.maxFileBytes)
            }
            return
        }
        _ = try statement(of: file)
    }

    /// `body` with the decryption, for a file that may be encrypted; an
    /// encrypted file with no key to open it is refused as such.
    private func decrypted<R>(_ file: OpenFile, _ body: (BundleDecryption) throws -> R?) throws -> R? {
        if let decryption { return try body(decryption) }
        guard file.size > 0, BundleEncryption.looksEncrypted(firstByte: try file.read(at: 0, count: 1).first ?? 0)
        else { return nil }
        throw EncryptionError.undecryptable(
            "it is encrypted to the collector, and this command has no access to the collector's secret key")
    }

    /// Both passes for one file named by its path, as `verify` checks a
    /// bundle or a partial aggregate: exactly what a merge of this home
    /// would decide about it, short of the protocol (sequence numbers,
    /// replays), which belongs to the merge.
    func check(path: String, verifier: Verifier) throws -> VerifiedContainer {
        let url = URL(fileURLWithPath: path)
        let entry = DirectoryEntry(
            directory: url.deletingLastPathComponent().path, name: url.lastPathComponent)
        let file = try OpenFile(entry)
        let statement = try self.statement(of: file)
        switch open(Identified(entry: entry, digest: statement.payloadDigest, status: file.status), verifier: verifier)
        {
        case .ok(let v, _), .partial(let v, _), .stats(let v, _): return v
        case .changed: throw FileError(path: path, message: "changed while it was read; run the command again")
        case .refused(let error, _): throw error
        }
    }

    /// Pass 2 for one entry: the same file as pass 1 (same size, times and
    /// inode), read once, verified and decoded.
    func open(_ identified: Identified, verifier: Verifier) -> Opened {
        let entry = identified.entry, digest = identified.digest, status = identified.status
        let file: OpenFile
        do {
            file = try OpenFile(entry)
            guard file.status == status else { return .changed }
        } catch {
            return (try? entryStatus(entry)) == nil ? .changed : .refused(error, bundleDigest: nil)
        }
        let v: VerifiedContainer
        do {
            if let plain = try decrypted(file, { try $0.open(file, limits: limits) }) {
                v = try verifier.open(bytes: plain, path: entry.displayPath, limits: limits)
            } else if let spill {
                v = try verifier.open(file, path: entry.displayPath, limits: limits, spill: spill)
            } else {
                v = try verifier.open(file, path: entry.displayPath, limits: limits)
            }
        } catch {
            // A file rewritten while it was read is not refused for it.
            if (try? file.currentStatus()) != status { return .changed }
            return .refused(error, bundleDigest: nil)
        }
        guard v.digest == digest else { return .changed }
        do {
            if v.manifest.kind == .partial {
                let (v, sums) = try home.checkPartial(v, limits: limits)
                return .partial(v.droppingPayload(), sums)
            }
            if v.manifest.kind == .stats {
                return .stats(v.droppingPayload(), try home.checkStatistics(v))
            }
            if spill != nil {
                // Decoded a chunk at a time by the merge, never whole.
                return .ok(
                    v.droppingPayload(),
                    DecodedDelta(
                        arch: try ModelArchitecture(spec: v.manifest.model.arch),
                        stored: try home.checkBelongs(spilled: v, limits: limits),
                        codec: try Codecs.make(name: v.manifest.codec)))
            }
            let (v, tensors) = try home.checkBelongs(v, limits: limits)
            // checkBelongs ran the codec's checks; decoding here keeps that
            // work on this worker thread.
            let delta = DecodedDelta(
                arch: try ModelArchitecture(spec: v.manifest.model.arch), stored: tensors,
                codec: try Codecs.make(name: v.manifest.codec))
            return .ok(v.droppingPayload(), delta.materialized())
        } catch {
            return .refused(error, bundleDigest: v.digest.hex)
        }
    }
}

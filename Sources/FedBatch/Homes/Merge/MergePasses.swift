import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The two reading passes of a merge over the inbox. Pass 1 reads only each
/// settled file's statement (its last few hundred bytes) to fix the
/// summation order by the payload digests they name; pass 2 reads each
/// file once, verifying, hashing and decoding it, in that order. Both run
/// on worker threads and touch nothing but the entry they are given.
extension Collector {
    /// One inbox entry after pass 2: verified and decoded, or refused.
    enum Decoded: @unchecked Sendable {
        case ok(VerifiedContainer, DecodedDelta)
        /// A regional collector's partial aggregate (root collectors).
        case partial(VerifiedContainer, PartialAggregate)
        /// The entry changed between the two passes: leave it for next time.
        case changed
        case refused(Error, bundleDigest: String?)
    }

    /// Pass 1: every settled regular file's statement, unverified: it only
    /// orders the work, and pass 2 proves it. Entries still arriving wait,
    /// and entries that cannot even be identified (links, junk without a
    /// slot or with a malformed statement, files above the model's size) are
    /// refused here. Returns the files in digest order.
    func identifyInbox(
        settle: Double, limits: ContainerLimits, ledger: Ledger, now: Date, decryption: BundleDecryption,
        rejected: inout [MergeReport.Rejection], waiting: inout [MergeReport.Waiting]
    )
        throws -> [(entry: DirectoryEntry, digest: Digest, status: EntryStatus)]
    {
        let clock = wallClock()
        let entries = try listDirectory(home.layout.inbox)
        // Statements are read under a partial aggregate's larger caps (only
        // a file's end is read), so that a partial sent to a collector that
        // takes none is refused as what it is, not as a file too large.
        let arch = try ModelArchitecture(spec: home.config.arch!)
        let wide = ContainerLimits.partials(of: arch)
        let takesPartials = home.config.role == .collector && !home.config.merge.regions.isEmpty
        let identities = Parallel.map(entries, workers: 2) { entry in
            Self.identify(
                entry, settle: settle, clock: clock, limits: limits, wide: wide, takesPartials: takesPartials,
                decryption: decryption)
        }
        var ordered: [(entry: DirectoryEntry, digest: Digest, status: EntryStatus)] = []
        for (entry, identity) in zip(entries, identities) {
            switch identity {
            case let .ready(digest, status): ordered.append((entry, digest, status))
            case .waiting(let why): waiting.append(.init(entry, why))
            case .refused(let error):
                try fileRefusal(entry, into: &rejected, or: &waiting) {
                    try refuse(entry, error: error, bundleDigest: nil, ledger: ledger, now: now)
                }
            }
        }
        // Equal digests are copies of one payload; the name breaks the tie so
        // that which copy counts is the same on every run.
        ordered.sort { a, b in
            a.digest != b.digest ? a.digest < b.digest : a.entry.name.lexicographicallyPrecedes(b.entry.name)
        }
        return ordered
    }

    /// Pass 1 for one entry.
    private enum Identity: @unchecked Sendable {
        case ready(Digest, EntryStatus)
        case waiting(String)
        case refused(Error)
    }

    private static func identify(
        _ entry: DirectoryEntry, settle: Double, clock: Double, limits: ContainerLimits, wide: ContainerLimits,
        takesPartials: Bool, decryption: BundleDecryption
    ) -> Identity {
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
            // An encrypted bundle is decrypted here only to read its
            // statement (keeping the plaintext's last bytes), and again in
            // pass 2: holding every decrypted bundle from pass 1 to pass 2
            // would cost memory the size of the inbox.
            let statement =
                try decryption.statement(of: file, limits: limits) ?? ContainerFile.statement(of: file, limits: wide)
            if statement.kind == .partial, !takesPartials {
                throw PartialError.notARegion(statement.site?.id ?? "an unnamed sender")
            }
            if statement.kind != .partial, file.size > limits.maxFileBytes + BundleEncryption.overhead {
                throw ContainerError.fileTooLarge(size: file.size, cap: limits.maxFileBytes)
            }
            guard try file.currentStatus() == file.status else {
                return .waiting("changed while the merge read it; left for the next run")
            }
            return .ready(statement.payloadDigest, file.status)
        } catch {
            return .refused(error)
        }
    }

    /// Pass 2 for one entry: the same file as pass 1 (same size, times and
    /// inode), read once, verified and decoded.
    static func decode(
        _ entry: DirectoryEntry, expecting digest: Digest, status: EntryStatus, home: Home,
        verifier: Verifier, limits: ContainerLimits, decryption: BundleDecryption
    ) -> Decoded {
        let file: OpenFile
        do {
            file = try OpenFile(entry)
            guard file.status == status else { return .changed }
        } catch {
            return (try? entryStatus(entry)) == nil ? .changed : .refused(error, bundleDigest: nil)
        }
        let v: VerifiedContainer
        do {
            if let plain = try decryption.open(file, limits: limits) {
                v = try verifier.open(bytes: plain, path: entry.displayPath, limits: limits)
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

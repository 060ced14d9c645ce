import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The --remote option of push, pull and publish.
struct RemoteOption: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The remote for this run: s3://BUCKET/PREFIX or a directory (default: [remote] url).", valueName: "url"))
    var remote: String?

    func open(for home: Home) throws -> RemoteStore { try Transfers(home: home).remote(override: remote) }
}

/// What push, pull and publish print: the same shape for all three
/// (fedbatch-json(7), "summary: push").
struct TransferOutput: CommandOutput {
    struct Item: Encodable {
        let key: String
        let file: String
        let bytes: Int64
    }
    struct Refused: Encodable {
        let key: String
        let code: String
        let message: String
    }

    let direction: String
    let remote: String
    let transferred: [Item]
    let skipped: [Item]
    let refused: [Refused]
    /// Objects left for a later run (still being written).
    let waiting: [Refused]
    /// Shared-inbox objects a signer deleted (merged into a generation).
    let removed: [Item]

    init(direction: String, _ r: TransferReport) {
        self.direction = direction
        remote = r.remote
        transferred = r.transferred.map { Item(key: $0.key, file: $0.file, bytes: $0.bytes) }
        skipped = r.skipped.map { Item(key: $0.key, file: $0.file, bytes: $0.bytes) }
        refused = r.refused.map { Refused(key: $0.key, code: $0.code, message: $0.message) }
        waiting = r.waiting.map { Refused(key: $0.key, code: $0.code, message: $0.message) }
        removed = r.removed.map { Item(key: $0.key, file: $0.file, bytes: $0.bytes) }
    }

    /// A refused file is a verification failure (3), unless the refusal is
    /// only that it is too large or not ours (1); nothing moved is 5.
    var exitStatus: ExitStatus {
        if let worst = refused.map({ ExitStatus.of(code: $0.code) }).max(by: { $0.rawValue < $1.rawValue }) {
            return worst
        }
        return transferred.isEmpty ? .nothingToDo : .success
    }

    func render(into text: inout TextRendering) {
        // A bucket anyone can write to may hold thousands of junk keys: the
        // text (and cron's mail) names the first few and counts the rest;
        // --json lists them all.
        let shown = 10
        text.warnings = refused.prefix(shown).map { "refused \($0.key): \($0.message) [\($0.code)]" }
        if refused.count > shown {
            let counts = Dictionary(grouping: refused.dropFirst(shown), by: \.code).map {
                "\($0.key) × \($0.value.count)"
            }.sorted()
            text.warnings.append(
                "refused \(refused.count - shown) more (\(counts.joined(separator: ", "))); --json lists every one")
        }
        text.notes =
            skipped.map { "\($0.key): already in place as \($0.file)" } + waiting.map { "\($0.key): \($0.message)" }
            + removed.map { "\($0.key): removed from the shared inbox; merged into a signed generation as \($0.file)" }
        let verb = direction == "upload" ? "uploaded" : "downloaded"
        text.out = transferred.map {
            "\(verb) \($0.key) (\(ByteCountFormatter.string(fromByteCount: $0.bytes, countStyle: .binary))): \($0.file)"
        }
        if transferred.isEmpty { text.notes.append("nothing to transfer with \(remote)") }
    }
}

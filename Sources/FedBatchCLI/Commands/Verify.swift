import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Verify: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Check files against the home's pinned keys.",
        discussion: """
            Each file's signature is checked first, against an isolated keyring \
            holding only the home's pinned keys: exactly one signature, good, by a \
            key that is neither expired nor revoked, with SHA-256 or stronger, and \
            pinned for the role the file claims (its site, or the collector). Only \
            then is the file decompressed and parsed, its model id compared with \
            the home's and its tensors checked against its architecture.

            Prints one verdict per file. Exit status 0 when every file verifies, \
            3 when any does not.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Argument(help: ArgumentHelp("Update bundles (.fbu) or generations (.fbg).", valueName: "file"))
    var files: [String]

    func validate() throws {
        if files.isEmpty { throw ValidationError("give at least one file to verify") }
    }

    func run(_ context: CommandContext) throws -> VerifyOutput {
        let home = try context.home()
        // `latest`, `7` and `g7` name generations in this home; anything
        // else, or a number with no such generation, is taken as a path.
        // A collector's own key opens bundles encrypted to it; without it
        // (a copy of the public keys) such a bundle is refused as what it is.
        let decryption =
            home.config.role == .site ? nil : (try? context.signer(fingerprint: home.config.key, for: home))?.decryption
        let verdicts = try home.verify(
            paths: files.map { (try? home.layout.generation(named: $0)) ?? $0 }, decryption: decryption)
        return VerifyOutput(files: verdicts.map(VerifyOutput.Verdict.init))
    }
}

struct VerifyOutput: CommandOutput {
    /// One file's verdict: what it is and who signed it, or why it failed.
    struct Verdict: Encodable {
        let file: String
        let ok: Bool
        @OrNull var kind: String?
        @OrNull var generation: Int?
        @OrNull var site: String?
        @OrNull var seq: Int64?
        @OrNull var role: String?
        @OrNull var signer: String?
        @OrNull var digest: String?
        @OrNull var code: String?
        @OrNull var message: String?
        /// For a verified file: something to know (a retired key).
        @OrNull var note: String?
        /// The signer id a generation's key is pinned for (no single
        /// collector); not in the JSON output, where role and signer say it.
        var signerID: String?

        enum CodingKeys: String, CodingKey {
            case file, ok, kind, generation, site, seq, role, signer, digest, code, message, note
        }

        init(_ v: FileVerdict) {
            note = v.note
            file = v.file
            ok = v.verified != nil
            if let c = v.verified {
                let m = c.manifest
                kind = m.kind.rawValue
                generation = m.generation
                site = m.site?.id
                seq = m.site?.seq
                switch c.signer.role {
                case .collector: role = "collector"
                case .site: role = "site"
                case .witness: role = "witness"
                case .signer(let id): role = "signer"; signerID = id
                }
                signer = c.signer.fingerprint
                digest = c.digest.hex
            }
            code = v.failure?.code
            message = v.failure?.message
        }
    }

    let ok: Bool
    let files: [Verdict]

    init(files: [Verdict]) {
        self.files = files
        ok = files.allSatisfy(\.ok)
    }

    /// The exit status of the worst failure, by its reason code as every
    /// command maps it: a file that does not verify is 3, one that cannot
    /// be read (io.error) is 1, as anywhere else.
    var exitStatus: ExitStatus {
        files.compactMap { $0.code.map { ExitStatus.of(code: $0) } }.max { $0.rawValue < $1.rawValue } ?? .success
    }

    func render(into text: inout TextRendering) {
        for v in files {
            if v.ok {
                let subject = v.kind == "generation" ? "generation \(v.generation!)" : "\(v.site!) seq \(v.seq!)"
                let whom =
                    switch v.role {
                    case "collector": "the collector"
                    case "signer": "signer \(v.signerID ?? "?")"
                    default: "site \(v.site ?? "?")"
                    }
                text.out.append(
                    "ok    \(v.file): \(subject), signed by \(v.signer!) (\(whom)), digest \(v.digest!)"
                        + (v.note.map { "; \($0)" } ?? ""))
            } else {
                // A warning, so that a cron mail shows it even under --quiet.
                text.warnings.append("FAIL  \(v.file): \(v.message!) [\(v.code!)]")
            }
        }
    }
}

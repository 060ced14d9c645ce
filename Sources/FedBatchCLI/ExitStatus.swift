import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// fedbatch's exit codes. Cron jobs and scripts branch on these, so they are
/// part of the interface: documented in `fedbatch --help` and fedbatch(1),
/// never renumbered.
public enum ExitStatus: Int32, CaseIterable, Sendable {
    case success = 0
    case failure = 1
    case usage = 2
    case verificationFailed = 3
    case lockHeld = 4
    case nothingToDo = 5
    case privacyBudget = 6

    var meaning: String {
        switch self {
        case .success: return "success"
        case .failure: return "failure (I/O, configuration, or an unexpected error)"
        case .usage: return "usage error: bad command line"
        case .verificationFailed: return "verification failed: a file is unsigned, untrusted or malformed"
        case .lockHeld: return "another fedbatch process holds the home's lock; nothing was changed"
        case .nothingToDo: return "nothing to do (for example, the inbox is below quorum)"
        case .privacyBudget:
            return "privacy budget spent: another merge would exceed privacy.max_epsilon; nothing was written"
        }
    }

    /// The table shown in `--help` and mirrored in fedbatch(1).
    static var table: String {
        allCases.map { "  \($0.rawValue)  \($0.meaning)" }.joined(separator: "\n")
    }

    /// Reason-code families whose errors mean "this file cannot be
    /// trusted or does not belong here": verification failed.
    static let verificationFamilies: Set<String> = [
        "signature", "statement", "payload", "codec", "file", "zstd", "tar", "manifest", "member", "tensors", "model",
        "arch", "chain", "generation", "partial", "stats", "audit", "witness", "trust", "signer",
    ]

    /// The one place where library errors become exit codes: by the
    /// family of their reason code (the part before the first dot).
    static func of(_ error: Error) -> ExitStatus {
        return of(code: reasonCode(of: error))
    }

    static func of(code: String) -> ExitStatus {
        switch code {
        case "lock.held": return .lockHeld
        case "site.already-sent": return .nothingToDo
        case "privacy.budget-exhausted": return .privacyBudget
        // A rule that is not a sum is a regional collector's setting, not a
        // file that fails to belong.
        case "partial.strategy": return .failure
        // A site too small to release statistics refuses; nothing is wrong
        // with a file. No statistics to pin is nothing to do.
        case "stats.min-count", "stats.no-schema": return .failure
        case "stats.none", "merge.awaiting-signers": return .nothingToDo
        default:
            let family = String(code.prefix { $0 != "." })
            if family == "usage" { return .usage }
            return verificationFamilies.contains(family) ? .verificationFailed : .failure
        }
    }
}

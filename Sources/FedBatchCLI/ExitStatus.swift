import ArgumentParser
import FedBatch
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

    var meaning: String {
        switch self {
        case .success: return "success"
        case .failure: return "failure (I/O, configuration, or an unexpected error)"
        case .usage: return "usage error: bad command line"
        case .verificationFailed: return "verification failed: a file is unsigned, untrusted or malformed"
        case .lockHeld: return "another fedbatch process holds the home's lock; nothing was changed"
        case .nothingToDo: return "nothing to do (for example, the inbox is below quorum)"
        }
    }

    /// The table shown in `--help` and mirrored in fedbatch(1).
    static var table: String {
        allCases.map { "  \($0.rawValue)  \($0.meaning)" }.joined(separator: "\n")
    }

    /// The one place where library errors become exit codes.
    static func of(_ error: Error) -> ExitStatus {
        switch error {
        case is ContainerError, is SafetensorsError, is ArchitectureError, is ModelMismatch, is ChainError, is SiteStateError:
            return .verificationFailed
        case let e as TrustError:
            // Signature verdicts are verification failures; key-file and
            // signing-key problems are configuration errors.
            return e.code.hasPrefix("signature.") ? .verificationFailed : .failure
        case let e as CommandFailure:
            return e.status
        case is LockHeld:
            return .lockHeld
        case SiteError.alreadySent:
            return .nothingToDo
        default:
            return .failure
        }
    }
}

/// An error a command reports with a chosen exit status.
struct CommandFailure: Error, CustomStringConvertible {
    let status: ExitStatus
    let message: String
    var description: String { message }
}

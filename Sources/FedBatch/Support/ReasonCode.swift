import Foundation

/// An error with a stable, machine-readable reason code (`member.hash`,
/// `signature.key-expired`, …), as written to quarantine reason files and
/// `--json` output.
public protocol ReasonCoded: Error, CustomStringConvertible {
    var code: String { get }
}

/// The reason code of any error: its own, or a generic one.
public func reasonCode(of error: Error) -> String {
    (error as? ReasonCoded)?.code ?? "error"
}

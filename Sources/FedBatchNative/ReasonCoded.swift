import Foundation

/// An error with a stable, machine-readable reason code (`member.hash`,
/// `signature.key-expired`, …), as written to quarantine reason files and
/// `--json` output.
public protocol ReasonCoded: Error, CustomStringConvertible {
    var code: String { get }
}

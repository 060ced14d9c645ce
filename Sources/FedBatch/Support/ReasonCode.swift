import Foundation

/// The reason code of any error: its own, or a generic one.
public func reasonCode(of error: Error) -> String {
    (error as? ReasonCoded)?.code ?? "error"
}

import FedBatchNative
import Foundation

/// A setting that cannot be used: which file (or option) and why. It
/// depends on nothing, so that each feature's settings can live beside the
/// feature, below the homes that read them. The code is the one
/// `HomeError.config` has, so a bad setting exits the same way wherever it
/// is read.
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public let path: String
    public let reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var code: String { "home.error" }
    public var description: String { "\(path): \(reason)" }
}

import FedBatchFormats
import FedBatchNative
import FedBatchTrust
import Foundation
import GRDB

/// Opens a home's `state.db`. Only one fedbatch process writes a home at a
/// time (merge holds the lock), but `log` or `verify` may read meanwhile,
/// so waits on a busy database instead of failing at once.
func openStateDatabase(_ path: String) throws -> DatabaseQueue {
    var config = Configuration()
    config.busyMode = .timeout(10)
    return try DatabaseQueue(path: path, configuration: config)
}

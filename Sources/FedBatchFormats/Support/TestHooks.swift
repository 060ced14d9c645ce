import FedBatchNative
import Foundation

// Hooks the end-to-end tests use to stop a run at a chosen point. They are
// compiled into debug builds only (the tests run the debug binary), so a
// release binary reads no test variable from its environment.

/// Ends the process at once, as a crash would, when $FEDBATCH_FAULT names
/// `point`: nothing after it runs. Tests kill a merge at each write step
/// this way and check that the next run finishes the work.
package func faultPoint(_ point: String) {
    #if DEBUG
    if ProcessInfo.processInfo.environment["FEDBATCH_FAULT"] == point { _exit(99) }
    #endif
}

/// Holds the home's lock for $FEDBATCH_TEST_HOLD_LOCK_MS milliseconds, so
/// that a test can start a second merge while the first has the lock.
package func holdLockForTests() {
    #if DEBUG
    if let ms = ProcessInfo.processInfo.environment["FEDBATCH_TEST_HOLD_LOCK_MS"], let n = UInt32(ms) {
        usleep(n * 1000)
    }
    #endif
}

/// A test's setting for `name` ($FEDBATCH_TEST_<name>), read only in debug
/// builds: a release binary takes none from its environment.
package func testSetting(_ name: String) -> String? {
    #if DEBUG
    return ProcessInfo.processInfo.environment["FEDBATCH_TEST_\(name)"]
    #else
    return nil
    #endif
}

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Keeps fork() and OpenBLAS calls apart.
///
/// OpenBLAS registers a pthread_atfork handler that tears down its thread
/// pool. If another thread forks (gpgme starting gpg) while a threaded
/// sgemm is in flight, the running call waits forever for workers that no
/// longer exist: the hang seen in `make test`. So a BLAS call holds this
/// lock exclusively, and a fork holds it shared: a fork waits for the call
/// in flight to finish, a BLAS call waits for the forks, and forks (two
/// merge workers verifying at once) do not wait for each other.
///
/// Every gpgme operation takes the lock *before* it forks (`forking`). A
/// guard taken only inside a fork handler is not enough: glibc runs the
/// prepare handlers holding its own atfork lock, and an sgemm that
/// re-creates OpenBLAS's pool after an earlier fork registers handlers
/// again, which needs that atfork lock. A fork waiting in its handler for
/// that sgemm, and the sgemm waiting for the fork's atfork lock, deadlocked
/// the test process about once in twenty runs. Taken first, the lock is
/// never waited for while the atfork lock is held. The fork handlers still
/// take it (shared, which a thread already holding it shared may do again)
/// for forks from anything else.
///
/// The handler must be registered before the first fork *and* the first
/// BLAS call, whichever comes first: glibc skips handlers registered while
/// a fork is under way. Both the BLAS wrapper and every gpgme context
/// therefore touch `shared` before they do anything else.
///
/// posix_spawn, which fedbatch and its tests use to start programs, runs
/// no fork handlers and does not touch OpenBLAS's pool. It must still close
/// every inherited descriptor (`closeInheritedDescriptors`): a program
/// spawned while a gpgme call runs would otherwise hold that call's pipes
/// open, and the call, holding this lock shared, would wait for as long as
/// the program lives (what hung the tests twice in a row once the suites
/// started many more programs beside in-process gpgme calls).
final class ForkGuard: @unchecked Sendable {
    static let shared = ForkGuard()
    private let rwlock: UnsafeMutablePointer<pthread_rwlock_t>

    private init() {
        rwlock = .allocate(capacity: 1)
        // glibc's default prefers readers, so a thread that holds the lock
        // shared may take it shared again (in the fork handler) even while
        // a BLAS call waits for it.
        pthread_rwlock_init(rwlock, nil)
        // Closures that capture nothing convert to C function pointers;
        // `shared` is initialised by the time a fork can run them.
        pthread_atfork(
            { ForkGuard.shared.lockShared() }, { ForkGuard.shared.unlock() }, { ForkGuard.shared.unlock() })
    }

    /// Makes sure the handler is registered (see above).
    static func register() { _ = shared }

    /// For a BLAS call: no fork runs meanwhile.
    func lockExclusive() { pthread_rwlock_wrlock(rwlock) }
    /// For a fork: no BLAS call runs meanwhile.
    func lockShared() { pthread_rwlock_rdlock(rwlock) }
    func unlock() { pthread_rwlock_unlock(rwlock) }

    /// Runs `body`, which may fork, with the lock held shared.
    static func forking<R>(_ body: () throws -> R) rethrows -> R {
        shared.lockShared()
        defer { shared.unlock() }
        return try body()
    }
}

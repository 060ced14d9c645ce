import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Keeps fork() and OpenBLAS calls apart.
///
/// OpenBLAS registers a pthread_atfork handler that tears down its thread
/// pool. If another thread forks (gpgme starting gpg) while a threaded
/// sgemm is in flight, the running call waits forever for workers that no
/// longer exist: the hang seen in `make test`. This guard registers a
/// handler of its own that takes the lock every BLAS call holds, so a fork
/// waits for the call in flight to finish, and a BLAS call waits for the
/// fork. Prepare handlers run in reverse order of registration, and
/// OpenBLAS registers its handler when the library loads, before any Swift
/// code runs; so ours always runs before OpenBLAS's teardown.
///
/// The handler must be registered before the first fork *and* the first
/// BLAS call, whichever comes first: glibc skips handlers registered while
/// a fork is under way, so a guard registered lazily by the first sgemm,
/// racing a gpgme fork, was seen locked in the child and deadlocked it.
/// Both the BLAS wrapper and every gpgme context therefore touch `shared`
/// before they do anything else.
///
/// posix_spawn, which fedbatch and its tests use to start programs, runs
/// no fork handlers and does not touch OpenBLAS's pool.
final class ForkGuard: @unchecked Sendable {
    static let shared = ForkGuard()
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    private init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        // Closures that capture nothing convert to C function pointers;
        // `shared` is initialised by the time a fork can run them.
        pthread_atfork({ ForkGuard.shared.lock() }, { ForkGuard.shared.unlock() }, { ForkGuard.shared.unlock() })
    }

    /// Makes sure the handler is registered (see above).
    static func register() { _ = shared }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
}

import FedBatchTestSupport
import Foundation
import Testing

@testable import FedBatch
@testable import FedBatchFormats
@testable import FedBatchLearning
@testable import FedBatchNative
@testable import FedBatchTrust

/// Threaded OpenBLAS calls and forks (gpgme starting gpg) in one process,
/// at once and repeatedly: before the fork guard this could leave an sgemm
/// spinning forever on a torn-down thread pool.
@Suite("ForkGuard")
struct ForkGuardTests {
    @Test("many threaded evaluations and gpg forks at once, repeated, all finish")
    func evaluationsAndForks() throws {
        let keyring = try TestKeyring()
        let fpr = try keyring.generate("stress")
        let keyFile = try keyring.exportPublic(fpr, to: "stress.asc")
        let arch = try ModelArchitecture(spec: "mlp:784-256-128-10")
        let weights = ModelWeights(arch: arch, named: arch.initialWeights(seed: 1))
        // 2048 rows: OpenBLAS splits these products over every core.
        let data = toyData(count: 2048, width: 784, classes: 10, seed: 4)

        // A hang must fail the run, not block CI: past the deadline the
        // watchdog ends the whole test process with a message.
        // Without the guard this hung in each of three runs; with it the
        // whole test takes about a second.
        let done = DispatchSemaphore(value: 0)
        let deadline = 180
        let watchdog = Thread {
            if done.wait(timeout: .now() + .seconds(deadline)) == .timedOut {
                FileHandle.standardError.write(
                    Data("ForkGuard stress test: no progress in \(deadline) s, a BLAS call is stuck\n".utf8))
                abort()
            }
        }
        watchdog.start()
        defer { done.signal() }

        let rounds = 12
        let group = DispatchGroup()
        let failures = Locked<[String]>([])
        for worker in 0..<4 {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                for _ in 0..<rounds {
                    if worker < 2 {
                        let e = Evaluation.evaluate(weights, on: data)
                        if !(e.loss.isFinite) { failures.mutate { $0.append("evaluation loss \(e.loss)") } }
                    } else {
                        do {
                            // Each read forks gpg several times through gpgme.
                            let k = try KeyCandidate.read(path: keyFile)
                            if k.fingerprint != fpr { failures.mutate { $0.append("fingerprint \(k.fingerprint)") } }
                        } catch {
                            failures.mutate { $0.append("\(error)") }
                        }
                    }
                }
            }
            thread.start()
        }
        group.wait()
        #expect(failures.value.isEmpty, "\(failures.value)")
    }
}

/// What a spawned program inherits.
@Suite("spawned programs")
struct SpawnTests {
    @Test("a spawned program inherits no descriptor above stderr, as a pipe gpgme left open would be")
    func noInheritedDescriptors() throws {
        // A pipe without close-on-exec, as gpgme opens its pipes to gpg.
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let dir = TempDir()
        let log = dir.file("log")
        _ = try runShellCommand(
            "ls /proc/self/fd", directory: dir.path, environment: [:], log: log, timeout: 30)
        let listed = Set(
            try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").compactMap { Int32($0) })
        #expect(!listed.contains(fds[0]) && !listed.contains(fds[1]) && listed.contains(1), "\(listed) \(fds)")
        // The tests' own spawner, which starts fedbatch and gpg, too.
        let r = try Subprocess.run("/bin/ls", ["/proc/self/fd"])
        let seen = Set(r.out.split(separator: "\n").compactMap { Int32($0) })
        #expect(!seen.contains(fds[0]) && !seen.contains(fds[1]) && seen.contains(1), "\(seen) \(fds)")
    }
}

/// A value shared between threads behind a lock.
final class Locked<T>: @unchecked Sendable {
    private var stored: T
    private let lock = NSLock()
    init(_ value: T) { stored = value }
    var value: T { lock.lock(); defer { lock.unlock() }; return stored }
    func mutate(_ body: (inout T) -> Void) { lock.lock(); body(&stored); lock.unlock() }
}

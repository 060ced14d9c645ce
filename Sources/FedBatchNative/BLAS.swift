internal import CBLAS
import Foundation

// Every call into OpenBLAS lives in this file. fedbatch measured OpenBLAS
// against BLIS and against hand-written loops on this machine and uses
// OpenBLAS (see BENCHMARKS.md).

/// Row-major single-precision matrix products.
public enum BLAS {
    /// C[m×n] = alpha · op(A) · op(B) + beta · C, all row-major.
    /// op(A) is m×k (A is k×m when `transA`); op(B) is k×n (B is n×k when `transB`).
    /// Every call holds `ForkGuard`, so no fork can start while it runs.
    @inline(__always)
    public static func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, b: UnsafePointer<Float>, beta: Float = 0, c: UnsafeMutablePointer<Float>
    ) {
        ForkGuard.shared.lockExclusive()
        defer { ForkGuard.shared.unlock() }
        cblas_sgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha,
            a, Int32(transA ? m : k), b, Int32(transB ? k : n), beta, c, Int32(n))
    }

    /// OpenBLAS keeps one thread pool and one thread-count setting per
    /// process; two threads driving it at once (say, two trainings in one
    /// test process) can leave its workers spinning forever. Every use of
    /// the network goes through this lock.
    private static let lock = NSLock()

    public static func exclusive<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// The kernel OpenBLAS picked for this CPU (for example "Cooperlake").
    static var coreName: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    static var threads: Int { Int(openblas_get_num_threads()) }

    /// Changing the thread count takes OpenBLAS's own server lock (and may
    /// start its workers), so it holds `ForkGuard` as a product does: a
    /// fork from another thread would otherwise copy that lock held into
    /// the child, and gpgme's child, forking again to start gpg, would
    /// wait for it forever in OpenBLAS's fork handler (a hang of the
    /// ForkGuard stress test, seen once: the intermediate child stuck in
    /// `blas_thread_shutdown_`).
    static func setThreads(_ n: Int) {
        ForkGuard.shared.lockExclusive()
        defer { ForkGuard.shared.unlock() }
        openblas_set_num_threads(Int32(n))
    }

    /// Threads for GEMMs of `rows` rows. Measured here: at batch 64 one
    /// thread trains 1.8× faster than two (77k against 42k examples/s on
    /// the MLP 784-256-128-10), because splitting such small products
    /// costs more than it saves; large batches (evaluation) use every core.
    /// An explicit OPENBLAS_NUM_THREADS wins.
    public static func useThreads(forRows rows: Int) {
        if ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] != nil { return }
        setThreads(rows < 256 ? 1 : ProcessInfo.processInfo.activeProcessorCount)
    }
}

/// What the numeric backend is, for metrics and `--json` output.
public enum NumericBackend {
    public static var description: String { "OpenBLAS \(BLAS.coreName), \(BLAS.threads) threads" }

    /// OpenBLAS 0.3.21 chooses its kernel when the library loads, before
    /// main runs, and on CPUs it does not recognise it falls back to a
    /// generic kernel several times slower. `OPENBLAS_CORETYPE` must be set
    /// before the process starts, so when the kernel is a fallback and the
    /// CPU has AVX-512 or AVX2, fedbatch re-executes itself once with the
    /// right core type. A user's own OPENBLAS_CORETYPE is always respected.
    /// Returns the core type to re-execute with, or nil when all is well.
    public static func preferredCoreType(environment: [String: String] = ProcessInfo.processInfo.environment) -> String?
    {
        if environment["OPENBLAS_CORETYPE"] != nil { return nil }
        let fallbacks: Set<String> = [
            "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Barcelona", "Bobcat", "Katmai",
            "Coppermine", "Northwood", "Banias", "Opteron", "Opteron_SSE3", "unknown",
        ]
        guard fallbacks.contains(BLAS.coreName) else { return nil }
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if flags.contains(" avx512f ") && flags.contains(" avx512vl ") { return "SkylakeX" }
        if flags.contains(" avx2 ") { return "Haswell" }
        return nil
    }
}

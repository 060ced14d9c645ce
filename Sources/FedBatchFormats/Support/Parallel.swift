import Dispatch
import FedBatchNative
import Foundation

/// Small, bounded parallelism for the merge: the machine has few cores and
/// the work items are large, so plain threads with explicit limits beat a
/// general scheduler.
package enum Parallel {
    private final class Slots<T>: @unchecked Sendable {
        var values: [T?]
        let lock = NSLock()
        init(_ n: Int) { values = Array(repeating: nil, count: n) }
    }

    /// Runs `body(part)` for every part in 0..<parts, each on its own
    /// thread, and returns when all are done. For numeric loops over raw
    /// buffers split into disjoint index ranges: the caller guarantees that
    /// no two parts write the same memory, which the compiler cannot check.
    package static func parts(_ parts: Int, _ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { body in
            let shared = Unchecked(body)
            DispatchQueue.concurrentPerform(iterations: parts) { shared.value($0) }
        }
    }

    private struct Unchecked<T>: @unchecked Sendable {
        let value: T
        init(_ value: T) { self.value = value }
    }

    /// `transform` applied to every element with `workers` threads; results in input order.
    package static func map<T, R>(_ items: [T], workers: Int, _ transform: @escaping @Sendable (T) -> R) -> [R]
    where T: Sendable {
        let out = Slots<R>(items.count)
        let next = Slots<Int>(1)
        next.values[0] = 0
        DispatchQueue.concurrentPerform(iterations: max(1, min(workers, items.count))) { _ in
            while true {
                next.lock.lock()
                let i = next.values[0]!
                next.values[0] = i + 1
                next.lock.unlock()
                guard i < items.count else { return }
                let r = transform(items[i])
                out.lock.lock(); out.values[i] = r; out.lock.unlock()
            }
        }
        return out.values.map { $0! }
    }

    /// Runs `produce(i, worker)` for i in 0..<count on `workers` threads,
    /// taking indices in order, and hands each result to `consume` on the
    /// calling thread strictly in index order. At most `inFlight` results
    /// exist at once, which bounds memory whatever `count` is.
    package static func orderedPipeline<R>(
        count: Int, workers: Int, inFlight: Int,
        produce: @escaping @Sendable (Int, Int) -> R,
        consume: (Int, R) -> Void
    ) {
        guard count > 0 else { return }
        let slots = Slots<R>(count)
        let ready = (0..<count).map { _ in DispatchSemaphore(value: 0) }
        let permits = DispatchSemaphore(value: inFlight)
        let next = Slots<Int>(1)
        next.values[0] = 0
        let group = DispatchGroup()
        for w in 0..<max(1, min(workers, count)) {
            let thread = Thread {
                while true {
                    // Take the permit before the index: permits free up in
                    // index order, so the lowest pending index always runs.
                    permits.wait()
                    next.lock.lock()
                    let i = next.values[0]!
                    next.values[0] = i + 1
                    next.lock.unlock()
                    guard i < count else { permits.signal(); break }
                    let r = produce(i, w)
                    slots.lock.lock(); slots.values[i] = r; slots.lock.unlock()
                    ready[i].signal()
                }
                group.leave()
            }
            group.enter()
            thread.stackSize = 8 << 20
            thread.start()
        }
        for i in 0..<count {
            ready[i].wait()
            slots.lock.lock()
            let r = slots.values[i]!
            slots.values[i] = nil
            slots.lock.unlock()
            consume(i, r)
            permits.signal()
        }
        group.wait()
    }
}

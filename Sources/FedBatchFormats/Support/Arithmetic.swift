import FedBatchNative
import Foundation

/// A sum of counts that cannot trap: it stops at Int64.max. Counts come
/// from signed but untrusted manifests and from configuration.
public func saturatingSum(_ values: [Int64]) -> Int64 {
    var total: Int64 = 0
    for v in values {
        let (s, overflow) = total.addingReportingOverflow(v)
        total = overflow ? (v > 0 ? .max : .min) : s
    }
    return total
}

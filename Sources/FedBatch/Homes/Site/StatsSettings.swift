import FedBatchFormats
import FedBatchLearning
import Foundation
import TOMLKit

/// What a site releases as statistics of its data: the `[stats]` table of a
/// site home (fedbatch-stats(1)).
public struct StatsSettings: Sendable, Equatable {
    /// The fewest rows a site summarises, and the smallest count it
    /// releases: a category seen fewer times, or a column with fewer
    /// values, is left out. 20 by default, a common floor for releasing
    /// aggregate counts of health data.
    public var minCount = 20
    public init() {}

    static let keys: Set<String> = ["min_count"]

    static func parse(_ value: TOMLValueConvertible, path: String, text: String) throws -> StatsSettings {
        let s = try ConfigSection(value, name: "stats", allowed: keys, path: path, text: text)
        var d = StatsSettings()
        if let n = try s.int("min_count", "a positive integer", where: { $0 >= 1 && $0 <= 1 << 40 }) { d.minCount = n }
        return d
    }

    func render() -> [String] {
        [
            "", "# Statistics this site releases (fedbatch stats): no table of fewer rows, and no count below it.",
            "[stats]", "min_count = \(minCount)",
        ]
    }
}

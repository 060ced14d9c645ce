import FedBatchFormats
import TOMLKit

/// Where `train` and `merge` leave their Prometheus metrics: the
/// `[metrics]` table. node_exporter's textfile collector reads the
/// directory (fedbatch-metrics(7)).
public struct MetricsSettings: Sendable, Equatable {
    public var textfileDir: String?
    public init() {}

    static let keys: Set<String> = ["textfile_dir"]

    static func parse(_ value: TOMLValueConvertible, path: String, text: String) throws -> MetricsSettings {
        let s = try ConfigSection(value, name: "metrics", allowed: keys, path: path, text: text)
        var m = MetricsSettings()
        m.textfileDir = try s.string("textfile_dir", "a non-empty path") { !$0.isEmpty }
        return m
    }

    func render() -> [String] {
        [
            "", "# A node_exporter textfile directory for train/merge metrics (fedbatch-metrics(7)).", "[metrics]",
            textfileDir.map { "textfile_dir = \(StrictJSON.quote($0))" }
                ?? "# textfile_dir = \"/var/lib/prometheus/node-exporter\"",
        ]
    }
}

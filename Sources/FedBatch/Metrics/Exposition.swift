import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// One metric family in Prometheus' text exposition format (version 0.0.4),
/// the format node_exporter's textfile collector reads.
public struct MetricFamily: Sendable, Equatable {
    public enum Kind: String, Sendable { case gauge, counter }

    public struct Sample: Sendable, Equatable {
        public let labels: [(String, String)]
        public let value: Double
        public init(_ value: Double, labels: [(String, String)] = []) {
            self.labels = labels
            self.value = value
        }
        public static func == (a: Sample, b: Sample) -> Bool {
            a.value == b.value && a.labels.map(\.0) == b.labels.map(\.0) && a.labels.map(\.1) == b.labels.map(\.1)
        }
    }

    public let name: String
    public let help: String
    public let kind: Kind
    public let samples: [Sample]

    public init(_ name: String, _ kind: Kind, _ help: String, _ samples: [Sample]) {
        self.name = name
        self.help = help
        self.kind = kind
        self.samples = samples
    }

    /// A family with one unlabelled sample.
    public init(_ name: String, _ kind: Kind, _ help: String, value: Double) {
        self.init(name, kind, help, [Sample(value)])
    }
}

public enum Exposition {
    /// The families as exposition text. No sample carries a timestamp:
    /// the scrape time is the right one for a textfile, and Prometheus
    /// drops samples whose client timestamps it finds stale.
    public static func render(_ families: [MetricFamily]) -> String {
        var out = ""
        for f in families where !f.samples.isEmpty {
            out += "# HELP \(f.name) \(escapeHelp(f.help))\n# TYPE \(f.name) \(f.kind.rawValue)\n"
            for s in f.samples {
                out += f.name
                if !s.labels.isEmpty {
                    out += "{" + s.labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
                }
                out += " " + format(s.value) + "\n"
            }
        }
        return out
    }

    static func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    static func escapeHelp(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func escapeLabel(_ s: String) -> String {
        escapeHelp(s).replacingOccurrences(of: "\"", with: "\\\"")
    }

    /// Writes `families` to `dir/name` the way node_exporter needs: a
    /// temporary file in the same directory (its dot name does not end in
    /// .prom, so the collector never reads it half-written), then a rename.
    public static func writeTextfile(_ families: [MetricFamily], directory dir: String, name: String) throws -> String {
        let path = "\(dir)/\(name)"
        try writeFileAtomically(Data(render(families).utf8), to: path, mode: 0o644)
        return path
    }
}

import FedBatchFormats
import FedBatchNative
import Foundation

/// Splits a dataset into per-site shards for simulations.
public enum Partition {
    public enum Scheme: Sendable, Equatable {
        /// Uniformly at random, equal sizes (±1).
        case iid
        /// Label skew: each class is spread over the sites with proportions
        /// drawn from Dirichlet(α, …, α); small α gives each site few classes.
        case dirichlet(alpha: Double)
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Indices of the examples each site gets. Deterministic for a seed.
    /// With Dirichlet, draws are repeated (up to 100 times) until every site
    /// has at least `minimumSize` examples, as Flower's DirichletPartitioner does.
    public static func assign(
        labels: [Int32], sites: Int, scheme: Scheme, seed: UInt64, minimumSize: Int = 10
    ) throws -> [[Int]] {
        guard sites >= 1 else { throw Failure(description: "--sites must be at least 1") }
        guard labels.count >= sites else {
            throw Failure(description: "\(labels.count) examples cannot be split over \(sites) sites")
        }
        var rng = SeededRandom(seed: seed)
        switch scheme {
        case .iid:
            var order = Array(0..<labels.count)
            rng.shuffle(&order)
            return (0..<sites).map { s in stride(from: s, to: order.count, by: sites).map { order[$0] } }
        case .dirichlet(let alpha):
            guard alpha > 0, alpha.isFinite else { throw Failure(description: "--dirichlet must be a positive number") }
            let classes = Int(labels.max() ?? 0) + 1
            var byClass = [[Int]](repeating: [], count: classes)
            for (i, l) in labels.enumerated() { byClass[Int(l)].append(i) }
            let need = min(minimumSize, labels.count / sites)
            for _ in 0..<100 {
                var parts = [[Int]](repeating: [], count: sites)
                for c in 0..<classes where !byClass[c].isEmpty {
                    var idx = byClass[c]
                    rng.shuffle(&idx)
                    let p = dirichlet(alpha: alpha, count: sites, rng: &rng)
                    var start = 0, cumulative = 0.0
                    for s in 0..<sites {
                        cumulative += p[s]
                        let end =
                            s == sites - 1 ? idx.count : min(idx.count, Int((cumulative * Double(idx.count)).rounded()))
                        if end > start { parts[s].append(contentsOf: idx[start..<end]) }
                        start = max(start, end)
                    }
                }
                if parts.allSatisfy({ $0.count >= need }) { return parts.map { $0.sorted() } }
            }
            throw Failure(
                description:
                    "no Dirichlet(\(alpha)) split in 100 draws gave every one of \(sites) sites at least \(need) "
                    + "examples; raise --dirichlet or lower --sites"
            )
        }
    }

    private static func unit(_ rng: inout SeededRandom) -> Double {
        (Double(rng.next() >> 11) + 0.5) * 0x1p-53  // in (0, 1)
    }

    private static func normal(_ rng: inout SeededRandom) -> Double {
        (-2 * log(unit(&rng))).squareRoot() * cos(2 * .pi * unit(&rng))
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang; shapes below 1 use the
    /// boost Gamma(a) = Gamma(a + 1) · U^(1/a).
    static func gamma(_ shape: Double, _ rng: inout SeededRandom) -> Double {
        if shape < 1 { return gamma(shape + 1, &rng) * pow(unit(&rng), 1 / shape) }
        let d = shape - 1.0 / 3, c = 1 / (9 * d).squareRoot()
        while true {
            var x = 0.0, v = 0.0
            repeat { x = normal(&rng); v = 1 + c * x } while v <= 0
            v = v * v * v
            let u = unit(&rng)
            if u < 1 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1 - v + log(v)) { return d * v }
        }
    }

    static func dirichlet(alpha: Double, count: Int, rng: inout SeededRandom) -> [Double] {
        let g = (0..<count).map { _ in gamma(alpha, &rng) }
        let sum = g.reduce(0, +)
        return sum > 0 ? g.map { $0 / sum } : [Double](repeating: 1 / Double(count), count: count)
    }

    /// Writes one safetensors shard per site (`x` U8 when the source was
    /// pixels, else F32; `y` I64) and returns their paths.
    public static func writeShards(_ data: Dataset, parts: [[Int]], to directory: String) throws -> [String] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let digits = max(2, String(parts.count).count)
        return try parts.enumerated().map { s, indices in
            let shard = data.subset(indices)
            let x: Tensor
            if let raw = shard.rawBytes {
                x = try Tensor(dtype: .u8, shape: [shard.count, shard.width], data: Data(raw))
            } else {
                x = Tensor(shape: [shard.count, shard.width], floats: shard.features)
            }
            let y = try Tensor(
                dtype: .i64, shape: [shard.count],
                data: LittleEndian.bytes(of: shard.labels, as: Int64.self) { Int64($0) })
            let name = "site-" + String(repeating: "0", count: max(0, digits - String(s + 1).count)) + String(s + 1)
            let path = "\(directory)/\(name).safetensors"
            try SafetensorsWriter.write([("x", x), ("y", y)], metadata: ["fedbatch_site": name], to: path)
            return path
        }
    }
}

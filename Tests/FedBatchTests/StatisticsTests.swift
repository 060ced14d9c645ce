import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchTestSupport
import Foundation
import Testing

@Suite("Federated statistics")
struct StatisticsTests {
    /// A table with a numeric column x, a categorical column c and text labels.
    static func table(_ rows: [(x: String, c: String, y: String)]) -> String {
        "x,c,y\n" + rows.map { "\($0.x),\($0.c),\($0.y)" }.joined(separator: "\n") + "\n"
    }

    static let schema = try! TabularSchema(
        features: ["x", "c"], label: "y", labels: ["no", "yes"], categories: ["c": ["a", "b", "z"]])

    static func summarise(_ text: String, minCount: Int = 2) throws -> DataStatistics {
        let dir = TempDir()
        let path = try dir.write("t.csv", Data(text.utf8))
        return try DataStatistics.summarise(csv: path, schema: schema, minCount: minCount)
    }

    @Test("a site's figures: counts, blanks, moments, and nothing below min_count released")
    func summary() throws {
        let rows: [(String, String, String)] = [
            ("1", "a", "no"), ("2", "a", "yes"), ("", "b", "no"), ("4", "a", "yes"), ("5", "z", "no"),
            ("6", "b", "yes"),
        ]
        let s = try Self.summarise(Self.table(rows))
        #expect(s.rows == 6 && s.label.counts == ["no": 3, "yes": 3])
        // z appears once, below min_count 2: left out.
        #expect(s.categorical["c"]?.counts == ["a": 3, "b": 2])
        let x = try #require(s.numeric["x"])
        #expect(x.count == 5 && x.missing == 1 && x.mean == 3.6 && x.min == 1 && x.max == 6)
        // Σ(x − 3.6)² over 1, 2, 4, 5, 6 = 17.2.
        #expect(abs(x.m2! - 17.2) < 1e-12)
        // A column with fewer values than min_count keeps only its counts.
        let sparse = try Self.summarise(Self.table(rows.map { ($0.0 == "1" ? "1" : "", $0.1, $0.2) }))
        #expect(sparse.numeric["x"] == .init(count: 0, missing: 5, withheld: 1))
        // Too few rows: refused.
        #expect(throws: StatisticsError.tooFewRows(rows: 6, minCount: 7)) {
            try Self.summarise(Self.table(rows), minCount: 7)
        }
    }

    @Test("combining sites gives the pooled table's counts exactly and its moments to float64's precision")
    func combination() throws {
        var rng = SeededRandom(seed: 3)
        func rows(_ n: Int, shift: Double) -> [(String, String, String)] {
            (0..<n).map { i in
                (
                    i % 9 == 4 ? "" : "\(1e6 + shift + Double(rng.next() % 1000) / 250)", ["a", "b"][i % 2],
                    ["no", "yes"][i % 3 == 0 ? 1 : 0]
                )
            }
        }
        let a = rows(40, shift: 0), b = rows(25, shift: 3), c = rows(33, shift: -2)
        let parts = try [a, b, c].map { try Self.summarise(Self.table($0)) }
        let pooled = try Self.summarise(Self.table(a + b + c))
        let left = try parts[0].combined(with: parts[1]).combined(with: parts[2])
        let right = try parts[0].combined(with: try parts[1].combined(with: parts[2]))
        for s in [left, right] {
            #expect(s.rows == pooled.rows && s.sites == 3 && s.label == pooled.label)
            #expect(s.categorical == pooled.categorical)
            let x = s.numeric["x"]!, p = pooled.numeric["x"]!
            #expect(x.count == p.count && x.missing == p.missing && x.min == p.min && x.max == p.max)
            #expect(abs((x.mean! - p.mean!) + (x.meanError! - p.meanError!)) <= 1e-12 * abs(p.mean!))
            #expect(abs(x.variance! - p.variance!) <= 1e-12 * p.variance!, "\(x.variance!) \(p.variance!)")
        }
        let (mean, std) = try left.normalisation(for: Self.schema)
        #expect(mean[1] == 0 && std[1] == 1 && mean[0] == left.numeric["x"]!.mean)
    }

    @Test("statistics.json is read strictly: canonical bytes, consistent counts and moments")
    func strictParse() throws {
        let s = try Self.summarise(
            Self.table([("1", "a", "no"), ("2", "a", "yes"), ("3", "b", "no"), ("4", "b", "no")]))
        let bytes = s.encoded
        #expect(try DataStatistics.parse(bytes) == s)
        let text = String(decoding: bytes, as: UTF8.self)
        func refused(_ variant: String, _ why: String) {
            #expect(throws: StatisticsError.self, "\(why)") { try DataStatistics.parse(Data(variant.utf8)) }
        }
        refused(text.replacingOccurrences(of: ",", with: ", "), "white space")
        refused(text.replacingOccurrences(of: "\"rows\":4", with: "\"rows\":4,\"rows\":4"), "a duplicate key")
        refused(text.replacingOccurrences(of: "\"rows\":4", with: "\"rows\":5"), "counts that do not add up")
        refused(text.replacingOccurrences(of: "\"min_count\":2", with: "\"min_count\":3"), "a count below min_count")
        refused(text.replacingOccurrences(of: "\"max\":4", with: "\"max\":2"), "a mean above the max")
        refused(text.replacingOccurrences(of: "\"m2\":", with: "\"m2\":-"), "a negative m2")
        refused(
            text.replacingOccurrences(of: "\"mean_error\":0", with: "\"mean_error\":1"), "a mean_error above an ulp")
        // Bounds that keep any combination finite: float32 values, M2 at
        // most count·(max − min)², and no more than 2^40 rows in all.
        var hostile = s
        hostile.numeric["x"]!.max = 1e39
        #expect(throws: StatisticsError.self) { try hostile.check() }
        hostile = s
        hostile.numeric["x"]!.m2 = 1e10
        #expect(throws: StatisticsError.self) { try hostile.check() }
        hostile = s
        hostile.rows = 1 << 40
        #expect(throws: StatisticsError.self) { try hostile.combined(with: s) }
        // Against a schema: a category it does not pin, a label outside its map.
        var other = s
        other.categorical["c"]!.counts["q"] = 2
        other.rows += 2
        #expect(throws: StatisticsError.self) { try other.check(against: Self.schema) }
        other = s
        other.label.counts["maybe"] = 2
        #expect(throws: StatisticsError.self) { try other.check(against: Self.schema) }
    }

    @Test("a statistics bundle's manifest: codec none, statistics.json and no tensors, a site, a base and rows")
    func manifest() throws {
        func make(_ edit: (inout Manifest) -> Void) -> Manifest {
            var m = Manifest(
                kind: .stats, model: .init(id: "tab", arch: "mlp:4-3-2"), created: "2026-12-07T12:00:00Z",
                codec: Manifest.noTensorsCodec, base: .init(number: 0, digest: String(repeating: "a", count: 64)),
                site: .init(id: "site-a", seq: 3), numExamples: 40)
            m.members = [.init(name: ContainerPath.statistics, length: 10, sha256: String(repeating: "b", count: 64))]
            edit(&m)
            return m
        }
        try make { _ in }.validate()
        #expect(throws: ContainerError.self) { try make { $0.codec = "fp32" }.validate() }
        #expect(throws: ContainerError.self) { try make { $0.numExamples = 0 }.validate() }
        #expect(throws: ContainerError.self) { try make { $0.members = [] }.validate() }
        #expect(throws: ContainerError.self) {
            try make {
                $0.members.append(
                    .init(name: ContainerPath.tensors, length: 1, sha256: String(repeating: "c", count: 64)))
            }.validate()
        }
        // An update may not claim codec none.
        #expect(throws: ContainerError.self) { try make { $0.kind = .update }.validate() }
        // The signed statement names the kind and round-trips.
        let st = Statement(
            kind: .stats, model: "tab", site: .init(id: "site-a", seq: 3), payloadLength: 10,
            payloadDigest: Digest.of(Data("x".utf8)))
        #expect(try Statement.parse(st.encoded) == st)
    }
}

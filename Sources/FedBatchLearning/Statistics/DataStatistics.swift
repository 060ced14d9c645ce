import FedBatchFormats
import FedBatchNative
import Foundation

/// Summary statistics of a table, as a site releases them
/// (`statistics.json` in a statistics bundle) and as a collector combines
/// them (`statistics.json` in the generation `fedbatch stats --pin` writes):
/// per numeric feature its count, mean, sum of squared deviations (M2),
/// minimum, maximum and blanks; per categorical feature and for the label
/// the count of each value. From these a federation standardises its
/// features without anyone pooling rows (NVFlare's federated statistics do
/// the same for its users).
///
/// Means and M2 rather than sums and sums of squares: combining (mean, M2)
/// pairs is Chan, Golub and LeVeque's pairwise update, which stays accurate
/// where Σx² − (Σx)²/n cancels catastrophically (a feature of 10⁶ ± 1).
/// Counts below the site's `min_count` are left out, so no single patient's
/// value or rare category leaves the site.
public struct DataStatistics: Codable, Equatable, Sendable {
    /// One numeric feature.
    public struct Numeric: Codable, Equatable, Sendable {
        /// Values summarised by the moments below.
        public var count: Int64
        /// Blank cells.
        public var missing: Int64
        /// Values present but left out because there were fewer than
        /// `min_count` of them: the moments of so few would name them.
        public var withheld: Int64
        public var mean: Double?
        /// What `mean` leaves out: mean + mean_error is the mean to twice
        /// float64's precision. Without it, combining the means of a column
        /// of 10⁶ ± 2 loses a few digits of its variance (the between-site
        /// term is first-order in each mean's rounding); with it, none.
        public var meanError: Double?
        public var m2: Double?
        public var min: Double?
        public var max: Double?

        enum CodingKeys: String, CodingKey {
            case count, missing, withheld, mean, m2, min, max
            case meanError = "mean_error"
        }

        public init(
            count: Int64, missing: Int64, withheld: Int64 = 0, mean: Double? = nil, meanError: Double? = nil,
            m2: Double? = nil, min: Double? = nil, max: Double? = nil
        ) {
            self.count = count; self.missing = missing; self.withheld = withheld
            self.mean = mean; self.meanError = meanError; self.m2 = m2; self.min = min; self.max = max
        }

        /// The population variance, as scikit-learn's StandardScaler and
        /// numpy's `var` compute it; nil with no values.
        public var variance: Double? { count > 0 ? m2.map { $0 / Double(count) } : nil }
    }

    /// Counts of the values of a categorical feature, or of the label.
    public struct Counts: Codable, Equatable, Sendable {
        public var counts: [String: Int64]
        public var missing: Int64
        public init(counts: [String: Int64], missing: Int64) { self.counts = counts; self.missing = missing }
    }

    /// Rows summarised.
    public var rows: Int64
    /// The smallest count released: counts below it were left out.
    public var minCount: Int64
    /// How many sites' statistics were combined (1 for a site's own).
    public var sites: Int64
    public var label: Counts
    public var numeric: [String: Numeric]
    public var categorical: [String: Counts]

    enum CodingKeys: String, CodingKey {
        case rows, label, numeric, categorical, sites
        case minCount = "min_count"
    }

    public init(
        rows: Int64, minCount: Int64, sites: Int64 = 1, label: Counts, numeric: [String: Numeric],
        categorical: [String: Counts]
    ) {
        self.rows = rows; self.minCount = minCount; self.sites = sites
        self.label = label; self.numeric = numeric; self.categorical = categorical
    }

    /// The canonical bytes: sorted keys, no white space, each number in the
    /// shortest form that reads back to the same double.
    public var encoded: Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try! encoder.encode(self)
    }

    /// The caps a statistics member is read under: far above a real table's
    /// (a few hundred columns, a few thousand categories), far below
    /// anything that costs memory.
    public static let maxBytes = 8 << 20
    public static let maxColumns = 10_000
    public static let maxCategories = 100_000

    /// Parses untrusted bytes: valid JSON with no duplicate keys, exactly
    /// these fields, every rule of `check`, and in canonical form, so that
    /// one set of statistics has one encoding.
    public static func parse(_ data: Data) throws -> DataStatistics {
        guard data.count <= maxBytes else { throw StatisticsError.invalid("over \(maxBytes >> 20) MiB") }
        do { _ = try StrictJSON.parse(data) } catch { throw StatisticsError.invalid("not valid JSON: \(error)") }
        let s: DataStatistics
        do { s = try JSONDecoder().decode(DataStatistics.self, from: data) } catch {
            throw StatisticsError.invalid("not the fields of fedbatch-bundle(5), STATISTICS: \(error)")
        }
        try s.check()
        guard s.encoded == data else {
            throw StatisticsError.invalid("not in canonical form (sorted keys, no white space, shortest numbers)")
        }
        return s
    }

    /// The rules every reader applies before using a number: counts not
    /// negative and adding up, moments finite and consistent (min ≤ mean ≤
    /// max, M2 ≥ 0) and present exactly when values were summarised, no
    /// count below the threshold released, names and sizes bounded.
    public func check() throws {
        let limit = Int64(Manifest.maxNumber)
        guard rows > 0, rows <= limit, minCount >= 1, minCount <= limit, sites >= 1, sites <= limit else {
            throw StatisticsError.invalid("rows, min_count and sites must be positive (and below 2^40)")
        }
        guard numeric.count + categorical.count <= Self.maxColumns else {
            throw StatisticsError.invalid("more than \(Self.maxColumns) columns")
        }
        func checkName(_ name: String, _ what: String) throws {
            guard !name.isEmpty, name.utf8.count <= 256, !name.unicodeScalars.contains(where: { $0.value < 0x20 })
            else {
                throw StatisticsError.invalid(
                    "\(what) \"\(name)\" is empty, over 256 bytes or holds control characters")
            }
        }
        func checkCounts(_ c: Counts, _ what: String) throws {
            guard c.counts.count <= Self.maxCategories else {
                throw StatisticsError.invalid("\(what): more than \(Self.maxCategories) values")
            }
            guard c.missing >= 0, c.missing <= rows else {
                throw StatisticsError.invalid("\(what): missing out of range")
            }
            var total = c.missing
            for (value, n) in c.counts {
                try checkName(value, "\(what): value")
                // A site releases no count below its threshold; a
                // combination adds released counts, so neither may hold one.
                guard n >= minCount, n <= rows else {
                    throw StatisticsError.invalid(
                        "\(what): the count of \"\(value)\", \(n), is below min_count or above rows")
                }
                total += n
            }
            guard total <= rows else { throw StatisticsError.invalid("\(what): counts add up to more than rows") }
        }
        try checkCounts(label, "label")
        for (name, c) in categorical {
            try checkName(name, "column")
            try checkCounts(c, "column \"\(name)\"")
        }
        for (name, n) in numeric {
            try checkName(name, "column")
            guard n.count >= 0, n.missing >= 0, n.withheld >= 0, n.count <= rows, n.missing <= rows,
                n.withheld <= rows, n.count + n.missing + n.withheld == rows
            else {
                throw StatisticsError.invalid("column \"\(name)\": count, missing and withheld must add up to rows")
            }
            let moments = [n.mean, n.meanError, n.m2, n.min, n.max]
            if n.count == 0 {
                guard moments.allSatisfy({ $0 == nil }) else {
                    throw StatisticsError.invalid("column \"\(name)\": moments without values")
                }
                continue
            }
            guard n.count >= minCount, let mean = n.mean, let error = n.meanError, let m2 = n.m2, let lo = n.min,
                let hi = n.max, moments.allSatisfy({ $0!.isFinite }), m2 >= 0, lo <= hi,
                // The low part of a double-double is at most half an ulp of the high.
                abs(error) <= mean.ulp
            else {
                throw StatisticsError.invalid(
                    "column \"\(name)\": a count of min_count or more with a finite mean, mean_error (below the "
                        + "mean's ulp), m2 ≥ 0, min and max")
            }
            // Values a model reads are float32 (training refuses others), and
            // M2 cannot exceed n·(max − min)²: with both bounds no combination
            // of many sites' moments can overflow a float64.
            let limit = Double(Float.greatestFiniteMagnitude)
            guard abs(lo) <= limit, abs(hi) <= limit, m2 <= Double(n.count) * (hi - lo) * (hi - lo) * (1 + 1e-9)
            else {
                throw StatisticsError.invalid(
                    "column \"\(name)\": min and max must be float32 numbers and m2 at most count·(max − min)²")
            }
            // Rounding can put a mean a hair outside [min, max]; more is a lie.
            let slack = 1e-9 * Swift.max(abs(lo), abs(hi), 1)
            guard mean >= lo - slack, mean <= hi + slack else {
                throw StatisticsError.invalid("column \"\(name)\": the mean \(mean) is outside [\(lo), \(hi)]")
            }
        }
        if !Set(numeric.keys).isDisjoint(with: categorical.keys) {
            throw StatisticsError.invalid("a column is both numeric and categorical")
        }
    }

    /// The statistics of the union of the two tables: counts added, and the
    /// moments by the pairwise update (Chan, Golub and LeVeque, 1979) in
    /// float64. Combining in a fixed order (the merge uses the bundles'
    /// digest order) gives the same bits on any machine.
    public func combined(with other: DataStatistics) throws -> DataStatistics {
        guard Set(numeric.keys) == Set(other.numeric.keys), Set(categorical.keys) == Set(other.categorical.keys)
        else {
            throw StatisticsError.invalid("the two tables do not have the same numeric and categorical columns")
        }
        func add(_ a: Counts, _ b: Counts) -> Counts {
            Counts(counts: a.counts.merging(b.counts, uniquingKeysWith: +), missing: a.missing + b.missing)
        }
        // Every count is at most its table's rows, so rows bound every sum.
        guard rows <= Int64(Manifest.maxNumber) - other.rows else {
            throw StatisticsError.invalid("the combined tables would hold more than 2^40 rows")
        }
        var out = DataStatistics(
            rows: rows + other.rows, minCount: Swift.min(minCount, other.minCount), sites: sites + other.sites,
            label: add(label, other.label), numeric: [:], categorical: [:])
        for (name, a) in categorical { out.categorical[name] = add(a, other.categorical[name]!) }
        for (name, a) in numeric { out.numeric[name] = Self.combine(a, other.numeric[name]!) }
        return out
    }

    static func combine(_ a: Numeric, _ b: Numeric) -> Numeric {
        var out = Numeric(count: a.count + b.count, missing: a.missing + b.missing, withheld: a.withheld + b.withheld)
        guard a.count > 0 else {
            (out.mean, out.meanError, out.m2, out.min, out.max) = (b.mean, b.meanError, b.m2, b.min, b.max)
            return out
        }
        guard b.count > 0 else {
            (out.mean, out.meanError, out.m2, out.min, out.max) = (a.mean, a.meanError, a.m2, a.min, a.max)
            return out
        }
        let na = Double(a.count), nb = Double(b.count), n = na + nb
        // δ from the double-double means: the difference of the high parts
        // is exact for nearby means (Sterbenz) and otherwise off by a
        // relative ulp of δ itself, which is harmless.
        let delta = (b.mean! - a.mean!) + (b.meanError! - a.meanError!)
        let (hi, lo) = DoubleDouble.add(a.mean!, a.meanError!, delta * (nb / n))
        out.mean = hi
        out.meanError = lo
        out.m2 = a.m2! + b.m2! + delta * delta * (na * nb / n)
        out.min = Swift.min(a.min!, b.min!)
        out.max = Swift.max(a.max!, b.max!)
        return out
    }

    /// The standardisation these statistics give a schema's features: each
    /// numeric feature's mean and population standard deviation (1 where it
    /// is 0, as scikit-learn's StandardScaler does for a constant column); 0
    /// and 1 for a categorical one, which is one-hot encoded and left as it
    /// is.
    public func normalisation(for schema: TabularSchema) throws -> (mean: [Double], std: [Double]) {
        var mean: [Double] = [], std: [Double] = []
        for f in schema.features {
            if schema.categories?[f] != nil {
                mean.append(0); std.append(1)
                continue
            }
            guard let n = numeric[f], let m = n.mean, let v = n.variance else {
                throw StatisticsError.invalid(
                    "column \"\(f)\" has no values in the statistics (every site withheld or lacked them)")
            }
            let s = v.squareRoot()
            mean.append(m)
            std.append(s > 0 && s.isFinite ? s : 1)
        }
        return (mean, std)
    }

    /// Whether these statistics describe `schema`'s table: its numeric
    /// features, its categorical features, each category one the schema
    /// pins, and labels it knows.
    public func check(against schema: TabularSchema) throws {
        let categorical = Set(schema.categories?.keys.map { $0 } ?? [])
        let numericFeatures = Set(schema.features).subtracting(categorical)
        guard Set(numeric.keys) == numericFeatures, Set(self.categorical.keys) == categorical else {
            throw StatisticsError.schema(
                "the statistics cover numeric columns \(numeric.keys.sorted()) and categorical "
                    + "\(self.categorical.keys.sorted()); the model's schema has \(numericFeatures.sorted()) and "
                    + "\(categorical.sorted())")
        }
        for (column, counts) in self.categorical {
            let pinned = Set(schema.categories![column]!)
            if let extra = counts.counts.keys.first(where: { !pinned.contains($0) }) {
                throw StatisticsError.schema("column \"\(column)\": \"\(extra)\" is not one of its pinned categories")
            }
        }
        if let labels = schema.labels, let extra = label.counts.keys.first(where: { !labels.contains($0) }) {
            throw StatisticsError.schema("label \"\(extra)\" is not in the model's label map")
        }
    }
}

/// Pairs of doubles (hi, lo) whose sum is a number to twice float64's
/// precision, from error-free transformations (Knuth's TwoSum).
enum DoubleDouble {
    /// a + b exactly, as the rounded sum and its rounding error.
    static func twoSum(_ a: Double, _ b: Double) -> (Double, Double) {
        let s = a + b
        let bb = s - a
        return (s, (a - (s - bb)) + (b - bb))
    }

    /// (hi + lo) + x, renormalised.
    static func add(_ hi: Double, _ lo: Double, _ x: Double) -> (Double, Double) {
        let (s, e) = twoSum(hi, x)
        return twoSum(s, e + lo)
    }
}

/// Why statistics were refused.
public enum StatisticsError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    /// The member breaks a rule of fedbatch-bundle(5), STATISTICS.
    case invalid(String)
    /// It does not describe the model's schema.
    case schema(String)
    /// The site holds fewer rows than its `[stats] min_count`.
    case tooFewRows(rows: Int, minCount: Int)
    /// The model has no tabular schema to describe.
    case noSchema

    public var code: String {
        switch self {
        case .invalid: return "stats.invalid"
        case .schema: return "stats.schema"
        case .tooFewRows: return "stats.min-count"
        case .noSchema: return "stats.no-schema"
        }
    }

    public var description: String {
        switch self {
        case .invalid(let why): return "statistics.json is invalid: \(why)"
        case .schema(let why): return "the statistics do not fit the model's schema: \(why)"
        case .noSchema:
            return
                "the model has no tabular schema (init collector --schema-from): statistics describe the columns of a "
                + "CSV table"
        case let .tooFewRows(rows, minCount):
            return
                "the data has \(rows) rows, fewer than [stats] min_count (\(minCount)): statistics of so few rows "
                + "would reveal them; nothing was written"
        }
    }
}

import FedBatchFormats
import FedBatchNative
import Foundation

extension DataStatistics {
    /// The statistics of a CSV table under a model's schema, as a site
    /// releases them: the columns mapped by name as training maps them (the
    /// pinned and the given `drop` left out, an unknown label or category
    /// refused as training refuses it), numbers read as float64, blank
    /// numeric or categorical cells counted as missing (whatever the
    /// schema's `missing` rule, since learning how many there are is what
    /// statistics are for). Moments take two passes over the column, each a
    /// compensated sum in row order: the mean to twice float64's precision,
    /// then the squared deviations from it, so that a column of 10⁶ ± 2
    /// keeps its variance's digits, and one file gives the same bits on any
    /// machine.
    ///
    /// A table of fewer than `minCount` rows is refused; a category or label
    /// value seen fewer than `minCount` times is left out, and so are the
    /// moments of a column with fewer than `minCount` values.
    public static func summarise(
        csv path: String, schema: TabularSchema, drop: [String] = [], delimiter: UInt8 = UInt8(ascii: ","),
        minCount: Int
    ) throws -> DataStatistics {
        try DataLoader.withCSV(path, delimiter: delimiter) { reader in
            try summarise(&reader, path: path, schema: schema, drop: drop, minCount: minCount)
        }
    }

    private static func summarise(
        _ reader: inout CSVReader, path: String, schema: TabularSchema, drop: [String], minCount: Int
    ) throws -> DataStatistics {
        guard let headerRecord = try reader.next() else { throw DataError(path: path, message: "empty file") }
        let header = headerRecord.fields.map { $0.trimmingCharacters(in: .whitespaces) }
        let (columns, labelIndex) = try schema.columns(of: header, drop: drop, path: path)
        // Each numeric column's values and blanks; counts per categorical one.
        var values = [[Double]](repeating: [], count: columns.count)
        var missing = [Int64](repeating: 0, count: columns.count)
        var counts = [[String: Int64]](repeating: [:], count: columns.count)
        var blanks = [Int64](repeating: 0, count: columns.count)
        var labels: [String: Int64] = [:]
        var rows: Int64 = 0
        let categorical: [[String]?] = columns.map { schema.categories?[header[$0]] }
        while let record = try reader.next() {
            let fields = try record.checkedFields(count: header.count, path: path), line = record.line
            let l = fields[labelIndex].trimmingCharacters(in: .whitespaces)
            guard schema.classIndex(l) != nil else {
                throw TabularSchema.unknownLabel(l, labels: schema.labels, column: schema.label, line: line, path: path)
            }
            labels[l, default: 0] += 1
            rows += 1
            for (k, c) in columns.enumerated() {
                let t = fields[c].trimmingCharacters(in: .whitespaces)
                if let categories = categorical[k] {
                    if t.isEmpty {
                        blanks[k] += 1
                    } else if categories.contains(t) {
                        counts[k][t, default: 0] += 1
                    } else if schema.unknownCategory == "ignore" {
                        // Encoded as zeros in training; here neither a
                        // category nor a blank, so not counted.
                        continue
                    } else {
                        throw TabularSchema.unknownCategory(
                            t, categories: categories, column: header[c], line: line, path: path)
                    }
                    continue
                }
                if t.isEmpty {
                    missing[k] += 1
                    continue
                }
                // Double(String) reads "1.5" the same in every locale.
                // Finite as float32 too, as training reads it.
                guard let x = Double(t), x.isFinite, Float(x).isFinite else {
                    throw DataError(
                        path: path, message: "line \(line), column \"\(header[c])\": \"\(t)\" is not a finite number")
                }
                values[k].append(x)
            }
        }
        guard rows >= minCount else { throw StatisticsError.tooFewRows(rows: Int(rows), minCount: minCount) }
        let threshold = Int64(minCount)
        let released = { (c: [String: Int64]) in c.filter { $0.value >= threshold } }
        var numeric: [String: Numeric] = [:], categoricalCounts: [String: Counts] = [:]
        for (k, c) in columns.enumerated() {
            let name = header[c]
            if categorical[k] != nil {
                categoricalCounts[name] = Counts(counts: released(counts[k]), missing: blanks[k])
                continue
            }
            let v = values[k], n = Int64(v.count)
            guard n >= threshold else {
                numeric[name] = Numeric(count: 0, missing: missing[k], withheld: n)
                continue
            }
            let (mean, meanError, m2) = moments(v)
            numeric[name] = Numeric(
                count: n, missing: missing[k], mean: mean, meanError: meanError, m2: m2, min: v.min()!, max: v.max()!)
        }
        let s = DataStatistics(
            rows: rows, minCount: threshold, label: Counts(counts: released(labels), missing: 0), numeric: numeric,
            categorical: categoricalCounts)
        try s.check()
        return s
    }

    /// The mean as a double-double and the sum of squared deviations from
    /// it: a compensated (Neumaier) sum for Σx, then Σd² and Σd over
    /// d = x − mean, with the usual correction (Σd)²/n for what the mean's
    /// last rounding leaves.
    static func moments(_ v: [Double]) -> (mean: Double, error: Double, m2: Double) {
        let n = Double(v.count)
        let (sumHi, sumLo) = compensatedSum(v)
        let hi = sumHi / n
        // The exact remainder of the division, less what the low part adds.
        let remainder = fmaRemainder(sumHi, hi, n) + sumLo
        let (mean, error) = DoubleDouble.twoSum(hi, remainder / n)
        var deviations: [Double] = [], squares: [Double] = []
        deviations.reserveCapacity(v.count)
        squares.reserveCapacity(v.count)
        for x in v {
            let d = (x - mean) - error
            deviations.append(d)
            squares.append(d * d)
        }
        let (sd, _) = compensatedSum(deviations)
        let (ss, ssLo) = compensatedSum(squares)
        return (mean, error, Swift.max(0, (ss + ssLo) - sd * sd / n))
    }

    /// sumHi − hi·n, exactly: the remainder of a rounded division is a
    /// double, and one fused multiply-add computes it without rounding.
    static func fmaRemainder(_ sumHi: Double, _ hi: Double, _ n: Double) -> Double {
        sumHi.addingProduct(-hi, n)
    }

    /// Neumaier's compensated sum, as (rounded sum, its correction).
    static func compensatedSum(_ v: [Double]) -> (Double, Double) {
        var s = 0.0, c = 0.0
        for x in v {
            let t = s + x
            c += abs(s) >= abs(x) ? (s - t) + x : (x - t) + s
            s = t
        }
        return DoubleDouble.twoSum(s, c)
    }
}

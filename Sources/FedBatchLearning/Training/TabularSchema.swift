import FedBatchFormats
import FedBatchNative
import Foundation

/// The columns a tabular model reads, pinned in every generation (the
/// member `schema.json`), so that a site's CSV is read by column name and
/// never silently by position: a hospital's file with two columns swapped
/// trains exactly as the unswapped one, and a missing or unknown column is
/// an error that names it.
///
/// Optionally each feature is standardised, (x − mean) / std, with the mean
/// and standard deviation fixed at `init collector` from a statistics file,
/// applied identically by every site and by `eval`.
public struct TabularSchema: Codable, Equatable, Sendable {
    public static let member = ContainerPath.schema

    /// The feature columns, in the order the model reads them.
    public let features: [String]
    /// The label column: integer class indices, or text mapped by `labels`.
    public let label: String
    public let mean: [Double]?
    public let std: [Double]?
    /// The label map: class i is `labels[i]` (`benign`, `malignant`); nil
    /// when the label column holds class indices.
    public let labels: [String]?
    /// Columns every command leaves out (an id), pinned with the schema.
    public let drop: [String]?
    /// What a blank feature cell becomes: nil or "refuse", an error; "mean",
    /// the feature's pinned mean (so 0 once standardised), which `--normalize`
    /// or `fedbatch stats --pin` pins (until then a blank cell is refused).
    /// A blank label is always an error.
    public let missing: String?
    /// Categorical features and their pinned categories, in order: each is
    /// one-hot encoded into as many inputs, in its place among the features
    /// (scikit-learn's OneHotEncoder with fixed categories).
    public let categories: [String: [String]]?
    /// What a category outside the pinned list becomes: nil or "error", an
    /// error naming it; "ignore", all zeros.
    public let unknownCategory: String?

    public static let missingRules = ["refuse", "mean"]

    enum CodingKeys: String, CodingKey {
        case features, label, mean, std, labels, drop, missing, categories
        case unknownCategory = "unknown_category"
    }

    /// The model's input width under this schema: one input per numeric
    /// feature, one per category of a categorical one.
    public var inputWidth: Int { features.reduce(0) { $0 + (categories?[$1]?.count ?? 1) } }

    public init(
        features: [String], label: String, mean: [Double]? = nil, std: [Double]? = nil, labels: [String]? = nil,
        drop: [String]? = nil, missing: String? = nil, categories: [String: [String]]? = nil,
        unknownCategory: String? = nil
    ) throws {
        if let categories {
            for (column, values) in categories {
                guard features.contains(column) else {
                    throw SchemaError("categorical column \"\(column)\" is not a feature")
                }
                guard !values.isEmpty, Set(values).count == values.count, values.allSatisfy({ !$0.isEmpty }) else {
                    throw SchemaError("categorical column \"\(column)\" needs distinct, non-empty categories")
                }
            }
        }
        guard unknownCategory == nil || ["error", "ignore"].contains(unknownCategory!) else {
            throw SchemaError("unknown_category must be \"error\" or \"ignore\"")
        }
        if let missing {
            guard Self.missingRules.contains(missing) else {
                throw SchemaError("missing must be \"refuse\" or \"mean\", not \"\(missing)\"")
            }
        }
        guard !features.isEmpty else { throw SchemaError("a schema needs at least one feature column") }
        guard Set(features).count == features.count else { throw SchemaError("feature columns are not unique") }
        guard !features.contains(label) else { throw SchemaError("the label column \"\(label)\" is also a feature") }
        if let labels {
            guard labels.count >= 2, Set(labels).count == labels.count, labels.allSatisfy({ !$0.isEmpty }) else {
                throw SchemaError("the label map needs two or more distinct, non-empty labels")
            }
        }
        if let drop {
            guard Set(drop).isDisjoint(with: features + [label]), Set(drop).count == drop.count else {
                throw SchemaError("a dropped column is also a feature or the label, or is listed twice")
            }
        }
        for name in features + [label] + (drop ?? [])
        where name.isEmpty || name.contains(",") || name.contains("\"")
            || name.unicodeScalars.contains(where: { $0.value < 0x20 })
        {
            throw SchemaError("column name \"\(name)\" is empty or holds a comma, a quote or a control character")
        }
        if (mean == nil) != (std == nil) { throw SchemaError("give both mean and std, or neither") }
        if let mean, let std {
            guard mean.count == features.count, std.count == features.count else {
                throw SchemaError("mean and std need one value per feature")
            }
            guard mean.allSatisfy(\.isFinite), std.allSatisfy({ $0.isFinite && $0 > 0 }) else {
                throw SchemaError("every mean must be finite and every std finite and positive")
            }
        }
        self.features = features
        self.label = label
        self.mean = mean
        self.std = std
        self.labels = labels
        self.drop = drop?.isEmpty == true ? nil : drop
        self.missing = missing == "refuse" ? nil : missing
        self.categories = categories?.isEmpty == true ? nil : categories
        self.unknownCategory = unknownCategory == "error" ? nil : unknownCategory
    }

    /// Canonical bytes: sorted keys, no spaces.
    public var encoded: Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try! encoder.encode(self)
    }

    /// Parses a generation's member; the checks of `init` apply.
    public static func parse(_ data: Data) throws -> TabularSchema {
        guard data.count <= 1 << 20 else { throw SchemaError("schema.json is over 1 MiB") }
        let raw: TabularSchema
        do { raw = try JSONDecoder().decode(TabularSchema.self, from: data) } catch {
            throw SchemaError("schema.json is not a valid schema: \(error)")
        }
        return try TabularSchema(
            features: raw.features, label: raw.label, mean: raw.mean, std: raw.std, labels: raw.labels, drop: raw.drop,
            missing: raw.missing, categories: raw.categories, unknownCategory: raw.unknownCategory)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        features = try c.decode([String].self, forKey: .features)
        label = try c.decode(String.self, forKey: .label)
        mean = try c.decodeIfPresent([Double].self, forKey: .mean)
        std = try c.decodeIfPresent([Double].self, forKey: .std)
        labels = try c.decodeIfPresent([String].self, forKey: .labels)
        drop = try c.decodeIfPresent([String].self, forKey: .drop)
        missing = try c.decodeIfPresent(String.self, forKey: .missing)
        categories = try c.decodeIfPresent([String: [String]].self, forKey: .categories)
        unknownCategory = try c.decodeIfPresent(String.self, forKey: .unknownCategory)
    }

    /// The class index of a label cell: its position in the label map, or
    /// the integer it is; nil when it is neither.
    func classIndex(_ cell: String) -> Int32? {
        guard let labels else { return Int32(cell) }
        return labels.firstIndex(of: cell).map(Int32.init)
    }

    /// A schema from a CSV file's header: every column but the label and
    /// the dropped ones is a feature, in the file's order. `stats` is a JSON
    /// object {"mean": {column: value}, "std": {column: value}} covering
    /// every feature, or nil for no standardisation.
    public static func fromCSVHeader(
        _ path: String, label: String, drop: [String], stats: Data?, delimiter: UInt8 = UInt8(ascii: ","),
        labels: [String]? = nil, missing: String? = nil, categories: [String: [String]]? = nil,
        unknownCategory: String? = nil
    ) throws -> TabularSchema {
        let header = try DataLoader.csvHeader(path, delimiter: delimiter)
        guard header.contains(label) else {
            throw SchemaError("\(path) has no column \"\(label)\" to use as the label")
        }
        for d in drop where !header.contains(d) { throw SchemaError("\(path) has no column \"\(d)\" to drop") }
        let features = header.filter { $0 != label && !drop.contains($0) }
        var mean: [Double]?, std: [Double]?
        if let stats {
            guard let object = try? JSONSerialization.jsonObject(with: stats) as? [String: Any],
                let m = object["mean"] as? [String: Any], let s = object["std"] as? [String: Any]
            else {
                throw SchemaError("the statistics file must be {\"mean\": {column: value}, \"std\": {column: value}}")
            }
            // A categorical feature is one-hot encoded and not standardised:
            // its entries are 0 and 1.
            mean = try features.map { f in
                if categories?[f] != nil { return 0 }
                guard let v = (m[f] as? NSNumber)?.doubleValue else {
                    throw SchemaError("the statistics file gives no mean for column \"\(f)\"")
                }
                return v
            }
            std = try features.map { f in
                if categories?[f] != nil { return 1 }
                guard let v = (s[f] as? NSNumber)?.doubleValue else {
                    throw SchemaError("the statistics file gives no std for column \"\(f)\"")
                }
                return v
            }
        }
        return try TabularSchema(
            features: features, label: label, mean: mean, std: std, labels: labels, drop: drop.isEmpty ? nil : drop,
            missing: missing, categories: categories, unknownCategory: unknownCategory)
    }

    /// The label map a CSV file's label column implies: nil when every
    /// value is an integer (class indices), else its distinct values,
    /// sorted (as scikit-learn's LabelEncoder orders them).
    public static func inferLabels(
        _ path: String, label: String, delimiter: UInt8 = UInt8(ascii: ",")
    ) throws -> [String]? {
        let values = try distinctValues(path, column: label, delimiter: delimiter, as: "the label")
        return values.allSatisfy({ Int32($0) != nil }) ? nil : values
    }

    /// The distinct non-blank values of `column` in a CSV file, sorted.
    private static func distinctValues(
        _ path: String, column: String, delimiter: UInt8, as role: String
    ) throws -> [String] {
        try DataLoader.withCSV(path, delimiter: delimiter) { reader in
            guard let header = try reader.next()?.fields.map({ $0.trimmingCharacters(in: .whitespaces) }),
                let index = header.firstIndex(of: column)
            else { throw SchemaError("\(path) has no column \"\(column)\" to use as \(role)") }
            var values = Set<String>()
            while let r = try reader.next() {
                if index < r.fields.count { values.insert(r.fields[index].trimmingCharacters(in: .whitespaces)) }
            }
            values.remove("")
            return values.sorted()
        }
    }

    /// Maps a CSV header onto the schema: for each feature, the column that
    /// holds it. Every column must be a feature, the label, or dropped.
    func columns(of header: [String], drop: [String], path: String) throws -> (features: [Int], label: Int) {
        var index: [String: Int] = [:]
        for (i, name) in header.enumerated() {
            if index[name] != nil {
                throw DataError(path: path, message: "column \"\(name)\" appears twice in the header")
            }
            index[name] = i
        }
        guard let labelColumn = index[label] else {
            throw DataError(path: path, message: "no label column \"\(label)\" (the model's schema names it)")
        }
        let missing = features.filter { index[$0] == nil }
        guard missing.isEmpty else {
            throw DataError(
                path: path,
                message: "missing \(Self.columns(missing)) that the model reads"
            )
        }
        let known = Set(features + [label] + drop + (self.drop ?? []))
        let extra = header.filter { !known.contains($0) }
        guard extra.isEmpty else {
            throw DataError(
                path: path,
                message: extra.count == 1
                    ? "\(Self.columns(extra)) is not in the model's schema; if it is not a feature (an id, say), "
                        + "leave it out with --drop"
                    : "\(Self.columns(extra)) are not in the model's schema; if they are not features (an id, say), "
                        + "leave them out with --drop"
            )
        }
        return (features.map { index[$0]! }, labelColumn)
    }

    /// A label cell that is not a class: the one refusal of training,
    /// evaluation and statistics alike.
    static func unknownLabel(_ cell: String, labels: [String]?, column: String, line: Int, path: String) -> DataError {
        let expected = labels.map { "one of the model's labels (\($0.joined(separator: ", ")))" } ?? "an integer label"
        return DataError(path: path, message: "line \(line), column \"\(column)\": \"\(cell)\" is not \(expected)")
    }

    /// A categorical cell outside the pinned categories, where the schema
    /// does not ignore such values.
    static func unknownCategory(
        _ cell: String, categories: [String], column: String, line: Int, path: String
    ) -> DataError {
        DataError(
            path: path,
            message: "line \(line), column \"\(column)\": \"\(cell)\" is not one of its categories "
                + "(\(categories.joined(separator: ", "))); init collector --unknown-category ignore encodes such a "
                + "value as all zeros")
    }

    /// `column "a"` or `columns "a", "b"`, for messages.
    static func columns(_ names: [String]) -> String {
        "column\(names.count == 1 ? "" : "s") " + names.map { "\"\($0)\"" }.joined(separator: ", ")
    }

    /// (x − mean) / std, input by input, when the schema standardises; a
    /// categorical feature's one-hot inputs are left as they are.
    func standardise(_ features: inout [Float], width: Int) {
        guard let mean, let std else { return }
        var m: [Float] = [], s: [Float] = []
        for (j, f) in self.features.enumerated() {
            let k = categories?[f]?.count ?? 1
            m += [Float](repeating: k == 1 && categories?[f] == nil ? Float(mean[j]) : 0, count: k)
            s += [Float](repeating: k == 1 && categories?[f] == nil ? Float(1 / std[j]) : 1, count: k)
        }
        for i in features.indices { let j = i % width; features[i] = (features[i] - m[j]) * s[j] }
    }

    /// The distinct non-blank values of `column` in a CSV file, sorted: the
    /// categories `init collector --categorical` pins.
    public static func inferCategories(
        _ path: String, column: String, delimiter: UInt8 = UInt8(ascii: ",")
    ) throws -> [String] {
        try distinctValues(path, column: column, delimiter: delimiter, as: "a categorical feature")
    }
}

public struct SchemaError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public let description: String
    package init(_ d: String) { description = d }
    public var code: String { "usage.schema" }
}

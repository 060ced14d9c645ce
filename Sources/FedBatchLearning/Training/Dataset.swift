import FedBatchFormats
import FedBatchNative
import Foundation

/// Why a dataset could not be loaded: names the file and, where it applies,
/// the row or field at fault.
public struct DataError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public let path: String
    public let message: String
    public var description: String { "\(path): \(message)" }
    public var code: String { "data.invalid" }
}

/// Labelled examples in memory: `features` is row-major [count × width],
/// scaled to floats; `labels` are class indices.
public struct Dataset: Sendable {
    public let features: [Float]
    public let labels: [Int32]
    public let width: Int
    /// The raw u8 pixels when the source was u8 (kept so that shards stay u8).
    public let rawBytes: [UInt8]?
    /// Blank CSV cells filled with the schema's pinned means.
    public var imputed = 0

    public var count: Int { labels.count }

    public init(features: [Float], labels: [Int32], width: Int, rawBytes: [UInt8]? = nil) {
        precondition(features.count == labels.count * width)
        self.features = features
        self.labels = labels
        self.width = width
        self.rawBytes = rawBytes
    }

    /// From u8 pixels, scaled to [0, 1].
    public init(pixels: [UInt8], labels: [Int32], width: Int) {
        self.init(features: pixels.map { Float($0) * (1 / 255) }, labels: labels, width: width, rawBytes: pixels)
    }

    /// Count of each label, for labels 0..<classes.
    public func labelCounts(classes: Int) -> [Int] {
        var c = [Int](repeating: 0, count: classes)
        for l in labels where Int(l) < classes && l >= 0 { c[Int(l)] += 1 }
        return c
    }

    /// The examples at `indices`, in that order.
    public func subset(_ indices: [Int]) -> Dataset {
        var f = [Float]()
        f.reserveCapacity(indices.count * width)
        var raw: [UInt8]? = rawBytes.map { _ in [] }
        raw?.reserveCapacity(indices.count * width)
        for i in indices {
            f.append(contentsOf: features[(i * width)..<((i + 1) * width)])
            if let r = rawBytes { raw!.append(contentsOf: r[(i * width)..<((i + 1) * width)]) }
        }
        return Dataset(features: f, labels: indices.map { labels[$0] }, width: width, rawBytes: raw)
    }

    /// The first `n` examples (for quick runs and tests).
    public func prefix(_ n: Int) -> Dataset { subset(Array(0..<min(n, count))) }

    /// Sets aside `fraction` of the examples, chosen by a fixed shuffle so
    /// that the same examples are held out every run: (the rest, the held
    /// out), each in the data's order. At least one example stays on each
    /// side when there are two or more.
    public func holdingOut(_ fraction: Double) -> (rest: Dataset, heldOut: Dataset) {
        guard fraction > 0, count >= 2 else { return (self, subset([])) }
        let n = min(count - 1, max(1, Int((Double(count) * fraction).rounded())))
        var order = Array(0..<count)
        var rng = SeededRandom(seed: 0x4845_4C44_4F55_5421)
        order.shuffle(using: &rng)
        let held = Set(order.prefix(n))
        return (subset((0..<count).filter { !held.contains($0) }), subset(order.prefix(n).sorted()))
    }

    /// Checks that the data fits a model: the feature width and every label.
    public func check(against arch: ModelArchitecture, path: String) throws {
        guard count > 0 else { throw DataError(path: path, message: "holds no examples") }
        guard width == arch.inputWidth else {
            throw DataError(
                path: path, message: "examples have \(width) features; the model \(arch) expects \(arch.inputWidth)")
        }
        if let bad = labels.firstIndex(where: { $0 < 0 || Int($0) >= arch.classes }) {
            throw DataError(
                path: path,
                message: "example \(bad) has label \(labels[bad]), outside 0..\(arch.classes - 1) for \(arch)")
        }
    }
}

/// Which part of an IDX dataset to read.
public enum DataSplit: String, Sendable, CaseIterable {
    case train, test
}

/// Loads the three `--data` forms: a directory of IDX files, a CSV file with
/// a header and a label column, or a safetensors shard with `x` and `y`.
public enum DataLoader {
    /// 2^31 bytes: far above Fashion-MNIST, far below what would hurt the machine.
    static let maxBytes: Int64 = 1 << 31

    /// With a `schema`, a CSV file is read by column name (see
    /// `TabularSchema`), `drop` naming columns to leave out; without one, by
    /// position, every column but the label being a feature.
    public static func load(
        _ path: String, split: DataSplit = .train, labelColumn: String = "label",
        schema: TabularSchema? = nil, drop: [String] = [], delimiter: UInt8 = UInt8(ascii: ",")
    ) throws -> Dataset {
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError(path: path, message: "no such file or directory")
        }
        if isDirectory(atPath: path) { return try loadIDX(directory: path, split: split) }
        if path.hasSuffix(".csv") || path.hasSuffix(".csv.gz") {
            if schema == nil, !drop.isEmpty {
                throw DataError(
                    path: path, message: "--drop needs a model with a tabular schema (init collector --schema-from)")
            }
            return try loadCSV(path, labelColumn: labelColumn, schema: schema, drop: drop, delimiter: delimiter)
        }
        if path.hasSuffix(".safetensors") { return try loadShard(path) }
        throw DataError(
            path: path, message: "unknown data form: give a directory of IDX files, a .csv file or a .safetensors shard"
        )
    }

    // MARK: IDX

    static func loadIDX(directory: String, split: DataSplit) throws -> Dataset {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let prefix = split == .train ? "train" : "t10k"
        func find(_ kind: String) throws -> String {
            let candidates = names.filter {
                $0.hasPrefix(prefix) && ($0.hasSuffix("-\(kind)-ubyte") || $0.hasSuffix("-\(kind)-ubyte.gz"))
            }.sorted()
            guard let name = candidates.first else {
                throw DataError(
                    path: directory, message: "no \(prefix)-*-\(kind)-ubyte[.gz] file for the \(split.rawValue) split")
            }
            return "\(directory)/\(name)"
        }
        let imagesPath = try find("images-idx3"), labelsPath = try find("labels-idx1")
        let (imageDims, pixels) = try readIDX(imagesPath)
        let (labelDims, labelBytes) = try readIDX(labelsPath)
        guard imageDims.count >= 2 else {
            throw DataError(path: imagesPath, message: "expected an image array of rank 3, got rank \(imageDims.count)")
        }
        guard labelDims.count == 1 else {
            throw DataError(path: labelsPath, message: "expected a label vector, got rank \(labelDims.count)")
        }
        guard imageDims[0] == labelDims[0] else {
            throw DataError(
                path: labelsPath, message: "\(labelDims[0]) labels for \(imageDims[0]) images in \(imagesPath)")
        }
        let width = imageDims.dropFirst().reduce(1, *)
        return Dataset(pixels: pixels, labels: labelBytes.map { Int32($0) }, width: width)
    }

    /// IDX: 2 zero bytes, a type byte (0x08 = u8), a rank byte, big-endian
    /// u32 dimensions, then the data.
    static func readIDX(_ path: String) throws -> ([Int], [UInt8]) {
        let data: Data
        do { data = try readMaybeGzip(path, cap: maxBytes) } catch let e as FileError {
            throw DataError(path: path, message: e.message)
        }
        return try parseIDX([UInt8](data), path: path)
    }

    /// The IDX parser itself, on bytes in memory (also a fuzz target).
    public static func parseIDX(_ bytes: [UInt8], path: String) throws -> ([Int], [UInt8]) {
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else {
            throw DataError(path: path, message: "not an IDX file (bad magic)")
        }
        guard bytes[2] == 0x08 else {
            throw DataError(
                path: path,
                message: String(format: "IDX element type 0x%02x is not supported (only 0x08, unsigned byte)", bytes[2])
            )
        }
        let rank = Int(bytes[3])
        guard rank >= 1, rank <= 4, bytes.count >= 4 + 4 * rank else {
            throw DataError(path: path, message: "IDX header is truncated or has rank \(rank)")
        }
        let dims = (0..<rank).map { i in bytes[(4 + 4 * i)..<(8 + 4 * i)].reduce(0) { $0 << 8 | Int($1) } }
        let start = 4 + 4 * rank
        // Four 32-bit dimensions can multiply past Int.max: count with
        // overflow checks, and any product above the data present is wrong.
        var n = 1
        for d in dims {
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            guard !overflow, p <= bytes.count else {
                throw DataError(
                    path: path,
                    message:
                        "IDX header declares dimensions \(dims), far more than the \(bytes.count - start) bytes of "
                        + "data the file holds"
                )
            }
            n = p
        }
        guard bytes.count - start == n else {
            throw DataError(
                path: path,
                message: "IDX header declares \(dims) = \(n) bytes of data, the file holds \(bytes.count - start)")
        }
        return (dims, Array(bytes[start...]))
    }

    // MARK: CSV

    /// A header row, then one example per row (RFC 4180, see `CSVReader`);
    /// the label column holds integer class indices, the feature columns
    /// numbers, used as they are unless the model's schema standardises
    /// them.
    static func loadCSV(
        _ path: String, labelColumn: String, schema: TabularSchema? = nil, drop: [String] = [],
        delimiter: UInt8 = UInt8(ascii: ",")
    ) throws -> Dataset {
        try withCSV(path, delimiter: delimiter) { reader in
            try parseCSV(&reader, path: path, labelColumn: labelColumn, schema: schema, drop: drop)
        }
    }

    /// Runs `body` over the records of a CSV file (gzipped or not, at most
    /// `maxBytes`): an unreadable file or a malformed record is a
    /// `DataError` naming the file. Every reader of the home's CSV files
    /// (training, eval, statistics, the schema's inferences) comes here.
    package static func withCSV<R>(
        _ path: String, delimiter: UInt8, _ body: (inout CSVReader) throws -> R
    ) throws -> R {
        let data: Data
        do { data = try readMaybeGzip(path, cap: maxBytes) } catch let e as FileError {
            throw DataError(path: path, message: e.message)
        }
        return try withCSV(data, path: path, delimiter: delimiter, body)
    }

    /// `withCSV` on bytes in memory.
    static func withCSV<R>(
        _ data: Data, path: String, delimiter: UInt8, _ body: (inout CSVReader) throws -> R
    ) throws
        -> R
    {
        var reader = CSVReader(data, delimiter: delimiter)
        do { return try body(&reader) } catch let e as CSVReader.Malformed {
            throw DataError(path: path, message: "\(e)")
        }
    }

    /// A CSV file's header, the names trimmed.
    public static func csvHeader(_ path: String, delimiter: UInt8 = UInt8(ascii: ",")) throws -> [String] {
        try withCSV(path, delimiter: delimiter) { reader in
            guard let header = try reader.next() else { throw DataError(path: path, message: "no header line") }
            return header.fields.map { $0.trimmingCharacters(in: .whitespaces) }
        }
    }

    /// The CSV parser itself, on bytes in memory (also a fuzz target).
    /// Without a schema, every column but `labelColumn` is a feature, in
    /// order; with one, columns are mapped by name (`TabularSchema`) and
    /// standardised as it says. Errors name the line of the file (quoted
    /// fields may span lines) and the column.
    public static func parseCSV(
        _ data: Data, path: String, labelColumn: String = "label",
        schema: TabularSchema? = nil, drop: [String] = [], delimiter: UInt8 = UInt8(ascii: ",")
    ) throws -> Dataset {
        try withCSV(data, path: path, delimiter: delimiter) { reader in
            try parseCSV(&reader, path: path, labelColumn: labelColumn, schema: schema, drop: drop)
        }
    }

    private static func parseCSV(
        _ reader: inout CSVReader, path: String, labelColumn: String, schema: TabularSchema?, drop: [String]
    ) throws -> Dataset {
        guard let headerRecord = try reader.next() else { throw DataError(path: path, message: "empty file") }
        let header = headerRecord.fields.map { $0.trimmingCharacters(in: .whitespaces) }
        let columns: [Int], labelIndex: Int, labelName: String
        if let schema {
            (columns, labelIndex) = try schema.columns(of: header, drop: drop, path: path)
            labelName = schema.label
        } else {
            guard let index = header.firstIndex(of: labelColumn) else {
                throw DataError(
                    path: path, message: "no column named \"\(labelColumn)\" in the header (use --label-column)")
            }
            (columns, labelIndex, labelName) = (header.indices.filter { $0 != index }, index, labelColumn)
        }
        var features: [Float] = []
        var labels: [Int32] = []
        var imputed = 0
        // Column c's pinned mean, for a schema that imputes blank cells.
        let means: [Int: Float] =
            schema?.missing == "mean" && schema?.mean != nil
            ? Dictionary(uniqueKeysWithValues: zip(columns, schema!.mean!.map(Float.init))) : [:]
        // Per feature column: its pinned categories, if it is categorical.
        let categorical: [[String]?] = columns.map { c in schema?.categories?[header[c]] }
        let width = schema?.inputWidth ?? columns.count
        while let record = try reader.next() {
            let fields = try record.checkedFields(count: header.count, path: path), line = record.line
            let l = fields[labelIndex].trimmingCharacters(in: .whitespaces)
            guard let label = schema?.classIndex(l) ?? (schema == nil ? Int32(l) : nil) else {
                throw TabularSchema.unknownLabel(l, labels: schema?.labels, column: labelName, line: line, path: path)
            }
            labels.append(label)
            for (k, c) in columns.enumerated() {
                // Float(String) reads "1.5" the same in every locale.
                let t = fields[c].trimmingCharacters(in: .whitespaces)
                if let categories = categorical[k] {
                    // One-hot, in the pinned order; an unseen (or blank)
                    // category is an error, or all zeros under "ignore".
                    var slots = [Float](repeating: 0, count: categories.count)
                    if let i = categories.firstIndex(of: t) {
                        slots[i] = 1
                    } else if schema?.unknownCategory != "ignore" {
                        throw TabularSchema.unknownCategory(
                            t, categories: categories, column: header[c], line: line, path: path)
                    }
                    features += slots
                    continue
                }
                if t.isEmpty {
                    guard let m = means[c] else {
                        throw DataError(
                            path: path,
                            message: "line \(line), column \"\(header[c])\": the cell is blank, and "
                                + (schema?.missing == "mean"
                                    ? "the model's schema imputes the pinned means but none are pinned yet (the "
                                        + "collector pins them with fedbatch stats --pin)"
                                    : "the model's schema refuses missing values (init collector --missing mean "
                                        + "imputes them)"))
                    }
                    features.append(m)
                    imputed += 1
                    continue
                }
                guard let v = Float(t), v.isFinite else {
                    throw DataError(
                        path: path, message: "line \(line), column \"\(header[c])\": \"\(t)\" is not a finite number")
                }
                features.append(v)
            }
        }
        guard !labels.isEmpty else { throw DataError(path: path, message: "no data rows") }
        schema?.standardise(&features, width: width)
        var dataset = Dataset(features: features, labels: labels, width: width)
        dataset.imputed = imputed
        return dataset
    }

    // MARK: safetensors shards

    /// `x` [N, D] as U8 (scaled to [0, 1]) or F32/F16/BF16, and `y` [N] integers.
    static func loadShard(_ path: String) throws -> Dataset {
        let file: SafetensorsFile
        do { file = try SafetensorsFile.open(path: path, cap: maxBytes) } catch {
            throw DataError(path: path, message: "\(error)")
        }
        guard let x = file.tensor("x") else {
            throw DataError(path: path, message: "no tensor \"x\" (features, [N, D])")
        }
        guard let y = file.tensor("y") else { throw DataError(path: path, message: "no tensor \"y\" (labels, [N])") }
        guard x.shape.count == 2 else {
            throw DataError(path: path, message: "tensor \"x\" has shape \(x.shape); expected [N, D]")
        }
        guard y.shape == [x.shape[0]] else {
            throw DataError(path: path, message: "tensor \"y\" has shape \(y.shape); expected [\(x.shape[0])]")
        }
        guard let labels = y.integers() else {
            throw DataError(path: path, message: "tensor \"y\" is \(y.dtype.rawValue); labels must be an integer dtype")
        }
        if let bad = labels.firstIndex(where: { $0 < 0 || $0 > Int64(Int32.max) }) {
            throw DataError(path: path, message: "label \(bad) is \(labels[bad])")
        }
        let l32 = labels.map { Int32($0) }
        switch x.dtype {
        case .u8: return Dataset(pixels: [UInt8](x.data), labels: l32, width: x.shape[1])
        case .f32, .f16, .bf16:
            guard x.allFinite() else {
                throw DataError(path: path, message: "tensor \"x\" holds NaN or infinite values")
            }
            return Dataset(features: x.floats(), labels: l32, width: x.shape[1])
        default:
            throw DataError(
                path: path, message: "tensor \"x\" is \(x.dtype.rawValue); features must be U8, F32, F16 or BF16")
        }
    }
}

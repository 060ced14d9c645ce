import FedBatchFormats
import FedBatchLearning
import Foundation
import TOMLKit

/// How the home's CSV files are written: the `[data]` table, used by every
/// command that reads one (train, eval, check, the collector's `[eval]`).
public struct DataSettings: Sendable, Equatable {
    /// The field delimiter: `,` (the default), `;`, `|` or a tab.
    public var delimiter = UInt8(ascii: ",")
    public init() {}

    static let keys: Set<String> = ["delimiter"]

    static func parse(_ value: TOMLValueConvertible, path: String, text: String) throws -> DataSettings {
        let s = try ConfigSection(value, name: "data", allowed: keys, path: path, text: text)
        var d = DataSettings()
        if let text = try s.string("delimiter", "one of \",\", \";\", \"|\" or \"\\t\"") {
            guard let b = CSVReader.delimiter(text) else {
                throw s.invalid("delimiter", must: "one of \",\", \";\", \"|\" or \"\\t\"")
            }
            d.delimiter = b
        }
        return d
    }

    func render() -> [String] {
        // StrictJSON.quote writes a tab as \t, which TOML reads back as a tab.
        let shown = String(UnicodeScalar(delimiter))
        return [
            "", "# How CSV files are written (RFC 4180 quoting is always understood): the field delimiter,",
            "# \",\" (the default), \";\", \"|\" or \"\\t\".", "[data]", "delimiter = \(StrictJSON.quote(shown))",
        ]
    }
}

import FedBatchFormats
import Foundation

/// Comma-separated values as RFC 4180 writes them, and as spreadsheets and
/// Python's `csv` module export them: a field may be quoted, and a quoted
/// field may hold the delimiter, a line break, or a quote written twice;
/// records end with LF or CRLF; a UTF-8 byte-order mark at the start is
/// dropped; blank lines are skipped. Unquoted fields are taken as they are
/// (their surrounding spaces are trimmed by the reader of the values).
public struct CSVReader {
    /// One record and the 1-based line of the file it starts on, which is
    /// what an error names (a quoted field may span lines).
    public struct Record {
        public let line: Int
        public let fields: [String]

        /// The fields, refused unless there are as many as the header's.
        func checkedFields(count: Int, path: String) throws -> [String] {
            guard fields.count == count else {
                throw DataError(path: path, message: "line \(line) has \(fields.count) fields; the header has \(count)")
            }
            return fields
        }
    }

    /// Why the bytes are not CSV.
    public struct Malformed: Error, CustomStringConvertible {
        public let line: Int
        public let reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    private let bytes: [UInt8]
    private let delimiter: UInt8
    private var pos = 0
    private var line = 1

    /// `delimiter` is one ASCII byte: `,` by default; `;` and tab are common.
    public init(_ data: Data, delimiter: UInt8 = UInt8(ascii: ",")) {
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        self.bytes = bytes
        self.delimiter = delimiter
    }

    /// The next record, or nil at the end. A blank line is no record.
    public mutating func next() throws -> Record? {
        while pos < bytes.count, bytes[pos] == 0x0A || bytes[pos] == 0x0D {
            if bytes[pos] == 0x0A { line += 1 }
            pos += 1
        }
        guard pos < bytes.count else { return nil }
        let start = line
        var fields: [String] = []
        var field: [UInt8] = []
        while true {
            if pos < bytes.count, bytes[pos] == 0x22, field.isEmpty {
                // A quoted field (the quote opens the field): up to the
                // closing quote; "" is one quote.
                pos += 1
                while true {
                    guard pos < bytes.count else {
                        throw Malformed(line: start, reason: "a quoted field is never closed")
                    }
                    let b = bytes[pos]
                    pos += 1
                    if b == 0x22 {
                        if pos < bytes.count, bytes[pos] == 0x22 {
                            field.append(0x22)
                            pos += 1
                            continue
                        }
                        break
                    }
                    if b == 0x0A { line += 1 }
                    field.append(b)
                }
                // The closing quote ends the field: a delimiter or the end
                // of the record must follow (as Python's csv reads it strictly).
                if pos < bytes.count, bytes[pos] != delimiter, bytes[pos] != 0x0A, bytes[pos] != 0x0D {
                    throw Malformed(
                        line: line,
                        reason: "text after a quoted field's closing quote (a quote inside a field is "
                            + "written twice: \"\")")
                }
                if pos < bytes.count, bytes[pos] == delimiter {
                    fields.append(try string(field, line: start))
                    field.removeAll()
                    pos += 1
                    // A delimiter at the very end leaves one more, empty, field.
                    if pos >= bytes.count || bytes[pos] == 0x0A || bytes[pos] == 0x0D {
                        fields.append("")
                        return try endRecord(fields, start: start)
                    }
                    continue
                }
                fields.append(try string(field, line: start))
                return try endRecord(fields, start: start)
            }
            if pos >= bytes.count || bytes[pos] == 0x0A || bytes[pos] == 0x0D {
                fields.append(try string(field, line: start))
                return try endRecord(fields, start: start)
            }
            if bytes[pos] == delimiter {
                fields.append(try string(field, line: start))
                field.removeAll()
                pos += 1
                continue
            }
            // A quote later in an unquoted field is an ordinary character.
            field.append(bytes[pos])
            pos += 1
        }
    }

    /// Consumes the record's line ending (LF, CRLF or a lone CR).
    private mutating func endRecord(_ fields: [String], start: Int) throws -> Record {
        if pos < bytes.count, bytes[pos] == 0x0D { pos += 1 }
        if pos < bytes.count, bytes[pos] == 0x0A { pos += 1 }
        line += 1
        return Record(line: start, fields: fields)
    }

    private func string(_ bytes: [UInt8], line: Int) throws -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw Malformed(line: line, reason: "a field is not UTF-8 text")
        }
        return s
    }

    /// The delimiter a `[data] delimiter` setting or a `--delimiter` option
    /// names: one character, `,`, `;`, `|` or a tab (a tab character, or
    /// `\t` as a command line writes it).
    public static func delimiter(_ text: String) -> UInt8? {
        if text == "\\t" { return 0x09 }
        guard text.utf8.count == 1, let b = text.utf8.first, [0x2C, 0x3B, 0x7C, 0x09].contains(b) else { return nil }
        return b
    }
}

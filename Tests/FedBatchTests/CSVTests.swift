import FedBatchFormats
import FedBatchLearning
import FedBatchTestSupport
import Foundation
import Testing

/// CSV as RFC 4180 writes it and spreadsheets and Python's csv module export it.
@Suite("CSV reading")
struct CSVTests {
    static func records(_ text: String, delimiter: String = ",") throws -> [(Int, [String])] {
        var reader = CSVReader(Data(text.utf8), delimiter: CSVReader.delimiter(delimiter)!)
        var out: [(Int, [String])] = []
        while let r = try reader.next() { out.append((r.line, r.fields)) }
        return out
    }

    @Test("quoted fields hold delimiters, doubled quotes and line breaks; CRLF, a BOM and blank lines are handled")
    func quoting() throws {
        let text =
            "\u{FEFF}\"id\",\"note\",\"x\",\"label\"\r\n\"a,1\",\"said \"\"hi\"\"\",\"1.5\",\"0\"\r\n\r\n"
            + "b2,\"two\nlines\", -2 ,1\n\"c\",\"\",3e2,\"1\""
        let r = try Self.records(text)
        #expect(r.map(\.0) == [1, 2, 4, 6])
        #expect(r[0].1 == ["id", "note", "x", "label"])
        #expect(r[1].1 == ["a,1", "said \"hi\"", "1.5", "0"])
        #expect(r[2].1 == ["b2", "two\nlines", " -2 ", "1"])
        #expect(r[3].1 == ["c", "", "3e2", "1"])
    }

    @Test("a semicolon or a tab separates fields when the home says so; commas are then plain text")
    func delimiters() throws {
        #expect(try Self.records("a;b\n1,5;2\n", delimiter: ";")[1].1 == ["1,5", "2"])
        #expect(try Self.records("a\tb\n\"x\ty\"\t2\n", delimiter: "\t")[1].1 == ["x\ty", "2"])
        #expect(CSVReader.delimiter("::") == nil && CSVReader.delimiter("x") == nil)
        // A command line writes a tab as \t.
        #expect(CSVReader.delimiter("\\t") == 0x09 && CSVReader.delimiter("\t") == 0x09)
    }

    @Test(
        "malformed CSV is refused with the line it starts on",
        arguments: [
            ("a,b\n\"open,2\n3,4\n", "line 2: a quoted field is never closed"),
            ("a,b\n\"x\"y,2\n", "line 2: text after a quoted field's closing quote"),
        ])
    func malformed(text: String, message: String) {
        #expect { try Self.records(text) } throws: { "\($0)".contains(message) }
    }

    @Test("the dataset reader names the line of the file, past quoted line breaks, and the column")
    func datasetErrors() {
        // A header name may span lines too.
        let text = "\"width\n(cm)\",label\n1.5,0\nwide,1\n"
        #expect { try DataLoader.parseCSV(Data(text.utf8), path: "t.csv") } throws: {
            "\($0)".contains("line 4, column \"width\n(cm)\": \"wide\" is not a finite number")
        }
    }

    @Test("30 crafted files read as Python's csv module reads them, strictly: the same cells, or the same refusal")
    func differential() throws {
        let dir = TempDir()
        let out = dir.file("cases.json")
        let made = try Subprocess.python("csv_differential.py", [out])
        #expect(made.status == 0, "\(made.err)")
        let cases = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [[String: Any]])
        #expect(cases.count == 30)
        for c in cases {
            let name = c["name"] as! String
            let data = try #require(Data(base64Encoded: c["data"] as! String))
            var reader = CSVReader(data, delimiter: CSVReader.delimiter(c["delimiter"] as! String)!)
            var rows: [[String]]? = []
            do {
                while let r = try reader.next() { rows!.append(r.fields) }
            } catch {
                rows = nil
            }
            let expected = c["rows"] as? [[String]]
            #expect(
                rows == expected,
                "\(name): fedbatch \(String(describing: rows)), Python \(String(describing: expected))")
        }
    }
}

@Suite("categorical columns")
struct CategoricalTests {
    @Test("a categorical column is one-hot encoded in its place, in the pinned order; numeric ones are standardised")
    func oneHot() throws {
        let schema = try TabularSchema(
            features: ["x", "ward", "y"], label: "label", mean: [1, 0, 10], std: [2, 1, 5],
            categories: ["ward": ["A", "B", "C"]])
        #expect(schema.inputWidth == 5)
        let csv = "label,ward,x,y,id\n0,B,3,10,a\n1,C,1,20,b\n"
        let d = try DataLoader.parseCSV(Data(csv.utf8), path: "t.csv", schema: schema, drop: ["id"])
        #expect(d.width == 5 && d.labels == [0, 1])
        #expect(d.features == [1, 0, 1, 0, 0, 0, 0, 0, 1, 2])
        #expect {
            try DataLoader.parseCSV(Data("label,ward,x,y\n0,D,1,1\n".utf8), path: "t.csv", schema: schema)
        } throws: { "\($0)".contains("line 2, column \"ward\": \"D\" is not one of its categories (A, B, C)") }
        let ignoring = try TabularSchema(
            features: ["x", "ward", "y"], label: "label", categories: ["ward": ["A", "B", "C"]],
            unknownCategory: "ignore")
        let zeros = try DataLoader.parseCSV(Data("label,ward,x,y\n0,D,1,1\n".utf8), path: "t.csv", schema: ignoring)
        #expect(zeros.features == [1, 0, 0, 0, 1])
        // The pinned form: snake_case, and nothing new in a schema without categories.
        let json = String(decoding: ignoring.encoded, as: UTF8.self)
        #expect(json.contains("\"unknown_category\":\"ignore\"") && json.contains("\"categories\":{\"ward\""))
        let plain = try TabularSchema(features: ["x"], label: "label")
        #expect(String(decoding: plain.encoded, as: UTF8.self) == "{\"features\":[\"x\"],\"label\":\"label\"}")
        #expect(try TabularSchema.parse(ignoring.encoded) == ignoring)
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Builds a safetensors file from a literal header and data section.
private func file(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> Data {
    var out = Data()
    let h = Array(header.utf8)
    withUnsafeBytes(of: (declaredLength ?? UInt64(h.count)).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: h)
    out.append(contentsOf: data)
    return out
}

private func refusal(_ bytes: Data) -> SafetensorsError? {
    do { _ = try SafetensorsFile(bytes: bytes); return nil } catch let e as SafetensorsError { return e } catch {
        return nil
    }
}

@Suite("SafetensorsFile")
struct SafetensorsTests {
    @Test("every dtype round-trips through the writer and reader")
    func roundTrip() throws {
        var tensors: [(name: String, tensor: Tensor)] = []
        for (i, d) in DType.allCases.enumerated() {
            let bytes = Data((0..<(6 * d.byteSize)).map { UInt8(truncatingIfNeeded: $0 * 37 + i) })
            tensors.append(("t\(i).\(d.rawValue)", try Tensor(dtype: d, shape: [2, 3], data: bytes)))
        }
        tensors.append(("scalar", Tensor(shape: [], floats: [1.5])))
        tensors.append(("empty", Tensor(shape: [0, 7], floats: [])))
        let encoded = SafetensorsWriter.encode(tensors, metadata: ["format": "pt"])
        #expect(encoded == SafetensorsWriter.encode(tensors, metadata: ["format": "pt"]))
        let read = try SafetensorsFile(bytes: encoded)
        #expect(read.metadata == ["format": "pt"])
        #expect(read.names == tensors.map(\.name))
        for (name, t) in tensors { #expect(read.tensor(name) == t) }
        // The data section starts 8-byte aligned.
        #expect(read.entries[0].range.lowerBound % 8 == 0)
    }

    @Test("a mapped file reads the same as bytes in memory")
    func mapped() throws {
        let dir = TempDir()
        let path = dir.file("w.safetensors")
        try SafetensorsWriter.write(try Samples.weights(), to: path)
        let f = try SafetensorsFile.open(path: path)
        #expect(f.names == ["0.weight", "0.bias", "2.weight", "2.bias"])
        #expect(f.tensor("0.weight")?.shape == [3, 4])
    }

    @Test("a header length larger than the file is refused")
    func headerBeyondFile() {
        #expect(
            refusal(file(header: "{}", data: [], declaredLength: 1 << 20))
                == .headerBeyondFile(length: 1 << 20, fileSize: 10))
        #expect(
            refusal(file(header: "{}", data: [], declaredLength: 1 << 40))
                == .headerTooLarge(length: 1 << 40, cap: 16 << 20))
        #expect(refusal(Data([1, 2, 3])) == .tooShort(bytes: 3))
    }

    @Test("overlapping offsets are refused")
    func overlap() {
        let h =
            #"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#
        #expect(refusal(file(header: h, data: Array(repeating: 0, count: 6))) == .overlap(first: "a", second: "b"))
    }

    @Test("gaps and unclaimed trailing bytes are refused")
    func gapsAndTail() {
        let gap =
            #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}"#
        #expect(refusal(file(header: gap, data: Array(repeating: 0, count: 5))) == .gap(before: "b", bytes: 1))
        let tail = #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#
        #expect(refusal(file(header: tail, data: Array(repeating: 0, count: 5))) == .trailingBytes(3))
    }

    @Test("dtype × shape that disagrees with the byte length is refused")
    func sizeMismatch() {
        let h = #"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#
        #expect(
            refusal(file(header: h, data: Array(repeating: 0, count: 20)))
                == .sizeMismatch(name: "w", dtype: .f32, shape: [2, 3], expected: 24, actual: 20))
        let overflow = #"{"w":{"dtype":"I64","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#
        #expect(refusal(file(header: overflow, data: Array(repeating: 0, count: 8))) != nil)
    }

    @Test("offsets outside the data section are refused")
    func outOfRange() {
        let h = #"{"w":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#
        #expect(refusal(file(header: h, data: [0, 0])) == .offsetsOutOfRange(name: "w", begin: 0, end: 8, dataSize: 2))
    }

    @Test("duplicate names, unsupported dtypes and malformed headers are refused with a reason")
    func malformed() {
        let dup =
            #"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#
        guard case .headerSyntax(let why)? = refusal(file(header: dup, data: [0, 0])) else {
            Issue.record("duplicate accepted"); return
        }
        #expect(why.contains("duplicate key \"w\""))
        #expect(
            refusal(file(header: #"{"w":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}}"#, data: [0]))
                == .unsupportedDType(name: "w", dtype: "BOOL"))
        #expect(refusal(file(header: #"{"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#, data: [0])) != nil)
        #expect(
            refusal(file(header: #"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}"#, data: [0])) != nil)
        #expect(refusal(file(header: "[1,2]", data: [])) == .headerNotObject)
        #expect(refusal(file(header: "{\"a\":", data: [])) != nil)
        #expect(refusal(file(header: String(repeating: "[", count: 10_000), data: [])) != nil)
    }

    @Test("F16 and BF16 convert to and from F32 with round-to-nearest-even")
    func halfConversions() throws {
        let values: [Float] = [0, -0.0, 1, -2.5, 65504, 1e-8, 3.14159, .infinity]
        let t = Tensor(shape: [values.count], floats: values)
        let h = try t.converted(to: .f16)
        #expect(h.floats() == values.map { Float(Float16($0)) })
        let b = try t.converted(to: .bf16)
        #expect(b.floats()[2] == 1 && b.floats()[3] == -2.5)
        // 1 + 2^-8 lies exactly between two bfloat16 values: ties go to even (1.0).
        #expect(try Tensor(shape: [1], floats: [1 + 1.0 / 256]).converted(to: .bf16).floats() == [1])
        #expect(try Tensor(shape: [1], floats: [1 + 3.0 / 256]).converted(to: .bf16).floats() == [1 + 4.0 / 256])
        #expect(try b.converted(to: .f32).floats() == b.floats())
    }

    @Test("NaN and infinity are detected in every float dtype")
    func finite() throws {
        for d in [DType.f32, .f16, .bf16] {
            #expect(try Tensor(shape: [3], floats: [1, 2, 3]).converted(to: d).allFinite())
            #expect(try !Tensor(shape: [3], floats: [1, .nan, 3]).converted(to: d).allFinite())
            #expect(try !Tensor(shape: [3], floats: [1, 2, -.infinity]).converted(to: d).allFinite())
        }
    }
}

@Suite("Safetensors interop with Python")
struct SafetensorsInteropTests {
    struct Indexed: Decodable { let dtype: String; let shape: [Int]; let hex: String }
    struct PyFile: Decodable { let path: String; let tensors: [String: Indexed] }
    struct PyRead: Decodable { let metadata: [String: String]; let tensors: [String: Indexed] }

    private func hex(_ d: Data) -> String { d.map { String(format: "%02x", $0) }.joined() }

    @Test("files numpy and safetensors write, in every dtype, read bit-exactly")
    func readsPython() throws {
        let dir = TempDir()
        let r = try Subprocess.python("safetensors_interop.py", ["write", dir.path])
        try #require(r.status == 0, "python failed: \(r.err)")
        let files = try JSONDecoder().decode([String: PyFile].self, from: r.stdout)
        #expect(Set(files.keys) == Set(DType.allCases.map(\.rawValue)))
        for (code, f) in files {
            let st = try SafetensorsFile.open(path: f.path)
            #expect(Set(st.names) == Set(f.tensors.keys), "\(code)")
            for (name, expected) in f.tensors {
                let t = try #require(st.tensor(name))
                #expect(t.dtype.rawValue == expected.dtype)
                #expect(t.shape == expected.shape, "\(code) \(name)")
                #expect(hex(t.data) == expected.hex, "\(code) \(name)")
            }
        }
    }

    @Test("files fedbatch writes, in every dtype, load in Python with the same values")
    func writesForPython() throws {
        let dir = TempDir()
        for (i, d) in DType.allCases.enumerated() {
            let bytes = Data(
                (0..<(12 * d.byteSize)).map {
                    UInt8(truncatingIfNeeded: $0 * 29 + 3 * i + 1)
                        & (d.isFloatingPoint && $0 % d.byteSize == d.byteSize - 1 ? 0x3F : 0xFF)
                })
            let tensors: [(name: String, tensor: Tensor)] = [
                ("layer.weight", try Tensor(dtype: d, shape: [3, 4], data: bytes)),
                ("layer.bias", try Tensor(dtype: d, shape: [4], data: bytes.prefix(4 * d.byteSize))),
                ("empty", try Tensor(dtype: d, shape: [0], data: Data())),
            ]
            let path = dir.file("\(d.rawValue).safetensors")
            try SafetensorsWriter.write(tensors, metadata: ["written_by": "fedbatch"], to: path)
            let r = try Subprocess.python("safetensors_interop.py", ["read", path])
            try #require(r.status == 0, "python could not load \(d.rawValue): \(r.err)")
            let read = try JSONDecoder().decode(PyRead.self, from: r.stdout)
            #expect(read.metadata == ["written_by": "fedbatch"])
            for (name, t) in tensors {
                let got = try #require(read.tensors[name], "\(d.rawValue) \(name) missing in Python")
                #expect(got.dtype == d.rawValue)
                #expect(got.shape == t.shape)
                #expect(got.hex == hex(t.data), "\(d.rawValue) \(name)")
            }
        }
    }
}

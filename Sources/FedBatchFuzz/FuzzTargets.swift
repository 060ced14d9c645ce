import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// The parsers that read untrusted bytes, one fuzz target each. A target
/// may throw (that is a refusal, the expected outcome for most inputs);
/// it must never crash, trap, hang or allocate beyond its caps.
enum FuzzTarget: String, CaseIterable {
    case safetensors, manifest, statement, signature, container, codec, idx, csv, numbers, statistics, included, keys,
        verify

    /// Caps small enough that each input runs in microseconds, so that the
    /// fuzzer explores the parsers' logic rather than large allocations.
    static let limits: ContainerLimits = {
        var l = ContainerLimits()
        l.maxFileBytes = 1 << 20
        l.maxDecompressedBytes = 4 << 20
        l.maxMemberBytes = 2 << 20
        l.maxManifestBytes = 64 << 10
        l.maxEntries = 16
        l.windowLogMax = 20
        l.maxIncludedBundles = 1000
        return l
    }()

    /// A key block, a signature and a statement, framed as
    /// make-key-seeds.sh frames them; whatever verifies must stop verifying
    /// when the statement changes.
    static func verify(_ data: Data) {
        let bytes = [UInt8](data)
        func take(_ i: inout Int) -> [UInt8]? {
            guard i + 2 <= bytes.count else { return nil }
            let n = Int(bytes[i]) << 8 | Int(bytes[i + 1])
            guard i + 2 + n <= bytes.count else { return nil }
            defer { i += 2 + n }
            return Array(bytes[(i + 2)..<(i + 2 + n)])
        }
        var i = 0
        guard let key = take(&i), let signature = take(&i) else { return }
        let statement = Data(bytes[i...])
        var ring = PublicKeyRing()
        ring.add(Data(key))
        guard (try? ring.signer(of: Data(signature), over: statement)) != nil else { return }
        if (try? ring.signer(of: Data(signature), over: statement + Data([0x0A]))) != nil {
            fatalError("a signature verified over two different statements")
        }
    }

    func run(_ data: Data) {
        switch self {
        case .safetensors:
            if let file = try? SafetensorsFile(bytes: data) {
                // Reading every tensor must stay within the file.
                for e in file.entries { _ = file.tensor(e.name)?.allFinite() }
            }
        case .manifest:
            _ = try? Manifest.decode(data)
            _ = try? PrunedManifest.decode(data, limits: Self.limits)
        case .included:
            // A count from the input's own newlines (and one off it), so
            // that the line parser runs rather than the count check alone.
            let lines = data.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
            for count in [lines, lines + 1, max(0, lines - 1)] {
                _ = try? IncludedList.decode(data, count: count, limits: Self.limits)
            }
        case .statement:
            _ = try? Statement.parse(data)
        case .signature:
            _ = try? Verifier.checkSignaturePacket(data)
        case .keys:
            // A pinned key file, read as the in-process verifier reads it.
            var ring = PublicKeyRing()
            ring.add(data)
            _ = KeyPackets.scan(data)
        case .verify:
            Self.verify(data)
        case .container:
            if let file = try? ContainerFile.split(data, limits: Self.limits) {
                if let statement = try? Statement.parse(file.statement),
                    let m = try? ContainerReader.read(payload: file.payload, limits: Self.limits)
                {
                    _ = try? statement.check(against: m.manifest)
                }
                _ = try? ContainerReader.read(payload: file.payload, limits: Self.limits).tensors()
            }
        case .codec:
            // Stored tensors of an update to mlp:4-3-2, against every codec:
            // what passes a codec's check must decode within the model.
            guard let file = try? SafetensorsFile(bytes: data) else { return }
            for name in Codecs.names.sorted() {
                let codec = try! Codecs.make(name: name)
                if (try? codec.check(file, arch: Self.codecArch)) != nil {
                    _ = codec.decodeAll(file, arch: Self.codecArch)
                }
            }
        case .idx:
            _ = try? DataLoader.parseIDX([UInt8](data), path: "fuzz")
        case .csv:
            _ = try? DataLoader.parseCSV(data, path: "fuzz")
        case .numbers:
            Self.extremeNumbers(data)
        case .statistics:
            // What parses must combine with itself and give a schema's
            // normalisation (or refuse) without a trap.
            if let s = try? DataStatistics.parse(data), let both = try? s.combined(with: s) {
                try? both.check()
                let numeric = both.numeric.keys.sorted(), categorical = both.categorical.keys.sorted()
                if let schema = try? TabularSchema(
                    features: numeric + categorical, label: "label",
                    categories: Dictionary(
                        uniqueKeysWithValues: categorical.map { ($0, both.categorical[$0]!.counts.keys.sorted()) }))
                {
                    _ = try? both.normalisation(for: schema)
                    _ = try? both.check(against: schema)
                }
            }
        }
    }

    /// Every number a manifest or a tensor carries, taken from the input's
    /// 8-byte words (as integers and as float bit patterns), through
    /// manifest validation and the integer-tensor rules a merge applies:
    /// refusals are fine, a trap is not.
    static func extremeNumbers(_ data: Data) {
        var words = stride(from: 0, to: data.count - data.count % 8, by: 8).map { i in
            data[data.startIndex + i..<data.startIndex + i + 8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        if words.isEmpty { words = [0] }
        func int(_ i: Int) -> Int { Int(truncatingIfNeeded: words[i % words.count]) }
        func double(_ i: Int) -> Double { Double(bitPattern: words[i % words.count]) }
        let digest = String(repeating: "a", count: 64)
        let kinds: [Manifest.Kind] = [.update, .partial, .generation]
        var m = Manifest(
            kind: kinds[abs(int(0) % 3)], model: .init(id: "m", arch: "tensors:w=F32[2];n=I64[]"),
            created: "2026-01-01T00:00:00Z",
            codec: int(1) % 2 == 0 ? "fp32" : Manifest.exactSumCodec,
            generation: int(2), parent: .init(number: int(3), digest: digest),
            base: .init(number: int(4), digest: digest),
            site: .init(id: "s", seq: Int64(truncatingIfNeeded: int(5))),
            numExamples: Int64(truncatingIfNeeded: int(6)),
            included: [
                .init(
                    digest: digest, site: "s", signer: digest, seq: Int64(truncatingIfNeeded: int(7)),
                    numExamples: Int64(truncatingIfNeeded: int(8)), weight: double(9), base: int(10),
                    staleness: int(11), stalenessWeight: double(12))
            ])
        m.metrics = ["x": double(13)]
        if let bytes = try? m.encoded() { _ = try? Manifest.decode(bytes) }
        _ = try? m.validate()
        // The integer-tensor rules: a tensor built from these floats for
        // every integer dtype, and a delta checked against a base.
        let floats = words.map { Float(bitPattern: UInt32(truncatingIfNeeded: $0)) }
        for dtype in DType.allCases where !dtype.isFloatingPoint {
            _ = try? Tensor(shape: [floats.count], dtype: dtype, values: floats)
        }
        let arch = try! ModelArchitecture(spec: "tensors:w=F32[2];n=I64[]")
        let base = ModelWeights(arch: arch, tensors: [[floats[0], floats[1 % floats.count]], [Float(int(14) % 1000)]])
        _ = try? base.generationMember()
        let delta = ModelWeights(arch: arch, tensors: [[floats[2 % floats.count], 0], [floats[3 % floats.count]]])
        _ = try? FedAvg.checkDelta(delta, base: base)
    }

    static let codecArch = try! ModelArchitecture(spec: "mlp:4-3-2")

    /// The target named by $FEDBATCH_FUZZ_TARGET.
    static let selected: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["FEDBATCH_FUZZ_TARGET"] ?? ""
        guard let t = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(
                Data("set FEDBATCH_FUZZ_TARGET to one of: \(allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
            exit(2)
        }
        return t
    }()
}

#if FUZZING
/// libFuzzer's driver (LLVM 11 and later).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// libFuzzer's callback, also under its conventional name (parts of
/// libFuzzer refer to it even when the driver is given the callback).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    FuzzTarget.selected.run(count == 0 ? Data() : Data(bytes: bytes!, count: count))
    return 0
}

/// The program's entry point when built for fuzzing (see `make fuzz`).
/// SwiftPM links an executable's `main` to `<module>_main`, so libFuzzer's
/// own `main` is not used: this hands libFuzzer the command line instead.
@_cdecl("fedbatch_fuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    _ = FuzzTarget.selected
    var argc = argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzOneInput($0, $1) }
}
#else
/// Without libFuzzer: runs inputs through a target, for replaying a corpus
/// or a crash (`fedbatch-fuzz TARGET FILE...`); the tests use it too.
@main
struct FuzzReplay {
    static func main() {
        let args = CommandLine.arguments.dropFirst()
        guard let name = args.first, let target = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(
                Data(
                    ("usage: fedbatch-fuzz TARGET FILE...  "
                        + "(targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " ")))\n").utf8))
            exit(2)
        }
        var count = 0
        for path in args.dropFirst() {
            var isDir: ObjCBool = false
            let files =
                FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { "\(path)/\($0)" }
                : [path]
            for f in files {
                guard let data = FileManager.default.contents(atPath: f) else { continue }
                target.run(data)
                count += 1
            }
        }
        print("\(target.rawValue): \(count) inputs, no crash")
    }
}
#endif

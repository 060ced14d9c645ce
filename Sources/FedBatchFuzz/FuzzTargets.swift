import FedBatch
import Foundation

/// The parsers that read untrusted bytes, one fuzz target each. A target
/// may throw (that is a refusal, the expected outcome for most inputs);
/// it must never crash, trap, hang or allocate beyond its caps.
enum FuzzTarget: String, CaseIterable {
    case safetensors, manifest, statement, signature, container, codec, idx, csv

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
        return l
    }()

    func run(_ data: Data) {
        switch self {
        case .safetensors:
            if let file = try? SafetensorsFile(bytes: data) {
                // Reading every tensor must stay within the file.
                for e in file.entries { _ = file.tensor(e.name)?.allFinite() }
            }
        case .manifest:
            _ = try? Manifest.decode(data)
        case .statement:
            _ = try? Statement.parse(data)
        case .signature:
            _ = try? Verifier.checkSignaturePacket(data)
        case .container:
            if let file = try? ContainerFile.split(data, limits: Self.limits) {
                if let statement = try? Statement.parse(file.statement), let m = try? ContainerReader.read(payload: file.payload, limits: Self.limits) {
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
                if (try? codec.check(file, arch: Self.codecArch)) != nil { _ = codec.decodeAll(file, arch: Self.codecArch) }
            }
        case .idx:
            _ = try? DataLoader.parseIDX([UInt8](data), path: "fuzz")
        case .csv:
            _ = try? DataLoader.parseCSV(data, path: "fuzz")
        }
    }

    static let codecArch = try! ModelArchitecture(spec: "mlp:4-3-2")

    /// The target named by $FEDBATCH_FUZZ_TARGET.
    static let selected: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["FEDBATCH_FUZZ_TARGET"] ?? ""
        guard let t = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(Data("set FEDBATCH_FUZZ_TARGET to one of: \(allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
            exit(2)
        }
        return t
    }()
}

#if FUZZING
/// libFuzzer's driver (LLVM 11 and later).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

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
            FileHandle.standardError.write(Data("usage: fedbatch-fuzz TARGET FILE...  (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " ")))\n".utf8))
            exit(2)
        }
        var count = 0
        for path in args.dropFirst() {
            var isDir: ObjCBool = false
            let files = FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { "\(path)/\($0)" } : [path]
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

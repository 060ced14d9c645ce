import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Paths the tests need, found from this file's location so that tests run
/// the same from `make test`, `swift test` or an IDE.
public enum TestPaths {
    public static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    public static var fixtures: String { packageRoot + "/Tests/Fixtures" }

    /// The fedbatch binary under test ($FEDBATCH_BIN, else the debug build).
    public static var fedbatch: String {
        ProcessInfo.processInfo.environment["FEDBATCH_BIN"] ?? packageRoot + "/.build/debug/fedbatch"
    }

    /// A release build of fedbatch, for the few tests that measure the
    /// memory of work a debug build would take minutes over
    /// ($FEDBATCH_RELEASE_BIN, which `make test` sets; else the binary
    /// under test).
    public static var optimizedFedbatch: String {
        ProcessInfo.processInfo.environment["FEDBATCH_RELEASE_BIN"] ?? fedbatch
    }

    /// The Python with Flower that `make deps` sets up in a venv of its own.
    public static var flowerPython: String {
        ProcessInfo.processInfo.environment["FEDBATCH_FLOWER_PYTHON"] ?? packageRoot + "/.venv-flower/bin/python"
    }

    /// The Python with numpy and safetensors that `make deps` sets up.
    public static var python: String {
        ProcessInfo.processInfo.environment["FEDBATCH_PYTHON"] ?? packageRoot + "/.venv/bin/python"
    }
}

/// A short-named temporary directory (gpg-agent sockets must stay under 108
/// bytes), removed when the value goes away.
public final class TempDir: @unchecked Sendable {
    public let path: String

    public init() {
        var template = Array("/tmp/fb-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(p != nil, "mkdtemp failed")
        path = String(cString: p!)
    }

    deinit {
        // Stop any gpg-agent a test started in a keyring below this directory.
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: path) {
            for e in entries where FileManager.default.fileExists(atPath: "\(path)/\(e)/pubring.kbx") {
                _ = try? Subprocess.run("/usr/bin/gpgconf", ["--homedir", "\(path)/\(e)", "--kill", "gpg-agent"])
            }
        }
        try? FileManager.default.removeItem(atPath: path)
    }

    public func file(_ name: String) -> String { "\(path)/\(name)" }

    @discardableResult
    public func write(_ name: String, _ data: Data) throws -> String {
        let p = file(name)
        try data.write(to: URL(fileURLWithPath: p))
        return p
    }
}

/// The result of running a program to completion.
public struct ProcessResult: Sendable {
    public let status: Int32
    public let stdout: Data
    public let stderr: Data
    /// The child's peak resident set size in KiB, measured by GNU time
    /// (only with `measuringRSS`; else 0). Not wait4's rusage: posix_spawn
    /// starts the child in the parent's address space, whose peak RSS the
    /// kernel then carries over into the child's figure.
    public let maxRSSKiB: Int

    public var out: String { String(decoding: stdout, as: UTF8.self) }
    public var err: String { String(decoding: stderr, as: UTF8.self) }

    /// The JSON lines a `--json` run printed on stdout, each an object.
    public func jsonLines() throws -> [[String: Any]] {
        try Self.objects(stdout)
    }

    /// The JSON lines a `--json` run printed on stderr (warnings, an error).
    public func jsonErrorLines() throws -> [[String: Any]] {
        try Self.objects(stderr)
    }

    /// The `summary` message of a `--json` run: its last stdout line.
    public func summary() throws -> [String: Any] {
        guard let last = try jsonLines().last, last["message_type"] as? String == "summary" else {
            throw Subprocess.Failure(description: "no summary line in stdout: \(out)")
        }
        return last
    }

    private static func objects(_ data: Data) throws -> [[String: Any]] {
        try data.split(separator: UInt8(ascii: "\n")).map { line in
            guard let o = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw Subprocess.Failure(description: "not a JSON object: \(String(decoding: line, as: UTF8.self))")
            }
            return o
        }
    }
}

public enum Subprocess {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// Runs a program with stdout and stderr captured through files.
    /// With `measuringRSS`, it runs under /usr/bin/time, a small process
    /// whose fork leaves the program a clean peak-RSS figure.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        stdin: String? = nil, measuringRSS: Bool = false
    ) throws -> ProcessResult {
        let io = TempDir()
        if measuringRSS {
            let r = try run(
                "/usr/bin/time", ["-f", "%M", "-o", io.file("rss"), executable] + arguments, environment: environment,
                stdin: stdin)
            let kib =
                Int((try? String(contentsOfFile: io.file("rss"), encoding: .utf8))?.split(separator: "\n").last ?? "")
                ?? -1
            return ProcessResult(status: r.status, stdout: r.stdout, stderr: r.stderr, maxRSSKiB: kib)
        }
        var env = environment ?? ProcessInfo.processInfo.environment
        if environment == nil { env.removeValue(forKey: "FEDBATCH_HOME") }
        return try start(executable, arguments, environment: env, stdin: stdin, io: io).wait()
    }

    /// A program started in the background; `wait()` reaps it.
    public final class Running: @unchecked Sendable {
        public let pid: pid_t
        let io: TempDir
        init(pid: pid_t, io: TempDir) { self.pid = pid; self.io = io }

        public func wait() -> ProcessResult {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            let exit: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            return ProcessResult(
                status: exit, stdout: (try? Data(contentsOf: URL(fileURLWithPath: io.file("out")))) ?? Data(),
                stderr: (try? Data(contentsOf: URL(fileURLWithPath: io.file("err")))) ?? Data(), maxRSSKiB: 0)
        }
    }

    /// Starts a program without waiting for it, stdout and stderr going to files.
    public static func start(
        _ executable: String, _ arguments: [String], environment: [String: String],
        stdin: String? = nil, io: TempDir = TempDir()
    ) throws -> Running {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin ?? "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, io.file("out"), O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, io.file("err"), O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        // Nothing else of this process reaches the child. gpgme's pipes to
        // a gpg another test thread is running have no close-on-exec flag:
        // a child (or a gpg-agent it starts) holding one keeps that gpg from
        // ever seeing end of file, and the in-process gpgme call, which
        // holds the fork guard, waits forever.
        closeInheritedDescriptors(&actions)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0)=\($1)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        guard rc == 0 else { throw Failure(description: "cannot run \(executable): \(String(cString: strerror(rc)))") }
        return Running(pid: pid, io: io)
    }

    /// Runs a shell pipeline with bash.
    public static func shell(_ script: String) throws -> ProcessResult {
        try run("/bin/bash", ["-o", "pipefail", "-c", script])
    }

    /// Runs the fedbatch binary under test.
    public static func fedbatch(_ arguments: [String], environment: [String: String]? = nil) throws -> ProcessResult {
        try run(TestPaths.fedbatch, arguments, environment: environment)
    }

    /// Runs a fixture script with the project's Python.
    public static func python(_ script: String, _ arguments: [String]) throws -> ProcessResult {
        try run(TestPaths.python, [TestPaths.fixtures + "/" + script] + arguments)
    }
}

/// Containers for tests, written through the real writer.
public enum Samples {
    public static let arch = "mlp:4-3-2"

    /// Small deterministic weights for `arch`.
    public static func weights(arch spec: String = arch, scale: Float = 0.01) throws -> [(name: String, tensor: Tensor)]
    {
        let a = try ModelArchitecture(spec: spec)
        var k: Float = 0
        return a.tensorShapes.map { name, shape in
            let n = shape.reduce(1, *)
            let values = (0..<n).map { _ -> Float in
                k += 1; return sin(k) * scale
            }
            return (name, Tensor(shape: shape, floats: values))
        }
    }

    public static func updateManifest(site: String = "site-1", seq: Int64 = 1, examples: Int64 = 100) -> Manifest {
        Manifest(
            kind: .update, model: .init(id: "demo", arch: arch), created: "2026-01-01T00:00:00Z",
            base: .init(number: 0, digest: String(repeating: "ab", count: 32)),
            site: .init(id: site, seq: seq), numExamples: examples, metrics: ["loss": 0.5, "accuracy": 0.75])
    }

    /// A file around any payload, with the statement an update from site-1
    /// (seq 1) would carry for it, and `signature` (by default none).
    public static func seal(_ payload: Data, signature: Data = Data()) -> Data {
        ContainerFile.seal(payload: payload, statement: statement(for: payload), signature: signature)
    }

    /// The statement `seal` writes: an update from site-1, seq 1.
    public static func statement(for payload: Data) -> Data {
        Statement(
            kind: .update, model: "demo", site: .init(id: "site-1", seq: 1),
            payloadLength: Int64(payload.count), payloadDigest: Digest.of(payload)
        ).encoded
    }

    /// An unsigned container file (empty signature slot) holding `weights`.
    public static func unsignedContainer(
        manifest: Manifest = updateManifest(), tensors: [(name: String, tensor: Tensor)]? = nil,
        extra: [(name: String, data: Data)] = []
    ) throws -> Data {
        let t = try tensors ?? weights()
        let (payload, final) = try ContainerWriter.payload(
            manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(t))] + extra)
        return ContainerFile.seal(
            payload: payload, statement: Statement(for: final, payload: payload).encoded, signature: Data())
    }
}

/// Hand-built zstd frames, for inputs the zstd CLI would never produce:
/// bombs made of RLE blocks (10 GB of output from a few hundred KB) and
/// frames that declare an enormous window.
public enum ZstdFrames {
    /// A frame of raw `prefix` blocks followed by `zeroBytes` of RLE zeros.
    public static func frame(prefix: Data, zeroBytes: Int64, windowLog: Int = 20, fill: UInt8 = 0) -> Data {
        var out = Data([0x28, 0xB5, 0x2F, 0xFD])
        out.append(0x00)  // frame header: no content size, no checksum, not single-segment
        out.append(UInt8((windowLog - 10) << 3))  // window descriptor: exponent only
        let maxBlock = 128 * 1024
        var blocks: [(type: UInt32, size: Int, payload: Data)] = []
        var offset = 0
        while offset < prefix.count {
            let n = min(maxBlock, prefix.count - offset)
            blocks.append((0, n, prefix.subdata(in: (prefix.startIndex + offset)..<(prefix.startIndex + offset + n))))
            offset += n
        }
        var remaining = zeroBytes
        while remaining > 0 {
            let n = Int(min(Int64(maxBlock), remaining))
            blocks.append((1, n, Data([fill])))
            remaining -= Int64(n)
        }
        if blocks.isEmpty { blocks.append((0, 0, Data())) }
        for (i, b) in blocks.enumerated() {
            let last: UInt32 = i == blocks.count - 1 ? 1 : 0
            let header = last | (b.type << 1) | (UInt32(b.size) << 3)
            out.append(contentsOf: [UInt8(header & 0xFF), UInt8((header >> 8) & 0xFF), UInt8((header >> 16) & 0xFF)])
            out.append(b.payload)
        }
        return out
    }
}

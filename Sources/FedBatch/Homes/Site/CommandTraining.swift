import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What a command trainer reported in `FEDBATCH_RESULT`.
public struct CommandResult: Sendable, Equatable {
    public var numExamples: Int64
    /// Figures of the training run, recorded in the bundle's metrics.
    public var metrics: [String: Double] = [:]
    /// The site's evaluation of the generation it started from.
    public var evaluation: SiteEvaluation?

    static let keys: Set<String> = ["num_examples", "metrics", "evaluation"]

    /// Parses the result file's JSON object, refusing what a typo or a
    /// broken trainer would write: unknown keys, a missing or non-positive
    /// `num_examples`, a metric that is not a finite number.
    public static func parse(_ data: Data) throws -> CommandResult {
        let value: JSONValue
        do { value = try StrictJSON.parse(data) } catch { throw CommandResultError("is not JSON: \(error)") }
        guard case .object(let members) = value else { throw CommandResultError("is not a JSON object") }
        let fields = Dictionary(members, uniquingKeysWith: { a, _ in a })
        if let unknown = fields.keys.sorted().first(where: { !keys.contains($0) }) {
            throw CommandResultError(
                "has the key \"\(unknown)\"; the keys are \(keys.sorted().joined(separator: ", "))")
        }
        guard let n = fields["num_examples"]?.nonNegativeInt, n > 0, n <= Int(Int64.max) else {
            throw CommandResultError("needs num_examples, a positive integer: the examples this run trained on")
        }
        var result = CommandResult(numExamples: Int64(n))
        if let m = fields["metrics"] { result.metrics = try numbers(m, what: "metrics") }
        if let e = fields["evaluation"] { result.evaluation = try SiteEvaluation.parse(e) }
        return result
    }

    /// A JSON object of names to finite numbers.
    static func numbers(_ value: JSONValue, what: String) throws -> [String: Double] {
        guard case .object(let members) = value else {
            throw CommandResultError("\(what) must be an object of names to numbers")
        }
        var out: [String: Double] = [:]
        for (name, v) in members {
            guard case .number(let text) = v, let d = Double(text), d.isFinite else {
                throw CommandResultError("\(what).\(name) must be a finite number")
            }
            out[name] = d
        }
        return out
    }
}

/// A site's evaluation of a generation on its own held-out data.
public typealias SiteEvaluation = Manifest.SiteEvaluation

extension Manifest.SiteEvaluation {
    /// `{"num_examples": N, "metrics": {"accuracy": 0.83, ...}}`; accuracy,
    /// when given, must lie in [0, 1].
    static func parse(_ value: JSONValue) throws -> SiteEvaluation {
        guard case .object(let members) = value else {
            throw CommandResultError("evaluation must be an object with num_examples and metrics")
        }
        let fields = Dictionary(members, uniquingKeysWith: { a, _ in a })
        if let unknown = fields.keys.sorted().first(where: { !["num_examples", "metrics"].contains($0) }) {
            throw CommandResultError("evaluation has the key \"\(unknown)\"; the keys are metrics, num_examples")
        }
        guard let n = fields["num_examples"]?.nonNegativeInt, n > 0, n <= Int(Int64.max) else {
            throw CommandResultError("evaluation.num_examples must be a positive integer")
        }
        guard let m = fields["metrics"] else { throw CommandResultError("evaluation needs metrics") }
        let metrics = try CommandResult.numbers(m, what: "evaluation.metrics")
        if let a = metrics["accuracy"], !(0...1).contains(a) {
            throw CommandResultError("evaluation.metrics.accuracy must lie in [0, 1], not \(a)")
        }
        let evaluation = SiteEvaluation(numExamples: Int64(n), metrics: metrics)
        do { try evaluation.check() } catch { throw CommandResultError("\(error)") }
        return evaluation
    }
}

/// Why a result file was refused.
public struct CommandResultError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Why a command trainer's run wrote nothing.
public enum CommandTrainingError: Error, Sendable, ReasonCoded, CustomStringConvertible {
    case failed(ended: String, log: String, tail: String)
    case timedOut(seconds: Double, log: String, tail: String)
    case output(String, log: String)

    public var code: String {
        switch self {
        case .failed: return "training.command-failed"
        case .timedOut: return "training.command-timeout"
        case .output: return "training.command-output"
        }
    }

    public var description: String {
        switch self {
        case let .failed(ended, log, tail):
            return "the training command \(ended); nothing was written (its output: \(log))" + Self.quote(tail)
        case let .timedOut(seconds, log, tail):
            return
                "the training command ran past training.timeout (\(Self.seconds(seconds))) and was killed with "
                + "its whole process group; nothing was written (its output: \(log))" + Self.quote(tail)
        case let .output(why, log):
            return "the training command's output \(why); nothing was written (its output: \(log))"
        }
    }

    static func seconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s)) s" : "\(s) s" }

    static func quote(_ tail: String) -> String {
        tail.isEmpty ? "" : "\n--- the end of its output ---\n" + tail
    }
}

/// What a command trainer's run produced.
public struct CommandRun: Sendable {
    public let bundle: WrittenBundle
    public let log: String
    public let seconds: Double
    public let evaluation: SiteEvaluation?
}

extension Site {
    /// How many command logs `logs/` keeps.
    static let keptLogs = 10

    /// `fedbatch train` with a command trainer: under the home's lock, the
    /// newest generation (verified, and not one this site already sent an
    /// update for, unless `force`) is exported into a private directory of
    /// its own; `command` runs there through /bin/sh with the variables
    /// fedbatch-train(1) lists, within `timeout` seconds; and what it leaves
    /// is packed against the generation it was given, whatever arrives
    /// meanwhile (a new generation waits for the lock). The command's
    /// output goes to a log in `logs/`.
    public func train(
        command: String, request: TrainingRequest, timeout: Double?, now: @escaping () -> Date = Date.init
    ) throws -> CommandRun {
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        let defaults = home.config.training
        let (base, baseWeights) = try baseGeneration(request.base)
        if !request.force { try checkNotSent(base: base) }
        let codec = try request.codec(defaults: defaults)
        let number = base.manifest.generation!

        let work = try makeRunDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let start = "\(work)/start.safetensors", out = "\(work)/trained.safetensors", result = "\(work)/result.json"
        try Home.export(baseWeights, of: base, to: start)
        let log = try newLog(now: now())
        var environment = [
            "FEDBATCH_START": start, "FEDBATCH_OUT": out, "FEDBATCH_RESULT": result,
            "FEDBATCH_GENERATION": String(number), "FEDBATCH_MODEL_ID": base.manifest.model.id,
            "FEDBATCH_SITE_ID": home.config.siteID ?? "",
            "FEDBATCH_SEED": String(request.options(defaults: defaults, generation: number).seed),
            "FEDBATCH_HOME": home.layout.root,
        ]
        if let data = request.data ?? defaults.data { environment["FEDBATCH_DATA"] = home.resolve(data) }
        if let data = request.evalData ?? defaults.evalData { environment["FEDBATCH_EVAL_DATA"] = home.resolve(data) }
        let started = monotonicSeconds()
        let end = try runShellCommand(
            command, directory: work, environment: environment, log: log, timeout: timeout)
        let seconds = monotonicSeconds() - started
        switch end {
        case .exited(0): break
        case .exited(let status):
            throw CommandTrainingError.failed(ended: "exited with status \(status)", log: log, tail: Self.tail(of: log))
        case .signalled(let signal):
            throw CommandTrainingError.failed(
                ended: "was killed by signal \(signal)", log: log, tail: Self.tail(of: log))
        case .timedOut:
            throw CommandTrainingError.timedOut(seconds: timeout ?? 0, log: log, tail: Self.tail(of: log))
        }

        let reported: CommandResult
        do {
            reported = try CommandResult.parse(try readFile(result, cap: 1 << 20))
        } catch let e as CommandResultError {
            throw CommandTrainingError.output("FEDBATCH_RESULT (\(result)) \(e)", log: log)
        } catch {
            throw CommandTrainingError.output("has no readable FEDBATCH_RESULT: \(error)", log: log)
        }
        let trained: ModelWeights
        do {
            let file = try SafetensorsFile.open(path: out)
            trained = try ModelWeights(arch: baseWeights.arch, file: file)
        } catch {
            throw CommandTrainingError.output("FEDBATCH_OUT does not hold the model's weights: \(error)", log: log)
        }
        var metrics = reported.metrics
        metrics["seconds"] = seconds.rounded()
        let written = try writeUpdate(
            base: base, baseWeights: baseWeights, trained: trained, numExamples: reported.numExamples,
            metrics: metrics, codec: codec, evaluation: reported.evaluation)
        return CommandRun(bundle: written, log: log, seconds: seconds, evaluation: reported.evaluation)
    }

    /// A new private directory in the home for one command run. A run
    /// killed before it removed its directory leaves one behind; the next
    /// run removes it (under the lock, so none is in use).
    func makeRunDirectory() throws -> String {
        let root = home.layout.root
        for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        where name.hasPrefix(Self.runPrefix) {
            try? FileManager.default.removeItem(atPath: "\(root)/\(name)")
        }
        let path = "\(root)/\(Self.runPrefix)\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        return path
    }

    static let runPrefix = ".fedbatch-run-"

    /// The log file for a run starting `now` in `logs/`, which keeps the
    /// newest `keptLogs`.
    func newLog(now: Date) throws -> String {
        let dir = home.layout.logs
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let stamp = rfc3339(now).replacingOccurrences(of: ":", with: "")
        let logs = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { $0.hasPrefix("train-") && $0.hasSuffix(".log") }.sorted()
        for old in logs.dropLast(Self.keptLogs - 1) { try? FileManager.default.removeItem(atPath: "\(dir)/\(old)") }
        var path = "\(dir)/train-\(stamp).log"
        var n = 1
        while FileManager.default.fileExists(atPath: path) {
            n += 1
            path = "\(dir)/train-\(stamp)-\(n).log"
        }
        return path
    }

    /// The last lines of a log (at most 2 KiB), for an error message.
    static func tail(of log: String) -> String {
        guard let file = try? OpenFile(path: log),
            let data = try? file.read(at: max(0, file.size - 2048), count: Int(min(file.size, 2048)))
        else { return "" }
        let text = String(decoding: data, as: UTF8.self)
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(20).joined(separator: "\n")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

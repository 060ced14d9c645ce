import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// One finding of `fedbatch check`.
public struct CheckItem: Sendable, Equatable {
    public enum Status: String, Sendable {
        case ok, warning, failed
    }

    /// What was checked: config, home, signing-key, pinned-keys, chain,
    /// training-data, training-command, eval-data, metrics, remote, upstream.
    public let name: String
    public let status: Status
    /// "ok", or the reason code of what is wrong.
    public let code: String
    public let message: String

    static func ok(_ name: String, _ message: String) -> CheckItem {
        CheckItem(name: name, status: .ok, code: "ok", message: message)
    }

    static func failed(_ name: String, _ error: Error) -> CheckItem {
        CheckItem(name: name, status: .failed, code: reasonCode(of: error), message: describe(error))
    }
}

/// Whether a home will work unattended: the checks an operator would
/// otherwise learn about from a failed cron run (fedbatch-check(1)). Each
/// check only reads, except that it writes and removes a scratch file where
/// it tests that a directory is writable, and signs a scratch text.
public enum HomeCheck {
    /// A key expiring within this many days is a warning.
    public static let expiryWarningDays = 30

    /// Runs every check that applies to the home at `root`. `signer` makes
    /// the home's signer as the commands do (the command line's GnuPG home
    /// and passphrase file over the home's `[gnupg]` table).
    public static func run(
        root: String, signer: (Home) throws -> PayloadSigner, now: Date = Date()
    ) -> [CheckItem] {
        let home: Home
        do {
            home = try Home.open(root)
        } catch {
            // Nothing else can be judged without the config.
            return [.failed("config", error)]
        }
        var items: [CheckItem] = [.ok("config", "\(home.layout.config) parses, with no unknown keys")]
        items.append(writable("home", home.layout.root, what: "the home"))
        items.append(signingKey(home, signer: signer, now: now))
        items.append(pinnedKeys(home, now: now))
        let (chainItem, newest) = chain(home)
        items.append(chainItem)
        if home.config.role == .site {
            if let command = home.config.training.command {
                items.append(trainingCommand(command))
            } else {
                items.append(trainingData(home, newest: newest))
            }
        }
        if home.config.role == .collector, let data = home.config.eval.data {
            items.append(evalData(home, path: data, newest: newest))
        }
        if let dir = home.config.metrics.textfileDir {
            items.append(writable("metrics", home.resolve(dir), what: "metrics.textfile_dir"))
        }
        if home.config.remote.url != nil {
            items.append(remote("remote") { try Transfers(home: home).remote(override: nil) })
        }
        if home.config.role == .region, home.config.remote.upstream != nil {
            items.append(remote("upstream") { try Transfers(home: home).upstream(override: nil) })
        }
        return items
    }

    /// A directory this user can create a file in (and remove it again).
    static func writable(_ name: String, _ dir: String, what: String) -> CheckItem {
        let probe = "\(dir)/.fedbatch-check-\(getpid())"
        do {
            try writeFileAtomically(Data(), to: probe)
            try FileManager.default.removeItem(atPath: probe)
            return .ok(name, "\(what) (\(dir)) is writable")
        } catch {
            return CheckItem(
                name: name, status: .failed, code: "check.not-writable",
                message: "\(what) (\(dir)) is not writable by this user: \(describe(error))")
        }
    }

    /// The home's signing key: present, signing without a prompt, and not
    /// about to expire.
    static func signingKey(_ home: Home, signer make: (Home) throws -> PayloadSigner, now: Date) -> CheckItem {
        do {
            let signer = try make(home)
            try signer.selfTest()
            let what = "key \(signer.fingerprint) in GnuPG home \(signer.gnupgHome) signs unattended"
            return expiry("signing-key", what: what, expires: signer.expires, now: now)
        } catch {
            return .failed("signing-key", error)
        }
    }

    /// Every pinned key: none expired, none expiring soon.
    static func pinnedKeys(_ home: Home, now: Date) -> CheckItem {
        do {
            let keys = try TrustSet.load(keysDirectory: home.layout.keys).keys.filter { !$0.retired }
            guard !keys.isEmpty else {
                return CheckItem(
                    name: "pinned-keys", status: .warning, code: "check.no-keys", message: "no key is pinned")
            }
            let findings = keys.map { k in
                expiry("pinned-keys", what: "\(k.role) key \(k.fingerprint)", expires: k.expires, now: now)
            }
            if let worst = findings.first(where: { $0.status == .failed })
                ?? findings.first(where: { $0.status == .warning })
            {
                return worst
            }
            return .ok("pinned-keys", "\(keys.count) pinned key\(keys.count == 1 ? "" : "s"), none expiring soon")
        } catch {
            return .failed("pinned-keys", error)
        }
    }

    /// ok, or a warning within `expiryWarningDays` of `expires`, or failed
    /// past it.
    static func expiry(_ name: String, what: String, expires: Int?, now: Date) -> CheckItem {
        guard let expires else { return .ok(name, "\(what); it never expires") }
        let date = rfc3339(Date(timeIntervalSince1970: Double(expires)))
        let left = Double(expires) - now.timeIntervalSince1970
        if left <= 0 {
            return CheckItem(
                name: name, status: .failed, code: "signature.key-expired", message: "\(what) expired \(date)")
        }
        let days = Int(left / 86_400)
        if days < expiryWarningDays {
            return CheckItem(
                name: name, status: .warning, code: "check.key-expires-soon",
                message: "\(what) expires \(date), in \(days) day\(days == 1 ? "" : "s"): extend it "
                    + "(gpg --quick-set-expire) and pin the renewed key, or rotate (fedbatch keys rotate)")
        }
        return .ok(name, "\(what); it expires \(date), in \(days) days")
    }

    /// The chain verifies to the newest generation (its weights, when the
    /// generation file is there, for the data checks).
    static func chain(_ home: Home) -> (CheckItem, (VerifiedContainer, ModelWeights)?) {
        let check = home.layout.chainFiles().isEmpty ? nil : home.checkChain()
        if let failure = check?.failure { return (.failed("chain", failure), nil) }
        guard let check, let last = check.links.last else {
            return (
                CheckItem(
                    name: "chain", status: .warning, code: "check.no-generation",
                    message: "no generation yet in \(home.layout.generations) (fedbatch pull, or a copy)"),
                nil
            )
        }
        let newest = try? home.openGeneration(home.layout.generation(last.generation), verifier: home.verifier())
        return (
            .ok(
                "chain",
                "\(check.links.count) generation\(check.links.count == 1 ? "" : "s") verify, every link back to "
                    + "generation 0; the newest is \(last.generation)"), newest
        )
    }

    /// `[training] data`: readable, and fitting the newest generation's model.
    static func trainingData(_ home: Home, newest: (VerifiedContainer, ModelWeights)?) -> CheckItem {
        guard let data = home.config.training.data else {
            return CheckItem(
                name: "training-data", status: .warning, code: "check.no-data",
                message: "[training] sets neither data nor command: an unattended train has nothing to train on")
        }
        return dataFits("training-data", home, path: home.resolve(data), split: .train, label: "label", newest: newest)
    }

    /// `[eval] data` of a collector: readable, and fitting the model.
    static func evalData(_ home: Home, path: String, newest: (VerifiedContainer, ModelWeights)?) -> CheckItem {
        dataFits(
            "eval-data", home, path: home.resolve(path), split: home.config.eval.split,
            label: home.config.eval.labelColumn, newest: newest)
    }

    static func dataFits(
        _ name: String, _ home: Home, path: String, split: DataSplit, label: String,
        newest: (VerifiedContainer, ModelWeights)?
    ) -> CheckItem {
        do {
            // A tabular model's generation pins its columns: read by name, as train does.
            let schema = try newest?.0.tabularSchema()
            let dataset = try DataLoader.load(
                path, split: split, labelColumn: label, schema: schema, delimiter: home.config.data.delimiter)
            guard let newest = newest?.1 else {
                return CheckItem(
                    name: name, status: .warning, code: "check.no-generation",
                    message: "\(path) reads (\(dataset.count) examples); with no generation yet, its fit to the "
                        + "model is not known")
            }
            guard newest.arch.isBuiltIn else {
                return .ok(name, "\(path) reads (\(dataset.count) examples); the model is trained elsewhere")
            }
            try dataset.check(against: newest.arch, path: path)
            return .ok(name, "\(path) reads and fits the model (\(dataset.count) examples)")
        } catch {
            return .failed(name, error)
        }
    }

    /// `[training] command`: its program exists and may be run.
    static func trainingCommand(_ command: String) -> CheckItem {
        guard let program = command.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.map(String.init) else {
            return CheckItem(
                name: "training-command", status: .failed, code: "check.command-missing",
                message: "training.command is empty")
        }
        if let found = executable(program) {
            return .ok("training-command", "\(program) is \(found), executable")
        }
        return CheckItem(
            name: "training-command", status: .failed, code: "check.command-missing",
            message: "training.command runs \(program), which is not an executable file"
                + (program.contains("/") ? "" : " on PATH (\(ProcessInfo.processInfo.environment["PATH"] ?? ""))"))
    }

    /// The path of an executable `program` (a path, or a name on PATH).
    static func executable(_ program: String) -> String? {
        let candidates =
            program.contains("/")
            ? [program]
            : (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map {
                "\($0)/\(program)"
            }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) && !isDirectory(atPath: $0) }
    }

    /// A remote that answers a listing with the configured credentials.
    static func remote(_ name: String, _ open: () throws -> RemoteStore) -> CheckItem {
        do {
            let store = try open()
            let objects = try store.list(prefix: RemoteLayout.generations)
            return .ok(
                name, "\(store.url) answers (\(objects.count) generation object\(objects.count == 1 ? "" : "s"))")
        } catch {
            return .failed(name, error)
        }
    }
}

extension Home {
    /// A path from fedbatch.toml: relative ones start at the home.
    func resolve(_ path: String) -> String { path.hasPrefix("/") ? path : "\(layout.root)/\(path)" }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// The crontab lines of examples/cron.md, run exactly as written through
/// `sh -c`, on real homes whose fedbatch.toml names the GnuPG home (no
/// GNUPGHOME in the environment, as under cron).
@Suite("examples/cron.md")
struct CronExampleTests {
    /// Each job line of the example's cron blocks: its variables and command.
    static func jobs() throws -> [(env: [String: String], command: String)] {
        let text = try String(contentsOfFile: TestPaths.packageRoot + "/examples/cron.md", encoding: .utf8)
        var jobs: [(env: [String: String], command: String)] = []
        for block in text.components(separatedBy: "```cron\n").dropFirst() {
            var env: [String: String] = [:]
            for line in block.components(separatedBy: "```")[0].split(separator: "\n").map(String.init) {
                if line.hasPrefix("#") || line.isEmpty { continue }
                if let eq = line.firstIndex(of: "="), !line[..<eq].contains(" ") {
                    env[String(line[..<eq])] = String(line[line.index(after: eq)...])
                    continue
                }
                // minute hour day month weekday user command
                let fields = line.split(separator: " ", maxSplits: 6, omittingEmptySubsequences: true)
                jobs.append((env, String(fields[6]).trimmingCharacters(in: .whitespaces)))
            }
        }
        return jobs
    }

    @Test(
        "the site and collector lines pull, train, push, merge and publish quietly, and stay quiet with nothing to do"
    )
    func cronLines() throws {
        let jobs = try Self.jobs()
        try #require(jobs.count == 2)
        let (siteJob, collectorJob) = (jobs[0], jobs[1])
        #expect(siteJob.command == "fedbatch pull -q; fedbatch train -q && fedbatch push -q")
        #expect(
            collectorJob.command.hasPrefix(
                "fedbatch pull -q; fedbatch merge --min-bundles 3 -q && fedbatch publish -q;"))

        let fed = try Federation(arch: "mlp:784-16-10")
        let dir = fed.keyring.dir
        // PATH: fedbatch only; the homes share a directory remote (a share,
        // a USB stick), named in [remote] as the example says.
        let bin = dir.file("bin")
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: bin + "/fedbatch", withDestinationPath: TestPaths.fedbatch)
        let stick = dir.file("stick")
        try FileManager.default.createDirectory(atPath: stick, withIntermediateDirectories: true)
        for home in [fed.collector, fed.site("site-1")] {
            try Federation.setConfig(home: home, table: "remote", "url", StrictJSON.quote(stick))
        }
        // The [gnupg] table replaces GNUPGHOME; [training] names the data
        // (a 500-example shard, so the debug build trains quickly).
        #expect(
            try fed.fedbatch([
                "data", "split", "--data", fashionMNIST, "--split", "test", "--sites", "20", "--iid", "--out",
                dir.file("shards"), "-q",
            ]).status == 0)
        for home in [fed.collector, fed.site("site-1")] {
            var text = try String(contentsOfFile: home + "/fedbatch.toml", encoding: .utf8)
            text = text.replacingOccurrences(
                of: "# home = \"/var/lib/fedbatch/gnupg\"", with: "home = \"\(fed.keyring.home)\"")
            text = text.replacingOccurrences(
                of: "# data = \"/path/to/data\"", with: "data = \"\(dir.file("shards/site-01.safetensors"))\"")
            try text.write(toFile: home + "/fedbatch.toml", atomically: true, encoding: .utf8)
        }
        try fed.setCollectorConfig("settle_seconds", "0")
        try fed.run(["publish", "--home", fed.collector, "-q"])

        func run(_ job: (env: [String: String], command: String), home: String) throws -> ProcessResult {
            var env = ProcessInfo.processInfo.environment
            env.removeValue(forKey: "GNUPGHOME")
            env["FEDBATCH_HOME"] = home
            env["PATH"] = bin + ":/usr/bin:/bin"
            return try Subprocess.run("/bin/sh", ["-c", job.command], environment: env)
        }
        func pushed() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: stick + "/inbox/site-1")) ?? []).sorted()
        }

        // The site pulls generation 0, trains on it and pushes the bundle.
        let first = try run(siteJob, home: fed.site("site-1"))
        #expect(first.status == 0 && first.stdout.isEmpty && first.stderr.isEmpty, "\(first.err)")
        #expect(FileManager.default.fileExists(atPath: fed.site("site-1") + "/generations/g000000.fbg"))
        #expect(pushed() == ["demo-g000000-site-1-1.fbu"])
        // Nothing new to train on: train exits 5, prints nothing, and the push is skipped.
        let second = try run(siteJob, home: fed.site("site-1"))
        #expect(second.status == 5 && second.stdout.isEmpty && second.stderr.isEmpty, "\(second.err)")
        #expect(pushed() == ["demo-g000000-site-1-1.fbu"])

        // The collector pulls the one bundle; quorum 3: "not yet" is success, and silent.
        let below = try run(collectorJob, home: fed.collector)
        #expect(below.status == 0 && below.stdout.isEmpty && below.stderr.isEmpty, "\(below.err)")
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/inbox") == [
                "demo-g000000-site-1-1.fbu"
            ])
        #expect(pushed().isEmpty)
        // A broken file is worth a mail: the quarantine is reported, still exit 0.
        try Data("junk".utf8).write(to: URL(fileURLWithPath: fed.collector + "/inbox/junk.fbu"))
        let junk = try run(collectorJob, home: fed.collector)
        #expect(junk.status == 0 && junk.err.contains("quarantined junk.fbu"), "\(junk.err)")
        // A held lock (another merge still running) is not swallowed.
        let lock = try FileLock.tryLock(fed.collector + "/.fedbatch.lock")
        let held = try run(collectorJob, home: fed.collector)
        #expect(held.status != 0 && !held.err.isEmpty, "\(held.err)")
        withExtendedLifetime(lock) {}
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// The container, Kubernetes and monitoring examples. No container engine,
/// cluster or Grafana runs here: the files are parsed and checked for what
/// the docs promise (Tests/Fixtures/deployment_check.py), and the alerting
/// rules by promtool.
@Suite("deployment examples: Dockerfile, Kubernetes CronJobs and regional Job, Grafana and alerts")
struct DeploymentExampleTests {
    static let metricsPage = TestPaths.packageRoot + "/man/fedbatch-metrics.7"

    func check(_ examples: String) throws -> ProcessResult {
        try Subprocess.python("deployment_check.py", [examples, Self.metricsPage])
    }

    @Test("the shipped examples pass, and the check catches each kind of mistake")
    func examples() throws {
        let good = try check(TestPaths.packageRoot + "/examples")
        #expect(good.status == 0 && good.out.isEmpty, "\(good.out)\(good.err)")

        // Each doctored copy must be caught, with a message naming the fault.
        let cases: [(file: String, from: String, to: String, expect: String)] = [
            (
                "kubernetes/collector-cronjob.yaml", "concurrencyPolicy: Forbid", "concurrencyPolicy: Allow",
                "concurrencyPolicy must be Forbid"
            ),
            (
                "kubernetes/site-cronjob.yaml", "claimName: fedbatch-site-home", "claimName: somewhere-else",
                "PersistentVolumeClaim"
            ),
            ("kubernetes/site-cronjob.yaml", "if [ $rc -eq 5 ]; then exit 0; fi; ", "", "exit 5"),
            ("container/Dockerfile", "USER 10001:10001", "USER root", "non-root"),
            ("kubernetes/regional-merge-job.yaml", "  parallelism: 4", "  parallelism: 3", "must equal the 4 regions"),
            (
                "kubernetes/regional-merge-job.yaml", "for step in pull merge push", "for step in merge push",
                "pull, merge and push"
            ),
            (
                "monitoring/grafana-dashboard.json", "fedbatch_inbox_files", "fedbatch_inbox_count",
                "fedbatch_inbox_count is used"
            ),
        ]
        for c in cases {
            let dir = TempDir()
            #expect(try Subprocess.run("/bin/cp", ["-R", TestPaths.packageRoot + "/examples/.", dir.path]).status == 0)
            let text = try String(contentsOfFile: dir.file(c.file), encoding: .utf8)
            #expect(text.contains(c.from), "\(c.file) no longer contains \(c.from)")
            try text.replacingOccurrences(of: c.from, with: c.to).write(
                toFile: dir.file(c.file), atomically: true, encoding: .utf8)
            let r = try check(dir.path)
            #expect(r.status == 1 && r.out.contains(c.expect), "\(c.file) \(c.to): \(r.out)\(r.err)")
        }
    }

    @Test("promtool accepts the alerting rules, and every series they use is documented")
    func alertRules() throws {
        let rules = TestPaths.packageRoot + "/examples/monitoring/alerts.yml"
        let r = try Subprocess.run("/usr/bin/promtool", ["check", "rules", rules])
        #expect(r.status == 0 && r.out.contains("SUCCESS: 5 rules found"), "\(r.out)\(r.err)")
        let dir = TempDir()
        let broken = try dir.write(
            "alerts.yml",
            Data(
                try String(contentsOfFile: rules, encoding: .utf8)
                    .replacingOccurrences(of: "for: 5m", with: "for: five minutes").utf8))
        #expect(try Subprocess.run("/usr/bin/promtool", ["check", "rules", broken]).status != 0)
    }
}

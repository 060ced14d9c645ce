import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What the command that writes the metrics did: `train` or `merge`, its
/// exit code and how long it ran.
public struct RunRecord: Sendable {
    public let command: String
    public let exitCode: Int32
    public let started: Date
    public let duration: Double
    public init(command: String, exitCode: Int32, started: Date, duration: Double) {
        self.command = command
        self.exitCode = exitCode
        self.started = started
        self.duration = duration
    }
}

/// The series a home exports (fedbatch-metrics(7)). Every series carries
/// `role` and `model`, so that a site and a collector on one host (or two
/// federations) never write the same series; `site` and `reason` are the
/// only other labels, both bounded (pinned sites, reason codes).
public struct HomeMetrics {
    public let home: Home
    var config: HomeConfig { home.config }
    var layout: HomeLayout { home.layout }

    public init(home: Home) { self.home = home }

    /// The textfile's name in the directory: one per role and model.
    public var metricsFileName: String { "fedbatch_\(config.role.rawValue)_\(config.modelID).prom" }

    /// Writes the textfile when `[metrics] textfile_dir` is set; returns
    /// its path, or nil when metrics are not configured.
    @discardableResult
    public func writeMetrics(run: RunRecord, now: Date = Date()) throws -> String? {
        guard let dir = config.metrics.textfileDir else { return nil }
        let resolved = dir.hasPrefix("/") ? dir : "\(layout.root)/\(dir)"
        let families = config.role == .site ? try siteMetrics(run: run) : try collectorMetrics(run: run, now: now)
        return try Exposition.writeTextfile(families, directory: resolved, name: metricsFileName)
    }

    private var constantLabels: [(String, String)] { [("role", config.role.rawValue), ("model", config.modelID)] }

    private func family(_ name: String, _ kind: MetricFamily.Kind, _ help: String, _ value: Double?) -> MetricFamily {
        MetricFamily(name, kind, help, value.map { [MetricFamily.Sample($0, labels: constantLabels)] } ?? [])
    }

    private func family(
        _ name: String, _ kind: MetricFamily.Kind, _ help: String, by label: String, _ values: [(String, Double)]
    ) -> MetricFamily {
        MetricFamily(
            name, kind, help, values.map { MetricFamily.Sample($0.1, labels: constantLabels + [(label, $0.0)]) })
    }

    private func runFamilies(_ run: RunRecord) -> [MetricFamily] {
        [
            family(
                "fedbatch_last_run_timestamp_seconds", .gauge, "When the last \(run.command) run started (Unix time).",
                run.started.timeIntervalSince1970.rounded()),
            family(
                "fedbatch_last_run_exit_code", .gauge,
                "Exit code of the last \(run.command) run: 0 success, 5 nothing to do, else a failure (fedbatch(1)).",
                Double(run.exitCode)),
            family(
                "fedbatch_\(run.command)_duration_seconds", .gauge, "How long the last \(run.command) run took.",
                (run.duration * 1000).rounded() / 1000),
        ]
    }

    func collectorMetrics(run: RunRecord, now: Date) throws -> [MetricFamily] {
        let status = try home.collectorStatus(now: now)
        let ledger =
            FileManager.default.fileExists(atPath: layout.stateDatabase) ? try Ledger(path: layout.stateDatabase) : nil
        let totals = try ledger?.totals() ?? (accepted: 0, rejected: [:])
        let evaluation = try ledger?.evaluations().last
        let generationBytes = status.generation.flatMap { fileSize(layout.generation($0)) }
        var families = runFamilies(run)
        families += [
            family(
                "fedbatch_generation", .gauge, "Number of the newest generation.", status.generation.map(Double.init)),
            family(
                "fedbatch_generation_timestamp_seconds", .gauge, "When the newest generation was created (Unix time).",
                status.created.flatMap(unixTime)),
            family(
                "fedbatch_generation_bytes", .gauge, "Size of the newest generation file.",
                generationBytes.map(Double.init)),
            family(
                "fedbatch_quorum_bundles", .gauge,
                "Accepted bundles a merge needs to write a generation (merge.min_bundles).",
                Double(status.quorum)),
            family(
                "fedbatch_bundles_accepted_total", .counter, "Bundles included in a generation, over the home's life.",
                Double(totals.accepted)),
            family(
                "fedbatch_bundles_rejected_total", .counter,
                "Inbox files refused, by reason code, over the home's life.",
                by: "reason", totals.rejected.sorted { $0.key < $1.key }.map { ($0.key, Double($0.value)) }),
            family(
                "fedbatch_quarantine_files", .gauge, "Reason files now in quarantine/, by reason code.",
                by: "reason", status.quarantine.sorted { $0.key < $1.key }.map { ($0.key, Double($0.value)) }),
            family("fedbatch_inbox_files", .gauge, "Files waiting in inbox/.", Double(status.inboxFiles)),
            family(
                "fedbatch_inbox_oldest_age_seconds", .gauge,
                "Age of the oldest file in inbox/ when the last run ended (0: empty).",
                (status.oldestInboxSeconds ?? 0).rounded()),
            family(
                "fedbatch_inbox_oldest_timestamp_seconds", .gauge,
                "Change time of the oldest file in inbox/ (Unix time; absent when empty). time() minus this is its "
                    + "age now.",
                status.oldestInboxSeconds.map { (now.timeIntervalSince1970 - $0).rounded() }),
            family(
                "fedbatch_site_last_accepted_timestamp_seconds", .gauge,
                "When the newest generation including one of the site's bundles was created (Unix time).",
                by: "site", status.sites.compactMap { s in s.lastCreated.flatMap(unixTime).map { (s.site, $0) } }),
            family(
                "fedbatch_site_last_accepted_generation", .gauge,
                "The newest generation including one of the site's bundles.",
                by: "site", status.sites.compactMap { s in s.lastGeneration.map { (s.site, Double($0)) } }),
            family(
                "fedbatch_eval_accuracy_ratio", .gauge,
                "Accuracy of the newest evaluated generation on the collector's [eval] data.",
                evaluation?.accuracy),
            family(
                "fedbatch_eval_loss", .gauge,
                "Mean cross-entropy loss of the newest evaluated generation on the [eval] data.",
                evaluation?.loss),
            family(
                "fedbatch_eval_generation", .gauge, "The generation the eval figures are for.",
                evaluation.map { Double($0.generation) }),
            MetricFamily(
                "fedbatch_site_evaluation", .gauge,
                "Each site's newest evaluation of a generation on its own held-out data, by metric: what the site "
                    + "claims, signed in its bundle.",
                status.sites.flatMap { s in
                    (s.evaluation?.metrics ?? [:]).sorted { $0.key < $1.key }.map {
                        MetricFamily.Sample($0.value, labels: constantLabels + [("site", s.site), ("metric", $0.key)])
                    }
                }),
            family(
                "fedbatch_site_evaluation_generation", .gauge, "The generation each site's evaluation is of.",
                by: "site", status.sites.compactMap { s in s.evaluation.map { (s.site, Double($0.generation)) } }),
            family(
                "fedbatch_site_evaluation_examples", .gauge, "The held-out examples each site's evaluation used.",
                by: "site", status.sites.compactMap { s in s.evaluation.map { (s.site, Double($0.examples)) } }),
        ]
        return families
    }

    func siteMetrics(run: RunRecord) throws -> [MetricFamily] {
        let status = try home.siteStatus()
        let state =
            FileManager.default.fileExists(atPath: layout.stateDatabase)
            ? try SiteState(path: layout.stateDatabase) : nil
        let figures = try state?.lastFigures()
        let bundle = status.lastBundle
        var families = runFamilies(run)
        families += [
            family(
                "fedbatch_generation", .gauge, "Number of the newest generation this site has accepted.",
                status.newestGeneration.map(Double.init)),
            family(
                "fedbatch_bundle_seq", .gauge, "Sequence number of the last bundle written.",
                bundle.map { Double($0.seq) }),
            family(
                "fedbatch_bundle_base_generation", .gauge, "The generation the last bundle was trained on.",
                bundle.map { Double($0.baseGeneration) }),
            family(
                "fedbatch_bundle_timestamp_seconds", .gauge, "When the last bundle was written (Unix time).",
                figures.flatMap { unixTime($0.created) }),
            family(
                "fedbatch_bundle_bytes", .gauge, "Size of the last bundle written.", figures?.bytes.map(Double.init)),
            family(
                "fedbatch_bundle_in_outbox", .gauge,
                "1 while the last bundle is still in outbox/ (not yet taken by the transport).",
                bundle.map { $0.inOutbox ? 1 : 0 }),
            family(
                "fedbatch_bundle_included", .gauge, "1 once a generation in generations/ includes the last bundle.",
                bundle.map { $0.includedIn == nil ? 0 : 1 }),
            family(
                "fedbatch_train_loss", .gauge, "Training loss of the last bundle's last epoch.",
                figures?.metrics["loss"]),
            family(
                "fedbatch_train_accuracy_ratio", .gauge, "Training accuracy of the last bundle's last epoch.",
                figures?.metrics["accuracy"]),
            family(
                "fedbatch_train_examples", .gauge, "Examples the last bundle was trained on (its num_examples).",
                figures.map { Double($0.examples) }),
        ]
        return families
    }
}

/// Seconds since 1970 of an RFC 3339 time as fedbatch writes it.
private func unixTime(_ text: String) -> Double? { Manifest.parseCreated(text)?.timeIntervalSince1970 }

import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct Stats: Subcommand {
    static let configuration = CommandConfiguration(
        abstract: "Federated statistics: a site summarises its table; the collector combines them and pins them.",
        discussion: """
            At a site: computes, over [training] data (or --data) under the \
            model's schema, each numeric column's count, mean, sum of squared \
            deviations, minimum, maximum and blanks, and the count of each \
            category and label, and writes them as a signed statistics bundle \
            (.fbs) to outbox/ for push. A table of fewer than [stats] min_count \
            rows (20) is refused, and no count below it is released. --dry-run \
            prints what would be sent and writes nothing. \
            At a collector: the statistics bundles in the inbox go through the \
            merge's checks (refusals are quarantined with a reason), and those \
            that pass are combined exactly, in digest order, and printed. With \
            --pin, the next generation is written with unchanged weights and a \
            schema whose mean and standard deviation come from the combination; \
            its manifest lists the bundles. The workflow for a new federation \
            is: init collector with the schema, sites run stats and push, the \
            collector pulls and runs stats --pin and publishes, then sites train \
            (fedbatch-stats(1)).
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var root: FedBatchCommand
    var global: GlobalOptions { options.merged(over: root.global) }

    @Option(help: ArgumentHelp("Site: the CSV table to summarise (default: training.data).", valueName: "path"))
    var data: String?

    @Option(
        name: .customLong("drop"),
        help: ArgumentHelp(
            "Site: a CSV column to leave out, beyond the schema's own (repeatable).", valueName: "column"))
    var drop: [String] = []

    @Flag(name: .customLong("dry-run"), help: "Site: print the statistics that would be sent; write nothing.")
    var dryRun = false

    @Flag(help: "Site: write statistics again on a generation they were already written for.")
    var force = false

    @Flag(help: "Collector: write the next generation with the combined normalisation.")
    var pin = false

    @Option(
        name: .customLong("settle"),
        help: ArgumentHelp(
            "Collector: seconds an inbox file must be unchanged before it is read (default: merge.settle_seconds).",
            valueName: "seconds"))
    var settleSeconds: Double?

    func run(_ context: CommandContext) throws -> StatsOutput {
        let home = try context.home()
        let signer = try context.signer(fingerprint: home.config.key, for: home)
        if home.config.role == .site {
            guard !pin, settleSeconds == nil else {
                throw ValidationError("--pin and --settle are for a collector; this is a site home")
            }
            let w = try Site(home: home, signer: signer).writeStatistics(
                data: data, drop: drop, force: force, dryRun: dryRun)
            return .site(StatsSiteOutput(w))
        }
        guard data == nil, drop.isEmpty, !dryRun, !force else {
            throw ValidationError("--data, --drop, --dry-run and --force are for a site; this is a collector home")
        }
        let report = try Collector(home: home, signer: signer).statistics(pin: pin, settleSeconds: settleSeconds)
        return .collector(StatsCollectorOutput(report))
    }
}

/// A site's `stats`, or a collector's.
enum StatsOutput: CommandOutput {
    case site(StatsSiteOutput)
    case collector(StatsCollectorOutput)

    func encode(to encoder: Encoder) throws {
        switch self {
        case .site(let o): try o.encode(to: encoder)
        case .collector(let o): try o.encode(to: encoder)
        }
    }

    var exitStatus: ExitStatus {
        switch self {
        case .site(let o): return o.exitStatus
        case .collector(let o): return o.exitStatus
        }
    }

    func render(into text: inout TextRendering) {
        switch self {
        case .site(let o): o.render(into: &text)
        case .collector(let o): o.render(into: &text)
        }
    }
}

/// One column's figures, in the schema's order; arrays rather than maps, so
/// that a column or category name is never taken for a key.
struct ColumnFigures: Encodable {
    struct ValueCount: Encodable {
        let value: String
        let count: Int64
    }
    let name: String
    /// numeric or categorical.
    let kind: String
    let count: Int64
    let missing: Int64
    let withheld: Int64
    @OrNull var mean: Double?
    /// The population standard deviation.
    @OrNull var std: Double?
    @OrNull var min: Double?
    @OrNull var max: Double?
    let categories: [ValueCount]

    static func all(_ s: DataStatistics, order: [String]) -> [ColumnFigures] {
        order.compactMap { name in
            if let n = s.numeric[name] {
                return ColumnFigures(
                    name: name, kind: "numeric", count: n.count, missing: n.missing, withheld: n.withheld,
                    mean: n.mean, std: n.variance.map { $0.squareRoot() }, min: n.min, max: n.max, categories: [])
            }
            guard let c = s.categorical[name] else { return nil }
            return ColumnFigures(
                name: name, kind: "categorical", count: c.counts.values.reduce(0, +), missing: c.missing, withheld: 0,
                mean: nil, std: nil, min: nil, max: nil, categories: values(c))
        }
    }

    static func values(_ c: DataStatistics.Counts) -> [ValueCount] {
        c.counts.keys.sorted().map { ValueCount(value: $0, count: c.counts[$0]!) }
    }

    var text: String {
        if kind == "categorical" {
            return "  \(name): " + categories.map { "\($0.value) \($0.count)" }.joined(separator: ", ")
                + (missing > 0 ? "; \(missing) blank" : "")
        }
        guard let mean, let std, let min, let max else {
            return "  \(name): \(withheld) values withheld (below min_count), \(missing) blank"
        }
        return "  \(name): n \(count), mean \(Self.g(mean)), std \(Self.g(std)), min \(Self.g(min)), max \(Self.g(max))"
            + (missing > 0 ? ", \(missing) blank" : "") + (withheld > 0 ? ", \(withheld) withheld" : "")
    }

    static func g(_ v: Double) -> String { String(format: "%.6g", v) }
}

struct StatsSiteOutput: CommandOutput {
    @OrNull var file: String?
    @OrNull var digest: String?
    let site: String
    @OrNull var seq: Int64?
    let baseGeneration: Int
    let rows: Int64
    let minCount: Int64
    let label: [ColumnFigures.ValueCount]
    let columns: [ColumnFigures]

    init(_ w: WrittenStatistics) {
        file = w.path
        digest = w.digest
        site = w.site
        seq = w.seq
        baseGeneration = w.baseGeneration
        rows = w.statistics.rows
        minCount = w.statistics.minCount
        label = ColumnFigures.values(w.statistics.label)
        columns = ColumnFigures.all(w.statistics, order: w.features)
    }

    func render(into text: inout TextRendering) {
        text.out =
            [
                file.map { "statistics of \(rows) rows on generation \(baseGeneration): \($0)" }
                    ?? "statistics of \(rows) rows on generation \(baseGeneration) (dry run: nothing written)",
                "  label: " + label.map { "\($0.value) \($0.count)" }.joined(separator: ", "),
            ] + columns.map(\.text)
    }
}

struct StatsCollectorOutput: CommandOutput {
    struct Contributor: Encodable {
        let digest: String
        let site: String
        let signer: String
        let seq: Int64
        let rows: Int64
        let base: Int
    }
    let pinned: Bool
    @OrNull var generation: Int?
    @OrNull var file: String?
    @OrNull var digest: String?
    let sites: [Contributor]
    let rows: Int64
    let label: [ColumnFigures.ValueCount]
    /// In the schema's feature order.
    let columns: [ColumnFigures]
    let rejected: [MergeOutput.Rejected]
    let waiting: [MergeReport.Waiting]
    let updatesWaiting: Int

    init(_ r: StatisticsReport) {
        pinned = r.pinned
        generation = r.generation
        file = r.file
        digest = r.digest
        sites = r.sites.map {
            Contributor(digest: $0.digest, site: $0.site, signer: $0.signer, seq: $0.seq, rows: $0.rows, base: $0.base)
        }
        rows = r.combined?.rows ?? 0
        label = r.combined.map { ColumnFigures.values($0.label) } ?? []
        columns = r.combined.map { ColumnFigures.all($0, order: r.features) } ?? []
        rejected = r.rejected.map {
            MergeOutput.Rejected(
                name: $0.name, file: $0.file, reasonFile: $0.reasonFile, digest: $0.digest, code: $0.code,
                message: $0.message)
        }
        waiting = r.waiting
        updatesWaiting = r.updatesWaiting
    }

    var exitStatus: ExitStatus { sites.isEmpty ? .nothingToDo : .success }

    func render(into text: inout TextRendering) {
        if sites.isEmpty {
            text.out = ["no statistics bundle in the inbox passed"]
        } else {
            let what: String = generation.map { "generation \($0) pins the normalisation of " } ?? "combined: "
            let from: String = "\(rows) rows from \(sites.count) site\(sites.count == 1 ? "" : "s")"
            let names: String = sites.map(\.site).joined(separator: ", ")
            let labels: String = label.map { "\($0.value) \($0.count)" }.joined(separator: ", ")
            text.out = ["\(what)\(from) (\(names))" + (file.map { ": \($0)" } ?? ""), "  label: \(labels)"]
            text.out += columns.map(\.text)
        }
        text.notes = rejected.map { "refused \($0.name): \($0.message) [\($0.code)]" }
        if pinned, updatesWaiting > 0 {
            text.warnings = [
                "\(updatesWaiting) update\(updatesWaiting == 1 ? "" : "s") in the inbox were trained under the old "
                    + "normalisation; pin before sites train (fedbatch-stats(1))"
            ]
        }
    }
}

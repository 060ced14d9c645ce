import FedBatchFormats
import FedBatchNative
import FedBatchTrust
import Foundation
import GRDB

/// The collector's `state.db` (SQLite): generations, the bundles they
/// included, the last sequence number per site, and the refusals not yet
/// reported in a generation. It is an index over the files, not the truth:
/// `Ledger.rebuild` recreates it from the signed generations and the
/// quarantine reason files.
///
/// Only bundles whose signature verified under a pinned key and that a
/// generation included are "seen" for replay protection. A refused file is
/// recorded under its own identity (see `Rejection`), never under a digest
/// that a genuine bundle can share: otherwise a damaged copy sent by anyone
/// with write access to the transport would silence the genuine bundle.
public final class Ledger {
    private let db: DatabaseQueue

    public struct GenerationRow: Sendable, Codable {
        public let number: Int
        public let digest: String
        public let parent: String?
        public let file: String
        public let created: String
        public let accepted: Int
        public let rejected: Int
        public let examples: Int64
    }

    /// A refusal: `id` is the bundle digest for a file whose signature
    /// verified, else the SHA-256 of the whole file.
    public struct Rejection: Sendable, Equatable {
        public let id: String
        public let reason: String
        /// Its name in quarantine/.
        public let stored: String?

        package init(id: String, reason: String, stored: String?) {
            self.id = id
            self.reason = reason
            self.stored = stored
        }
    }

    public init(path: String) throws {
        db = try openStateDatabase(path)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "generation") { t in
                t.primaryKey("number", .integer)
                t.column("digest", .text).notNull().unique()
                t.column("parent", .text)
                t.column("file", .text).notNull()
                t.column("created", .text).notNull()
                t.column("accepted", .integer).notNull()
                t.column("rejected", .integer).notNull()
                t.column("examples", .integer).notNull()
            }
            try db.create(table: "bundle") { t in
                t.primaryKey("digest", .text)
                t.column("site", .text)
                t.column("seq", .integer)
                t.column("status", .text).notNull()  // accepted | rejected
                t.column("reason", .text)
                t.column("generation", .integer)  // the generation that included it
            }
            try db.create(table: "site") { t in
                t.primaryKey("id", .text)
                t.column("last_seq", .integer).notNull()
            }
        }
        migrator.registerMigration("v2-settled") { db in
            // 1 once the inputs of a generation have left the inbox.
            try db.alter(table: "generation") { t in t.add(column: "settled", .integer).notNull().defaults(to: 1) }
        }
        migrator.registerMigration("v3-rejections") { db in
            // Rejections recorded by payload digest could block a genuine
            // bundle; they move to a table of their own, keyed per file.
            try db.execute(sql: "DELETE FROM bundle WHERE status <> 'accepted'")
            try db.alter(table: "bundle") { t in t.add(column: "stored", .text) }
            try db.create(table: "rejection") { t in
                t.primaryKey("id", .text)
                t.column("reason", .text).notNull()
                t.column("stored", .text)
                t.column("reported", .integer)  // the generation that listed it
            }
            try db.create(table: "meta") { t in
                t.primaryKey("key", .text)
                t.column("value", .text).notNull()
            }
        }
        migrator.registerMigration("v4-evaluations") { db in
            // The collector's own evaluation of each generation on its
            // [eval] data. Not derivable from the signed files, so a rebuild
            // carries the rows over (see `rebuild`).
            try db.create(table: "evaluation") { t in
                t.primaryKey("generation", .integer)
                t.column("accuracy", .double).notNull()
                t.column("loss", .double).notNull()
                t.column("examples", .integer).notNull()
                t.column("data", .text).notNull()
                t.column("evaluated", .text).notNull()
            }
        }
        migrator.registerMigration("v5-staleness") { db in
            // How stale each included bundle was, from its generation's
            // manifest (null for generations written before it was recorded).
            try db.alter(table: "bundle") { t in t.add(column: "staleness", .integer) }
        }
        migrator.registerMigration("v6-site-evaluations") { db in
            // Each site's evaluation of a generation, from the included
            // entries of the generation that merged its bundle: signed
            // files, so a rebuild recreates the rows.
            try db.create(table: "site_evaluation") { t in
                t.primaryKey("bundle", .text)
                t.column("site", .text).notNull()
                t.column("generation", .integer).notNull()
                t.column("merged_into", .integer).notNull()
                t.column("examples", .integer).notNull()
                t.column("metrics", .text).notNull()
            }
        }
        migrator.registerMigration("v7-statistics") { db in
            // The statistics bundles a pin generation combined: signed files,
            // so a rebuild recreates the rows. Kept apart from `bundle`, so
            // that participation and site activity count updates only.
            try db.create(table: "statistics") { t in
                t.primaryKey("digest", .text)
                t.column("site", .text).notNull()
                t.column("seq", .integer).notNull()
                t.column("generation", .integer).notNull()
                t.column("stored", .text)
            }
        }
        migrator.registerMigration("v8-memory") { db in
            // Each generation's strategy name, so that a merge with memory
            // knows the last revert or pin (which empty its memory). Rows
            // from before are rebuilt from the signed files: the completion
            // mark is dropped, and the next command that opens state.db
            // through the collector rebuilds it.
            try db.alter(table: "generation") { t in t.add(column: "strategy", .text) }
            try db.execute(sql: "DELETE FROM meta WHERE key = 'complete'")
        }
        try migrator.migrate(db)
    }

    /// Whether this database was completed by `rebuild`. A state.db
    /// without the mark is partial or from an older fedbatch, and is rebuilt.
    public func isComplete() throws -> Bool {
        try db.read { db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'complete'") == "1" }
    }

    /// Whether the inputs of generation `number` have all left the inbox.
    public func isSettled(_ number: Int) throws -> Bool {
        try db.read { db in
            try Bool.fetchOne(db, sql: "SELECT settled FROM generation WHERE number = ?", arguments: [number]) ?? false
        }
    }

    public func markSettled(_ number: Int) throws {
        try db.write { db in
            try db.execute(sql: "UPDATE generation SET settled = 1 WHERE number = ?", arguments: [number])
        }
    }

    public func latestGeneration() throws -> GenerationRow? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM generation ORDER BY number DESC LIMIT 1").map(Self.row)
        }
    }

    /// Every recorded generation's digest, by number.
    public func generationDigests() throws -> [Int: String] {
        try db.read { db in
            var out: [Int: String] = [:]
            for r in try Row.fetchAll(db, sql: "SELECT number, digest FROM generation") {
                out[r["number"]] = r["digest"]
            }
            return out
        }
    }

    private static func row(_ r: Row) -> GenerationRow {
        GenerationRow(
            number: r["number"], digest: r["digest"], parent: r["parent"], file: r["file"], created: r["created"],
            accepted: r["accepted"], rejected: r["rejected"], examples: r["examples"])
    }

    /// The generation that included this bundle digest (an update, a
    /// partial aggregate or a statistics bundle), if any.
    public func mergedInto(_ digest: String) throws -> (generation: Int, stored: String?)? {
        try db.read { db in
            try Row.fetchOne(
                try db.cachedStatement(
                    sql:
                        "SELECT generation, stored FROM bundle WHERE digest = ? AND status = 'accepted' UNION ALL "
                        + "SELECT generation, stored FROM statistics WHERE digest = ? LIMIT 1"),
                arguments: [digest, digest]
            )
            .map { ($0["generation"], $0["stored"]) }
        }
    }

    /// `mergedInto` for many digests at once: the generation that included
    /// each of them that one did. A merge asks this once for its whole
    /// inbox (and once per partial aggregate for the bundles it carries)
    /// rather than once per bundle: at 10⁵ bundles the per-call cost of a
    /// query, not the lookup, was the time.
    public func mergedGenerations(of digests: [String]) throws -> [String: Int] {
        try db.read { db in
            var out: [String: Int] = [:]
            for chunk in Self.chunks(Array(Set(digests))) {
                let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                let rows = try Row.fetchAll(
                    db,
                    sql:
                        "SELECT digest, generation FROM bundle WHERE status = 'accepted' AND digest IN (\(marks)) "
                        + "UNION ALL SELECT digest, generation FROM statistics WHERE digest IN (\(marks))",
                    arguments: StatementArguments(chunk + chunk))
                // The first row per digest, as mergedInto's LIMIT 1 takes it.
                for r in rows {
                    let d: String = r["digest"]
                    if out[d] == nil { out[d] = r["generation"] }
                }
            }
            return out
        }
    }

    /// `lastSequence` for many sites at once.
    public func lastSequences(of sites: [String]) throws -> [String: Int64] {
        try db.read { db in
            var out: [String: Int64] = [:]
            for chunk in Self.chunks(Array(Set(sites))) {
                let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                for r in try Row.fetchAll(
                    db, sql: "SELECT id, last_seq FROM site WHERE id IN (\(marks))",
                    arguments: StatementArguments(chunk))
                {
                    out[r["id"]] = r["last_seq"]
                }
            }
            return out
        }
    }

    /// Pieces of at most 400 values: well under SQLite's limit on bound
    /// parameters (32,766) even with a value bound twice.
    private static func chunks(_ values: [String]) -> [[String]] {
        stride(from: 0, to: values.count, by: 400).map { Array(values[$0..<min($0 + 400, values.count)]) }
    }

    /// The newest generation that empties a merge's memory: a revert (the
    /// updates after what it restores were undone) or a statistics pin (the
    /// updates before it were trained under another normalisation).
    public func lastMemoryReset() throws -> Int? {
        try db.read { db in
            try Int.fetchOne(
                db, sql: "SELECT MAX(number) FROM generation WHERE strategy IN ('revert', 'stats-pin')")
        }
    }

    /// A site's most recent update a generation included for the first
    /// time (by sequence number), with where it is stored and how stale it
    /// was then; nil when none was, or when the row predates staleness
    /// records.
    public func latestUpdate(
        site: String
    ) throws -> (digest: String, seq: Int64, generation: Int, base: Int, stored: String?)? {
        try db.read { db in
            try Row.fetchOne(
                db,
                sql:
                    "SELECT digest, seq, generation, staleness, stored FROM bundle WHERE site = ? AND status = "
                    + "'accepted' ORDER BY seq DESC LIMIT 1",
                arguments: [site]
            ).flatMap { row -> (String, Int64, Int, Int, String?)? in
                guard let staleness: Int = row["staleness"] else { return nil }
                let g: Int = row["generation"]
                return (row["digest"], row["seq"], g, g - 1 - staleness, row["stored"])
            }
        }
    }

    /// The last sequence number a site used in a statistics bundle a
    /// generation combined. Statistics and updates each keep their own
    /// order: a site's counter serves both, and one kind may wait in the
    /// inbox while the other is merged.
    public func lastStatisticsSequence(site: String) throws -> Int64? {
        try db.read { db in
            try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM statistics WHERE site = ?", arguments: [site])
        }
    }

    /// Per site, the newest generation that included one of its bundles,
    /// that bundle's sequence number, and how many bundles it has merged.
    public func siteActivity() throws -> [(site: String, generation: Int, seq: Int64, created: String, bundles: Int)] {
        try db.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT b.site AS site, b.generation AS generation, b.seq AS seq, g.created AS created, n.bundles \
                    AS bundles
                    FROM bundle b JOIN generation g ON g.number = b.generation
                    JOIN (SELECT site, MAX(generation) AS newest, COUNT(*) AS bundles FROM bundle WHERE status = \
                    'accepted' GROUP BY site) n
                      ON n.site = b.site AND n.newest = b.generation
                    WHERE b.status = 'accepted' ORDER BY b.site
                    """
            ).map { ($0["site"], $0["generation"], $0["seq"], $0["created"], $0["bundles"]) }
        }
    }

    public func lastSequence(site: String) throws -> Int64? {
        try db.read { db in
            try Int64.fetchOne(try db.cachedStatement(sql: "SELECT last_seq FROM site WHERE id = ?"), arguments: [site])
        }
    }

    /// One generation's evaluation on the collector's held-out data.
    public struct EvaluationRow: Sendable, Equatable {
        public let generation: Int
        public let accuracy: Double
        public let loss: Double
        public let examples: Int
        public let data: String
        public let evaluated: String
        public init(generation: Int, accuracy: Double, loss: Double, examples: Int, data: String, evaluated: String) {
            self.generation = generation
            self.accuracy = accuracy
            self.loss = loss
            self.examples = examples
            self.data = data
            self.evaluated = evaluated
        }
    }

    public func recordEvaluation(_ e: EvaluationRow) throws {
        try db.write { db in
            try db.execute(
                sql:
                    "INSERT OR REPLACE INTO evaluation (generation, accuracy, loss, examples, data, evaluated) "
                    + "VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [e.generation, e.accuracy, e.loss, e.examples, e.data, e.evaluated])
        }
    }

    public func evaluations() throws -> [EvaluationRow] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM evaluation ORDER BY generation").map {
                EvaluationRow(
                    generation: $0["generation"], accuracy: $0["accuracy"], loss: $0["loss"], examples: $0["examples"],
                    data: $0["data"], evaluated: $0["evaluated"])
            }
        }
    }

    /// A site's evaluation of generation `generation` on its own held-out
    /// data, as the bundle merged into `mergedInto` carried it.
    public struct SiteEvaluationRow: Sendable, Equatable {
        public let site: String
        public let generation: Int
        public let mergedInto: Int
        public let examples: Int64
        public let metrics: [String: Double]
        public let bundle: String
    }

    /// Every site evaluation, by generation, then site.
    public func siteEvaluations() throws -> [SiteEvaluationRow] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM site_evaluation ORDER BY generation, site, bundle").map { row in
                let text: String = row["metrics"]
                let metrics = (try? JSONDecoder().decode([String: Double].self, from: Data(text.utf8))) ?? [:]
                return SiteEvaluationRow(
                    site: row["site"], generation: row["generation"], mergedInto: row["merged_into"],
                    examples: row["examples"], metrics: metrics, bundle: row["bundle"])
            }
        }
    }

    /// Every generation's row, oldest first.
    public func generations() throws -> [GenerationRow] {
        try db.read { db in try Row.fetchAll(db, sql: "SELECT * FROM generation ORDER BY number").map(Self.row) }
    }

    /// Included bundles per generation and site (for participation).
    public func participation() throws -> [(generation: Int, site: String)] {
        try db.read { db in
            try Row.fetchAll(
                db, sql: "SELECT generation, site FROM bundle WHERE status = 'accepted' ORDER BY generation, site"
            )
            .map { ($0["generation"], $0["site"]) }
        }
    }

    /// Every included bundle's generation and staleness, where recorded.
    public func stalenessByGeneration() throws -> [(generation: Int, staleness: Int)] {
        try db.read { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT generation, staleness FROM bundle WHERE status = 'accepted' AND staleness IS NOT NULL "
                    + "ORDER BY generation"
            )
            .map { ($0["generation"], $0["staleness"]) }
        }
    }

    /// Every included bundle's generation, site and name in accepted/.
    public func storedBundles() throws -> [(generation: Int, site: String, stored: String?)] {
        try db.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT generation, site, stored FROM bundle WHERE status = 'accepted' ORDER BY generation, site"
            )
            .map { ($0["generation"], $0["site"], $0["stored"]) }
        }
    }

    /// Quarantine names of refusals that generation `upTo` or an earlier
    /// one reported (listed in its manifest).
    public func reportedRejections(upTo generation: Int) throws -> [String] {
        try db.read { db in
            try String.fetchAll(
                db,
                sql:
                    "SELECT stored FROM rejection WHERE reported IS NOT NULL AND reported <= ? AND stored IS NOT "
                    + "NULL ORDER BY stored",
                arguments: [generation])
        }
    }

    /// Counters for the metrics: every bundle a generation included, and
    /// every refused file by reason code.
    public func totals() throws -> (accepted: Int, rejected: [String: Int]) {
        try db.read { db in
            let accepted = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM bundle WHERE status = 'accepted'") ?? 0
            var rejected: [String: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT reason, COUNT(*) AS n FROM rejection GROUP BY reason") {
                rejected[row["reason"]] = row["n"]
            }
            return (accepted, rejected)
        }
    }

    /// Records a refusal; it is pending until a generation lists it.
    public func recordRejection(_ r: Rejection) throws {
        try db.write { db in
            try db.execute(
                sql: """
                    INSERT INTO rejection (id, reason, stored, reported) VALUES (?, ?, ?, NULL)
                    ON CONFLICT(id) DO UPDATE SET reason = excluded.reason, stored = excluded.stored, reported = NULL
                    """, arguments: [r.id, r.reason, r.stored])
        }
    }

    public func rejection(_ id: String) throws -> Rejection? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT id, reason, stored FROM rejection WHERE id = ?", arguments: [id])
                .map { Rejection(id: $0["id"], reason: $0["reason"], stored: $0["stored"]) }
        }
    }

    /// Refusals since the last generation, for the next one to list.
    public func pendingRejections() throws -> [Rejection] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT id, reason, stored FROM rejection WHERE reported IS NULL ORDER BY id")
                .map { Rejection(id: $0["id"], reason: $0["reason"], stored: $0["stored"]) }
        }
    }

    /// Records where an included bundle's file now lies in accepted/.
    public func recordStored(digest: String, name: String) throws {
        try db.write { db in
            try db.execute(sql: "UPDATE bundle SET stored = ? WHERE digest = ?", arguments: [name, digest])
            try db.execute(sql: "UPDATE statistics SET stored = ? WHERE digest = ?", arguments: [name, digest])
        }
    }

    /// Records a generation, the bundles it included and the refusals it
    /// lists, in one transaction.
    public func recordGeneration(_ m: Manifest, digest: String, file: String, stored: [String: String] = [:]) throws {
        try db.write { db in try Self.insert(m, digest: digest, file: file, stored: stored, settled: false, into: db) }
    }

    private static func insert(
        _ m: Manifest, digest: String, file: String, stored: [String: String], settled: Bool, into db: Database
    ) throws {
        // A remembered update was recorded by the generation that first
        // included it: its row, its sequence number and its site's
        // evaluation stay that generation's.
        let included = (m.included ?? []).filter { $0.remembered == nil }, rejected = m.rejected ?? []
        try db.executeCached(
            sql: """
                INSERT OR REPLACE INTO generation (number, digest, parent, file, created, accepted, rejected, \
                examples, settled, strategy)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                m.generation!, digest, m.parent?.digest, file, m.created, included.count, rejected.count,
                saturatingSum(included.map(\.numExamples)), settled ? 1 : 0, m.strategy?.name,
            ])
        for b in included {
            try db.executeCached(
                sql:
                    "INSERT OR REPLACE INTO bundle (digest, site, seq, status, reason, generation, stored, "
                    + "staleness) VALUES (?, ?, ?, 'accepted', NULL, ?, ?, ?)",
                arguments: [b.digest, b.site, b.seq, m.generation!, stored[b.digest], b.staleness])
            if let e = b.evaluation {
                let encoder = JSONEncoder()
                encoder.outputFormatting = .sortedKeys
                try db.executeCached(
                    sql:
                        "INSERT OR REPLACE INTO site_evaluation (bundle, site, generation, merged_into, examples, "
                        + "metrics) VALUES (?, ?, ?, ?, ?, ?)",
                    arguments: [
                        b.digest, b.site, b.base ?? (m.generation! - 1), m.generation!, e.numExamples,
                        String(decoding: try encoder.encode(e.metrics), as: UTF8.self),
                    ])
            }
            try db.executeCached(
                sql:
                    "INSERT INTO site (id, last_seq) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET last_seq = "
                    + "MAX(last_seq, excluded.last_seq)",
                arguments: [b.site, b.seq])
        }
        // A partial aggregate counts as a merged input of its region: a copy
        // is refused as merged, and its sequence number is used.
        for p in m.partials ?? [] {
            try db.executeCached(
                sql:
                    "INSERT OR REPLACE INTO bundle (digest, site, seq, status, reason, generation, stored, "
                    + "staleness) VALUES (?, ?, ?, 'accepted', NULL, ?, ?, 0)",
                arguments: [p.digest, p.region, p.seq, m.generation!, stored[p.digest]])
            try db.executeCached(
                sql:
                    "INSERT INTO site (id, last_seq) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET last_seq = "
                    + "MAX(last_seq, excluded.last_seq)",
                arguments: [p.region, p.seq])
        }
        for st in m.statistics ?? [] {
            try db.executeCached(
                sql: "INSERT OR REPLACE INTO statistics (digest, site, seq, generation, stored) VALUES (?, ?, ?, ?, ?)",
                arguments: [st.digest, st.site, st.seq, m.generation!, stored[st.digest]])
        }
        for r in rejected {
            try db.executeCached(
                sql: """
                    INSERT INTO rejection (id, reason, reported) VALUES (?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET reported = excluded.reported
                    """, arguments: [r.digest, r.reason, m.generation!])
        }
    }

    /// Builds a complete state.db at `path` from the files: every generation
    /// (verified by the caller, in order) and every quarantine reason file.
    /// It is built beside `path` under a temporary name and renamed into
    /// place only when complete, so an interrupted rebuild (a crash, a full
    /// disk) never leaves a partial ledger to be trusted.
    public static func rebuild(
        at path: String, generations: [(Manifest, digest: String, file: String)],
        quarantine: [Rejection], evaluations: [EvaluationRow] = [], stored: [String: String] = [:]
    ) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = "\(dir)/.\((path as NSString).lastPathComponent).rebuild-\(getpid())"
        try? FileManager.default.removeItem(atPath: tmp)
        do {
            do {
                let ledger = try Ledger(path: tmp)
                try ledger.db.write { db in
                    for (m, digest, file) in generations {
                        // Only the newest may still have inputs in the inbox.
                        try insert(
                            m, digest: digest, file: file, stored: stored,
                            settled: m.generation != generations.last?.0.generation, into: db)
                    }
                    for q in quarantine {
                        try db.execute(
                            sql:
                                "INSERT INTO rejection (id, reason, stored, reported) VALUES (?, ?, ?, NULL) ON "
                                + "CONFLICT(id) DO UPDATE SET stored = excluded.stored",
                            arguments: [q.id, q.reason, q.stored])
                    }
                    for e in evaluations where generations.contains(where: { $0.0.generation == e.generation }) {
                        try db.execute(
                            sql:
                                "INSERT OR REPLACE INTO evaluation (generation, accuracy, loss, examples, data, "
                                + "evaluated) VALUES (?, ?, ?, ?, ?, ?)",
                            arguments: [e.generation, e.accuracy, e.loss, e.examples, e.data, e.evaluated])
                    }
                    try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('complete', '1')")
                }
                try ledger.db.close()
            }
            try syncFile(tmp)
            faultPoint("rebuild-before-rename")
            try moveFile(tmp, to: path)
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw error
        }
    }
}

extension Database {
    /// `execute(sql:arguments:)` through the connection's statement cache:
    /// a generation of 10⁵ bundles runs the same few inserts 10⁵ times,
    /// and compiling each one anew (with GRDB's authorizer) cost more than
    /// the insert itself.
    fileprivate func executeCached(sql: String, arguments: StatementArguments) throws {
        try cachedStatement(sql: sql).execute(arguments: arguments)
    }
}

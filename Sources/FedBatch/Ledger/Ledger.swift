import Foundation
import GRDB

/// Opens a home's `state.db`. Only one fedbatch process writes a home at a
/// time (merge holds the lock), but `log` or `verify` may read meanwhile,
/// so waits on a busy database instead of failing at once.
func openStateDatabase(_ path: String) throws -> DatabaseQueue {
    var config = Configuration()
    config.busyMode = .timeout(10)
    return try DatabaseQueue(path: path, configuration: config)
}

/// The collector's `state.db` (SQLite): generations, every bundle seen
/// with its verdict, and the last sequence number per site. It is an index
/// over the files, not the truth: `rebuild` recreates it from the signed
/// generations and the quarantine reason files.
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
                t.column("status", .text).notNull()   // accepted | rejected
                t.column("reason", .text)
                t.column("generation", .integer)       // the generation that included it
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
        try migrator.migrate(db)
    }

    /// Whether the inputs of generation `number` have all left the inbox.
    public func isSettled(_ number: Int) throws -> Bool {
        try db.read { db in try Bool.fetchOne(db, sql: "SELECT settled FROM generation WHERE number = ?", arguments: [number]) ?? false }
    }

    public func markSettled(_ number: Int) throws {
        try db.write { db in try db.execute(sql: "UPDATE generation SET settled = 1 WHERE number = ?", arguments: [number]) }
    }

    public func latestGeneration() throws -> GenerationRow? {
        try db.read { db in try Row.fetchOne(db, sql: "SELECT * FROM generation ORDER BY number DESC LIMIT 1").map(Self.row) }
    }

    private static func row(_ r: Row) -> GenerationRow {
        GenerationRow(number: r["number"], digest: r["digest"], parent: r["parent"], file: r["file"], created: r["created"],
                      accepted: r["accepted"], rejected: r["rejected"], examples: r["examples"])
    }

    /// The verdict already recorded for a bundle digest, if any.
    public func bundleStatus(_ digest: String) throws -> String? {
        try db.read { db in try String.fetchOne(db, sql: "SELECT status FROM bundle WHERE digest = ?", arguments: [digest]) }
    }

    public func lastSequence(site: String) throws -> Int64? {
        try db.read { db in try Int64.fetchOne(db, sql: "SELECT last_seq FROM site WHERE id = ?", arguments: [site]) }
    }

    public func recordRejection(digest: String, site: String?, seq: Int64?, reason: String) throws {
        try db.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO bundle (digest, site, seq, status, reason) VALUES (?, ?, ?, 'rejected', ?)",
                           arguments: [digest, site, seq, reason])
        }
    }

    /// Records a generation and the verdicts its manifest carries, in one transaction.
    public func recordGeneration(_ m: Manifest, digest: String, file: String) throws {
        try db.write { db in
            let included = m.included ?? [], rejected = m.rejected ?? []
            try db.execute(sql: """
                INSERT OR REPLACE INTO generation (number, digest, parent, file, created, accepted, rejected, examples, settled)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)
                """, arguments: [
                m.generation!, digest, m.parent?.digest, file, m.created, included.count, rejected.count,
                included.reduce(Int64(0)) { $0 + $1.numExamples },
            ])
            for b in included {
                try db.execute(sql: "INSERT OR REPLACE INTO bundle (digest, site, seq, status, reason, generation) VALUES (?, ?, ?, 'accepted', NULL, ?)",
                               arguments: [b.digest, b.site, b.seq, m.generation!])
                try db.execute(sql: "INSERT INTO site (id, last_seq) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
                               arguments: [b.site, b.seq])
            }
            for r in rejected {
                try db.execute(sql: "INSERT OR IGNORE INTO bundle (digest, status, reason) VALUES (?, 'rejected', ?)", arguments: [r.digest, r.reason])
            }
        }
    }

    /// Recreates the index from the files: every generation (verified by
    /// the caller, in order) and every quarantine reason file.
    public func rebuild(generations: [(Manifest, digest: String, file: String)], quarantineReasons: [(digest: String, reason: String)]) throws {
        try db.write { db in
            try db.execute(sql: "DELETE FROM generation; DELETE FROM bundle; DELETE FROM site;")
        }
        for (m, digest, file) in generations {
            try recordGeneration(m, digest: digest, file: file)
            // Only the newest may still have inputs in the inbox.
            if m.generation != generations.last?.0.generation { try markSettled(m.generation!) }
        }
        for q in quarantineReasons { try recordRejection(digest: q.digest, site: nil, seq: nil, reason: q.reason) }
    }
}

import FedBatchFormats
import FedBatchNative
import FedBatchTrust
import Foundation
import GRDB

/// A site's local state in `state.db` (SQLite): the generations it has
/// accepted, so that a rollback to an older one is refused, and the bundles
/// it has written, which give the next sequence number.
public final class SiteState {
    private let db: DatabaseQueue

    public init(path: String) throws {
        db = try openStateDatabase(path)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "generation") { t in
                t.primaryKey("number", .integer)
                t.column("digest", .text).notNull()
                t.column("seen_at", .text).notNull()
            }
            try db.create(table: "bundle") { t in
                t.primaryKey("seq", .integer)
                t.column("base", .integer).notNull()
                t.column("digest", .text)
                t.column("file", .text).notNull()
                t.column("num_examples", .integer).notNull()
                // "reserved" until the file is in the outbox, then "written".
                t.column("status", .text).notNull()
                t.column("created", .text).notNull()
            }
        }
        migrator.registerMigration("v2-bundle-figures") { db in
            // For the metrics textfile, which a run with nothing to do still
            // rewrites: the last bundle's size and training figures.
            try db.alter(table: "bundle") { t in
                t.add(column: "bytes", .integer)
                t.add(column: "metrics", .text)
            }
        }
        migrator.registerMigration("v3-bundle-kind") { db in
            // Statistics bundles take sequence numbers from the same
            // counter, but are not updates: "already sent" and the metrics
            // look at updates only.
            try db.alter(table: "bundle") { t in t.add(column: "kind", .text).notNull().defaults(to: "update") }
        }
        try migrator.migrate(db)
    }

    /// The highest generation accepted so far, with its digest.
    public func highestGeneration() throws -> (number: Int, digest: String)? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT number, digest FROM generation ORDER BY number DESC LIMIT 1")
                .map { ($0["number"], $0["digest"]) }
        }
    }

    /// Refuses a generation older than the highest seen, or a second,
    /// different generation under a number already seen (a fork); records
    /// it otherwise.
    public func accept(generation number: Int, digest: String, now: Date = Date()) throws {
        try db.write { db in
            if try Self.check(number, digest, in: db) { return }
            try db.execute(
                sql: "INSERT INTO generation (number, digest, seen_at) VALUES (?, ?, ?)",
                arguments: [number, digest, rfc3339(now)])
        }
    }

    /// The rules of `accept` without recording anything (for `log`).
    /// With `rollback` false, only a fork counts (for older links of a chain).
    public func check(generation number: Int, digest: String, rollback: Bool = true) throws {
        _ = try db.read { db in try Self.check(number, digest, rollback: rollback, in: db) }
    }

    /// Throws on a rollback or a fork; true when the generation is known.
    private static func check(_ number: Int, _ digest: String, rollback: Bool = true, in db: Database) throws -> Bool {
        // Older than the newest seen is a rollback, even if it was accepted once.
        if rollback, let highest: Int = try Int.fetchOne(db, sql: "SELECT MAX(number) FROM generation"),
            highest > number
        {
            throw SiteStateError.rollback(offered: number, highest: highest)
        }
        if let known: String = try String.fetchOne(
            db, sql: "SELECT digest FROM generation WHERE number = ?", arguments: [number])
        {
            guard known == digest else { throw SiteStateError.fork(number: number, known: known, offered: digest) }
            return true
        }
        return false
    }

    /// Reserves the next sequence number before the bundle is written, so
    /// that a crash can leave a gap but never reuse a number.
    public func reserveSequence(
        base: Int, file: String, numExamples: Int64, kind: Manifest.Kind = .update, now: Date = Date()
    ) throws -> Int64 {
        try db.write { db in
            let seq = (try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM bundle") ?? 0) + 1
            try db.execute(
                sql:
                    "INSERT INTO bundle (seq, base, file, num_examples, status, created, kind) VALUES (?, ?, ?, ?, "
                    + "'reserved', ?, ?)",
                arguments: [seq, base, file, numExamples, rfc3339(now), kind.rawValue])
            return seq
        }
    }

    /// The bundle of `kind` already written on generation `base`, if any.
    public func writtenUpdate(base: Int, kind: Manifest.Kind = .update) throws -> (seq: Int64, file: String)? {
        try db.read { db in
            try Row.fetchOne(
                db,
                sql:
                    "SELECT seq, file FROM bundle WHERE base = ? AND status = 'written' AND kind = ? ORDER BY seq DESC "
                    + "LIMIT 1",
                arguments: [base, kind.rawValue]
            )
            .map { ($0["seq"], $0["file"]) }
        }
    }

    /// The newest bundle this site wrote.
    public func lastWritten() throws -> (seq: Int64, base: Int, file: String, digest: String, created: String)? {
        try db.read { db in
            try Row.fetchOne(
                db,
                sql:
                    "SELECT seq, base, file, digest, created FROM bundle WHERE status = 'written' AND kind = 'update' "
                    + "ORDER BY seq DESC "
                    + "LIMIT 1"
            )
            .map { ($0["seq"], $0["base"], $0["file"], $0["digest"], $0["created"]) }
        }
    }

    public func markWritten(
        seq: Int64, file: String, digest: String, bytes: Int64? = nil, metrics: [String: Double] = [:]
    ) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let figures = String(decoding: try encoder.encode(metrics), as: UTF8.self)
        try db.write { db in
            try db.execute(
                sql: "UPDATE bundle SET status = 'written', file = ?, digest = ?, bytes = ?, metrics = ? WHERE seq = ?",
                arguments: [file, digest, bytes, figures, seq])
        }
    }

    /// The newest written bundle's size, training figures and time.
    public func lastFigures() throws -> (bytes: Int64?, metrics: [String: Double], examples: Int64, created: String)? {
        try db.read { db in
            try Row.fetchOne(
                db,
                sql:
                    "SELECT bytes, metrics, num_examples, created FROM bundle WHERE status = 'written' AND kind = "
                    + "'update' ORDER BY seq DESC LIMIT 1"
            ).map { row in
                let text: String? = row["metrics"]
                let metrics =
                    text.flatMap { try? JSONDecoder().decode([String: Double].self, from: Data($0.utf8)) } ?? [:]
                return (row["bytes"], metrics, row["num_examples"], row["created"])
            }
        }
    }
}

public enum SiteStateError: Error, Equatable, Sendable, ReasonCoded {
    case rollback(offered: Int, highest: Int)
    case fork(number: Int, known: String, offered: String)

    public var code: String {
        switch self {
        case .rollback: return "generation.rollback"
        case .fork: return "generation.fork"
        }
    }

    public var description: String {
        switch self {
        case let .rollback(offered, highest):
            return
                "generation \(offered) is older than generation \(highest), which this site has already seen: "
                + "refusing a rollback"
        case let .fork(n, known, offered):
            return
                "generation \(n) has digest \(offered), but this site already accepted generation \(n) with "
                + "digest \(known): refusing a forked chain"
        }
    }
}

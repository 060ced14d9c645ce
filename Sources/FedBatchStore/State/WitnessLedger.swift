import FedBatchFormats
import FedBatchNative
import Foundation
import GRDB

/// A witness's record in `state.db` (SQLite): each generation it co-signed,
/// by number and digest. It is written before the cosignature, so that a
/// witness never co-signs two different generations under one number, as a
/// Certificate Transparency witness never signs two different heads of one
/// log: a crash between the two leaves the record, and the rerun can only
/// write the same cosignature again.
public final class WitnessLedger {
    private let db: DatabaseQueue

    public init(path: String) throws {
        db = try openStateDatabase(path)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "cosigned") { t in
                t.primaryKey("generation", .integer)
                t.column("digest", .text).notNull()
                t.column("signed_at", .text).notNull()
            }
        }
        try migrator.migrate(db)
    }

    /// Every generation co-signed, by number.
    public func cosigned() throws -> [Int: String] {
        try db.read { db in
            Dictionary(
                try Row.fetchAll(db, sql: "SELECT generation, digest FROM cosigned").map { row -> (Int, String) in
                    (row["generation"], row["digest"])
                }, uniquingKeysWith: { a, _ in a })
        }
    }

    /// The newest generation co-signed.
    public func newest() throws -> (number: Int, digest: String)? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT generation, digest FROM cosigned ORDER BY generation DESC LIMIT 1")
                .map { ($0["generation"], $0["digest"]) }
        }
    }

    /// Records that generation `number` with `digest` is co-signed; refuses
    /// a different digest under a number already co-signed. Returns false
    /// when this very generation was recorded before (a rerun).
    @discardableResult
    public func record(generation number: Int, digest: String, now: Date = Date()) throws -> Bool {
        try db.write { db in
            if let known = try String.fetchOne(
                db, sql: "SELECT digest FROM cosigned WHERE generation = ?", arguments: [number])
            {
                guard known == digest else {
                    throw WitnessError.fork(generation: number, cosigned: known, offered: digest)
                }
                return false
            }
            try db.execute(
                sql: "INSERT INTO cosigned (generation, digest, signed_at) VALUES (?, ?, ?)",
                arguments: [number, digest, rfc3339(now)])
            return true
        }
    }
}

/// Why a witness refuses to co-sign.
public enum WitnessError: Error, Equatable, Sendable, ReasonCoded, CustomStringConvertible {
    /// A second, different generation under a number already co-signed.
    case fork(generation: Int, cosigned: String, offered: String)
    /// The generation does not re-derive exactly (the audit's reason).
    case notReproduced(generation: Int, reason: String)
    /// A signer's proposal carries a change of the signer set this signer
    /// did not stage (`keys signers`).
    case setNotStaged(generation: Int, reason: String)

    public var code: String {
        switch self {
        case .fork: return "witness.fork"
        case .notReproduced: return "witness.not-reproduced"
        case .setNotStaged: return "signer.set-not-staged"
        }
    }

    public var description: String {
        switch self {
        case let .fork(g, cosigned, offered):
            return
                "this witness co-signed generation \(g) as \(cosigned); it will never co-sign a different generation "
                + "\(g) (\(offered)): the collector has shown two histories, and anyone holding both can prove it"
        case let .notReproduced(g, reason), let .setNotStaged(g, reason):
            return "generation \(g) is not co-signed: \(reason)"
        }
    }
}

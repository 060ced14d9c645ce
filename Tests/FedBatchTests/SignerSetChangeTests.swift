import FedBatchFormats
import FedBatchNative
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// The change of a signer set a generation carries: parsed strictly, since
/// every site adopts it from the chain.
@Suite("signer set changes")
struct SignerSetChangeTests {
    static let keyA = Data("key a".utf8), keyB = Data("key b".utf8), keyC = Data("key c".utf8)
    static let fprA = String(repeating: "A", count: 40), fprB = String(repeating: "B", count: 40)
    static let fprC = String(repeating: "C", count: 40)

    static func change(threshold: Int = 2, from: Int = 5) throws -> SignerSetChange {
        try SignerSetChange.create(
            model: "demo", threshold: threshold,
            signers: ["b": (fprB, keyB), "a": (fprA, keyA), "c": (fprC, keyC)], fromGeneration: from)
    }

    @Test("a change round-trips through the members a generation carries, sorted by id")
    func roundTrip() throws {
        let c = try Self.change()
        #expect(c.statement.signers.map(\.id) == ["a", "b", "c"])
        #expect(
            c.members.map(\.name) == [
                "signer-set/signers.json", "signer-set/a.asc", "signer-set/b.asc", "signer-set/c.asc",
            ])
        let members = Dictionary(uniqueKeysWithValues: c.members.map { ($0.name, $0.data) })
        #expect(try SignerSetChange.carried(in: members) == c)
        #expect(try SignerSetChange.carried(in: ["weights.safetensors": Data()]) == nil)
        #expect(c.sameSet(as: c.from(generation: 9)))
        #expect(!(try Self.change(threshold: 3)).sameSet(as: c))
    }

    @Test(
        "a threshold of half the set or less, a non-canonical statement, a missing or extra key and a changed key are refused"
    )
    func refusals() throws {
        #expect(throws: SignerSetError.self) { try Self.change(threshold: 1) }
        #expect(throws: SignerSetError.self) { try Self.change(threshold: 4) }
        #expect(throws: SignerSetError.self) { try Self.change(from: 1) }
        let c = try Self.change()
        var members = Dictionary(uniqueKeysWithValues: c.members.map { ($0.name, $0.data) })
        func refused(_ m: [String: Data]) -> Bool {
            do {
                _ = try SignerSetChange.carried(in: m)
                return false
            } catch { return error is SignerSetError }
        }
        var m = members
        m["signer-set/c.asc"] = nil
        #expect(refused(m), "a signer without its key")
        m = members
        m["signer-set/d.asc"] = Self.keyA
        #expect(refused(m), "a key for no signer")
        m = members
        m["signer-set/b.asc"] = Data("another key".utf8)
        #expect(refused(m), "a key that is not the one the statement hashes")
        m = members
        m["signer-set/signers.json"] = Data(" ".utf8) + members["signer-set/signers.json"]!
        #expect(refused(m), "a statement with a leading space")
        m = members
        let text = String(decoding: members["signer-set/signers.json"]!, as: UTF8.self)
        m["signer-set/signers.json"] = Data(
            text.replacingOccurrences(of: "\"threshold\":2", with: "\"threshold\":1").utf8)
        #expect(refused(m), "a threshold of one of three")
        m = members
        m["signer-set/signers.json"] = Data(text.replacingOccurrences(of: "\"id\":\"a\"", with: "\"id\":\"../a\"").utf8)
        #expect(refused(m), "an id that is a path")
        members["signer-set/signers.json"] = nil
        #expect(refused(members), "keys without the statement")
    }
}

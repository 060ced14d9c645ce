import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// Who co-signed one generation, as this home judges it.
public struct Cosigners: Sendable, Equatable {
    public struct Refusal: Sendable, Equatable {
        public let witness: String
        public let reason: String
    }
    /// Distinct pinned witnesses whose cosignature verified.
    public var valid: [String] = []
    /// Cosignature files that did not count, and why.
    public var refused: [Refusal] = []
}

/// A generation without the cosignatures `[trust] min_witnesses` asks for.
public struct CosignatureError: Error, Equatable, Sendable, ReasonCoded, CustomStringConvertible {
    public let generation: Int
    public let required: Int
    public let cosigners: Cosigners
    public var code: String { "trust.witnesses" }

    public var description: String {
        var text =
            "generation \(generation) has \(cosigners.valid.count) valid cosignature"
            + "\(cosigners.valid.count == 1 ? "" : "s") from pinned witnesses "
            + (cosigners.valid.isEmpty ? "" : "(\(cosigners.valid.joined(separator: ", "))) ")
            + "and trust.min_witnesses is \(required)"
        if !cosigners.refused.isEmpty {
            text +=
                "; not counted: "
                + cosigners.refused.map { "\($0.witness) (\($0.reason))" }.joined(separator: "; ")
        }
        return text + "; wait for the witnesses (fedbatch pull fetches their cosignatures)"
    }
}

extension Home {
    /// The cosignatures beside generation `number` in generations/ that
    /// verify over `statement`: each by the key pinned for the witness its
    /// file name names, one per witness.
    public func cosigners(of number: Int, statement: Data, verifier: Verifier) -> Cosigners {
        var result = Cosigners()
        for (witness, path) in layout.cosignatures(of: number) {
            do {
                let signature = try readFile(path, cap: 64 << 10)
                let key = try verifier.verifyCosignature(signature, over: statement)
                guard key.role == .witness(witness) else {
                    throw TrustError.wrongSigner(
                        fingerprint: key.fingerprint, pinnedFor: key.role, claimed: .witness(witness),
                        what: "a cosignature of generation \(number)")
                }
                result.valid.append(witness)
            } catch {
                result.refused.append(.init(witness: witness, reason: "\(error)"))
            }
        }
        return result
    }

    /// Refuses a verified generation without `[trust] min_witnesses`
    /// cosignatures; nothing to do on a home that asks for none.
    public func requireWitnesses(_ v: VerifiedContainer, verifier: Verifier) throws {
        let required = config.trust.minWitnesses
        guard required > 0, v.manifest.kind == .generation, let n = v.manifest.generation else { return }
        let found = cosigners(of: n, statement: v.file.statement, verifier: verifier)
        guard found.valid.count >= required else {
            throw CosignatureError(generation: n, required: required, cosigners: found)
        }
    }

    /// Whether generation `n`'s file carries the cosignatures this home
    /// requires, judged on its statement before the file is opened: how
    /// `train` finds the newest generation it may use.
    func hasWitnesses(_ n: Int, verifier: Verifier) -> Bool {
        let required = config.trust.minWitnesses
        guard required > 0 else { return true }
        guard let handle = try? OpenFile(path: layout.generation(n)), let file = try? ContainerFile.read(handle) else {
            return false
        }
        return cosigners(of: n, statement: file.statement, verifier: verifier).valid.count >= required
    }

    /// Under `[trust] min_witnesses`: when the newest generation here lacks
    /// the cosignatures, a warning that says so and which generation a
    /// site uses instead (nil: nothing to say).
    public func witnessWarning() -> String? {
        guard config.trust.minWitnesses > 0, let newest = layout.generationNumbers().last,
            let verifier = try? verifier(), !hasWitnesses(newest, verifier: verifier)
        else { return nil }
        let usable = layout.generationNumbers().last { hasWitnesses($0, verifier: verifier) }
        return "generation \(newest) has fewer than \(config.trust.minWitnesses) cosignature(s) from pinned witnesses; "
            + (usable.map { "using generation \($0), the newest that has them" } ?? "no generation here has them")
    }
}

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
    /// Distinct pinned signers whose cosignature verified (a federation
    /// with no single collector: fedbatch-merge(1)), each with the key it
    /// signed with: whether it counts depends on the signer set that judges
    /// the generation (`signatories`).
    public var signerKeys: [String: String] = [:]
    /// Cosignature files that did not count, and why.
    public var refused: [Refusal] = []
}

/// A generation that fewer signers signed than `[trust] threshold` asks for.
public struct ThresholdError: Error, Equatable, Sendable, ReasonCoded, CustomStringConvertible {
    public let generation: Int
    public let required: Int
    /// The signers whose signature counted.
    public let signers: [String]
    public let why: String?
    public var code: String { "trust.threshold" }

    public var description: String {
        if required == 0 { return "generation \(generation): \(why ?? "")" }
        return "generation \(generation) is signed by \(signers.count) of the signers "
            + (signers.isEmpty ? "" : "(\(signers.joined(separator: ", "))) ")
            + "and the signers' threshold is \(required): a proposal, not yet a generation"
            + (why.map { "; \($0)" } ?? "")
    }
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
    /// verify over `statement`: each by the key pinned for the witness or
    /// the signer its file name names, one per id.
    public func cosigners(of number: Int, statement: Data, verifier: Verifier) -> Cosigners {
        var result = Cosigners()
        for (id, path) in layout.cosignatures(of: number) {
            do {
                let signature = try readFile(path, cap: 64 << 10)
                let key = try verifier.verifyCosignature(signature, over: statement)
                if key.role == .witness(id) {
                    result.valid.append(id)
                } else if verifier.trust.signerID(fingerprint: key.fingerprint) == id {
                    result.signerKeys[id] = key.fingerprint
                } else {
                    throw TrustError.wrongSigner(
                        fingerprint: key.fingerprint, pinnedFor: key.role, claimed: .witness(id),
                        what: "a cosignature of generation \(number)")
                }
            } catch {
                result.refused.append(.init(witness: id, reason: "\(error)"))
            }
        }
        return result
    }

    /// The signers of the set that judges a generation (`signerRule`) that
    /// signed it: its statement's own signer, if that key is one of the
    /// set's, and every valid cosignature by one of them with the key the
    /// set names.
    public func signatories(of v: VerifiedContainer, verifier: Verifier) -> (ids: [String], cosigners: Cosigners) {
        signatories(of: v.manifest.generation!, statement: v.file.statement, signer: v.signer, verifier: verifier)
    }

    /// The same, for generation `n` whose statement `signer` signed.
    func signatories(
        of n: Int, statement: Data, signer: PinnedKey, verifier: Verifier
    ) -> (
        ids: [String], cosigners: Cosigners
    ) {
        let found = cosigners(of: n, statement: statement, verifier: verifier)
        let rule = signerRule(for: n, trust: verifier.trust)
        let slot = rule.id(of: signer.fingerprint).map { [$0] } ?? []
        let cosigned = found.signerKeys.filter { id, key in rule.keys[id]?.contains(key) ?? false }.map(\.key)
        return (Set(slot + cosigned).sorted(), found)
    }

    /// Refuses a verified generation (after generation 0) that fewer than
    /// `[trust] threshold` of the signers signed; on a home with no signer
    /// set, one that a signer's key signed instead of the collector's.
    public func requireSignatures(_ v: VerifiedContainer, verifier: Verifier) throws {
        guard v.manifest.kind == .generation, let n = v.manifest.generation else { return }
        let trust = config.trust
        guard trust.signerSet else {
            if case .signer(let id) = v.signer.role {
                throw ThresholdError(
                    generation: n, required: 0, signers: [id],
                    why: "it is signed by signer \(id), and this home has no [trust] threshold: it takes "
                        + "generations from the collector alone")
            }
            return
        }
        try requireThreshold(n, signatories(of: v, verifier: verifier), verifier: verifier)
    }

    /// Refuses generation `n` (after 0) with fewer signatories than the
    /// threshold of the set that judges it.
    private func requireThreshold(
        _ n: Int, _ signed: (ids: [String], cosigners: Cosigners), verifier: Verifier
    ) throws {
        guard n > 0 else { return }
        let threshold = signerRule(for: n, trust: verifier.trust).threshold
        let (ids, found) = signed
        guard ids.count >= threshold else {
            throw ThresholdError(
                generation: n, required: threshold, signers: ids,
                why: found.refused.isEmpty
                    ? nil
                    : "not counted: " + found.refused.map { "\($0.witness) (\($0.reason))" }.joined(separator: "; "))
        }
    }

    /// Whether generation `n`'s file has the signatures `[trust] threshold`
    /// asks for, judged on its statement (nothing to ask without a signer
    /// set): how `pull` decides whether a downloaded generation is one.
    func hasSignatures(_ path: String, verifier: Verifier) -> Bool {
        guard config.trust.signerSet else { return true }
        // The statement and the signatures are all it takes: no payload.
        guard let file = try? ContainerFile.slot(of: try OpenFile(path: path)),
            let statement = try? Statement.parse(file.statement), let n = statement.generation,
            let signer = try? verifier.verifySignature(file)
        else { return false }
        let signed = signatories(of: n, statement: file.statement, signer: signer, verifier: verifier)
        return (try? requireThreshold(n, signed, verifier: verifier)) != nil
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
        guard let handle = try? OpenFile(path: layout.generation(n)), let file = try? ContainerFile.slot(of: handle)
        else {
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

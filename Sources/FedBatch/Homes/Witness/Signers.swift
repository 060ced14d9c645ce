import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// A federation with no single collector (fedbatch-merge(1), NO SINGLE
/// COLLECTOR): every signer keeps a collector home, merges the shared
/// inbox into a proposal it signs, and co-signs the proposals of the
/// others that it re-derives. A generation is valid once `[trust]
/// threshold` of them signed its statement. A signer signs at most one
/// generation per number: the one in its own generations/, its proposal or
/// the proposal it co-signed, which it places there before it co-signs.
/// With a threshold above half the set, two different generations of one
/// number can never both be valid.
extension Home {
    /// This signer's id: the signer whose pinned key is the one this home
    /// signs with.
    public func ownSignerID() throws -> String {
        guard config.role == .collector, config.trust.signerSet else {
            throw HomeError.config(
                path: layout.config, reason: "this home is not one of a set of signers ([trust] threshold)")
        }
        let rule = currentSignerRule(trust: try TrustSet.load(keysDirectory: layout.keys))
        guard let id = rule.id(of: config.key) else {
            throw HomeError.config(
                path: layout.config,
                reason: rule.fromGeneration > 1
                    ? "this home signs with \(config.key), which is not the key of any signer of the set the chain "
                        + "named from generation \(rule.fromGeneration) (fedbatch keys signers)"
                    : "this home signs with \(config.key), which is not pinned for any signer of trust.signers; pin "
                        + "it with fedbatch keys add --signer ID")
        }
        return id
    }

    /// A signer co-signs another signer's proposal for the next generation:
    /// `proposal` (a file), or the first in proposals/ (by signer id) that
    /// re-derives bit for bit from this home's chain and inputs (its inbox,
    /// accepted/, inputs/ and `directories`). It is placed in generations/
    /// first, as this signer's generation of that number, then co-signed;
    /// once it has the threshold, the next command records it and moves
    /// its inputs out of the inbox as a merge of its own would
    /// (`finishInterruptedMerge`). A signer that holds a different
    /// generation of that number refuses (`witness.fork`).
    public func cosignProposal(
        _ proposal: String?, signer: PayloadSigner, bundles directories: [String] = [],
        progress: (AuditProgress) -> Void = { _ in }
    ) throws -> CosignReport {
        try requireRole(.collector, signer: signer)
        let me = try ownSignerID()
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        Filing.removeCrashLeftovers(layout)
        guard let newest = layout.generationNumbers().last else { throw HomeError.noGeneration(layout.generations) }
        let verifier = try self.verifier()
        // A rerun after a kill between placing a proposal and co-signing
        // it: the newest generation here is another signer's, short of the
        // threshold and of this signer's cosignature (pull places only
        // valid generations, merge only this signer's own). Audited again,
        // then co-signed.
        if proposal == nil, newest > 0,
            !FileManager.default.fileExists(atPath: layout.cosignature(newest, witness: me)),
            !hasSignatures(layout.generation(newest), verifier: verifier)
        {
            let v = try verifier.open(path: layout.generation(newest))
            if verifier.trust.signerID(fingerprint: v.signer.fingerprint) != me {
                let result = try auditChain(
                    generations: [newest], bundles: directories, decryption: signer.decryption, progress: progress
                ).results[0]
                guard result.verdict == .reproduced else {
                    throw WitnessError.notReproduced(
                        generation: newest, reason: result.failure?.description ?? result.verdict.rawValue)
                }
                if let why = try signerSetConsent(v) {
                    throw WitnessError.setNotStaged(generation: newest, reason: why)
                }
                return try cosignPlaced(v, as: me, signer: signer, again: true, audit: result)
            }
        }
        // Two signers that merged the same inbox at once proposed the same
        // generation: merges are bit for bit, and a statement names no
        // signer. Each co-signs the other's, which is its own: one
        // generation per number still holds, and neither proposal is stuck
        // short of the threshold.
        if proposal == nil, newest > 0, !hasSignatures(layout.generation(newest), verifier: verifier),
            !FileManager.default.fileExists(atPath: layout.cosignature(newest, witness: me))
        {
            let mine = try ContainerFile.statement(of: try OpenFile(path: layout.generation(newest)))
            for other in layout.proposals(for: newest) where other.signer != me {
                guard let theirs = try? ContainerFile.statement(of: try OpenFile(path: other.path)),
                    theirs.payloadDigest == mine.payloadDigest
                else { continue }
                let v = try verifier.open(path: layout.generation(newest))
                return try cosignPlaced(
                    v, as: me, signer: signer, again: false,
                    note: "signer \(other.signer) proposed this very generation (the same inputs): co-signed as "
                        + "this signer's own")
            }
        }
        let n = newest + 1
        let candidates: [(signer: String, path: String)]
        if let proposal {
            // A proposal for a number this signer holds already: the same
            // generation (nothing to do but co-sign it), or a fork.
            let statement = try ContainerFile.statement(of: try OpenFile(path: proposal))
            if let k = statement.generation, k <= newest {
                let here = try ContainerFile.statement(of: try OpenFile(path: layout.generation(k))).payloadDigest.hex
                guard here == statement.payloadDigest.hex else {
                    throw WitnessError.fork(generation: k, cosigned: here, offered: statement.payloadDigest.hex)
                }
                if k == newest, !FileManager.default.fileExists(atPath: layout.cosignature(k, witness: me)),
                    !hasSignatures(layout.generation(k), verifier: verifier)
                {
                    return try cosignPlaced(
                        try verifier.open(path: layout.generation(k)), as: me, signer: signer, again: false,
                        note: "\(proposal) is this very generation (the same inputs): co-signed as this signer's own")
                }
                throw WitnessError.notReproduced(
                    generation: k, reason: "it is already this signer's generation \(k); nothing to co-sign")
            }
            candidates = [("", proposal)]
        } else {
            candidates = layout.proposals(for: n).filter { $0.signer != me }
        }
        guard !candidates.isEmpty else {
            throw WitnessError.notReproduced(
                generation: n, reason: "no other signer's proposal for it is in \(layout.proposals) (fedbatch pull)")
        }
        var reasons: [String] = []
        var consent: [String] = []
        for c in candidates {
            let (results, _) = try auditChain(
                generations: [n], bundles: directories, decryption: signer.decryption, candidate: (n, c.path),
                progress: progress)
            let result = results[0]
            guard result.verdict == .reproduced else {
                reasons.append("\(c.path): \(result.failure?.description ?? result.verdict.rawValue)")
                continue
            }
            // A change of the signer set needs the consent of each signer
            // that signs it: re-deriving it only shows the proposer wrote it.
            if let why = try signerSetConsent(try verifier.open(path: c.path)) {
                consent.append("\(c.path): \(why)")
                continue
            }
            // Placed first: from here on this signer's generation n is this
            // one, and no other can take its place.
            let bytes = try readFile(c.path, cap: ContainerLimits.default.maxFileBytes)
            try writeFileAtomically(bytes, to: layout.generation(n))
            faultPoint("signer-after-generation")
            let v = try verifier.open(path: layout.generation(n))
            guard v.digest.hex == result.digest else {
                throw WitnessError.notReproduced(generation: n, reason: "\(c.path) changed while it was audited")
            }
            return try cosignPlaced(v, as: me, signer: signer, again: false, audit: result)
        }
        if reasons.isEmpty { throw WitnessError.setNotStaged(generation: n, reason: consent.joined(separator: "; ")) }
        throw WitnessError.notReproduced(generation: n, reason: (reasons + consent).joined(separator: "; "))
    }

    /// Writes this signer's cosignature of generation `v` (already in
    /// generations/), then records it if the threshold is met.
    private func cosignPlaced(
        _ v: VerifiedContainer, as me: String, signer: PayloadSigner, again: Bool, audit: AuditResult? = nil,
        note: String = "co-signed after an interrupted run; audited then"
    ) throws -> CosignReport {
        let n = v.manifest.generation!
        let file = layout.cosignature(n, witness: me)
        try writeFileAtomically(try signer.sign(v.file.statement), to: file)
        // Recorded as a merge records it, once it is valid; until then the
        // next merge or pull finishes it (SignerWait).
        do {
            _ = try Collector(home: self, signer: signer).prepareToWrite(verifier: try self.verifier())
        } catch is SignerWait {}
        return CosignReport(
            generation: n, digest: v.digest.hex, witness: me, file: file, again: again,
            audit: audit
                ?? AuditResult(
                    generation: n, digest: v.digest.hex, strategy: v.manifest.strategy?.name, verdict: .reproduced,
                    inputs: 0, failure: nil, notes: [note]))
    }

    /// Before a signer proposes generation `n`: another signer's proposal
    /// for it waiting in proposals/ is co-signed first (`SignerWait`).
    func checkNoWaitingProposal(for n: Int) throws {
        guard config.trust.signerSet else { return }
        // A home whose key no signer of the current set holds (one a
        // change of the set removed) proposes nothing.
        let me = try ownSignerID()
        if let other = layout.proposals(for: n).first(where: { $0.signer != me }) {
            throw SignerWait.proposal(generation: n, signer: other.signer)
        }
    }
}

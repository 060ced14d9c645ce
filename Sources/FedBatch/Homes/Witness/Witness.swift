import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What `fedbatch witness` did.
public struct CosignReport: Sendable {
    public let generation: Int
    public let digest: String
    public let witness: String
    /// The cosignature file, beside the generation.
    public let file: String
    /// This witness had co-signed this very generation before (a rerun):
    /// the cosignature was written again.
    public let again: Bool
    public let audit: AuditResult
}

extension Home {
    /// Creates a witness's home pinning the collector's key
    /// (`collectorKeyPath`). Its generations come from the collector
    /// (`fedbatch pull`, or copies into generations/), the inputs they name
    /// into inputs/ (`pull`, when the collector publishes them, or copies);
    /// the sites' keys are pinned with `fedbatch keys add --site`.
    public static func createWitness(
        at root: String, witnessID: String, modelID: String, signer: PayloadSigner, collectorKeyPath: String
    ) throws -> Home {
        try Home.checkName(witnessID, what: "witness id")
        try Home.checkName(modelID, what: "model id")
        let collector = try collectorKeyToPin(collectorKeyPath, signer: signer, home: "witness")
        let config = HomeConfig(role: .witness, modelID: modelID, key: signer.fingerprint, siteID: witnessID)
        try config.validate(path: "--key")
        let layout = HomeLayout(root: root)
        _ = try prepare(root, directories: [layout.keys, layout.siteKeys, layout.generations, layout.inputs])
        try writeFileAtomically(collector.armored, to: layout.collectorKey)
        try writeFileAtomically(Data(config.render().utf8), to: layout.config)
        return Home(layout: layout, config: config)
    }

    /// Audits generation `number` (nil: the newest) and, only if it
    /// re-derives bit for bit from its parent and inputs, co-signs it: a
    /// detached signature by `signer` over the generation's statement,
    /// written beside it as `gNNNNNN-W.fbc`.
    ///
    /// A witness co-signs forward only, and never two generations under one
    /// number: state.db records each generation it co-signs *before* the
    /// cosignature is written, so a crash between the two leaves the
    /// record and a rerun can only sign the same generation again; a
    /// different generation under a recorded number, or a chain that does
    /// not pass through what it co-signed, is refused (`witness.fork`).
    /// Generation 0, which has no inputs, is co-signed as the chain's root.
    /// A private merge's noise cannot be re-derived without the
    /// collector's seed, so such a generation is not co-signed.
    public func cosign(
        generation number: Int?, signer: PayloadSigner, bundles directories: [String] = [],
        progress: (AuditProgress) -> Void = { _ in }
    ) throws -> CosignReport {
        try requireRole(.witness, signer: signer)
        let lock = try self.lock()
        defer { withExtendedLifetime(lock) {} }
        Filing.removeCrashLeftovers(layout)
        guard let n = number ?? layout.chainFiles().last?.number else {
            throw HomeError.noGeneration(layout.generations)
        }
        let ledger = try WitnessLedger(path: layout.stateDatabase)
        if let newest = try ledger.newest(), newest.number > n {
            throw WitnessError.notReproduced(
                generation: n,
                reason:
                    "this witness co-signed generation \(newest.number) already and co-signs forward only; "
                    + "sites use the newest generation with enough cosignatures")
        }
        let (results, digests) = try auditChain(
            generations: [n], bundles: directories, decryption: nil, progress: progress)
        let result = results[0]
        switch result.verdict {
        case .reproduced, .root: break
        case .reproducedExceptNoise:
            throw WitnessError.notReproduced(
                generation: n,
                reason:
                    "it was merged under [privacy], and its noise cannot be re-derived without the collector's seed; "
                    + "a witness co-signs only what it re-derived bit for bit")
        default:
            throw WitnessError.notReproduced(generation: n, reason: result.failure?.description ?? "\(result.verdict)")
        }
        // The chain it re-derived must pass through everything co-signed before.
        for (k, d) in try ledger.cosigned() where k < n && digests[k] != d {
            throw WitnessError.fork(generation: k, cosigned: d, offered: digests[k] ?? "a missing generation")
        }
        let path = layout.generation(n)
        let statement = try ContainerFile.slot(of: try OpenFile(path: path)).statement
        // Recorded first: see above.
        let fresh = try ledger.record(generation: n, digest: result.digest)
        faultPoint("witness-after-ledger")
        let file = layout.cosignature(n, witness: config.siteID!)
        try writeFileAtomically(try signer.sign(statement), to: file)
        return CosignReport(
            generation: n, digest: result.digest, witness: config.siteID!, file: file, again: !fresh, audit: result)
    }
}

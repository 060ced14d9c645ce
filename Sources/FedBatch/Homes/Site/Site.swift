import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// What a site run produced.
public struct WrittenBundle: Sendable, Codable {
    public let path: String
    public let digest: String
    public let site: String
    public let seq: Int64
    public let baseGeneration: Int
    public let baseDigest: String
    public let numExamples: Int64
    public let metrics: [String: Double]
    public let codec: String
    /// The site's evaluation of the base generation (in the bundle unless
    /// training.report_evaluation is false).
    public let evaluation: SiteEvaluation?
}

/// The site side: pick and verify the newest generation, then package a
/// training result as a signed update bundle in `outbox/`.
public struct Site {
    public let home: Home
    public let signer: PayloadSigner

    public init(home: Home, signer: PayloadSigner) throws {
        try home.requireRole(.site, signer: signer)
        self.home = home
        self.signer = signer
    }

    /// Takes the site home's lock for one run of train or pack (a second
    /// run meanwhile exits 4), and removes what a killed run left behind.
    public func lock() throws -> FileLock {
        let lock = try home.lock()
        Filing.removeCrashLeftovers(home.layout)
        return lock
    }

    public var state: SiteState { get throws { try SiteState(path: home.layout.stateDatabase) } }

    /// The generation to train on: a given file, or the newest in
    /// `generations/`, verified against the pinned collector key and checked
    /// against the rollback record. Under `[trust] min_witnesses`, the
    /// newest that carries the cosignatures it asks for: a newer one without
    /// them waits.
    public func baseGeneration(_ explicit: String? = nil) throws -> (VerifiedContainer, ModelWeights) {
        let path: String
        let verifier = try home.verifier()
        if let explicit {
            path = try home.layout.generation(named: explicit)
        } else {
            let numbers = home.layout.generationNumbers()
            guard let newest = numbers.last else { throw HomeError.noGeneration(home.layout.generations) }
            // Judged on the statements; openGeneration checks the one chosen
            // again, after its own signature.
            path = home.layout.generation(numbers.last { home.hasWitnesses($0, verifier: verifier) } ?? newest)
        }
        let (v, weights) = try home.openGeneration(path, verifier: verifier)
        // The generation that announces a rotation is the last the old key
        // signs: keep the new key (and any adopted on the way) for the next.
        try home.adoptTrustChanges(carriedBy: v, verifier: verifier)
        for r in verifier.adopted { try home.record(r) }
        for s in verifier.adoptedSignerSets { try home.record(s) }
        try state.accept(generation: v.manifest.generation!, digest: v.digest.hex)
        return (v, weights)
    }

    /// Refuses a second update on a generation this site already sent one
    /// for: the collector takes one per site and generation, so a second
    /// nightly run with no new generation would only be quarantined.
    public func checkNotSent(base: VerifiedContainer) throws {
        let number = base.manifest.generation!
        if let sent = try state.writtenUpdate(base: number) {
            throw SiteError.alreadySent(generation: number, seq: sent.seq, file: sent.file)
        }
    }

    /// Signs and writes an update: the delta `trained − base`, stored with
    /// `codec`. With a codec that feeds back its error (topk), the residual
    /// the last update left out is added first, and what this one leaves out
    /// is kept for the next.
    public func writeUpdate(
        base: VerifiedContainer, baseWeights: ModelWeights, trained: ModelWeights,
        numExamples: Int64, metrics: [String: Double], codec: any TensorCodec = FP32Codec(),
        evaluation: SiteEvaluation? = nil, now: Date = Date()
    ) throws -> WrittenBundle {
        var delta = trained.subtracting(baseWeights)
        guard delta.tensors.allSatisfy({ $0.allSatisfy(\.isFinite) }) else { throw SiteError.nonFiniteUpdate }
        if codec.feedsBackError, let residual = loadResidual(arch: delta.arch) { delta = delta.adding(residual) }
        let stored = try codec.encode(delta)
        // Checked before a sequence number is taken, so a refusal uses none.
        guard numExamples > 0 else { throw SiteError.noExamples }
        let m = base.manifest
        let number = m.generation!
        let site = home.config.siteID!
        let state = try self.state
        let pending = "\(home.layout.outbox)/.pending"
        let seq = try state.reserveSequence(base: number, file: pending, numExamples: numExamples, now: now)
        var manifest = Manifest(
            kind: .update, model: m.model, created: rfc3339(now), codec: codec.name,
            base: .init(number: number, digest: base.digest.hex), site: .init(id: site, seq: seq),
            numExamples: numExamples, metrics: metrics.filter { $0.value.isFinite })
        if home.config.training.reportEvaluation { manifest.evaluation = evaluation }
        let member = SafetensorsWriter.encode(stored)
        let sealed = try signer.sealInParts(manifest: manifest, members: [(ContainerPath.tensors, member)])
        let name = HomeLayout.bundleFileName(model: m.model.id, base: number, site: site, seq: seq)
        let path = "\(home.layout.outbox)/\(name)"
        try writeFileAtomically(parts: sealed.parts, to: path)
        if codec.feedsBackError {
            // A crash before this line loses one residual: that update's
            // left-out part never reaches the model, nothing worse.
            let sent = codec.decodeAll(try SafetensorsFile(bytes: member), arch: delta.arch)
            try SafetensorsWriter.write(delta.subtracting(sent).namedF32, to: home.layout.residual)
        } else if FileManager.default.fileExists(atPath: home.layout.residual) {
            // Switching away from topk: the residual no longer applies.
            try? FileManager.default.removeItem(atPath: home.layout.residual)
        }
        try state.markWritten(
            seq: seq, file: path, digest: sealed.digest.hex,
            bytes: Int64(sealed.parts.reduce(0) { $0 + $1.count }), metrics: manifest.metrics)
        return WrittenBundle(
            path: path, digest: sealed.digest.hex, site: site, seq: seq, baseGeneration: number,
            baseDigest: base.digest.hex, numExamples: numExamples, metrics: manifest.metrics, codec: codec.name,
            evaluation: manifest.evaluation)
    }
}

/// Why a site wrote no bundle.
public enum SiteError: Error, Equatable, Sendable, ReasonCoded {
    case alreadySent(generation: Int, seq: Int64, file: String)
    case alreadySentStatistics(generation: Int, seq: Int64, file: String)
    case nonFiniteUpdate
    case noExamples

    public var code: String {
        switch self {
        case .alreadySent, .alreadySentStatistics: return "site.already-sent"
        case .nonFiniteUpdate: return "site.non-finite"
        case .noExamples: return "site.no-examples"
        }
    }

    public var description: String {
        switch self {
        case let .alreadySent(g, seq, file):
            return
                "already sent an update for generation \(g) (sequence \(seq), \(file)); the collector takes one per "
                + "site and generation. Wait for the next generation, or use --force to write another"
        case let .alreadySentStatistics(g, seq, file):
            return
                "already wrote statistics on generation \(g) (sequence \(seq), \(file)); the collector combines one "
                + "per site. Use --force to write them again (the collector takes the first it reads)"
        case .nonFiniteUpdate:
            return
                "the trained weights are not all finite (training diverged; lower the learning rate); nothing was "
                + "written"
        case .noExamples:
            return "num_examples must be positive"
        }
    }
}

extension Site {
    /// The residual of the last update, if one was kept and still fits the
    /// model. A residual that does not load (another model, a damaged
    /// file) is dropped: losing it costs accuracy, never correctness.
    func loadResidual(arch: ModelArchitecture) -> ModelWeights? {
        guard FileManager.default.fileExists(atPath: home.layout.residual),
            let file = try? SafetensorsFile.open(path: home.layout.residual),
            let residual = try? ModelWeights(arch: arch, file: file)
        else { return nil }
        return residual
    }
}

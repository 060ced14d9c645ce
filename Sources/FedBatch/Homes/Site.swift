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
    /// against the rollback record.
    public func baseGeneration(_ explicit: String? = nil) throws -> (VerifiedContainer, ModelWeights) {
        let path: String
        if let explicit {
            path = explicit
        } else {
            guard let newest = home.layout.generationNumbers().last else { throw HomeError.noGeneration(home.layout.generations) }
            path = home.layout.generation(newest)
        }
        let (v, weights) = try home.openGeneration(path, verifier: try home.verifier())
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

    /// Signs and writes an update: the delta `trained − base`.
    public func writeUpdate(base: VerifiedContainer, baseWeights: ModelWeights, trained: ModelWeights,
                            numExamples: Int64, metrics: [String: Double], now: Date = Date()) throws -> WrittenBundle {
        let delta = trained.subtracting(baseWeights)
        guard delta.tensors.allSatisfy({ $0.allSatisfy(\.isFinite) }) else { throw SiteError.nonFiniteUpdate }
        // Checked before a sequence number is taken, so a refusal uses none.
        guard numExamples > 0 else { throw SiteError.noExamples }
        let m = base.manifest
        let number = m.generation!
        let site = home.config.siteID!
        let state = try self.state
        let pending = "\(home.layout.outbox)/.pending"
        let seq = try state.reserveSequence(base: number, file: pending, numExamples: numExamples, now: now)
        let codec = FP32Codec()
        let manifest = Manifest(kind: .update, model: m.model, created: rfc3339(now), codec: type(of: codec).name,
                                base: .init(number: number, digest: base.digest.hex), site: .init(id: site, seq: seq),
                                numExamples: numExamples, metrics: metrics.filter { $0.value.isFinite })
        let sealed = try signer.sealInParts(manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(codec.encode(delta)))])
        let name = HomeLayout.bundleFileName(model: m.model.id, base: number, site: site, seq: seq)
        let path = "\(home.layout.outbox)/\(name)"
        try writeFileAtomically(parts: sealed.parts, to: path)
        try state.markWritten(seq: seq, file: path, digest: sealed.digest.hex)
        return WrittenBundle(path: path, digest: sealed.digest.hex, site: site, seq: seq, baseGeneration: number,
                             baseDigest: base.digest.hex, numExamples: numExamples, metrics: manifest.metrics)
    }
}

/// Why a site wrote no bundle.
public enum SiteError: Error, Equatable, Sendable, ReasonCoded {
    case alreadySent(generation: Int, seq: Int64, file: String)
    case nonFiniteUpdate
    case noExamples

    public var code: String {
        switch self {
        case .alreadySent: return "site.already-sent"
        case .nonFiniteUpdate: return "site.non-finite"
        case .noExamples: return "site.no-examples"
        }
    }

    public var description: String {
        switch self {
        case let .alreadySent(g, seq, file):
            return "already sent an update for generation \(g) (sequence \(seq), \(file)); the collector takes one per site and generation. Wait for the next generation, or use --force to write another"
        case .nonFiniteUpdate:
            return "the trained weights are not all finite (training diverged; lower the learning rate); nothing was written"
        case .noExamples:
            return "num_examples must be positive"
        }
    }
}

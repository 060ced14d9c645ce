import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// A regional collector (role `region`): the middle tier of a hierarchical
/// federation (fedbatch-merge(1), HIERARCHICAL MERGES).
///
/// It pins its own sites' keys and the root collector's key, follows the
/// root's chain of generations (verified with the root's key, as a site
/// does), and merges its inbox with the same checks as any collector. What
/// it writes is not a generation but a partial aggregate: the exact sums
/// FedAvg would have added for those bundles, signed with the region's key,
/// for the root to merge in their place. One partial per root generation:
/// the next waits until the root's generation that should include it
/// arrives, so no bundle can be summed twice on the way up.
extension Home {
    /// Creates a regional collector's home pinning the root collector's key
    /// (`collectorKeyPath`). Its generations come from the root (`fedbatch
    /// pull`, or copies into generations/); its sites are pinned with
    /// `fedbatch keys add --site`.
    public static func createRegion(
        at root: String, regionID: String, modelID: String, arch spec: String, signer: PayloadSigner,
        collectorKeyPath: String
    ) throws -> Home {
        try Home.checkName(regionID, what: "region id")
        try Home.checkName(modelID, what: "model id")
        let arch = try ModelArchitecture(spec: spec)
        let collector = try collectorKeyToPin(collectorKeyPath, signer: signer, home: "region")
        let config = HomeConfig(
            role: .region, modelID: modelID, arch: arch.description, key: signer.fingerprint, siteID: regionID)
        try config.validate(path: "--key")
        let layout = HomeLayout(root: root)
        _ = try prepare(
            root,
            directories: [
                layout.keys, layout.siteKeys, layout.inbox, layout.accepted, layout.quarantine,
                layout.generations, layout.outbox,
            ])
        try writeFileAtomically(collector.armored, to: layout.collectorKey)
        try writeFileAtomically(Data(config.render().utf8), to: layout.config)
        return Home(layout: layout, config: config)
    }

    /// A root collector's check of a verified partial aggregate: its model,
    /// and sums that fit the model tensor by tensor.
    func checkPartial(_ v: VerifiedContainer, limits: ContainerLimits) throws -> (VerifiedContainer, PartialAggregate) {
        let m = v.manifest
        let arch = try checkModel(m)
        let sums = try PartialAggregate(
            file: try v.container.tensors(limits: limits.safetensors), arch: arch,
            totalWeight: (m.included ?? []).reduce(0) { $0 + $1.weight }, count: m.included?.count ?? 0)
        return (v, sums)
    }

    /// The file name of this region's partial aggregate for generation `n`.
    func partialFileName(for n: Int) -> String {
        "\(config.modelID)-\(HomeLayout.generationName(n))-\(config.siteID!).fbp"
    }

    /// This region's partial for generation `n`, if one was written: in
    /// outbox/ (not pushed yet) or sent/.
    func existingPartial(for n: Int) -> String? {
        let name = partialFileName(for: n)
        return [layout.outbox, layout.sent].map { "\($0)/\(name)" }.first { FileManager.default.fileExists(atPath: $0) }
    }
}

extension Collector {
    /// A regional collector's merge: the same checks and passes as the
    /// root's (`gather`), then a partial aggregate instead of a generation.
    func mergeRegion(_ run: MergeRun) throws -> MergeReport {
        let verifier = try home.verifier()
        let (current, currentWeights, ledger) = try prepareToWrite(verifier: verifier)
        let arch = currentWeights.arch
        let strategy = try makeStrategy(run, current: current, arch: arch)
        try checkMemory(strategy: strategy)
        guard let summing = strategy as? PartialAggregating else {
            throw PartialError.strategy(type(of: strategy).name)
        }
        if let waits = regionWaits(current: current, strategy: strategy, quorum: run.quorum) { return waits }
        var round = try makeRound(
            current: current, base: .memory(currentWeights), ledger: ledger, strategy: strategy, release: nil,
            root: false)
        var outcomes = MergeOutcomes()
        if let waiting = try gather(
            run, into: &round, strategy: strategy, arch: arch, verifier: verifier, ledger: ledger, outcomes: &outcomes)
        {
            return waiting
        }
        run.progress(.init(phase: .write, done: 0, total: 1, file: nil))
        let inputs = round.inputs
        let (path, digest, manifest) = try writePartial(
            round: round, strategy: summing, current: current, arch: arch, inputs: inputs.map { ($0.entry, $0.digest) })
        return outcomes.report(
            .merged, quorum: run.quorum, passed: inputs.count, strategy: type(of: strategy).name,
            generation: manifest.site.map { Int($0.seq) }, file: path, digest: digest,
            accepted: accepted(round, stored: nil), kind: .partial)
    }

    /// A regional collector writes one partial per root generation: until
    /// the root's generation that should include it arrives, a merge does
    /// nothing (and a rule that is not a sum is refused outright).
    private func regionWaits(
        current: VerifiedContainer, strategy: AggregationStrategy, quorum: Int
    ) -> MergeReport? {
        let target = current.manifest.generation! + 1
        guard let made = home.existingPartial(for: target) else { return nil }
        var outcomes = MergeOutcomes()
        outcomes.wait(
            name: (made as NSString).lastPathComponent, file: made,
            reason: "this region's partial aggregate for generation \(target) is made; the next waits "
                + "for the root's generation \(target) (fedbatch pull)")
        return outcomes.report(.empty, quorum: quorum, passed: 0, strategy: type(of: strategy).name)
    }

    /// A region records each root generation that arrived since its last
    /// merge (they come several at a time, by pull or by copy), each
    /// verified, so that the bundles they include count as merged.
    func catchUp(ledger: Ledger, verifier: Verifier, current: VerifiedContainer) throws {
        let n = current.manifest.generation!
        let latest = try ledger.latestGeneration()?.number ?? -1
        guard latest < n - 1 else { return }
        for k in (latest + 1)..<n {
            let v = try verifier.open(path: home.layout.generation(k))
            guard v.manifest.generation == k else {
                throw HomeError.config(
                    path: v.path, reason: "holds generation \(v.manifest.generation ?? -1), not \(k)")
            }
            try ledger.recordGeneration(v.manifest, digest: v.digest.hex, file: v.path)
            try ledger.markSettled(k)
        }
    }

    /// Writes the partial aggregate of a region's merge into outbox/ and
    /// moves its inputs to accepted/: the partial first (temp file, fsync,
    /// rename), so a crash leaves the bundles in the inbox, where the next
    /// merge finds them merged once the root's generation arrives.
    func writePartial(
        round: MergeRound, strategy: PartialAggregating, current: VerifiedContainer, arch: ModelArchitecture,
        inputs: [(entry: DirectoryEntry, digest: String)]
    ) throws -> (path: String, digest: String, manifest: Manifest) {
        let layout = home.layout
        let number = current.manifest.generation!
        let sums = strategy.partial()
        let included = round.sortedIncluded
        var manifest = Manifest(
            kind: .partial, model: current.manifest.model, created: round.inputs.map(\.created).max()!,
            codec: Manifest.exactSumCodec, base: .init(number: number, digest: current.digest.hex),
            site: .init(id: home.config.siteID!, seq: Int64(number + 1)),
            numExamples: saturatingSum(included.map(\.numExamples)), included: included,
            strategy: .init(name: "exact-sum", parameters: round.partialSettings))
        manifest.metrics = [
            "bundles": Double(included.count), "examples": included.reduce(0.0) { $0 + Double($1.numExamples) },
            "weight": sums.totalWeight,
        ]
        let sealed = try signer.sealInParts(
            manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(sums.tensors(arch: arch)))])
        try FileManager.default.createDirectory(atPath: layout.outbox, withIntermediateDirectories: true)
        let path = "\(layout.outbox)/\(home.partialFileName(for: number + 1))"
        try writeFileAtomically(parts: sealed.parts, to: path)
        faultPoint("after-partial")
        for k in inputs {
            try moveEntry(
                k.entry, to: layout.accepted, as: try Filing.freeName(in: layout.accepted, for: k.entry.name),
                sync: false)
        }
        try syncDirectory(layout.accepted)
        try syncDirectory(layout.inbox)
        return (path, sealed.digest.hex, sealed.manifest)
    }
}

extension ContainerLimits {
    /// Caps for a root collector's inbox, which holds partial aggregates as
    /// well as updates: a partial's sums take 16 bytes a parameter.
    public static func partials(of arch: ModelArchitecture) -> ContainerLimits {
        var l = ContainerLimits.updates(of: arch)
        let tensors = Int64(arch.parameterCount) * 16 + (64 << 10) + Int64(arch.tensorShapes.count) * 512
        l.maxMemberBytes = max(tensors, 1 << 20)
        // A version-2 partial lists every bundle it covers in its manifest
        // (about 400 bytes each); version 3 in included.jsonl, which the
        // reader caps by the declared count on top of these caps.
        l.maxManifestBytes = 64 << 20
        l.maxDecompressedBytes = l.maxMemberBytes + Int64(l.maxManifestBytes) + (2 << 20)
        l.maxFileBytes = l.maxDecompressedBytes + l.maxDecompressedBytes / 128 + (1 << 20) + Int64(l.maxSignatureBytes)
        return l
    }
}

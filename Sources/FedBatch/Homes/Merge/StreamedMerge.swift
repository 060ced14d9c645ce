import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// A collector's merge that streams (`[merge] stream`, fedbatch-merge(1),
/// STREAMING): the same steps as a merge in memory, with the current
/// generation's weights and optimiser state, each bundle's tensors and the
/// new generation's members on disk, in unnamed scratch files in the home,
/// and the arithmetic done a chunk of the model at a time over every
/// bundle (`StreamingMerge`). Memory no longer grows with the model; the
/// generation written is byte-identical to the one a merge in memory writes.
extension Collector {
    /// The scratch files of a streaming merge, when this merge streams:
    /// FedAvg or a server optimiser at a collector without regions, on a
    /// model of float32 tensors only, and `stream = "always"`, or `"auto"`
    /// and a model above `StreamMode.autoParameters`. The model's size is
    /// read from the current generation's manifest before it is verified;
    /// it only chooses the way, and the verified one must agree.
    func streamingSpill(strategyName: String) throws -> ContainerReader.Spill? {
        let settings = home.config.merge
        guard settings.stream != .never, home.config.role == .collector, settings.regions.isEmpty,
            let newest = home.layout.generationNumbers().last,
            let manifest = try? ContainerReader.peekManifest(
                OpenFile(path: home.layout.generation(newest)), limits: .default),
            let arch = try? ModelArchitecture(spec: manifest.model.arch),
            arch.dtypes.allSatisfy({ $0 == .f32 }),
            (try? Strategies.make(name: strategyName, parameters: settings.strategyParameters, arch: arch))
                is StreamingAggregation
        else { return nil }
        guard settings.stream == .always || arch.parameterCount > StreamMode.autoParameters else { return nil }
        return .init(members: [ContainerPath.tensors, ContainerPath.optimizerState], directory: home.layout.root)
    }

    /// One attempt at a streaming merge (`mergeRoot` runs another when a
    /// sum leaves the exact grid: `StreamingRestart`).
    func mergeStreaming(
        _ run: MergeRun, noiseSeed: [UInt8]?, verifier: Verifier, spill: ContainerReader.Spill
    ) throws -> MergeReport {
        let (current, baseSource, ledger) = try prepareToWrite(verifier: verifier) {
            try currentGeneration(verifier: verifier, spill: spill)
        }
        let arch = try ModelArchitecture(spec: current.manifest.model.arch)
        try home.checkNoWaitingProposal(for: current.manifest.generation! + 1)
        let strategy = try Strategies.make(
            name: run.strategyName, parameters: home.config.merge.strategyParameters, arch: arch)
        guard let streaming = strategy as? StreamingAggregation, arch.dtypes.allSatisfy({ $0 == .f32 }) else {
            throw HomeError.config(
                path: current.path, reason: "its model changed while the merge chose to stream; run it again")
        }
        try checkMemory(strategy: strategy)
        let release = try privateRelease(strategy: strategy, current: current.manifest, seed: noiseSeed)
        let chunk = Self.streamingChunk(home.config.merge)
        let base = DecodedDelta(arch: arch, stored: baseSource, codec: FP32Codec())
        var round = try makeRound(
            current: current,
            base: .streamed(
                .init(base: base, chunk: chunk, learningRate: (strategy as? FedAvg)?.serverLearningRate ?? 1)),
            ledger: ledger, strategy: strategy, release: release, root: true)
        var outcomes = MergeOutcomes()
        if let waiting = try gather(
            run, into: &round, strategy: strategy, arch: arch, verifier: verifier, ledger: ledger,
            outcomes: &outcomes, spill: spill)
        {
            var waiting = waiting
            waiting.streamed = true
            return waiting
        }
        let forgotten = try remember(into: &round, current: current, arch: arch, ledger: ledger, spill: spill)
        run.progress(.init(phase: .write, done: 0, total: 1, file: nil))

        // The chunk pass: the new weights and state into scratch files.
        try streaming.beginStreaming(
            inputs: round.streamed.map(\.input),
            state: try current.container.safetensors(ContainerPath.optimizerState))
        let output = try StreamedOutput(arch: arch, state: streaming.streamedState, in: spill.directory, chunk: chunk)
        do {
            try StreamingMerge.run(round.streamed.map(\.input), base: base, chunk: chunk) { t, range, sums, b in
                try streaming.finish(
                    tensor: t, elements: range, sums: sums, base: b, into: output.values, moments: output.moments)
                try output.write(tensor: t, elements: range)
            }
        } catch let overflow as StreamingOverflow {
            let digest = round.streamed[overflow.position].digest
            guard let input = round.inputs.first(where: { $0.digest == digest }) else {
                // A remembered update: it is no file of the inbox.
                throw overflow.refusal
            }
            throw StreamingRestart(
                rejection: try refuse(
                    input.entry, error: overflow.refusal, bundleDigest: digest, ledger: ledger, now: run.now))
        }
        var report = try writeGeneration(
            round: round, strategy: strategy, current: current, ledger: ledger, release: release, quorum: run.quorum,
            outcomes: outcomes, streamed: output)
        report.remembered = round.remembered
        report.forgotten = forgotten
        report.streamed = true
        return report
    }

    /// Elements per chunk: `[merge] chunk_mb` MiB (64 by default, as for
    /// the robust rules' passes) for a chunk's sums (16 bytes an element),
    /// base, delta and output, and a server optimiser's moments (4 each):
    /// 2 Mi elements by default.
    static func streamingChunk(_ settings: MergeSettings) -> Int {
        max(64, Int((settings.chunkMiB ?? 64) * 1_048_576 / 32))
    }
}

/// A sum left the exact grid in a streaming merge: the input named was
/// refused (and filed), and the merge must run again without it.
struct StreamingRestart: Error {
    let rejection: MergeReport.Rejection
}

/// The new generation's weights, and a server optimiser's state, written a
/// chunk at a time to scratch files at the offsets their safetensors
/// headers give.
final class StreamedOutput {
    let values: NumericBuffer<Float>
    let moments: (m: NumericBuffer<Float>, v: NumericBuffer<Float>)?
    let weights: Container.SpilledMember
    let state: Container.SpilledMember?
    private let weightsData: Int64
    private let stateData: Int64
    private let layout: StreamedState?
    /// Each tensor's first element, counted from the weights' data section.
    private let offsets: [Int]

    init(arch: ModelArchitecture, state: StreamedState?, in directory: String, chunk: Int) throws {
        values = NumericBuffer<Float>(count: chunk)
        let header = SafetensorsWriter.header(arch.tensorShapes.map { ($0.name, .f32, $0.shape) })
        let file = try ScratchFile(in: directory)
        try file.write(header, at: 0)
        weightsData = Int64(header.count)
        var at = 0
        offsets = arch.tensorShapes.map { shape in
            defer { at += elementCount(shape.shape)! }
            return at
        }
        weights = .init(file: file, length: weightsData + Int64(at) * 4)
        layout = state
        if let state {
            let file = try ScratchFile(in: directory)
            try file.write(state.header, at: 0)
            try file.write(LittleEndian.bytes(of: [state.step]), at: Int64(state.header.count))
            stateData = Int64(state.header.count)
            self.state = .init(file: file, length: stateData + Int64(1 + 2 * at) * 4)
            moments = (NumericBuffer<Float>(count: chunk), NumericBuffer<Float>(count: chunk))
        } else {
            stateData = 0
            self.state = nil
            moments = nil
        }
    }

    /// Writes the chunk just finished: elements `range` of tensor `t`.
    func write(tensor t: Int, elements range: Range<Int>) throws {
        try weights.file.write(values, count: range.count, at: weightsData + Int64(offsets[t] + range.lowerBound) * 4)
        if let layout, let state, let moments {
            try state.file.write(
                moments.m, count: range.count, at: stateData + Int64(layout.offsets[t].m + range.lowerBound) * 4)
            try state.file.write(
                moments.v, count: range.count, at: stateData + Int64(layout.offsets[t].v + range.lowerBound) * 4)
        }
    }
}

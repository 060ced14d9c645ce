import FedBatchFormats
import FedBatchNative
import Foundation

/// FedAvg and the server optimisers computed a chunk of the model at a time
/// over every bundle at once (fedbatch-merge(1), STREAMING), so that memory
/// holds one chunk of the exact sums, of the base, of each bundle's decoded
/// delta and of the output, whatever the size of the model. The bundles and
/// the base are spilled to scratch files by the collector and read back
/// here a chunk at a time; the output goes to scratch files the collector
/// then hashes and compresses into the generation.
///
/// The result is byte-identical to adding each bundle whole, in digest
/// order (`FedAvg.add`), then finishing: every per-element formula is the
/// same one, Int128 addition is exact and commutes, and the checks that
/// can refuse a bundle on its own (a non-finite result, the norm for the
/// clip, a term beyond the exact grid) run first, bundle by bundle
/// (`admit`). Only a sum beyond the grid depends on the others: the first
/// bundle, in digest order, whose addition would overflow a sum given
/// those before it is the one adding whole would refuse, and `run` names it
/// (`StreamingOverflow`) so that the collector refuses it and merges again.
public enum StreamingMerge {
    /// One delta a streaming merge takes, with the weight and scale
    /// (staleness factor × clip) its terms are multiplied by.
    public struct Input {
        public let delta: DecodedDelta
        public let weight: Double
        public let scale: Double
        public init(delta: DecodedDelta, weight: Double, scale: Double) {
            self.delta = delta
            self.weight = weight
            self.scale = scale
        }
        /// weight · scale, as `FedAvg.add` computes it.
        var factor: Double { weight * scale }
    }

    /// Every tensor in chunks of `chunk` elements, in the model's order.
    static func chunks(_ arch: ModelArchitecture, chunk: Int) -> [(t: Int, range: Range<Int>)] {
        var out: [(Int, Range<Int>)] = []
        for (t, shape) in arch.tensorShapes.enumerated() {
            let n = elementCount(shape.shape)!
            var start = 0
            repeat {
                let end = min(n, start + chunk)
                out.append((t, start..<end))
                start = end
            } while start < n
        }
        return out
    }

    /// The checks adding one delta whole would make before it touches a
    /// sum, read a chunk at a time against the base: every base + lr·Δ a
    /// finite float32 (`FedAvg.checkStaysFinite`), the L2 norm for the clip,
    /// and every term weight·scale·clip·Δ on the exact grid (its largest
    /// magnitude per tensor decides, the grid being symmetric). Returns the
    /// clip factor.
    public static func admit(
        _ delta: DecodedDelta, base: DecodedDelta, serverLearningRate lr: Double, weight: Double,
        staleness: Double, clipNorm: Double?, chunk: Int
    ) throws -> Double {
        let arch = delta.arch
        let limit = Double(Float.greatestFiniteMagnitude)
        let b = NumericBuffer<Float>(count: chunk), d = NumericBuffer<Float>(count: chunk)
        var squares = 0.0
        var largest = [Float](repeating: 0, count: arch.tensorShapes.count)
        for (t, range) in chunks(arch, chunk: chunk) {
            base.decode(t, elements: range, into: b)
            delta.decode(t, elements: range, into: d)
            var top = largest[t]
            for i in 0..<range.count {
                let x = d[i]
                guard abs(Double(b[i]) + lr * Double(x)) <= limit else {
                    throw AggregationError.nonFiniteResult(
                        tensor: arch.tensorShapes[t].name, index: range.lowerBound + i)
                }
                squares += Double(x) * Double(x)
                top = max(top, abs(x))
            }
            largest[t] = top
        }
        try delta.checkReads()
        try base.checkReads()
        var clip = 1.0
        if let bound = clipNorm {
            let norm = squares.squareRoot()
            if norm > bound { clip = bound / norm }
        }
        let factor = weight * (staleness * clip)
        for (t, top) in largest.enumerated() {
            var outOfRange = false
            _ = FixedPoint.fixed(factor * Double(top), &outOfRange)
            if outOfRange { throw AggregationError.outOfRange(tensor: arch.tensorShapes[t].name, sum: false) }
        }
        return clip
    }

    /// The exact sums of `inputs`, a chunk at a time, each chunk handed
    /// with the base's to `finish`, which writes the output. Throws
    /// `StreamingOverflow` naming the input adding whole would refuse when
    /// a sum leaves the grid; nothing handed to `finish` is then to be used.
    public static func run(
        _ inputs: [Input], base: DecodedDelta, chunk: Int,
        finish: (_ t: Int, _ range: Range<Int>, _ sums: NumericBuffer<Int128>, _ base: NumericBuffer<Float>) throws
            -> Void
    ) throws {
        let arch = base.arch
        let sums = NumericBuffer<Int128>(count: chunk)
        let b = NumericBuffer<Float>(count: chunk), d = NumericBuffer<Float>(count: chunk)
        // After the first overflow only inputs before the earliest one found
        // can change which input is refused: later chunks add only those.
        var refused: (position: Int, tensor: String)?
        for (t, range) in chunks(arch, chunk: chunk) {
            for i in 0..<range.count { sums[i] = 0 }
            var ignored = false
            for (k, input) in inputs.enumerated() {
                if let r = refused, k >= r.position { break }
                input.delta.decode(t, elements: range, into: d)
                let factor = input.factor
                var overflow = false
                for i in 0..<range.count {
                    let (s, o) = sums[i].addingReportingOverflow(FixedPoint.fixed(factor * Double(d[i]), &ignored))
                    sums[i] = s
                    overflow = overflow || o
                }
                if overflow {
                    refused = (k, arch.tensorShapes[t].name)
                    break
                }
            }
            if refused == nil {
                base.decode(t, elements: range, into: b)
                try finish(t, range, sums, b)
            }
        }
        for input in inputs { try input.delta.checkReads() }
        try base.checkReads()
        if let refused { throw StreamingOverflow(position: refused.position, tensor: refused.tensor) }
    }
}

/// A streaming merge's sum left the exact grid when input `position` was
/// added: the input adding whole would refuse, with the same reason.
public struct StreamingOverflow: Error {
    public let position: Int
    public let tensor: String
    public var refusal: AggregationError { .outOfRange(tensor: tensor, sum: true) }
}

/// What a strategy does to take part in a streaming merge: start from a
/// state it reads a chunk at a time, and turn each chunk of exact sums into
/// the new weights (and, for a server optimiser, its new moments).
public protocol StreamingAggregation: AggregationStrategy {
    /// Takes `inputs` (already admitted) as `add` would have; their weights
    /// make the denominator.
    func beginStreaming(inputs: [StreamingMerge.Input], state: (any TensorSource)?) throws
    /// The new weights of one chunk into `out`, and the new moments of a
    /// server optimiser into `moments`; refuses a non-finite weight.
    func finish(
        tensor t: Int, elements range: Range<Int>, sums: NumericBuffer<Int128>, base: NumericBuffer<Float>,
        into out: NumericBuffer<Float>, moments: (m: NumericBuffer<Float>, v: NumericBuffer<Float>)?) throws
    /// After `beginStreaming`: the layout of the state member the
    /// generation carries, or nil for a stateless strategy.
    var streamedState: StreamedState? { get }
}

/// A server optimiser's state member written a chunk at a time: its
/// safetensors header, the step, and where each tensor's m and v go, in
/// float32 elements from the start of the data section (the step is
/// element 0).
public struct StreamedState {
    public let header: Data
    public let step: Float
    public let offsets: [(m: Int, v: Int)]
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// FedAvg's exact fixed-point sums (FixedPoint, PartialAggregate): the
/// property hierarchical merges rest on is that any grouping of the same
/// bundles gives the same bits.
@Suite("exact sums")
struct ExactSumTests {
    let arch = try! ModelArchitecture(spec: "mlp:6-5-3")

    /// Values from 1e-7 to 30 in magnitude, both signs, full mantissas.
    func randomDelta(_ seed: UInt64) throws -> DecodedDelta {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func next() -> Double {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Double(state >> 11) / Double(1 << 53)
        }
        let named = arch.tensorShapes.map { name, shape in
            (
                name,
                Tensor(
                    shape: shape,
                    floats: (0..<shape.reduce(1, *)).map { _ in Float((next() * 2 - 1) * pow(10, -7 + 8.5 * next())) })
            )
        }
        return try DecodedDelta.checked(
            try SafetensorsFile(bytes: SafetensorsWriter.encode(named)), codec: Codecs.make(name: "fp32"), arch: arch)
    }

    func constantDelta(_ v: Float) throws -> DecodedDelta {
        let named = arch.tensorShapes.map { name, shape in
            (name, Tensor(shape: shape, floats: [Float](repeating: v, count: shape.reduce(1, *))))
        }
        return try DecodedDelta.checked(
            try SafetensorsFile(bytes: SafetensorsWriter.encode(named)), codec: Codecs.make(name: "fp32"), arch: arch)
    }

    var base: ModelWeights {
        ModelWeights(
            arch: arch, tensors: arch.tensorShapes.map { [Float](repeating: 0.5, count: $0.shape.reduce(1, *)) })
    }

    @Test(
        "a term becomes t·2⁶³ truncated toward zero, checked against Int128(Double); out of range, Inf and NaN are flagged"
    )
    func conversion() {
        var state: UInt64 = 12345
        for _ in 0..<20_000 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let mantissa = Double(state >> 11) / Double(1 << 53)
            let exponent = Int(state % 150) - 88  // 2^-88 to 2^61
            let t = (state & 1 == 0 ? 1 : -1) * mantissa * pow(2, Double(exponent))
            var flagged = false
            let v = FixedPoint.fixed(t, &flagged)
            #expect(!flagged)
            #expect(v == Int128((t * 0x1p63).rounded(.towardZero)), "t = \(t)")
        }
        for bad in [0x1p62, -0x1p62, 1e300, Double.infinity, -Double.infinity, Double.nan] {
            var flagged = false
            #expect(FixedPoint.fixed(bad, &flagged) == 0 && flagged, "\(bad)")
        }
        var flagged = false
        #expect(
            FixedPoint.fixed(0x1p-64, &flagged) == 0 && FixedPoint.fixed(-0.0, &flagged) == 0
                && FixedPoint.fixed(5e-324, &flagged) == 0 && !flagged)
        #expect(FixedPoint.fixed(0x1p-63, &flagged) == 1 && FixedPoint.fixed(-0x1.8p-63, &flagged) == -1 && !flagged)
        #expect(FixedPoint.fixed(0x1p62.nextDown, &flagged) == Int128(1) << 125 - Int128(1) << 72 && !flagged)
    }

    @Test(
        "a sum becomes the float64 nearest to it, as the standard library's (slow) conversion gives, extremes included")
    func toDouble() {
        var state: UInt64 = 99
        var values: [Int128] = [
            0, 1, -1, Int128.max, Int128.min, Int128(1) << 64, (Int128(1) << 117) + 1, -(Int128(1) << 117) - 1,
        ]
        for k in 0..<50_000 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let a = state
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let v =
                (Int128(truncatingIfNeeded: a) << 64 | Int128(truncatingIfNeeded: state)) >> (127 - Int(state % 127))
            values.append(k % 2 == 0 ? v : 0 &- v)
        }
        // Ties: exactly halfway between two doubles, both ways to even.
        values += [
            (Int128(1) << 53) + 1, (Int128(1) << 53) + 3, ((Int128(1) << 53) + 1) << 40,
            -(((Int128(1) << 53) + 3) << 60),
        ]
        for v in values { #expect(FixedPoint.double(v) == Double(v) * 0x1p-63, "\(v)") }
    }

    @Test(
        "forty bundles summed at once, in two partials, in five, or in reverse give the same bits, where float64 sums do not"
    )
    func anyGrouping() throws {
        let deltas = try (1...40).map { try randomDelta(UInt64($0)) }
        let weights = (1...40).map { Double(37 * $0 % 1000 + 1) }
        func flat(_ order: [Int]) throws -> ModelWeights {
            let s = FedAvg(arch: arch)
            for i in order {
                try s.add(delta: deltas[i], weight: weights[i], scale: i % 3 == 0 ? 0.7071067811865476 : 1)
            }
            return try s.finish(base: base)
        }
        func grouped(_ groups: [[Int]]) throws -> ModelWeights {
            let root = FedAvg(arch: arch)
            for g in groups {
                let region = FedAvg(arch: arch)
                for i in g {
                    try region.add(delta: deltas[i], weight: weights[i], scale: i % 3 == 0 ? 0.7071067811865476 : 1)
                }
                try root.add(partial: region.partial())
            }
            return try root.finish(base: base)
        }
        let reference = try flat(Array(0..<40))
        #expect(try flat(Array((0..<40).reversed())).tensors == reference.tensors)
        #expect(try grouped([Array(0..<17), Array(17..<40)]).tensors == reference.tensors)
        #expect(
            try grouped(stride(from: 0, to: 40, by: 8).map { Array($0..<($0 + 8)) }.reversed()).tensors
                == reference.tensors)
        // The premise: plain float64 accumulation in another grouping
        // differs in the last bits somewhere, which is why sums are exact.
        var differs = false
        for t in 0..<arch.tensorShapes.count {
            let n = base.tensors[t].count
            for e in 0..<n {
                let terms = (0..<40).map { i in
                    weights[i] * (i % 3 == 0 ? 0.7071067811865476 : 1) * Double(deltas[i].withTensor(t) { $0[e] })
                }
                let once = terms.reduce(0, +)
                let split = terms[0..<17].reduce(0, +) + terms[17..<40].reduce(0, +)
                if once != split { differs = true }
            }
        }
        #expect(differs)
    }

    @Test("a term or a sum beyond the exact range refuses the delta and leaves the sums exactly as they were")
    func outOfRange() throws {
        let s = FedAvg(arch: arch)
        try s.add(delta: try randomDelta(7), weight: 100)
        let before = try s.finish(base: base)
        #expect(throws: AggregationError.self) { try s.add(delta: try constantDelta(1e17), weight: 100) }
        #expect(try s.finish(base: base).tensors == before.tensors)
        // Terms of 4e18 are each in range; four sum to 1.6e19, still in
        // range, and a fifth would pass 1.8e19.
        let t = FedAvg(arch: arch)
        for _ in 0..<4 { try t.add(delta: try constantDelta(4e18), weight: 1) }
        let four = t.partial().sums.compactMap { $0?.buffer.first }
        do {
            try t.add(delta: try constantDelta(4e18), weight: 1)
            Issue.record("a sum past 1.8e19 was accepted")
        } catch let e as AggregationError {
            #expect(e.code == "aggregation.out-of-range")
        }
        #expect(t.partial().sums.compactMap { $0?.buffer.first } == four && t.count == 4)
    }

    @Test("a partial's tensors survive safetensors: every Int128 sum and the empty-increment marker")
    func safetensorsRoundTrip() throws {
        let s = FedAvg(arch: arch)
        for i in 1...5 { try s.add(delta: try randomDelta(UInt64(i)), weight: Double(i * 1000)) }
        try s.add(delta: try constantDelta(-3e15), weight: 1000)
        let p = s.partial()
        let file = try SafetensorsFile(bytes: SafetensorsWriter.encode(p.tensors(arch: arch)))
        let back = try PartialAggregate(file: file, arch: arch, totalWeight: p.totalWeight, count: p.count)
        for t in 0..<arch.tensorShapes.count {
            #expect(Array(back.sums[t]!.buffer) == Array(p.sums[t]!.buffer))
        }
        #expect(Array(p.sums[0]!.buffer).contains { $0 < -(Int128(1) << 100) })
        // A tensor of the wrong shape or type is refused.
        var named = p.tensors(arch: arch)
        named[0].tensor = Tensor(
            shape: arch.tensorShapes[0].shape,
            floats: [Float](repeating: 0, count: arch.tensorShapes[0].shape.reduce(1, *)))
        #expect(throws: PartialError.self) {
            try PartialAggregate(
                file: try SafetensorsFile(bytes: SafetensorsWriter.encode(named)), arch: arch, totalWeight: 1, count: 1)
        }
    }
}

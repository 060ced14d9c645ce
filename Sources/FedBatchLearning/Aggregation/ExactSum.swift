import FedBatchFormats
import FedBatchNative
import Foundation

/// Exact sums for FedAvg's Σ wᵢ·sᵢ·Δᵢ, so that a sum can be split over
/// machines and put back together bit for bit (hierarchical merges).
///
/// Float64 addition is not associative: summing 1000 deltas in one pass and
/// summing ten partial sums of 100 give different last bits, and after the
/// rounding to float32 now and then a different weight. So each term
/// wᵢ·sᵢ·Δᵢ (one float64 product, rounded the same way wherever it is
/// computed) is converted to a fixed-point integer, a count of 2⁻⁶³, and the
/// counts are added in 128-bit integers, which is associative and exact.
/// The sum is rounded to float64 once, at the end.
///
/// The grid covers what updates hold: terms from 2⁻⁶³ (1.1e-19; the part of
/// a term below it is dropped, toward zero) up to 2⁶² (4.6e18), sums up to
/// 2⁶⁴ (1.8e19). A term or a sum beyond that refuses the bundle (or the
/// partial) that brought it, code `aggregation.out-of-range`, and leaves the
/// sums as they were: the additions are undone exactly, two's complement
/// arithmetic being a group.
public enum FixedPoint {
    /// A sum is an Int128 count of 2^-fractionBits.
    public static let fractionBits = 63

    /// t·2⁶³ truncated toward zero; 0 with `outOfRange` set if |t| ≥ 2⁶² or
    /// t is not finite. Bit manipulation rather than Int128(Double), which
    /// traps out of range and is a library call per element, or than
    /// converting the whole part and the fraction separately, whose checked
    /// conversions cost more in a release build (3.3 against 4.6 ns a term).
    @inline(__always)
    public static func fixed(_ t: Double, _ outOfRange: inout Bool) -> Int128 {
        let bits = t.bitPattern
        let exponent = Int(truncatingIfNeeded: (bits &>> 52) & 0x7FF)
        // |t| = mantissa·2^(exponent−1075), so t·2⁶³ = mantissa·2^(exponent−1012).
        let shift = exponent &- 1012
        let mantissa = Int128(truncatingIfNeeded: (bits & 0x000F_FFFF_FFFF_FFFF) | 0x0010_0000_0000_0000)
        let v: Int128
        if shift >= 0 {
            // |t| < 2⁶² is shift ≤ 72 (|t·2⁶³| < 2¹²⁵); Inf and NaN land here too.
            if shift > 72 { outOfRange = true; return 0 }
            v = mantissa &<< shift
        } else if shift > -53 {
            v = mantissa &>> -shift
        } else {
            return 0  // below 2⁻⁶³, zero and subnormals
        }
        return bits &>> 63 == 0 ? v : 0 &- v
    }

    /// A fixed-point count as a float64, rounded to nearest even, as
    /// Double(v)·2⁻⁶³ is. The standard library's generic conversion takes
    /// about 570 ns here, which for a 25M-parameter model is 14 s a merge;
    /// this takes 2.5 ns. The top 64 bits of the magnitude go to
    /// Double(UInt64), which rounds correctly, with the bits below folded
    /// into its lowest bit (the sticky bit), then a power of two scales it.
    @inline(__always)
    public static func double(_ v: Int128) -> Double {
        let negative = v < 0
        let m = UInt128(bitPattern: negative ? 0 &- v : v)
        let hi = UInt64(truncatingIfNeeded: m &>> 64), lo = UInt64(truncatingIfNeeded: m)
        let d: Double
        if hi == 0 {
            d = Double(lo) * 0x1p-63
        } else {
            let lz = hi.leadingZeroBitCount
            let top = lz == 0 ? hi : (hi &<< lz) | (lo &>> (64 - lz))
            let rest = lz == 0 ? lo : lo &<< lz
            // 2^(64 − lz) for the bits dropped, times 2⁻⁶³.
            let scale = Double(bitPattern: UInt64(1024 - lz) << 52)
            d = Double(top | (rest != 0 ? 1 : 0)) * scale
        }
        return negative ? -d : d
    }
}

/// A regional collector's sums over its sites' bundles, as a root collector
/// adds them: for each float tensor the exact fixed-point Σ wᵢ·sᵢ·Δᵢ, for
/// each integer tensor the largest rounded increment, and the total weight
/// Σ wᵢ (example counts, so exact in float64).
///
/// In the partial's `tensors.safetensors` a float tensor of shape S is an
/// I64 tensor of shape S + [2]: the low 64 bits (as two's complement bits)
/// then the high 64 bits of each Int128 count of 2⁻⁶³, little-endian, so
/// numpy reads a sum as (hi·2⁶⁴ + (lo mod 2⁶⁴))·2⁻⁶³. An integer tensor is an
/// I64 tensor of its own shape, Int64.min where no bundle had a value.
public struct PartialAggregate: @unchecked Sendable {
    /// Per tensor: the sums (float tensors) or nil.
    public var sums: [NumericBuffer<Int128>?]
    /// Per integer tensor index: the largest rounded increment (−∞: none).
    public var maxIncrements: [Int: [Double]]
    public var totalWeight: Double
    public var count: Int

    static let noIncrement = Int64.min

    /// The safetensors entries for the partial's tensors member.
    public func tensors(arch: ModelArchitecture) -> [(name: String, tensor: Tensor)] {
        arch.tensorShapes.enumerated().map { t, shape in
            if let s = sums[t] {
                // Each sum as two little-endian 64-bit words, low word first:
                // exactly Int128's own little-endian layout.
                let data = LittleEndian.bytes(of: s, as: Int128.self) { $0 }
                return (shape.name, try! Tensor(dtype: .i64, shape: shape.shape + [2], data: data))
            }
            let m = maxIncrements[t] ?? []
            let data = LittleEndian.bytes(of: m, as: Int64.self) { v in
                v.isFinite
                    ? Int64(clamping: Int64(exactly: v.rounded()) ?? (v > 0 ? Int64.max : Int64.min + 1))
                    : Self.noIncrement
            }
            return (shape.name, try! Tensor(dtype: .i64, shape: shape.shape, data: data))
        }
    }

    /// Reads a partial's tensors against the model: exactly its tensors,
    /// with the shapes and types above; anything else is refused.
    public init(file: SafetensorsFile, arch: ModelArchitecture, totalWeight: Double, count: Int) throws {
        var sums: [NumericBuffer<Int128>?] = []
        var maxIncrements: [Int: [Double]] = [:]
        let names = Set(arch.tensorShapes.map(\.name))
        if let extra = file.names.first(where: { !names.contains($0) }) {
            throw PartialError.tensors("it has a tensor \"\(extra)\" the model does not")
        }
        for (t, (shape, dtype)) in zip(arch.tensorShapes, arch.dtypes).enumerated() {
            guard let x = file.tensor(shape.name) else {
                throw PartialError.tensors("tensor \"\(shape.name)\" is missing")
            }
            let n = elementCount(shape.shape)!
            let expected = dtype.isFloatingPoint ? shape.shape + [2] : shape.shape
            guard x.dtype == .i64, x.shape == expected else {
                throw PartialError.tensors(
                    "tensor \"\(shape.name)\" is \(x.dtype.rawValue) \(x.shape), not I64 \(expected)")
            }
            if dtype.isFloatingPoint {
                // Two little-endian words per sum, low first: Int128's layout.
                sums.append(NumericBuffer<Int128>(littleEndian: x.data, count: n))
            } else {
                sums.append(nil)
                maxIncrements[t] = LittleEndian.map(x.data, as: Int64.self, count: n) { v in
                    v == Self.noIncrement ? -.infinity : Double(v)
                }
            }
        }
        self.sums = sums
        self.maxIncrements = maxIncrements
        self.totalWeight = totalWeight
        self.count = count
    }

    init(sums: [NumericBuffer<Int128>?], maxIncrements: [Int: [Double]], totalWeight: Double, count: Int) {
        self.sums = sums
        self.maxIncrements = maxIncrements
        self.totalWeight = totalWeight
        self.count = count
    }
}

/// A strategy whose aggregate decomposes into sums (FedAvg and the server
/// optimisers on its mean): it can take a regional collector's partial
/// aggregate in place of the bundles it covers, with the same result.
public protocol PartialAggregating: AggregationStrategy {
    /// Adds a partial's sums, as if its bundles had been added one by one.
    func add(partial: PartialAggregate) throws
    /// The sums so far, for a regional collector to sign.
    func partial() -> PartialAggregate
}

public enum PartialError: Error, Equatable, Sendable, ReasonCoded {
    case tensors(String)
    case notARegion(String)
    case fromARegion(String)
    case settings(String)
    case stale(offered: Int, current: Int)
    case strategy(String)
    case privacy
    case bundle(String)
    /// A partial covering a site this region does not serve.
    case foreignSite(site: String, region: String, servedBy: String?)
    /// A site served by a region sent its update to the root directly.
    case viaRegion(site: String, region: String)
    /// A statistics bundle sent to a regional collector.
    case statisticsAtRegion(site: String)

    public var code: String {
        switch self {
        case .tensors: return "partial.tensors"
        case .notARegion: return "partial.not-a-region"
        case .fromARegion: return "partial.region-update"
        case .settings: return "partial.settings"
        case .stale: return "partial.stale"
        case .strategy: return "partial.strategy"
        case .privacy: return "partial.privacy"
        case .bundle: return "partial.bundle"
        case .foreignSite: return "partial.foreign-site"
        case .viaRegion: return "partial.via-region"
        case .statisticsAtRegion: return "partial.statistics"
        }
    }

    public var description: String {
        switch self {
        case .tensors(let why): return "a partial aggregate whose tensors do not fit the model: \(why)"
        case .notARegion(let id):
            return
                "a partial aggregate from \(id), which is not one of this collector's regional collectors "
                + "(merge.regions)"
        case .fromARegion(let id):
            return
                "an update signed for \(id), a regional collector: regional collectors send partial aggregates, not "
                + "updates"
        case .settings(let why):
            return "a partial aggregate made with other merge settings than this collector's: \(why)"
        case let .stale(offered, current):
            return
                "a partial aggregate for generation \(offered + 1), built on generation \(offered); this collector "
                + "is at generation \(current), and a partial's stalenesses are fixed when it is made"
        case .strategy(let name):
            return
                "strategy \(name) needs every bundle's own update (it is not a sum), so it cannot merge partial "
                + "aggregates; use fedavg or a server optimiser (fedavgm, fedadam, fedadagrad, fedyogi, diloco) "
                + "for a hierarchical federation"
        case .privacy:
            return
                "a partial aggregate cannot be merged under [privacy]: central DP clips and counts each site's "
                + "update at the collector that adds the noise"
        case .bundle(let why): return "a partial aggregate covering a bundle this collector cannot take: \(why)"
        case let .foreignSite(site, region, servedBy):
            return "a partial aggregate from \(region) covering site \(site), which "
                + (servedBy.map { "region \($0) serves" } ?? "reaches this collector directly")
                + "; a region speaks only for the sites pinned to it here (fedbatch keys add --site \(site) "
                + "--region \(region))"
        case .statisticsAtRegion(let site):
            return
                "statistics from site \(site) at a regional collector: statistics go to the root collector, which "
                + "pins the federation's normalisation (push them to its inbox)"
        case let .viaRegion(site, region):
            return
                "an update from site \(site), which region \(region) serves: its updates reach this collector only "
                + "inside \(region)'s partial aggregates"
        }
    }
}

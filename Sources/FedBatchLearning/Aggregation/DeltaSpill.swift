import FedBatchFormats
import FedBatchNative
import Foundation

/// The accepted deltas of a merge, written to an unnamed scratch file as
/// they arrive and read back one coordinate range at a time.
///
/// Robust rules (median, trimmed mean, Krum, Bulyan) need every bundle's
/// value at each coordinate, which FedAvg's running sum does not. Holding N
/// decoded models would cost N × model of memory (20 bundles of the 25.2M
/// model: 2 GB); the spill costs that much disk instead, and memory of N ×
/// chunk numbers plus the new model. Deltas are stored as decoded float32,
/// unscaled: the staleness and clipping factor of each row is kept apart
/// and applied in float64 when the row is read.
///
/// The coordinates of all tensors are numbered in one flat range, in the
/// architecture's tensor order; a chunk may span tensors.
final class DeltaSpill {
    let arch: ModelArchitecture
    /// Elements per delta, all tensors together.
    let total: Int
    /// Flat index of each tensor's first element.
    let offsets: [Int]
    private let file: ScratchFile
    /// Each row's example weight and scale (staleness × clipping).
    private(set) var weights: [Double] = []
    private(set) var scales: [Double] = []

    var count: Int { scales.count }

    init(arch: ModelArchitecture, directory: String) throws {
        self.arch = arch
        var offsets: [Int] = []
        var total = 0
        for (_, shape) in arch.tensorShapes {
            offsets.append(total)
            total += elementCount(shape)!
        }
        self.offsets = offsets
        self.total = total
        file = try ScratchFile(in: directory)
    }

    func append(_ delta: DecodedDelta, weight: Double, scale: Double) throws {
        let row = Int64(count) * Int64(total)
        for t in arch.tensorShapes.indices {
            try delta.withTensor(t) { d in try file.write(d, at: (row + Int64(offsets[t])) * 4) }
        }
        weights.append(weight)
        scales.append(scale)
    }

    /// Coordinates per chunk so that `rows` rows of float32, plus a float64
    /// copy for the arithmetic, fit in about `budget` bytes; a multiple of
    /// `DeltaSpill.block`, so that block-wise sums (Krum's Gram matrix) do
    /// not depend on the budget.
    static func chunkElements(rows: Int, budget: Double) -> Int {
        let perElement = Double(max(1, rows) * 12)
        let blocks = Int((budget / perElement) / Double(block))
        return max(1, blocks) * block
    }

    /// The block size of sums that must not depend on the chunk size.
    static let block = 4096

    /// Calls `body(start, length, values)` for consecutive coordinate ranges
    /// covering the whole model, `values` holding the given rows' raw
    /// float32 values row after row (`rows.count × length`, row-major, from
    /// element 0 of a buffer that may be longer).
    func forEachChunk(rows: [Int], budget: Double, _ body: (Int, Int, NumericBuffer<Float>) throws -> Void) throws {
        let chunk = Self.chunkElements(rows: rows.count, budget: budget)
        let buffer = NumericBuffer<Float>(count: rows.count * min(chunk, total))
        var start = 0
        while start < total {
            let length = min(chunk, total - start)
            for (r, row) in rows.enumerated() {
                try file.read(
                    into: buffer, elements: (r * length)..<((r + 1) * length),
                    at: (Int64(row) * Int64(total) + Int64(start)) * 4)
            }
            try body(start, length, buffer)
            start += length
        }
    }

    /// The pieces of the flat range [start, start + length) in each tensor:
    /// (tensor, first element in the tensor, first position in the range, count).
    func segments(start: Int, length: Int) -> [(tensor: Int, local: Int, position: Int, count: Int)] {
        var out: [(Int, Int, Int, Int)] = []
        let end = start + length
        for t in offsets.indices {
            let lo = offsets[t], hi = t + 1 < offsets.count ? offsets[t + 1] : total
            let a = max(lo, start), b = min(hi, end)
            if a < b { out.append((t, a - lo, a - start, b - a)) }
        }
        return out
    }
}

import FedBatchFormats
import FedBatchNative
import Foundation

/// The noise of central differential privacy, drawn from a secret seed.
///
/// A merge with `[privacy]` clips every delta to C, sums them with equal
/// weights, divides by the expected number of sites m (a fixed
/// denominator, so that one site more or fewer changes the result by at
/// most C/m), and adds N(0, σ²) to every coordinate, σ = z·C/m
/// (McMahan et al., "Learning Differentially Private Recurrent Language
/// Models", 2018). Weighting by example counts would break the bound: a
/// site that claims many examples would move the mean by more than C/m,
/// and the counts are the site's own word.
///
/// The seed is 32 bytes from the system's CSPRNG; ChaCha20 expands it and
/// the Box–Muller transform turns pairs of uniforms into normals, drawn in
/// a fixed order (tensor by tensor, element by element). The same seed
/// therefore gives the same noise, bit for bit: the generation records the
/// seed's SHA-256 (`seed_sha256`), the collector keeps the seed itself
/// secret (`noise-seeds/`), and an auditor given it can re-run the merge
/// (`fedbatch merge --noise-seed`) and compare bytes. Anyone else cannot:
/// with the seed the noise could be subtracted again.
public final class GaussianNoise {
    public let sigma: Double
    /// m: the mean is the clipped sum over m, however many sites sent.
    public let denominator: Double
    public let seed: [UInt8]
    private let stream: ChaCha20Stream
    private var spare: Double?

    public init(seed: [UInt8], sigma: Double, denominator: Double) {
        self.seed = seed
        self.sigma = sigma
        self.denominator = denominator
        stream = ChaCha20Stream(key: seed)
    }

    /// A seed file (`noise-seeds/gNNNNNN.seed`, `merge --noise-seed`): 64
    /// hex digits and an optional newline.
    public static func readSeed(path: String) throws -> [UInt8] {
        let text = String(decoding: try readFile(path, cap: 4096), as: UTF8.self).trimmingCharacters(
            in: .whitespacesAndNewlines)
        guard text.count == 64, let digest = Digest(hex: text.lowercased()) else {
            throw PrivacyError.badSeed("\(path) does not hold a seed: 64 hex digits expected")
        }
        return digest.bytes
    }

    /// A fresh seed from the system's CSPRNG.
    public static func freshSeed() throws -> [UInt8] { try secureRandomBytes(32) }

    /// What the generation records: SHA-256 of a label and the seed. The seed
    /// is 256 random bits, so the digest reveals nothing of it.
    public static func commitment(to seed: [UInt8]) -> String {
        let h = SHA2Hasher()
        h.update(Data("fedbatch noise seed v1\0".utf8))
        h.update(Data(seed))
        return h.finalize().hex
    }

    /// The next N(0, σ²) value.
    public func next() -> Double {
        if let s = spare {
            spare = nil
            return sigma * s
        }
        // u1 in (0, 1], so the logarithm is finite; u2 in [0, 1).
        let u1 = (Double(stream.nextUInt64() >> 11) + 1) / 9_007_199_254_740_992
        let u2 = Double(stream.nextUInt64() >> 11) / 9_007_199_254_740_992
        let r = (-2 * log(u1)).squareRoot()
        spare = r * sin(2 * Double.pi * u2)
        return sigma * r * cos(2 * Double.pi * u2)
    }
}

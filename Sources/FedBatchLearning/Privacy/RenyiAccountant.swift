import FedBatchFormats
import FedBatchNative
import Foundation

/// Rényi differential privacy accounting for the Gaussian mechanism
/// (Mironov, "Rényi Differential Privacy", 2017), with no subsampling:
/// every pinned site may take part in every generation, so none of the
/// amplification that random sampling of sites would give is claimed.
///
/// One generation adds Gaussian noise of standard deviation z·S to a sum
/// of sensitivity S; at order α its RDP is α / (2z²). Generations compose
/// by adding their RDP, so a chain with noise multipliers z₁…z_T has
///
///     RDP(α) = α/2 · Σ 1/z_t²
///
/// and the single number Σ 1/z_t² carries the whole history: each
/// generation's manifest records it, and the next merge adds its own term.
///
/// The conversion to (ε, δ) is the one Google's dp-accounting uses
/// (Canonne, Kamath and Steinke 2020, Proposition 12; also Asoodeh et al.
/// 2020), over the same orders, so the two agree (the tests compare them):
///
///     ε = min over α of  RDP(α) + log(1 − 1/α) − log(δ·α) / (α − 1)
public enum RenyiAccountant {
    /// dp-accounting's default orders: 1.1 to 10.9 by 0.1, 11 to 63, and
    /// 128, 256, 512, 1024.
    public static let orders: [Double] = {
        let fine: [Double] = (1..<100).map { (x: Int) -> Double in 1 + Double(x) / 10 }
        let whole: [Double] = (11..<64).map { (x: Int) -> Double in Double(x) }
        let large: [Double] = [128, 256, 512, 1024]
        return fine + whole + large
    }()

    /// The Σ 1/z² term of one generation with noise multiplier `z`.
    public static func term(noiseMultiplier z: Double) -> Double { 1 / (z * z) }

    /// ε at `delta` for a history summarised by `inverseSquareSum` (Σ 1/z²).
    public static func epsilon(inverseSquareSum s: Double, delta: Double) -> Double {
        guard s > 0 else { return 0 }
        guard delta > 0 else { return .infinity }
        var best = Double.infinity
        for a in orders {
            let rdp = a * s / 2
            let eps: Double
            if delta * delta + expm1(-rdp) > 0 {
                // δ ≥ √(1 − e^(−KL)): the KL bound alone gives ε = 0.
                eps = 0
            } else if a > 1.01 {
                eps = rdp + log1p(-1 / a) - log(delta * a) / (a - 1)
            } else {
                eps = .infinity
            }
            best = min(best, eps)
        }
        return max(0, best)
    }
}

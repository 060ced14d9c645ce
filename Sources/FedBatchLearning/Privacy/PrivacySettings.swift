import FedBatchFormats
import FedBatchNative
import Foundation
import TOMLKit

/// Central differential privacy for a collector: the `[privacy]` table of
/// its fedbatch.toml. Absent, merges add no noise. Present, every key is
/// required: a privacy guarantee with a silently defaulted parameter is not
/// one the operator chose. See `GaussianNoise` and `RenyiAccountant`, and
/// fedbatch-merge(1), PRIVACY.
public struct PrivacySettings: Sendable, Equatable {
    /// z: the noise's standard deviation over the sum's sensitivity.
    public var noiseMultiplier: Double
    /// C: every delta is clipped to this L2 norm (all tensors together).
    public var clipNorm: Double
    /// m: the fixed denominator of the mean, the number of sites expected
    /// per generation.
    public var expectedSites: Int
    /// δ of the (ε, δ) guarantee reported.
    public var delta: Double
    /// A merge that would take the cumulative ε above this refuses.
    public var maxEpsilon: Double

    public init(noiseMultiplier: Double, clipNorm: Double, expectedSites: Int, delta: Double, maxEpsilon: Double) {
        self.noiseMultiplier = noiseMultiplier
        self.clipNorm = clipNorm
        self.expectedSites = expectedSites
        self.delta = delta
        self.maxEpsilon = maxEpsilon
    }

    /// σ = z·C/m, the standard deviation of the noise on the mean.
    public var sigma: Double { noiseMultiplier * clipNorm / Double(expectedSites) }

    static let keys: Set<String> = ["noise_multiplier", "clip_norm", "expected_sites", "delta", "max_epsilon"]

    package static func parse(
        _ value: TOMLValueConvertible, path: String, text: String? = nil
    ) throws -> PrivacySettings {
        let s = try ConfigSection(value, name: "privacy", allowed: keys, path: path, text: text)
        let needs = "[privacy] needs noise_multiplier, clip_norm, expected_sites, delta and max_epsilon"
        func number(_ k: String, _ what: String, _ ok: (Double) -> Bool) throws -> Double {
            try s.required(k, try s.number(k, what, where: ok), needs: needs)
        }
        let z = try number("noise_multiplier", "a number above 0 (and at most 1000)") { $0 > 0 && $0 <= 1000 }
        let c = try number("clip_norm", "a number above 0") { $0 > 0 }
        let m = try s.required(
            "expected_sites",
            try s.int("expected_sites", "a whole number of sites, 1 or more") { (1...10_000_000).contains($0) },
            needs: needs)
        let delta = try number("delta", "a probability in (0, 1)") { $0 > 0 && $0 < 1 }
        let maxEpsilon = try number("max_epsilon", "a number above 0") { $0 > 0 }
        return PrivacySettings(noiseMultiplier: z, clipNorm: c, expectedSites: m, delta: delta, maxEpsilon: maxEpsilon)
    }

    package func render() -> [String] {
        [
            "",
            "# Central differential privacy for every merge (fedbatch-merge(1), PRIVACY): clip each delta to "
                + "clip_norm,",
            "# average with equal weights over expected_sites, add Gaussian noise of noise_multiplier * clip_norm / "
                + "expected_sites,",
            "# and refuse a merge that would take the cumulative epsilon (at delta) above max_epsilon.", "[privacy]",
            "noise_multiplier = \(noiseMultiplier)", "clip_norm = \(clipNorm)", "expected_sites = \(expectedSites)",
            "delta = \(delta)", "max_epsilon = \(maxEpsilon)",
        ]
    }
}

/// Why a private merge refused.
public enum PrivacyError: Error, Equatable, Sendable, ReasonCoded, CustomStringConvertible {
    case budgetExhausted(epsilon: Double, max: Double, delta: Double, generation: Int)
    case unsupportedStrategy(String)
    case integerTensors(String)
    case badSeed(String)

    public var code: String {
        switch self {
        case .budgetExhausted: return "privacy.budget-exhausted"
        case .unsupportedStrategy: return "privacy.strategy"
        case .integerTensors: return "privacy.integer-tensors"
        case .badSeed: return "usage.noise-seed"
        }
    }

    public var description: String {
        switch self {
        case let .budgetExhausted(epsilon, max, delta, generation):
            return String(
                format:
                    "privacy budget spent: generation %d would bring the cumulative epsilon to %.4g at delta %.3g, "
                    + "above privacy.max_epsilon %.4g; nothing was written and the inbox is untouched",
                generation, epsilon, delta, max)
        case .unsupportedStrategy(let name):
            return
                "strategy \(name) cannot run with [privacy]: the Gaussian mechanism here bounds a clipped mean's "
                + "sensitivity, which fedavg and the server optimisers (fedavgm, fedadam, fedyogi, fedadagrad, "
                + "diloco) use; the robust rules' sensitivity is another matter"
        case .integerTensors(let name):
            return
                "[privacy] covers floating-point tensors; this model has integer tensor \"\(name)\" (a counter such "
                + "as BatchNorm's), whose largest-increment rule would be released without noise"
        case .badSeed(let why):
            return "--noise-seed: \(why)"
        }
    }
}

import FedBatchFormats
import FedBatchNative
import Foundation

/// How a strategy reads the bundles of a merge.
public enum StrategyAccess: Sendable {
    /// One bundle at a time, in digest order, within memory of a few
    /// copies of the model whatever the number of bundles (FedAvg and the
    /// server optimisers).
    case streaming
    /// Every bundle at each coordinate (median, trimmed mean, Krum): the
    /// strategy spills each delta as it is added and makes chunked passes
    /// over coordinate ranges in `finish` (see RobustStrategy).
    case chunkedPasses
}

/// A server-side aggregation rule. The collector creates one per merge,
/// offers it each accepted bundle's delta in digest order (float64
/// arithmetic is not associative, and a fixed order keeps merges
/// byte-identical), and asks it for the new weights at the end.
///
/// Adding a strategy: one file in Aggregation/ with a type conforming to
/// this protocol, its entry in `Strategies.registry`, and its tests.
public protocol AggregationStrategy: AnyObject {
    /// The name in `[merge] strategy` and in a generation's manifest.
    static var name: String { get }
    static var access: StrategyAccess { get }
    /// The parameters recorded in the generation's manifest.
    var parameters: [String: Double] { get }
    /// The weight of an update that claims `examples` training examples.
    func weight(examples: Int64) -> Double
    /// Refuses a delta before it is added (for example, one that would
    /// make the model non-finite); a refused delta changes nothing.
    func check(delta: DecodedDelta, base: ModelWeights) throws
    /// Adds one delta, already checked against the model and by `check`,
    /// with example weight `weight`, its contribution multiplied by
    /// `scale`, the staleness factor w(s) (1 for a fresh update). The
    /// normalisation uses `weight` alone, so stale updates move the model
    /// less rather than being renormalised back to full strength (as in
    /// FedBuff). A refused delta (out of the exact range) changes nothing.
    func add(delta: DecodedDelta, weight: Double, scale: Double) throws
    /// The new weights; never anything non-finite.
    func finish(base: ModelWeights) throws -> ModelWeights
    /// Why the rule cannot run on `count` bundles (Krum with too few for
    /// its f), or nil. The collector asks before `finish` and, on a
    /// refusal, writes nothing and leaves the bundles in the inbox.
    func refusal(count: Int) -> String?
    /// Why this rule, on `count` bundles with its settings, is no more
    /// robust than the plain mean (it then runs, with a warning); nil when
    /// it is not.
    func degeneracy(count: Int) -> String?
    /// Makes the merge centrally differentially private: the mean becomes
    /// the clipped sum over m plus noise (see GaussianNoise). Strategies
    /// built on FedAvg's mean take it; others refuse.
    func privatize(with noise: GaussianNoise) throws
    /// After `finish`: the positions, in the order bundles were added, of
    /// those the rule used, when it used only some (Krum); nil otherwise.
    var selectedPositions: [Int]? { get }
    /// Server state from the current generation (`optimizer.safetensors`),
    /// before any bundle is added; nil when it carries none.
    func restore(state: SafetensorsFile?) throws
    /// State for the next generation to carry, after `finish`; nil for a
    /// stateless strategy.
    var stateTensors: [(name: String, tensor: Tensor)]? { get }
    var stateMetadata: [String: String] { get }
}

extension AggregationStrategy {
    /// Adds a fresh update (staleness factor 1).
    public func add(delta: DecodedDelta, weight: Double) throws { try add(delta: delta, weight: weight, scale: 1) }
    public func restore(state: SafetensorsFile?) throws {}
    public func refusal(count: Int) -> String? { nil }
    public func degeneracy(count: Int) -> String? { nil }
    public func privatize(with noise: GaussianNoise) throws { throw PrivacyError.unsupportedStrategy(Self.name) }
    public var selectedPositions: [Int]? { nil }
    public var stateTensors: [(name: String, tensor: Tensor)]? { nil }
    public var stateMetadata: [String: String] { [:] }
}

/// The strategies a collector can be configured with.
public enum Strategies {
    /// Name → constructor from the `[merge]` parameters.
    static let registry: [String: @Sendable (ModelArchitecture, [String: Double]) throws -> AggregationStrategy] = [
        FedAvg.name: { arch, p in
            FedAvg(arch: arch, serverLearningRate: p["server_lr"] ?? 1, weightCap: count(p["weight_cap"] ?? 1e8))
        },
        FedAvgM.name: { arch, p in FedAvgM(arch: arch, parameters: p, defaults: FedAvgM.defaults) },
        FedAdagrad.name: { arch, p in FedAdagrad(arch: arch, parameters: p, defaults: FedAdagrad.defaults) },
        FedAdam.name: { arch, p in FedAdam(arch: arch, parameters: p, defaults: FedAdam.defaults) },
        FedYogi.name: { arch, p in FedYogi(arch: arch, parameters: p, defaults: FedYogi.defaults) },
        DiLoCo.name: { arch, p in DiLoCo(arch: arch, parameters: p, defaults: DiLoCo.defaults) },
        Median.name: { arch, p in Median(arch: arch, parameters: p) },
        TrimmedMean.name: { arch, p in TrimmedMean(arch: arch, parameters: p) },
        Krum.name: { arch, p in Krum(arch: arch, parameters: p) },
        MultiKrum.name: { arch, p in MultiKrum(arch: arch, parameters: p) },
        Bulyan.name: { arch, p in Bulyan(arch: arch, parameters: p) },
    ]

    public static var names: [String] { registry.keys.sorted() }

    /// A count passed as a Double parameter, clamped into Int64: a config
    /// may set Int64.max, which as a Double rounds to 2^63 and would trap.
    static func count(_ d: Double) -> Int64 {
        guard d.isFinite, d > 0 else { return 0 }
        return d >= 9.2e18 ? Int64.max : Int64(d)
    }

    /// The strategy `name`, or a refusal naming the ones that exist.
    public static func make(
        name: String, parameters: [String: Double], arch: ModelArchitecture
    ) throws -> AggregationStrategy {
        guard let make = registry[name] else { throw StrategyError.unknown(name, known: names) }
        return try make(arch, parameters)
    }
}

public enum StrategyError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public var code: String { "merge.strategy" }

    case unknown(String, known: [String])
    case tooFewBundles(String, String)

    public var description: String {
        switch self {
        case let .unknown(name, known):
            return "unknown aggregation strategy \"\(name)\"; this fedbatch has \(known.joined(separator: ", "))"
        case let .tooFewBundles(_, why): return why
        }
    }
}

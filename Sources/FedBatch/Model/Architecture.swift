import Foundation

/// A model architecture named by a spec string such as `mlp:784-256-128-10`
/// or `softmax:784-10`. Its tensors carry PyTorch's names and layout for
/// the equivalent `nn.Sequential(Linear, ReLU, Linear, …)`: `0.weight`
/// [out, in], `0.bias` [out], then `2.weight` and so on (the ReLUs hold the
/// odd indices), so `load_state_dict(strict=True)` accepts what fedbatch
/// writes and fedbatch accepts what PyTorch saves.
public struct ModelArchitecture: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable { case mlp, softmax }

    public let kind: Kind
    /// Layer widths from input to output: [784, 256, 128, 10].
    public let widths: [Int]

    public static let maxWidth = 1 << 20
    /// Float32 tensors of this many parameters fill the 4 GiB member cap
    /// of a container (ContainerLimits.maxMemberBytes).
    public static let maxParameters = 1 << 30

    public init(spec: String) throws {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let kind = Kind(rawValue: parts[0]) else {
            throw ArchitectureError.badSpec(spec, "expected mlp:IN-H1-…-OUT or softmax:IN-OUT")
        }
        let widths = parts[1].split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        guard widths.allSatisfy({ $0 != nil && $0! > 0 && $0! <= Self.maxWidth }) else {
            throw ArchitectureError.badSpec(spec, "widths must be positive integers up to \(Self.maxWidth)")
        }
        let w = widths.map { $0! }
        switch kind {
        case .softmax where w.count != 2:
            throw ArchitectureError.badSpec(spec, "softmax takes exactly two widths, IN-OUT")
        case .mlp where w.count < 2:
            throw ArchitectureError.badSpec(spec, "mlp needs at least IN-OUT")
        default: break
        }
        guard w.last! >= 2 else { throw ArchitectureError.badSpec(spec, "a classifier needs at least 2 classes") }
        // Counted with overflow checks: widths of 2^20 make layers of 2^40.
        var total = 0
        for i in 0..<(w.count - 1) {
            let (weights, o1) = w[i].multipliedReportingOverflow(by: w[i + 1])
            let (layer, o2) = weights.addingReportingOverflow(w[i + 1])
            let (sum, o3) = total.addingReportingOverflow(layer)
            guard !o1, !o2, !o3, sum <= Self.maxParameters else {
                throw ArchitectureError.badSpec(spec, """
                    more than \(Self.maxParameters) parameters; as float32 such a model is above the 4 GiB a bundle may hold, \
                    and a merge needs about 16 bytes of memory per parameter
                    """)
            }
            total = sum
        }
        self.kind = kind
        self.widths = w
    }

    public var description: String { "\(kind.rawValue):\(widths.map(String.init).joined(separator: "-"))" }
    public var inputWidth: Int { widths.first! }
    public var classes: Int { widths.last! }
    public var layerCount: Int { widths.count - 1 }

    /// The tensor names and shapes, in PyTorch's state_dict order.
    public var tensorShapes: [(name: String, shape: [Int])] {
        (0..<layerCount).flatMap { i -> [(name: String, shape: [Int])] in
            let index = 2 * i
            return [("\(index).weight", [widths[i + 1], widths[i]]), ("\(index).bias", [widths[i + 1]])]
        }
    }

    public var parameterCount: Int { tensorShapes.reduce(0) { $0 + elementCount($1.shape)! } }

    /// Refuses a model this machine cannot merge: a merge holds the model in
    /// float32 and its sums in float64, with up to three bundles in flight,
    /// about 16 bytes per parameter.
    public func checkFitsInMemory(physicalMemory: UInt64 = ProcessInfo.processInfo.physicalMemory) throws {
        let needed = UInt64(parameterCount) * 16
        if needed > physicalMemory {
            throw ArchitectureError.badSpec(description, "\(parameterCount) parameters need about \(needed >> 30) GiB to merge; this machine has \(physicalMemory >> 30) GiB")
        }
    }

    /// Checks that a tensor file holds exactly this model's tensors, as
    /// floating-point values of the right shapes, all finite.
    public func check(_ file: SafetensorsFile) throws {
        let expected = tensorShapes
        let names = Set(expected.map(\.name))
        for e in file.entries where !names.contains(e.name) {
            throw ArchitectureError.extraTensor(e.name, arch: description)
        }
        for (name, shape) in expected {
            guard let e = file.entry(name) else { throw ArchitectureError.missingTensor(name, arch: description) }
            guard e.dtype.isFloatingPoint else { throw ArchitectureError.wrongDType(name, e.dtype) }
            guard e.shape == shape else { throw ArchitectureError.wrongShape(name, expected: shape, actual: e.shape) }
            guard file.tensor(name)!.allFinite() else { throw ArchitectureError.nonFinite(name) }
        }
    }
}

/// Why a spec or a tensor file does not fit an architecture.
public enum ArchitectureError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    case badSpec(String, String)
    case missingTensor(String, arch: String)
    case extraTensor(String, arch: String)
    case wrongShape(String, expected: [Int], actual: [Int])
    case wrongDType(String, DType)
    case nonFinite(String)

    public var code: String {
        switch self {
        case .badSpec: return "arch.spec"
        case .missingTensor: return "tensors.missing"
        case .extraTensor: return "tensors.extra"
        case .wrongShape: return "tensors.shape"
        case .wrongDType: return "tensors.dtype"
        case .nonFinite: return "tensors.non-finite"
        }
    }

    public var description: String {
        switch self {
        case let .badSpec(spec, why): return "architecture \"\(spec)\": \(why)"
        case let .missingTensor(n, arch): return "tensor \"\(n)\" of \(arch) is missing"
        case let .extraTensor(n, arch): return "tensor \"\(n)\" is not part of \(arch)"
        case let .wrongShape(n, e, a): return "tensor \"\(n)\" has shape \(a), expected \(e)"
        case let .wrongDType(n, d): return "tensor \"\(n)\" is \(d.rawValue); model weights must be F32, F16 or BF16"
        case .nonFinite(let n): return "tensor \"\(n)\" holds NaN or infinite values"
        }
    }
}

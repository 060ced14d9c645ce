import FedBatchNative
import Foundation

/// A model architecture named by a spec string such as `mlp:784-256-128-10`
/// or `softmax:784-10`. Its tensors carry PyTorch's names and layout for
/// the equivalent `nn.Sequential(Linear, ReLU, Linear, …)`: `0.weight`
/// [out, in], `0.bias` [out], then `2.weight` and so on (the ReLUs hold the
/// odd indices), so `load_state_dict(strict=True)` accepts what fedbatch
/// writes and fedbatch accepts what PyTorch saves.
///
/// A third kind, `tensors:`, is a model defined by its tensors alone (a
/// PyTorch CNN's state_dict, say): the spec lists every tensor's name,
/// dtype and shape, `tensors:conv1.weight=F32[8,1,3,3];…`, so the generation
/// pins all three and bundles must match them exactly. fedbatch signs,
/// checks and aggregates such a model but does not train it (`pack`).
public struct ModelArchitecture: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable { case mlp, softmax, tensors }

    /// One tensor of a `tensors:` model.
    public struct TensorSpec: Sendable, Equatable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
    }

    public let kind: Kind
    /// Layer widths from input to output: [784, 256, 128, 10] (empty for
    /// a `tensors:` model).
    public let widths: [Int]
    /// A `tensors:` model's tensors, in order (empty for the built-in kinds).
    public let specs: [TensorSpec]

    /// Whether fedbatch can train and evaluate this model itself.
    public var isBuiltIn: Bool { kind != .tensors }

    /// Integers in integer tensors are carried through float32 arithmetic,
    /// which is exact below 2^24.
    public static let maxIntegerMagnitude: Int64 = 1 << 24

    public static let maxWidth = 1 << 20
    /// Float32 tensors of this many parameters fill the 4 GiB member cap
    /// of a container (ContainerLimits.maxMemberBytes).
    public static let maxParameters = 1 << 30

    public init(spec: String) throws {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let kind = Kind(rawValue: parts[0]) else {
            throw ArchitectureError.badSpec(
                String(spec.prefix(80)), "expected mlp:IN-H1-…-OUT, softmax:IN-OUT or tensors:NAME=DTYPE[SHAPE];…")
        }
        if kind == .tensors {
            self.kind = .tensors
            widths = []
            specs = try Self.parseTensors(parts[1], spec: spec)
            return
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
                throw ArchitectureError.badSpec(
                    spec,
                    """
                    more than \(Self.maxParameters) parameters; as float32 such a model is above the 4 GiB a bundle \
                    may hold, \
                    and a merge needs about 16 bytes of memory per parameter
                    """)
            }
            total = sum
        }
        self.kind = kind
        self.widths = w
        specs = []
    }

    /// The model a tensor file defines: every tensor, in the file's order,
    /// with its dtype and shape (floating or integer).
    public init(tensorsOf file: SafetensorsFile) throws {
        let entries = file.entries
        guard !entries.isEmpty else { throw ArchitectureError.badSpec("tensors:", "the weights file holds no tensor") }
        let list = entries.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let spec = "tensors:" + Self.render(list)
        // Through the parser, so that a model made here obeys the same rules.
        self = try ModelArchitecture(spec: spec)
    }

    static func render(_ specs: [TensorSpec]) -> String {
        specs.map { "\($0.name)=\($0.dtype.rawValue)[\($0.shape.map(String.init).joined(separator: ","))]" }.joined(
            separator: ";")
    }

    /// `NAME=DTYPE[D1,D2,…]` entries separated by `;`: names of plain bytes
    /// (PyTorch's dotted state_dict keys), each once; known dtypes; shapes
    /// of non-negative sizes; at most `maxParameters` in all.
    static func parseTensors(_ list: String, spec: String) throws -> [TensorSpec] {
        let short = String(spec.prefix(80)) + (spec.count > 80 ? "…" : "")
        var specs: [TensorSpec] = []
        var seen = Set<String>()
        var total = 0
        for entry in list.split(separator: ";", omittingEmptySubsequences: false) {
            guard let eq = entry.firstIndex(of: "="), entry.hasSuffix("]"), let open = entry[eq...].firstIndex(of: "[")
            else {
                throw ArchitectureError.badSpec(short, "entry \"\(entry.prefix(80))\" is not NAME=DTYPE[SHAPE]")
            }
            let name = String(entry[..<eq])
            guard !name.isEmpty, name.utf8.count <= 200, name.utf8.allSatisfy(ContainerPath.isPlainByte),
                seen.insert(name).inserted
            else {
                throw ArchitectureError.badSpec(
                    short, "tensor name \"\(name.prefix(80))\" is empty, repeated, too long or not of [A-Za-z0-9._-]")
            }
            guard let dtype = DType(rawValue: String(entry[entry.index(after: eq)..<open])) else {
                throw ArchitectureError.badSpec(
                    short, "tensor \(name): unknown dtype \"\(entry[entry.index(after: eq)..<open])\"")
            }
            let dims = entry[entry.index(after: open)..<entry.index(before: entry.endIndex)]
            let shape =
                dims.isEmpty ? [] : dims.split(separator: ",", omittingEmptySubsequences: false).map { Int($0) ?? -1 }
            guard shape.count <= 8, shape.allSatisfy({ $0 >= 0 && $0 <= 1 << 31 }), let n = elementCount(shape) else {
                throw ArchitectureError.badSpec(
                    short, "tensor \(name): shape [\(dims)] is not up to 8 non-negative sizes")
            }
            let (sum, overflow) = total.addingReportingOverflow(n)
            guard !overflow, sum <= maxParameters else {
                throw ArchitectureError.badSpec(short, "more than \(maxParameters) parameters in all")
            }
            total = sum
            specs.append(TensorSpec(name: name, dtype: dtype, shape: shape))
        }
        guard !specs.isEmpty else { throw ArchitectureError.badSpec(short, "no tensors") }
        return specs
    }

    public var description: String {
        kind == .tensors
            ? "tensors:" + Self.render(specs) : "\(kind.rawValue):\(widths.map(String.init).joined(separator: "-"))"
    }

    /// A short name for messages: the full spec of a `tensors:` model can
    /// run to kilobytes.
    public var summary: String {
        kind == .tensors ? "a model of \(specs.count) tensors (\(parameterCount) values)" : description
    }

    public var inputWidth: Int { widths.first ?? 0 }
    public var classes: Int { widths.last ?? 0 }
    public var layerCount: Int { max(widths.count - 1, 0) }

    /// Each tensor's dtype: as pinned for a `tensors:` model, F32 otherwise.
    public var dtypes: [DType] { kind == .tensors ? specs.map(\.dtype) : tensorShapes.map { _ in .f32 } }

    /// The tensor names and shapes, in PyTorch's state_dict order.
    public var tensorShapes: [(name: String, shape: [Int])] {
        if kind == .tensors { return specs.map { ($0.name, $0.shape) } }
        return (0..<layerCount).flatMap { i -> [(name: String, shape: [Int])] in
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
            throw ArchitectureError.badSpec(
                description,
                "\(parameterCount) parameters need about \(needed >> 30) GiB to merge; this machine "
                    + "has \(physicalMemory >> 30) GiB"
            )
        }
    }

    /// Checks that a tensor file holds exactly this model's tensors, of the
    /// right shapes, all finite: floating-point values for the built-in
    /// kinds; for a `tensors:` model, each in exactly its pinned dtype, and
    /// integers small enough to carry exactly.
    public func check(_ file: some TensorSource) throws {
        let expected = tensorShapes
        let names = Set(expected.map(\.name))
        for e in file.entries where !names.contains(e.name) {
            throw ArchitectureError.extraTensor(e.name, arch: summary)
        }
        for ((name, shape), dtype) in zip(expected, dtypes) {
            guard let e = file.entry(name) else { throw ArchitectureError.missingTensor(name, arch: summary) }
            if kind == .tensors {
                guard e.dtype == dtype else {
                    throw ArchitectureError.pinnedDType(name, expected: dtype, actual: e.dtype)
                }
            } else {
                guard e.dtype.isFloatingPoint else { throw ArchitectureError.wrongDType(name, e.dtype) }
            }
            guard e.shape == shape else { throw ArchitectureError.wrongShape(name, expected: shape, actual: e.shape) }
            guard file.allFinite(e) else { throw ArchitectureError.nonFinite(name) }
            if !e.dtype.isFloatingPoint, file.containsInteger(in: e, atLeast: UInt64(Self.maxIntegerMagnitude)) {
                throw ArchitectureError.integerTooLarge(name)
            }
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
    case pinnedDType(String, expected: DType, actual: DType)
    case integerTooLarge(String)
    case nonFinite(String)

    public var code: String {
        switch self {
        case .badSpec: return "arch.spec"
        case .missingTensor: return "tensors.missing"
        case .extraTensor: return "tensors.extra"
        case .wrongShape: return "tensors.shape"
        case .wrongDType, .pinnedDType: return "tensors.dtype"
        case .integerTooLarge: return "tensors.integer-range"
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
        case let .pinnedDType(n, e, a):
            return "tensor \"\(n)\" is \(a.rawValue); the model pins it as \(e.rawValue)"
                + (a == .f32 && (e == .f16 || e == .bf16)
                    ? " (fedbatch pack converts F32 weights to the pinned dtype)"
                    : e.isFloatingPoint != a.isFloatingPoint
                        ? " (an integer tensor is never converted to or from floating point: save it as \(e.rawValue))"
                        : "")
        case .integerTooLarge(let n):
            return
                "integer tensor \"\(n)\" holds a value of magnitude 2^24 or more, which fedbatch cannot carry exactly"
        case .nonFinite(let n): return "tensor \"\(n)\" holds NaN or infinite values"
        }
    }
}

/// A built-in-only operation asked of a model defined by its tensors.
public struct NotBuiltInError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    public let what: String
    public init(_ what: String) { self.what = what }
    public var code: String { "usage.model" }
    public var description: String {
        "this model is defined by its tensors (init collector --weights without --arch), so fedbatch cannot \(what) "
            + "it: "
            + "train and evaluate it in PyTorch, and hand the weights to fedbatch pack (see examples/pytorch/)"
    }
}

import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// A container that is sound but does not belong to this home.
public enum ModelMismatch: Error, Equatable, Sendable, ReasonCoded {
    case modelID(expected: String, actual: String)
    case arch(expected: String, actual: String)
    case kind(expected: Manifest.Kind, actual: Manifest.Kind)
    /// A generation whose manifest says another number than its file name.
    case generationNumber(expected: Int, actual: Int)

    public var code: String {
        switch self {
        case .modelID: return "model.id"
        case .arch: return "model.arch"
        case .kind: return "model.kind"
        case .generationNumber: return "generation.number"
        }
    }

    public var description: String {
        switch self {
        case let .modelID(e, a): return "the file is for model \"\(a)\"; this home's model is \"\(e)\""
        case let .arch(e, a): return "the file's architecture is \(a); this home's is \(e)"
        case let .kind(e, a):
            return "the file is \(a.withArticle), not \(e.withArticle)"
        case let .generationNumber(e, a): return "the file is named for generation \(e) but holds generation \(a)"
        }
    }
}

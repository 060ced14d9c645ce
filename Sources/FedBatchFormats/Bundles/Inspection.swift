import FedBatchNative
import Foundation

/// What `fedbatch inspect` reports about a container, with no trust decision:
/// the payload is read with the same hardened reader as everywhere else, but
/// the signature is only located, not checked.
public struct Inspection: Codable, Sendable {
    public struct TensorSummary: Codable, Sendable {
        public let name: String
        public let dtype: String
        public let shape: [Int]
    }

    public let file: String
    /// SHA-256 of the payload, computed here.
    public let digest: String
    /// The statement bytes as stored (signed, or meant to be).
    public let statement: String
    /// Whether the statement parses and names this payload's length and
    /// digest. Says nothing about who signed it.
    public let payloadMatches: Bool
    public let signatureBytes: Int
    public let manifest: Manifest
    public let tensors: [TensorSummary]

    public static func inspect(path: String, limits: ContainerLimits = .default) throws -> Inspection {
        let file = try ContainerFile.split(try readFile(path, cap: limits.maxFileBytes), limits: limits)
        let container = try ContainerReader.read(payload: file.payload, limits: limits)
        // A statistics bundle holds figures, not tensors.
        let tensors =
            container.manifest.kind == .stats ? nil : try container.tensors(limits: limits.safetensors)
        return Inspection(
            file: path,
            digest: file.digest.hex,
            statement: String(decoding: file.statement, as: UTF8.self),
            payloadMatches: (try? Statement.parse(file.statement)).map {
                $0.payloadDigest == file.digest && $0.payloadLength == Int64(file.payload.count)
            } ?? false,
            signatureBytes: file.signature.count,
            manifest: container.manifest,
            tensors: tensors?.entries.map { TensorSummary(name: $0.name, dtype: $0.dtype.rawValue, shape: $0.shape) }
                ?? [])
    }
}

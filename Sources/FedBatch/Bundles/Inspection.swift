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
    public let digest: String
    public let signatureBytes: Int
    public let manifest: Manifest
    public let tensors: [TensorSummary]

    public static func inspect(path: String, limits: ContainerLimits = .default) throws -> Inspection {
        let file = try ContainerFile.split(try readFile(path, cap: limits.maxFileBytes), limits: limits)
        let container = try ContainerReader.read(payload: file.signedBytes, limits: limits)
        let tensors = try container.tensors(limits: limits.safetensors)
        return Inspection(
            file: path,
            digest: file.digest.hex,
            signatureBytes: file.signature.count,
            manifest: container.manifest,
            tensors: tensors.entries.map { TensorSummary(name: $0.name, dtype: $0.dtype.rawValue, shape: $0.shape) })
    }
}

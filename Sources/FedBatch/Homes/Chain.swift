import Foundation

/// One link of the generation chain, as `fedbatch log` shows it.
public struct ChainLink: Sendable, Codable {
    public let generation: Int
    public let digest: String
    public let parent: String?
    public let accepted: Int
    public let rejected: Int
    public let examples: Int64
    public let created: String
    public let file: String
}

/// Why the chain does not hold together.
public struct ChainError: Error, Equatable, Sendable, ReasonCoded {
    public let generation: Int
    public let message: String
    public var code: String { "chain.broken" }
    public var description: String { "generation \(generation): \(message)" }
}

extension Home {
    /// Verifies every generation in `generations/` and every link back to
    /// generation 0: numbers consecutive from 0, each naming its
    /// predecessor's digest as its parent.
    public func chain() throws -> [ChainLink] {
        let verifier = try self.verifier()
        var links: [ChainLink] = []
        for n in layout.generationNumbers() {
            let path = layout.generation(n)
            let v: VerifiedContainer
            do { v = try verifier.open(path: path) } catch { throw ChainError(generation: n, message: "\(path) does not verify: \(error)") }
            let m = v.manifest
            guard m.kind == .generation, m.generation == n else { throw ChainError(generation: n, message: "\(path) holds generation \(m.generation ?? -1)") }
            guard m.model.id == config.modelID else { throw ChainError(generation: n, message: "belongs to model \(m.model.id)") }
            if let previous = links.last {
                guard previous.generation == n - 1 else { throw ChainError(generation: n, message: "generation \(n - 1) is missing") }
                guard m.parent?.number == n - 1, m.parent?.digest == previous.digest else {
                    throw ChainError(generation: n, message: "names parent \(m.parent?.digest ?? "none"), but generation \(n - 1) is \(previous.digest)")
                }
            } else if n != 0 {
                throw ChainError(generation: n, message: "the chain does not start at generation 0")
            }
            let included = m.included ?? []
            links.append(ChainLink(generation: n, digest: v.digest.hex, parent: m.parent?.digest, accepted: included.count,
                                   rejected: m.rejected?.count ?? 0, examples: included.reduce(0) { $0 + $1.numExamples },
                                   created: m.created, file: path))
        }
        guard !links.isEmpty else { throw HomeError.noGeneration(layout.generations) }
        return links
    }
}

import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// Where things live in a home. Every path a command touches comes from here.
public struct HomeLayout: Sendable {
    public let root: String

    public init(root: String) {
        self.root = root.hasSuffix("/") && root.count > 1 ? String(root.dropLast()) : root
    }

    public var config: String { "\(root)/fedbatch.toml" }
    public var keys: String { "\(root)/keys" }
    public var generations: String { "\(root)/generations" }
    public var inbox: String { "\(root)/inbox" }
    public var accepted: String { "\(root)/accepted" }
    public var quarantine: String { "\(root)/quarantine" }
    public var outbox: String { "\(root)/outbox" }
    /// A site's bundles that `fedbatch push` has uploaded.
    public var sent: String { "\(root)/sent" }
    public var stateDatabase: String { "\(root)/state.db" }
    /// A site's error-feedback residual: what a lossy codec left out of its
    /// last update, added to its next one.
    public var residual: String { "\(root)/residual.safetensors" }
    /// The output of a site's training commands, the newest few runs.
    public var logs: String { "\(root)/logs" }
    public var lockFile: String { "\(root)/.fedbatch.lock" }
    /// The secret seeds of private merges' noise (mode 0700; see GaussianNoise).
    public var noiseSeeds: String { "\(root)/noise-seeds" }

    /// Where generation `n`'s noise seed is kept; creates the directory.
    public func noiseSeed(_ n: Int) throws -> String {
        if !FileManager.default.fileExists(atPath: noiseSeeds) {
            try FileManager.default.createDirectory(
                atPath: noiseSeeds, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        }
        return noiseSeedPath(n)
    }

    /// Where generation `n`'s noise seed is kept, if it is; creates nothing.
    public func noiseSeedPath(_ n: Int) -> String { "\(noiseSeeds)/\(String(format: "g%06d", n)).seed" }

    // The layout inside keys/ belongs to the trust set (TrustSet.Files).
    public var collectorKey: String { TrustSet.Files.collectorKey(in: keys) }
    public var siteKeys: String { TrustSet.Files.siteKeys(in: keys) }
    public func siteKey(_ site: String) -> String { TrustSet.Files.siteKey(site, in: keys) }

    /// A witness's copies of the inputs the generations it audits name
    /// (`pull` fetches them when the collector publishes them).
    public var inputs: String { "\(root)/inputs" }

    /// Other signers' proposals, fetched for `fedbatch witness` (a
    /// federation with no single collector).
    public var proposals: String { "\(root)/proposals" }

    /// The proposals for generation `n` in proposals/, by signer.
    public func proposals(for n: Int) -> [(signer: String, path: String)] {
        ((try? FileManager.default.contentsOfDirectory(atPath: proposals)) ?? []).compactMap { name in
            guard let p = GenerationFile.proposal(name), p.number == n else { return nil }
            return (p.signer, "\(proposals)/\(name)")
        }.sorted { $0.signer < $1.signer }
    }

    /// Witness `witness`'s cosignature of generation `n`, beside it.
    public func cosignature(_ n: Int, witness: String) -> String {
        "\(generations)/\(GenerationFile.cosignatureFileName(n, witness: witness))"
    }

    /// The cosignature files beside generation `n`, by witness.
    public func cosignatures(of n: Int) -> [(witness: String, path: String)] {
        ((try? FileManager.default.contentsOfDirectory(atPath: generations)) ?? []).compactMap { name in
            guard let c = GenerationFile.cosignature(name), c.number == n else { return nil }
            return (c.witness, "\(generations)/\(name)")
        }.sorted { $0.witness < $1.witness }
    }

    /// The number in a reference to a generation (`7`, `g7`), or nil.
    public static func generationReference(_ reference: String) -> Int? {
        let digits = reference.hasPrefix("g") ? reference.dropFirst() : Substring(reference)
        guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    /// `g000042`: how file names and messages name generation 42.
    public static func generationName(_ number: Int) -> String { GenerationFile.name(number) }

    /// `g000042.fbg`
    public static func generationFileName(_ number: Int) -> String { GenerationFile.fileName(number) }

    /// `<model>-g<base>-<site>-<seq>.fbu`: informative only; a bundle's
    /// identity is its digest.
    public static func bundleFileName(model: String, base: Int, site: String, seq: Int64) -> String {
        "\(model)-\(generationName(base))-\(site)-\(seq).fbu"
    }

    /// `<model>-g<base>-<site>-<seq>.fbs`: a statistics bundle, named
    /// like an update (informative only, as for updates).
    public static func statisticsFileName(model: String, base: Int, site: String, seq: Int64) -> String {
        "\(model)-\(generationName(base))-\(site)-\(seq).fbs"
    }

    public func generation(_ number: Int) -> String { "\(generations)/\(Self.generationFileName(number))" }

    /// A generation named the way a person would: `latest`, `7` or `g7`
    /// for a file in generations/, or a path. A path that exists wins, so
    /// a file that happens to be called `7` is still that file.
    public func generation(named reference: String) throws -> String {
        if FileManager.default.fileExists(atPath: reference) { return reference }
        if reference == "latest" {
            guard let newest = generationNumbers().last else { throw HomeError.noGeneration(generations) }
            return generation(newest)
        }
        if let n = Self.generationReference(reference) {
            let path = generation(n)
            if !FileManager.default.fileExists(atPath: path),
                FileManager.default.fileExists(atPath: prunedGeneration(n))
            {
                throw HomeError.config(
                    path: prunedGeneration(n),
                    reason:
                        "generation \(n) was pruned (fedbatch prune): only its signed manifest is kept, not its weights"
                )
            }
            guard FileManager.default.fileExists(atPath: path) else {
                throw HomeError.config(
                    path: generations,
                    reason: "there is no generation \(n) (\(Self.generationFileName(n))); `fedbatch log` lists them")
            }
            return path
        }
        return reference
    }

    /// Generation numbers present in `generations/`, ascending. Only
    /// names of exactly `g` + six digits + `.fbg` count (`Int("+00009")`
    /// would otherwise read `g+00009.fbg` as generation 9).
    public func generationNumbers() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: generations)) ?? []
        return names.compactMap(Self.generationNumber).sorted()
    }

    public static func generationNumber(_ name: String) -> Int? { GenerationFile.number(name) }

    /// `g000042.fbm`: generation 42 after `fedbatch prune` dropped its
    /// weights, keeping its statement, signature and manifest.
    public func prunedGeneration(_ number: Int) -> String { "\(generations)/\(Self.generationName(number)).fbm" }

    /// Numbers of the pruned generations in `generations/`, ascending.
    public func prunedGenerationNumbers() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: generations)) ?? []
        return names.compactMap(Self.prunedGenerationNumber).sorted()
    }

    public static func prunedGenerationNumber(_ name: String) -> Int? {
        guard name.hasSuffix(".fbm") else { return nil }
        return generationNumber(String(name.dropLast(4)) + ".fbg")
    }

    /// Every generation of the chain, whole or pruned, ascending; with the
    /// file that holds it (the whole one when both exist, as they do for a
    /// moment while prune works).
    public func chainFiles() -> [(number: Int, path: String, pruned: Bool)] {
        let whole = Set(generationNumbers())
        let all = whole.union(prunedGenerationNumbers()).sorted()
        return all.map { whole.contains($0) ? ($0, generation($0), false) : ($0, prunedGeneration($0), true) }
    }

    /// Files in `generations/` that are not generations (hidden temp files
    /// aside): they are ignored, and commands warn about them.
    public func foreignGenerationFiles() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: generations)) ?? []
        return names.filter {
            !$0.hasPrefix(".") && Self.generationNumber($0) == nil && Self.prunedGenerationNumber($0) == nil
                && GenerationFile.cosignature($0) == nil
        }.sorted()
    }
}

import FedBatchNative
import Foundation

// Names and formats shared by every layer: container member names, the
// identifier rule for site, model and region ids, and the time format of
// manifests. They sit at the bottom so that no layer reaches up for them.

/// The names a container may hold.
public enum ContainerPath {
    public static let manifest = "manifest.json"
    public static let tensors = "tensors.safetensors"
    /// A generation's tabular schema (`TabularSchema`), carried forward.
    public static let schema = "schema.json"
    /// A statistics bundle's figures, or the combination a generation
    /// pinned its normalisation from (`DataStatistics`).
    public static let statistics = "statistics.json"
    /// A server optimiser's state (`ServerOptimizer`), carried forward.
    public static let optimizerState = "optimizer.safetensors"
    /// A generation's or partial's list of included bundles, one canonical
    /// JSON object per line in digest order (`Manifest.IncludedList`): kept
    /// out of the manifest so that the manifest stays small whatever the
    /// number of bundles.
    public static let included = "included.jsonl"

    /// `[A-Za-z0-9._-]`, the bytes names and ids are made of.
    public static func isPlainByte(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F
            || c == 0x2D
    }

    /// Relative, `/`-separated segments of `[A-Za-z0-9._-]`, none empty, `.` or `..`.
    public static func isValid(_ path: String) -> Bool {
        isValid(bytes: Array(path.utf8))
    }

    static func isValid(bytes: [UInt8]) -> Bool {
        guard !bytes.isEmpty, bytes.count <= 255 else { return false }
        for segment in bytes.split(separator: 0x2F, omittingEmptySubsequences: false) {
            if segment.isEmpty || segment.elementsEqual([0x2E]) || segment.elementsEqual([0x2E, 0x2E]) { return false }
            if !segment.allSatisfy(isPlainByte) { return false }
        }
        return true
    }

    /// Why `value` is not an identifier, for every message that says so.
    public static func identifierRule(_ what: String, _ value: String) -> String {
        "\(what) \"\(value)\" must be 1-64 characters of A-Z a-z 0-9 . _ - and not start with . or -"
    }

    /// Site and model ids: 1 to 64 plain characters, not starting with `.` or `-`.
    public static func isIdentifier(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard (1...64).contains(b.count), b[0] != 0x2E, b[0] != 0x2D else { return false }
        return b.allSatisfy(isPlainByte)
    }
}

/// Formats a date as the manifests record it.
public func rfc3339(_ date: Date) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    f.timeZone = TimeZone(identifier: "UTC")
    return f.string(from: date)
}

/// How generation files are named, on disk and on a remote.
public enum GenerationFile {
    /// `g000042`
    public static func name(_ number: Int) -> String { String(format: "g%06d", number) }

    /// `g000042.fbg`
    public static func fileName(_ number: Int) -> String { name(number) + ".fbg" }

    /// The number of a `gNNNNNN.fbg` name, or nil.
    public static func number(_ name: String) -> Int? {
        let b = Array(name.utf8)
        guard b.count == 11, b[0] == 0x67, name.hasSuffix(".fbg"), b[1..<7].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
        else { return nil }
        return Int(String(decoding: b[1..<7], as: UTF8.self))
    }

    /// `g000042-W.fbc`: witness W's cosignature of generation 42, a
    /// detached OpenPGP signature over the generation's statement, kept
    /// beside the generation (fedbatch-bundle(5), COSIGNATURES).
    public static func cosignatureFileName(_ number: Int, witness: String) -> String {
        "\(name(number))-\(witness).fbc"
    }

    /// `g000042-S.fbg`: signer S's proposal for generation 42 (a
    /// federation with no single collector), until the signers' threshold
    /// makes it the generation.
    public static func proposalFileName(_ number: Int, signer: String) -> String {
        "\(name(number))-\(signer).fbg"
    }

    /// The generation and signer of a proposal file name, or nil.
    public static func proposal(_ fileName: String) -> (number: Int, signer: String)? {
        suffixed(fileName, ".fbg").map { ($0.number, $0.id) }
    }

    /// The generation and witness of a cosignature file name, or nil.
    public static func cosignature(_ fileName: String) -> (number: Int, witness: String)? {
        suffixed(fileName, ".fbc").map { ($0.number, $0.id) }
    }

    private static func suffixed(_ fileName: String, _ suffix: String) -> (number: Int, id: String)? {
        let b = Array(fileName.utf8)
        guard b.count > 12, b[0] == 0x67, b[7] == 0x2D, fileName.hasSuffix(suffix),
            b[1..<7].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let n = Int(String(decoding: b[1..<7], as: UTF8.self))
        else { return nil }
        let witness = String(decoding: b[8..<(b.count - 4)], as: UTF8.self)
        guard ContainerPath.isIdentifier(witness) else { return nil }
        return (n, witness)
    }
}

import FedBatchFormats
import FedBatchNative
import FedBatchTrust
import Foundation

/// Compares a re-derived generation with the one the chain holds. The
/// manifest's bytes decide: they list every member with its SHA-256, and
/// the statement the collector signed names their SHA-256 in turn. The
/// rest only says where the difference is, for the person reading it: the
/// first manifest field that differs, else the first member, and for the
/// weights the first tensor element.
enum AuditComparison {
    /// nil when `expected` is the generation's manifest byte for byte;
    /// otherwise the first difference. Members in `skipping` (the weights
    /// of a private merge audited without its seed) are taken as the
    /// generation has them.
    static func difference(
        expected: Manifest, members: [(name: String, data: Data)], actual v: VerifiedContainer,
        skipping: Set<String>
    ) throws -> String? {
        var expected = expected
        if !skipping.isEmpty {
            let theirs = Dictionary(v.manifest.members.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            expected.members = expected.members.map { m in skipping.contains(m.name) ? theirs[m.name] ?? m : m }
        }
        let mine = try expected.encoded()
        if mine == v.container.manifestBytes { return nil }

        // A field other than the member list first: it names the input.
        var a = try JSONSerialization.jsonObject(with: mine) as? [String: Any] ?? [:]
        var b = try JSONSerialization.jsonObject(with: v.container.manifestBytes) as? [String: Any] ?? [:]
        a["members"] = nil
        b["members"] = nil
        if let d = firstDifference(a, b, path: "") {
            return "manifest field \(d)"
        }
        // Then the list of bundles, entry by entry (in included.jsonl its
        // difference would otherwise show only as a member's SHA-256).
        let mineList = expected.included ?? [], theirList = v.manifest.included ?? []
        for (i, (x, y)) in zip(mineList, theirList).enumerated() where x != y {
            let fields = firstDifference(try jsonObject(x), try jsonObject(y), path: "")
            return "included bundle \(i + 1) (\(y.digest)): \(fields.map { "field \($0)" } ?? "differs")"
        }
        if mineList.count != theirList.count {
            return "the generation includes \(theirList.count) bundles; re-derived: \(mineList.count)"
        }
        let theirNames = v.manifest.members.map(\.name)
        let myNames = members.map(\.name)
        guard theirNames == myNames else {
            return
                "the members are \(theirNames.joined(separator: ", ")); re-derived: \(myNames.joined(separator: ", "))"
        }
        for (name, data) in members where !skipping.contains(name) {
            guard let theirs = v.container.members[name], theirs != data else { continue }
            if name == ContainerPath.tensors, let d = try tensorDifference(data, theirs) { return d }
            return "member \(name) differs (\(data.count) bytes re-derived, SHA-256 \(Digest.of(data).hex); "
                + "the generation's: \(theirs.count) bytes, \(Digest.of(theirs).hex))"
        }
        return "the manifests differ in encoding only"
    }

    /// The first differing element of the weights, and how many differ.
    static func tensorDifference(_ mine: Data, _ theirs: Data) throws -> String? {
        let a = try SafetensorsFile(bytes: mine)
        let b = try SafetensorsFile(bytes: theirs)
        guard a.names == b.names else {
            return "the tensors are \(b.names.joined(separator: ", ")); re-derived: \(a.names.joined(separator: ", "))"
        }
        for name in a.names {
            guard let x = a.tensor(name), let y = b.tensor(name) else { continue }
            guard x.dtype == y.dtype, x.shape == y.shape else {
                return "tensor \(name) is \(y.dtype) \(y.shape) in the generation; re-derived: \(x.dtype) \(x.shape)"
            }
            guard x.data != y.data else { continue }
            // Element by element, by their bytes: one ulp is a difference,
            // and so is a NaN's payload.
            let size = x.dtype.byteSize
            let p = [UInt8](x.data), q = [UInt8](y.data)
            var differing: [Int] = []
            for i in 0..<x.count where p[(i * size)..<((i + 1) * size)] != q[(i * size)..<((i + 1) * size)] {
                differing.append(i)
            }
            guard let first = differing.first else { continue }
            let mineValue = x.floats()[first], theirValue = y.floats()[first]
            return "tensor \(name) element \(first) is \(describe(theirValue)) in the generation, "
                + "\(describe(mineValue)) re-derived (\(differing.count) of \(x.count) elements of \(name) differ)"
        }
        return nil
    }

    private static func describe(_ x: Float) -> String {
        String(format: "%.9g", Double(x))
    }

    /// An included entry as the JSON object its line holds.
    private static func jsonObject(_ b: Manifest.IncludedBundle) throws -> Any {
        try JSONSerialization.jsonObject(with: try IncludedList.encode([b]))
    }

    /// The first path (in sorted key order) where two JSON values differ.
    static func firstDifference(_ a: Any?, _ b: Any?, path: String) -> String? {
        switch (a, b) {
        case let (x as [String: Any], y as [String: Any]):
            for key in Set(x.keys).union(y.keys).sorted() {
                let p = path.isEmpty ? key : "\(path).\(key)"
                if let d = firstDifference(x[key], y[key], path: p) { return d }
            }
            return nil
        case let (x as [Any], y as [Any]):
            for i in 0..<max(x.count, y.count) {
                if let d = firstDifference(i < x.count ? x[i] : nil, i < y.count ? y[i] : nil, path: "\(path)[\(i)]") {
                    return d
                }
            }
            return nil
        default:
            let x = a.map(render) ?? "absent", y = b.map(render) ?? "absent"
            return x == y ? nil : "\(path) is \(y) in the generation, \(x) re-derived"
        }
    }

    private static func render(_ v: Any) -> String {
        if let data = try? JSONSerialization.data(withJSONObject: v, options: [.fragmentsAllowed, .sortedKeys]) {
            return String(decoding: data, as: UTF8.self)
        }
        return "\(v)"
    }
}

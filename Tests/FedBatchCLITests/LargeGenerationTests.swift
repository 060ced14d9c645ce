import FedBatch
import FedBatchFormats
import FedBatchNative
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// A generation naming more bundles than a manifest could list (about
/// 14,000 at 4 MiB): the list lives in `included.jsonl`, capped by the
/// count the manifest declares, and every reader takes it from there.
@Suite("generations naming many bundles")
struct LargeGenerationTests {
    static let regions = ["region-1", "region-2"]
    static let perRegion = 7_500

    /// One region's partial aggregate of `perRegion` bundles on generation
    /// 0, signed with the region's key: the bundles are named, not
    /// trained (their sums are zero), which is all the root can check of a
    /// partial's bundles anyway (it never sees them).
    static func partial(
        _ fed: Federation, region: String, key: String, g0: (number: Int, digest: String)
    ) throws -> (file: Data, sites: [String]) {
        var included: [Manifest.IncludedBundle] = []
        var sites: [String] = []
        for i in 0..<perRegion {
            let site = "\(region)-s\(i)"
            sites.append(site)
            included.append(
                .init(
                    digest: Digest.of(Data("\(region) \(i)".utf8)).hex, site: site,
                    signer: String(format: "%040X", i), seq: 1, numExamples: 10, weight: 10, base: 0, staleness: 0,
                    stalenessWeight: 1))
        }
        let arch = try ModelArchitecture(spec: fed.arch)
        let sums: [(name: String, tensor: Tensor)] = try zip(arch.tensorShapes, arch.dtypes).map { shape, dtype in
            let n = shape.shape.reduce(1, *)
            // Float tensors: zero 128-bit sums; integer ones: "no increment".
            return dtype.isFloatingPoint
                ? (shape.name, try Tensor(dtype: .i64, shape: shape.shape + [2], data: Data(count: 16 * n)))
                : (
                    shape.name,
                    try Tensor(
                        dtype: .i64, shape: shape.shape,
                        data: LittleEndian.bytes(of: [Int64](repeating: .min, count: n), as: Int64.self) { $0 })
                )
        }
        var manifest = Manifest(
            kind: .partial, model: .init(id: "demo", arch: fed.arch), created: "2026-01-02T00:00:00Z",
            codec: Manifest.exactSumCodec, base: .init(number: g0.number, digest: g0.digest),
            site: .init(id: region, seq: 1), numExamples: Int64(10 * perRegion), included: included,
            strategy: .init(name: "exact-sum", parameters: ["max_staleness": 0, "weight_cap": 1_000_000]))
        manifest.metrics = ["bundles": Double(perRegion), "examples": Double(10 * perRegion), "weight": 75_000]
        let sealed = try fed.signer(key).seal(
            manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(sums))])
        return (sealed.file, sites)
    }

    @Test(
        "a root merges two partials of 7,500 bundles into a generation naming 15,000; a site verifies it and logs them all"
    )
    func fifteenThousandBundles() throws {
        let fed = try Federation(sites: ["site-1"])
        let root = fed.collector
        try Federation.setConfig(home: root, table: "merge", "regions", "[\"region-1\", \"region-2\"]")
        try Federation.setConfig(home: root, table: "merge", "max_staleness", "0")
        try Federation.setConfig(home: root, table: "merge", "staleness", "\"constant\"")
        try Federation.setConfig(home: root, table: "merge", "weight_cap", "1000000")
        let g0 = try fed.generation(0)
        for region in Self.regions {
            let key = try fed.keyring.generate(region)
            try fed.run([
                "keys", "add", "--home", root, "--site", region,
                try fed.keyring.exportPublic(key, to: "\(region).asc"),
            ])
            let (file, sites) = try Self.partial(fed, region: region, key: key, g0: g0)
            // Which sites each region serves: keys/sites/<site>.region, as
            // `keys add --region` writes it (15,000 commands would take minutes).
            for s in sites {
                try Data(region.utf8).write(to: URL(fileURLWithPath: "\(root)/keys/sites/\(s).region"))
            }
            try file.write(to: URL(fileURLWithPath: "\(root)/inbox/demo-g000001-\(region).fbp"))
        }

        let mergeRun = try fed.fedbatch(["merge", "--home", root, "--json"])
        try #require(mergeRun.status == 0, "\(mergeRun.out)\(mergeRun.err)")
        let merged = try mergeRun.summary()
        #expect(merged["generation"] as? Int == 1)
        let path = root + "/generations/g000001.fbg"

        // The manifest names the count and the member; the list is there.
        let inspected = try Inspection.inspect(path: path)
        let m = inspected.manifest
        #expect(m.includedCount == 15_000 && m.included?.count == 15_000)
        #expect(m.partials?.map(\.bundles) == [7_500, 7_500])
        let member = try #require(m.members.first { $0.name == ContainerPath.included })
        let encoded = try m.encoded()
        #expect(encoded.count < 8_192, "the manifest stays small: \(encoded.count) bytes")
        #expect(member.length > Int64(ContainerLimits.default.maxManifestBytes))
        #expect(!String(decoding: encoded, as: UTF8.self).contains("\"included\":"))

        // The file is a standard zstd tar: the member reads with tar, one
        // line per bundle, in digest order.
        let tar = try Subprocess.shell("zstd -dc '\(path)' | tar -xOf - included.jsonl | wc -l")
        #expect(tar.out.trimmingCharacters(in: .whitespacesAndNewlines) == "15000")
        let digests = try #require(m.included?.map(\.digest))
        #expect(digests == digests.sorted())

        // A site takes the generation and verifies the chain to it.
        let site = fed.site("site-1")
        for n in [0, 1] {
            try FileManager.default.copyItem(
                atPath: root + "/generations/g00000\(n).fbg", toPath: site + "/generations/g00000\(n).fbg")
        }
        let verified = try fed.fedbatch(["verify", "--home", site, "1"])
        #expect(verified.status == 0, "\(verified.err)")
        let log = try fed.run(["log", "--home", site, "--json"]).summary()
        let links = try #require(log["generations"] as? [[String: Any]])
        #expect(
            links.contains { $0["generation"] as? Int == 1 && $0["accepted"] as? Int == 15_000 }
                && log["verified"] as? Bool == true, "\(log)")

        // An audit at the root re-derives the list from the two partials.
        let audit = try fed.fedbatch(["audit", "--home", root, "1"])
        #expect(audit.status == 0, "\(audit.out)\(audit.err)")
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Hierarchical merges through the real binary: regional collectors write
/// signed partial aggregates, a root collector merges them, and the result
/// is compared bit for bit with one collector merging the same bundles.
@Suite("hierarchical merges")
struct HierarchicalMergeTests {
    static let regionSites = ["region-1": ["site-1", "site-2", "site-3"], "region-2": ["site-4", "site-5", "site-6"]]

    /// A flat collector (the Federation's) and a root collector copied from
    /// it before any merge, so both start from the same generation 0; two
    /// regional collectors, each pinning three of the six sites, pinned by
    /// the root and listed in its merge.regions.
    static func setUp(root rootConfig: [(String, String)] = []) throws -> (fed: Federation, root: String) {
        let fed = try Federation(sites: (1...6).map { "site-\($0)" })
        let root = fed.root + "/root"
        try FileManager.default.copyItem(atPath: fed.collector, toPath: root)
        try Federation.setConfig(home: root, table: "merge", "regions", "[\"region-1\", \"region-2\"]")
        for (k, v) in rootConfig { try Federation.setConfig(home: root, table: "merge", k, v) }
        for (region, sites) in regionSites.sorted(by: { $0.key < $1.key }) {
            let fpr = try fed.keyring.generate(region)
            let keyFile = try fed.keyring.exportPublic(fpr, to: "\(region).asc")
            let home = fed.root + "/" + region
            try fed.run([
                "init", "region", "--home", home, "--region-id", region, "--key", fpr, "--collector-key",
                fed.collector + "/keys/collector.asc",
                "--model-id", "demo", "--arch", fed.arch,
            ])
            try FileManager.default.copyItem(
                atPath: fed.collector + "/generations/g000000.fbg", toPath: home + "/generations/g000000.fbg")
            try Federation.setConfig(home: home, table: "merge", "min_bundles", "1")
            try Federation.setConfig(home: home, table: "merge", "settle_seconds", "0")
            for s in sites {
                try fed.run([
                    "keys", "add", "--home", home, "--site", s,
                    try fed.keyring.exportPublic(fed.siteKeys[s]!, to: "\(s).asc"),
                ])
            }
            try fed.run(["keys", "add", "--home", root, "--site", region, keyFile])
            // The root knows which sites each region serves.
            for s in sites {
                try fed.run(["keys", "add", "--home", root, "--site", s, fed.root + "/\(s).asc", "--region", region])
            }
        }
        return (fed, root)
    }

    /// A delta whose elements range from 1e-6 to 10 in magnitude with full
    /// mantissas: float64 sums of these in two groupings differ in their
    /// last bits, so only exact sums agree.
    static func delta(arch: String, seed: UInt64) throws -> [(name: String, tensor: Tensor)] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func next() -> Double {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Double(state >> 11) / Double(1 << 53)
        }
        return try ModelArchitecture(spec: arch).tensorShapes.map { name, shape in
            (
                name,
                Tensor(
                    shape: shape,
                    floats: (0..<shape.reduce(1, *)).map { _ in Float((next() * 2 - 1) * pow(10, -6 + 7 * next())) })
            )
        }
    }

    /// One signed bundle per site, written to the flat collector's inbox
    /// and copied into the inbox of the site's region.
    static func deliver(_ fed: Federation, seq: Int64, bases: [String: (number: Int, digest: String)]) throws {
        for (region, sites) in regionSites {
            for s in sites {
                let path = try fed.update(
                    site: s, seq: seq, base: bases[s]!, examples: Int64(100 * Int(s.dropFirst(5))! + 7 * Int(seq)),
                    tensors: try delta(arch: fed.arch, seed: UInt64(seq) * 100 + UInt64(s.dropFirst(5))!))
                try FileManager.default.copyItem(
                    atPath: path, toPath: fed.root + "/\(region)/inbox/" + (path as NSString).lastPathComponent)
            }
        }
    }

    /// Each region merges, and its partial goes into the root's inbox.
    static func mergeRegions(_ fed: Federation, root: String) throws -> [String: [String: Any]] {
        var reports: [String: [String: Any]] = [:]
        for region in regionSites.keys.sorted() {
            let r = try fed.run(["merge", "--home", fed.root + "/" + region, "--json"]).summary()
            reports[region] = r
            let file = r["file"] as! String
            try FileManager.default.copyItem(
                atPath: file, toPath: root + "/inbox/" + (file as NSString).lastPathComponent)
        }
        return reports
    }

    @Test(
        "two regions of three sites merge, over two generations (the second with a stale bundle and fedadam), to exactly the flat merge's weights"
    )
    func equalsTheFlatMerge() throws {
        let (fed, root) = try Self.setUp()
        let g0 = try fed.generation(0)
        try Self.deliver(fed, seq: 1, bases: Dictionary(uniqueKeysWithValues: (1...6).map { ("site-\($0)", g0) }))
        try fed.run(["merge", "--home", fed.collector])
        let reports = try Self.mergeRegions(fed, root: root)
        #expect(reports["region-1"]?["kind"] as? String == "partial" && reports["region-1"]?["generation"] as? Int == 1)
        #expect((reports["region-2"]?["accepted"] as? [[String: Any]])?.count == 3)
        // A second merge before the root's generation 1 arrives waits.
        #expect(try fed.fedbatch(["merge", "--home", fed.root + "/region-1"]).status == 5)
        try fed.run(["merge", "--home", root])
        try Self.expectSameWeights(
            fed.collector + "/generations/g000001.fbg", root + "/generations/g000001.fbg", fed: fed)

        // The tree is in the root's manifest: two partials, each naming its
        // region, key and bundles; every site's bundle with its partial.
        let m = try Inspection.inspect(path: root + "/generations/g000001.fbg").manifest
        let partials = try #require(m.partials)
        #expect(
            partials.map(\.region).sorted() == ["region-1", "region-2"]
                && partials.allSatisfy { $0.bundles == 3 && $0.seq == 1 })
        #expect(Set(m.included?.map(\.site) ?? []) == Set((1...6).map { "site-\($0)" }))
        #expect(m.included?.allSatisfy { b in partials.contains { $0.digest == b.partial } } == true)
        let flat = try Inspection.inspect(path: fed.collector + "/generations/g000001.fbg").manifest
        #expect(Set(flat.included?.map(\.digest) ?? []) == Set(m.included?.map(\.digest) ?? []))
        #expect(try fed.run(["log", "--home", root]).status == 0)

        // Generation 2: the regions take the root's generation 1; site-1 is
        // a generation behind (its update is on generation 0); the root and
        // the flat collector both step with fedadam.
        for region in Self.regionSites.keys {
            try FileManager.default.copyItem(
                atPath: root + "/generations/g000001.fbg", toPath: fed.root + "/\(region)/generations/g000001.fbg")
        }
        let g1 = try fed.generation(1)
        let rootG1 = (1, try Inspection.inspect(path: root + "/generations/g000001.fbg").digest)
        // The flat and the root chains differ in their manifests, so each
        // site's update names the generation 1 of the chain it goes to; the
        // weights are the same. The flat collector gets its own copies.
        var bases: [String: (number: Int, digest: String)] = [:]
        for s in (1...6).map({ "site-\($0)" }) { bases[s] = s == "site-1" ? g0 : rootG1 }
        try Self.deliver(fed, seq: 2, bases: bases)
        for name in try FileManager.default.contentsOfDirectory(atPath: fed.collector + "/inbox") {
            try FileManager.default.removeItem(atPath: fed.collector + "/inbox/" + name)
        }
        for s in (1...6).map({ "site-\($0)" }) {
            try fed.update(
                site: s, seq: 2, base: s == "site-1" ? g0 : g1, examples: Int64(100 * Int(s.dropFirst(5))! + 14),
                tensors: try Self.delta(arch: fed.arch, seed: 200 + UInt64(s.dropFirst(5))!))
        }
        try fed.run(["merge", "--home", fed.collector, "--strategy", "fedadam"])
        let second = try Self.mergeRegions(fed, root: root)
        #expect(
            (second["region-1"]?["accepted"] as? [[String: Any]])?.contains {
                $0["site"] as? String == "site-1" && $0["staleness"] as? Int == 1
            } == true)
        try fed.run(["merge", "--home", root, "--strategy", "fedadam"])
        try Self.expectSameWeights(
            fed.collector + "/generations/g000002.fbg", root + "/generations/g000002.fbg", fed: fed)
        // The root's generations re-derive from the regions' partials (a
        // stale bundle inside one, fedadam's state from the parent), and the
        // flat collector's from the bundles.
        for home in [root, fed.collector] {
            let audit = try fed.fedbatch(["audit", "--home", home, "all", "--json"])
            #expect(audit.status == 0, "\(audit.out)\(audit.err)")
            let verdicts = (try audit.summary()["generations"] as? [[String: Any]])?.map { $0["verdict"] as? String }
            #expect(verdicts == ["root", "reproduced", "reproduced"])
        }
    }

    /// The two generations' tensors, exported, are the same bytes.
    static func expectSameWeights(_ a: String, _ b: String, fed: Federation) throws {
        let outA = fed.root + "/a.safetensors", outB = fed.root + "/b.safetensors"
        try? FileManager.default.removeItem(atPath: outA)
        try? FileManager.default.removeItem(atPath: outB)
        try fed.run(["export", "--home", fed.collector, a, "--out", outA])
        try fed.run(["export", "--home", fed.collector, b, "--out", outB])
        let x = try SafetensorsFile(bytes: Data(contentsOf: URL(fileURLWithPath: outA)))
        let y = try SafetensorsFile(bytes: Data(contentsOf: URL(fileURLWithPath: outB)))
        #expect(x.names.sorted() == y.names.sorted())
        for name in x.names { #expect(x.tensor(name)?.data == y.tensor(name)?.data, "tensor \(name) differs") }
    }

    static func codes(_ report: [String: Any]) -> [String: String] {
        Dictionary(
            uniqueKeysWithValues: ((report["rejected"] as? [[String: Any]]) ?? []).map {
                ($0["name"] as! String, $0["code"] as! String)
            })
    }

    @Test(
        "the root refuses a partial it cannot take, whole and with its reason; a region refuses a rule that is not a sum and waits for the root"
    )
    func refusals() throws {
        let (fed, root) = try Self.setUp()
        let g0 = try fed.generation(0)
        try Self.deliver(fed, seq: 1, bases: Dictionary(uniqueKeysWithValues: (1...6).map { ("site-\($0)", g0) }))
        let region2 = fed.root + "/region-2"
        // A region cannot run a rule that needs every bundle's own update.
        try Federation.setConfig(home: region2, table: "merge", "strategy", "\"median\"")
        let median = try fed.fedbatch(["merge", "--home", region2])
        #expect(median.status == 1 && median.err.contains("cannot merge partial aggregates"))
        #expect(RemoteDirectoryTests.files(region2 + "/inbox").count == 3)
        try Federation.setConfig(home: region2, table: "merge", "strategy", "\"fedavg\"")
        // region-2 clips where the root does not.
        try Federation.setConfig(home: region2, table: "merge", "clip_norm", "5.0")
        let partials = try Self.mergeRegions(fed, root: root).mapValues {
            ($0["file"] as! String as NSString).lastPathComponent
        }

        // Nor can the root.
        let copy = fed.root + "/root-median"
        try FileManager.default.copyItem(atPath: root, toPath: copy)
        let byMedian = Self.codes(
            try fed.fedbatch(["merge", "--home", copy, "--strategy", "median", "--json"]).summary())
        #expect(
            byMedian[partials["region-1"]!] == "partial.strategy"
                && byMedian[partials["region-2"]!] == "partial.strategy")
        // A sender not listed in merge.regions sends no partials.
        let unlisted = fed.root + "/root-unlisted"
        try FileManager.default.copyItem(atPath: root, toPath: unlisted)
        try Federation.setConfig(home: unlisted, table: "merge", "regions", "[\"region-1\"]")
        #expect(
            Self.codes(try fed.fedbatch(["merge", "--home", unlisted, "--json"]).summary())[partials["region-2"]!]
                == "partial.not-a-region")
        // A collector with no regions at all names a partial for what it is
        // (from its statement, before the size a partial may have matters).
        let none = fed.root + "/root-none"
        try FileManager.default.copyItem(atPath: root, toPath: none)
        try Federation.setConfig(home: none, table: "merge", "regions", "[]")
        let byNone = Self.codes(try fed.fedbatch(["merge", "--home", none, "--json"]).summary())
        #expect(
            byNone[partials["region-1"]!] == "partial.not-a-region"
                && byNone[partials["region-2"]!] == "partial.not-a-region")

        // Other settings than the root's: refused whole; region-1's merges.
        let merged = try fed.run(["merge", "--home", root, "--json"]).summary()
        #expect(Self.codes(merged)[partials["region-2"]!] == "partial.settings")
        #expect((merged["accepted"] as? [[String: Any]])?.map { $0["site"] as! String } == ["region-1"])
        let g1 = try Inspection.inspect(path: root + "/generations/g000001.fbg").manifest
        #expect(g1.included?.map(\.site).sorted() == ["site-1", "site-2", "site-3"] && g1.partials?.count == 1)

        // The same partial again is a replay; a partial made on generation 0
        // is stale now; region-2's next merge waits for generation 1.
        try FileManager.default.copyItem(
            atPath: fed.root + "/region-1/outbox/" + partials["region-1"]!, toPath: root + "/inbox/again.fbp")
        try FileManager.default.moveItem(
            atPath: root + "/quarantine/" + partials["region-2"]!, toPath: root + "/inbox/" + partials["region-2"]!)
        let later = try fed.fedbatch(["merge", "--home", root, "--json"])
        #expect(later.status == 5)
        let laterCodes = Self.codes(try later.summary())
        #expect(laterCodes["again.fbp"] == "protocol.replay" && laterCodes[partials["region-2"]!] == "partial.stale")
        let waits = try fed.fedbatch(["merge", "--home", region2, "--json"])
        #expect(waits.status == 5)
        #expect(
            ((try waits.summary())["waiting"] as? [[String: Any]])?.first?["reason"] as? String
                == "this region's partial aggregate for generation 1 is made; the next waits for the root's generation 1 (fedbatch pull)"
        )

        // A site that a region serves cannot also reach the root directly:
        // its direct update is refused, its region's partial carries it.
        try FileManager.default.copyItem(
            atPath: root + "/generations/g000001.fbg", toPath: fed.root + "/region-1/generations/g000001.fbg")
        let base = (1, try Inspection.inspect(path: root + "/generations/g000001.fbg").digest)
        let direct = try fed.update(
            site: "site-2", seq: 2, base: base, tensors: try Self.delta(arch: fed.arch, seed: 77))
        try FileManager.default.copyItem(
            atPath: direct, toPath: fed.root + "/region-1/inbox/" + (direct as NSString).lastPathComponent)
        try FileManager.default.moveItem(
            atPath: direct, toPath: root + "/inbox/" + (direct as NSString).lastPathComponent)
        let p2 = try fed.run(["merge", "--home", fed.root + "/region-1", "--json"]).summary()["file"] as! String
        try FileManager.default.copyItem(atPath: p2, toPath: root + "/inbox/" + (p2 as NSString).lastPathComponent)
        let both = try fed.run(["merge", "--home", root, "--json"]).summary()
        #expect(Self.codes(both) == [(direct as NSString).lastPathComponent: "partial.via-region"], "\(both)")
        #expect(
            try Inspection.inspect(path: root + "/generations/g000002.fbg").manifest.included?.map(\.site) == ["site-2"]
        )
        #expect(try fed.run(["log", "--home", root]).status == 0)
    }

    @Test(
        "the Slurm array example runs each region's pull, merge and push over directory remotes; the root pulls and merges what they pushed"
    )
    func slurmArray() throws {
        let (fed, root) = try Self.setUp()
        let up = fed.root + "/up"
        try FileManager.default.createDirectory(atPath: up, withIntermediateDirectories: false)
        try Federation.setConfig(home: root, table: "remote", "url", "\"\(up)\"")
        try fed.run(["publish", "--home", root])
        // The regions start with no generation: pull brings generation 0 down.
        let g0 = try fed.generation(0)
        for (region, sites) in Self.regionSites {
            let home = fed.root + "/" + region, remote = fed.root + "/\(region)-remote"
            try FileManager.default.removeItem(atPath: home + "/generations/g000000.fbg")
            try Federation.setConfig(home: home, table: "remote", "url", "\"\(remote)\"")
            try Federation.setConfig(home: home, table: "remote", "upstream", "\"\(up)\"")
            for s in sites {
                let path = try fed.update(
                    site: s, seq: 1, base: g0, tensors: try Self.delta(arch: fed.arch, seed: UInt64(s.dropFirst(5))!))
                try FileManager.default.createDirectory(
                    atPath: "\(remote)/inbox/\(s)", withIntermediateDirectories: true)
                try FileManager.default.moveItem(
                    atPath: path, toPath: "\(remote)/inbox/\(s)/" + (path as NSString).lastPathComponent)
            }
        }
        let tmp = TempDir()
        let list = try tmp.write("regions.txt", Data("region-1\nregion-2\n".utf8))
        // A region's metrics are the collector series, labelled region.
        try FileManager.default.createDirectory(atPath: tmp.path + "/metrics", withIntermediateDirectories: false)
        try Federation.setConfig(
            home: fed.root + "/region-1", table: "metrics", "textfile_dir", "\"\(tmp.path)/metrics\"")
        func task(_ i: Int) throws -> ProcessResult {
            var env = ProcessInfo.processInfo.environment
            env["GNUPGHOME"] = fed.keyring.home
            env.removeValue(forKey: "FEDBATCH_HOME")
            env["FEDBATCH"] = TestPaths.fedbatch
            env["FEDBATCH_REGIONS"] = list
            env["FEDBATCH_REGION_HOMES"] = fed.root
            env["SLURM_ARRAY_TASK_ID"] = String(i)
            return try Subprocess.run(
                "/bin/bash", [TestPaths.packageRoot + "/examples/slurm/regional-merge.sh"], environment: env)
        }
        for i in 0..<2 {
            let r = try task(i)
            #expect(r.status == 0, "task \(i): \(r.err)")
        }
        #expect(RemoteDirectoryTests.files(up + "/inbox/region-1") == ["demo-g000001-region-1.fbp"])
        #expect(RemoteDirectoryTests.files(up + "/inbox/region-2") == ["demo-g000001-region-2.fbp"])
        // Run again: nothing new, a partial waiting for the root: success.
        #expect(try task(0).status == 0)
        let status = try fed.run(["status", "--home", fed.root + "/region-1", "--json"]).summary()
        #expect(
            status["role"] as? String == "region" && (status["generation"] as? [String: Any])?["number"] as? Int == 0)
        let metrics = try String(contentsOfFile: tmp.path + "/metrics/fedbatch_region_demo.prom", encoding: .utf8)
        #expect(metrics.contains("fedbatch_generation{role=\"region\",model=\"demo\"} 0"), "\(metrics)")
        let missing = try task(2)
        #expect(missing.status == 2 && missing.err.contains("no region on line 3"))

        try fed.run(["pull", "--home", root])
        // fedbatch verify knows a partial, as the root checks it.
        let verdict = try fed.run(["verify", "--home", root, root + "/inbox/demo-g000001-region-1.fbp", "--json"])
            .summary()
        let first = (verdict["files"] as? [[String: Any]])?.first
        #expect(
            first?["ok"] as? Bool == true && first?["kind"] as? String == "partial"
                && first?["site"] as? String == "region-1", "\(verdict)")
        let merged = try fed.run(["merge", "--home", root, "--json"]).summary()
        #expect(
            (merged["accepted"] as? [[String: Any]])?.map { $0["site"] as! String }.sorted() == [
                "region-1", "region-2",
            ])
        let m = try Inspection.inspect(path: root + "/generations/g000001.fbg").manifest
        #expect(m.included?.count == 6 && m.partials?.count == 2)
    }
}

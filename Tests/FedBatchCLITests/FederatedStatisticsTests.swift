import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// `fedbatch stats` end to end through the real binary: sites summarise
/// their tables, the collector verifies, combines and pins, and the result
/// is numpy's over the pooled rows.
@Suite("federated statistics: site bundles, exact combination, pinned normalisation")
struct FederatedStatisticsTests {
    /// The generation's members, read from its file.
    static func members(_ path: String) throws -> (Manifest, [String: Data]) {
        let c = try ContainerReader.read(
            payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: path))).payload)
        return (c.manifest, c.members)
    }

    @Test(
        "three sites' statistics combine to numpy's over the pooled rows; a small site is refused; the pin keeps the weights and sets the schema"
    )
    func federation() throws {
        let keyring = try TestKeyring()
        let collectorKey = try keyring.generate("collector")
        let keys = try ["site-a", "site-b", "site-c", "site-d"].map { ($0, try keyring.generate($0)) }
        let stranger = try keyring.generate("stranger")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        func fb(_ args: [String]) throws -> ProcessResult { try Subprocess.fedbatch(args, environment: env) }
        let dir = keyring.dir
        // Three sites of different sizes and distributions (a shifted, a
        // scaled and a large-offset feature), a categorical column with a
        // rare category at one site, blanks, text labels, quoted fields and
        // an id column; and a site of 12 rows.
        let made = try Subprocess.run(
            TestPaths.python,
            [
                "-c",
                """
                import csv, numpy as np
                rng = np.random.default_rng(11)
                def write(path, n, shift, scale, rare):
                    x = rng.normal(shift, scale, (n, 3))
                    x[:, 2] += 1e6
                    colours = rng.choice(["red", "green", "blue"], n)
                    if rare: colours[:3] = "blue"; colours[3:] = np.where(colours[3:] == "blue", "red", colours[3:])
                    y = np.where(x[:, 0] > shift, "malignant", "benign")
                    with open(path, "w", newline="") as f:
                        w = csv.writer(f, quoting=csv.QUOTE_ALL)
                        w.writerow(["id", "f0", "colour", "f1", "f2", "diagnosis"])
                        for i in range(n):
                            cells = [repr(float(v)) for v in x[i]]
                            if i % 7 == 2: cells[1] = ""
                            w.writerow([f"p{i}", cells[0], colours[i], cells[1], cells[2], y[i]])
                write("\(dir.path)/a.csv", 150, 0.0, 1.0, False)
                write("\(dir.path)/b.csv", 90, 3.0, 2.0, True)
                write("\(dir.path)/c.csv", 61, -1.0, 0.5, False)
                write("\(dir.path)/d.csv", 12, 0.0, 1.0, False)
                """,
            ])
        #expect(made.status == 0, "\(made.err)")
        let col = dir.file("col")
        try fb([
            "init", "collector", "--home", col, "--model-id", "tab", "--arch", "mlp:6-4-2", "--key", collectorKey,
            "--schema-from", dir.file("a.csv"), "--label", "diagnosis", "--labels", "benign,malignant", "--drop", "id",
            "--categorical", "colour", "--missing", "mean", "-q",
        ]).checked()
        var sites: [String: String] = [:]
        for (name, key) in keys {
            let home = dir.file(name)
            try TabularSchemaTests.join(site: name, key: key, home: home, collector: col, keyring: keyring)
            sites[name] = home
        }
        let files = ["site-a": "a.csv", "site-b": "b.csv", "site-c": "c.csv", "site-d": "d.csv"]

        // A dry run writes nothing and uses no sequence number.
        let dry = try fb(["stats", "--home", sites["site-a"]!, "--data", dir.file("a.csv"), "--dry-run", "--json"])
        #expect(dry.status == 0, "\(dry.err)")
        #expect(try dry.summary()["file"] is NSNull)
        #expect(try FileManager.default.contentsOfDirectory(atPath: sites["site-a"]! + "/outbox").isEmpty)

        var bundles: [String: String] = [:]
        for name in ["site-a", "site-b", "site-c"] {
            let r = try fb(["stats", "--home", sites[name]!, "--data", dir.file(files[name]!), "--json"])
            #expect(r.status == 0, "\(r.err)")
            let s = try r.summary()
            bundles[name] = try #require(s["file"] as? String)
            #expect(bundles[name]!.hasSuffix(".fbs"))
            // The rare category (3 rows at site-b) is not released.
            if name == "site-b" {
                let colour = (s["columns"] as? [[String: Any]])?.first { $0["name"] as? String == "colour" }
                let values = (colour?["categories"] as? [[String: Any]])?.compactMap { $0["value"] as? String }
                #expect(values == ["green", "red"], "\(String(describing: colour))")
            }
        }
        // A second run on the same generation is refused (exit 5) unless --force.
        let again = try fb(["stats", "--home", sites["site-a"]!, "--data", dir.file("a.csv")])
        #expect(again.status == 5 && again.err.contains("already wrote statistics"), "\(again.err)")
        // A site below min_count is refused, and writes nothing.
        let small = try fb(["stats", "--home", sites["site-d"]!, "--data", dir.file("d.csv"), "--json"])
        #expect(small.status == 1, "\(small.err)")
        #expect(try small.jsonErrorLines().last?["code"] as? String == "stats.min-count")
        #expect(try FileManager.default.contentsOfDirectory(atPath: sites["site-d"]! + "/outbox").isEmpty)

        // A statistics bundle from a key the collector does not pin, and one
        // for another model, are quarantined like updates.
        let foreign = dir.file("foreign")
        try fb([
            "init", "collector", "--home", dir.file("col-other"), "--model-id", "other", "--arch", "mlp:6-4-2",
            "--key", collectorKey, "--schema-from", dir.file("a.csv"), "--label", "diagnosis", "--labels",
            "benign,malignant", "--drop", "id", "--categorical", "colour", "-q",
        ]).checked()
        try fb([
            "keys", "add", "--home", dir.file("col-other"), "--site", "site-a",
            try keyring.exportPublic(keys[0].1, to: "site-a-other.asc"), "-q",
        ]).checked()
        try fb([
            "init", "site", "--home", foreign, "--site-id", "site-a", "--key", keys[0].1, "--collector-key",
            dir.file("col-other") + "/keys/collector.asc", "--model-id", "other", "-q",
        ]).checked()
        try FileManager.default.copyItem(
            atPath: dir.file("col-other") + "/generations/g000000.fbg", toPath: foreign + "/generations/g000000.fbg")
        let other = try fb(["stats", "--home", foreign, "--data", dir.file("a.csv"), "--json"])
        let otherFile = try #require(try other.summary()["file"] as? String)
        let strangerHome = dir.file("stranger")
        try fb([
            "init", "site", "--home", strangerHome, "--site-id", "site-x", "--key", stranger, "--collector-key",
            col + "/keys/collector.asc", "--model-id", "tab", "-q",
        ]).checked()
        try FileManager.default.copyItem(
            atPath: col + "/generations/g000000.fbg", toPath: strangerHome + "/generations/g000000.fbg")
        let strangerFile = try #require(
            try fb(["stats", "--home", strangerHome, "--data", dir.file("a.csv"), "--json"]).summary()["file"]
                as? String)

        // inspect and verify read a statistics bundle as what it is.
        let inspected = try fb(["inspect", bundles["site-a"]!, "--json"])
        let manifest = try inspected.summary()["manifest"] as? [String: Any]
        #expect(inspected.status == 0 && manifest?["kind"] as? String == "stats", "\(inspected.err)")
        let verified = try fb(["verify", "--home", col, bundles["site-a"]!])
        #expect(verified.status == 0, "\(verified.out)\(verified.err)")

        let inbox = col + "/inbox/"
        for (i, path) in (Array(bundles.values) + [otherFile, strangerFile]).enumerated() {
            try FileManager.default.copyItem(atPath: path, toPath: inbox + "in-\(i).fbs")
        }
        // A merge checks them and leaves the good ones for the pin.
        let merge = try fb(["merge", "--home", col, "--settle", "0", "--json"])
        let merged = try merge.summary()
        let waiting = (merged["waiting"] as? [[String: Any]]) ?? []
        #expect(waiting.count == 3 && waiting.allSatisfy { ($0["reason"] as? String)?.contains("stats --pin") == true })
        let codes = ((merged["rejected"] as? [[String: Any]]) ?? []).compactMap { $0["code"] as? String }.sorted()
        #expect(codes == ["model.id", "signature.unknown-key"], "\(codes)")

        // The combination, against numpy over the pooled rows.
        let shown = try fb(["stats", "--home", col, "--settle", "0", "--json"])
        #expect(shown.status == 0, "\(shown.err)")
        let pin = try fb(["stats", "--home", col, "--pin", "--settle", "0", "--json"])
        #expect(pin.status == 0, "\(pin.err)")
        let pinned = try pin.summary()
        #expect(pinned["generation"] as? Int == 1 && (pinned["sites"] as? [Any])?.count == 3)
        // The pin re-derives from the three bundles it lists.
        let audit = try fb(["audit", "--home", col, "1", "--json"])
        #expect(audit.status == 0, "\(audit.out)\(audit.err)")
        #expect(
            (try audit.summary()["generations"] as? [[String: Any]])?.first?["verdict"] as? String == "reproduced")
        let summaryPath = try dir.write("pinned.json", Data(pin.out.split(separator: "\n").last!.utf8))
        let oracle = try Subprocess.run(
            TestPaths.python,
            [
                "-c",
                """
                import csv, json, sys, numpy as np
                rows = []
                for name in ["a", "b", "c"]:
                    with open(f"\(dir.path)/{name}.csv", newline="") as f:
                        rows += list(csv.DictReader(f))
                s = json.load(open("\(summaryPath)"))
                assert s["rows"] == len(rows), s["rows"]
                cols = {c["name"]: c for c in s["columns"]}
                bad = []
                for f in ["f0", "f1", "f2"]:
                    v = np.array([float(r[f]) for r in rows if r[f] != ""])
                    c = cols[f]
                    if c["count"] != len(v) or c["missing"] != sum(r[f] == "" for r in rows): bad.append((f, "count"))
                    if abs(c["mean"] - v.mean()) > 1e-12 * abs(v.mean()): bad.append((f, c["mean"], v.mean()))
                    if abs(c["std"] ** 2 - v.var()) > 1e-12 * v.var(): bad.append((f, c["std"] ** 2, v.var()))
                    if c["min"] != v.min() or c["max"] != v.max(): bad.append((f, "range"))
                # Categories: the counts each site released (site-b's 3 blue rows were not).
                colour = {d["value"]: d["count"] for d in cols["colour"]["categories"]}
                expected = {}
                for name in ["a", "b", "c"]:
                    with open(f"\(dir.path)/{name}.csv", newline="") as f:
                        local = {}
                        for r in csv.DictReader(f): local[r["colour"]] = local.get(r["colour"], 0) + 1
                    for k, n in local.items():
                        if n >= 20: expected[k] = expected.get(k, 0) + n
                if colour != expected: bad.append(("colour", colour, expected))
                labels = {d["value"]: d["count"] for d in s["label"]}
                want = {}
                for r in rows: want[r["diagnosis"]] = want.get(r["diagnosis"], 0) + 1
                if labels != want: bad.append(("label", labels, want))
                print(bad)
                sys.exit(1 if bad else 0)
                """,
            ])
        #expect(oracle.status == 0, "\(oracle.out)\(oracle.err)")

        // The pin generation: same weights, the schema's new normalisation,
        // the bundles listed, the combination carried.
        let (g0, g0Members) = try Self.members(col + "/generations/g000000.fbg")
        let (g1, g1Members) = try Self.members(col + "/generations/g000001.fbg")
        #expect(g1Members[ContainerPath.tensors] == g0Members[ContainerPath.tensors])
        #expect(g1.statistics?.count == 3 && g1.strategy?.name == "stats-pin" && g0.statistics == nil)
        let schema = try TabularSchema.parse(try #require(g1Members[TabularSchema.member]))
        let combined = try DataStatistics.parse(try #require(g1Members[ContainerPath.statistics]))
        #expect(schema.mean?[0] == combined.numeric["f0"]?.mean && schema.features == ["f0", "colour", "f1", "f2"])
        #expect(schema.std?[3] == combined.numeric["f2"]!.variance!.squareRoot() && schema.mean?[1] == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: inbox).isEmpty)
        let log = try fb(["log", "--home", col])
        #expect(log.status == 0 && log.out.contains("(statistics pinned from 3 sites)"), "\(log.out)")

        // A site trains on the pinned generation: its blanks are now imputed.
        try FileManager.default.copyItem(
            atPath: col + "/generations/g000001.fbg", toPath: sites["site-a"]! + "/generations/g000001.fbg")
        let trained = try fb(["train", "--home", sites["site-a"]!, "--data", dir.file("a.csv"), "--json"])
        #expect(trained.status == 0, "\(trained.err)")
        let metrics = (try trained.summary()["bundle"] as? [String: Any])?["metrics"] as? [String: Any]
        #expect(metrics?["imputed_cells"] as? Double == 22, "\(String(describing: metrics))")

        // A replayed statistics bundle is refused as one and removed (the
        // home keeps the original in accepted/), also once state.db is
        // rebuilt from the signed files.
        func replay(_ label: String) throws {
            try FileManager.default.copyItem(atPath: bundles["site-b"]!, toPath: inbox + "replay.fbs")
            let r = try fb(["stats", "--home", col, "--settle", "0", "--json"])
            #expect(r.status == 5, "\(label): \(r.out)\(r.err)")
            let rejected = try r.summary()["rejected"] as? [[String: Any]]
            #expect(rejected?.map { $0["code"] as? String } == ["protocol.replay"], "\(label): \(r.out)")
            #expect(!FileManager.default.fileExists(atPath: inbox + "replay.fbs"), "\(label)")
        }
        try replay("state.db intact")
        try FileManager.default.removeItem(atPath: col + "/state.db")
        #expect(try fb(["stats", "--home", col, "--settle", "0"]).status == 5)
        try replay("state.db rebuilt")
    }
}

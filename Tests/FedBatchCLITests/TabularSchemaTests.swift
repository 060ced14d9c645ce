import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// A tabular model pins its CSV columns in every generation: sites read
/// their files by column name, so swapped columns train the same, and a
/// missing column or an undeclared one (a patient id) is an error naming
/// it. Real keys, the real binary, CSV files written by numpy.
@Suite("tabular schemas")
struct TabularSchemaTests {
    @Test(
        "columns are read by name: swapped columns train identically; a missing column and an id column are named; eval applies the schema"
    )
    func schema() throws {
        let keyring = try TestKeyring()
        let collectorKey = try keyring.generate("collector")
        let siteKeys = [try keyring.generate("site-a"), try keyring.generate("site-b")]
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        func fb(_ args: [String]) throws -> ProcessResult { try Subprocess.fedbatch(args, environment: env) }
        let dir = keyring.dir
        // Four features on very different scales, a binary label, a patient id.
        let made = try Subprocess.run(
            TestPaths.python,
            [
                "-c",
                """
                import json, numpy as np
                rng = np.random.default_rng(7)
                n = 400
                x = np.stack([rng.normal(1000, 50, n), rng.normal(0, 1, n), rng.normal(5, 2, n), rng.normal(-3, 0.5, n)], 1)
                y = ((x[:, 1] + (x[:, 2] - 5) / 2) > 0).astype(int)
                ids = np.arange(10000, 10000 + n)
                def write(path, order):
                    names = {"patient_id": ids, "ward": ids % 7, "f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2], "f3": x[:, 3], "label": y}
                    with open(path, "w") as f:
                        f.write(",".join(order) + "\\n")
                        for i in range(n):
                            f.write(",".join(repr(float(names[c][i])) if c.startswith("f") else str(int(names[c][i])) for c in order) + "\\n")
                write("\(dir.path)/train.csv", ["patient_id", "f0", "f1", "f2", "f3", "label"])
                write("\(dir.path)/swapped.csv", ["patient_id", "f0", "f2", "f1", "f3", "label"])
                write("\(dir.path)/missing.csv", ["patient_id", "f0", "f1", "f2", "label"])
                write("\(dir.path)/extra.csv", ["patient_id", "f0", "f1", "f2", "f3", "ward", "label"])
                json.dump({"mean": {f"f{i}": float(x[:, i].mean()) for i in range(4)}, "std": {f"f{i}": float(x[:, i].std()) for i in range(4)}},
                          open("\(dir.path)/stats.json", "w"))
                """,
            ])
        #expect(made.status == 0, "\(made.err)")

        let col = dir.file("col")
        // Without --drop, the id column would be a feature: five, not four.
        let noDrop = try fb([
            "init", "collector", "--home", col, "--model-id", "tab", "--arch", "mlp:4-3-2", "--key", collectorKey,
            "--schema-from", dir.file("train.csv"),
        ])
        #expect(
            noDrop.status != 0 && noDrop.err.contains("5 feature columns; the model mlp:4-3-2 reads 4"), "\(noDrop.err)"
        )
        try fb([
            "init", "collector", "--home", col, "--model-id", "tab", "--arch", "mlp:4-3-2", "--key", collectorKey,
            "--schema-from", dir.file("train.csv"), "--drop", "patient_id", "--normalize", dir.file("stats.json"), "-q",
        ]).checked()
        let g0 = col + "/generations/g000000.fbg"
        let members = try ContainerReader.read(
            payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: g0))).payload
        ).members
        let schema = try TabularSchema.parse(try #require(members[TabularSchema.member]))
        #expect(schema.features == ["f0", "f1", "f2", "f3"] && schema.label == "label" && schema.std?.count == 4)
        #expect(abs((schema.mean?[0] ?? 0) - 1000) < 10)

        var bundles: [Data] = []
        for (i, (site, csv)) in [("site-a", "train.csv"), ("site-b", "swapped.csv")].enumerated() {
            let home = dir.file(site)
            try Self.join(site: site, key: siteKeys[i], home: home, collector: col, keyring: keyring)
            // A column the schema does not name must be dropped explicitly;
            // the id column init pinned as dropped needs no --drop.
            let ward = try fb(["train", "--home", home, "--data", dir.file("extra.csv"), "--seed", "1"])
            #expect(
                ward.status == 1 && ward.err.contains("\"ward\" is not in the model's schema")
                    && ward.err.contains("--drop"), "\(ward.err)")
            let r = try fb([
                "train", "--home", home, "--data", dir.file(csv), "--seed", "1", "--epochs", "10", "--lr", "0.1",
                "--json",
            ])
            #expect(r.status == 0, "\(r.err)")
            let file = try #require((try r.summary()["bundle"] as? [String: Any])?["file"] as? String)
            bundles.append(
                try #require(
                    try ContainerReader.read(
                        payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: file))).payload
                    )
                    .members[ContainerPath.tensors]))
        }
        // The same data with two columns swapped gives the same update, bit for bit.
        #expect(bundles.count == 2 && bundles[0] == bundles[1])

        // A missing column is named.
        let missing = try fb([
            "train", "--home", dir.file("site-a"), "--data", dir.file("missing.csv"), "--drop", "patient_id", "--force",
        ])
        #expect(missing.status == 1 && missing.err.contains("missing column \"f3\""), "\(missing.err)")

        // eval reads by the schema too: both files score the same, and well
        // above chance once standardised.
        var accuracies: [Double] = []
        for csv in ["train.csv", "swapped.csv"] {
            let e = try fb(["eval", "--home", col, g0, "--data", dir.file(csv), "--drop", "patient_id", "--json"])
            #expect(e.status == 0, "\(e.err)")
            accuracies.append(try e.summary()["accuracy"] as? Double ?? -1)
        }
        #expect(accuracies[0] == accuracies[1])
        // Generations after a merge keep the schema.
        for site in ["site-a", "site-b"] {
            for name in try FileManager.default.contentsOfDirectory(atPath: dir.file(site) + "/outbox") {
                try FileManager.default.moveItem(
                    atPath: dir.file(site) + "/outbox/" + name, toPath: col + "/inbox/" + name)
            }
        }
        try fb(["merge", "--home", col, "--settle", "0", "--min-bundles", "2", "-q"]).checked()
        let g1 = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: col + "/generations/g000001.fbg"))
            ).payload)
        #expect(g1.members[TabularSchema.member] == members[TabularSchema.member])
        let after = try fb([
            "eval", "--home", col, "latest", "--data", dir.file("train.csv"), "--drop", "patient_id", "--json",
        ])
        let accuracy = try after.summary()["accuracy"] as? Double ?? 0
        #expect(accuracy > 0.8, "accuracy \(accuracy) after one generation (generation 0: \(accuracies[0]))")
    }
}

extension ProcessResult {
    /// Fails the test with the command's stderr unless it exited 0.
    @discardableResult
    func checked() throws -> ProcessResult {
        if status != 0 { throw Subprocess.Failure(description: "exit \(status): \(err)") }
        return self
    }
}

extension TabularSchemaTests {
    @Test(
        "CSV as exporters write it: Python's csv module, every field quoted, CRLF, a BOM, ids with commas, quotes and line breaks, and a semicolon site"
    )
    func exportedCSV() throws {
        let keyring = try TestKeyring()
        let collectorKey = try keyring.generate("collector")
        let siteKeys = [try keyring.generate("site-a"), try keyring.generate("site-b")]
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        func fb(_ args: [String]) throws -> ProcessResult { try Subprocess.fedbatch(args, environment: env) }
        let dir = keyring.dir
        let made = try Subprocess.run(
            TestPaths.python,
            [
                "-c",
                """
                import csv, numpy as np
                rng = np.random.default_rng(3)
                n = 300
                x = rng.normal(0, 1, (n, 3))
                y = (x[:, 0] + x[:, 1] > 0).astype(int)
                ids = [f'Doe, "J" #{i}' + ("\\nsecond line" if i % 7 == 0 else "") for i in range(n)]
                header = ["record id", "f0", "f1", "f2", "diagnosis"]
                rows = [[ids[i]] + [repr(float(v)) for v in x[i]] + [str(y[i])] for i in range(n)]
                for path, delimiter in [("\(dir.path)/comma.csv", ","), ("\(dir.path)/semicolon.csv", ";")]:
                    with open(path, "w", newline="", encoding="utf-8-sig") as f:
                        w = csv.writer(f, quoting=csv.QUOTE_ALL, delimiter=delimiter)
                        w.writerow(header)
                        for r in rows: w.writerow(r)
                """,
            ])
        #expect(made.status == 0, "\(made.err)")
        let col = dir.file("col")
        try fb([
            "init", "collector", "--home", col, "--model-id", "tab", "--arch", "mlp:3-4-2", "--key", collectorKey,
            "--schema-from", dir.file("comma.csv"), "--label", "diagnosis", "--drop", "record id", "-q",
        ]).checked()
        var tensors: [Data] = []
        for (i, (site, csv, delimiter)) in [("site-a", "comma.csv", ","), ("site-b", "semicolon.csv", ";")].enumerated()
        {
            let home = dir.file(site)
            try Self.join(site: site, key: siteKeys[i], home: home, collector: col, keyring: keyring)
            try Federation.setConfig(home: home, table: "data", "delimiter", "\"\(delimiter)\"")
            let r = try fb([
                "train", "--home", home, "--data", dir.file(csv), "--drop", "record id", "--seed", "1", "--codec",
                "fp32",
                "--json",
            ])
            #expect(r.status == 0, "\(r.err)")
            let file = try #require((try r.summary()["bundle"] as? [String: Any])?["file"] as? String)
            #expect((try r.summary()["bundle"] as? [String: Any])?["num_examples"] as? Int == 300)
            tensors.append(
                try #require(
                    try ContainerReader.read(
                        payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: file))).payload
                    ).members[ContainerPath.tensors]))
        }
        // The same table, comma- or semicolon-separated, trains the same bits.
        #expect(tensors.count == 2 && tensors[0] == tensors[1])
        // The semicolon file read as commas is refused, naming what went wrong.
        try Federation.setConfig(home: dir.file("site-b"), table: "data", "delimiter", "\",\"")
        let wrong = try fb(["train", "--home", dir.file("site-b"), "--data", dir.file("semicolon.csv"), "--force"])
        #expect(wrong.status != 0 && wrong.err.contains("semicolon.csv"), "\(wrong.err)")
    }
}

extension TabularSchemaTests {
    @Test(
        "text labels map to classes (given, or inferred with a warning), pinned drops need no --drop, an unknown label is named"
    )
    func labelMapAndDrop() throws {
        let keyring = try TestKeyring()
        let collectorKey = try keyring.generate("collector")
        let siteKey = try keyring.generate("site-a")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        func fb(_ args: [String]) throws -> ProcessResult { try Subprocess.fedbatch(args, environment: env) }
        let dir = keyring.dir
        let made = try Subprocess.run(
            TestPaths.python,
            [
                "-c",
                """
                import csv, numpy as np
                rng = np.random.default_rng(5)
                n = 200
                x = rng.normal(0, 1, (n, 3))
                y = np.where(x[:, 0] > 0, "malignant", "benign")
                def write(path, labels):
                    with open(path, "w", newline="") as f:
                        w = csv.writer(f, quoting=csv.QUOTE_ALL)
                        w.writerow(["record id", "f0", "f1", "f2", "diagnosis"])
                        for i in range(n): w.writerow([f"r{i}"] + [repr(float(v)) for v in x[i]] + [labels[i]])
                write("\(dir.path)/train.csv", y)
                bad = y.copy(); bad[17] = "unsure"
                write("\(dir.path)/unknown.csv", bad)
                """,
            ])
        #expect(made.status == 0, "\(made.err)")
        let col = dir.file("col")
        // Inferred: the sorted distinct labels, with a warning to check them.
        let created = try fb([
            "init", "collector", "--home", col, "--model-id", "tab", "--arch", "mlp:3-4-2", "--key", collectorKey,
            "--schema-from", dir.file("train.csv"), "--label", "diagnosis", "--drop", "record id", "--json",
        ])
        #expect(created.status == 0, "\(created.err)")
        #expect(try created.jsonErrorLines().contains { $0["code"] as? String == "init.labels-inferred" })
        let g0 = col + "/generations/g000000.fbg"
        let schema = try TabularSchema.parse(
            try #require(
                try ContainerReader.read(
                    payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: g0))).payload
                ).members[TabularSchema.member]))
        #expect(schema.labels == ["benign", "malignant"] && schema.drop == ["record id"])
        // Given in another order; and a map that does not fit the model.
        let given = try fb([
            "init", "collector", "--home", dir.file("col2"), "--model-id", "tab", "--arch", "mlp:3-4-2", "--key",
            collectorKey, "--schema-from", dir.file("train.csv"), "--label", "diagnosis", "--drop", "record id",
            "--labels", "malignant,benign", "-q",
        ])
        #expect(given.status == 0, "\(given.err)")
        let three = try fb([
            "init", "collector", "--home", dir.file("col3"), "--model-id", "tab", "--arch", "mlp:3-4-2", "--key",
            collectorKey, "--schema-from", dir.file("train.csv"), "--label", "diagnosis", "--drop", "record id",
            "--labels", "a,b,c",
        ])
        #expect(three.status != 0 && three.err.contains("the label map has 3 classes"), "\(three.err)")

        // A site trains and evaluates with no --drop: the schema carries it.
        let home = dir.file("site-a")
        try Self.join(site: "site-a", key: siteKey, home: home, collector: col, keyring: keyring)
        let trained = try fb([
            "train", "--home", home, "--data", dir.file("train.csv"), "--epochs", "20", "--lr", "0.1", "--json",
        ])
        #expect(trained.status == 0, "\(trained.err)")
        let eval = try fb(["eval", "--home", home, "latest", "--data", dir.file("train.csv"), "--json"])
        let examples = try eval.summary()["examples"] as? Int
        #expect(eval.status == 0 && examples == 200, "\(eval.err)")
        // An unknown label is named, with its line and the model's labels.
        let unknown = try fb(["train", "--home", home, "--data", dir.file("unknown.csv"), "--force"])
        #expect(
            unknown.status != 0
                && unknown.err.contains(
                    "line 19, column \"diagnosis\": \"unsure\" is not one of the model's labels (benign, malignant)"),
            "\(unknown.err)")
    }
}

extension TabularSchemaTests {
    @Test(
        "blank cells: refused by default, naming line and column; imputed with the pinned means under missing = mean, and counted"
    )
    func missingValues() throws {
        let keyring = try TestKeyring()
        let collectorKey = try keyring.generate("collector")
        let siteKey = try keyring.generate("site-a")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        func fb(_ args: [String]) throws -> ProcessResult { try Subprocess.fedbatch(args, environment: env) }
        let dir = keyring.dir
        let made = try Subprocess.run(
            TestPaths.python,
            [
                "-c",
                """
                import csv, json, numpy as np
                rng = np.random.default_rng(9)
                n = 120
                x = rng.normal(0, 1, (n, 3))
                y = (x[:, 0] > 0).astype(int)
                with open("\(dir.path)/blanks.csv", "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(["f0", "f1", "f2", "label"])
                    for i in range(n):
                        cells = ["" if (i % 10 == 3 and j == 1) or (i == 50 and j == 2) else repr(float(x[i, j])) for j in range(3)]
                        w.writerow(cells + [str(y[i])])
                json.dump({"mean": {"f0": 0.0, "f1": 0.5, "f2": -0.5}, "std": {"f0": 1.0, "f1": 1.0, "f2": 1.0}},
                          open("\(dir.path)/stats.json", "w"))
                """,
            ])
        #expect(made.status == 0, "\(made.err)")
        let noStats = try fb([
            "init", "collector", "--home", dir.file("c0"), "--model-id", "tab", "--arch", "mlp:3-4-2", "--key",
            collectorKey, "--schema-from", dir.file("blanks.csv"), "--missing", "mean",
        ])
        // Allowed before the means are pinned (fedbatch stats --pin pins
        // them); until then a blank cell is refused, saying so.
        #expect(noStats.status == 0, "\(noStats.err)")
        try Self.join(site: "site-a", key: siteKey, home: dir.file("s0"), collector: dir.file("c0"), keyring: keyring)
        let unpinned = try fb(["train", "--home", dir.file("s0"), "--data", dir.file("blanks.csv")])
        #expect(
            unpinned.status != 0 && unpinned.err.contains("line 5, column \"f1\"")
                && unpinned.err.contains("none are pinned yet"), "\(unpinned.err)")

        for (name, rule) in [("refuse", nil), ("impute", "mean")] {
            let col = dir.file("col-\(name)")
            try fb(
                [
                    "init", "collector", "--home", col, "--model-id", "tab", "--arch", "mlp:3-4-2", "--key",
                    collectorKey, "--schema-from", dir.file("blanks.csv"), "--normalize", dir.file("stats.json"), "-q",
                ] + (rule.map { ["--missing", $0] } ?? [])
            ).checked()
            let home = dir.file("site-\(name)")
            try Self.join(site: "site-a", key: siteKey, home: home, collector: col, keyring: keyring)
            let r = try fb(["train", "--home", home, "--data", dir.file("blanks.csv"), "--json"])
            if rule == nil {
                // Row 3 of the data is line 5 of the file.
                #expect(
                    r.status != 0 && r.err.contains("line 5, column") && r.err.contains("f1")
                        && r.err.contains("the cell is blank"), "\(r.err)")
            } else {
                #expect(r.status == 0, "\(r.err)")
                let metrics = (try r.summary()["bundle"] as? [String: Any])?["metrics"] as? [String: Any]
                #expect(metrics?["imputed_cells"] as? Double == 13, "\(String(describing: metrics))")
                let eval = try fb(["eval", "--home", home, "latest", "--data", dir.file("blanks.csv"), "--json"])
                let imputed = try eval.summary()["imputed"] as? Int
                #expect(eval.status == 0 && imputed == 13, "\(eval.out)\(eval.err)")
            }
        }
    }
}

extension TabularSchemaTests {
    @Test(
        "--categorical pins a column's categories and counts them in the model's input; an unseen one is an error, or zeros with ignore"
    )
    func categorical() throws {
        let keyring = try TestKeyring()
        let collectorKey = try keyring.generate("collector")
        let siteKey = try keyring.generate("site-a")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        func fb(_ args: [String]) throws -> ProcessResult { try Subprocess.fedbatch(args, environment: env) }
        let dir = keyring.dir
        var rows = ["f0,ward,f1,label"]
        for i in 0..<90 { rows.append("\(Double(i % 13) / 13),\(["A", "B", "C"][i % 3]),\(Double(i % 5)),\(i % 2)") }
        _ = try dir.write("train.csv", Data((rows.joined(separator: "\n") + "\n").utf8))
        _ = try dir.write("unseen.csv", Data("f0,ward,f1,label\n0.5,D,1,0\n0.1,A,2,1\n".utf8))
        let narrow = try fb([
            "init", "collector", "--home", dir.file("c0"), "--model-id", "tab", "--arch", "mlp:3-4-2", "--key",
            collectorKey, "--schema-from", dir.file("train.csv"), "--categorical", "ward",
        ])
        #expect(
            narrow.status != 0 && narrow.err.contains("5 inputs once its categories are one-hot encoded"),
            "\(narrow.err)")
        for rule in ["error", "ignore"] {
            let col = dir.file("col-\(rule)"), home = dir.file("site-\(rule)")
            let made = try fb([
                "init", "collector", "--home", col, "--model-id", "tab", "--arch", "mlp:5-4-2", "--key", collectorKey,
                "--schema-from", dir.file("train.csv"), "--categorical", "ward", "--unknown-category", rule, "--json",
            ])
            #expect(made.status == 0, "\(made.err)")
            #expect(try made.jsonErrorLines().contains { $0["code"] as? String == "init.categories-inferred" })
            try Self.join(site: "site-a", key: siteKey, home: home, collector: col, keyring: keyring)
            try fb(["train", "--home", home, "--data", dir.file("train.csv"), "-q"]).checked()
            let unseen = try fb(["train", "--home", home, "--data", dir.file("unseen.csv"), "--force"])
            if rule == "error" {
                #expect(
                    unseen.status != 0 && unseen.err.contains("\"D\" is not one of its categories (A, B, C)"),
                    "\(unseen.err)")
            } else {
                #expect(unseen.status == 0, "\(unseen.err)")
            }
        }
    }
}

extension TabularSchemaTests {
    /// Pins `key` at the collector `col` as `site`, creates the site's home
    /// at `home` for the model `tab`, and hands it generation 0.
    static func join(site: String, key: String, home: String, collector col: String, keyring: TestKeyring) throws {
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = keyring.home
        func fb(_ args: [String]) throws -> ProcessResult { try Subprocess.fedbatch(args, environment: env) }
        try fb(["keys", "add", "--home", col, "--site", site, try keyring.exportPublic(key, to: "\(site).asc"), "-q"])
            .checked()
        try fb([
            "init", "site", "--home", home, "--site-id", site, "--key", key, "--collector-key",
            col + "/keys/collector.asc", "--model-id", "tab", "-q",
        ]).checked()
        try FileManager.default.copyItem(
            atPath: col + "/generations/g000000.fbg", toPath: home + "/generations/g000000.fbg")
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

@Suite("fedbatch inspect")
struct InspectCommandTests {
    @Test("prints the manifest for humans and as JSON")
    func prints() throws {
        let dir = TempDir()
        let path = try dir.write("demo-g000000-site-1-1.fbu", try Samples.unsignedContainer())
        let human = try Subprocess.fedbatch(["inspect", path])
        #expect(human.status == 0, "\(human.err)")
        #expect(human.out.contains("site-1 seq 1"))
        #expect(human.out.contains("0.weight  F32 [3, 4]"))
        #expect(human.out.contains("none: the file is unsigned"))

        let json = try Subprocess.fedbatch(["inspect", "--json", path])
        #expect(json.status == 0)
        // Global options work before the subcommand too.
        let before = try Subprocess.fedbatch(["--json", "inspect", path])
        #expect(before.status == 0)
        #expect(before.stdout == json.stdout)
        let obj = try json.summary()
        let manifest = try #require(obj["manifest"] as? [String: Any])
        #expect(manifest["kind"] as? String == "update")
        #expect(manifest["num_examples"] as? Int == 100)
        #expect(
            obj["digest"] as? String
                == (try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: path)))).digest.hex)
        #expect((obj["tensors"] as? [[String: Any]])?.count == 4)
    }

    @Test("a generation whose included counts add past Int64.max is shown, not a crash")
    func hugeCounts() throws {
        let dir = TempDir()
        let big = ["ab", "cd"].map {
            Manifest.IncludedBundle(
                digest: String(repeating: $0, count: 32), site: "site-1", signer: String(repeating: "A", count: 40),
                seq: 1, numExamples: 5_000_000_000_000_000_000, weight: 1)
        }
        let m = Manifest(
            kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
            generation: 1,
            parent: .init(number: 0, digest: String(repeating: "cd", count: 32)), included: big, rejected: [])
        let path = try dir.write("g.fbg", try Samples.unsignedContainer(manifest: m))
        let r = try Subprocess.fedbatch(["inspect", path])
        #expect(r.status == 0 && r.out.contains("2 bundles, 9223372036854775807 examples"), "\(r.out)\(r.err)")
    }

    @Test("standard zstd and tar list a container fedbatch wrote, manifest first")
    func standardTools() throws {
        let dir = TempDir()
        let path = try dir.write(
            "b.fbu", try Samples.unsignedContainer(extra: [("metrics/train.json", Data("{}".utf8))]))
        let listed = try Subprocess.shell("zstd -dc '\(path)' | tar -tv")
        #expect(listed.status == 0, "\(listed.err)")
        let lines = listed.out.split(separator: "\n")
        #expect(
            lines.map { $0.split(separator: " ").last.map(String.init) ?? "" } == [
                "manifest.json", "tensors.safetensors", "metrics/train.json",
            ])
        #expect(lines.allSatisfy { $0.hasPrefix("-rw-r--r-- 0/0") && $0.contains("1970-01-01 00:00") })
        // `zstd -t` also accepts it: the signature slot is a skippable frame.
        #expect(try Subprocess.run("/usr/bin/zstd", ["-qt", path]).status == 0)
        // And what tar extracts is byte-identical to what the manifest lists.
        let extracted = try Subprocess.shell(
            "mkdir '\(dir.file("x"))' && zstd -dc '\(path)' | tar -x -C '\(dir.file("x"))' && sha256sum '\(dir.file("x"))/tensors.safetensors'"
        )
        let c = try ContainerReader.read(
            payload: try ContainerFile.split(try Data(contentsOf: URL(fileURLWithPath: path))).payload)
        #expect(extracted.out.hasPrefix(c.manifest.members[0].sha256))
    }

    @Test("examples/standard-tools.sh reads a container with standard tools only")
    func standardToolsExample() throws {
        let dir = TempDir()
        let bytes = try Samples.unsignedContainer()
        let path = try dir.write("b.fbu", bytes)
        let r = try Subprocess.run("/bin/sh", ["\(TestPaths.packageRoot)/examples/standard-tools.sh", path])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains(try ContainerFile.split(bytes).digest.hex))
        #expect(r.out.contains("\"kind\":\"update\""))
        #expect(r.out.contains("signature: none"))
        #expect(r.out.contains("matches the statement"))
    }

    @Test("a malformed file exits 3 with the reason")
    func malformed() throws {
        let dir = TempDir()
        var bytes = try Samples.unsignedContainer()
        bytes.append(Data("junk".utf8))
        let path = try dir.write("bad.fbu", bytes)
        let r = try Subprocess.fedbatch(["inspect", path])
        #expect(r.status == 3)
        #expect(r.err.contains("does not end with a fedbatch signature slot"))
        let missing = try Subprocess.fedbatch(["inspect", dir.file("nope.fbu")])
        #expect(missing.status == 1)
        #expect(missing.err.contains("nope.fbu: cannot open"))
    }

    @Test("usage errors exit 2 and --help shows the exit-status table")
    func usage() throws {
        let r = try Subprocess.fedbatch(["inspect"])
        #expect(r.status == 2)
        #expect(r.err.contains("Missing expected argument"))
        #expect(try Subprocess.fedbatch(["frobnicate"]).status == 2)
        let help = try Subprocess.fedbatch(["--help"])
        #expect(help.status == 0)
        #expect(help.out.contains("EXIT STATUS"))
        #expect(help.out.contains("4  another fedbatch process holds the home's lock"))
    }
}

@Suite("Documentation")
struct DocumentationTests {
    @Test("every subcommand in --help has a man page, and fedbatch(1) carries the exit table")
    func manPages() throws {
        let help = try Subprocess.fedbatch(["--help"]).out
        let section = try #require(help.components(separatedBy: "SUBCOMMANDS:").last)
        let commands = section.split(separator: "\n").compactMap { line -> String? in
            let t = line.trimmingCharacters(in: .whitespaces)
            guard line.hasPrefix("  "), !line.hasPrefix("   "), let word = t.split(separator: " ").first else {
                return nil
            }
            return String(word)
        }
        #expect(!commands.isEmpty)
        for c in commands where c != "See" {
            #expect(
                FileManager.default.fileExists(atPath: "\(TestPaths.packageRoot)/man/fedbatch-\(c).1"),
                "no man page for \(c)")
        }
        let page = try String(contentsOfFile: "\(TestPaths.packageRoot)/man/fedbatch.1", encoding: .utf8)
        for code in 0...5 { #expect(page.contains(".B \(code)\n"), "exit code \(code) missing from fedbatch.1") }
        #expect(page.contains("holds the home's lock"))
    }
}

import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

@Suite("Container")
struct ContainerTests {
    @Test("a written container reads back with the same manifest and tensors")
    func roundTrip() throws {
        let weights = try Samples.weights()
        let file = try Samples.unsignedContainer(tensors: weights, extra: [("metrics/train.json", Data("{}".utf8))])
        let split = try ContainerFile.split(file)
        #expect(split.signature.isEmpty)
        let c = try ContainerReader.read(payload: split.payload)
        #expect(c.manifest.kind == .update)
        #expect(c.manifest.site == .init(id: "site-1", seq: 1))
        #expect(c.manifest.members.map(\.name) == ["tensors.safetensors", "metrics/train.json"])
        let t = try c.tensors()
        #expect(t.names == weights.map(\.name))
        for (name, tensor) in weights { #expect(t.tensor(name) == tensor) }
        #expect(c.members["metrics/train.json"] == Data("{}".utf8))
    }

    @Test("the writer is deterministic")
    func deterministic() throws {
        let a = try Samples.unsignedContainer()
        let b = try Samples.unsignedContainer()
        #expect(a == b)
        let c = try Samples.unsignedContainer(manifest: Samples.updateManifest(seq: 2))
        #expect(a != c)
    }

    @Test("the slot round-trips statement and signature and is located from the end")
    func signatureSlot() throws {
        let unsigned = try ContainerFile.split(try Samples.unsignedContainer())
        let payload = unsigned.payload
        let sig = Data((0..<300).map { UInt8($0 & 0xFF) })
        let sealed = ContainerFile.seal(payload: payload, statement: unsigned.statement, signature: sig)
        let split = try ContainerFile.split(sealed)
        #expect(split.payload == payload)
        #expect(split.statement == unsigned.statement)
        #expect(split.signature == sig)
        #expect(split.digest == Digest.of(payload))
        let statement = try Statement.parse(split.statement)
        #expect(statement.payloadDigest == Digest.of(payload) && statement.payloadLength == Int64(payload.count))
        #expect(statement.site == .init(id: "site-1", seq: 1) && statement.model == "demo")
    }

    @Test(
        "a truncated file, appended junk or a broken slot is refused before decompression",
        arguments: ["truncated", "junk", "slot-magic", "slot-size", "oversized", "tiny"])
    func brokenSlot(kind: String) throws {
        let good = try Samples.unsignedContainer()
        var bad = good
        let expected: String
        // The slot: frame header (8), statement, signature (none here), trailer (16).
        let statementLength = try ContainerFile.split(good).statement.count
        switch kind {
        case "truncated": bad = good.prefix(good.count - 5); expected = "signature.missing"
        case "junk": bad.append(Data("junk".utf8)); expected = "signature.missing"
        case "slot-magic":
            let at = good.count - 16 - statementLength - 8
            bad[at] ^= 0x01; expected = "signature.frame"
        case "slot-size":
            let at = good.count - 16 - statementLength - 4
            bad[at] ^= 0x01; expected = "signature.frame"
        case "oversized":
            let at = good.count - 16 + 6
            bad[at] = 0x7F; expected = "signature.too-large"
        default: bad = Data("fbsig002".utf8); expected = "signature.missing"
        }
        #expect(throws: ContainerError.self) { try ContainerFile.split(bad) }
        do { _ = try ContainerFile.split(bad) } catch let e as ContainerError { #expect(e.code == expected, "\(e)") }
    }

    @Test("every hostile archive built with Python tarfile and zstd is refused with its own reason")
    func hostileArchives() throws {
        let dir = TempDir()
        let made = try Subprocess.python("evil_containers.py", [dir.path])
        try #require(made.status == 0, "generator failed: \(made.err)")
        let expected: [String: String] = [
            "dotdot": "tar.unsafe-path", "absolute": "tar.unsafe-path", "symlink": "tar.symlink",
            "hardlink": "tar.hardlink", "directory": "tar.unsafe-path",  // tarfile names it "tensors.safetensors/"
            "fifo": "tar.not-regular",
            "duplicate": "tar.duplicate", "extra": "member.undeclared", "missing": "member.missing",
            "hash": "member.hash", "size": "member.size", "manifest-not-first": "manifest.not-first",
            "manifest-json": "manifest.invalid", "trailing": "tar.trailing-data",
            "huge-size": "tar.member-too-large", "many-entries": "tar.too-many-entries",
        ]
        let valid = try Data(contentsOf: URL(fileURLWithPath: dir.file("valid.zst")))
        let c = try ContainerReader.read(payload: valid)
        #expect(c.manifest.site?.id == "site-1", "the control case must pass")
        for (name, code) in expected {
            let payload = try Data(contentsOf: URL(fileURLWithPath: dir.file("\(name).zst")))
            do {
                _ = try ContainerReader.read(payload: payload)
                Issue.record("\(name): accepted")
            } catch let e as ContainerError {
                #expect(e.code == code, "\(name): \(e)")
            }
        }
    }

    @Test("a frame that needs a 2 GiB window is refused")
    func hugeWindow() throws {
        let frame = ZstdFrames.frame(prefix: Data(), zeroBytes: 1024, windowLog: 31)
        #expect(throws: ContainerError.compression(.windowTooLarge(limitLog: 27))) {
            try ContainerReader.read(payload: frame)
        }
    }

    @Test("a truncated zstd frame is refused")
    func truncatedFrame() throws {
        let payload = try ContainerFile.split(try Samples.unsignedContainer()).payload
        for cut in [payload.count / 2, payload.count - 1] {
            do {
                _ = try ContainerReader.read(payload: payload.prefix(cut))
                Issue.record("truncated at \(cut): accepted")
            } catch let e as ContainerError {
                #expect(["zstd.truncated", "zstd.corrupt"].contains(e.code), "\(e)")
            }
        }
    }

    @Test("output beyond the decompressed-size cap stops the reader")
    func outputCap() throws {
        var limits = ContainerLimits()
        limits.maxDecompressedBytes = 1 << 20
        limits.maxTrailingZeroBytes = 1 << 30
        // A valid archive followed by 64 MiB of zeros: only the cap stops it.
        let dir = TempDir()
        let path = try dir.write("b.fbu", try Samples.unsignedContainer())
        let tar = try Subprocess.shell("zstd -dc '\(path)'").stdout
        let payload = ZstdFrames.frame(prefix: tar, zeroBytes: 64 << 20)
        #expect(throws: ContainerError.compression(.outputTooLarge(cap: 1 << 20))) {
            try ContainerReader.read(payload: payload, limits: limits)
        }
    }

    @Test("data after the zstd frame, or a payload that is not zstd, is refused")
    func notOneFrame() throws {
        let payload = try ContainerFile.split(try Samples.unsignedContainer()).payload
        #expect(throws: ContainerError.compression(.trailingData(bytes: 3))) {
            try ContainerReader.read(payload: payload + Data([1, 2, 3]))
        }
        #expect(throws: ContainerError.compression(.notZstd)) {
            try ContainerReader.read(payload: Data("plain text".utf8))
        }
    }

    /// The frame header has bits a decoder ignores (zstd's "unused" bit, a
    /// larger window), so only the signature catches every flip; past the
    /// header, zstd's checksum and the member hashes catch them all.
    @Test("a flipped bit in the compressed data is caught even without the signature")
    func flippedBit() throws {
        let payload = try ContainerFile.split(try Samples.unsignedContainer()).payload
        var tried = 0, refused = 0
        for offset in stride(from: 6, to: payload.count, by: max(1, payload.count / 40)) {
            for bit in [0x01, 0x10, 0x80] as [UInt8] {
                var bad = payload
                bad[offset] ^= bit
                tried += 1
                do { _ = try ContainerReader.read(payload: bad) } catch is ContainerError { refused += 1 }
            }
        }
        #expect(tried > 40)
        #expect(refused == tried)
    }

    @Test("manifest rules: known format and version, kind-specific fields, member names")
    func manifestRules() throws {
        var m = Samples.updateManifest()
        m.version = 4
        #expect(throws: ContainerError.self) { try Samples.unsignedContainer(manifest: m) }
        m.version = 2
        #expect(throws: Never.self) { try Samples.unsignedContainer(manifest: m) }
        m.version = 1
        #expect(throws: ContainerError.self) { try Samples.unsignedContainer(manifest: m) }
        // A generation is the model itself: fp32 only.
        var g = Manifest(
            kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
            generation: 1,
            parent: .init(number: 0, digest: String(repeating: "ab", count: 32)))
        #expect(throws: Never.self) { try Samples.unsignedContainer(manifest: g) }
        g.codec = "int8"
        #expect(throws: ContainerError.self) { try Samples.unsignedContainer(manifest: g) }
        m = Samples.updateManifest()
        m.site = nil
        #expect(throws: ContainerError.self) { try Samples.unsignedContainer(manifest: m) }
        m = Samples.updateManifest(examples: 0)
        #expect(throws: ContainerError.self) { try Samples.unsignedContainer(manifest: m) }
        #expect(throws: ContainerError.self) { try Samples.unsignedContainer(extra: [("../x", Data())]) }
        #expect(!ContainerPath.isValid("a//b"))
        #expect(!ContainerPath.isValid("a/./b"))
        #expect(ContainerPath.isValid("metrics/train-1.json"))
    }

    static func entry(_ i: Int, signer: String = String(repeating: "A", count: 40)) -> Manifest.IncludedBundle {
        Manifest.IncludedBundle(
            digest: Digest.of(Data("bundle \(i)".utf8)).hex, site: "site-\(i)", signer: signer, seq: 1,
            numExamples: 10, weight: 10, base: 0, staleness: 0, stalenessWeight: 1)
    }

    @Test("a generation's bundles live in included.jsonl, in digest order; the manifest keeps their count")
    func includedMember() throws {
        let bundles = (1...5).map { Self.entry($0) }
        let m = Manifest(
            kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
            generation: 1, parent: .init(number: 0, digest: String(repeating: "ab", count: 32)), included: bundles,
            rejected: [])
        let file = try ContainerFile.split(try Samples.unsignedContainer(manifest: m))
        let c = try ContainerReader.read(payload: file.payload)
        #expect(c.manifest.version == 3 && c.manifest.includedCount == 5)
        #expect(c.manifest.included == bundles.sorted { $0.digest < $1.digest })
        let text = String(decoding: c.manifestBytes, as: UTF8.self)
        #expect(text.contains("\"included_count\":5") && !text.contains("\"included\":"))
        let list = try #require(c.members[ContainerPath.included])
        #expect(String(decoding: list, as: UTF8.self).split(separator: "\n").count == 5 && list.last == 0x0A)

        // Pruned, the manifest and the list stay together and checkable.
        let kept = PrunedManifest.keptBytes(manifestBytes: c.manifestBytes, members: c.members)
        #expect(PrunedManifest.manifestBytes(of: kept) == c.manifestBytes)
        #expect(try PrunedManifest.decode(kept).included == c.manifest.included)
        var tampered = kept
        tampered[tampered.count - 3] ^= 1
        #expect(throws: ContainerError.self) { try PrunedManifest.decode(tampered) }
        #expect(throws: ContainerError.self) { try PrunedManifest.decode(c.manifestBytes) }
    }

    @Test("included.jsonl is read strictly: the declared count, newline-ended lines, increasing digests, capped lines")
    func includedListRules() throws {
        let sorted = (1...3).map { Self.entry($0) }.sorted { $0.digest < $1.digest }
        let data = try IncludedList.encode(sorted)
        #expect(try IncludedList.decode(data, count: 3) == sorted)
        #expect(try IncludedList.decode(Data(), count: 0).isEmpty)
        for (bad, count) in [
            (data, 2), (data, 4), (data.dropLast(), 3), (try IncludedList.encode(sorted.reversed()), 3),
            (try IncludedList.encode([sorted[0], sorted[0]]), 2), (data + Data("\n".utf8), 3),
            (Data("{}\n".utf8), 1), (Data("not json\n".utf8), 1),
        ] {
            #expect(throws: ContainerError.self) { try IncludedList.decode(Data(bad), count: count) }
        }
        var limits = ContainerLimits()
        limits.maxIncludedLineBytes = 200
        let long = try IncludedList.encode([Self.entry(1, signer: String(repeating: "B", count: 300))])
        #expect(throws: ContainerError.self) { try IncludedList.decode(long, count: 1, limits: limits) }
        limits.maxIncludedBundles = 2
        #expect(throws: ContainerError.self) { try IncludedList.decode(data, count: 3, limits: limits) }
        // A version-2 manifest lists its bundles inline and still reads.
        var v2 = Manifest(
            kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
            generation: 1, parent: .init(number: 0, digest: String(repeating: "ab", count: 32)), included: sorted,
            rejected: [])
        let laid = try ContainerWriter.layout(
            manifest: v2, members: [(ContainerPath.tensors, SafetensorsWriter.encode(try Samples.weights()))],
            inlineIncluded: true)
        #expect(laid.manifest.version == 2 && laid.members.count == 1)
        #expect(String(decoding: try laid.manifest.encoded(), as: UTF8.self).contains("\"included\":[{"))
        v2.version = 2
        v2.includedCount = 3
        #expect(throws: ContainerError.self) { try v2.validate() }
    }
}

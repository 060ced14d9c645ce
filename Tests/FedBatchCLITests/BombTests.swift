import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Decompression bombs that expand to 10 GB, run through the real binary,
/// whose peak RSS GNU time measures.
@Suite("Decompression bombs")
struct BombTests {
    static let tenGB: Int64 = 10_000_000_000
    static let rssLimitKiB = 256 * 1024

    private func inspect(_ payload: Data, in dir: TempDir) throws -> ProcessResult {
        let path = try dir.write("bomb.fbu", Samples.seal(payload, signature: Data()))
        return try Subprocess.run(TestPaths.fedbatch, ["inspect", path], measuringRSS: true)
    }

    @Test("10 GB of zeros after a valid archive stops at the padding cap")
    func zerosAfterArchive() throws {
        let dir = TempDir()
        let good = try dir.write("good.fbu", try Samples.unsignedContainer())
        let tar = try Subprocess.shell("zstd -dc '\(good)'").stdout
        // The hand-built frame is real zstd: the zstd CLI decodes a small one.
        try ZstdFrames.frame(prefix: tar, zeroBytes: 5_000_000).write(to: URL(fileURLWithPath: dir.file("small.zst")))
        #expect(
            try Subprocess.shell("zstd -dc '\(dir.file("small.zst"))' | wc -c").out.trimmingCharacters(
                in: .whitespacesAndNewlines) == String(tar.count + 5_000_000))

        let r = try inspect(ZstdFrames.frame(prefix: tar, zeroBytes: Self.tenGB), in: dir)
        #expect(r.status == 3)
        #expect(r.err.contains("follow the end of the tar archive"), "\(r.err)")
        #expect(r.maxRSSKiB > 0 && r.maxRSSKiB < Self.rssLimitKiB, "peak RSS \(r.maxRSSKiB) KiB")
    }

    @Test("a member that declares 10 GB is refused at its header")
    func hugeMember() throws {
        let dir = TempDir()
        let made = try Subprocess.python(
            "evil_containers.py", ["bomb-header", dir.file("prefix.tar"), String(Self.tenGB)])
        try #require(made.status == 0, "\(made.err)")
        let prefix = try Data(contentsOf: URL(fileURLWithPath: dir.file("prefix.tar")))
        let r = try inspect(ZstdFrames.frame(prefix: prefix, zeroBytes: Self.tenGB), in: dir)
        #expect(r.status == 3)
        #expect(r.err.contains("declares 10000000000 bytes, above the cap"), "\(r.err)")
        #expect(r.maxRSSKiB > 0 && r.maxRSSKiB < Self.rssLimitKiB, "peak RSS \(r.maxRSSKiB) KiB")
    }

    @Test("10 GB of bare zeros is not an archive")
    func bareZeros() throws {
        let dir = TempDir()
        let r = try inspect(ZstdFrames.frame(prefix: Data(), zeroBytes: Self.tenGB), in: dir)
        #expect(r.status == 3)
        #expect(r.err.contains("tar stream holds no members"), "\(r.err)")
        #expect(r.maxRSSKiB > 0 && r.maxRSSKiB < Self.rssLimitKiB, "peak RSS \(r.maxRSSKiB) KiB")
    }
}

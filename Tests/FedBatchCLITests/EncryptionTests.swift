import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Encryption to the collector (push --encrypt, [remote] encrypt), through
/// the real binary and real GnuPG: a round trip over a directory remote, and
/// the files a merge must quarantine without ever writing what it decrypted.
@Suite("encryption to the collector")
struct EncryptionTests {
    /// A federation over a directory remote whose collector key has gained
    /// an encryption subkey, re-pinned on every home as a user would.
    static func setUp() throws -> (Federation, String) {
        let (fed, stick) = try RemoteDirectoryTests.setUp()
        try fed.keyring.gpg(["--passphrase", "", "--quick-add-key", fed.collectorKey, "cv25519", "encr", "0"])
        let file = try fed.keyring.exportPublic(fed.collectorKey, to: "collector-with-subkey.asc")
        for home in [fed.collector, fed.site("site-1"), fed.site("site-2")] {
            try fed.run(["keys", "add", "--collector", "--home", home, file])
        }
        return (fed, stick)
    }

    static func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    @Test("push --encrypt and [remote] encrypt: the remote holds OpenPGP messages to the collector, which merges them")
    func roundTrip() throws {
        let (fed, stick) = try RemoteDirectoryTests.setUp()
        // Without an encryption subkey the push stops, says what to do, and
        // keeps the bundle in the outbox.
        let refused = try fed.fedbatch(["push", "--home", fed.site("site-1"), "--encrypt"])
        #expect(refused.status == 1)
        #expect(refused.err.contains("has no encryption subkey") && refused.err.contains("--quick-add-key"))
        #expect(RemoteDirectoryTests.files(fed.site("site-1") + "/outbox").count == 1)
        #expect(RemoteDirectoryTests.files(stick).isEmpty)

        try fed.keyring.gpg(["--passphrase", "", "--quick-add-key", fed.collectorKey, "cv25519", "encr", "0"])
        let file = try fed.keyring.exportPublic(fed.collectorKey, to: "collector-with-subkey.asc")
        for home in [fed.collector, fed.site("site-1"), fed.site("site-2")] {
            try fed.run(["keys", "add", "--collector", "--home", home, file])
        }
        try fed.run(["push", "--home", fed.site("site-1"), "--encrypt"])
        try Federation.setConfig(home: fed.site("site-2"), table: "remote", "encrypt", "true")
        try fed.run(["push", "--home", fed.site("site-2")])

        var plain: [String: Data] = [:]
        for site in ["site-1", "site-2"] {
            let name = "demo-g0-\(site)-1.fbu"
            #expect(RemoteDirectoryTests.files(stick + "/inbox/\(site)") == [name + ".gpg"])
            plain[site] = try Self.bytes(fed.site(site) + "/sent/" + name)
            let cipher = try Self.bytes(stick + "/inbox/\(site)/\(name).gpg")
            // Not a container, and none of the bundle's signed statement shows.
            #expect(cipher.prefix(4) != Data([0x28, 0xB5, 0x2F, 0xFD]))
            #expect(cipher.range(of: plain[site]!.suffix(96)) == nil)
            let packets = try fed.keyring.gpg(["--list-packets", stick + "/inbox/\(site)/\(name).gpg"]).out
            #expect(packets.contains(":pubkey enc packet:"))
            // Standard gpg with the collector's key gives back the signed bundle.
            let decrypted = try fed.keyring.gpg([
                "--decrypt", "--output", fed.root + "/\(site).out", stick + "/inbox/\(site)/\(name).gpg",
            ])
            let out = try Self.bytes(fed.root + "/\(site).out")
            #expect(decrypted.status == 0 && out == plain[site])
        }

        try fed.run(["pull", "--home", fed.collector])
        #expect(
            RemoteDirectoryTests.files(fed.collector + "/inbox") == [
                "demo-g0-site-1-1.fbu.gpg", "demo-g0-site-2-1.fbu.gpg",
            ])
        // verify goes through the merge's intake: with the collector's key
        // it opens the encrypted inbox files as the merge will.
        let inbox = RemoteDirectoryTests.files(fed.collector + "/inbox").map { fed.collector + "/inbox/" + $0 }
        let verified = try fed.fedbatch(["verify", "--home", fed.collector, "--json"] + inbox)
        #expect(verified.status == 0, "\(verified.out)\(verified.err)")
        let merged = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        #expect((merged["accepted"] as? [[String: Any]])?.count == 2)
        let manifest = try Inspection.inspect(path: fed.collector + "/generations/g000001.fbg").manifest
        #expect(
            Set(manifest.included?.map(\.digest) ?? [])
                == Set(try plain.values.map { try ContainerFile.split($0).digest.hex }))
        // accepted/ keeps the files as they arrived: still encrypted.
        #expect(RemoteDirectoryTests.files(fed.collector + "/accepted").allSatisfy { $0.hasSuffix(".fbu.gpg") })
    }

    @Test(
        "files that do not decrypt, decrypt to too much, or decrypt to what is not a signed bundle are quarantined with a reason; a good one still merges"
    )
    func refusals() throws {
        let (fed, _) = try Self.setUp()
        let inbox = fed.collector + "/inbox/"
        let base = try fed.generation(0)
        let good = try fed.update(site: "site-1", seq: 1, base: base, name: "good.fbu")
        try fed.keyring.gpg([
            "--trust-model", "always", "--compress-level", "0", "--recipient", fed.collectorKey, "--output",
            inbox + "good.fbu.gpg",
            "--encrypt", good,
        ])
        let goodDigest = try ContainerFile.split(try Self.bytes(good)).digest.hex
        try FileManager.default.removeItem(atPath: good)

        // To a key that is not the collector's.
        let stranger = try fed.keyring.generate("stranger")
        try fed.keyring.gpg(["--passphrase", "", "--quick-add-key", stranger, "cv25519", "encr", "0"])
        let other = try fed.update(site: "site-2", seq: 1, base: base, name: "other.fbu")
        try fed.keyring.gpg([
            "--trust-model", "always", "--recipient", stranger, "--output", inbox + "stranger.fbu.gpg", "--encrypt",
            other,
        ])
        // The same bundle to the collector, one byte of ciphertext flipped in
        // the middle (uncompressed, so the plaintext itself is damaged: gpg's
        // integrity check fails, and were it missed, the signature inside).
        try fed.keyring.gpg([
            "--trust-model", "always", "--compress-level", "0", "--recipient", fed.collectorKey, "--output",
            fed.root + "/flip.gpg",
            "--encrypt", other,
        ])
        var flipped = try Self.bytes(fed.root + "/flip.gpg")
        flipped[flipped.count / 2] ^= 0x01
        try flipped.write(to: URL(fileURLWithPath: inbox + "flipped.fbu.gpg"))
        try FileManager.default.removeItem(atPath: other)
        // 64 MiB of zeros, compressed by gpg to a few kilobytes: far more
        // than the model allows a bundle.
        let zeros = fed.root + "/zeros"
        _ = FileManager.default.createFile(atPath: zeros, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: zeros))
        try h.truncate(atOffset: 64 << 20)
        try h.close()
        try fed.keyring.gpg([
            "--trust-model", "always", "--compress-algo", "zlib", "--compress-level", "9", "--recipient",
            fed.collectorKey,
            "--output", inbox + "bomb.fbu.gpg", "--encrypt", zeros,
        ])
        let bombSize = try FileManager.default.attributesOfItem(atPath: inbox + "bomb.fbu.gpg")[.size] as? Int ?? 0
        #expect(bombSize < 1 << 20)
        // Well encrypted, but not a bundle.
        try Data((0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7919) }).write(
            to: URL(fileURLWithPath: fed.root + "/junk"))
        try fed.keyring.gpg([
            "--trust-model", "always", "--recipient", fed.collectorKey, "--output", inbox + "junk.fbu.gpg", "--encrypt",
            fed.root + "/junk",
        ])
        var arrived: [String: Data] = [:]
        for name in RemoteDirectoryTests.files(inbox) { arrived[name] = try Self.bytes(inbox + name) }

        let report = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        let codes = Dictionary(
            uniqueKeysWithValues: ((report["rejected"] as? [[String: Any]]) ?? []).map {
                ($0["name"] as! String, $0["code"] as! String)
            })
        #expect(codes["stranger.fbu.gpg"] == "encryption.undecryptable")
        #expect(codes["flipped.fbu.gpg"] == "encryption.undecryptable")
        #expect(codes["bomb.fbu.gpg"] == "encryption.too-large")
        // Decrypted to something with no signed statement at its end.
        #expect(codes["junk.fbu.gpg"] == "signature.missing", "\(codes)")
        #expect((report["accepted"] as? [[String: Any]])?.map { $0["digest"] as! String } == [goodDigest])
        // What was refused sits in quarantine as it arrived, with its reason;
        // nothing decrypted was written anywhere in the home.
        for name in ["stranger.fbu.gpg", "flipped.fbu.gpg", "bomb.fbu.gpg", "junk.fbu.gpg"] {
            #expect(try Self.bytes(fed.collector + "/quarantine/" + name) == arrived[name])
            #expect(FileManager.default.fileExists(atPath: fed.collector + "/quarantine/" + name + ".reason.json"))
        }
        let everything = FileManager.default.enumerator(atPath: fed.collector)!.compactMap { $0 as? String }
        #expect(!everything.contains { $0.hasSuffix(".fbu") })
    }

    @Test("an encrypted bundle of a larger model, whose statement is far from the start of its plaintext, merges")
    func largerBundle() throws {
        let fed = try Federation(sites: ["site-1"], arch: "mlp:200-64-10")
        try fed.keyring.gpg(["--passphrase", "", "--quick-add-key", fed.collectorKey, "cv25519", "encr", "0"])
        try fed.run([
            "keys", "add", "--collector", "--home", fed.collector,
            try fed.keyring.exportPublic(fed.collectorKey, to: "collector-with-subkey.asc"),
        ])
        let noisy = try ModelArchitecture(spec: fed.arch).tensorShapes.enumerated().map { i, t in
            (
                t.name,
                Tensor(
                    shape: t.shape,
                    floats: (0..<t.shape.reduce(1, *)).map { Float(sin(Double($0 &* 7919 &+ i))) * 0.01 })
            )
        }
        let plain = try fed.update(site: "site-1", seq: 1, base: try fed.generation(0), tensors: noisy)
        #expect(try Self.bytes(plain).count > 50_000)
        let digest = try ContainerFile.split(try Self.bytes(plain)).digest.hex
        try fed.keyring.gpg([
            "--trust-model", "always", "--recipient", fed.collectorKey, "--output", plain + ".gpg", "--encrypt", plain,
        ])
        try FileManager.default.removeItem(atPath: plain)
        let report = try fed.run(["merge", "--home", fed.collector, "--json"]).summary()
        #expect((report["accepted"] as? [[String: Any]])?.map { $0["digest"] as! String } == [digest])
    }
}

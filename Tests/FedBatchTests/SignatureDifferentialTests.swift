import FedBatch
import FedBatchFormats
import FedBatchNative
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// fedbatch's in-process signature verification against gpg's, case by
/// case: real keys of every type the key policy accepts (and some it does
/// not), real signatures made by the gpg CLI, in good standing and not
/// (expired, revoked, future, older than their key, a subkey that lost its
/// signing flag), and each signature altered the ways an attacker or a
/// broken disk would alter it. Both verifiers must reach the same verdict,
/// for the same reason, on every one.
///
/// `make test` runs a subset (about 900 signatures); `make bench` runs it
/// with FEDBATCH_SIGNATURE_CASES=full, over more than 10,000.
@Suite("signature differential", .serialized)
struct SignatureDifferentialTests {
    /// A key that makes signatures, and the fingerprint to sign with (a
    /// subkey's ends in "!", so gpg uses that subkey).
    struct SigningKey {
        let name: String
        let primary: String
        let signWith: String
        let pinned: Bool
        /// When gpg should pretend to sign (the key was made then).
        var faked: String?
    }

    static var full: Bool { ProcessInfo.processInfo.environment["FEDBATCH_SIGNATURE_CASES"] == "full" }

    let keyring: TestKeyring
    let keysDirectory: String

    init() throws {
        keyring = try TestKeyring()
        keysDirectory = keyring.dir.path + "/keys"
        try FileManager.default.createDirectory(
            atPath: keysDirectory + "/sites", withIntermediateDirectories: true)
    }

    func fingerprints(of name: String) throws -> [String] {
        try keyring.gpg(["--with-colons", "--list-keys", "<\(name)@fedbatch.test>"]).out.split(separator: "\n")
            .filter { $0.hasPrefix("fpr:") }.map {
                String($0.split(separator: ":", omittingEmptySubsequences: false)[9])
            }
    }

    /// `--quick-gen-key`, with an optional faked clock.
    @discardableResult
    func generate(
        _ name: String, _ algo: String, _ usage: String, expire: String = "0", faked: String? = nil
    )
        throws -> String
    {
        var args = ["--passphrase", ""]
        if let faked { args += ["--faked-system-time", faked + "!", "--ignore-time-conflict"] }
        try keyring.gpg(args + ["--quick-gen-key", "\(name) <\(name)@fedbatch.test>", algo, usage, expire])
        return try fingerprints(of: name)[0]
    }

    func addSubkey(
        _ primary: String, _ name: String, _ algo: String, expire: String = "0", faked: String? = nil
    )
        throws -> String
    {
        var args = ["--passphrase", ""]
        if let faked { args += ["--faked-system-time", faked + "!", "--ignore-time-conflict"] }
        // gpg makes an encryption key of a bare curve name for a subkey.
        let spec = algo.hasPrefix("nist") || algo.hasPrefix("brainpool") ? algo + "/ecdsa" : algo
        try keyring.gpg(args + ["--quick-add-key", primary, spec, "sign", expire])
        return try fingerprints(of: name).last!
    }

    /// Drives `gpg --edit-key` on subkey 1 with `commands`.
    func editSubkey(_ primary: String, _ commands: [String], expert: Bool = false) throws {
        let script = try keyring.dir.write(
            "edit-\(UUID().uuidString)", Data(((["key 1"] + commands + ["save"]).joined(separator: "\n") + "\n").utf8))
        try keyring.gpg(
            (expert ? ["--expert"] : []) + ["--passphrase", "", "--command-fd", "0", "--edit-key", primary],
            stdin: script)
    }

    /// The keys: one per type, subkeys, and keys in bad standing.
    func makeKeys() throws -> [SigningKey] {
        var keys: [SigningKey] = []
        for algo in [
            "ed25519", "rsa2048", "rsa3072", "nistp256", "nistp384", "nistp521", "brainpoolP256r1", "brainpoolP384r1",
            "brainpoolP512r1",
        ] {
            let f = try generate("k-\(algo)", algo, "sign")
            keys.append(SigningKey(name: "k-\(algo)", primary: f, signWith: f, pinned: true))
        }
        // Signing subkeys under a certify-only primary.
        for algo in ["nistp256", "rsa2048", "ed25519"] {
            let name = "sub-\(algo)"
            let f = try generate(name, "ed25519", "cert")
            let s = try addSubkey(f, name, algo)
            keys.append(SigningKey(name: name, primary: f, signWith: s + "!", pinned: true))
        }
        // Keys the policy refuses, and one nobody pinned.
        for (name, algo) in [("weak-rsa1024", "rsa1024"), ("weak-secp256k1", "secp256k1"), ("weak-dsa2048", "dsa2048")]
        {
            let f = try generate(name, algo, "sign")
            keys.append(SigningKey(name: name, primary: f, signWith: f, pinned: true))
        }
        let stranger = try generate("stranger", "ed25519", "sign")
        keys.append(SigningKey(name: "stranger", primary: stranger, signWith: stranger, pinned: false))
        // Made in 2020 to expire in 2021; signs as of mid-2020.
        let expired = try generate("expired", "nistp256", "sign", expire: "1y", faked: "20200101T000000")
        keys.append(
            SigningKey(name: "expired", primary: expired, signWith: expired, pinned: true, faked: "20200601T000000"))
        let expiredSub = try generate("expired-sub", "ed25519", "cert", faked: "20200101T000000")
        let es = try addSubkey(expiredSub, "expired-sub", "ed25519", expire: "1y", faked: "20200101T000000")
        keys.append(
            SigningKey(
                name: "expired-sub", primary: expiredSub, signWith: es + "!", pinned: true, faked: "20200601T000000"))
        // Revoked after signing, and subkeys revoked or stripped of their
        // signing flag after signing (`spoil`).
        for name in ["revoked", "revoked-sub", "usage-sub"] {
            let f = try generate(name, "ed25519", "sign")
            let s = try addSubkey(f, name, name == "revoked" ? "ed25519" : "nistp256")
            keys.append(SigningKey(name: name, primary: f, signWith: name == "revoked" ? f : s + "!", pinned: true))
        }
        return keys
    }

    /// What happens to keys after they signed, before they are pinned.
    func spoil(_ keys: [SigningKey]) throws {
        for k in keys {
            switch k.name {
            case "revoked": try keyring.revoke(k.primary)
            case "revoked-sub": try editSubkey(k.primary, ["revkey", "y", "0", "", "y"])
            case "usage-sub": try editSubkey(k.primary, ["change-usage", "S", "A", "Q"], expert: true)
            default: break
            }
        }
    }

    func pin(_ keys: [SigningKey]) throws {
        for (i, k) in keys.enumerated() where k.pinned {
            let data = try keyring.gpg(["--armor", "--export", k.primary]).stdout
            let path = i == 0 ? keysDirectory + "/collector.asc" : keysDirectory + "/sites/\(k.name).asc"
            try data.write(to: URL(fileURLWithPath: path))
        }
    }

    /// One signature as made, over one statement.
    struct Base {
        let key: SigningKey
        let statement: Data
        let signature: Data
        let label: String
    }

    func sign(_ keys: [SigningKey]) throws -> [Base] {
        // The subset signs with SHA-512, which every key type takes, and adds
        // the other hashes on three keys below.
        let hashes = Self.full ? ["SHA256", "SHA384", "SHA512", "SHA1", "SHA224"] : ["SHA512"]
        // (label, gpg options): now, dated ahead, dated before the key,
        // and expiring a second after it is made.
        let times: [(String, [String])] =
            Self.full
            ? [
                ("now", []), ("future", ["--faked-system-time", "20350101T000000!", "--ignore-time-conflict"]),
                ("before-key", ["--faked-system-time", "20100101T000000!", "--ignore-time-conflict"]),
                ("expiring", ["--default-sig-expire", "seconds=1"]),
            ] : [("now", [])]
        let perCombination = Self.full ? 3 : 1
        var bases: [Base] = []
        var n = 0
        func one(_ k: SigningKey, _ hash: String, _ time: (String, [String])) throws {
            n += 1
            let statement = Data("statement \(n) for \(k.name): \(UUID().uuidString)\n".utf8)
            var extra = ["--digest-algo", hash] + time.1
            if let faked = k.faked, time.0 == "now" {
                extra += ["--faked-system-time", faked + "!", "--ignore-time-conflict"]
            }
            do {
                let sig = try keyring.detachSign(statement, as: [k.signWith], extra: extra)
                bases.append(Base(key: k, statement: statement, signature: sig, label: "\(k.name) \(hash) \(time.0)"))
            } catch {
                // gpg will not sign some combinations (a hash too short for
                // the curve): there is nothing to compare.
            }
        }
        for k in keys {
            for hash in hashes {
                for time in times {
                    for _ in 0..<perCombination { try one(k, hash, time) }
                }
            }
        }
        if !Self.full {
            // The subset still covers each hash and each time once.
            let ed = keys.first { $0.name == "k-ed25519" }!, ec = keys.first { $0.name == "k-nistp384" }!
            let rsa = keys.first { $0.name == "k-rsa2048" }!
            for hash in ["SHA256", "SHA384", "SHA1", "SHA224"] {
                try one(ed, hash, ("now", []))
                try one(ec, hash, ("now", []))
                try one(rsa, hash, ("now", []))
            }
            for time in [
                ("future", ["--faked-system-time", "20350101T000000!", "--ignore-time-conflict"]),
                ("before-key", ["--faked-system-time", "20100101T000000!", "--ignore-time-conflict"]),
                ("expiring", ["--default-sig-expire", "seconds=1"]),
            ] {
                try one(ed, "SHA256", time)
                try one(keys.first { $0.name == "k-rsa2048" }!, "SHA512", time)
            }
        }
        return bases
    }

    /// A signature packet's parts, for altering it: header length, where
    /// the hashed area and the value start.
    struct Layout {
        let header: Int
        let hashedStart: Int
        let hashedEnd: Int
        let unhashedEnd: Int
        init?(_ s: [UInt8]) {
            guard s.count > 8, s[0] & 0x40 == 0 else { return nil }
            header = [2, 3, 5][Int(s[0] & 3)]
            hashedStart = header + 6
            hashedEnd = hashedStart + (Int(s[header + 4]) << 8 | Int(s[header + 5]))
            guard hashedEnd + 2 <= s.count else { return nil }
            unhashedEnd = hashedEnd + 2 + (Int(s[hashedEnd]) << 8 | Int(s[hashedEnd + 1]))
        }
    }

    /// Finds a hashed subpacket of `type`: the offset of its data.
    static func subpacket(_ s: [UInt8], _ l: Layout, type: UInt8) -> Int? {
        var i = l.hashedStart
        while i < l.hashedEnd {
            let len = Int(s[i])  // gpg's subpackets here are short
            guard len < 192 else { return nil }
            if s[i + 1] & 0x7F == type { return i + 2 }
            i += 1 + len
        }
        return nil
    }

    /// The alterations of one signature: (label, statement, signature).
    static func variants(
        _ b: Base, other: [String], rng: inout SeededRandom
    ) -> [(
        String, Data, Data
    )] {
        var out: [(String, Data, Data)] = [("as made", b.statement, b.signature)]
        let s = [UInt8](b.signature)
        guard let l = Layout(s) else { return out }
        func with(_ label: String, _ change: (inout [UInt8]) -> Void) {
            var t = s
            change(&t)
            out.append((label, b.statement, Data(t)))
        }
        var wrong = b.statement
        wrong[wrong.count / 2] ^= 0x20
        out.append(("other data", wrong, b.signature))
        out.append(("data with a byte more", b.statement + Data([0x0A]), b.signature))
        with("last value byte flipped") { $0[$0.count - 1] ^= 0x01 }
        with("first value byte flipped") { $0[l.unhashedEnd + 4] ^= 0x40 }
        with("quick-check changed") { $0[l.unhashedEnd] ^= 0xFF }
        with("hash algorithm changed") { $0[l.header + 3] = $0[l.header + 3] == 8 ? 10 : 8 }
        with("public-key algorithm changed") { $0[l.header + 2] = $0[l.header + 2] == 22 ? 19 : 22 }
        with("signature class changed") { $0[l.header + 1] = 0x01 }
        if let t = subpacket(s, l, type: 2) {
            with("creation time moved by a second") { $0[t + 3] &+= 1 }
            with("creation time marked critical") { $0[t - 1] |= 0x80 }
        }
        if let f = subpacket(s, l, type: 33), let target = other.first(where: { $0 != b.key.signWith }) {
            // Another pinned key named as the issuer, in both areas.
            let fpr = Digest(hex: String(repeating: "0", count: 24) + target.replacingOccurrences(of: "!", with: ""))
            if let fpr {
                let bytes = Array(fpr.bytes.suffix(20))
                with("issuer rewritten to another pinned key") {
                    for i in 0..<20 { $0[f + 1 + i] = bytes[i] }
                    if $0[l.hashedEnd + 2] == 9, $0[l.hashedEnd + 3] == 16 {
                        for i in 0..<8 { $0[l.hashedEnd + 4 + i] = bytes[12 + i] }
                    }
                }
            }
        }
        // Re-encodings: gpg verifies these, fedbatch allows one encoding.
        if l.unhashedEnd > l.hashedEnd + 2 {
            with("unhashed key id dropped") {
                $0.removeSubrange((l.hashedEnd + 2)..<l.unhashedEnd)
                $0[l.hashedEnd] = 0
                $0[l.hashedEnd + 1] = 0
                // The body is shorter: the canonical header for its length.
                let body = Array($0[l.header...])
                $0 =
                    (body.count < 256
                        ? [0x88, UInt8(body.count)] : [0x89, UInt8(body.count >> 8), UInt8(body.count & 0xFF)]) + body
            }
        }
        with("new-format header") {
            let body = Array($0[l.header...])
            $0 =
                body.count < 192
                ? [0xC2, UInt8(body.count)] + body
                : [0xC2, 0xFF, 0, 0, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
        }
        with("truncated by a byte") { $0.removeLast() }
        with("a byte appended") { $0.append(0) }
        for _ in 0..<2 {
            let i = Int.random(in: 0..<s.count, using: &rng), bit = UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
            with("bit \(bit) of byte \(i) flipped") { $0[i] ^= bit }
        }
        return out
    }

    /// A verifier's verdict: accepted (with the signer) or the reason code.
    static func verdict(_ v: Verifier, _ statement: Data, _ signature: Data) -> String {
        do {
            let k = try v.verifySignature(ContainerFile(payload: Data(), statement: statement, signature: signature))
            return "accepted: \(k.fingerprint)"
        } catch {
            let code = reasonCode(of: error)
            // gpg's own errors have no code of their own: say which.
            return code == "signature.gpg-error" ? "\(code) (\(error))" : code
        }
    }

    @Test("the in-process verifier and gpg reach the same verdict, for the same reason, on every signature")
    func differential() throws {
        let keys = try makeKeys()
        let bases = try sign(keys)
        try spoil(keys)
        try pin(keys)
        // Signatures that expire a second after they are made have expired.
        Thread.sleep(forTimeInterval: 1.2)
        let builtin = try Verifier(keysDirectory: keysDirectory)
        let gpg = try Verifier(keysDirectory: keysDirectory, verification: .gpg)
        #expect(builtin.verification == .builtin && gpg.verification == .gpg)
        // Where the random bit flips land: fixed for `make test`, fresh for
        // each bench run (printed, so that a finding can be replayed).
        let seed =
            ProcessInfo.processInfo.environment["FEDBATCH_SIGNATURE_SEED"].flatMap { UInt64($0) }
            ?? (Self.full ? UInt64.random(in: 0...UInt64.max) : 20261207)
        var rng = SeededRandom(seed: seed)
        let pinned = keys.filter(\.pinned).map(\.signWith)
        var total = 0, accepted = 0
        var reasons: [String: Int] = [:]
        var disagreements: [String] = []
        for b in bases {
            for (label, statement, signature) in Self.variants(b, other: pinned, rng: &rng) {
                let ours = Self.verdict(builtin, statement, signature)
                let theirs = Self.verdict(gpg, statement, signature)
                total += 1
                if ours.hasPrefix("accepted") { accepted += 1 }
                reasons[ours.hasPrefix("accepted") ? "accepted" : ours, default: 0] += 1
                if ours != theirs { disagreements.append("\(b.label), \(label): fedbatch \(ours), gpg \(theirs)") }
            }
        }
        print(
            "signature differential (seed \(seed)): \(total) signatures from \(bases.count) made by gpg, \(accepted) accepted; "
                + reasons.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        #expect(
            disagreements.isEmpty,
            "\(disagreements.count) disagreements:\n\(disagreements.prefix(40).joined(separator: "\n"))")
        #expect(total >= (Self.full ? 10000 : 400))
        // The corpus reaches every verdict it is meant to.
        for reason in [
            "accepted", "signature.bad", "signature.unknown-key", "signature.key-expired", "signature.key-revoked",
            "signature.expired", "signature.future", "signature.key-usage", "signature.weak-key",
            "signature.weak-digest", "signature.malformed", "signature.time-conflict",
        ] {
            #expect(reasons[reason, default: 0] > 0, "no case ended as \(reason)")
        }
        // Every key type the policy accepts signed something that verified.
        for k in keys where k.name.hasPrefix("k-") || k.name.hasPrefix("sub-") {
            let fpr = k.primary
            #expect(
                bases.contains { b in
                    b.key.primary == fpr && Self.verdict(builtin, b.statement, b.signature) == "accepted: \(fpr)"
                }, "\(k.name) never verified")
        }
    }
}

/// The two algorithms gpg 2.2 cannot read, native Ed25519 (27) and Ed448
/// (28) of RFC 9580, against keys and signatures built from the RFC by an
/// independent Python script (native_eddsa.py, with `cryptography`).
@Suite("native EdDSA")
struct NativeEdDSATests {
    @Test("native Ed25519 and Ed448 keys and signatures made in Python verify in-process; altered ones do not")
    func nativeEdDSA() throws {
        let dir = TempDir()
        let made = try Subprocess.python("native_eddsa.py", [dir.path])
        #expect(made.status == 0, "\(made.err)")
        for name in ["ed25519", "ed448"] {
            func read(_ suffix: String) throws -> Data {
                try Data(contentsOf: URL(fileURLWithPath: dir.file(name + suffix)))
            }
            var ring = PublicKeyRing()
            ring.add(try read(".key"))
            let fpr = String(decoding: try read(".fpr"), as: UTF8.self)
            // fedbatch computes the same fingerprint from the packet.
            #expect(ring.keys.keys.sorted() == [fpr], "\(name)")
            #expect(ring.keys[fpr]?.key != nil, "\(name): the key loads")
            let statement = try read(".statement")
            #expect(try ring.signer(of: try read(".sig"), over: statement)?.fingerprint == fpr, "\(name)")
            #expect(try ring.signer(of: try read(".bad.sig"), over: statement) == nil, "\(name): altered value")
            #expect(try ring.signer(of: try read(".sig"), over: statement + Data([0x0A])) == nil, "\(name): other data")
            // A value one octet short is not a signature of this algorithm.
            var short = [UInt8](try read(".sig"))
            short.removeLast()
            short[1] -= 1
            #expect(throws: TrustError.self) { try ring.signer(of: Data(short), over: statement) }
        }
    }
}

/// The seeds of the `verify` fuzz target are real (key, signature,
/// statement) triples from gpg: each must verify in-process, or the fuzzer
/// would never reach the signature math.
@Suite("in-process verification seeds")
struct VerifySeedTests {
    @Test("every verify seed (Ed25519, RSA, ECDSA, Brainpool, secp256k1, DSA, a signing subkey) verifies in-process")
    func seedsVerify() throws {
        let dir = TestPaths.packageRoot + "/Tests/Fuzz/corpus/verify"
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".bin") }.sorted()
        #expect(names.count >= 7)
        for name in names {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name)))
            let k = Int(bytes[0]) << 8 | Int(bytes[1])
            let key = Data(bytes[2..<(2 + k)])
            let s = Int(bytes[2 + k]) << 8 | Int(bytes[3 + k])
            let signature = Data(bytes[(4 + k)..<(4 + k + s)])
            let statement = Data(bytes[(4 + k + s)...])
            var ring = PublicKeyRing()
            ring.add(key)
            let signer = try ring.signer(of: signature, over: statement)
            #expect(signer != nil, "\(name)")
            if name == "sub.bin", let signer {
                #expect(ring.crossCertified.contains(signer.fingerprint), "the subkey's back signature verifies")
                #expect(ring.keys.count == 2)
            }
        }
    }
}

import FedBatchFormats
import FedBatchNative
import Foundation

/// Signs container payloads with a secret key from a GnuPG home, unattended:
/// an unprotected key, or a passphrase read from a file and handed to gpg
/// through loopback pinentry. It never opens a passphrase window.
public final class PayloadSigner {
    public let fingerprint: String
    /// The GnuPG home actually used, for messages and for gpg-agent.
    public let gnupgHome: String
    private let context: GPGContext
    package let passphrase: String?
    private let keygrips: [String]
    /// When the key stops signing (seconds since the epoch): the primary
    /// key's expiry, or its last usable signing subkey's if that is sooner.
    /// nil: never.
    public let expires: Int?

    /// - Parameters:
    ///   - gnupgHome: the GnuPG home holding the secret key; nil means
    ///     `$GNUPGHOME`, else `~/.gnupg`.
    ///   - fingerprint: the primary key's full fingerprint.
    ///   - passphraseFile: a file whose first line is the passphrase.
    public init(gnupgHome: String?, fingerprint: String, passphraseFile: String?) throws {
        let fpr = fingerprint.replacingOccurrences(of: " ", with: "").uppercased()
        guard fpr.count == 40, fpr.allSatisfy(\.isHexDigit) else {
            throw TrustError.signingKey(
                fingerprint: fingerprint,
                reason:
                    "give the full 40-digit fingerprint (gpg --list-secret-keys --with-colons), not a short key id "
                    + "or a user id"
            )
        }
        let home =
            gnupgHome ?? ProcessInfo.processInfo.environment["GNUPGHOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (NSHomeDirectory() as NSString).appendingPathComponent(".gnupg")
        self.gnupgHome = home
        if let passphraseFile {
            let data = try readFile(passphraseFile, cap: 64 << 10)
            let text = String(decoding: data, as: UTF8.self)
            passphrase = String(text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        } else {
            passphrase = nil
        }
        do {
            context = try GPGContext(homedir: home)
            guard let key = try context.key(fingerprint: fpr, secret: true) else {
                throw TrustError.signingKey(
                    fingerprint: fpr, reason: "no secret key with this fingerprint in GnuPG home \(home)")
            }
            keygrips = key.subkeys.map(\.keygrip).filter { !$0.isEmpty }
            guard key.fingerprint == fpr else {
                throw TrustError.signingKey(
                    fingerprint: fpr, reason: "this is a subkey; give the primary key's fingerprint \(key.fingerprint)")
            }
            if key.revoked { throw TrustError.signingKey(fingerprint: fpr, reason: "the key is revoked") }
            if key.expired { throw TrustError.signingKey(fingerprint: fpr, reason: "the key has expired") }
            if !key.canSign { throw TrustError.signingKey(fingerprint: fpr, reason: "the key cannot sign") }
            let signing = key.subkeys.filter { $0.canSign && !$0.revoked && !$0.expired }
            let subkeyExpiry = signing.contains { $0.expires == nil } ? nil : signing.compactMap(\.expires).max()
            expires = [key.primary.expires, subkeyExpiry].compactMap { $0 }.min()
        } catch let e as GPGError {
            throw TrustError.signingKey(fingerprint: fpr, reason: "\(e.description) (GnuPG home \(home))")
        }
        self.fingerprint = fpr
    }

    /// gpg-agent caches a passphrase once it was given, for minutes or
    /// hours. Then a protected key signs without the passphrase being asked
    /// for, so a run at the desk would succeed where the same run from cron
    /// fails, and a wrong --passphrase-file would go unnoticed. Clearing
    /// this key's cache entries before each signature makes every run ask,
    /// whatever the agent remembers. (It clears only this key's entries; the
    /// agent is not started if it is not running.)
    private func forgetCachedPassphrase() {
        let commands = keygrips.map { "CLEAR_PASSPHRASE --mode=normal \($0)" }
        guard !commands.isEmpty else { return }
        runQuietly("gpg-connect-agent", ["--homedir", gnupgHome, "--no-autostart"] + commands + ["/bye"])
    }

    /// A detached signature over exact bytes (a container's statement).
    public func sign(_ payload: Data) throws -> Data {
        forgetCachedPassphrase()
        do {
            let (sig, hash) = try context.signDetached(payload, signer: fingerprint, passphrase: passphrase)
            guard Verifier.acceptedDigests.contains(hash) else {
                throw TrustError.signingKey(
                    fingerprint: fingerprint,
                    reason: "gpg signed with \(hash); set personal-digest-preferences SHA256 in gpg.conf")
            }
            return sig
        } catch let e as GPGError {
            throw TrustError.signingKey(fingerprint: fingerprint, reason: "\(e.message) (GnuPG home \(gnupgHome))")
        }
    }

    /// Builds, signs and seals a container in one step. gpg signs the
    /// statement only, so signing costs the same whatever the model's size.
    public func seal(
        manifest: Manifest, members: [(name: String, data: Data)]
    ) throws -> (file: Data, manifest: Manifest, digest: Digest) {
        let sealed = try sealInParts(manifest: manifest, members: members)
        return (sealed.parts[0] + sealed.parts[1], sealed.manifest, sealed.digest)
    }

    /// The same container as its two parts, payload and slot, for
    /// `writeFileAtomically(parts:)`: a generation is never copied whole
    /// just to append a few hundred bytes.
    public func sealInParts(
        manifest: Manifest, members: [(name: String, data: Data)]
    ) throws -> (parts: [Data], manifest: Manifest, digest: Digest) {
        let (payload, final) = try ContainerWriter.payload(manifest: manifest, members: members)
        let statement = Statement(for: final, payload: payload, manifestBytes: try final.encoded())
        let bytes = statement.encoded
        return (
            [payload, ContainerFile.slot(statement: bytes, signature: try sign(bytes))], final, statement.payloadDigest
        )
    }

    /// `sealInParts` written into `file` a piece at a time: the payload,
    /// compressed as it is produced (members on disk are never held whole),
    /// then the slot. The caller commits the file.
    public func seal(
        manifest: Manifest, members: [(name: String, contents: ContainerWriter.Contents)], into file: PendingFile
    ) throws -> (manifest: Manifest, digest: Digest) {
        let final = try ContainerWriter.write(manifest: manifest, members: members) { try file.write($0) }
        let statement = Statement(
            for: final, payloadLength: file.size, payloadDigest: file.digest, manifestBytes: try final.encoded())
        let bytes = statement.encoded
        try file.write(ContainerFile.slot(statement: bytes, signature: try sign(bytes)))
        return (final, statement.payloadDigest)
    }

    /// Signs a scratch text as a generation's statement is signed, and
    /// checks the signature against this key's public part alone, in a
    /// scratch keyring: what `fedbatch check` runs to prove the key signs
    /// unattended (no prompt, the passphrase file right, the agent usable).
    public func selfTest() throws {
        let text = Data("fedbatch check \(fingerprint) \(Date().timeIntervalSince1970)\n".utf8)
        let signature = try sign(text)
        let ring = try ScratchKeyring()
        _ = try ring.context.importKeys(try exportPublicKey())
        let results: [GPGSignatureResult]
        do { results = try ring.context.verifyDetached(signature: signature, signed: text) } catch let e as GPGError {
            throw TrustError.signingKey(fingerprint: fingerprint, reason: "its signature does not verify: \(e.message)")
        }
        guard results.count == 1, results[0].statusCode == 0, !results[0].isRed else {
            throw TrustError.signingKey(
                fingerprint: fingerprint,
                reason: "its signature does not verify: \(results.first?.statusText ?? "no signature found")")
        }
    }

    /// This key's public part, armored, for pinning elsewhere.
    public func exportPublicKey() throws -> Data {
        do { return try context.exportPublicKey(fingerprint: fingerprint) } catch let e as GPGError {
            throw TrustError.signingKey(fingerprint: fingerprint, reason: e.message)
        }
    }
}

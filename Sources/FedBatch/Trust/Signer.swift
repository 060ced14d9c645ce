import Foundation

/// Signs container payloads with a secret key from a GnuPG home, unattended:
/// an unprotected key, or a passphrase read from a file and handed to gpg
/// through loopback pinentry. It never opens a passphrase window.
public final class PayloadSigner {
    public let fingerprint: String
    private let context: GPGContext
    private let passphrase: String?

    /// - Parameters:
    ///   - gnupgHome: the GnuPG home holding the secret key; nil means
    ///     `$GNUPGHOME`, else `~/.gnupg`.
    ///   - fingerprint: the primary key's full fingerprint.
    ///   - passphraseFile: a file whose first line is the passphrase.
    public init(gnupgHome: String?, fingerprint: String, passphraseFile: String?) throws {
        let fpr = fingerprint.replacingOccurrences(of: " ", with: "").uppercased()
        guard fpr.count == 40, fpr.allSatisfy(\.isHexDigit) else {
            throw TrustError.signingKey(fingerprint: fingerprint, reason: "give the full 40-digit fingerprint (gpg --list-secret-keys --with-colons), not a short key id or a user id")
        }
        if let passphraseFile {
            let data = try readFile(passphraseFile, cap: 64 << 10)
            let text = String(decoding: data, as: UTF8.self)
            passphrase = String(text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        } else {
            passphrase = nil
        }
        do {
            context = try GPGContext(homedir: gnupgHome)
            guard let key = try context.key(fingerprint: fpr, secret: true) else {
                throw TrustError.signingKey(fingerprint: fpr, reason: "no secret key with this fingerprint in \(gnupgHome ?? "the default GnuPG home")")
            }
            guard key.fingerprint == fpr else {
                throw TrustError.signingKey(fingerprint: fpr, reason: "this is a subkey; give the primary key's fingerprint \(key.fingerprint)")
            }
            if key.revoked { throw TrustError.signingKey(fingerprint: fpr, reason: "the key is revoked") }
            if key.expired { throw TrustError.signingKey(fingerprint: fpr, reason: "the key has expired") }
            if !key.canSign { throw TrustError.signingKey(fingerprint: fpr, reason: "the key cannot sign") }
        } catch let e as GPGError {
            throw TrustError.signingKey(fingerprint: fpr, reason: e.description)
        }
        self.fingerprint = fpr
    }

    /// A detached signature over the exact payload bytes.
    public func sign(_ payload: Data) throws -> Data {
        do {
            let (sig, hash) = try context.signDetached(payload, signer: fingerprint, passphrase: passphrase)
            guard Verifier.acceptedDigests.contains(hash) else {
                throw TrustError.signingKey(fingerprint: fingerprint, reason: "gpg signed with \(hash); set personal-digest-preferences SHA256 in gpg.conf")
            }
            return sig
        } catch let e as GPGError {
            throw TrustError.signingKey(fingerprint: fingerprint, reason: e.message)
        }
    }

    /// Builds, signs and seals a container in one step.
    public func seal(manifest: Manifest, members: [(name: String, data: Data)]) throws -> (file: Data, manifest: Manifest, digest: Digest) {
        let (payload, final) = try ContainerWriter.payload(manifest: manifest, members: members)
        return (ContainerFile.seal(payload: payload, signature: try sign(payload)), final, Digest.of(payload))
    }

    /// This key's public part, armored, for pinning elsewhere.
    public func exportPublicKey() throws -> Data {
        do { return try context.exportPublicKey(fingerprint: fingerprint) } catch let e as GPGError {
            throw TrustError.signingKey(fingerprint: fingerprint, reason: e.message)
        }
    }
}

import Foundation

/// A throw-away GnuPG home holding only the keys fedbatch puts there. Trust
/// decisions are made against one of these, never against the user's own
/// keyring, whose other keys and trust settings must not count.
final class ScratchKeyring {
    let path: String
    let context: GPGContext

    init() throws {
        path = try makePrivateTempDirectory()
        do {
            context = try GPGContext(homedir: path)
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
    }

    deinit {
        // gpg may have started an agent for this home; stop it before the
        // directory (and its socket) goes away.
        if FileManager.default.fileExists(atPath: path + "/S.gpg-agent") {
            runQuietly("gpgconf", ["--homedir", path, "--kill", "all"])
        }
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Reads an exported OpenPGP public key file holding exactly one key.
public enum KeyFile {
    /// The one public key in `data` (armored or binary). Refuses files with
    /// no key, several keys, or secret key material.
    static func parse(_ data: Data, path: String, context: GPGContext) throws -> GPGKey {
        let keys: [GPGKey]
        do {
            keys = try context.keys(inData: data)
        } catch let e as GPGError {
            throw TrustError.keyFile(path: path, reason: "not an OpenPGP key block (\(e.message))")
        }
        if isSecretKeyBlock(data) || keys.contains(where: \.hasSecret) {
            throw TrustError.keyFile(path: path, reason: "holds a secret key; pin only public keys (gpg --armor --export FPR)")
        }
        guard keys.count == 1 else {
            throw TrustError.keyFile(path: path, reason: keys.isEmpty ? "holds no key" : "holds \(keys.count) keys; pin one key per file")
        }
        return keys[0]
    }

    /// gpg lists a secret key block's public part without flagging it, so
    /// also look for the secret-key packet tags (5, 7) or their armor header.
    static func isSecretKeyBlock(_ data: Data) -> Bool {
        if let text = String(data: data.prefix(4096), encoding: .utf8), text.contains("PRIVATE KEY BLOCK") { return true }
        guard let first = data.first, first & 0x80 != 0 else { return false }
        let tag = first & 0x40 != 0 ? Int(first & 0x3F) : Int((first >> 2) & 0x0F)
        return tag == 5 || tag == 7
    }
}

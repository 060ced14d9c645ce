import FedBatchFormats
import FedBatchNative
import Foundation

/// A throw-away GnuPG home holding only the keys fedbatch puts there. Trust
/// decisions are made against one of these, never against the user's own
/// keyring, whose other keys and trust settings must not count.
///
/// Nothing in it needs gpg-agent (public keys only), so its gpg.conf says
/// `no-autostart`: no daemon is ever left behind, even by a fedbatch that is
/// killed. A killed fedbatch can still leave the directory itself; it holds
/// a marker with the owner's process id, and the next fedbatch to make a
/// scratch keyring removes those whose owner is gone.
package final class ScratchKeyring {
    static let marker = "fedbatch-scratch.pid"
    /// Scratch keyrings have a name of their own, so that one whose owner
    /// was killed before it wrote the marker can be told from anyone
    /// else's directory and reclaimed once it is old.
    static let prefix = "fb-scratch-"
    /// A scratch keyring without a marker this old was abandoned: the
    /// marker is written microseconds after the directory is made.
    static let unmarkedAge: TimeInterval = 600
    let path: String
    package let context: GPGContext

    package init() throws {
        Self.removeAbandoned()
        path = try makePrivateTempDirectory(prefix: Self.prefix)
        do {
            try Data("\(getpid())\n".utf8).write(to: URL(fileURLWithPath: "\(path)/\(Self.marker)"))
            try Data("no-autostart\n".utf8).write(to: URL(fileURLWithPath: "\(path)/gpg.conf"))
            context = try GPGContext(homedir: path)
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
    }

    deinit { Self.remove(path) }

    private static func remove(_ path: String) {
        // Homes made by older fedbatch versions may have an agent running.
        if FileManager.default.fileExists(atPath: path + "/S.gpg-agent") {
            runQuietly("gpgconf", ["--homedir", path, "--kill", "all"])
        }
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Removes scratch keyrings of fedbatch processes that no longer exist.
    static func removeAbandoned(in tmp: String = temporaryRoot) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []
        for name in names where name.hasPrefix("fb-") {
            let dir = "\(tmp)/\(name)"
            guard let text = try? String(contentsOfFile: "\(dir)/\(marker)", encoding: .utf8) else {
                // No marker: killed between mkdtemp and the marker, if it is
                // one of ours and old enough that no live process is
                // still about to write it.
                // (mtime: the directory's entries have not changed since
                // mkdtemp made it.)
                if name.hasPrefix(prefix),
                    let modified = (try? FileManager.default.attributesOfItem(atPath: dir))?[.modificationDate]
                        as? Date,
                    -modified.timeIntervalSinceNow > unmarkedAge
                {
                    remove(dir)
                }
                continue
            }
            guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, !processExists(pid)
            else { continue }
            remove(dir)
        }
    }
}

/// Reads an exported OpenPGP public key file holding exactly one key.
public enum KeyFile {
    /// The one public key in `data` (armored or binary). Refuses files with
    /// no key, several keys, or secret key material.
    package static func parse(
        _ data: Data, path: String, context: GPGContext, batch: KeyFileBatch = KeyFileBatch()
    ) throws -> GPGKey {
        if let key = batch.key(for: data) { return key }
        let keys: [GPGKey]
        do {
            keys = try context.keys(inData: data)
        } catch let e as GPGError {
            throw TrustError.keyFile(path: path, reason: "not an OpenPGP key block (\(e.message))")
        }
        if isSecretKeyBlock(data) || keys.contains(where: \.hasSecret) {
            throw TrustError.keyFile(
                path: path, reason: "holds a secret key; pin only public keys (gpg --armor --export FPR)")
        }
        guard keys.count == 1 else {
            throw TrustError.keyFile(
                path: path, reason: keys.isEmpty ? "holds no key" : "holds \(keys.count) keys; pin one key per file")
        }
        return keys[0]
    }

    /// gpg lists a secret key block's public part without flagging it, so
    /// also look for the secret-key packet tags (5, 7) or their armor header.
    static func isSecretKeyBlock(_ data: Data) -> Bool {
        if let text = String(data: data.prefix(4096), encoding: .utf8), text.contains("PRIVATE KEY BLOCK") {
            return true
        }
        guard let first = data.first, first & 0x80 != 0 else { return false }
        let tag = first & 0x40 != 0 ? Int(first & 0x3F) : Int((first >> 2) & 0x0F)
        return tag == 5 || tag == 7
    }
}

import FedBatchFormats
import FedBatchNative
import FedBatchTrust
import Foundation

/// Encryption to the collector (`[remote] encrypt`, `push --encrypt`).
///
/// A site signs its bundle as always, then encrypts the whole signed file to
/// the collector key's encryption subkey: sign-then-encrypt, so the
/// signature is checked on exactly the bytes the site signed, and nobody who
/// handles the file on the way (a lost USB stick, a shared bucket) can read
/// the update or tell it apart from another site's beyond what stays
/// visible: the object's name (site id, model id, base generation, sequence
/// number), its size (the bundle's plus a few hundred bytes) and its time.
///
/// The collector decrypts in memory, with the output capped at the largest
/// bundle its model allows, and hands the bytes to the same verification as
/// a plain bundle: the decrypted stream gets the same decompression limits,
/// and nothing decrypted is written anywhere before it is verified (the
/// encrypted file itself is what moves to accepted/ or quarantine/).
public enum BundleEncryption {
    /// Appended to the name of an encrypted bundle on the remote and in the
    /// inbox: `m-g000003-site-a-17.fbu.gpg`, which `gpg --decrypt` also reads.
    public static let suffix = ".gpg"
    /// What encryption adds to a bundle's size, at most: the session key
    /// packet, the packet headers and the integrity tag (a few hundred
    /// bytes for one recipient), with room to spare.
    public static let overhead: Int64 = 64 << 10

    /// Whether a file starts like an OpenPGP encrypted message: a public-key
    /// (tag 1) or symmetric (tag 3) session key packet, in either packet
    /// format. A container starts with a zstd frame (28 B5 2F FD), which
    /// never matches.
    public static func looksEncrypted(firstByte b: UInt8) -> Bool {
        if b & 0xC0 == 0xC0 { return b & 0x3F == 1 || b & 0x3F == 3 }
        if b & 0xC0 == 0x80 { return (b >> 2) & 0x0F == 1 || (b >> 2) & 0x0F == 3 }
        return false
    }

    /// A signed bundle encrypted to the collector key `keyFile` (an
    /// exported public key, as pinned in keys/). The key is imported into a
    /// throw-away keyring, never into the user's.
    public static func encrypt(_ bundle: Data, toKeyFile keyFile: String) throws -> Data {
        let ring = try ScratchKeyring()
        let data = try readFile(keyFile, cap: 1 << 20)
        let key = try KeyFile.parse(data, path: keyFile, context: ring.context)
        _ = try ring.context.importKeys(data)
        guard key.subkeys.contains(where: \.canEncrypt) else {
            throw EncryptionError.noEncryptionSubkey(fingerprint: key.fingerprint, path: keyFile)
        }
        do {
            return try ring.context.encrypt(bundle, to: key.fingerprint)
        } catch let e as GPGError {
            throw EncryptionError.failed("\(e)")
        }
    }
}

/// The collector's side: decrypts inbox entries with its own secret key.
/// Each call makes its own gpgme context, so the merge's workers can
/// decrypt at the same time.
public struct BundleDecryption: Sendable {
    public let gnupgHome: String
    /// The collector's key: a message must name one of its subkeys as a
    /// recipient, whatever other secret keys the GnuPG home holds.
    public let fingerprint: String
    let passphrase: String?
    private let ids = KeyIDs()

    /// The collector key's subkey ids, looked up once, on the first
    /// encrypted file (each lookup runs gpg; a merge of plain bundles runs
    /// none).
    private final class KeyIDs: @unchecked Sendable {
        private let lock = NSLock()
        private var known: Set<String>?
        func get(_ make: () -> Set<String>) -> Set<String> {
            lock.lock()
            defer { lock.unlock() }
            if let known { return known }
            let made = make()
            known = made
            return made
        }
    }

    init(gnupgHome: String, fingerprint: String, passphrase: String?) {
        self.gnupgHome = gnupgHome
        self.fingerprint = fingerprint
        self.passphrase = passphrase
    }

    /// The decrypted content of `file` if it is an encrypted message, nil if
    /// it is not (a plain bundle); refuses one that does not decrypt to at
    /// most `limits.maxFileBytes` bytes.
    public func open(_ file: OpenFile, limits: ContainerLimits) throws -> Data? {
        try decrypt(file, limits: limits, tail: nil).map(\.plain)
    }

    /// The signed statement of `file` if it is an encrypted message, nil if
    /// it is not. The whole message is decrypted, but only the plaintext's
    /// last bytes are kept, where the statement is: a merge's first pass
    /// orders the inbox without holding any decrypted bundle.
    public func statement(of file: OpenFile, limits: ContainerLimits) throws -> Statement? {
        let keep = ContainerFile.trailerSize + Statement.maxBytes + limits.maxSignatureBytes + 64
        guard let (kept, length) = try decrypt(file, limits: limits, tail: keep) else { return nil }
        // Indexed from zero: what the sink kept is a slice of what it appended.
        let tail = Data(kept)
        let start = length - tail.count
        let slot = try ContainerFile.locate(size: Int64(length), limits: limits) { offset, count in
            guard offset >= start, Int(offset) + count <= length else { throw ContainerError.noSignatureTrailer }
            return tail.subdata(in: (Int(offset) - start)..<(Int(offset) - start + count))
        }
        return try Statement.parse(slot.statement)
    }

    private func decrypt(_ file: OpenFile, limits: ContainerLimits, tail: Int?) throws -> (plain: Data, length: Int)? {
        guard file.size > 0, BundleEncryption.looksEncrypted(firstByte: try file.read(at: 0, count: 1).first ?? 0)
        else { return nil }
        let cap = limits.maxFileBytes + BundleEncryption.overhead
        if file.size > cap { throw ContainerError.fileTooLarge(size: file.size, cap: cap) }
        let context = try GPGContext(homedir: gnupgHome)
        do {
            let (plain, length, recipients) = try context.decrypt(
                file, cap: Int(limits.maxFileBytes), keepTail: tail, passphrase: passphrase)
            let mine = ids.get {
                Set((try? context.key(fingerprint: fingerprint, secret: false))??.subkeys.map(\.keyID) ?? [])
            }
            guard recipients.contains(where: mine.contains) else {
                throw EncryptionError.undecryptable(
                    "it is encrypted to \(recipients.joined(separator: ", ")), not to this collector's "
                        + "key \(fingerprint)"
                )
            }
            return (plain, length)
        } catch let e as GPGError where e.code == GPGErrorCode.tooLarge {
            throw EncryptionError.tooLarge(cap: limits.maxFileBytes)
        } catch let e as GPGError {
            throw EncryptionError.undecryptable(
                e.code == GPGErrorCode.noSecretKey
                    ? "it is not encrypted to this collector's key (no secret key for it in GnuPG home \(gnupgHome))"
                    : e.message)
        }
    }
}

extension PayloadSigner {
    /// Decryption with this signer's GnuPG home and passphrase: the
    /// collector's key both signs generations and receives bundles.
    public var decryption: BundleDecryption {
        BundleDecryption(gnupgHome: gnupgHome, fingerprint: fingerprint, passphrase: passphrase)
    }
}

public enum EncryptionError: Error, Equatable, Sendable, ReasonCoded {
    case undecryptable(String)
    case tooLarge(cap: Int64)
    case noEncryptionSubkey(fingerprint: String, path: String)
    case failed(String)

    public var code: String {
        switch self {
        case .undecryptable: return "encryption.undecryptable"
        case .tooLarge: return "encryption.too-large"
        case .noEncryptionSubkey: return "encryption.no-subkey"
        case .failed: return "encryption.failed"
        }
    }

    public var description: String {
        switch self {
        case let .undecryptable(why): return "an encrypted file that does not decrypt: \(why)"
        case let .tooLarge(cap):
            return
                "an encrypted file whose content is larger than the \(cap) bytes the model allows a bundle; "
                + "decryption stopped there"
        case let .noEncryptionSubkey(fpr, path):
            return
                "the collector key \(fpr) in \(path) has no encryption subkey; on the collector, add one (gpg "
                + "--quick-add-key \(fpr) cv25519 encr), export the key again and give the sites the new file "
                + "(fedbatch keys add --collector)"
        case let .failed(why): return "encryption failed: \(why)"
        }
    }
}

internal import CGPGME
import Foundation

// Every call into gpgme lives in this file. Callers see fingerprints, byte
// buffers and plain Swift structs; no gpgme handle escapes.

/// A failure reported by gpgme or gpg, with gpgme's code and text.
public struct GPGError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: UInt32
    public let message: String
    public let context: String
    public var description: String { "\(context): \(message)" }

    static func from(_ err: gpgme_error_t, _ context: String) -> GPGError {
        GPGError(code: fb_gpgme_err_code(err), message: String(cString: gpgme_strerror(err)), context: context)
    }
}

// libgpg-error codes fedbatch tells apart (gpg-error.h).
public enum GPGErrorCode {
    public static let noError: UInt32 = 0
    public static let badSignature: UInt32 = 8
    public static let noPublicKey: UInt32 = 9
    static let badPassphrase: UInt32 = 11
    static let noData: UInt32 = 58
    static let canceled: UInt32 = 99
    static let noPassphrase: UInt32 = 177
    static let unusableSecretKey: UInt32 = 54
    static let unusablePublicKey: UInt32 = 53
    public static let noSecretKey: UInt32 = 17
    public static let tooLarge: UInt32 = 67
    public static let certRevoked: UInt32 = 94
    public static let keyExpired: UInt32 = 153
    public static let sigExpired: UInt32 = 154
    public static let timeConflict: UInt32 = 39
    public static let wrongKeyUsage: UInt32 = 125
    public static let badPublicKey: UInt32 = 6
    public static let digestAlgorithm: UInt32 = 5
    public static let general: UInt32 = 1
    static let eof: UInt32 = 16383
}

/// One subkey (the first is the primary key).
public struct GPGSubkey: Sendable, Equatable {
    public let fingerprint: String
    public let keyID: String
    public let revoked: Bool
    public let expired: Bool
    public let canSign: Bool
    public let canEncrypt: Bool
    /// Seconds since the epoch; nil when the key never expires.
    public let expires: Int?
    /// When the (sub)key was made, seconds since the epoch: gpg refuses a
    /// signature older than the key that made it.
    public let created: Int
    /// gpg found no valid self-signature or binding for it.
    public let invalid: Bool
    /// The public-key algorithm as OpenPGP numbers it (RFC 4880 §9.1;
    /// 22 for EdDSA), its size in bits, and the curve for ECC keys.
    public let algorithm: Int
    public let bits: Int
    public let curve: String
    /// The keygrip: gpg-agent names secret keys and their cached
    /// passphrases by it.
    public let keygrip: String
}

/// An OpenPGP key as gpgme lists it.
public struct GPGKey: Sendable, Equatable {
    /// The primary key's fingerprint, uppercase hex.
    public let fingerprint: String
    public let userIDs: [String]
    public let revoked: Bool
    public let expired: Bool
    public let disabled: Bool
    public let invalid: Bool
    public let canSign: Bool
    public let hasSecret: Bool
    public let subkeys: [GPGSubkey]

    public var primary: GPGSubkey { subkeys[0] }
}

/// What gpg said about one signature.
public struct GPGSignatureResult: Sendable, Equatable {
    /// The signing key's fingerprint, or its key id when the key is unknown.
    public let fingerprint: String
    public let statusCode: UInt32
    public let statusText: String
    public let summary: UInt32
    public let created: Int
    /// Seconds since the epoch; nil when the signature never expires.
    public let expires: Int?
    public let hashAlgorithm: String
    public let wrongKeyUsage: Bool

    public var isRed: Bool { summary & UInt32(GPGME_SIGSUM_RED.rawValue) != 0 }
    public var keyRevoked: Bool { summary & UInt32(GPGME_SIGSUM_KEY_REVOKED.rawValue) != 0 }
    public var keyExpired: Bool { summary & UInt32(GPGME_SIGSUM_KEY_EXPIRED.rawValue) != 0 }
    public var signatureExpired: Bool { summary & UInt32(GPGME_SIGSUM_SIG_EXPIRED.rawValue) != 0 }
    public var keyMissing: Bool { summary & UInt32(GPGME_SIGSUM_KEY_MISSING.rawValue) != 0 }
}

/// gpgme must be initialised once, before the first context.
private let gpgmeVersion: String? = {
    guard let v = fb_gpgme_check_version(nil) else { return nil }
    return String(cString: v)
}()

/// One gpgme context bound to a GnuPG home directory. It is offline (no key
/// servers), never armors signatures, and uses loopback pinentry so that no
/// passphrase window ever opens: a passphrase comes from the caller or the
/// operation fails.
public final class GPGContext {
    private let ctx: gpgme_ctx_t
    let homedir: String?

    public init(homedir: String?) throws {
        // gpgme forks to run gpg: the fork guard must be in place first,
        // and held while gpgme may ask gpg or gpgconf for engine details.
        ForkGuard.register()
        ForkGuard.shared.lockShared()
        defer { ForkGuard.shared.unlock() }
        guard gpgmeVersion != nil else {
            throw GPGError(code: 0, message: "gpgme could not be initialised", context: "gpgme")
        }
        var c: gpgme_ctx_t?
        var err = gpgme_new(&c)
        guard err == 0, let c else { throw GPGError.from(err, "gpgme_new") }
        ctx = c
        self.homedir = homedir
        err = gpgme_set_protocol(ctx, GPGME_PROTOCOL_OpenPGP)
        if err != 0 { throw GPGError.from(err, "gpgme_set_protocol") }
        if let homedir {
            err = gpgme_ctx_set_engine_info(ctx, GPGME_PROTOCOL_OpenPGP, nil, homedir)
            if err != 0 { throw GPGError.from(err, "GnuPG home \(homedir)") }
        }
        gpgme_set_armor(ctx, 0)
        gpgme_set_offline(ctx, 1)
        err = gpgme_set_pinentry_mode(ctx, GPGME_PINENTRY_MODE_LOOPBACK)
        if err != 0 { throw GPGError.from(err, "gpgme_set_pinentry_mode") }
    }

    deinit { gpgme_release(ctx) }

    // MARK: data buffers

    /// Runs `body` with a gpgme data object reading `bytes` without a copy.
    private func withInput<R>(_ bytes: Data, _ body: (gpgme_data_t) throws -> R) throws -> R {
        // gpgme wants a non-null pointer even for empty input.
        var zero: CChar = 0
        return try bytes.withUnsafeBytes { raw in
            var dh: gpgme_data_t?
            let base = raw.baseAddress?.assumingMemoryBound(to: CChar.self)
            let err = withUnsafePointer(to: &zero) { z in gpgme_data_new_from_mem(&dh, base ?? z, raw.count, 0) }
            guard err == 0, let dh else { throw GPGError.from(err, "gpgme_data_new_from_mem") }
            defer { gpgme_data_release(dh) }
            return try body(dh)
        }
    }

    private func withOutput(_ body: (gpgme_data_t) throws -> Void) throws -> Data {
        var dh: gpgme_data_t?
        let err = gpgme_data_new(&dh)
        guard err == 0, let dh else { throw GPGError.from(err, "gpgme_data_new") }
        do {
            try body(dh)
        } catch {
            gpgme_data_release(dh)
            throw error
        }
        var length = 0
        guard let mem = gpgme_data_release_and_get_mem(dh, &length) else { return Data() }
        defer { gpgme_free(mem) }
        return Data(bytes: mem, count: length)
    }

    // MARK: keys

    private static func string(_ p: UnsafeMutablePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }

    /// gpgme numbers ECC algorithms its own way (301 ECDSA, 302 ECDH, 303
    /// EdDSA); map them back to OpenPGP's 19, 18 and 22.
    private static func openPGPAlgorithm(_ a: gpgme_pubkey_algo_t) -> Int {
        switch a.rawValue {
        case 301: return 19
        case 302: return 18
        case 303: return 22
        default: return Int(a.rawValue)
        }
    }

    private static func convert(_ key: gpgme_key_t) -> GPGKey {
        var subkeys: [GPGSubkey] = []
        var sk = key.pointee.subkeys
        while let s = sk {
            subkeys.append(
                GPGSubkey(
                    fingerprint: string(s.pointee.fpr), keyID: string(s.pointee.keyid),
                    revoked: s.pointee.revoked != 0, expired: s.pointee.expired != 0, canSign: s.pointee.can_sign != 0,
                    canEncrypt: s.pointee.can_encrypt != 0 && s.pointee.revoked == 0 && s.pointee.expired == 0,
                    expires: s.pointee.expires > 0 ? Int(s.pointee.expires) : nil,
                    created: Int(s.pointee.timestamp), invalid: s.pointee.invalid != 0,
                    algorithm: openPGPAlgorithm(s.pointee.pubkey_algo), bits: Int(s.pointee.length),
                    curve: string(s.pointee.curve),
                    keygrip: string(s.pointee.keygrip)))
            sk = s.pointee.next
        }
        var uids: [String] = []
        var u = key.pointee.uids
        while let id = u {
            if id.pointee.revoked == 0, id.pointee.invalid == 0 { uids.append(string(id.pointee.uid)) }
            u = id.pointee.next
        }
        return GPGKey(
            fingerprint: key.pointee.fpr.map { String(cString: $0) } ?? subkeys.first?.fingerprint ?? "",
            userIDs: uids, revoked: key.pointee.revoked != 0, expired: key.pointee.expired != 0,
            disabled: key.pointee.disabled != 0, invalid: key.pointee.invalid != 0,
            canSign: key.pointee.can_sign != 0, hasSecret: key.pointee.secret != 0, subkeys: subkeys)
    }

    /// The keys held in an exported key block, without importing them.
    public func keys(inData bytes: Data) throws -> [GPGKey] {
        // gpgme forks gpg: no BLAS call may run meanwhile (ForkGuard).
        ForkGuard.shared.lockShared()
        defer { ForkGuard.shared.unlock() }
        return try withInput(bytes) { dh in
            let err = gpgme_op_keylist_from_data_start(ctx, dh, 0)
            if err != 0 { throw GPGError.from(err, "reading keys") }
            return try finishKeylist("reading keys")
        }
    }

    /// Every public key in the keyring, from one gpg process: a verifier
    /// lists its scratch keyring once rather than once per signer.
    public func allKeys() throws -> [GPGKey] {
        // gpgme forks gpg: no BLAS call may run meanwhile (ForkGuard).
        ForkGuard.shared.lockShared()
        defer { ForkGuard.shared.unlock() }
        let err = gpgme_op_keylist_start(ctx, nil, 0)
        if err != 0 { throw GPGError.from(err, "listing keys") }
        return try finishKeylist("listing keys")
    }

    /// The keys of the keylist operation just started, then its end.
    private func finishKeylist(_ what: String) throws -> [GPGKey] {
        defer { gpgme_op_keylist_end(ctx) }
        var out: [GPGKey] = []
        while true {
            var key: gpgme_key_t?
            let err = gpgme_op_keylist_next(ctx, &key)
            if fb_gpgme_err_code(err) == GPGErrorCode.eof { break }
            if err != 0 { throw GPGError.from(err, what) }
            if let key {
                out.append(Self.convert(key))
                gpgme_key_unref(key)
            }
        }
        return out
    }

    /// The key with this fingerprint (primary or subkey) in the keyring.
    public func key(fingerprint: String, secret: Bool) throws -> GPGKey? {
        // gpgme forks gpg: no BLAS call may run meanwhile (ForkGuard).
        ForkGuard.shared.lockShared()
        defer { ForkGuard.shared.unlock() }
        var key: gpgme_key_t?
        let err = gpgme_get_key(ctx, fingerprint, &key, secret ? 1 : 0)
        if fb_gpgme_err_code(err) == GPGErrorCode.eof { return nil }
        if err != 0 { throw GPGError.from(err, "looking up key \(fingerprint)") }
        guard let key else { return nil }
        defer { gpgme_key_unref(key) }
        return Self.convert(key)
    }

    /// Imports a key block; returns the fingerprints imported or unchanged
    /// and how many secret keys it held.
    @discardableResult
    public func importKeys(_ bytes: Data) throws -> (fingerprints: [String], secretKeys: Int) {
        // gpgme forks gpg: no BLAS call may run meanwhile (ForkGuard).
        ForkGuard.shared.lockShared()
        defer { ForkGuard.shared.unlock() }
        return try withInput(bytes) { dh in
            let err = gpgme_op_import(ctx, dh)
            if err != 0 { throw GPGError.from(err, "importing keys") }
            guard let r = gpgme_op_import_result(ctx) else { return ([], 0) }
            var fprs: [String] = []
            var s = r.pointee.imports
            while let st = s {
                if st.pointee.result == 0, let f = st.pointee.fpr { fprs.append(String(cString: f)) }
                s = st.pointee.next
            }
            return (fprs, Int(r.pointee.secret_read))
        }
    }

    /// The armored public key block of one key.
    public func exportPublicKey(fingerprint: String) throws -> Data {
        // gpgme forks gpg: no BLAS call may run meanwhile (ForkGuard).
        ForkGuard.shared.lockShared()
        defer { ForkGuard.shared.unlock() }
        let saved = gpgme_get_armor(ctx)
        gpgme_set_armor(ctx, 1)
        defer { gpgme_set_armor(ctx, saved) }
        let data = try withOutput { dh in
            let err = gpgme_op_export(ctx, fingerprint, 0, dh)
            if err != 0 { throw GPGError.from(err, "exporting key \(fingerprint)") }
        }
        if data.isEmpty {
            throw GPGError(
                code: GPGErrorCode.noData, message: "no such public key", context: "exporting key \(fingerprint)")
        }
        return data
    }

    // MARK: signing and verifying

    private final class PassphraseBox {
        let passphrase: [UInt8]?
        var asked = false
        var rejected = false
        init(_ p: String?) { passphrase = p.map { Array($0.utf8) } }
    }

    /// Runs `body` with loopback pinentry answering from `passphrase` (or
    /// failing with `noPassphrase`), never a prompt.
    private func withPassphrase<R>(_ passphrase: String?, _ body: (PassphraseBox) throws -> R) throws -> R {
        let box = PassphraseBox(passphrase)
        gpgme_set_passphrase_cb(
            ctx,
            { hook, _, _, prevWasBad, fd in
                let box = Unmanaged<PassphraseBox>.fromOpaque(hook!).takeUnretainedValue()
                box.asked = true
                if prevWasBad != 0 { box.rejected = true; return fb_gpgme_error(GPGErrorCode.badPassphrase) }
                guard let p = box.passphrase else { return fb_gpgme_error(GPGErrorCode.noPassphrase) }
                let line = p + [0x0A]
                let written = line.withUnsafeBytes { gpgme_io_writen(fd, $0.baseAddress, $0.count) }
                return written == 0 ? 0 : fb_gpgme_error(GPGErrorCode.canceled)
            }, Unmanaged.passUnretained(box).toOpaque())
        defer { gpgme_set_passphrase_cb(ctx, nil, nil) }
        return try withExtendedLifetime(box) { try body(box) }
    }

    /// A binary detached signature over `bytes` by the secret key `signer`.
    /// With no passphrase, a protected key fails with `noPassphrase` instead
    /// of prompting.
    public func signDetached(
        _ bytes: Data, signer: String, passphrase: String?
    ) throws -> (signature: Data, hashAlgorithm: String) {
        // gpgme forks gpg: no BLAS call may run meanwhile (ForkGuard).
        ForkGuard.shared.lockShared()
        defer { ForkGuard.shared.unlock() }
        var key: gpgme_key_t?
        var err = gpgme_get_key(ctx, signer, &key, 1)
        guard err == 0, let key else {
            throw GPGError.from(err == 0 ? fb_gpgme_error(GPGErrorCode.eof) : err, "secret key \(signer)")
        }
        defer { gpgme_key_unref(key) }
        gpgme_signers_clear(ctx)
        err = gpgme_signers_add(ctx, key)
        if err != 0 { throw GPGError.from(err, "secret key \(signer)") }
        defer { gpgme_signers_clear(ctx) }

        var hash = ""
        let sig = try withPassphrase(passphrase) { box in
            try withInput(bytes) { plain in
                try withOutput { out in
                    let e = gpgme_op_sign(ctx, plain, out, GPGME_SIG_MODE_DETACH)
                    if e != 0 {
                        let code = fb_gpgme_err_code(e)
                        if box.rejected || code == GPGErrorCode.badPassphrase {
                            throw GPGError(
                                code: GPGErrorCode.badPassphrase, message: "the passphrase is wrong",
                                context: "signing with \(signer)")
                        }
                        if box.asked && box.passphrase == nil || code == GPGErrorCode.noPassphrase {
                            throw GPGError(
                                code: GPGErrorCode.noPassphrase,
                                message:
                                    "the key is protected by a passphrase and none was given (use --passphrase-file)",
                                context: "signing with \(signer)")
                        }
                        throw GPGError.from(e, "signing with \(signer)")
                    }
                    if let r = gpgme_op_sign_result(ctx), let s = r.pointee.signatures,
                        let name = gpgme_hash_algo_name(s.pointee.hash_algo)
                    {
                        hash = String(cString: name)
                    }
                }
            }
        }
        return (sig, hash)
    }

    // MARK: encrypting and decrypting

    /// Encrypts `bytes` to the public key `recipient` (gpg picks its
    /// encryption subkey), as a binary OpenPGP message. The key is pinned,
    /// so the keyring's trust model is not consulted; the payload is zstd
    /// already, so gpg does not compress it again.
    public func encrypt(_ bytes: Data, to recipient: String) throws -> Data {
        // gpgme forks gpg: no BLAS call may run meanwhile (ForkGuard).
        ForkGuard.shared.lockShared()
        defer { ForkGuard.shared.unlock() }
        var key: gpgme_key_t?
        let err = gpgme_get_key(ctx, recipient, &key, 0)
        guard err == 0, let key else {
            throw GPGError.from(err == 0 ? fb_gpgme_error(GPGErrorCode.eof) : err, "public key \(recipient)")
        }
        defer { gpgme_key_unref(key) }
        var recipients: [gpgme_key_t?] = [key, nil]
        return try withInput(bytes) { plain in
            try withOutput { out in
                let flags = gpgme_encrypt_flags_t(
                    GPGME_ENCRYPT_ALWAYS_TRUST.rawValue | GPGME_ENCRYPT_NO_COMPRESS.rawValue)
                let e = recipients.withUnsafeMutableBufferPointer {
                    gpgme_op_encrypt(ctx, $0.baseAddress, flags, plain, out)
                }
                if e != 0 {
                    if let r = gpgme_op_encrypt_result(ctx), r.pointee.invalid_recipients != nil {
                        throw GPGError(
                            code: GPGErrorCode.unusablePublicKey, message: "the key has no usable encryption subkey",
                            context: "encrypting to \(recipient)")
                    }
                    throw GPGError.from(e, "encrypting to \(recipient)")
                }
            }
        }
    }

    /// Where a decryption writes: memory, refusing to grow past a cap, so a
    /// small message that decompresses to gigabytes stops at the cap; with
    /// `keepTail`, only the last bytes are kept (to read a statement).
    private final class CappedSink {
        let cap: Int
        let keepTail: Int?
        var bytes = Data()
        var total = 0
        var overflowed = false
        init(cap: Int, keepTail: Int?) { self.cap = cap; self.keepTail = keepTail }
    }

    /// Decrypts the OpenPGP message in `file` with a secret key of this
    /// GnuPG home, reading the file through its descriptor and writing into
    /// memory, never to a file. Output beyond `cap` bytes stops the
    /// decryption with `tooLarge`. With `keepTail`, only the last `keepTail`
    /// bytes of the plaintext are kept (its length is returned whole). A
    /// message without integrity protection is refused by gpg itself.
    /// Returns the key ids the message names as its recipients, for the
    /// caller to check whose secret key was meant: gpg uses any secret key
    /// the home holds.
    public func decrypt(
        _ file: OpenFile, cap: Int, keepTail: Int? = nil, passphrase: String?
    )
        throws -> (plain: Data, length: Int, recipients: [String])
    {
        // gpgme forks gpg: no BLAS call may run meanwhile (ForkGuard).
        ForkGuard.shared.lockShared()
        defer { ForkGuard.shared.unlock() }
        let sink = CappedSink(cap: cap, keepTail: keepTail)
        // The plaintext is about as long as the message: one allocation, not
        // a buffer grown and copied as gpg writes.
        sink.bytes.reserveCapacity(keepTail.map { 2 * $0 } ?? min(cap, Int(file.size)))
        let callbacks = UnsafeMutablePointer<gpgme_data_cbs>.allocate(capacity: 1)
        defer { callbacks.deallocate() }
        callbacks.initialize(
            to: gpgme_data_cbs(
                read: nil,
                write: { handle, buffer, size in
                    let sink = Unmanaged<CappedSink>.fromOpaque(handle!).takeUnretainedValue()
                    guard sink.total + size <= sink.cap else {
                        sink.overflowed = true
                        errno = EFBIG
                        return -1
                    }
                    sink.total += size
                    if let buffer { sink.bytes.append(buffer.assumingMemoryBound(to: UInt8.self), count: size) }
                    if let keep = sink.keepTail, sink.bytes.count > 2 * keep {
                        sink.bytes.removeFirst(sink.bytes.count - keep)
                    }
                    return size
                }, seek: nil, release: nil))
        var out: gpgme_data_t?
        var err = gpgme_data_new_from_cbs(&out, callbacks, Unmanaged.passUnretained(sink).toOpaque())
        guard err == 0, let out else { throw GPGError.from(err, "gpgme_data_new_from_cbs") }
        defer { gpgme_data_release(out) }
        // gpg reads the message from the file's descriptor, from its start.
        guard lseek(file.fd, 0, SEEK_SET) == 0 else {
            throw GPGError(code: 0, message: String(cString: strerror(errno)), context: "reading \(file.displayPath)")
        }
        var input: gpgme_data_t?
        err = gpgme_data_new_from_fd(&input, file.fd)
        guard err == 0, let input else { throw GPGError.from(err, "gpgme_data_new_from_fd") }
        defer { gpgme_data_release(input) }
        err = try withPassphrase(passphrase) { box in
            let e = gpgme_op_decrypt(ctx, input, out)
            if box.rejected {
                throw GPGError(
                    code: GPGErrorCode.badPassphrase, message: "the passphrase is wrong", context: "decrypting")
            }
            return e
        }
        if sink.overflowed {
            throw GPGError(
                code: GPGErrorCode.tooLarge, message: "the decrypted content is larger than \(cap) bytes",
                context: "decrypting")
        }
        if err != 0 { throw GPGError.from(err, "decrypting") }
        var recipients: [String] = []
        var r = gpgme_op_decrypt_result(ctx)?.pointee.recipients
        while let p = r {
            if let id = p.pointee.keyid { recipients.append(String(cString: id)) }
            r = p.pointee.next
        }
        return (sink.bytes, sink.total, recipients)
    }

    /// Verifies a detached signature; one result per signature gpg found.
    public func verifyDetached(signature: Data, signed: Data) throws -> [GPGSignatureResult] {
        // gpgme forks gpg: no BLAS call may run meanwhile (ForkGuard).
        ForkGuard.shared.lockShared()
        defer { ForkGuard.shared.unlock() }
        return try withInput(signature) { sig in
            try withInput(signed) { text in
                let err = gpgme_op_verify(ctx, sig, text, nil)
                if err != 0 { throw GPGError.from(err, "verifying") }
                guard let r = gpgme_op_verify_result(ctx) else { return [] }
                var out: [GPGSignatureResult] = []
                var s = r.pointee.signatures
                while let sg = s {
                    let p = sg.pointee
                    out.append(
                        GPGSignatureResult(
                            fingerprint: p.fpr.map { String(cString: $0) } ?? "",
                            statusCode: fb_gpgme_err_code(p.status),
                            statusText: String(cString: gpgme_strerror(p.status)),
                            summary: UInt32(p.summary.rawValue),
                            created: Int(p.timestamp),
                            expires: p.exp_timestamp > 0 ? Int(p.exp_timestamp) : nil,
                            hashAlgorithm: gpgme_hash_algo_name(p.hash_algo).map { String(cString: $0) } ?? "unknown",
                            wrongKeyUsage: p.wrong_key_usage != 0))
                    s = p.next
                }
                return out
            }
        }
    }
}

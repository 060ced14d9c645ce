import FedBatchFormats
import FedBatchNative
import Foundation

/// Who a pinned key speaks for.
public enum Role: Hashable, Sendable, CustomStringConvertible {
    case collector
    case site(String)
    /// A witness (fedbatch-witness(1)): it co-signs generations it
    /// re-derived, and signs nothing else.
    case witness(String)
    /// One of a federation's signers (`[trust] signers`): any of them may
    /// propose a generation, which is valid once `[trust] threshold` of
    /// them signed it.
    case signer(String)

    /// The collector, or one of a federation's signers.
    public var signsGenerations: Bool {
        switch self {
        case .collector, .signer: return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .collector: return "the collector"
        case .site(let id): return "site \(id)"
        case .witness(let id): return "witness \(id)"
        case .signer(let id): return "signer \(id)"
        }
    }
}

/// Why a file's signature, or a key, was refused. Messages name the key
/// and the role so that an administrator can act on them.
public enum TrustError: Error, Equatable, Sendable, CustomStringConvertible, ReasonCoded {
    case unsigned
    case malformedSignature(String)
    case multipleSignatures(Int)
    case unknownSigner(String)
    case badSignature(String)
    case keyExpired(String)
    case keyRevoked(String)
    case signatureExpired(String)
    case signatureFromFuture(String, created: Int)
    case weakKey(String, String)
    case weakDigest(String)
    case digestTooShort(String, digest: String, needed: Int)
    case wrongKeyUsage(String)
    case keyNewerThanSignature(String, keyCreated: Int, signed: Int)
    case wrongSigner(fingerprint: String, pinnedFor: Role, claimed: Role, what: String)
    case gpg(String)
    case keyFile(path: String, reason: String)
    case alreadyPinned(fingerprint: String, role: Role)
    case signingKey(fingerprint: String, reason: String)
    case retiredKey(fingerprint: String, role: Role)
    case keyOutOfRange(fingerprint: String, generation: Int, from: Int, until: Int?)

    public var code: String {
        switch self {
        case .unsigned: return "signature.unsigned"
        case .malformedSignature: return "signature.malformed"
        case .multipleSignatures: return "signature.multiple"
        case .unknownSigner: return "signature.unknown-key"
        case .badSignature: return "signature.bad"
        case .keyExpired: return "signature.key-expired"
        case .keyRevoked: return "signature.key-revoked"
        case .signatureExpired: return "signature.expired"
        case .signatureFromFuture: return "signature.future"
        case .weakKey: return "signature.weak-key"
        case .weakDigest, .digestTooShort: return "signature.weak-digest"
        case .wrongKeyUsage: return "signature.key-usage"
        case .keyNewerThanSignature: return "signature.time-conflict"
        case .wrongSigner: return "signature.wrong-signer"
        case .gpg: return "signature.gpg-error"
        case .keyFile: return "key.invalid"
        case .alreadyPinned: return "key.already-pinned"
        case .signingKey: return "key.signing"
        case .retiredKey: return "signature.retired-key"
        case .keyOutOfRange: return "signature.key-range"
        }
    }

    public var description: String {
        switch self {
        case .unsigned:
            return "the file is unsigned (its signature slot is empty)"
        case .malformedSignature(let why):
            return "the signature slot is malformed: \(why)"
        case .multipleSignatures(let n):
            return "the file carries \(n) signatures; exactly one is allowed"
        case .unknownSigner(let id):
            return "signed by key \(id), which is not pinned in this home"
        case .badSignature(let id):
            return "the signature by \(id) does not match the file's bytes: the file was altered or corrupted"
        case .keyExpired(let f):
            return "signed by key \(f), which has expired"
        case .keyRevoked(let f):
            return "signed by key \(f), which has been revoked"
        case let .weakKey(f, why):
            return "signed by key \(f), which is too weak: \(why)"
        case let .signatureFromFuture(f, created):
            return
                "the signature by \(f) is dated \(rfc3339(Date(timeIntervalSince1970: TimeInterval(created)))), more "
                + "than 24 hours after this machine's clock"
        case .signatureExpired(let f):
            return "the signature by \(f) has expired"
        case .weakDigest(let algo):
            return "the signature uses the \(algo) digest; SHA-256 or stronger is required"
        case .wrongKeyUsage(let f):
            return "key \(f) is not allowed to sign"
        case let .digestTooShort(f, digest, needed):
            return "the signature by \(f) uses \(digest), shorter than the \(needed)-bit hash this key needs"
        case let .keyNewerThanSignature(f, keyCreated, signed):
            return
                "the signature by \(f) is dated \(rfc3339(Date(timeIntervalSince1970: TimeInterval(signed)))), before "
                + "the key was made (\(rfc3339(Date(timeIntervalSince1970: TimeInterval(keyCreated)))))"
        case let .wrongSigner(f, pinned, claimed, what):
            return "\(what): signed by \(f), which is pinned for \(pinned), not \(claimed)"
        case .gpg(let m):
            return "gpg: \(m)"
        case let .keyFile(path, reason):
            return "\(path): \(reason)"
        case let .alreadyPinned(f, role):
            return "key \(f) is already pinned for \(role)"
        case let .signingKey(f, reason):
            return "signing key \(f): \(reason)"
        case let .retiredKey(f, role):
            return
                "signed by key \(f), which was pinned for \(role) but has been retired (fedbatch keys remove); only "
                + "bundles a generation already included stay verifiable"
        case let .keyOutOfRange(f, n, from, until):
            let range = until.map { "generations \(from) to \($0)" } ?? "generations from \(from)"
            return
                "generation \(n) is signed by collector key \(f), which signs only \(range): the collector rotated "
                + "its key"
        }
    }
}

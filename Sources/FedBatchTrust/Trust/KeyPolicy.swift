import FedBatchFormats
import FedBatchNative
import Foundation

/// Which public keys fedbatch pins and accepts signatures from.
///
/// Accepted: EdDSA (Ed25519, Ed448), ECDSA on NIST P-256, P-384, P-521 and
/// the Brainpool curves of at least 256 bits, and RSA of at least 2048
/// bits. Refused: DSA (gpg's DSA keys are 1024 to 3072 bits and DSA is being
/// retired by NIST FIPS 186-5), RSA below 2048 bits (NIST SP 800-131A), and
/// anything else. A key must also be able to sign. The policy applies when
/// a key is pinned and again to the key that made each signature, so a key
/// pinned by an older fedbatch is held to it too.
public enum KeyPolicy {
    public static let minimumRSABits = 2048
    static let curves: Set<String> = [
        "ed25519", "ed448", "nistp256", "nistp384", "nistp521", "brainpoolP256r1", "brainpoolP384r1", "brainpoolP512r1",
    ]

    /// Why this (sub)key is too weak, or nil when it is acceptable.
    public static func weakness(of key: GPGSubkey) -> String? {
        switch key.algorithm {
        case 1, 3:
            return key.bits >= minimumRSABits ? nil : "RSA-\(key.bits) is below the minimum of RSA-\(minimumRSABits)"
        case 19, 22:
            return curves.contains(key.curve)
                ? nil : "curve \(key.curve.isEmpty ? "unknown" : key.curve) is not accepted"
        case 17:
            return "DSA-\(key.bits) keys are not accepted"
        default:
            return "public-key algorithm \(key.algorithm) is not accepted"
        }
    }

    /// Refuses a key to be pinned: weak, or unable to sign.
    package static func check(_ key: GPGKey, path: String) throws {
        guard key.canSign, key.subkeys.contains(where: \.canSign) else {
            throw TrustError.keyFile(
                path: path,
                reason: "key \(key.fingerprint) cannot sign (no signing key or subkey); fedbatch pins signing keys only"
            )
        }
        if let why = weakness(of: key.primary) {
            throw TrustError.keyFile(path: path, reason: "key \(key.fingerprint): \(why); \(accepted)")
        }
        for sub in key.subkeys.dropFirst() where sub.canSign && !sub.revoked && !sub.expired {
            if let why = weakness(of: sub) {
                throw TrustError.keyFile(path: path, reason: "signing subkey \(sub.fingerprint): \(why); \(accepted)")
            }
        }
    }

    static let accepted = "use Ed25519 (gpg --quick-gen-key NAME ed25519 sign), ECDSA P-256 or stronger, or RSA-3072"
}

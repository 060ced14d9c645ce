/// How a home checks OpenPGP signatures (`[trust] verify`).
public enum SignatureVerification: String, Sendable, CaseIterable {
    /// In-process, with libcrypto, against the key packets fedbatch read
    /// from the pinned files; gpg still lists the keys and says which are
    /// valid, once per command. The default: a merge of 1000 bundles
    /// started a gpg process for each.
    case builtin
    /// One gpg process per signature, through gpgme, as fedbatch did
    /// before; for a site that prefers gpg's own code to judge signatures.
    case gpg
}

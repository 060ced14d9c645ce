import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct KeysAdd: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Pin a site's public key, or renew a pinned key.",
        discussion: """
            The file must hold exactly one public key that can sign: Ed25519, \
            ECDSA on P-256 or stronger, or RSA of 2048 bits or more (DSA and \
            shorter RSA keys are refused). Secret keys, revoked or expired keys, \
            and a key already pinned for another role are refused. Adding the \
            same key again (same fingerprint, for example with its expiry \
            extended in gpg) replaces the pinned copy; a different key for a site \
            that has one must be removed first. --collector renews the pinned \
            collector key, on a collector or a site home. --witness pins a \
            witness's key, whose cosignatures then count on this home (see \
            fedbatch-witness(1) and [trust] min_witnesses). Takes the home's lock: \
            exits 4 while a merge runs.
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Keys
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(help: "The site id the key speaks for (collector homes).")
    var site: String?

    @Option(
        help: ArgumentHelp(
            "At a root collector: the regional collector (in merge.regions) that serves this site. The root then "
                + "takes the site's updates only inside that region's partial aggregates.",
            valueName: "region-id"))
    var region: String?

    @Option(help: "The witness id the key speaks for: its cosignatures count here.")
    var witness: String?

    @Option(help: "The signer id the key speaks for ([trust] signers): its signatures count toward the threshold.")
    var signer: String?

    @Flag(help: "Renew the collector's pinned key (the same key, re-exported after a change in gpg).")
    var collector = false

    @Argument(help: ArgumentHelp("The armored public key (gpg --armor --export FPR).", valueName: "file.asc"))
    var file: String

    func validate() throws {
        if [site != nil, collector, witness != nil, signer != nil].filter({ $0 }).count != 1 {
            throw ValidationError("give exactly one of --site ID, --witness ID, --signer ID and --collector")
        }
        if region != nil && site == nil { throw ValidationError("--region goes with --site") }
    }

    func run(_ context: CommandContext) throws -> KeyChange {
        let home = try context.home()
        if let region, let site {
            let (key, updated) = try home.pinSiteKey(site: site, keyFile: file, servedBy: region)
            return KeyChange(action: updated ? "renewed" : "pinned", key: KeyInfo(key), region: region)
        }
        let role: Role =
            site.map { .site($0) } ?? witness.map { .witness($0) } ?? signer.map { .signer($0) } ?? .collector
        let (key, updated) = try home.pinKey(for: role, keyFile: file)
        return KeyChange(action: updated ? "renewed" : "pinned", key: KeyInfo(key))
    }
}

/// What keys add and keys remove did, to which key.
struct KeyChange: CommandOutput {
    let action: String
    let key: KeyInfo
    /// keys add --region: the region that serves the site.
    @OrNull var region: String? = nil

    func render(into text: inout TextRendering) {
        let whom = key.site.map { "\(key.role) \($0)" } ?? "the collector"
        text.out = [
            "\(action) \(key.fingerprint) for \(whom) (\(key.userId))"
                + (region.map { ", served by region \($0)" } ?? "")
        ]
    }
}

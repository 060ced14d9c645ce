import ArgumentParser
import FedBatch
import Foundation

struct KeysAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Pin a site's public key.",
        discussion: """
        The file must hold exactly one public key. Secret keys, revoked or \
        expired keys, a key already pinned for another site or the collector, \
        and a site that already has a key are refused. From then on the \
        collector accepts bundles from that site only when this key signed them.
        """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Keys
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(help: "The site id the key speaks for.")
    var site: String

    @Argument(help: ArgumentHelp("The site's armored public key (gpg --armor --export FPR).", valueName: "file.asc"))
    var file: String

    func run() throws {
        let home = try Home.open(global.resolvedHome, as: .collector)
        let key = try home.pinSiteKey(site: site, keyFile: file)
        let console = Console(global)
        if global.json {
            try console.emit(KeyRow(key))
        } else {
            console.say("pinned \(key.fingerprint) for site \(site) (\(key.userID))")
        }
    }
}

/// One row of `keys list`, also the JSON shape.
struct KeyRow: Encodable {
    let role: String
    let site: String?
    let fingerprint: String
    let userID: String
    let expires: String?

    init(_ k: PinnedKey) {
        switch k.role {
        case .collector: role = "collector"; site = nil
        case .site(let s): role = "site"; site = s
        }
        fingerprint = k.fingerprint
        userID = k.userID
        expires = k.expires.map { rfc3339(Date(timeIntervalSince1970: TimeInterval($0))) }
    }
}

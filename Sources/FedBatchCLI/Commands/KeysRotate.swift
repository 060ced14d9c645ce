import ArgumentParser
import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

struct KeysRotate: Subcommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate",
        abstract: "Collector: move to a new signing key, announced in the next generation.",
        discussion: """
            Both keys sign a rotation statement (old key, new key, the first \
            generation the new key signs). It waits in keys/rotation-pending/ \
            until the next merge or revert writes a generation: that generation \
            carries it and is the last one the old key signs, so bundles in \
            transit merge as usual. Then fedbatch.toml's key becomes the new key. \
            Sites verify that generation with the key they pin and adopt the new \
            key from it; from then on a generation signed by the old key is \
            refused. The old key stays valid for the generations it signed, so \
            the chain verifies back to generation 0. Run it again to replace a \
            rotation still pending. Both secret keys must be in the GnuPG home \
            (--passphrase-file for the current key, --new-passphrase-file for \
            the new one).
            """
    )

    @OptionGroup(title: "Global options") var options: GlobalOptions
    @ParentCommand var group: Keys
    var global: GlobalOptions { options.merged(over: group.root.global) }

    @Option(name: .customLong("new-key"), help: ArgumentHelp("Fingerprint of the new signing key.", valueName: "fpr"))
    var newKey: String

    @Option(
        name: .customLong("new-passphrase-file"),
        help: ArgumentHelp("The new key's passphrase, if it has one.", valueName: "file"))
    var newPassphraseFile: String?

    func run(_ context: CommandContext) throws -> KeyRotationOutput {
        let home = try context.home(as: .collector)
        let collector = try Collector(home: home, signer: try context.signer(fingerprint: home.config.key, for: home))
        let new = try PayloadSigner(
            gnupgHome: collector.signer.gnupgHome, fingerprint: newKey, passphraseFile: newPassphraseFile)
        let r = try collector.prepareKeyRotation(to: new)
        return KeyRotationOutput(
            oldKey: r.statement.oldKey, newKey: r.statement.newKey, carriedBy: r.statement.fromGeneration - 1,
            fromGeneration: r.statement.fromGeneration)
    }
}

struct KeyRotationOutput: CommandOutput {
    let oldKey: String
    let newKey: String
    let carriedBy: Int
    let fromGeneration: Int

    func render(into text: inout TextRendering) {
        text.out = [
            "rotation to \(newKey) prepared: generation \(carriedBy), the next one written, carries it signed "
                + "by \(oldKey); from generation \(fromGeneration) on, \(newKey) signs"
        ]
    }
}

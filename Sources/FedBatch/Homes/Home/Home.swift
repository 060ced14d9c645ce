import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// An opened fedbatch home: its layout and its config.
public struct Home: Sendable {
    public let layout: HomeLayout
    public let config: HomeConfig

    /// Opens the home at `root`; it must hold a valid fedbatch.toml.
    public static func open(_ root: String) throws -> Home {
        let layout = HomeLayout(root: root)
        guard FileManager.default.fileExists(atPath: layout.config) else { throw HomeError.notAHome(root) }
        let data = try readFile(layout.config, cap: 1 << 20)
        return Home(
            layout: layout, config: try HomeConfig.parse(String(decoding: data, as: UTF8.self), path: layout.config))
    }

    /// Opens the home and checks its role.
    public static func open(_ root: String, as role: HomeRole) throws -> Home {
        let home = try open(root)
        guard home.config.role == role else {
            throw HomeError.wrongRole(path: root, expected: role, actual: home.config.role)
        }
        return home
    }

    /// Checks that this home plays `role` and that `signer` holds the key
    /// its fedbatch.toml names, before any work is done.
    func requireRole(_ role: HomeRole, signer: PayloadSigner) throws {
        guard config.role == role else {
            throw HomeError.wrongRole(path: layout.root, expected: role, actual: config.role)
        }
        guard signer.fingerprint == config.key else {
            throw TrustError.signingKey(
                fingerprint: signer.fingerprint,
                reason: "this \(role.rawValue) signs with \(config.key) (fedbatch.toml)")
        }
    }

    /// A verifier over this home's pinned keys.
    public func verifier() throws -> Verifier {
        try Verifier(keysDirectory: layout.keys, verification: config.trust.verify)
    }

    /// Site and model ids end up in file names and manifests: plain words only.
    public static func checkName(_ value: String, what: String) throws {
        guard ContainerPath.isIdentifier(value) else { throw HomeError.invalidName(what: what, value: value) }
    }

    // MARK: creating homes

    static func prepare(_ root: String, directories: [String]) throws -> HomeLayout {
        let layout = HomeLayout(root: root)
        if FileManager.default.fileExists(atPath: layout.config) { throw HomeError.alreadyAHome(root) }
        for d in [root] + directories {
            do {
                try FileManager.default.createDirectory(
                    atPath: d, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
            } catch {
                throw FileError(path: d, message: "cannot create directory: \(error.localizedDescription)")
            }
        }
        return layout
    }

    /// Creates a collector home with generation 0 signed by `signer`.
    /// fedbatch.toml is written last: until it exists the directory is not a
    /// home, so an interrupted init can simply be run again.
    public static func createCollector(
        at root: String, modelID: String, arch spec: String, signer: PayloadSigner,
        weights: [(name: String, tensor: Tensor)]?, seed: UInt64, evalData: String? = nil,
        schema: TabularSchema? = nil, data: DataSettings = DataSettings(),
        now: Date = Date()
    ) throws -> (home: Home, generation: String, digest: Digest) {
        try Home.checkName(modelID, what: "model id")
        let arch = try ModelArchitecture(spec: spec)
        try arch.checkFitsInMemory()
        var config = HomeConfig(role: .collector, modelID: modelID, arch: arch.description, key: signer.fingerprint)
        config.eval.data = evalData
        config.data = data
        try config.validate(path: "--key")
        let layout = HomeLayout(root: root)
        if let schema, schema.inputWidth != arch.inputWidth {
            let parts =
                schema.categories == nil
                ? "\(schema.features.count) feature columns"
                : "\(schema.features.count) feature columns, \(schema.inputWidth) inputs once its categories are "
                    + "one-hot encoded"
            throw SchemaError("the schema has \(parts); the model \(arch) reads \(arch.inputWidth)")
        }
        let tensors = weights ?? arch.initialWeights(seed: seed)
        _ = try prepare(
            root,
            directories: [
                layout.keys, layout.siteKeys, layout.inbox,
                layout.accepted, layout.quarantine, layout.generations,
            ])
        try writeFileAtomically(try signer.exportPublicKey(), to: layout.collectorKey)

        var manifest = Manifest(
            kind: .generation, model: .init(id: modelID, arch: arch.description),
            created: rfc3339(now), generation: 0, metrics: [:], included: [], rejected: [])
        manifest.metrics = ["parameters": Double(arch.parameterCount)]
        let sealed = try signer.sealInParts(
            manifest: manifest,
            members: [(ContainerPath.tensors, SafetensorsWriter.encode(tensors))]
                + (schema.map { [(TabularSchema.member, $0.encoded)] } ?? []))
        let path = layout.generation(0)
        try writeFileAtomically(parts: sealed.parts, to: path)
        try writeFileAtomically(Data(config.render().utf8), to: layout.config)
        return (Home(layout: layout, config: config), path, sealed.digest)
    }

    /// The collector key a site or region home pins at init: usable, and not
    /// the home's own signing key.
    static func collectorKeyToPin(_ path: String, signer: PayloadSigner, home: String) throws -> KeyCandidate {
        let collector = try KeyCandidate.read(path: path)
        if collector.revoked || collector.expired {
            throw TrustError.keyFile(
                path: path, reason: "the collector key is \(collector.revoked ? "revoked" : "expired")")
        }
        if collector.fingerprint == signer.fingerprint {
            throw TrustError.keyFile(
                path: path,
                reason: "this is the \(home)'s own signing key; the \(home) and the collector need different keys")
        }
        return collector
    }

    /// Creates a site home that pins the collector key in `collectorKeyPath`.
    public static func createSite(
        at root: String, siteID: String, modelID: String, signer: PayloadSigner,
        collectorKeyPath: String
    ) throws -> Home {
        try Home.checkName(siteID, what: "site id")
        try Home.checkName(modelID, what: "model id")
        let collector = try collectorKeyToPin(collectorKeyPath, signer: signer, home: "site")
        let config = HomeConfig(role: .site, modelID: modelID, key: signer.fingerprint, siteID: siteID)
        let layout = try prepare(root, directories: ["\(root)/keys", "\(root)/generations", "\(root)/outbox"])
        try writeFileAtomically(collector.armored, to: layout.collectorKey)
        try writeFileAtomically(Data(config.render().utf8), to: layout.config)
        return Home(layout: layout, config: config)
    }
}

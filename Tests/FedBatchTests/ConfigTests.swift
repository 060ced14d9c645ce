import FedBatch
import FedBatchFormats
import FedBatchTrust
import Foundation
import Testing

/// fedbatch.toml as each feature reads its own table (`ConfigSection`):
/// unknown keys, wrong types and values out of range are refused with the
/// key's full name and the line that sets it; good values are taken.
@Suite("config per feature")
struct ConfigTests {
    static let head = """
        role = "collector"
        model_id = "demo"
        arch = "mlp:4-3-2"
        key = "0123456789ABCDEF0123456789ABCDEF01234567"

        """

    func refusal(_ tables: String) -> String? {
        do {
            _ = try HomeConfig.parse(Self.head + tables, path: "fedbatch.toml")
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("each table's values are read by its feature, typed and in range")
    func goodValues() throws {
        let config = try HomeConfig.parse(
            Self.head + """
                [merge]
                min_bundles = 3
                max_wait = 7200
                staleness = "hinge"
                accept_codecs = ["fp32", "int8"]
                settle_seconds = 0.5
                [eval]
                split = "train"
                [metrics]
                textfile_dir = "/var/lib/node"
                [privacy]
                noise_multiplier = 1
                clip_norm = 0.5
                expected_sites = 10
                delta = 1e-5
                max_epsilon = 8
                [remote]
                url = "s3://bucket/prefix"
                encrypt = true
                [trust]
                verify = "gpg"
                """, path: "fedbatch.toml")
        #expect(config.trust.verify == .gpg)
        #expect(try HomeConfig.parse(Self.head, path: "fedbatch.toml").trust.verify == .builtin)
        #expect(config.merge.minBundles == 3 && config.merge.maxWait == 7200 && config.merge.settleSeconds == 0.5)
        #expect(config.merge.staleness == .hinge && config.merge.acceptCodecs == ["fp32", "int8"])
        #expect(config.eval.split == .train && config.metrics.textfileDir == "/var/lib/node")
        #expect(config.privacy?.expectedSites == 10 && config.privacy?.noiseMultiplier == 1)
        #expect(config.remote.url == "s3://bucket/prefix" && config.remote.encrypt)
    }

    @Test(
        "a wrong key, type or value names the setting and its line",
        arguments: [
            ("[merge]\nmin_bundle = 2", "line 6: merge.min_bundle is not a setting; did you mean merge.min_bundles?"),
            ("[merge]\nmax_wait = \"soon\"", "line 6: merge.max_wait must be a number of seconds, 0 or more"),
            ("[merge]\nsettle_seconds = inf", "line 6: merge.settle_seconds must be a number of seconds from 0 to"),
            ("[merge]\n\nstaleness = \"linear\"", "line 7: merge.staleness must be \"constant\", \"polynomial\""),
            ("[merge]\naccept_codecs = []", "line 6: merge.accept_codecs must be a non-empty list of codec names"),
            ("[merge]\naccept_codecs = [\"fp32\", \"gzip\"]", "line 6: merge.accept_codecs: each must be one of"),
            ("[eval]\nsplit = \"validation\"", "line 6: eval.split must be \"train\" or \"test\""),
            ("[metrics]\ntextfile_dir = 3", "line 6: metrics.textfile_dir must be a non-empty path"),
            ("[gnupg]\nhome = \"\"", "line 6: gnupg.home must be a non-empty path"),
            ("[remote]\nencrypt = \"yes\"", "line 6: remote.encrypt must be true or false"),
            ("[remote]\nurl = \"http://x\"", "line 6: remote.url must be s3://BUCKET/PREFIX or a directory path"),
            ("[privacy]\nnoise_multiplier = 1", "privacy.clip_norm is missing: [privacy] needs"),
            ("merge = 3", "[merge] must be a table"),
            ("[trust]\nverify = \"openssl\"", "line 6: trust.verify must be \"builtin\" or \"gpg\""),
        ])
    func refusals(table: String, expected: String) {
        let message = refusal(table)
        #expect(message?.contains(expected) == true, "\(message ?? "accepted")")
    }
}

import FedBatchFormats
import FedBatchNative
import FedBatchTrust
import Foundation
import TOMLKit

/// The `[remote] url` of a home: where `fedbatch push`, `pull` and
/// `publish` transfer files (fedbatch-push(1)). A relative directory path
/// is taken from the home.
public struct RemoteSettings: Sendable, Equatable {
    public var url: String?
    /// S3: path-style requests (ENDPOINT/BUCKET/KEY) or virtual-hosted
    /// ones; unset, path-style exactly when AWS_ENDPOINT_URL is set.
    public var pathStyle: Bool?
    /// Site: encrypt each bundle to the collector's key before it leaves
    /// (see BundleEncryption).
    public var encrypt = false
    /// Region: the root collector's remote, where partial aggregates go and
    /// generations come from (`url` is the region's own, for its sites).
    public var upstream: String?
    /// Collector: `publish` also uploads the bundles each generation
    /// includes, so that witnesses can re-derive it (fedbatch-witness(1)).
    public var publishBundles = false
    /// How many objects `pull`, `push` and `publish` move at once, each over
    /// its own kept-open connection.
    public var parallel = 4
    public init() {}

    static let keys: Set<String> = ["url", "path_style", "encrypt", "upstream", "publish_bundles", "parallel"]

    package static func parse(_ value: TOMLValueConvertible, path: String, text: String? = nil) throws -> RemoteSettings
    {
        let s = try ConfigSection(value, name: "remote", allowed: keys, path: path, text: text)
        var r = RemoteSettings()
        for key in ["url", "upstream"] {
            let location = try s.string(key, "s3://BUCKET/PREFIX or a directory path") {
                !$0.isEmpty && ($0.hasPrefix("s3://") || !$0.contains("://"))
            }
            if key == "url" { r.url = location } else { r.upstream = location }
        }
        r.pathStyle = try s.bool("path_style")
        r.encrypt = try s.bool("encrypt") ?? r.encrypt
        r.publishBundles = try s.bool("publish_bundles") ?? r.publishBundles
        r.parallel = try s.int("parallel", "an integer from 1 to 32", where: { (1...32).contains($0) }) ?? r.parallel
        return r
    }

    /// The `[remote]` table as fedbatch.toml shows it; `upstream` only on a
    /// regional collector's home.
    package func render(withUpstream: Bool) -> [String] {
        [
            "",
            "# Where fedbatch push, pull and publish transfer files: s3://BUCKET/PREFIX or a directory "
                + "(fedbatch-push(1)).",
            "[remote]",
            url.map { "url = \(StrictJSON.quote($0))" } ?? "# url = \"/media/usb/fedbatch\"",
        ]
            + (withUpstream
                ? [
                    "# The root collector's remote: partial aggregates go up to it, generations come down from it.",
                    upstream.map { "upstream = \(StrictJSON.quote($0))" } ?? "# upstream = \"s3://fl-root/fmnist\"",
                ] : []) + [
                "# S3 credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, "
                    + "AWS_ENDPOINT_URL.",
                pathStyle.map { "path_style = \($0)" } ?? "# path_style = true",
                "# Site: encrypt each bundle to the collector key's encryption subkey before it leaves "
                    + "(fedbatch-push(1)).",
                encrypt ? "encrypt = true" : "# encrypt = true",
                "# Collector: publish also uploads the bundles each generation includes, for witnesses "
                    + "(fedbatch-witness(1)).",
                publishBundles ? "publish_bundles = true" : "# publish_bundles = true",
                "# How many objects push, pull and publish move at once (1 to 32).",
                "parallel = \(parallel)",
            ]
    }
}

import FedBatchFormats
import FedBatchNative
import FedBatchTrust
import Foundation

#if canImport(FoundationXML)
import FoundationXML
#endif

/// A remote in any S3-compatible object store: `s3://BUCKET/PREFIX`.
///
/// libcurl signs every request with AWS Signature Version 4, from the
/// standard environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
/// AWS_SESSION_TOKEN (optional), AWS_REGION (or AWS_DEFAULT_REGION;
/// us-east-1) and AWS_ENDPOINT_URL (another store than AWS: MinIO, Ceph,
/// moto). Requests go path-style (ENDPOINT/BUCKET/KEY) when an endpoint is
/// given and virtual-hosted (BUCKET.s3.REGION.amazonaws.com) otherwise;
/// `[remote] path_style` decides instead when set.
///
/// Integrity: every upload carries its SHA-256 twice, as
/// x-amz-checksum-sha256, which the store checks on arrival, and as the
/// metadata x-amz-meta-fedbatch-sha256, which a download is checked
/// against. Files above `multipartThreshold` go up in parts, each with its
/// own checksum. Listing follows continuation tokens past 1000 keys.
/// Failed requests (no answer, a timeout, a 5xx) are retried with
/// exponential backoff; a 403 is not, and says which credentials it used.
///
/// Safe to use from several threads at once (`[remote] parallel`): each
/// request borrows an idle HTTP client, which keeps its connections open
/// for the next request, and gives it back.
public final class S3Remote: RemoteStore, @unchecked Sendable {
    public let url: String
    let bucket: String
    /// The key prefix, "" or ending in "/".
    let prefix: String
    let endpoint: String
    let pathStyle: Bool
    private let credentials: AWSCredentials
    /// Idle clients, each with its open connections; one per thread that
    /// has sent a request at the same time as the others.
    private var idle: [HTTPClient] = []
    private let poolLock = NSLock()
    private var stallSeconds: Int?
    /// Files above this size are uploaded in parts of `partSize`.
    public var multipartThreshold: Int64 = 64 << 20
    public var partSize: Int64 = 64 << 20
    public var attempts = 5
    /// The first retry's wait, doubled each time (capped at 8 s).
    public var backoff = 0.25

    public init(url: String, environment env: [String: String], pathStyle: Bool? = nil) throws {
        self.url = url
        let rest = url.dropFirst("s3://".count)
        let parts = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let bucket = String(parts[0])
        guard !bucket.isEmpty, bucket.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }) else {
            throw RemoteError.unsupportedURL(url)
        }
        self.bucket = bucket
        let p = parts.count > 1 ? parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "/")) : ""
        prefix = p.isEmpty ? "" : p + "/"
        guard let key = env["AWS_ACCESS_KEY_ID"], !key.isEmpty, let secret = env["AWS_SECRET_ACCESS_KEY"],
            !secret.isEmpty
        else {
            throw RemoteError.denied(url: url, reason: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set")
        }
        let region = env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"] ?? "us-east-1"
        let custom = env["AWS_ENDPOINT_URL_S3"] ?? env["AWS_ENDPOINT_URL"]
        endpoint = (custom ?? "https://s3.\(region).amazonaws.com").trimmingCharacters(
            in: CharacterSet(charactersIn: "/"))
        guard endpoint.hasPrefix("https://") || endpoint.hasPrefix("http://") else {
            throw RemoteError.failed(url: url, reason: "AWS_ENDPOINT_URL must be an http:// or https:// URL")
        }
        self.pathStyle = pathStyle ?? (custom != nil)
        credentials = AWSCredentials(
            accessKeyID: key, secretAccessKey: secret, sessionToken: env["AWS_SESSION_TOKEN"], region: region)
        // The tests make multipart uploads of small files, and fail fast.
        if let bytes = testSetting("S3_PART_BYTES").flatMap(Int64.init) { multipartThreshold = bytes; partSize = bytes }
        if let n = testSetting("S3_ATTEMPTS").flatMap(Int.init) { attempts = n }
        if let n = testSetting("S3_STALL_SECONDS").flatMap(Int.init) { stallSeconds = n }
    }

    /// An idle client, or a new one.
    private func borrowClient() -> HTTPClient {
        poolLock.lock()
        defer { poolLock.unlock() }
        if let c = idle.popLast() { return c }
        let c = HTTPClient(credentials: credentials)
        if let stallSeconds { c.stallSeconds = stallSeconds }
        return c
    }

    private func giveBack(_ c: HTTPClient) {
        poolLock.lock()
        idle.append(c)
        poolLock.unlock()
    }

    /// An S3 error answer's code and message, for an error message.
    static func errorText(_ body: Data) -> String {
        "\(XMLField.first("Code", in: body) ?? "") \(XMLField.first("Message", in: body) ?? "")"
    }

    // MARK: RemoteStore

    /// At most this many keys are listed (a bucket anyone can write to
    /// could hold millions of junk keys), and this many pages read.
    public var maxListedKeys = 1_000_000
    public var maxListingPages = 2_000

    public func list(prefix sub: String) throws -> [RemoteObject] {
        var out: [RemoteObject] = []
        var token: String?
        var seen: Set<String> = []
        var pages = 0
        repeat {
            // encoding-type=url: a key may hold characters XML 1.0 cannot
            // carry (a \x01 written by any bucket writer); URL-encoded, the
            // listing stays valid XML and the key is decoded here.
            var query = [("encoding-type", "url"), ("list-type", "2"), ("prefix", prefix + sub)]
            if let token { query.append(("continuation-token", token)) }
            let what = "list \(sub) (page \(pages + 1))"
            let r: HTTPResponse
            do {
                r = try send(
                    HTTPRequest(method: "GET", url: objectURL(nil, query: query)), sink: { .memory(limit: 16 << 20) },
                    what: what)
            } catch let e as HTTPTransportError where e.tooLarge {
                throw RemoteError.failed(
                    url: url,
                    reason:
                        "\(what): the server's answer is above 16 MiB, which no S3 listing page of 1000 keys reaches")
            }
            let page: ListingParser
            do { page = try ListingParser.parse(r.body) } catch {
                throw RemoteError.failed(url: url, reason: "\(what): \(error)")
            }
            pages += 1
            for o in page.objects {
                guard let key = o.key.removingPercentEncoding, key.hasPrefix(prefix) else { continue }
                out.append(RemoteObject(key: String(key.dropFirst(prefix.count)), size: o.size))
            }
            token = page.truncated ? page.nextToken : nil
            if page.truncated, token == nil {
                throw RemoteError.failed(url: url, reason: "\(what): a truncated listing without a continuation token")
            }
            // A server that hands back a token it gave before would list forever.
            if let token, !seen.insert(token).inserted {
                throw RemoteError.failed(
                    url: url, reason: "\(what): the server repeated a continuation token; the listing would never end")
            }
            if out.count > maxListedKeys || pages >= maxListingPages && token != nil {
                throw RemoteError.failed(
                    url: url,
                    reason:
                        "\(what): more than \(min(out.count, maxListedKeys)) keys under \(prefix + sub) in \(pages) "
                        + "pages; clean the bucket (keys fedbatch did not write stay there) or raise the limit"
                )
            }
        } while token != nil
        return out.sorted { $0.key < $1.key }
    }

    public func put(file path: String, key: String) throws {
        let file = try OpenFile(path: path)
        let whole = try Self.sha256(file, offset: 0, length: file.size)
        if file.size <= multipartThreshold {
            _ = try send(
                HTTPRequest(
                    method: "PUT", url: objectURL(key),
                    headers: Self.checksumHeaders(whole) + [("x-amz-meta-fedbatch-sha256", whole.hex)],
                    body: .file(file, offset: 0, length: file.size)), sink: { .memory(limit: 1 << 20) },
                what: "upload \(key)")
            return
        }
        let started = try send(
            HTTPRequest(
                method: "POST", url: objectURL(key, query: [("uploads", "")]),
                headers: [("x-amz-meta-fedbatch-sha256", whole.hex), ("x-amz-checksum-algorithm", "SHA256")],
                body: .data(Data())),
            sink: { .memory(limit: 1 << 20) }, what: "start uploading \(key)")
        guard let uploadID = XMLField.first("UploadId", in: started.body) else {
            throw RemoteError.failed(url: url, reason: "no UploadId for \(key)")
        }
        do {
            var parts: [(number: Int, etag: String, checksum: String)] = []
            var offset: Int64 = 0
            while offset < file.size {
                let length = min(partSize, file.size - offset)
                let digest = try Self.sha256(file, offset: offset, length: length)
                let number = parts.count + 1
                let r = try send(
                    HTTPRequest(
                        method: "PUT",
                        url: objectURL(key, query: [("partNumber", String(number)), ("uploadId", uploadID)]),
                        headers: Self.checksumHeaders(digest), body: .file(file, offset: offset, length: length)),
                    sink: { .memory(limit: 1 << 20) }, what: "upload part \(number) of \(key)")
                guard let etag = r.headers["etag"] else {
                    throw RemoteError.failed(url: url, reason: "no ETag for part \(number) of \(key)")
                }
                parts.append((number, etag, Data(digest.bytes).base64EncodedString()))
                offset += length
            }
            let body =
                "<CompleteMultipartUpload>"
                + parts.map {
                    "<Part><PartNumber>\($0.number)</PartNumber><ETag>\(XMLField.escape($0.etag))</ETag>"
                        + "<ChecksumSHA256>\($0.checksum)</ChecksumSHA256></Part>"
                }.joined() + "</CompleteMultipartUpload>"
            let data = Data(body.utf8)
            let done = try send(
                HTTPRequest(
                    method: "POST", url: objectURL(key, query: [("uploadId", uploadID)]),
                    headers: [("Content-Type", "application/xml")], body: .data(data)),
                sink: { .memory(limit: 1 << 20) }, what: "finish uploading \(key)")
            // S3 can answer 200 with an error in the body.
            if let code = XMLField.first("Code", in: done.body) {
                throw RemoteError.failed(url: url, reason: "completing \(key): \(code)")
            }
        } catch {
            // An abandoned upload's parts would cost storage until a bucket
            // lifecycle rule removes them.
            _ = try? send(
                HTTPRequest(method: "DELETE", url: objectURL(key, query: [("uploadId", uploadID)])),
                sink: { .memory(limit: 1 << 20) }, what: "abort \(key)")
            throw error
        }
    }

    public func get(key: String, into pending: PendingFile, cap: Int64) throws {
        let r: HTTPResponse
        do {
            r = try send(
                HTTPRequest(method: "GET", url: objectURL(key), headers: [("x-amz-checksum-mode", "ENABLED")]),
                sink: {
                    try? pending.reset(); return .file(pending, cap: cap)
                }, what: "download \(key)")
        } catch let e as HTTPTransportError where e.tooLarge {
            throw RemoteError.tooLarge(key: key, size: -1, cap: cap)
        }
        if let length = r.headers["content-length"].flatMap(Int64.init), length != pending.size {
            throw RemoteError.integrity(key: key, reason: "\(pending.size) bytes arrived of \(length)")
        }
        // Objects fedbatch uploaded name their SHA-256; a single-part upload
        // also has the store's own checksum.
        if let want = r.headers["x-amz-meta-fedbatch-sha256"], want != pending.digest.hex {
            throw RemoteError.integrity(
                key: key, reason: "its SHA-256 is \(pending.digest.hex), the uploader recorded \(want)")
        }
        if let want = r.headers["x-amz-checksum-sha256"], !want.contains("-"),
            want != Data(pending.digest.bytes).base64EncodedString()
        {
            throw RemoteError.integrity(key: key, reason: "its SHA-256 does not match the store's checksum")
        }
    }

    public func delete(key: String) throws {
        _ = try send(
            HTTPRequest(method: "DELETE", url: objectURL(key)), sink: { .memory(limit: 1 << 20) },
            what: "remove \(key)", missingIsFine: true)
    }

    // MARK: requests

    private static func checksumHeaders(_ d: Digest) -> [(String, String)] {
        [("x-amz-content-sha256", d.hex), ("x-amz-checksum-sha256", Data(d.bytes).base64EncodedString())]
    }

    private static func sha256(_ file: OpenFile, offset: Int64, length: Int64) throws -> Digest {
        let h = SHA2Hasher()
        try h.update(file: file, from: offset, count: length)
        return h.finalize()
    }

    /// RFC 3986 unreserved characters pass; everything else is escaped, as
    /// SigV4's canonical form wants.
    static func encode(_ s: String, keepSlash: Bool) -> String {
        var allowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        if keepSlash { allowed.insert("/") }
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    private func objectURL(_ key: String?, query: [(String, String)] = []) -> String {
        let path = key.map { "/" + Self.encode(prefix + $0, keepSlash: true) } ?? "/"
        let base: String
        if pathStyle {
            base = "\(endpoint)/\(bucket)\(path)"
        } else {
            let scheme = endpoint.hasPrefix("https://") ? "https://" : "http://"
            base = "\(scheme)\(bucket).\(endpoint.dropFirst(scheme.count))\(path)"
        }
        guard !query.isEmpty else { return base }
        // Sorted, as the canonical request lists them; a flag such as
        // `uploads` is written `uploads=`, as SigV4 canonicalises it.
        return base + "?"
            + query.sorted { $0.0 < $1.0 }.map {
                "\(Self.encode($0.0, keepSlash: false))=\(Self.encode($0.1, keepSlash: false))"
            }.joined(separator: "&")
    }

    /// Sends with retries: no answer, a timeout or a 5xx is retried after
    /// 0.25, 0.5, 1, 2 s...; other answers are final. `sink` is called
    /// before each attempt, so a retried download starts from scratch.
    private func send(
        _ request: HTTPRequest, sink: () -> HTTPSink, what: String, missingIsFine: Bool = false
    ) throws -> HTTPResponse {
        // S3 wants the payload's SHA-256 in every signed request, and
        // libcurl signs the value given here.
        var request = request
        if !request.headers.contains(where: { $0.0 == "x-amz-content-sha256" }) {
            switch request.body {
            case .none: request.headers.append(("x-amz-content-sha256", Digest.of(Data()).hex))
            case .data(let d): request.headers.append(("x-amz-content-sha256", Digest.of(d).hex))
            case .file: preconditionFailure("a file upload names its own SHA-256")
            }
        }
        var last = ""
        let client = borrowClient()
        defer { giveBack(client) }
        for attempt in 0..<max(1, attempts) {
            if attempt > 0 { Thread.sleep(forTimeInterval: min(8, backoff * Double(1 << (attempt - 1)))) }
            let r: HTTPResponse
            do {
                r = try client.perform(request, into: sink())
            } catch let e as HTTPTransportError {
                if e.tooLarge { throw e }
                last = e.message
                continue
            }
            switch r.status {
            case 200..<300: return r
            case 404 where missingIsFine: return r
            case 500..<600:
                last = "HTTP \(r.status) \(XMLField.first("Code", in: r.body) ?? "")"
                continue
            case 401, 403:
                let answer = Self.errorText(r.body)
                throw RemoteError.denied(
                    url: url,
                    reason: "\(what): HTTP \(r.status) \(answer)"
                )
            default:
                let answer = Self.errorText(r.body)
                throw RemoteError.failed(
                    url: url,
                    reason: "\(what): HTTP \(r.status) \(answer)"
                )
            }
        }
        throw RemoteError.unreachable(url: url, reason: "\(what): \(last) (after \(attempts) attempts)")
    }
}

/// A ListObjectsV2 page.
private final class ListingParser: NSObject, XMLParserDelegate {
    var objects: [(key: String, size: Int64)] = []
    var truncated = false
    var nextToken: String?
    private var text = ""
    private var key: String?
    private var size: Int64?

    static func parse(_ data: Data) throws -> ListingParser {
        let p = ListingParser()
        let parser = XMLParser(data: data)
        parser.delegate = p
        guard parser.parse() else { throw RemoteError.failed(url: "s3", reason: "the listing is not valid XML") }
        return p
    }

    func parser(
        _ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        text = ""
        if name == "Contents" { key = nil; size = nil }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        switch name {
        case "Key": key = text
        case "Size": size = Int64(text)
        case "Contents": if let key, let size { objects.append((key, size)) }
        case "IsTruncated": truncated = text == "true"
        case "NextContinuationToken": nextToken = text
        default: break
        }
    }
}

/// The text of the first element of a name in a small XML answer.
enum XMLField {
    static func first(_ name: String, in data: Data) -> String? {
        final class Finder: NSObject, XMLParserDelegate {
            let name: String
            var value: String?
            var text: String?
            init(_ name: String) { self.name = name }
            func parser(
                _ parser: XMLParser, didStartElement e: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]
            ) {
                if e == name, value == nil { text = "" }
            }
            func parser(_ parser: XMLParser, foundCharacters string: String) { text? += string }
            func parser(_ parser: XMLParser, didEndElement e: String, namespaceURI: String?, qualifiedName: String?) {
                if e == name, value == nil, let t = text { value = t; text = nil }
            }
        }
        guard !data.isEmpty else { return nil }
        let f = Finder(name)
        let parser = XMLParser(data: data)
        parser.delegate = f
        _ = parser.parse()
        return f.value
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(
            of: ">", with: "&gt;"
        )
        .replacingOccurrences(of: "\"", with: "&quot;")
    }
}

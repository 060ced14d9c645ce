internal import CCurl
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// Every call into libcurl lives in this file: one HTTP request at a time
// per client, signed with AWS Signature Version 4 by libcurl itself when
// asked. A client keeps its easy handle, and with it libcurl's cache of
// open connections: the next request to the same server reuses one (no new
// TCP or TLS handshake). Parallel transfers use one client per thread.

/// One HTTP request.
public struct HTTPRequest {
    public enum Body {
        case none
        case data(Data)
        /// `length` bytes of an open file from `offset` (a multipart part).
        case file(OpenFile, offset: Int64, length: Int64)
    }

    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: Body

    public init(method: String, url: String, headers: [(String, String)] = [], body: Body = .none) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

/// Where a response body goes: memory (listings, errors), or a file being
/// downloaded, with a cap on its size either way.
public enum HTTPSink {
    case memory(limit: Int)
    case file(PendingFile, cap: Int64)
}

public struct HTTPResponse {
    public let status: Int
    /// Header names in lower case.
    public let headers: [String: String]
    /// The body, for `.memory`; empty for `.file`.
    public let body: Data
}

/// A request that never got an HTTP answer: refused, reset, timed out, or
/// a body above its cap.
public struct HTTPTransportError: Error, CustomStringConvertible {
    public let message: String
    /// The body exceeded the sink's cap (not worth retrying).
    public let tooLarge: Bool
    public var description: String { message }
}

/// AWS Signature Version 4 credentials for libcurl's signer.
public struct AWSCredentials: Sendable {
    public let accessKeyID: String
    public let secretAccessKey: String
    public let sessionToken: String?
    public let region: String
    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String?, region: String) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.region = region
    }
}

/// Performs HTTP requests with libcurl, one at a time per client, over
/// the connections it keeps open. Use each client from one thread at a
/// time.
public final class HTTPClient {
    private let credentials: AWSCredentials?
    /// A transfer that moves less than `minimumRate` bytes a second for
    /// this long is abandoned, so a dead (or dripping) server cannot hang a
    /// cron job.
    public var stallSeconds = 60
    public var minimumRate = 1024
    /// No request takes longer than this, whatever its rate: a hostile
    /// endpoint cannot hold the home's lock for ever.
    public var deadlineSeconds = 6 * 3600
    public var connectTimeoutSeconds = 10

    private static let initialized: Bool = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK }()

    /// The easy handle, kept from one request to the next for its
    /// connection cache; made at the first request.
    private var handle: UnsafeMutableRawPointer?

    public init(credentials: AWSCredentials?) {
        _ = Self.initialized
        self.credentials = credentials
    }

    deinit { if let handle { curl_easy_cleanup(handle) } }

    /// What the callbacks share with `perform`.
    private final class Transfer {
        var sink: HTTPSink
        var body = Data()
        var headers: [String: String] = [:]
        var failure: Error?
        var overCap = false
        var source: (file: OpenFile, offset: Int64, remaining: Int64)?
        var data: Data?
        var dataOffset = 0
        init(sink: HTTPSink) { self.sink = sink }
    }

    public func perform(_ request: HTTPRequest, into sink: HTTPSink) throws -> HTTPResponse {
        if handle == nil { handle = curl_easy_init() }
        guard let h = handle else {
            throw HTTPTransportError(message: "libcurl could not start a request", tooLarge: false)
        }
        // Every option back to its default (nothing of the last request's
        // leaks into this one); open connections and caches stay.
        curl_easy_reset(h)
        let transfer = Transfer(sink: sink)
        let context = Unmanaged.passUnretained(transfer).toOpaque()
        var list: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(list) }
        var headers = request.headers
        if let token = credentials?.sessionToken { headers.append(("x-amz-security-token", token)) }
        for (name, value) in headers {
            list = curl_slist_append(list, value.isEmpty ? "\(name):" : "\(name): \(value)")
        }

        _ = fb_curl_setopt_string(h, CURLOPT_URL, request.url)
        _ = fb_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        _ = fb_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT, connectTimeoutSeconds)
        _ = fb_curl_setopt_long(h, CURLOPT_LOW_SPEED_LIMIT, minimumRate)
        _ = fb_curl_setopt_long(h, CURLOPT_LOW_SPEED_TIME, stallSeconds)
        _ = fb_curl_setopt_long(h, CURLOPT_TIMEOUT, deadlineSeconds)
        // libcurl asks "Expect: 100-continue" before a large upload; a
        // server that never answers it costs this wait, not a second.
        // (Removing the header instead would break the signature: libcurl
        // signs every header it is given, even an emptied one.)
        _ = fb_curl_setopt_long(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 200)
        // Only HTTP and HTTPS, and no redirects: a remote that redirects is
        // misconfigured, and a redirect would carry the signature elsewhere.
        _ = fb_curl_setopt_string(h, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = fb_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)
        _ = fb_curl_setopt_slist(h, CURLOPT_HTTPHEADER, list)
        if let c = credentials {
            _ = fb_curl_setopt_string(h, CURLOPT_AWS_SIGV4, "aws:amz:\(c.region):s3")
            _ = fb_curl_setopt_string(h, CURLOPT_USERNAME, c.accessKeyID)
            _ = fb_curl_setopt_string(h, CURLOPT_PASSWORD, c.secretAccessKey)
        }
        _ = fb_curl_setopt_write(h) { ptr, size, count, user in
            let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            let bytes = UnsafeRawBufferPointer(start: ptr, count: n)
            switch t.sink {
            case .memory(let limit):
                guard t.body.count + n <= limit else { t.overCap = true; return 0 }
                t.body.append(contentsOf: bytes)
            case let .file(pending, cap):
                guard pending.size + Int64(n) <= cap else { t.overCap = true; return 0 }
                do { try pending.write(bytes) } catch { t.failure = error; return 0 }
            }
            return n
        }
        _ = fb_curl_setopt_pointer(h, CURLOPT_WRITEDATA, context)
        _ = fb_curl_setopt_header(h) { ptr, size, count, user in
            let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            let line = String(decoding: UnsafeRawBufferPointer(start: ptr, count: n), as: UTF8.self)
            if line.hasPrefix("HTTP/") { t.headers = [:] }  // a new response (after a 100 Continue)
            if let colon = line.firstIndex(of: ":") {
                t.headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                    in: .whitespacesAndNewlines)
            }
            return n
        }
        _ = fb_curl_setopt_pointer(h, CURLOPT_HEADERDATA, context)

        switch request.body {
        case .none:
            if request.method == "HEAD" { _ = fb_curl_setopt_long(h, CURLOPT_NOBODY, 1) }
        case .data(let d):
            transfer.data = d
            setUpload(h, length: Int64(d.count), context: context)
        case let .file(file, offset, length):
            transfer.source = (file, offset, length)
            setUpload(h, length: length, context: context)
        }
        if request.method != "GET", request.method != "HEAD" {
            _ = fb_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, request.method)
        }

        let rc = curl_easy_perform(h)
        if let failure = transfer.failure { throw failure }
        if transfer.overCap {
            throw HTTPTransportError(message: "the response is larger than the cap for it", tooLarge: true)
        }
        guard rc == CURLE_OK else {
            throw HTTPTransportError(message: String(cString: curl_easy_strerror(rc)), tooLarge: false)
        }
        var status = 0
        _ = fb_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        return HTTPResponse(status: status, headers: transfer.headers, body: transfer.body)
    }

    /// A request with a body: libcurl reads it through the read callback,
    /// from memory or positionally from the file.
    private func setUpload(_ h: UnsafeMutableRawPointer, length: Int64, context: UnsafeMutableRawPointer) {
        _ = fb_curl_setopt_long(h, CURLOPT_UPLOAD, 1)
        _ = fb_curl_setopt_offset(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(length))
        _ = fb_curl_setopt_read(h) { ptr, size, count, user in
            let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
            let room = size * count
            if let d = t.data {
                let n = min(room, d.count - t.dataOffset)
                d.withUnsafeBytes { src in
                    UnsafeMutableRawPointer(ptr!).copyMemory(from: src.baseAddress! + t.dataOffset, byteCount: n)
                }
                t.dataOffset += n
                return n
            }
            guard var s = t.source, s.remaining > 0 else { return 0 }
            let want = Int(min(Int64(room), s.remaining))
            let n = pread(s.file.fd, ptr, want, off_t(s.offset))
            if n <= 0 {
                t.failure = FileError(
                    path: s.file.displayPath, message: n < 0 ? "read failed" : "shrank while it was uploaded")
                return Int(CURL_READFUNC_ABORT)
            }
            s.offset += Int64(n)
            s.remaining -= Int64(n)
            t.source = s
            return n
        }
        _ = fb_curl_setopt_pointer(h, CURLOPT_READDATA, context)
    }
}

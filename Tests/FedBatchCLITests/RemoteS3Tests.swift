import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// A real S3 API on 127.0.0.1 (moto's server, Tests/Fixtures/s3_server.py),
/// started and stopped by each test, with SigV4 enforced.
final class S3Server: @unchecked Sendable {
    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    let endpoint: String
    let accessKey: String
    let secretKey: String
    var port: Int { Int(endpoint.split(separator: ":").last!)! }

    init() throws {
        process.executableURL = URL(fileURLWithPath: TestPaths.python)
        process.arguments = [TestPaths.fixtures + "/s3_server.py"]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let line = try Self.readLine(output.fileHandleForReading)
        guard let info = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String] else {
            throw Subprocess.Failure(description: "s3_server.py printed \(line)")
        }
        endpoint = info["endpoint"]!
        accessKey = info["access_key"]!
        secretKey = info["secret_key"]!
    }

    deinit {
        // Closing stdin stops the server; one that has not stopped within
        // ten seconds is killed.
        try? input.fileHandleForWriting.close()
        for _ in 0..<100 where process.isRunning { usleep(100_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    static func readLine(_ h: FileHandle) throws -> String {
        var bytes: [UInt8] = []
        while true {
            let d = h.readData(ofLength: 1)
            guard let b = d.first else { throw Subprocess.Failure(description: "the fixture ended early") }
            if b == 0x0A { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(b)
        }
    }

    /// Puts `count` objects under `prefix`: copies of the file `body`, or
    /// 10 bytes of junk.
    func populate(prefix: String, count: Int, body: String? = nil) throws {
        input.fileHandleForWriting.write(Data("populate \(prefix) \(count)\(body.map { " " + $0 } ?? "")\n".utf8))
        try expectOK()
    }

    /// The fixture's answer to a command: "ok", or the error it met.
    private func expectOK() throws {
        let answer = try Self.readLine(output.fileHandleForReading)
        guard answer == "ok" else { throw Subprocess.Failure(description: "s3_server.py: \(answer)") }
    }

    /// Puts one small object under any key, with the SHA-256 metadata given.
    func put(key: String, sha256: String) throws {
        input.fileHandleForWriting.write(
            Data("put \(Data(key.utf8).map { String(format: "%02x", $0) }.joined()) \(sha256)\n".utf8))
        try expectOK()
    }

    /// The environment a fedbatch command needs to reach it through `port`.
    func environment(port: Int? = nil, secret: String? = nil) -> [String: String] {
        [
            "AWS_ACCESS_KEY_ID": accessKey, "AWS_SECRET_ACCESS_KEY": secret ?? secretKey, "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:\(port ?? self.port)", "FEDBATCH_TEST_S3_ATTEMPTS": "3",
        ]
    }
}

/// A TCP proxy in front of the S3 server that can die mid-transfer
/// (Tests/Fixtures/tcp_proxy.py): from fedbatch's side, the server killed
/// during an upload or a download, while its state survives for the rerun.
final class DyingProxy: @unchecked Sendable {
    let process = Process()
    let port: Int

    init(
        port: Int, target: Int, dieAfter: (direction: String, bytes: Int)? = nil, countConnectionsIn: String? = nil
    ) throws {
        self.port = port
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: TestPaths.python)
        process.arguments =
            [TestPaths.fixtures + "/tcp_proxy.py", String(port), String(target)]
            + (dieAfter.map { [$0.direction, String($0.bytes)] } ?? [])
            + (countConnectionsIn.map { ["count", $0] } ?? [])
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        _ = try S3Server.readLine(output.fileHandleForReading)
    }

    deinit {
        // SIGKILL: the test runner's children may have SIGTERM blocked.
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

@Suite("S3 remotes against a local S3 server")
struct RemoteS3Tests {
    static let arch = "mlp:100-64-10"
    static let url = "s3://fedbatch/federation/fmnist"

    static func federation(_ s3: S3Server, sites: [String] = ["site-1", "site-2"]) throws -> Federation {
        let fed = try Federation(sites: sites, arch: arch)
        fed.environment = s3.environment()
        for home in [fed.collector] + sites.map(fed.site) {
            try Federation.setConfig(home: home, table: "remote", "url", "\"\(url)\"")
        }
        return fed
    }

    /// One bundle for `site` in its outbox; returns its path there.
    @discardableResult
    static func bundle(
        _ fed: Federation, site: String, seq: Int64 = 1, base: Int = 0, tensors: [(name: String, tensor: Tensor)]? = nil
    ) throws -> String {
        let path = try fed.update(
            site: site, seq: seq, base: try fed.generation(base),
            tensors: try tensors ?? RobustStrategyTests.randomDelta(seed: UInt64(seq) * 7 + UInt64(site.count)))
        let out = fed.site(site) + "/outbox/" + (path as NSString).lastPathComponent
        try FileManager.default.moveItem(atPath: path, toPath: out)
        return out
    }

    static func inbox(_ fed: Federation) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: fed.collector + "/inbox")) ?? []).sorted()
    }

    @Test("a whole round through S3: push, pull, merge, publish, pull; a multipart upload; the listing's shape")
    func wholeRound() throws {
        let s3 = try S3Server()
        let fed = try Self.federation(s3)
        for site in ["site-1", "site-2"] { try Self.bundle(fed, site: site) }
        for site in ["site-1", "site-2"] {
            let pushed = try fed.run(["push", "--home", fed.site(site), "--json"]).summary()
            #expect((pushed["transferred"] as? [[String: Any]])?.count == 1)
        }
        let pulled = try fed.run(["pull", "--home", fed.collector, "--json"]).summary()
        #expect(
            (pulled["transferred"] as? [[String: Any]])?.map { $0["key"] as! String }
                == ["inbox/site-1/demo-g0-site-1-1.fbu", "inbox/site-2/demo-g0-site-2-1.fbu"])
        #expect(Self.inbox(fed).count == 2)
        #expect(try fed.fedbatch(["pull", "--home", fed.collector]).status == 5)
        try fed.run(["merge", "--home", fed.collector])
        try fed.run(["publish", "--home", fed.collector])
        #expect(try fed.fedbatch(["publish", "--home", fed.collector]).status == 5)
        let taken = try fed.run(["pull", "--home", fed.site("site-1"), "--json"]).summary()
        #expect((taken["transferred"] as? [[String: Any]])?.count == 2)
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: fed.site("site-1") + "/generations/g000001.fbg"))
                == Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000001.fbg")))

        // A bundle above the part size goes up in parts (5 MiB, S3's
        // smallest), and comes down whole and checked.
        var multipart = fed.environment
        multipart["FEDBATCH_TEST_S3_PART_BYTES"] = String(5 << 20)
        let big = try Federation(sites: ["site-1"], arch: "mlp:1024-1024-1024-10")
        big.environment = multipart
        for home in [big.collector, big.site("site-1")] {
            try Federation.setConfig(home: home, table: "remote", "url", "\"s3://fedbatch/big\"")
        }
        let noisy = try Samples.weights(arch: "mlp:1024-1024-1024-10").enumerated().map { i, t in
            (
                t.name,
                Tensor(
                    shape: t.tensor.shape,
                    floats: (0..<t.tensor.count).map { Float(sin(Double($0 &* 7919 &+ i))) * 0.01 })
            )
        }
        let file = try Self.bundle(big, site: "site-1", tensors: noisy)
        let size = try #require(FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        #expect(size > 5 << 20, "the bundle is \(size) bytes, too small for two parts")
        let original = try Data(contentsOf: URL(fileURLWithPath: file))
        try big.run(["push", "--home", big.site("site-1")])
        try big.run(["pull", "--home", big.collector])
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: big.collector + "/inbox/" + (file as NSString).lastPathComponent))
                == original)
    }

    @Test("listing past 1000 keys: a pull takes all 1005 objects, a second finds none")
    func manyObjects() throws {
        let s3 = try S3Server()
        let fed = try Self.federation(s3)
        // Copies of one real bundle: pull checks each download's statement
        // before it enters the inbox, and would leave junk on the remote.
        try s3.populate(
            prefix: "federation/fmnist/inbox/site-1/many-", count: 1005, body: try Self.bundle(fed, site: "site-1"))
        let pulled = try fed.run(["pull", "--home", fed.collector, "--json"]).summary()
        #expect((pulled["transferred"] as? [[String: Any]])?.count == 1005)
        #expect(Self.inbox(fed).count == 1005)
        #expect(try fed.fedbatch(["pull", "--home", fed.collector]).status == 5)
    }

    @Test(
        "[remote] parallel: 24 objects pulled over at most that many kept-open connections, reported in key order; published and pushed the same way"
    )
    func parallelTransfers() throws {
        let s3 = try S3Server()
        let fed = try Self.federation(s3)
        try s3.populate(
            prefix: "federation/fmnist/inbox/site-1/many-", count: 24, body: try Self.bundle(fed, site: "site-1"))
        let port = DyingProxy.freePort()
        fed.environment = s3.environment(port: port)
        let counter = fed.root + "/connections"
        var proxy: DyingProxy? = try DyingProxy(port: port, target: s3.port, countConnectionsIn: counter)
        func connections() throws -> Int { Int(try String(contentsOfFile: counter, encoding: .utf8)) ?? -1 }
        try Federation.setConfig(home: fed.collector, table: "remote", "parallel", "4")
        let pulled = try fed.run(["pull", "--home", fed.collector, "--json"]).summary()
        let keys = (pulled["transferred"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String }
        #expect(keys.count == 24 && keys == keys.sorted(), "\(keys)")
        #expect(Self.inbox(fed).count == 24)
        // A listing, 24 downloads and 24 deletions: 49 requests, over at
        // most one connection per thread.
        let used = try connections()
        #expect((1...4).contains(used), "\(used) connections for 49 requests")
        #expect(try fed.fedbatch(["pull", "--home", fed.collector]).status == 5)

        // Publishing: generation 0 over one more connection at most 4.
        proxy = nil
        proxy = try DyingProxy(port: port, target: s3.port, countConnectionsIn: counter)
        try fed.run(["publish", "--home", fed.collector, "-q"])
        #expect((1...4).contains(try connections()))
        // A site's push of several bundles, one at a time with parallel = 1.
        try Federation.setConfig(home: fed.site("site-2"), table: "remote", "parallel", "1")
        for seq in 1...3 { try Self.bundle(fed, site: "site-2", seq: Int64(seq)) }
        proxy = nil
        proxy = try DyingProxy(port: port, target: s3.port, countConnectionsIn: counter)
        let pushed = try fed.run(["push", "--home", fed.site("site-2"), "--json"]).summary()
        #expect((pushed["transferred"] as? [[String: Any]])?.count == 3)
        #expect(try connections() == 1)
        withExtendedLifetime(proxy) {}
    }

    @Test("the server killed mid-upload and mid-download: a clear error, then a rerun with nothing lost or doubled")
    func serverKilledMidTransfer() throws {
        let s3 = try S3Server()
        let fed = try Self.federation(s3)
        let file = try Self.bundle(fed, site: "site-1")
        let size = try #require(FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        let port = DyingProxy.freePort()
        fed.environment = s3.environment(port: port)

        // Upload: the proxy dies halfway through the body.
        var proxy: DyingProxy? = try DyingProxy(port: port, target: s3.port, dieAfter: ("up", size / 2))
        let failed = try fed.fedbatch(["push", "--home", fed.site("site-1"), "--json"])
        #expect(failed.status == 1, "\(failed.out)\(failed.err)")
        #expect(try failed.jsonErrorLines().last?["code"] as? String == "remote.unreachable", "\(failed.err)")
        #expect(FileManager.default.fileExists(atPath: file))
        proxy = try DyingProxy(port: port, target: s3.port)
        let nothing = try fed.fedbatch(["pull", "--home", fed.collector, "--json"])
        #expect(nothing.status == 5, "\(nothing.out)\(nothing.err)")  // nothing half-made arrived
        try fed.run(["push", "--home", fed.site("site-1")])
        #expect(!FileManager.default.fileExists(atPath: file))

        // Download: the proxy dies halfway through the object.
        proxy = nil
        proxy = try DyingProxy(port: port, target: s3.port, dieAfter: ("down", size / 2))
        let cut = try fed.fedbatch(["pull", "--home", fed.collector])
        #expect(cut.status == 1, "\(cut.out)\(cut.err)")
        #expect(Self.inbox(fed).isEmpty, "\(Self.inbox(fed))")
        proxy = try DyingProxy(port: port, target: s3.port)
        try fed.run(["pull", "--home", fed.collector])
        #expect(Self.inbox(fed) == [(file as NSString).lastPathComponent])
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/inbox/" + Self.inbox(fed)[0])).count == size)
        #expect(try fed.fedbatch(["pull", "--home", fed.collector]).status == 5)
        withExtendedLifetime(proxy) {}
    }

    @Test("fedbatch check: the remote answers with the right credentials, and fails, named, with wrong ones")
    func checkCredentials() throws {
        let s3 = try S3Server()
        let fed = try Self.federation(s3)
        let good = try fed.fedbatch(["check", "--home", fed.collector, "--json"])
        let items = try #require(try good.summary()["items"] as? [[String: Any]])
        #expect(items.first { $0["name"] as? String == "remote" }?["status"] as? String == "ok", "\(items)")
        fed.environment = s3.environment(secret: "not-the-secret")
        let bad = try fed.fedbatch(["check", "--home", fed.collector, "--json"])
        let remote = try #require(
            (try bad.summary()["items"] as? [[String: Any]])?.first { $0["name"] as? String == "remote" })
        #expect(bad.status == 1 && remote["status"] as? String == "failed", "\(remote)")
        #expect(remote["code"] as? String == "remote.denied", "\(remote)")
    }

    @Test("wrong credentials: a clear error naming them, exit 1, nothing moved")
    func wrongCredentials() throws {
        let s3 = try S3Server()
        let fed = try Self.federation(s3)
        let file = try Self.bundle(fed, site: "site-1")
        fed.environment = s3.environment(secret: "not-the-secret")
        let r = try fed.fedbatch(["push", "--home", fed.site("site-1"), "--json"])
        #expect(r.status == 1, "\(r.out)\(r.err)")
        let error = try #require(try r.jsonErrorLines().last)
        #expect(
            error["code"] as? String == "remote.denied"
                && (error["message"] as? String ?? "").contains("AWS_SECRET_ACCESS_KEY"), "\(error)")
        #expect(FileManager.default.fileExists(atPath: file))
        fed.environment = [:]
        let none = try fed.fedbatch(["push", "--home", fed.site("site-1")])
        #expect(
            none.status == 1 && none.err.contains("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"),
            "\(none.err)")
    }
}

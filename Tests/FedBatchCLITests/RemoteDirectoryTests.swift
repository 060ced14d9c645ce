import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// push, pull and publish through a directory remote (a USB stick or an NFS
/// mount), driven through the real binary: a whole round, reruns after a
/// kill at the step between transfer and bookkeeping, and what a hostile
/// remote can put there.
@Suite("directory remotes")
struct RemoteDirectoryTests {
    /// A federation whose homes all name `stick` as their remote, with one
    /// bundle per site in each site's outbox.
    static func setUp() throws -> (Federation, String) {
        let fed = try Federation(sites: ["site-1", "site-2"])
        let stick = fed.root + "/stick"
        try FileManager.default.createDirectory(atPath: stick, withIntermediateDirectories: false)
        for home in [fed.collector, fed.site("site-1"), fed.site("site-2")] {
            try Federation.setConfig(home: home, table: "remote", "url", "\"\(stick)\"")
        }
        try writeBundles(fed, seq: 1)
        return (fed, stick)
    }

    /// One bundle per site on generation `seq - 1`, in the site's outbox.
    static func writeBundles(_ fed: Federation, seq: Int64) throws {
        let base = try fed.generation(Int(seq) - 1)
        for site in ["site-1", "site-2"] {
            let path = try fed.update(site: site, seq: seq, base: base)
            try FileManager.default.moveItem(
                atPath: path, toPath: fed.site(site) + "/outbox/" + (path as NSString).lastPathComponent)
        }
    }

    /// Hidden files in `dir`: what a transfer leaves only if it was killed.
    static func temporaryFiles(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }
    }

    static func files(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    @Test("push, pull, merge, publish, pull: a whole round over a directory, each step exit 5 when run again")
    func wholeRound() throws {
        let (fed, stick) = try Self.setUp()
        for site in ["site-1", "site-2"] {
            let pushed = try fed.run(["push", "--home", fed.site(site), "--json"]).summary()
            #expect(
                (pushed["transferred"] as? [[String: Any]])?.first?["key"] as? String
                    == "inbox/\(site)/demo-g0-\(site)-1.fbu")
            #expect(Self.files(fed.site(site) + "/outbox").isEmpty && Self.files(fed.site(site) + "/sent").count == 1)
            #expect(try fed.fedbatch(["push", "--home", fed.site(site)]).status == 5)
        }
        #expect(Self.files(stick + "/inbox/site-1") == ["demo-g0-site-1-1.fbu"])

        let pulled = try fed.run(["pull", "--home", fed.collector, "--json"]).summary()
        #expect((pulled["transferred"] as? [[String: Any]])?.count == 2)
        #expect(Self.files(fed.collector + "/inbox") == ["demo-g0-site-1-1.fbu", "demo-g0-site-2-1.fbu"])
        #expect(Self.files(stick + "/inbox/site-1").isEmpty && Self.files(stick + "/inbox/site-2").isEmpty)
        #expect(try fed.fedbatch(["pull", "--home", fed.collector]).status == 5)

        try fed.run(["merge", "--home", fed.collector])
        let published = try fed.run(["publish", "--home", fed.collector, "--json"]).summary()
        #expect(
            (published["transferred"] as? [[String: Any]])?.map { $0["key"] as! String } == [
                "generations/g000000.fbg", "generations/g000001.fbg",
            ])
        #expect(try fed.fedbatch(["publish", "--home", fed.collector]).status == 5)

        let taken = try fed.run(["pull", "--home", fed.site("site-1"), "--json"]).summary()
        #expect(
            (taken["transferred"] as? [[String: Any]])?.map { $0["key"] as! String } == [
                "generations/g000000.fbg", "generations/g000001.fbg",
            ])
        let mine = try Data(contentsOf: URL(fileURLWithPath: fed.site("site-1") + "/generations/g000001.fbg"))
        #expect(mine == (try Data(contentsOf: URL(fileURLWithPath: fed.collector + "/generations/g000001.fbg"))))
        #expect(try fed.fedbatch(["pull", "--home", fed.site("site-1")]).status == 5)
        #expect(try fed.run(["log", "--home", fed.site("site-1")]).status == 0)
    }

    @Test(
        "killed between the transfer and its bookkeeping, push and pull finish on the next run with nothing lost or doubled"
    )
    func resumesAfterAKill() throws {
        let (fed, stick) = try Self.setUp()
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_FAULT"] = "push-before-move"
        let killed = try Subprocess.fedbatch(["push", "--home", fed.site("site-1")], environment: env)
        #expect(killed.status == 99)
        // Uploaded, still in the outbox.
        #expect(Self.files(stick + "/inbox/site-1").count == 1 && Self.files(fed.site("site-1") + "/outbox").count == 1)
        try fed.run(["push", "--home", fed.site("site-1")])
        #expect(Self.files(stick + "/inbox/site-1").count == 1 && Self.files(fed.site("site-1") + "/outbox").isEmpty)

        env["FEDBATCH_FAULT"] = "pull-before-delete"
        #expect(try Subprocess.fedbatch(["pull", "--home", fed.collector], environment: env).status == 99)
        #expect(Self.files(fed.collector + "/inbox").count == 1 && Self.files(stick + "/inbox/site-1").count == 1)
        // Nothing new comes in (exit 5); the rerun only finishes the removal.
        let rerun = try fed.fedbatch(["pull", "--home", fed.collector, "--json"])
        #expect(rerun.status == 5)
        let again = try rerun.summary()
        #expect(
            (again["skipped"] as? [[String: Any]])?.count == 1
                && (again["transferred"] as? [[String: Any]])?.isEmpty == true)
        #expect(Self.files(fed.collector + "/inbox").count == 1 && Self.files(stick + "/inbox/site-1").isEmpty)
        // No temporary file is left behind on either side.
        #expect(try Self.temporaryFiles(fed.collector + "/inbox").isEmpty)
    }

    @Test(
        "killed while 4 objects are under way at once: the rerun places each of 12 bundles once, removes each from the remote, and leaves no temporary file"
    )
    func parallelPullResumesAfterAKill() throws {
        let (fed, stick) = try Self.setUp()
        try FileManager.default.createDirectory(atPath: stick + "/inbox/site-1", withIntermediateDirectories: true)
        let bundle = Self.files(fed.site("site-1") + "/outbox")[0]
        for i in 0..<12 {
            try FileManager.default.copyItem(
                atPath: fed.site("site-1") + "/outbox/" + bundle, toPath: stick + "/inbox/site-1/copy-\(i).fbu")
        }
        try Federation.setConfig(home: fed.collector, table: "remote", "parallel", "4")
        try Federation.setConfig(home: fed.collector, table: "merge", "settle_seconds", "0")
        var env = ProcessInfo.processInfo.environment
        env["GNUPGHOME"] = fed.keyring.home
        env["FEDBATCH_FAULT"] = "pull-before-delete"
        #expect(try Subprocess.fedbatch(["pull", "--home", fed.collector], environment: env).status == 99)
        let first = Self.files(fed.collector + "/inbox")
        #expect(!first.isEmpty && first.count < 12, "\(first)")
        #expect(Self.files(stick + "/inbox/site-1").count == 12, "nothing is removed before it is placed")
        let rerun = try fed.run(["pull", "--home", fed.collector, "--json"]).summary()
        let moved = (rerun["transferred"] as? [[String: Any]] ?? []) + (rerun["skipped"] as? [[String: Any]] ?? [])
        #expect(moved.count == 12, "\(rerun)")
        #expect(Self.files(fed.collector + "/inbox") == (0..<12).map { "copy-\($0).fbu" }.sorted())
        #expect(Self.files(stick + "/inbox/site-1").isEmpty)
        #expect(try Self.temporaryFiles(fed.collector + "/inbox").isEmpty)
    }

    @Test(
        "what a hostile remote holds stays out: a forged generation, an oversized bundle, a half-written upload, a stray key"
    )
    func hostileRemote() throws {
        let (fed, stick) = try Self.setUp()
        // A generation signed by a site's key, not the collector's.
        try FileManager.default.createDirectory(atPath: stick + "/generations", withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: fed.collector + "/generations/g000000.fbg", toPath: stick + "/generations/g000000.fbg")
        let forged = try fed.update(site: "site-1", seq: 9, base: try fed.generation(0), name: "forged.fbu")
        try FileManager.default.moveItem(atPath: forged, toPath: stick + "/generations/g000001.fbg")
        let r = try fed.fedbatch(["pull", "--home", fed.site("site-2"), "--json"])
        #expect(r.status == 3, "\(r.out)\(r.err)")
        let refused = try #require(try r.summary()["refused"] as? [[String: Any]])
        #expect(refused.count == 1 && refused[0]["key"] as? String == "generations/g000001.fbg")
        #expect(Self.files(fed.site("site-2") + "/generations") == ["g000000.fbg"])
        #expect(try Self.temporaryFiles(fed.site("site-2") + "/generations").isEmpty)

        // A bundle far above what mlp:4-3-2 allows, an upload in progress
        // (hidden name) and a key outside the layout.
        try FileManager.default.createDirectory(atPath: stick + "/inbox/site-2", withIntermediateDirectories: true)
        try Data(count: 50 << 20).write(to: URL(fileURLWithPath: stick + "/inbox/site-2/huge.fbu"))
        try Data("x".utf8).write(to: URL(fileURLWithPath: stick + "/inbox/site-2/.partial.fbu.tmp"))
        try Data("x".utf8).write(to: URL(fileURLWithPath: stick + "/inbox/stray.fbu"))
        // Junk under a well-formed key: the merge's intake refuses it at
        // pull, with the merge's own code, before it reaches the inbox.
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: stick + "/inbox/site-2/junk.fbu"))
        let pulled = try fed.fedbatch(["pull", "--home", fed.collector, "--json"])
        let codes = try #require(try pulled.summary()["refused"] as? [[String: Any]]).map { $0["code"] as! String }
            .sorted()
        #expect(codes == ["remote.foreign-object", "remote.too-large", "signature.missing"], "\(pulled.out)")
        #expect(Self.files(fed.collector + "/inbox").isEmpty)
        #expect(FileManager.default.fileExists(atPath: stick + "/inbox/site-2/huge.fbu"))
        #expect(FileManager.default.fileExists(atPath: stick + "/inbox/site-2/junk.fbu"))
        // A missing mount point is an error, not a remote to create.
        let gone = try fed.fedbatch(["push", "--home", fed.site("site-1"), "--remote", fed.root + "/unplugged"])
        #expect(gone.status == 1 && gone.err.contains("is the medium mounted?"))
    }
}

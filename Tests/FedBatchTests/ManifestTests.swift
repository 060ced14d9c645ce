import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

@Suite("Manifest")
struct ManifestTests {
    @Test(
        "fedbatch and an independent reader written from fedbatch-bundle(5) give the same verdict on crafted manifests")
    func differential() throws {
        let dir = TempDir()
        let made = try Subprocess.python("manifest_differential.py", [dir.path])
        try #require(made.status == 0, "generator failed: \(made.err)")
        let verdicts = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.file("verdicts.json"))))
                as? [String: [String: Any]])
        #expect(verdicts.count >= 55)
        var refused = 0
        for (name, verdict) in verdicts.sorted(by: { $0.key < $1.key }) {
            let payload = try Data(contentsOf: URL(fileURLWithPath: dir.file("\(name).zst")))
            let python = verdict["ok"] as? Bool == true
            do {
                let m = try ContainerReader.read(payload: payload).manifest
                #expect(python, "\(name): fedbatch accepts, the reference refuses (\(verdict["why"] ?? ""))")
                #expect(
                    m.numExamples == (verdict["num_examples"] as? NSNumber)?.int64Value,
                    "\(name): fedbatch reads \(m.numExamples.map(String.init) ?? "none")")
                #expect(
                    m.included?.count == (verdict["bundles"] as? NSNumber)?.intValue,
                    "\(name): fedbatch reads \(m.included.map { "\($0.count)" } ?? "no") bundles")
            } catch let e as ContainerError {
                refused += 1
                #expect(!python, "\(name): fedbatch refuses (\(e)), the reference accepts")
            }
        }
        // The cases exercise both verdicts.
        #expect(refused > 30 && refused < verdicts.count - 6)
    }

    @Test("created must be RFC 3339 UTC and no more than a day ahead of the clock")
    func createdTime() throws {
        #expect(Manifest.parseCreated("2026-11-29T12:00:00Z") == Date(timeIntervalSince1970: 1_795_953_600))
        #expect(Manifest.parseCreated("2024-02-29T00:00:00Z") == Date(timeIntervalSince1970: 1_709_164_800))
        #expect(Manifest.parseCreated("1970-01-01T00:00:00Z") == Date(timeIntervalSince1970: 0))
        for bad in [
            "2026-11-29T12:00:00", "2026-11-29 12:00:00Z", "2026-02-29T00:00:00Z", "2026-11-29T24:00:00Z",
            "+026-11-29T12:00:00Z",
        ] {
            #expect(Manifest.parseCreated(bad) == nil, "\(bad)")
        }
        var m = Samples.updateManifest()
        let now = Manifest.parseCreated("2026-01-01T00:00:00Z")!
        try m.checkCreated(notAfter: now)
        m.created = "2026-01-02T06:00:00Z"
        #expect(throws: ContainerError.self) { try m.checkCreated(notAfter: now) }
        m.created = "2035-01-01T00:00:00Z"
        #expect(throws: ContainerError.self) { try m.checkCreated(notAfter: Date()) }
    }
}

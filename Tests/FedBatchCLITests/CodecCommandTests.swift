import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// Codecs through the real binary: train and pack with each, merge them,
/// error feedback at the site, accept_codecs and hostile codec payloads at
/// the collector.
@Suite("fedbatch codecs end to end")
struct CodecCommandTests {
    func reasonCode(_ path: String) throws -> String? {
        (try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])?[
            "code"] as? String
    }

    func federation() throws -> Federation {
        let fed = try Federation(arch: "mlp:784-16-10")
        for s in ["site-1", "site-2"] {
            try FileManager.default.copyItem(
                atPath: fed.collector + "/generations/g000000.fbg", toPath: fed.site(s) + "/generations/g000000.fbg")
        }
        return fed
    }

    @Test(
        "bundles in int8 and topk merge beside fp32 ones; each records its codec; int8 is about a quarter of fp32's size"
    )
    func mixedMerge() throws {
        let fed = try federation()
        var sizes: [String: Int] = [:]
        for (site, codec) in [("site-1", "int8"), ("site-2", "topk")] {
            let r = try fed.fedbatch([
                "train", "--home", fed.site(site), "--data", fashionMNIST, "--limit", "300", "--codec", codec, "--json",
            ])
            #expect(r.status == 0, "\(r.err)")
            let file = try #require(try r.summary()["bundle"] as? [String: Any])["file"] as! String
            #expect(try Inspection.inspect(path: file).manifest.codec == codec)
            sizes[codec] = try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int
            try FileManager.default.copyItem(
                atPath: file, toPath: fed.collector + "/inbox/" + (file as NSString).lastPathComponent)
        }
        // The same training stored as fp32, for the size ratio.
        let fp32 = try fed.fedbatch([
            "train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "300", "--force", "--codec",
            "fp32", "--json",
        ])
        let fp32File = try #require(try fp32.summary()["bundle"] as? [String: Any])["file"] as! String
        let fp32Size = try #require(try FileManager.default.attributesOfItem(atPath: fp32File)[.size] as? Int)
        #expect(Double(sizes["int8"]!) / Double(fp32Size) < 0.3, "int8 \(sizes["int8"]!) vs fp32 \(fp32Size)")
        #expect(Double(sizes["topk"]!) / Double(fp32Size) < 0.05, "topk \(sizes["topk"]!) vs fp32 \(fp32Size)")

        let m = try fed.fedbatch(["merge", "--home", fed.collector, "--json"])
        #expect(m.status == 0, "\(m.err)")
        #expect((try m.summary()["accepted"] as? [Any])?.count == 2)
        #expect(try fed.fedbatch(["log", "--home", fed.collector]).status == 0)
    }

    @Test("topk keeps what it left out and sends it with the next update; switching codec drops the residual")
    func errorFeedback() throws {
        let fed = try federation()
        let site = fed.site("site-1")
        let residualPath = site + "/residual.safetensors"
        #expect(
            try fed.fedbatch([
                "train", "--home", site, "--data", fashionMNIST, "--limit", "300", "--codec", "topk", "-q",
            ]).status == 0)
        let arch = try ModelArchitecture(spec: "mlp:784-16-10")
        let residual = try ModelWeights(arch: arch, file: try SafetensorsFile.open(path: residualPath))
        let first = try ContainerReader.read(
            payload: try ContainerFile.split(
                try Data(contentsOf: URL(fileURLWithPath: site + "/outbox/demo-g000000-site-1-1.fbu"))
            ).payload)
        let sent = TopKCodec().decodeAll(try first.tensors(), arch: arch)
        // Where a value was sent, the residual holds only its fp16 rounding;
        // elsewhere it holds the whole value: sent + residual is the delta.
        var kept = 0, carried = 0
        for t in 0..<arch.tensorShapes.count {
            for i in 0..<sent.tensors[t].count {
                if sent.tensors[t][i] != 0 {
                    kept += 1
                    #expect(abs(residual.tensors[t][i]) <= abs(sent.tensors[t][i]) / 1024 + 1e-7)
                } else if residual.tensors[t][i] != 0 {
                    carried += 1
                }
            }
        }
        #expect(kept > 0 && carried > 50 * kept, "kept \(kept), carried \(carried)")

        // The next update (forced, on the same generation) carries the residual:
        // the largest carried value is sent if it is now among the largest.
        #expect(
            try fed.fedbatch([
                "train", "--home", site, "--data", fashionMNIST, "--limit", "300", "--codec", "topk", "--force", "-q",
            ]).status == 0)
        let second = try ModelWeights(arch: arch, file: try SafetensorsFile.open(path: residualPath))
        #expect(second.tensors != residual.tensors)
        // Another codec has no use for it.
        #expect(
            try fed.fedbatch([
                "train", "--home", site, "--data", fashionMNIST, "--limit", "300", "--codec", "int8", "--force", "-q",
            ]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: residualPath))
    }

    @Test(
        "a codec outside merge.accept_codecs, and a signed topk payload with an index out of range, are quarantined with their reasons"
    )
    func collectorRefusals() throws {
        let fed = try federation()
        let config = fed.collector + "/fedbatch.toml"
        let text = try String(contentsOfFile: config, encoding: .utf8)
        #expect(text.contains("accept_codecs = [\"bf16\", \"fp16\", \"fp32\", \"int8\", \"topk\"]"))
        try text.replacingOccurrences(
            of: "accept_codecs = [\"bf16\", \"fp16\", \"fp32\", \"int8\", \"topk\"]",
            with: "accept_codecs = [\"fp32\", \"topk\"]"
        )
        .write(toFile: config, atomically: true, encoding: .utf8)
        let r = try fed.fedbatch([
            "train", "--home", fed.site("site-1"), "--data", fashionMNIST, "--limit", "200", "--codec", "int8",
            "--json",
        ])
        let file = try #require(try r.summary()["bundle"] as? [String: Any])["file"] as! String
        try FileManager.default.copyItem(atPath: file, toPath: fed.collector + "/inbox/int8.fbu")

        // A genuine signature over a payload whose indices run past the tensor.
        let arch = try ModelArchitecture(spec: "mlp:784-16-10")
        var stored = try TopKCodec().encode(
            ModelWeights(
                arch: arch, tensors: arch.tensorShapes.map { [Float](repeating: 0.01, count: $0.shape.reduce(1, *)) }))
        let k = stored[0].tensor.shape[0]
        var bad = Data()
        for j in 0..<k {
            withUnsafeBytes(of: Int32(j == k - 1 ? 784 * 16 : j).littleEndian) { bad.append(contentsOf: $0) }
        }
        stored[0].tensor = try Tensor(dtype: .i32, shape: [k], data: bad)
        let g0 = try fed.generation(0)
        var manifest = Manifest(
            kind: .update, model: .init(id: "demo", arch: "mlp:784-16-10"), created: "2026-01-01T00:00:00Z",
            base: .init(number: 0, digest: g0.digest), site: .init(id: "site-2", seq: 1), numExamples: 10)
        manifest.codec = "topk"
        let sealed = try fed.signer(fed.siteKeys["site-2"]!).seal(
            manifest: manifest, members: [(ContainerPath.tensors, SafetensorsWriter.encode(stored))])
        try sealed.file.write(to: URL(fileURLWithPath: fed.collector + "/inbox/bad-topk.fbu"))

        let m = try fed.fedbatch(["merge", "--home", fed.collector])
        #expect(m.status == 5, "\(m.err)")
        #expect(try reasonCode(fed.collector + "/quarantine/int8.fbu.reason.json") == "protocol.codec")
        #expect(try reasonCode(fed.collector + "/quarantine/bad-topk.fbu.reason.json") == "codec.invalid")
        #expect(m.err.contains("is outside a tensor of 12544"), "\(m.err)")
        // verify says the same of the hostile file, with exit status 3.
        let v = try fed.fedbatch(["verify", "--home", fed.collector, fed.collector + "/quarantine/bad-topk.fbu"])
        #expect(v.status == 3 && v.err.contains("[codec.invalid]"))
    }
}

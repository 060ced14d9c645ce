import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

@Suite("MergeProtocol")
struct MergeProtocolTests {
    let current = Manifest.GenerationRef(number: 4, digest: String(repeating: "c4", count: 32))

    func rules(
        merged: [String: Int] = [:], lastSeq: [String: Int64] = [:], cap: Int64 = 1000, maxStaleness: Int = 0,
        digests: [Int: String] = [:]
    ) -> MergeProtocol {
        var k = MergeProtocol.Knowledge(
            current: current, maxExamples: cap, mergedInto: { merged[$0] }, lastSequence: { lastSeq[$0] })
        k.maxStaleness = maxStaleness
        k.generationDigest = { digests[$0] }
        return MergeProtocol(knowledge: k)
    }

    func update(
        site: String = "site-1", seq: Int64 = 3, base: Manifest.GenerationRef? = nil, examples: Int64 = 100
    ) -> Manifest {
        Manifest(
            kind: .update, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
            base: base ?? current, site: .init(id: site, seq: seq), numExamples: examples)
    }

    func refusal(_ r: MergeProtocol, _ m: Manifest, digest: String = "d1") -> ProtocolError? {
        do { _ = try r.decide(m, digest: digest); return nil } catch { return error as? ProtocolError }
    }

    @Test("an update on the current generation with a new sequence number is accepted with its count")
    func accepts() throws {
        let (site, n, staleness) = try rules(lastSeq: ["site-1": 2]).decide(update(), digest: "d1")
        #expect(site.id == "site-1" && site.seq == 3 && n == 100 && staleness == 0)
    }

    @Test(
        "a stale update inside the window is accepted with its staleness if it names the recorded digest; outside, too-stale"
    )
    func staleness() throws {
        let g2 = String(repeating: "22", count: 32)
        let r = rules(maxStaleness: 2, digests: [2: g2, 1: String(repeating: "11", count: 32)])
        #expect(try r.decide(update(base: .init(number: 2, digest: g2)), digest: "d1").staleness == 2)
        #expect(
            refusal(r, update(base: .init(number: 2, digest: String(repeating: "00", count: 32))))
                == .wrongBaseDigest(number: 2))
        #expect(
            refusal(r, update(base: .init(number: 1, digest: String(repeating: "11", count: 32))))
                == .tooStale(offered: 1, current: 4, max: 2))
        #expect(refusal(r, update(base: .init(number: 5, digest: g2))) == .staleBase(offered: 5, current: 4))
        #expect(ProtocolError.tooStale(offered: 1, current: 4, max: 2).code == "protocol.too-stale")
    }

    @Test("the staleness functions of FedAsync: constant, polynomial and hinge")
    func stalenessFunctions() {
        let poly = StalenessFunction(kind: .polynomial, a: 0.5)
        #expect(poly.weight(staleness: 0) == 1 && abs(poly.weight(staleness: 3) - 0.5) < 1e-15)
        let hinge = StalenessFunction(kind: .hinge, a: 2, b: 1)
        #expect(hinge.weight(staleness: 1) == 1 && abs(hinge.weight(staleness: 3) - 0.2) < 1e-15)
        #expect(StalenessFunction(kind: .constant).weight(staleness: 9) == 1)
    }

    @Test("a codec the collector does not accept is refused with its own reason")
    func codecNotAccepted() throws {
        var k = rules().knowledge
        k.acceptedCodecs = ["fp32", "int8"]
        var m = update()
        m.codec = "topk"
        #expect(refusal(MergeProtocol(knowledge: k), m) == .codecNotAccepted("topk", accepted: ["fp32", "int8"]))
        m.codec = "int8"
        #expect(try MergeProtocol(knowledge: k).decide(m, digest: "d").examples == 100)
    }

    @Test("each rule refuses with its own typed reason, a copy of a merged bundle before a stale base")
    func refusals() {
        let g = Manifest(
            kind: .generation, model: .init(id: "demo", arch: Samples.arch), created: "2026-01-01T00:00:00Z",
            generation: 5,
            parent: current)
        #expect(refusal(rules(), g) == .notAnUpdate)
        #expect(
            refusal(rules(merged: ["d1": 2]), update(base: .init(number: 1, digest: current.digest)))
                == .alreadyMerged(generation: 2))
        #expect(
            refusal(rules(), update(base: .init(number: 3, digest: current.digest)))
                == .tooStale(offered: 3, current: 4, max: 0))
        #expect(
            refusal(rules(), update(base: .init(number: 4, digest: String(repeating: "00", count: 32))))
                == .wrongBaseDigest(number: 4))
        #expect(
            refusal(rules(lastSeq: ["site-1": 3]), update(seq: 3)) == .sequenceReused(site: "site-1", seq: 3, last: 3))
        #expect(refusal(rules(cap: 99), update(examples: 100)) == .tooManyExamples(100, cap: 99))
    }

    @Test("one update per site in a merge: the second is refused once the first is accepted")
    func onePerSite() throws {
        var r = rules()
        _ = try r.decide(update(), digest: "d1")
        r.accepted(site: "site-1")
        #expect(refusal(r, update(seq: 4), digest: "d2") == .secondUpdate(site: "site-1", generation: 4))
        #expect(refusal(r, update(site: "site-2"), digest: "d3") == nil)
    }
}

@Suite("FedAvg")
struct FedAvgTests {
    let arch = try! ModelArchitecture(spec: "mlp:2-2")

    func delta(_ values: [Float]) throws -> DecodedDelta {
        let file = try SafetensorsFile(
            bytes: SafetensorsWriter.encode([
                ("0.weight", Tensor(shape: [2, 2], floats: Array(values.prefix(4)))),
                ("0.bias", Tensor(shape: [2], floats: Array(values.suffix(2)))),
            ]))
        return try DecodedDelta.checked(file, codec: Codecs.make(name: "fp32"), arch: arch)
    }

    @Test("the weighted mean of the deltas, scaled by server_lr, added to the base; weights capped")
    func mean() throws {
        let base = ModelWeights(arch: arch, tensors: [[1, 1, 1, 1], [0, 0]])
        let s = try Strategies.make(name: "fedavg", parameters: ["server_lr": 0.5, "weight_cap": 300], arch: arch)
        #expect(s.weight(examples: 100) == 100 && s.weight(examples: 1_000) == 300)
        try s.add(delta: try delta([1, 2, 3, 4, 5, 6]), weight: 100)
        try s.add(delta: try delta([3, 2, 1, 0, -1, 2]), weight: 300)
        let next = try s.finish(base: base)
        // mean = (100·d1 + 300·d2) / 400; new = base + 0.5·mean
        let weights: [Float] = [2.25, 2, 1.75, 1.5]
        let biases: [Float] = [0.25, 1.5]
        #expect(next.tensors[0] == weights)
        #expect(next.tensors[1] == biases)
        #expect(s.parameters == ["server_lr": 0.5, "weight_cap": 300])
    }

    @Test("a delta that would make the model non-finite is refused before it is added")
    func nonFinite() throws {
        let base = ModelWeights(arch: arch, tensors: [[3e38, 0, 0, 0], [0, 0]])
        let s = FedAvg(arch: arch)
        #expect(throws: AggregationError.nonFiniteResult(tensor: "0.weight", index: 0)) {
            try s.check(delta: try delta([3e38, 0, 0, 0, 0, 0]), base: base)
        }
        try s.check(delta: try delta([-3e38, 1, 1, 1, 1, 1]), base: base)
    }

    @Test("an unknown strategy is refused, naming the ones that exist")
    func unknown() {
        #expect(
            throws: StrategyError.unknown(
                "geomed",
                known: [
                    "bulyan", "diloco", "fedadagrad", "fedadam", "fedavg", "fedavgm", "fedyogi", "krum", "median",
                    "multikrum", "trimmed-mean",
                ])
        ) { try Strategies.make(name: "geomed", parameters: [:], arch: arch) }
    }
}

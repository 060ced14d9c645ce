import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

@Suite("ModelArchitecture")
struct ArchitectureTests {
    @Test("an MLP spec gives PyTorch's nn.Sequential names and shapes")
    func names() throws {
        let a = try ModelArchitecture(spec: "mlp:784-256-128-10")
        #expect(a.tensorShapes.map(\.name) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"])
        #expect(a.tensorShapes.map(\.shape) == [[256, 784], [256], [128, 256], [128], [10, 128], [10]])
        #expect(a.parameterCount == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10)
        let s = try ModelArchitecture(spec: "softmax:784-10")
        #expect(s.tensorShapes.map(\.shape) == [[10, 784], [10]])
    }

    @Test(
        "malformed specs are refused",
        arguments: ["mlp", "mlp:", "mlp:10", "cnn:1-2", "softmax:1-2-3", "mlp:4--2", "mlp:4-0-2", "mlp:4-1"])
    func badSpecs(spec: String) {
        #expect(throws: ArchitectureError.self) { try ModelArchitecture(spec: spec) }
    }

    private func check(_ tensors: [(name: String, tensor: Tensor)]) throws {
        try ModelArchitecture(spec: Samples.arch).check(try SafetensorsFile(bytes: SafetensorsWriter.encode(tensors)))
    }

    @Test("matching weights pass the check")
    func matching() throws { try check(try Samples.weights()) }

    @Test("a wrong shape, a missing tensor, an extra tensor, NaN and Inf are refused")
    func mismatches() throws {
        var w = try Samples.weights()
        w[0] = ("0.weight", Tensor(shape: [4, 3], floats: Array(repeating: 0, count: 12)))
        #expect(throws: ArchitectureError.wrongShape("0.weight", expected: [3, 4], actual: [4, 3])) { try check(w) }

        w = try Samples.weights()
        w.remove(at: 1)
        #expect(throws: ArchitectureError.missingTensor("0.bias", arch: Samples.arch)) { try check(w) }

        w = try Samples.weights()
        w.append(("extra.weight", Tensor(shape: [1], floats: [0])))
        #expect(throws: ArchitectureError.extraTensor("extra.weight", arch: Samples.arch)) { try check(w) }

        for bad in [Float.nan, .infinity, -.infinity] {
            w = try Samples.weights()
            var values = w[2].tensor.floats()
            values[3] = bad
            w[2] = ("2.weight", Tensor(shape: [2, 3], floats: values))
            #expect(throws: ArchitectureError.nonFinite("2.weight")) { try check(w) }
        }

        w = try Samples.weights()
        w[3] = ("2.bias", try Tensor(dtype: .i32, shape: [2], data: Data(count: 8)))
        #expect(throws: ArchitectureError.wrongDType("2.bias", .i32)) { try check(w) }
    }

    @Test("models too large to exchange or to merge are refused, without overflow")
    func tooLarge() throws {
        for spec in ["mlp:100000-100000-10", "mlp:1048576-1048576-1048576-10"] {
            #expect(throws: ArchitectureError.self) { try ModelArchitecture(spec: spec) }
        }
        let big = try ModelArchitecture(spec: "mlp:16384-16384-10")
        #expect(throws: ArchitectureError.self) { try big.checkFitsInMemory(physicalMemory: 2 << 30) }
        try big.checkFitsInMemory(physicalMemory: 64 << 30)
    }
}

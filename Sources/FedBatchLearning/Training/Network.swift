import FedBatchFormats
import FedBatchNative
import Foundation

/// A fully connected ReLU network with a softmax cross-entropy head,
/// evaluated on batches with GEMMs. Buffers are allocated once for the
/// largest batch and reused, so the training loop does not allocate.
///
/// `@safe`: the buffer views it stores all point into `storage`, which the
/// network owns for as long as it lives; its methods that take pointers
/// are the unsafe part, and are marked at each call.
@safe final class Network {
    let arch: ModelArchitecture
    let capacity: Int
    /// W0, b0, W1, b1, … (PyTorch order). The views below point into
    /// `storage`, which owns the memory for the network's lifetime.
    private(set) var params: [UnsafeMutableBufferPointer<Float>]
    private(set) var grads: [UnsafeMutableBufferPointer<Float>]
    /// Per layer: the output (post-ReLU for hidden layers, logits for the last).
    private var outputs: [UnsafeMutableBufferPointer<Float>]
    /// Per layer: d loss / d pre-activation.
    private var deltas: [UnsafeMutableBufferPointer<Float>]
    private let storage: [NumericBuffer<Float>]

    init(weights: ModelWeights, batchCapacity: Int) {
        arch = weights.arch
        capacity = batchCapacity
        let p = weights.tensors.map { NumericBuffer<Float>(copying: $0) }
        let g = weights.tensors.map { NumericBuffer<Float>(count: $0.count) }
        let o = arch.widths.dropFirst().map { NumericBuffer<Float>(count: $0 * batchCapacity) }
        let d = arch.widths.dropFirst().map { NumericBuffer<Float>(count: $0 * batchCapacity) }
        unsafe params = unsafe p.map(unsafe \.buffer)
        unsafe grads = unsafe g.map(unsafe \.buffer)
        unsafe outputs = unsafe o.map(unsafe \.buffer)
        unsafe deltas = unsafe d.map(unsafe \.buffer)
        storage = p + g + o + d
    }

    var weights: ModelWeights { unsafe ModelWeights(arch: arch, tensors: params.map { unsafe Array($0) }) }

    /// Forward pass over `rows` examples at `x` [rows × in]; returns the logits.
    @discardableResult
    func forward(_ x: UnsafePointer<Float>, rows: Int) -> UnsafeMutableBufferPointer<Float> {
        precondition(rows <= capacity)
        var input = unsafe x
        for l in 0..<arch.layerCount {
            let inW = arch.widths[l], outW = arch.widths[l + 1]
            let w = unsafe params[2 * l], b = unsafe params[2 * l + 1], out = unsafe outputs[l]
            // out = input · Wᵀ, then + bias (and ReLU on hidden layers) in one sweep.
            unsafe BLAS.sgemm(
                transA: false, transB: true, m: rows, n: outW, k: inW, a: input, b: w.baseAddress!, c: out.baseAddress!)
            let hidden = l < arch.layerCount - 1
            for r in 0..<rows {
                let row = unsafe out.baseAddress! + r * outW
                if hidden {
                    for j in 0..<outW { unsafe row[j] = unsafe max(row[j] + b[j], 0) }
                } else {
                    for j in 0..<outW { unsafe row[j] += b[j] }
                }
            }
            unsafe input = unsafe UnsafePointer(out.baseAddress!)
        }
        return unsafe outputs[arch.layerCount - 1]
    }

    /// Softmax cross-entropy over the last forward pass: returns the summed
    /// loss and the number of correct predictions, and leaves d loss / d
    /// logits (for the mean loss) in the last delta buffer.
    func lossAndGradient(labels: UnsafePointer<Int32>, rows: Int) -> (lossSum: Double, correct: Int) {
        let c = arch.classes
        let logits = unsafe outputs[arch.layerCount - 1], d = unsafe deltas[arch.layerCount - 1]
        var loss = 0.0
        var correct = 0
        let scale = 1 / Float(rows)
        for r in 0..<rows {
            let z = unsafe logits.baseAddress! + r * c, g = unsafe d.baseAddress! + r * c
            var m = unsafe z[0], arg = 0
            for j in 1..<c where unsafe z[j] > m { m = unsafe z[j]; arg = j }
            var sum: Float = 0
            for j in 0..<c { let e = unsafe expf(z[j] - m); unsafe g[j] = e; sum += e }
            let y = unsafe Int(labels[r])
            if arg == y { correct += 1 }
            unsafe loss += Double(logf(sum) - (z[y] - m))
            let inv = 1 / sum
            for j in 0..<c { unsafe g[j] = unsafe g[j] * inv * scale }
            unsafe g[y] -= scale
        }
        return (loss, correct)
    }

    /// Back-propagates the last delta buffer into `grads`.
    func backward(_ x: UnsafePointer<Float>, rows: Int) {
        for l in stride(from: arch.layerCount - 1, through: 0, by: -1) {
            let inW = arch.widths[l], outW = arch.widths[l + 1]
            let d = unsafe deltas[l]
            let input: UnsafePointer<Float> = unsafe l == 0 ? x : UnsafePointer(outputs[l - 1].baseAddress!)
            // dW = Dᵀ · input  [out × in]
            unsafe BLAS.sgemm(
                transA: true, transB: false, m: outW, n: inW, k: rows, a: d.baseAddress!, b: input,
                c: grads[2 * l].baseAddress!)
            // db = column sums of D
            let db = unsafe grads[2 * l + 1]
            for j in 0..<outW { unsafe db[j] = 0 }
            for r in 0..<rows {
                let row = unsafe d.baseAddress! + r * outW
                for j in 0..<outW { unsafe db[j] += row[j] }
            }
            if l > 0 {
                // D_{l-1} = (D · W) ⊙ [h_{l-1} > 0]
                let prev = unsafe deltas[l - 1], h = unsafe outputs[l - 1]
                unsafe BLAS.sgemm(
                    transA: false, transB: false, m: rows, n: inW, k: outW, a: d.baseAddress!,
                    b: params[2 * l].baseAddress!, c: prev.baseAddress!)
                for i in 0..<(rows * inW) where unsafe h[i] <= 0 { unsafe prev[i] = 0 }
            }
        }
    }

    /// Applies `body` to each (parameter, gradient) pair.
    func forEachParameter(_ body: (Int, UnsafeMutableBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) -> Void) {
        for i in unsafe 0..<params.count { unsafe body(i, params[i], grads[i]) }
    }
}

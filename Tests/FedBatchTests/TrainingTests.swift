import FedBatch
import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTestSupport
import FedBatchTrust
import Foundation
import Testing

/// A small random classification problem.
func toyData(count: Int, width: Int, classes: Int, seed: UInt64) -> Dataset {
    var rng = SeededRandom(seed: seed)
    var x: [Float] = [], y: [Int32] = []
    for _ in 0..<count {
        let label = Int32(rng.next() % UInt64(classes))
        for j in 0..<width { x.append(rng.uniform(-1, 1) + (j % classes == Int(label) ? 1.5 : 0)) }
        y.append(label)
    }
    return Dataset(features: x, labels: y, width: width)
}

@Suite("Trainer")
struct TrainingTests {
    let arch = try! ModelArchitecture(spec: "mlp:6-5-4-3")

    @Test("backward gives the gradient of the loss (checked by finite differences)")
    func gradientCheck() throws {
        let data = toyData(count: 16, width: 6, classes: 3, seed: 3)
        let w = ModelWeights(arch: arch, named: arch.initialWeights(seed: 5))
        // One full-batch SGD step with lr 1 and no momentum moves w by -grad.
        var o = TrainingOptions()
        o.batchSize = 16
        o.optimizer.learningRate = 1
        o.optimizer.momentum = 0
        let stepped = try Trainer.train(w, on: data, options: o).weights
        let grad = w.subtracting(stepped)
        func loss(_ w: ModelWeights) -> Double { Evaluation.evaluate(w, on: data).loss }
        var checked = 0
        for t in 0..<w.tensors.count {
            for i in stride(from: 0, to: w.tensors[t].count, by: 3) {
                var plus = w, minus = w
                let h: Float = 1e-2
                plus.tensors[t][i] += h
                minus.tensors[t][i] -= h
                let numeric = (loss(plus) - loss(minus)) / (2 * Double(h))
                #expect(
                    abs(numeric - Double(grad.tensors[t][i])) < 2e-3 + 0.02 * abs(numeric), "tensor \(t) element \(i)")
                checked += 1
            }
        }
        #expect(checked > 20)
    }

    @Test(
        "SGD with momentum and weight decay, Adam, and FedProx match PyTorch step for step",
        arguments: [
            #"{"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01, "epochs": 5}"#,
            #"{"optimizer": "adam", "lr": 0.01, "momentum": 0, "weight_decay": 0, "epochs": 5}"#,
            #"{"optimizer": "sgd", "lr": 0.1, "momentum": 0, "weight_decay": 0, "epochs": 5, "prox_mu": 0.5}"#,
        ])
    func matchesPyTorch(options json: String) throws {
        let dir = TempDir()
        let data = toyData(count: 32, width: 6, classes: 3, seed: 11)
        let start = arch.initialWeights(seed: 2)
        try SafetensorsWriter.write(start, to: dir.file("start.safetensors"))
        let y = try Tensor(dtype: .i64, shape: [32], data: data.labels.map { Int64($0) }.withUnsafeBytes { Data($0) })
        try SafetensorsWriter.write(
            [("x", Tensor(shape: [32, 6], floats: data.features)), ("y", y)], to: dir.file("data.safetensors"))
        let r = try Subprocess.python(
            "torch_reference.py",
            [
                arch.description, dir.file("start.safetensors"), dir.file("data.safetensors"),
                dir.file("out.safetensors"), json,
            ])
        try #require(r.status == 0, "\(r.err)")
        let reference = try ModelWeights(arch: arch, file: try SafetensorsFile.open(path: dir.file("out.safetensors")))

        let opts = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        var o = TrainingOptions()
        o.batchSize = 32
        o.epochs = opts["epochs"] as! Int
        o.optimizer.kind = OptimizerKind(rawValue: opts["optimizer"] as! String)!
        o.optimizer.learningRate = Float(opts["lr"] as! Double)
        o.optimizer.momentum = Float(opts["momentum"] as! Double)
        o.optimizer.weightDecay = Float(opts["weight_decay"] as! Double)
        o.proxMu = Float(opts["prox_mu"] as? Double ?? 0)
        let ours = try Trainer.train(ModelWeights(arch: arch, named: start), on: data, options: o).weights
        for (a, b) in zip(ours.tensors.joined(), reference.tensors.joined()) {
            #expect(abs(a - b) < 1e-4 + 1e-3 * abs(b))
        }
        #expect(ours != ModelWeights(arch: arch, named: start))
    }

    @Test("the same seed gives the same bits; another seed does not")
    func deterministic() throws {
        let data = toyData(count: 200, width: 6, classes: 3, seed: 1)
        let w = ModelWeights(arch: arch, named: arch.initialWeights(seed: 1))
        var o = TrainingOptions()
        o.batchSize = 16
        o.epochs = 2
        o.seed = 7
        let a = try Trainer.train(w, on: data, options: o).weights
        let b = try Trainer.train(w, on: data, options: o).weights
        #expect(a == b)
        o.seed = 8
        #expect(try Trainer.train(w, on: data, options: o).weights != a)
        #expect(arch.initialWeights(seed: 1).map(\.tensor) == arch.initialWeights(seed: 1).map(\.tensor))
        #expect(arch.initialWeights(seed: 1).map(\.tensor) != arch.initialWeights(seed: 2).map(\.tensor))
    }

    @Test("a strong FedProx term keeps the weights near the generation")
    func proximal() throws {
        let data = toyData(count: 200, width: 6, classes: 3, seed: 1)
        let w = ModelWeights(arch: arch, named: arch.initialWeights(seed: 1))
        var o = TrainingOptions()
        o.epochs = 3
        o.batchSize = 20
        let free = try Trainer.train(w, on: data, options: o).weights.subtracting(w)
        o.proxMu = 10
        let held = try Trainer.train(w, on: data, options: o).weights.subtracting(w)
        func norm(_ m: ModelWeights) -> Float { m.tensors.joined().reduce(0) { $0 + $1 * $1 }.squareRoot() }
        #expect(norm(held) < 0.5 * norm(free))
    }

    @Test("training on a slice of real Fashion-MNIST learns")
    func learnsFashionMNIST() throws {
        let train = try DataLoader.load("/usr/share/datasets/fashion-mnist", split: .train).prefix(3000)
        let test = try DataLoader.load("/usr/share/datasets/fashion-mnist", split: .test).prefix(1000)
        let a = try ModelArchitecture(spec: "mlp:784-32-10")
        try train.check(against: a, path: "fashion-mnist")
        let start = ModelWeights(arch: a, named: a.initialWeights(seed: 0))
        let before = Evaluation.evaluate(start, on: test)
        var o = TrainingOptions()
        o.epochs = 3
        let result = try Trainer.train(start, on: train, options: o, heldOut: test)
        let after = Evaluation.evaluate(result.weights, on: test)
        #expect(before.accuracy < 0.25)
        #expect(after.accuracy > 0.7, "test accuracy \(after.accuracy)")
        #expect(result.epochs.count == 3 && result.epochs[2].loss < result.epochs[0].loss)
        #expect(result.epochs[2].evalAccuracy == after.accuracy)
        #expect(after.perClassAccuracy.count == 10 && after.classCounts.reduce(0, +) == 1000)
    }
}

@Suite("DataLoader")
struct DataLoaderTests {
    @Test("Debian's Fashion-MNIST IDX files load for both splits")
    func idx() throws {
        let train = try DataLoader.load("/usr/share/datasets/fashion-mnist", split: .train)
        let test = try DataLoader.load("/usr/share/datasets/fashion-mnist", split: .test)
        #expect(train.count == 60000 && test.count == 10000)
        #expect(train.width == 784)
        #expect(train.labelCounts(classes: 10) == [Int](repeating: 6000, count: 10))
        #expect(train.features.allSatisfy { $0 >= 0 && $0 <= 1 })
    }

    private func idxBytes(dims: [Int], payload: [UInt8], type: UInt8 = 0x08) -> Data {
        var d = Data([0, 0, type, UInt8(dims.count)])
        for v in dims {
            d.append(contentsOf: [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)])
        }
        return d + Data(payload)
    }

    @Test("truncated, corrupt or mismatched IDX files are refused with the file named")
    func badIDX() throws {
        let dir = TempDir()
        try FileManager.default.createDirectory(atPath: dir.file("d"), withIntermediateDirectories: true)
        try dir.write("d/train-images-idx3-ubyte", idxBytes(dims: [2, 2, 2], payload: [1, 2, 3, 4, 5, 6, 7]))
        try dir.write("d/train-labels-idx1-ubyte", idxBytes(dims: [2], payload: [0, 1]))
        #expect { try DataLoader.load(dir.file("d")) } throws: {
            "\($0)".contains(
                "train-images-idx3-ubyte: IDX header declares [2, 2, 2] = 8 bytes of data, the file holds 7")
        }
        try dir.write(
            "d/train-images-idx3-ubyte", idxBytes(dims: [3, 2, 2], payload: [UInt8](repeating: 9, count: 12)))
        #expect { try DataLoader.load(dir.file("d")) } throws: { "\($0)".contains("2 labels for 3 images") }
        try dir.write(
            "d/train-images-idx3-ubyte",
            idxBytes(dims: [2, 2, 2], payload: [UInt8](repeating: 9, count: 8), type: 0x0D))
        #expect { try DataLoader.load(dir.file("d")) } throws: {
            "\($0)".contains("element type 0x0d is not supported")
        }
        // A gzip file cut short.
        let gz = try Data(
            contentsOf: URL(fileURLWithPath: "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"))
        try FileManager.default.createDirectory(atPath: dir.file("t"), withIntermediateDirectories: true)
        try dir.write("t/t10k-labels-idx1-ubyte.gz", gz.prefix(gz.count / 2))
        try FileManager.default.copyItem(
            atPath: "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
            toPath: dir.file("t/t10k-images-idx3-ubyte.gz"))
        #expect { try DataLoader.load(dir.file("t"), split: .test) } throws: {
            "\($0)".contains("t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip data")
        }
        #expect { try DataLoader.load(dir.file("t"), split: .train) } throws: {
            "\($0)".contains("no train-*-images-idx3-ubyte[.gz] file")
        }
    }

    @Test("CSV files load, and bad rows are named")
    func csv() throws {
        let dir = TempDir()
        let good = try dir.write("a.csv", Data("f1,label,f2\n0.5,1,2\n-1,0,3.5\n".utf8))
        let d = try DataLoader.load(good)
        #expect(d.count == 2 && d.width == 2)
        #expect(d.features == [0.5, 2, -1, 3.5] && d.labels == [1, 0])
        let cases: [(String, String)] = [
            ("f1,label\n1,2,3\n", "line 2 has 3 fields; the header has 2"),
            ("f1,label\nx,1\n", "line 2, column \"f1\": \"x\" is not a finite number"),
            ("f1,label\n1,one\n", "line 2, column \"label\": \"one\" is not an integer label"),
            ("f1,y\n1,1\n", "no column named \"label\""),
            ("f1,label\n", "no data rows"),
        ]
        for (i, (text, message)) in cases.enumerated() {
            let p = try dir.write("bad\(i).csv", Data(text.utf8))
            #expect { try DataLoader.load(p) } throws: { "\($0)".contains(message) }
        }
        let arch = try ModelArchitecture(spec: "softmax:3-2")
        #expect { try d.check(against: arch, path: good) } throws: {
            "\($0)".contains("examples have 2 features; the model softmax:3-2 expects 3")
        }
        let arch2 = try ModelArchitecture(spec: "softmax:2-2")
        let outOfRange = Dataset(features: [0, 0, 1, 1], labels: [0, 5], width: 2)
        #expect { try outOfRange.check(against: arch2, path: "x") } throws: {
            "\($0)".contains("example 1 has label 5, outside 0..1")
        }
    }

    @Test("safetensors shards load (U8 scaled, F32 as is) and bad ones are refused")
    func shards() throws {
        let dir = TempDir()
        let y = try Tensor(dtype: .i64, shape: [2], data: [Int64(1), 0].withUnsafeBytes { Data($0) })
        try SafetensorsWriter.write(
            [("x", try Tensor(dtype: .u8, shape: [2, 2], data: Data([0, 255, 51, 102]))), ("y", y)],
            to: dir.file("u8.safetensors"))
        let d = try DataLoader.load(dir.file("u8.safetensors"))
        #expect(zip(d.features, [0, 1, 0.2, 0.4] as [Float]).allSatisfy { abs($0 - $1) < 1e-6 } && d.labels == [1, 0])
        try SafetensorsWriter.write(
            [("x", Tensor(shape: [3, 2], floats: [1, 2, 3, 4, 5, 6])), ("y", y)], to: dir.file("bad.safetensors"))
        #expect { try DataLoader.load(dir.file("bad.safetensors")) } throws: {
            "\($0)".contains("tensor \"y\" has shape [2]; expected [3]")
        }
    }
}

@Suite("Partition")
struct PartitionTests {
    @Test("IID and Dirichlet splits cover every example once and are deterministic")
    func splits() throws {
        let labels = (0..<5000).map { Int32($0 % 10) }
        let iid = try Partition.assign(labels: labels, sites: 7, scheme: .iid, seed: 1)
        #expect(iid.map(\.count).max()! - iid.map(\.count).min()! <= 1)
        #expect(Set(iid.joined()).count == 5000)
        let dir = try Partition.assign(labels: labels, sites: 10, scheme: .dirichlet(alpha: 0.5), seed: 3)
        #expect(dir == (try Partition.assign(labels: labels, sites: 10, scheme: .dirichlet(alpha: 0.5), seed: 3)))
        #expect(dir != (try Partition.assign(labels: labels, sites: 10, scheme: .dirichlet(alpha: 0.5), seed: 4)))
        #expect(dir.joined().sorted() == Array(0..<5000))
        #expect(dir.allSatisfy { $0.count >= 10 })
        // α = 0.5 skews labels: some site lacks at least one class outright or nearly.
        let classCounts = dir.map { idx in (0..<10).map { c in idx.filter { labels[$0] == Int32(c) }.count } }
        #expect(classCounts.contains { counts in counts.min()! * 10 < counts.max()! })
        let flat = try Partition.assign(labels: labels, sites: 10, scheme: .dirichlet(alpha: 1000), seed: 3)
        #expect(flat.allSatisfy { abs($0.count - 500) < 100 })
    }
}

@Suite("SiteState")
struct SiteStateTests {
    @Test("an older generation is a rollback and a different digest for a seen number is a fork")
    func rollbackAndFork() throws {
        let dir = TempDir()
        let state = try SiteState(path: dir.file("state.db"))
        try state.accept(generation: 0, digest: "a")
        try state.accept(generation: 2, digest: "c")
        try state.accept(generation: 2, digest: "c")
        #expect(throws: SiteStateError.rollback(offered: 0, highest: 2)) {
            try state.accept(generation: 0, digest: "a")
        }
        #expect(throws: SiteStateError.rollback(offered: 1, highest: 2)) {
            try state.accept(generation: 1, digest: "b")
        }
        #expect(throws: SiteStateError.fork(number: 2, known: "c", offered: "x")) {
            try state.accept(generation: 2, digest: "x")
        }
        #expect(try state.highestGeneration()?.number == 2)
        // Sequence numbers survive a reopen and never repeat.
        #expect(try state.reserveSequence(base: 2, file: "f", numExamples: 1) == 1)
        #expect(try SiteState(path: dir.file("state.db")).reserveSequence(base: 2, file: "g", numExamples: 1) == 2)
    }
}

@Suite("held-out data for a site's evaluation")
struct HoldOutTests {
    @Test("eval_fraction sets aside the same examples every run, disjoint from the rest, in data order")
    func holdingOut() {
        let data = toyData(count: 1000, width: 3, classes: 4, seed: 9)
        let (rest, held) = data.holdingOut(0.2)
        #expect(held.count == 200 && rest.count == 800)
        let again = data.holdingOut(0.2)
        #expect(again.heldOut.features == held.features && again.rest.labels == rest.labels)
        // Every example is on exactly one side: rows as tuples of features.
        func rows(_ d: Dataset) -> [[Float]] { (0..<d.count).map { Array(d.features[($0 * 3)..<($0 * 3 + 3)]) } }
        #expect(Set(rows(rest) + rows(held)) == Set(rows(data)) && Set(rows(rest)).isDisjoint(with: rows(held)))
        // Not simply the last fifth.
        #expect(rows(held) != Array(rows(data).suffix(200)))
        #expect(
            data.holdingOut(0).heldOut.count == 0
                && toyData(count: 2, width: 3, classes: 2, seed: 1).holdingOut(0.5).heldOut.count == 1)
    }
}

import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import NormKit
import NormLab
import Testing

/// cs231n's `eval_numerical_gradient`: centred differences of the loss over every
/// entry of one parameter.
func numericalGradient(of name: String, in net: FullyConnectedNet<Double>, x: Matrix<Double>,
                       labels: [Int], step: Double) throws -> [Double] {
    var gradient = [Double]()
    let count = net.parameters[name]!.count
    for k in 0..<count {
        var plus = net, minus = net
        plus.parameters[name]![k] += step
        minus.parameters[name]![k] -= step
        let lossPlus = try plus.loss(x, labels: labels).loss
        let lossMinus = try minus.loss(x, labels: labels).loss
        gradient.append((lossPlus - lossMinus) / (2 * step))
    }
    return gradient
}

@Suite("NormLab")
struct NormLabTests {
    @Test("the whole net's gradients match centred differences (cs231n's check)",
          arguments: [Normalization.batch, .layer], [0.0, 3.14])
    func gradientCheck(normalization: Normalization, regularization: Double) throws {
        let (n, d, classes) = (2, 15, 10)
        let x = Matrix(try Tensor<Double>(randomNormal: [n, d], seed: 231))
        let labels = (0..<n).map { ($0 * 7 + 3) % classes }
        let net = try FullyConnectedNet<Double>(
            inputDimension: d, hiddenDimensions: [20, 30], classCount: classes,
            normalization: normalization, weightScale: 5e-2, regularization: regularization, seed: 1)
        var analytic = net
        let (loss, gradients) = try analytic.loss(x, labels: labels)
        #expect(loss.isFinite)
        #expect(Set(gradients.keys) == Set(net.parameters.keys))
        // The reference is centred differences at h = 1e-4 and 2e-4 combined by
        // Richardson extrapolation. Plain h = 1e-5 carries ~2e-11 of round-off in
        // the loss difference, and with batch norm at N = 2 the W1 gradient is
        // tiny (the normalized output barely depends on it), so plain differences
        // alone give relative errors near 5e-4 on correct gradients.
        for name in net.parameters.keys.sorted() {
            let fine = try numericalGradient(of: name, in: net, x: x, labels: labels, step: 1e-4)
            let coarse = try numericalGradient(of: name, in: net, x: x, labels: labels, step: 2e-4)
            let numeric = zip(fine, coarse).map { (4 * $0 - $1) / 3 }
            let normalizedBias = normalization == .batch && ["b1", "b2"].contains(name)
            if normalizedBias {
                // Batch norm removes any per-feature shift, so the bias before it
                // has gradient exactly 0: both sides must be round-off.
                #expect(gradients[name]!.allSatisfy { abs($0) <= 1e-12 }, "\(name) \(gradients[name]!.map { abs($0) }.max()!)")
                #expect(numeric.allSatisfy { abs($0) <= 1e-9 }, "\(name) \(numeric.map { abs($0) }.max()!)")
                continue
            }
            // The reference's round-off is absolute, about 1e-11 here (measured:
            // every parameter's largest |analytic - numeric| is 2e-12 to 1.3e-11),
            // so entries below a hundredth of the largest are judged against it.
            let error = GradientCheck.relativeError(gradients[name]!, numeric, floor: 1e-2)
            let tolerance = name.hasPrefix("W") ? 1e-4 : 1e-7
            #expect(error <= tolerance, "\(name): relative error \(error)")
        }
    }

    @Test("the whole net's gradients match centred differences with decorrelated batch norm",
          arguments: [Normalization.decorrelated, .iterative])
    func decorrelatedGradientCheck(normalization: Normalization) throws {
        let (n, d, classes) = (12, 15, 10)
        let x = Matrix(try Tensor<Double>(randomNormal: [n, d], seed: 232))
        let labels = (0..<n).map { ($0 * 7 + 3) % classes }
        let net = try FullyConnectedNet<Double>(
            inputDimension: d, hiddenDimensions: [20, 30], classCount: classes, normalization: normalization,
            weightScale: 5e-2, whiteningGroupSize: 5, seed: 2)
        var analytic = net
        let (loss, gradients) = try analytic.loss(x, labels: labels)
        #expect(loss.isFinite && Set(gradients.keys) == Set(net.parameters.keys))
        // Plain centred differences at 1e-6: five Newton–Schulz iterations are a
        // polynomial of degree 243 in the covariance, so steep along its small
        // eigenvalues (ReLU leaves dead features) that differences at 1e-4
        // missed W2's gradient by half, and Richardson's 2e-6 W1's by 4e-3
        // (measured); at 1e-6 every parameter agreed within 4e-7.
        for name in net.parameters.keys.sorted() where !["b1", "b2"].contains(name) {
            let numeric = try numericalGradient(of: name, in: net, x: x, labels: labels, step: 1e-6)
            let error = GradientCheck.relativeError(gradients[name]!, numeric, floor: 1e-2)
            #expect(error <= 1e-5, "\(normalization) \(name): relative error \(error)")
        }
        #expect(throws: NormError.self) {
            try FullyConnectedNet<Double>(inputDimension: d, hiddenDimensions: [20, 32], classCount: classes,
                                          normalization: normalization, whiteningGroupSize: 5)
        }
    }

    @Test("the solver overfits 50 samples", arguments: [Normalization.none, .batch, .layer])
    func overfit(normalization: Normalization) throws {
        let data = try Digits.load(Double.self, trainingCount: 1000, validationCount: 397, seed: 3)
        let small = data.training.prefix(50)
        let net = try FullyConnectedNet<Double>(
            inputDimension: 64, hiddenDimensions: [100, 100], classCount: 10,
            normalization: normalization, weightScale: 5e-2, seed: 4)
        var solver = Solver(model: net, training: small, validation: data.validation,
                            configuration: SolverConfiguration(
                                updateRule: .adam(), learningRate: 2e-3, batchSize: 25, epochs: 40, seed: 5))
        let history = solver.train()
        #expect(!history.diverged)
        #expect(history.trainAccuracy.last! >= 0.9, "train accuracy \(history.trainAccuracy.last!)")
        #expect(history.loss.last! < history.loss.first!)
    }

    @Test("SGD and SGD with momentum reduce the loss too")
    func otherRules() throws {
        let data = try Digits.load(Double.self, seed: 1)
        for rule in [UpdateRule.sgd, .sgdMomentum()] {
            let net = try FullyConnectedNet<Double>(
                inputDimension: 64, hiddenDimensions: [50], classCount: 10, normalization: .batch,
                weightScale: 1e-2, seed: 2)
            var solver = Solver(model: net, training: data.training.prefix(200), validation: data.validation,
                                configuration: SolverConfiguration(updateRule: rule, learningRate: 5e-2,
                                                                   learningRateDecay: 0.95, batchSize: 20,
                                                                   epochs: 5, seed: 3))
            let history = solver.train()
            #expect(history.loss.suffix(10).reduce(0, +) < history.loss.prefix(10).reduce(0, +))
        }
    }

    @Test("the embedded digits: 1797 images of 64 pixels, 10 classes, split and centred")
    func digits() throws {
        let (pixels, labels) = try Digits.records()
        #expect(pixels.count == 1797 * 64 && labels.count == 1797)
        #expect(Set(labels) == Set(0..<10))
        #expect(pixels.allSatisfy { $0 <= 16 })
        let data = try Digits.load(Double.self, trainingCount: 1000, validationCount: 397, seed: 0)
        #expect(data.training.count == 1000 && data.validation.count == 397 && data.test.count == 400)
        for j in 0..<64 {   // the training mean image was subtracted
            let column = (0..<1000).map { data.training.inputs.values[$0 * 64 + j] }
            #expect(abs(column.reduce(0, +) / 1000) <= 1e-12)
        }
        #expect(throws: NormLabError.self) { try Digits.load(Double.self, trainingCount: 1700, validationCount: 200) }
    }

    /// Writes CIFAR-10 batches of `records` records each into a new directory.
    func writeCIFAR(records: Int) throws -> String {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("normlab-cifar-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (fileIndex, name) in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                  "data_batch_5", "test_batch"].enumerated() {
            var bytes = [UInt8]()
            for record in 0..<records {
                bytes.append(UInt8((fileIndex + record) % 10))
                bytes += (0..<3072).map { UInt8(truncatingIfNeeded: $0 + record + fileIndex * 7) }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: "\(directory)/\(name).bin"))
        }
        return directory
    }

    @Test("the CIFAR-10 loader reads the binary format and splits as cs231n")
    func cifar() throws {
        let directory = try writeCIFAR(records: 4)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let batch = try CIFAR10.readBatch("\(directory)/data_batch_2.bin")
        #expect(batch.labels == [1, 2, 3, 4])
        #expect(batch.pixels.count == 4 * 3072 && batch.pixels[3072] == UInt8(truncatingIfNeeded: 1 + 7))
        let data = try CIFAR10.load(Double.self, directory: directory, trainingCount: 15,
                                    validationCount: 5, testCount: 3)
        #expect(data.training.count == 15 && data.validation.count == 5 && data.test.count == 3)
        #expect(data.training.inputs.columns == 3072)
        // Training labels in file order: 0,1,2,3 | 1,2,3,4 | 2,3,4,5 | 3,4,5,6 | 4,5,6,7.
        #expect(data.training.labels.prefix(6) == [0, 1, 2, 3, 1, 2])
        #expect(data.validation.labels == [6, 4, 5, 6, 7])
        #expect(data.test.labels == [5, 6, 7])
        let firstColumn = (0..<15).map { data.training.inputs.values[$0 * 3072] }
        #expect(abs(firstColumn.reduce(0, +)) <= 1e-9)
    }

    @Test("a missing or malformed CIFAR-10 file is a clear error naming the file")
    func cifarErrors() throws {
        let directory = try writeCIFAR(records: 2)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.removeItem(atPath: "\(directory)/data_batch_3.bin")
        #expect(throws: NormLabError.missingFile(path: "\(directory)/data_batch_3.bin")) {
            try CIFAR10.load(Double.self, directory: directory, trainingCount: 4, validationCount: 1, testCount: 1)
        }
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: "\(directory)/data_batch_3.bin"))
        do {
            _ = try CIFAR10.load(Double.self, directory: directory, trainingCount: 4, validationCount: 1, testCount: 1)
            Issue.record("a 3-byte batch loaded")
        } catch let error as NormLabError {
            #expect(error.description.contains("data_batch_3.bin"))
            #expect(error.description.contains("3073"))
        }
        var bad = [UInt8](repeating: 0, count: 3073)
        bad[0] = 12
        try Data(bad).write(to: URL(fileURLWithPath: "\(directory)/data_batch_3.bin"))
        #expect(throws: NormLabError.malformedFile(path: "\(directory)/data_batch_3.bin",
                                                   reason: "record 0 has label 12, expected 0...9")) {
            try CIFAR10.readBatch("\(directory)/data_batch_3.bin")
        }
        #expect(throws: NormLabError.invalidRequest(
            "CIFAR-10 in \(directory) has 10 training and 2 test images; asked for 49000 + 1000 and 1000")) {
            try FileManager.default.removeItem(atPath: "\(directory)/data_batch_3.bin")
            try Data(repeating: 0, count: 2 * 3073).write(to: URL(fileURLWithPath: "\(directory)/data_batch_3.bin"))
            return try CIFAR10.load(Double.self, directory: directory)
        }
    }

    /// Collects parse errors and element names.
    final class XMLCheck: NSObject, XMLParserDelegate {
        var elements: [String] = []
        var failure: Error?
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?,
                    qualifiedName: String?, attributes: [String: String] = [:]) {
            elements.append(name)
        }
        func parser(_ parser: XMLParser, parseErrorOccurred error: Error) { failure = error }
    }

    @Test("the SVG writer produces well-formed XML with axes, ticks, legend and escaped text")
    func svg() throws {
        let plot = LinePlot(
            title: "A & B <test>", xLabel: "weight scale", yLabel: "accuracy",
            series: [.init(name: "baseline \"x\"", points: [(1e-4, 0.1), (1e-2, .nan), (1, 0.5)], dashed: true),
                     .init(name: "batch norm", points: [(1e-4, 0.2), (1e-2, 0.4), (1, 0.6)], markers: true)],
            logarithmicX: true, crosses: [(1e-2, 0.3)])
        let text = plot.svg()
        let check = XMLCheck()
        let parser = XMLParser(data: text.data(using: .utf8)!)
        parser.delegate = check
        #expect(parser.parse(), "\(String(describing: check.failure))")
        #expect(check.failure == nil)
        #expect(check.elements.first == "svg")
        // The batch-norm line is whole; the baseline's NaN leaves two lone points, drawn as dots.
        #expect(check.elements.filter { $0 == "polyline" }.count == 1)
        #expect(check.elements.filter { $0 == "circle" }.count == 3 + 2)
        #expect(text.contains("A &amp; B &lt;test&gt;"))
        #expect(text.contains(">1e-4<") && text.contains(">1e0<"))   // decade ticks
        #expect(text.contains(">diverged<"))
    }

    @Test("a long legend widens the image to fit; a curve on top of another is drawn dashed")
    func legendAndCoincidingCurves() throws {
        let loss: [(x: Double, y: Double)] = (0..<50).map { (i: Int) -> (x: Double, y: Double) in
            let x = Double(i)
            return (x, 2.3 * exp(-x / 20) + 0.1)
        }
        let name = "2 ranks, SyncBatchNorm, decorrelated BN, eigen, groups of 16"
        let plot = LinePlot(title: "loss", xLabel: "iteration", yLabel: "loss",
                            series: [.init(name: "one process", points: loss),
                                     .init(name: name, points: loss.map { (x: $0.x, y: $0.y + 1e-7) }),
                                     .init(name: "local", points: loss.map { (x: $0.x, y: $0.y * 1.3) })])
        let text = plot.svg()
        // The image is as wide as the legend's text needs at 7 pixels a character.
        let width = Double(text.split(separator: "width=\"")[1].prefix { $0 != "\"" })!
        let legendText = text.components(separatedBy: "\n").first { $0.contains(">\(name)<") }!
        let x = Double(legendText.split(separator: "x=\"")[1].prefix { $0 != "\"" })!
        #expect(x + 7 * Double(name.count) <= width, "legend text from \(x) overruns \(width)")
        #expect(LinePlot(title: "t", xLabel: "x", yLabel: "y", series: [.init(name: "a", points: loss)])
            .svg().contains("width=\"760\""))
        // The second curve coincides with the first: dashed; the third does not.
        let polylines = text.components(separatedBy: "\n").filter { $0.hasPrefix("<polyline") }
        #expect(polylines.count == 3)
        #expect(!polylines[0].contains("dasharray") && polylines[1].contains("dasharray")
                && !polylines[2].contains("dasharray"))
    }
}

import Foundation
import NormKit

/// Inputs as an `N x D` matrix and their class labels.
public struct Dataset<Scalar: BLASScalar>: Sendable {
    /// One example per row.
    public var inputs: Matrix<Scalar>
    /// The class of each row, `0 ..< classCount`.
    public var labels: [Int]
    /// The number of examples.
    public var count: Int { labels.count }

    /// A data set; `labels.count` must equal `inputs.rows`.
    public init(inputs: Matrix<Scalar>, labels: [Int]) {
        precondition(inputs.rows == labels.count, "Dataset: \(inputs.rows) rows, \(labels.count) labels")
        self.inputs = inputs
        self.labels = labels
    }

    /// The first `count` examples.
    public func prefix(_ count: Int) -> Dataset {
        Dataset(inputs: inputs.rows(Array(0..<min(count, self.count))), labels: Array(labels.prefix(count)))
    }
}

/// Training, validation and test sets with one preprocessing.
public struct DataSplits<Scalar: BLASScalar>: Sendable {
    public var training: Dataset<Scalar>
    public var validation: Dataset<Scalar>
    public var test: Dataset<Scalar>
    /// The number of classes.
    public var classCount: Int
    /// Where the data came from, for reports.
    public var name: String
}

/// A data file that is missing or not in the expected format.
public enum NormLabError: Error, CustomStringConvertible, Equatable {
    /// The file does not exist or cannot be read.
    case missingFile(path: String)
    /// The file exists but its contents are not what the format says.
    case malformedFile(path: String, reason: String)
    /// A request the data cannot satisfy (more samples than it holds, ...).
    case invalidRequest(String)

    public var description: String {
        switch self {
        case let .missingFile(path): return "\(path): file not found or not readable"
        case let .malformedFile(path, reason): return "\(path): malformed: \(reason)"
        case let .invalidRequest(reason): return reason
        }
    }
}

/// Scales pixels, subtracts the training set's mean image from every split
/// (cs231n's preprocessing), and assembles the splits.
func preprocess<Scalar: BLASScalar>(
    pixels: [UInt8], labels: [Int], features: Int, scale: Double,
    training: [Int], validation: [Int], test: [Int], classCount: Int, name: String
) -> DataSplits<Scalar> {
    var meanImage = [Double](repeating: 0, count: features)
    for i in training {
        for j in 0..<features { meanImage[j] += Double(pixels[i * features + j]) * scale }
    }
    for j in 0..<features { meanImage[j] /= Double(max(training.count, 1)) }
    func split(_ indices: [Int]) -> Dataset<Scalar> {
        var values = [Scalar]()
        values.reserveCapacity(indices.count * features)
        for i in indices {
            for j in 0..<features { values.append(Scalar(Double(pixels[i * features + j]) * scale - meanImage[j])) }
        }
        return Dataset(inputs: Matrix(rows: indices.count, columns: features, values: values),
                       labels: indices.map { labels[$0] })
    }
    return DataSplits(training: split(training), validation: split(validation), test: split(test),
                      classCount: classCount, name: name)
}

/// The UCI handwritten digits (1797 images of 8x8, 10 classes; CC BY 4.0),
/// embedded as a resource: works offline with no set-up.
public enum Digits {
    /// The raw records: 64 pixels (0...16) then the label, per image.
    public static func records() throws -> (pixels: [UInt8], labels: [Int]) {
        guard let url = Bundle.module.url(forResource: "digits", withExtension: "bin") else {
            throw NormLabError.missingFile(path: "digits.bin (NormLab resource)")
        }
        guard let data = try? Data(contentsOf: url) else { throw NormLabError.missingFile(path: url.path) }
        guard data.count == 1797 * 65 else {
            throw NormLabError.malformedFile(path: url.path, reason: "expected \(1797 * 65) bytes, found \(data.count)")
        }
        var pixels = [UInt8](), labels = [Int]()
        pixels.reserveCapacity(1797 * 64)
        for record in 0..<1797 {
            let base = record * 65
            pixels.append(contentsOf: data[base..<(base + 64)])
            let label = Int(data[base + 64])
            guard label < 10 else {
                throw NormLabError.malformedFile(path: url.path, reason: "record \(record) has label \(label)")
            }
            labels.append(label)
        }
        return (pixels, labels)
    }

    /// A seeded shuffle split into `trainingCount` training and
    /// `validationCount` validation images, the rest test; pixels scaled to
    /// `[0, 1]` and centred on the training mean image.
    public static func load<Scalar: BLASScalar>(
        _: Scalar.Type = Double.self, trainingCount: Int = 1000, validationCount: Int = 397,
        seed: UInt64 = 0
    ) throws -> DataSplits<Scalar> {
        let (pixels, labels) = try records()
        guard trainingCount > 0, validationCount > 0, trainingCount + validationCount < labels.count else {
            throw NormLabError.invalidRequest(
                "digits has \(labels.count) images; cannot split \(trainingCount) + \(validationCount) + a test set")
        }
        var generator = SplitMix64(seed: seed)
        let order = Array(0..<labels.count).shuffled(using: &generator)
        return preprocess(
            pixels: pixels, labels: labels, features: 64, scale: 1.0 / 16,
            training: Array(order[0..<trainingCount]),
            validation: Array(order[trainingCount..<(trainingCount + validationCount)]),
            test: Array(order[(trainingCount + validationCount)...]), classCount: 10,
            name: "UCI digits (8x8)")
    }
}

/// CIFAR-10's binary version: `data_batch_1.bin` ... `data_batch_5.bin` and
/// `test_batch.bin`, each a run of 3073-byte records (a label byte 0...9, then
/// 1024 red, 1024 green and 1024 blue pixel bytes).
public enum CIFAR10 {
    /// The size of one record.
    public static let recordSize = 3073

    /// Reads one batch file.
    /// - Throws: ``NormLabError/missingFile(path:)``, or
    ///   ``NormLabError/malformedFile(path:reason:)`` for a size that is not a
    ///   positive multiple of 3073 bytes or a label above 9.
    public static func readBatch(_ path: String) throws -> (pixels: [UInt8], labels: [Int]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NormLabError.missingFile(path: path)
        }
        guard !data.isEmpty, data.count % recordSize == 0 else {
            throw NormLabError.malformedFile(
                path: path, reason: "size \(data.count) bytes is not a positive multiple of the \(recordSize)-byte record")
        }
        var pixels = [UInt8](), labels = [Int]()
        pixels.reserveCapacity(data.count / recordSize * 3072)
        for record in 0..<(data.count / recordSize) {
            let base = record * recordSize
            let label = Int(data[base])
            guard label < 10 else {
                throw NormLabError.malformedFile(path: path, reason: "record \(record) has label \(label), expected 0...9")
            }
            labels.append(label)
            pixels.append(contentsOf: data[(base + 1)..<(base + recordSize)])
        }
        return (pixels, labels)
    }

    /// Loads the five training batches and the test batch from `directory`, as
    /// cs231n's `get_CIFAR10_data`: the first `trainingCount` training images
    /// train, the next `validationCount` validate, the first `testCount` test
    /// images test; pixels as values 0...255 minus the training mean image.
    public static func load<Scalar: BLASScalar>(
        _: Scalar.Type = Double.self, directory: String, trainingCount: Int = 49000,
        validationCount: Int = 1000, testCount: Int = 1000
    ) throws -> DataSplits<Scalar> {
        var pixels = [UInt8](), labels = [Int]()
        for batch in 1...5 {
            let part = try readBatch((directory as NSString).appendingPathComponent("data_batch_\(batch).bin"))
            pixels += part.pixels
            labels += part.labels
        }
        let testPart = try readBatch((directory as NSString).appendingPathComponent("test_batch.bin"))
        guard trainingCount + validationCount <= labels.count, testCount <= testPart.labels.count else {
            throw NormLabError.invalidRequest(
                "CIFAR-10 in \(directory) has \(labels.count) training and \(testPart.labels.count) test images; asked for \(trainingCount) + \(validationCount) and \(testCount)")
        }
        let trainingTotal = labels.count
        return preprocess(
            pixels: pixels + testPart.pixels, labels: labels + testPart.labels, features: 3072,
            scale: 1, training: Array(0..<trainingCount),
            validation: Array(trainingCount..<(trainingCount + validationCount)),
            test: Array(trainingTotal..<(trainingTotal + testCount)), classCount: 10,
            name: "CIFAR-10")
    }
}

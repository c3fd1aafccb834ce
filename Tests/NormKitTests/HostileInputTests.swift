import Foundation
import NormKit
import Testing

/// Little-endian bytes of `value`, `width` of them.
private func le(_ value: Int, _ width: Int) -> [UInt8] {
    (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
}

/// A fresh path in the temporary directory holding `bytes`.
private func temporaryFile(_ bytes: [UInt8]) throws -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("normkit-\(UUID().uuidString).bin").path
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

/// Whether `error` is an `invalidNumPyData` whose `expected` contains `text`.
private func isInvalidNumPy(_ error: any Error, expecting text: String) -> Bool {
    guard case let .invalidNumPyData(expected, _)? = error as? NormError else { return false }
    return expected.contains(text)
}

/// Hostile files, sizes and state: each of these once trapped, hung, took
/// gigabytes, or was accepted when it should not have been.
@Suite("Hostile files, tensors, moments and decoded state")
struct HostileInputTests {
    // MARK: .npz and .npy files

    @Test("a zip64 locator pointing at Int.max is refused, not a trap")
    func zip64NearIntMax() throws {
        // A zip64 end-of-central-directory locator (20 bytes) whose record
        // offset is Int.max, then an end record (22 bytes) that defers to it.
        let locator = le(0x0706_4B50, 4) + le(0, 4) + le(Int.max, 8) + le(1, 4)
        let end = le(0x0605_4B50, 4) + le(0, 4) + le(0xFFFF, 2) + le(0xFFFF, 2)
            + le(0xFFFF_FFFF, 4) + le(0xFFFF_FFFF, 4) + le(0, 2)
        let bytes = locator + end
        #expect(bytes.count == 42)
        #expect { try NumPyArchive(npz: bytes) } throws: {
            isInvalidNumPy($0, expecting: "the zip64 record's offset within the archive's 42 bytes")
        }
    }

    /// The bytes of an archive with one array `"0000"`, and its central
    /// directory record and end record split out.
    private func oneEntryArchive() throws -> (entries: [UInt8], record: [UInt8], end: [UInt8]) {
        var archive = NumPyArchive()
        archive["0000"] = NumPyArray(try Tensor<Float>(randomNormal: [64, 64], seed: 1))
        let bytes = try archive.npz()
        let end = Array(bytes.suffix(22))
        let directory = Int(end[16]) | Int(end[17]) << 8 | Int(end[18]) << 16 | Int(end[19]) << 24
        return (Array(bytes[..<directory]), Array(bytes[directory..<(bytes.count - 22)]), end)
    }

    @Test("directory records that point at one entry are refused (a zip bomb), not copied each")
    func overlappingEntries() throws {
        let (entries, record, end) = try oneEntryArchive()
        // 3000 records, all at the one entry's bytes, with names 0000 ... 2999.
        var directory: [UInt8] = []
        for k in 0..<3000 {
            var copy = record
            let name = Array(String(format: "%04d", k).utf8)
            copy.replaceSubrange(46..<50, with: name)
            directory += copy
        }
        var tail = end
        tail.replaceSubrange(8..<12, with: le(3000, 2) + le(3000, 2))
        tail.replaceSubrange(12..<16, with: le(directory.count, 4))
        #expect { try NumPyArchive(npz: entries + directory + tail) } throws: {
            isInvalidNumPy($0, expecting: "entries that do not overlap")
        }
        // Two records with the same name, at different entries, are refused too.
        var twice = NumPyArchive()
        twice["0000"] = NumPyArray([Float(1)])
        twice["0001"] = NumPyArray([Float(2)])
        var bytes = try twice.npz()
        let second = bytes.count - 22 - (46 + 8)   // the second directory record
        bytes.replaceSubrange((second + 46)..<(second + 50), with: Array("0000".utf8))
        #expect { try NumPyArchive(npz: bytes) } throws: { isInvalidNumPy($0, expecting: "one entry named") }
    }

    @Test("an entry whose zip64 size is Int.max is refused before any arithmetic on it")
    func entrySizeNearIntMax() throws {
        let (entries, record, end) = try oneEntryArchive()
        var copy = record
        copy.replaceSubrange(20..<28, with: le(0xFFFF_FFFF, 4) + le(0xFFFF_FFFF, 4))   // sizes saturated
        let extra = le(0x0001, 2) + le(16, 2) + le(Int.max, 8) + le(Int.max, 8)
        copy.replaceSubrange(30..<32, with: le(extra.count, 2))
        copy += extra
        var tail = end
        tail.replaceSubrange(12..<16, with: le(copy.count, 4))
        #expect { try NumPyArchive(npz: entries + copy + tail) } throws: {
            isInvalidNumPy($0, expecting: "the size of '0000.npy' within the archive")
        }
    }

    @Test("/dev/zero is refused after its magic bytes, as .npy and as .npz")
    func devZero() throws {
        #expect { try NumPyArray(contentsOf: "/dev/zero") } throws: { isInvalidNumPy($0, expecting: "magic") }
        #expect { try NumPyArchive(contentsOf: "/dev/zero") } throws: { isInvalidNumPy($0, expecting: "zip archive") }
        #expect { try Tensor<Float>(npyFile: "/dev/zero") } throws: { isInvalidNumPy($0, expecting: "magic") }
    }

    @Test("a .npy file that declares more data than it holds is refused before reading it")
    func declaredSizeBeyondFile() throws {
        // A valid header declaring a billion float32 values, then 16 bytes.
        var bytes = NumPyArray(try Tensor<Float>([1, 2, 3, 4], shape: [4])).npy
        let header = String(decoding: bytes[10..<(bytes.count - 16)], as: UTF8.self)
            .replacingOccurrences(of: "(4,), }", with: "(1000000000,), }")
        bytes = Array(bytes[0..<10]) + Array(header.utf8) + Array(bytes.suffix(16))
        bytes.replaceSubrange(8..<10, with: le(header.utf8.count, 2))
        let path = try temporaryFile(bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: NormError.invalidNumPyData(expected: "4000000000 bytes of data for shape [1000000000]",
                                                   found: "16")) {
            try NumPyArray(contentsOf: path)
        }
        #expect(throws: NormError.invalidNumPyData(expected: "4000000000 bytes of data for shape [1000000000]",
                                                   found: "16")) {
            try NumPyArray(npy: bytes)
        }
        // A header longer than the file, and trailing bytes after the data.
        var long = bytes
        long.replaceSubrange(8..<10, with: le(60000, 2))
        #expect { try NumPyArray(npy: long) } throws: { isInvalidNumPy($0, expecting: "a header of 60000 bytes") }
        let good = NumPyArray(try Tensor<Float>([1, 2, 3, 4], shape: [4])).npy
        let trailing = try temporaryFile(good + [0])
        defer { try? FileManager.default.removeItem(atPath: trailing) }
        #expect(throws: NormError.invalidNumPyData(expected: "16 bytes of data for shape [4]", found: "17")) {
            try NumPyArray(contentsOf: trailing)
        }
        // The file read as the header says is the array.
        let exact = try temporaryFile(good)
        defer { try? FileManager.default.removeItem(atPath: exact) }
        #expect(try Tensor<Float>(npyFile: exact).scalars == [1, 2, 3, 4])
    }

    @Test("names of 65,536 bytes or more, and 65,535 entries, are refused by the writer")
    func writerLimits() throws {
        var archive = NumPyArchive()
        archive[String(repeating: "a", count: 65531)] = NumPyArray([Float(1)])   // 65,535 with .npy
        let bytes = try archive.npz()
        #expect(try NumPyArchive(npz: bytes).names == [String(repeating: "a", count: 65531)])
        archive[String(repeating: "b", count: 65532)] = NumPyArray([Float(1)])
        #expect { try archive.npz() } throws: { isInvalidNumPy($0, expecting: "at most 65,535 bytes") }

        var many = NumPyArchive()
        let one = NumPyArray([Float(1)])
        for k in 0..<65535 { many[String(k)] = one }
        #expect { try many.npz() } throws: { isInvalidNumPy($0, expecting: "at most 65,534 entries") }
        many[String(0)] = nil
        #expect(try NumPyArchive(npz: many.npz()).names.count == 65534)
    }

    // MARK: Tensors and moments

    @Test("an empty tensor with a huge extent prints at once, elided by rows")
    func emptyTensorDescription() throws {
        let t = try Tensor<Float>(zeros: [Int.max, 0])
        #expect(t.description == "Tensor<Float>([[], [], [], ..., [], [], []], shape: [\(Int.max), 0])")
        let small = try Tensor<Float>(zeros: [3, 0])
        #expect(small.description == "Tensor<Float>([[], [], []], shape: [3, 0])")
    }

    @Test("Moments of an empty tensor with a huge extent allocate nothing per row")
    func emptyMoments() throws {
        let m = try Moments(columnsOf: Tensor<Double>(zeros: [Int.max, 0]))
        #expect(m.count == Int.max && m.mean.isEmpty && m.m2.isEmpty)
        let n = try Moments(columnsOf: Tensor<Float>(zeros: [0, 3]))
        #expect(n.count == 0 && n.mean == [0, 0, 0])
    }

    @Test("merging counts past Int.max is a NormError and changes nothing")
    func mergeOverflow() throws {
        var big = try Moments<Double>(count: .max, mean: [10000.1], m2: [2.5])
        let before = big
        #expect(throws: NormError.countOverflow(.max, 1)) {
            try big.merge(Moments(count: 1, mean: [3], m2: [0]))
        }
        #expect(big == before)
        // Reachable from JSON.
        let json = Data(#"{"count": 9223372036854775807, "mean": [1], "m2": [0]}"#.utf8)
        var decoded = try JSONDecoder().decode(Moments<Double>.self, from: json)
        #expect(throws: NormError.countOverflow(.max, .max)) { try decoded.merge(decoded) }
    }

    // MARK: Decoding validates before it allocates, and checks what forward checks

    @Test("a layer whose size its arrays do not back is refused before allocating")
    func decodedSizes() throws {
        let json = Data(#"""
            {"featureCount": 500000000, "gamma": [1], "beta": [0], "runningMean": [0], "runningVariance": [1],
             "epsilon": 1e-5, "momentum": 0.9, "varianceEstimator": "biased", "backend": "blas"}
            """#.utf8)
        #expect { try JSONDecoder().decode(BatchNorm<Float>.self, from: json) } throws: {
            ($0 as? DecodingError).map { "\($0)".contains("expected gamma to have 500000000 elements, got 1") } ?? false
        }
        #expect(throws: NormError.whiteningTooLarge(featureCount: 100_000, groupSize: 100_000,
                                                    maximum: DecorrelatedBatchNorm<Float>.maximumWhiteningScalars)) {
            try DecorrelatedBatchNorm<Float>(featureCount: 100_000, groupSize: 100_000)
        }
        #expect(throws: NormError.whiteningTooLarge(featureCount: 1 << 30, groupSize: 1 << 30,
                                                    maximum: DecorrelatedBatchNorm<Float>.maximumWhiteningScalars)) {
            try DecorrelatedBatchNorm<Float>(featureCount: 1 << 30, groupSize: 1 << 30)
        }
        #expect(try DecorrelatedBatchNorm<Float>(featureCount: 1 << 13, groupSize: 1 << 13).runningWhitening.count
            == 1 << 26)
        let whitening = Data(#"""
            {"featureCount": 100000, "groupSize": 100000, "method": {"eigen": {}}, "gamma": [1], "beta": [0],
             "runningMean": [0], "runningWhitening": [1], "epsilon": 1e-5, "momentum": 0.9, "backend": "blas"}
            """#.utf8)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(DecorrelatedBatchNorm<Float>.self, from: whitening) }
    }

    /// A decoder that reads `"nan"` and `"inf"` strings as floating-point values.
    private var lenient: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }

    @Test("decoding refuses what forward refuses: a beta on a shift-free RMSNorm, non-finite parameters, negative variance")
    func decodedValues() throws {
        func layerNorm(gamma: String, beta: String) -> Data {
            Data(#"{"featureCount": 2, "gamma": \#(gamma), "beta": \#(beta), "epsilon": 1e-5, "backend": "blas"}"#.utf8)
        }
        func message(_ error: any Error) -> String { "\(error)" }
        // An RMSNorm archive from before Affine holds a zero beta, which is
        // dropped (the layer has no shift); a nonzero one is refused.
        #expect { try lenient.decode(RMSNorm<Float>.self, from: layerNorm(gamma: "[1, 1]", beta: "[0, 0.5]")) } throws: {
            message($0).contains("expected beta to have 0 elements, got 2")
        }
        let old = try lenient.decode(RMSNorm<Float>.self, from: layerNorm(gamma: "[1, 2]", beta: "[0, 0]"))
        #expect(old.gamma == [1, 2] && old.beta.isEmpty && old.affine == .scaleOnly)
        for (gamma, beta) in [(#"[1, "nan"]"#, "[0, 0]"), ("[1, 1]", #"["inf", 0]"#)] {
            for type in [LayerNorm<Float>.self, RMSNorm<Float>.self] as [any Decodable.Type] {
                let refusal = type == RMSNorm<Float>.self && beta != "[0, 0]"
                    ? "expected beta to have 0 elements" : "to be finite values"
                #expect { _ = try lenient.decode(type, from: layerNorm(gamma: gamma, beta: beta)) } throws: {
                    message($0).contains(refusal)
                }
            }
        }
        let batch = #"""
            {"featureCount": 2, "gamma": [1, 1], "beta": [0, 0], "runningMean": [0, MEAN], "runningVariance": [1, VAR],
             "epsilon": 1e-5, "momentum": 0.9, "varianceEstimator": "biased", "backend": "blas"}
            """#
        func bn(mean: String, variance: String) -> Data {
            Data(batch.replacingOccurrences(of: "MEAN", with: mean).replacingOccurrences(of: "VAR", with: variance).utf8)
        }
        #expect(try lenient.decode(BatchNorm<Double>.self, from: bn(mean: "10000.1", variance: "0")).runningMean
            == [0, 10000.1])
        for (mean, variance, text) in [(#""nan""#, "1", "runningMean to be finite"),
                                       ("0", "-1", "runningVariance to be finite and not negative"),
                                       ("0", #""inf""#, "runningVariance to be finite and not negative")] {
            #expect { try lenient.decode(BatchNorm<Double>.self, from: bn(mean: mean, variance: variance)) } throws: {
                message($0).contains(text)
            }
        }
    }
}

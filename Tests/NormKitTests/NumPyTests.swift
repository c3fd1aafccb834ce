import Foundation
import NormKit
import Testing

/// A file of `Tests/NormKitTests/Fixtures` (made once by `make_pytorch_fixture.py`).
private func fixture(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent(name).path
}

/// A fresh path in the temporary directory.
private func temporaryPath(_ name: String) -> String {
    FileManager.default.temporaryDirectory
        .appendingPathComponent("normkit-\(UUID().uuidString)-\(name)").path
}

@Suite("NumPy files and PyTorch state")
struct NumPyTests {
    @Test("a .npy file written by numpy.save reads with its shape and values")
    func readsNumPy() throws {
        let t = try Tensor<Float>(npyFile: fixture("numpy-float32-2x3.npy"))
        #expect(t.shape == [2, 3])
        #expect(t.scalars == (0..<6).map { Float($0) / 10 + 0.1 })
        // Widened exactly for a Tensor<Double>: PyTorch saves float32.
        let wide = try Tensor<Double>(npyFile: fixture("numpy-float32-2x3.npy"))
        #expect(wide.shape == [2, 3] && wide.scalars == t.scalars.map(Double.init))
    }

    @Test("Fortran-order arrays read into C order; float16/32/64 widen or narrow; errors name the entry")
    func layoutsAndConversions() throws {
        let archive = try NumPyArchive(contentsOf: fixture("numpy-layouts.npz"))
        // numpy.asfortranarray of the same values: the same tensor as the C-order array.
        let c = try archive.tensor("c_2x3x4", as: Double.self)
        #expect(c.shape == [2, 3, 4] && c[1, 2, 3] == 23 * 0.1 + 10000.1)
        #expect(try archive.tensor("f_2x3x4", as: Double.self) == c)
        #expect(archive["f_2x3x4"]?.shape == [2, 3, 4] && archive["f_2x3x4"]?.data == archive["c_2x3x4"]?.data)
        let f4 = try archive.tensor("f_5x3_f4", as: Float.self)
        #expect(f4.shape == [5, 3])
        for i in 0..<5 { for j in 0..<3 { #expect(f4[i, j] == Float(3 * i + j) * 0.3 - 2.2) } }
        #expect(try archive.tensor("f_7", as: Double.self).scalars == (0..<7).map { Double($0) + 0.1 })
        #expect(try archive["f_2x3x2_i8"]?.integers() == Array(0..<12))
        // float32 widens exactly to Double; float64 rounds to nearest Float; float16 widens.
        let narrow = try archive.tensor("c_2x3x4", as: Float.self)
        #expect(narrow.scalars == c.scalars.map { Float($0) })
        let f32 = try archive.tensor("float32_2x3", as: Float.self)
        #expect(try archive.tensor("float32_2x3", as: Double.self) == Tensor<Double>(f32))
        let halves = try archive.tensor("float16_4", as: Float.self)
        #expect(halves.scalars == [Float(Float16(0.1)), 60_000, -2.5, Float(Float16(6e-8))])
        #expect(halves.scalars[3] > 0)   // a Float16 subnormal, kept
        // A finite double that float32 cannot hold, and an integer array: errors naming the entry.
        #expect(try archive.tensor("float64_big", as: Double.self).scalars == [1, 1e300, -3.5])
        #expect(throws: NormError.invalidNumPyData(expected: "'float64_big': values that fit Tensor<Float>",
                                                   found: "1e+300 at index 1")) {
            try archive.tensor("float64_big", as: Float.self)
        }
        #expect(throws: NormError.invalidNumPyData(
            expected: "'int64_3': a floating-point array ('<f2', '<f4' or '<f8') for Tensor<Double>", found: "'<i8'")) {
            try archive.tensor("int64_3", as: Double.self)
        }
        // A malformed entry inside an archive is refused naming it.
        var broken = NumPyArchive()
        broken["w"] = archive["float32_2x3"]
        var bytes = try broken.npz()
        let header = Array("'descr': '<f4'".utf8)
        let at = (0...(bytes.count - header.count)).first { Array(bytes[$0..<($0 + header.count)]) == header }!
        bytes[at + 10] = UInt8(ascii: ">")   // the entry's CRC-32 no longer matches
        do {
            _ = try NumPyArchive(npz: bytes)
            Issue.record("a corrupted entry was accepted")
        } catch {
            guard case let .invalidNumPyData(expected, _) = error else { Issue.record("\(error)"); return }
            #expect(expected.hasPrefix("'w.npy': "), "\(expected)")
        }
        // NumPy's own transposes: Tensor.permuted gives the same arrays.
        #expect(try c.permuted([2, 0, 1]) == archive.tensor("t_201", as: Double.self))
        #expect(try c.reshaped([2, 12]).reshaped([2, 3, 4]) == c)
        let first = try Tensor<Double>(Array(c.scalars[0..<12]), shape: [3, 4])
        #expect(try first.permuted([1, 0]) == archive.tensor("t_10", as: Double.self))
    }

    func npyRoundTrips<S: BLASScalar>(_: S.Type) throws {
        for shape in [[3, 7], [2, 1, 5], [4], [], [0, 3]] {
            let t = try Tensor<S>(randomNormal: shape, mean: 10000.1, seed: 3)
            let bytes = NumPyArray(t).npy
            #expect(bytes.count % 64 == t.count * MemoryLayout<S>.size % 64)   // data 64-aligned
            let back = try Tensor<S>(NumPyArray(npy: bytes))
            #expect(back.shape == shape && bits(back.scalars) == bits(t.scalars))
        }
        let path = temporaryPath("t.npy")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let t = try Tensor<S>(randomNormal: [5, 3], seed: 9)
        try t.writeNPY(to: path)
        #expect(try Tensor<S>(npyFile: path) == t)
    }

    @Test("Tensor round-trips through .npy bytes and files, bit for bit")
    func npyRoundTrip() throws {
        try npyRoundTrips(Float.self)
        try npyRoundTrips(Double.self)
    }

    @Test("malformed .npy data is a NormError naming what is wrong")
    func rejectsMalformed() throws {
        let good = NumPyArray(try Tensor<Float>([1.5, 2.5, 3.5, 4.5], shape: [2, 2])).npy
        // The header is ASCII between the 10-byte preamble and the 16 bytes of data.
        let data = good.count - 16
        func replacing(_ a: String, _ b: String) -> [UInt8] {
            let header = String(decoding: good[10..<data], as: UTF8.self).replacingOccurrences(of: a, with: b)
            return Array(good[0..<10]) + Array(header.utf8) + Array(good[data...])
        }
        #expect(data % 64 == 0)
        // The same bytes declared in Fortran order: the columns come first.
        #expect(try Tensor<Float>(NumPyArray(npy: replacing("False", "True "))).scalars == [1.5, 3.5, 2.5, 4.5])
        #expect(throws: NormError.self) { try NumPyArray(npy: replacing("<f4", ">f4")) }
        #expect(throws: NormError.self) { try NumPyArray(npy: Array(good.dropLast(1))) }
        #expect(throws: NormError.self) { try NumPyArray(npy: replacing("(2, 2)", "(2, 3)")) }
        #expect(throws: NormError.self) { try NumPyArray(npy: replacing("(2, 2)", "(2, x)")) }
        #expect(throws: NormError.self) { try NumPyArray(npy: Array(good.prefix(8))) }
        var version3 = good
        version3[6] = 3
        #expect(throws: NormError.invalidNumPyData(expected: "format version 1.0 or 2.0", found: "3.0")) {
            try NumPyArray(npy: version3)
        }
        #expect(throws: NormError.fileError(path: "/nonexistent/x.npy", reason: "No such file or directory")) {
            try Tensor<Float>(npyFile: "/nonexistent/x.npy")
        }
    }

    @Test(".npz archives round-trip, and numpy.savez's archive reads with every array")
    func npzRoundTrip() throws {
        let torch = try NumPyArchive(contentsOf: fixture("pytorch-batchnorm.npz"))
        #expect(torch.names.count == 22 && torch.names.contains("bn2d.num_batches_tracked"))
        #expect(try torch["bn1d.num_batches_tracked"]?.integers() == [3])
        var archive = NumPyArchive()
        archive["x"] = NumPyArray(try Tensor<Double>(randomNormal: [3, 5], mean: 10000.1, seed: 1))
        archive["gamma"] = NumPyArray([Float(0.1), 0.2, 0.3])
        archive["counter"] = torch["bn1d.num_batches_tracked"]
        let path = temporaryPath("a.npz")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try archive.write(to: path)
        let back = try NumPyArchive(contentsOf: path)
        #expect(back == archive && back.names == ["x", "gamma", "counter"])
        let again = try NumPyArchive(npz: torch.npz())
        #expect(again == torch)
        // A corrupted byte fails the CRC-32; a truncated archive has no directory.
        var bytes = try archive.npz()
        bytes[100] ^= 0x01
        #expect(throws: NormError.self) { try NumPyArchive(npz: bytes) }
        #expect(throws: NormError.self) { try NumPyArchive(npz: Array(try archive.npz().dropLast(10))) }
        #expect(throws: NormError.self) { try archive.tensor("missing", as: Float.self) }
    }

    @Test("a BatchNorm1d trained in PyTorch computes PyTorch's outputs and running statistics")
    func pytorchBatchNorm() throws {
        let state = try NumPyArchive(contentsOf: fixture("pytorch-batchnorm.npz"))
        var bn = try BatchNorm<Double>(pytorch: state, prefix: "bn1d.")
        #expect(bn.momentum == 0.9 && bn.varianceEstimator == .unbiased && bn.featureCount == 5)
        let eval = try bn.forward(state.tensor("bn1d_eval_input"), mode: .inference).output
        #expect(normwiseError(eval.scalars, try state.tensor("bn1d_eval_output", as: Double.self).scalars) < 1e-12)
        let train = try bn.forward(state.tensor("bn1d_train_input"), mode: .training).output
        #expect(normwiseError(train.scalars, try state.tensor("bn1d_train_output", as: Double.self).scalars) < 1e-12)
        #expect(normwiseError(bn.runningMean, try state.tensor("bn1d_next_running_mean", as: Double.self).scalars) < 1e-12)
        #expect(normwiseError(bn.runningVariance, try state.tensor("bn1d_next_running_var", as: Double.self).scalars) < 1e-12)
        #expect(bn.batchesTracked == 4)   // num_batches_tracked 3, and one more batch
        // The state round-trips through pytorchState and NormKit's own .npz.
        let reloaded = try BatchNorm<Double>(pytorch: NumPyArchive(npz: bn.pytorchState(prefix: "bn1.").npz()),
                                             prefix: "bn1.")
        #expect(reloaded == bn)
    }

    @Test("a BatchNorm2d trained in PyTorch (Float) computes PyTorch's outputs")
    func pytorchBatchNorm2d() throws {
        let state = try NumPyArchive(contentsOf: fixture("pytorch-batchnorm.npz"))
        var sbn = try SpatialBatchNorm<Float>(pytorch: state, prefix: "bn2d.")
        let eval = try sbn.forward(state.tensor("bn2d_eval_input"), mode: .inference).output
        #expect(normwiseError(eval.scalars, try state.tensor("bn2d_eval_output", as: Float.self).scalars) < 1e-5)
        let train = try sbn.forward(state.tensor("bn2d_train_input"), mode: .training).output
        #expect(normwiseError(train.scalars, try state.tensor("bn2d_train_output", as: Float.self).scalars) < 1e-5)
        #expect(normwiseError(sbn.runningVariance, try state.tensor("bn2d_next_running_var", as: Float.self).scalars) < 1e-5)
        // A Double layer takes PyTorch's float32 state, widened exactly.
        let wide = try SpatialBatchNorm<Double>(pytorch: state, prefix: "bn2d.")
        #expect(wide.gamma == sbn.gamma.map(Double.init) && wide.runningVariance.count == 3)
        #expect(throws: NormError.self) { try BatchNorm<Float>(pytorch: state, prefix: "bn3d.") }
    }
}

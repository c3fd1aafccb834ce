import Foundation
import NormKit
import Testing

/// A file of `Tests/NormKitTests/Fixtures`.
private func fixture(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent(name).path
}

@Suite("PyTorch state of LayerNorm, RMSNorm, GroupNorm and InstanceNorm")
struct PyTorchLayersTests {
    let state: NumPyArchive

    init() throws {
        state = try NumPyArchive(contentsOf: fixture("pytorch-layers.npz"))
    }

    /// Forward and backward of `layer` against PyTorch's on the fixture's
    /// batch (float64 both sides), and its `pytorchState` against the module's.
    func check<Layer: BufferedNormalizationLayer<Double>>(
        _ name: String, _ layer: Layer, state exported: NumPyArchive, hasBias: Bool = true
    ) throws {
        var layer = layer
        let (y, cache) = try layer.forward(state.tensor("\(name)_x"), mode: .training)
        let grads = try layer.backward(state.tensor("\(name)_dy"), cache: cache)
        try expectMatchesFixture(state, name, y: y, gradients: grads, hasBias: hasBias)
        // pytorchState gives back the module's arrays, under its names.
        let keys = hasBias ? ["weight", "bias"] : ["weight"]
        #expect(exported.names == keys.map { name + "." + $0 }, "\(name): \(exported.names)")
        for key in keys { #expect(exported[name + "." + key] == state[name + "." + key], "\(name).\(key)") }
        if let directory = ProcessInfo.processInfo.environment["NORMKIT_PYTORCH_STATE"] {
            // For make_porting_fixture.py --check: the state without prefix, an input and the output.
            var plain = NumPyArchive()
            for key in keys { plain[key] = exported[name + "." + key] }
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try plain.write(to: "\(directory)/\(name).npz")
            try state.tensor("\(name)_x", as: Double.self).writeNPY(to: "\(directory)/\(name)_input.npy")
            try y.writeNPY(to: "\(directory)/\(name)_output.npy")
        }
    }

    @Test("nn.LayerNorm(6): outputs, gradients and state, in and out")
    func layerNorm() throws {
        let ln = try LayerNorm<Double>(pytorch: state, prefix: "layernorm.")
        #expect(ln.featureCount == 6)
        try check("layernorm", ln, state: ln.pytorchState(prefix: "layernorm."))
        // bias=False: no shift (Affine.scaleOnly), and the state goes back without
        // a bias. No weight: the size is unknown, an error naming it.
        var noBias = state
        noBias["layernorm.bias"] = nil
        let scaleOnly = try LayerNorm<Double>(pytorch: noBias, prefix: "layernorm.")
        #expect(scaleOnly.affine == .scaleOnly && scaleOnly.beta.isEmpty && scaleOnly.gamma == ln.gamma)
        #expect(scaleOnly.pytorchState(prefix: "layernorm.").names == ["layernorm.weight"])
        noBias["layernorm.weight"] = nil
        #expect(throws: NormError.invalidNumPyData(
            expected: "'layernorm.weight' (a LayerNorm with its affine parameters, which give its size)",
            found: "\(noBias.names)")) { try LayerNorm<Double>(pytorch: noBias, prefix: "layernorm.") }
        // A float32 state in a Float layer, and a bias of the wrong length.
        var wrong = state
        wrong["layernorm.bias"] = NumPyArray([Float(1), 2])
        #expect(throws: NormError.invalidNumPyData(expected: "'layernorm.bias' of shape [6], as 'weight'",
                                                   found: "shape [2]")) {
            try LayerNorm<Float>(pytorch: wrong, prefix: "layernorm.")
        }
    }

    @Test("nn.RMSNorm(6, eps=1e-5): outputs, gradients and state; a bias entry gives a shift")
    func rmsNorm() throws {
        let rms = try RMSNorm<Double>(pytorch: state, prefix: "rmsnorm.")
        #expect(rms.affine == .scaleOnly && rms.beta.isEmpty)
        try check("rmsnorm", rms, state: rms.pytorchState(prefix: "rmsnorm."), hasBias: false)
        var withBias = state
        withBias["rmsnorm.bias"] = NumPyArray([0.5, 0, 0, 0, 0, -0.25])
        let shifted = try RMSNorm<Double>(pytorch: withBias, prefix: "rmsnorm.")
        #expect(shifted.affine == .scaleAndShift && shifted.beta == [0.5, 0, 0, 0, 0, -0.25])
        withBias["rmsnorm.bias"] = NumPyArray([0.5])
        #expect(throws: NormError.self) { try RMSNorm<Double>(pytorch: withBias, prefix: "rmsnorm.") }
    }

    @Test("nn.GroupNorm(2, 6): outputs, gradients and state; the group count must divide")
    func groupNorm() throws {
        let gn = try GroupNorm<Double>(pytorch: state, prefix: "groupnorm.", groupCount: 2)
        try check("groupnorm", gn, state: gn.pytorchState(prefix: "groupnorm."))
        #expect(throws: NormError.invalidGroupCount(groupCount: 4, channelCount: 6)) {
            try GroupNorm<Double>(pytorch: state, prefix: "groupnorm.", groupCount: 4)
        }
    }

    @Test("nn.InstanceNorm2d(3, affine=True): outputs, gradients and state; affine=False needs channelCount")
    func instanceNorm() throws {
        let instance = try InstanceNorm<Double>(pytorch: state, prefix: "instancenorm.")
        try check("instancenorm", instance, state: instance.pytorchState(prefix: "instancenorm."))
        let empty = NumPyArchive()
        #expect(throws: NormError.self) { try InstanceNorm<Double>(pytorch: empty) }
        // PyTorch's default affine=False saves nothing: no gamma, no beta.
        #expect(try InstanceNorm<Double>(pytorch: empty, channelCount: 3)
                == InstanceNorm<Double>(channelCount: 3, affine: .none))
        var tracked = state
        tracked["instancenorm.running_mean"] = NumPyArray([0.0, 0, 0])
        #expect(throws: NormError.self) { try InstanceNorm<Double>(pytorch: tracked, prefix: "instancenorm.") }
        #expect(throws: NormError.parameterCountMismatch(name: "weight", expected: 4, actual: 3)) {
            try InstanceNorm<Double>(pytorch: state, prefix: "instancenorm.", channelCount: 4)
        }
    }
}

extension PyTorchLayersTests {
    @Test("nn.LayerNorm([3, 4]) on (2, 5, 3, 4) and nn.RMSNorm(6) on (batch, tokens, D): the normalized shape from weight")
    func normalizedShapes() throws {
        let ln = try LayerNorm<Double>(pytorch: state, prefix: "layernorm2d.")
        #expect(ln.normalizedShape == [3, 4] && ln.featureCount == 12)
        try check("layernorm2d", ln, state: ln.pytorchState(prefix: "layernorm2d."))
        #expect(ln.pytorchState(prefix: "layernorm2d.")["layernorm2d.weight"]?.shape == [3, 4])
        let rms = try RMSNorm<Double>(pytorch: state, prefix: "rmsnorm3d.")
        #expect(rms.normalizedShape == [6])
        try check("rmsnorm3d", rms, state: rms.pytorchState(prefix: "rmsnorm3d."), hasBias: false)
        var mismatched = state
        mismatched["layernorm2d.bias"] = NumPyArray(try Tensor<Double>(zeros: [4, 3]))
        #expect(throws: NormError.self) { try LayerNorm<Double>(pytorch: mismatched, prefix: "layernorm2d.") }
    }
}

@Suite("LayerNorm and RMSNorm over (..., normalizedShape)")
struct LeadingDimensionTests {
    @Test("leading dimensions are samples: the same bits as the (N, D) matrix, every entry point, both backends")
    func leadingDimensions() throws {
        for backend in [Backend.blas, .naive] {
            let x: Tensor<Float> = randomInput([2, 5, 3, 4], shift: 10000.1, seed: 1)
            let dy: Tensor<Float> = randomInput([2, 5, 3, 4], scale: 1, shift: 0, seed: 2)
            for (shape, layerShape) in [([10, 12], [12]), ([2, 5, 12], [12]), ([2, 5, 3, 4], [3, 4]), ([120], [120])] {
                var matrix = try LayerNorm<Float>(featureCount: layerShape.reduce(1, *), backend: backend)
                var shaped = try LayerNorm<Float>(normalizedShape: layerShape, backend: backend)
                var rms = try RMSNorm<Float>(normalizedShape: layerShape, backend: backend)
                var rmsMatrix = try RMSNorm<Float>(featureCount: layerShape.reduce(1, *), backend: backend)
                let flat = try x.reshaped([-1, layerShape.reduce(1, *)]), flatDy = try dy.reshaped(flat.shape)
                let (y, cache) = try shaped.forward(x.reshaped(shape), mode: .training)
                let (yFlat, cacheFlat) = try matrix.forward(flat, mode: .training)
                #expect(y.shape == shape && sameBits(y.scalars, yFlat.scalars), "\(backend) \(shape)")
                let g = try shaped.backward(dy.reshaped(shape), cache: cache)
                let gFlat = try matrix.backward(flatDy, cache: cacheFlat)
                #expect(g.input.shape == shape && sameBits(g.input.scalars, gFlat.input.scalars))
                #expect(sameBits(g.gamma, gFlat.gamma) && sameBits(g.beta, gFlat.beta))
                #expect(sameBits(try shaped.infer(x.reshaped(shape)).scalars, yFlat.scalars))
                #expect(sameBits(try rms.forward(x.reshaped(shape), mode: .training).output.scalars,
                                 try rmsMatrix.forward(flat, mode: .training).output.scalars))
                // 16 bits, the same shapes.
                let halves = x.scalars.map { BFloat16($0) }
                var y16 = [BFloat16](repeating: BFloat16(0), count: halves.count), yFlat16 = y16
                var c16 = NormCache<Float>(), workspace = Workspace<Float>()
                try halves.withUnsafeBufferPointer { input in
                    try y16.withUnsafeMutableBufferPointer {
                        try shaped.forward(input, shape: shape, mode: .training, into: $0, cache: &c16, workspace: &workspace)
                    }
                    try yFlat16.withUnsafeMutableBufferPointer {
                        try matrix.forward(input, shape: flat.shape, mode: .training, into: $0, cache: &c16,
                                           workspace: &workspace)
                    }
                }
                #expect(y16.map(\.bitPattern) == yFlat16.map(\.bitPattern))
            }
        }
    }

    @Test("shapes that do not end in the normalized shape, no rows, or a bad normalized shape are refused, state unchanged")
    func refusals() throws {
        var ln = try LayerNorm<Double>(featureCount: 6)
        let before = ln
        for shape in [[4, 7], [0, 6], [2, 0, 6], [6, 4], [3, 2]] {
            #expect(throws: NormError.invalidShape(expected: "(..., 6) with at least one row", actual: shape)) {
                try ln.forward(Tensor<Double>(zeros: shape), mode: .training)
            }
        }
        #expect(ln == before)
        var shaped = try RMSNorm<Double>(normalizedShape: [3, 4])
        #expect(throws: NormError.invalidShape(expected: "(..., 3, 4) with at least one row", actual: [2, 4, 3])) {
            try shaped.forward(Tensor<Double>(zeros: [2, 4, 3]), mode: .training)
        }
        #expect(try shaped.forward(Tensor<Double>(zeros: [3, 4]), mode: .training).output.shape == [3, 4])
        for bad in [[], [3, 0], [-1, 4]] {
            #expect(throws: NormError.invalidShape(expected: "a normalized shape of dimensions >= 1", actual: bad)) {
                try LayerNorm<Float>(normalizedShape: bad)
            }
        }
        // Codable keeps the normalized shape; a shape that does not multiply out is refused.
        let layer = try LayerNorm<Float>(normalizedShape: [3, 4])
        let data = try JSONEncoder().encode(layer)
        #expect(try JSONDecoder().decode(LayerNorm<Float>.self, from: data) == layer)
        #expect(try JSONDecoder().decode(RMSNorm<Double>.self, from: JSONEncoder().encode(shaped)) == shaped)
        var object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        object["normalizedShape"] = [3, 5]
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(LayerNorm<Float>.self, from: JSONSerialization.data(withJSONObject: object))
        }
    }
}

extension PyTorchLayersTests {
    @Test("nn.InstanceNorm2d(3, affine=True, track_running_stats=True): three training steps, running state, eval with its frozen gradients, state in and out")
    func instanceNormTracked() throws {
        let name = "instancenorm_tracked"
        var layer = try InstanceNorm<Double>(pytorch: state, prefix: name + "0.")
        #expect(layer.runningStatistics == .exponential && layer.momentum == 0.9)
        #expect(layer.varianceEstimator == .unbiased && layer.runningVariance == [1, 1, 1])
        for step in 1...3 {
            let (y, cache) = try layer.forward(state.tensor("\(name)_x\(step)"), mode: .training)
            let grads = step == 3 ? try layer.backward(state.tensor("\(name)_dy3"), cache: cache) : nil
            try expectMatchesFixture(state, name, suffix: "\(step)", y: y, gradients: grads)
        }
        #expect(normwiseError(layer.runningMean, try state.tensor(name + ".running_mean").scalars) < 1e-14)
        #expect(normwiseError(layer.runningVariance, try state.tensor(name + ".running_var").scalars) < 1e-13)
        #expect(layer.batchesTracked == 3)   // PyTorch's InstanceNorm leaves num_batches_tracked at 0

        // Eval: the running statistics, and the exact gradient with them as constants.
        let x: Tensor<Double> = try state.tensor("\(name)_eval_x")
        let (y, cache) = try layer.forward(x, mode: .inference)
        let grads = try layer.backward(state.tensor("\(name)_eval_dy"), cache: cache)
        #expect(normwiseError(y.scalars, try state.tensor("\(name)_eval_y").scalars) < 1e-12)
        #expect(normwiseError(grads.input.scalars, try state.tensor("\(name)_eval_dx").scalars) < 1e-12)
        #expect(normwiseError(grads.gamma, try state.tensor("\(name)_eval_dweight").scalars) < 1e-12)
        #expect(normwiseError(grads.beta, try state.tensor("\(name)_eval_dbias").scalars) < 1e-12)
        #expect(sameBits(try layer.infer(x).scalars, y.scalars))

        // The state after the steps, out and in again.
        let exported = layer.pytorchState(prefix: name + ".")
        #expect(Set(exported.names) == Set(["weight", "bias", "running_mean", "running_var", "num_batches_tracked"].map { name + "." + $0 }))
        var imported = try InstanceNorm<Double>(pytorch: state, prefix: name + ".")
        #expect(normwiseError(try imported.forward(x, mode: .inference).output.scalars,
                              try state.tensor("\(name)_eval_y").scalars) < 1e-12)
        if let directory = ProcessInfo.processInfo.environment["NORMKIT_PYTORCH_STATE"] {
            var plain = NumPyArchive()
            for key in exported.names { plain[String(key.dropFirst(name.count + 1))] = exported[key] }
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try plain.write(to: "\(directory)/\(name).npz")
            try x.writeNPY(to: "\(directory)/\(name)_input.npy")
            try y.writeNPY(to: "\(directory)/\(name)_output.npy")
        }
    }
}

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
        #expect(normwiseError(y.scalars, try state.tensor("\(name)_y", as: Double.self).scalars) < 1e-12, "\(name) y")
        let grads = try layer.backward(state.tensor("\(name)_dy"), cache: cache)
        #expect(normwiseError(grads.input.scalars, try state.tensor("\(name)_dx", as: Double.self).scalars) < 1e-10,
                "\(name) dx")
        #expect(normwiseError(grads.gamma, try state.tensor("\(name)_dweight", as: Double.self).scalars) < 1e-12,
                "\(name) dweight")
        if hasBias {
            #expect(normwiseError(grads.beta, try state.tensor("\(name)_dbias", as: Double.self).scalars) < 1e-12,
                    "\(name) dbias")
        }
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
        // bias=False: beta zeros. No weight: the size is unknown, an error naming it.
        var noBias = state
        noBias["layernorm.bias"] = nil
        #expect(try LayerNorm<Double>(pytorch: noBias, prefix: "layernorm.").beta == Array(repeating: 0, count: 6))
        noBias["layernorm.weight"] = nil
        #expect(throws: NormError.invalidNumPyData(
            expected: "'layernorm.weight' (a LayerNorm with its affine parameters, which give its size)",
            found: "\(noBias.names)")) { try LayerNorm<Double>(pytorch: noBias, prefix: "layernorm.") }
        // A float32 state in a Float layer, and a bias of the wrong length.
        var wrong = state
        wrong["layernorm.bias"] = NumPyArray([Float(1), 2])
        #expect(throws: NormError.parameterCountMismatch(name: "bias", expected: 6, actual: 2)) {
            try LayerNorm<Float>(pytorch: wrong, prefix: "layernorm.")
        }
    }

    @Test("nn.RMSNorm(6, eps=1e-5): outputs, gradients and state; a bias is refused")
    func rmsNorm() throws {
        let rms = try RMSNorm<Double>(pytorch: state, prefix: "rmsnorm.")
        try check("rmsnorm", rms, state: rms.pytorchState(prefix: "rmsnorm."), hasBias: false)
        var withBias = state
        withBias["rmsnorm.bias"] = NumPyArray([Double](repeating: 0, count: 6))
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
        #expect(try InstanceNorm<Double>(pytorch: empty, channelCount: 3) == InstanceNorm<Double>(channelCount: 3))
        var tracked = state
        tracked["instancenorm.running_mean"] = NumPyArray([0.0, 0, 0])
        #expect(throws: NormError.self) { try InstanceNorm<Double>(pytorch: tracked, prefix: "instancenorm.") }
        #expect(throws: NormError.parameterCountMismatch(name: "weight", expected: 4, actual: 3)) {
            try InstanceNorm<Double>(pytorch: state, prefix: "instancenorm.", channelCount: 4)
        }
    }
}

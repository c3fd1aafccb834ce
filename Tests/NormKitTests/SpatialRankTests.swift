import Foundation
import NormKit
import Testing

/// A file of `Tests/NormKitTests/Fixtures`.
private func fixture(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent(name).path
}

@Suite("Ranks 3 and 5 for SpatialBatchNorm, GroupNorm and InstanceNorm")
struct SpatialRankTests {
    /// Forward (training, inference), backward and infer of `layer` on `x`
    /// and on `x` reshaped to `same`, which has the same geometry: the same bits.
    func sameAsReshaped<Layer: BufferedNormalizationLayer<Float>>(
        _ layer: Layer, _ x: Tensor<Float>, _ same: [Int], _ label: String
    ) throws {
        var a = layer, b = layer
        let dy: Tensor<Float> = randomInput(x.shape, scale: 1, shift: 0.2, seed: 9)
        for mode in [Mode.training, .inference] {
            let (y, cache) = try a.forward(x, mode: mode)
            let (yb, cacheB) = try b.forward(x.reshaped(same), mode: mode)
            #expect(y.shape == x.shape && sameBits(y.scalars, yb.scalars), "\(label) \(mode) y")
            let g = try a.backward(dy, cache: cache), gb = try b.backward(dy.reshaped(same), cache: cacheB)
            #expect(g.input.shape == x.shape && sameBits(g.input.scalars, gb.input.scalars), "\(label) \(mode) dx")
            #expect(sameBits(g.gamma, gb.gamma) && sameBits(g.beta, gb.beta), "\(label) \(mode) dgamma, dbeta")
        }
        #expect(sameBits(try a.infer(x).scalars, try b.infer(x.reshaped(same)).scalars), "\(label) infer")
    }

    @Test("(N, C, L) and (N, C, D, H, W) are (N, C, H, W) with the spatial extent in one or three dimensions")
    func ranksThreeAndFive() throws {
        for backend in [Backend.blas, .naive] {
            let x3: Tensor<Float> = randomInput([3, 4, 35], shift: 100.1, seed: 1)
            let x5: Tensor<Float> = randomInput([2, 4, 3, 5, 7], shift: 100.1, seed: 2)
            let sbn = try SpatialBatchNorm<Float>(channelCount: 4, backend: backend)
            try sameAsReshaped(sbn, x3, [3, 4, 5, 7], "SpatialBatchNorm (N, C, L) \(backend)")
            try sameAsReshaped(sbn, x5, [2, 4, 15, 7], "SpatialBatchNorm (N, C, D, H, W) \(backend)")
            let last = try SpatialBatchNorm<Float>(channelCount: 4, layout: .nhwc, activation: .relu, backend: backend)
            try sameAsReshaped(last, try x3.reshaped([3, 35, 4]), [3, 5, 7, 4], "SpatialBatchNorm (N, L, C) \(backend)")
            try sameAsReshaped(last, try x5.reshaped([2, 3, 5, 7, 4]), [2, 15, 7, 4],
                               "SpatialBatchNorm (N, D, H, W, C) \(backend)")
            let gn = try GroupNorm<Float>(channelCount: 4, groupCount: 2, backend: backend)
            try sameAsReshaped(gn, x3, [3, 4, 5, 7], "GroupNorm (N, C, L) \(backend)")
            try sameAsReshaped(gn, x5, [2, 4, 15, 7], "GroupNorm (N, C, D, H, W) \(backend)")
            let instance = try InstanceNorm<Float>(channelCount: 4, backend: backend)
            try sameAsReshaped(instance, x3, [3, 4, 35, 1], "InstanceNorm (N, C, L) \(backend)")
            try sameAsReshaped(instance, x5, [2, 4, 105, 1], "InstanceNorm (N, C, D, H, W) \(backend)")
            try sameAsReshaped(SyncSpatialBatchNorm(sbn, communicator: SingleProcess()), x3, [3, 4, 35, 1],
                               "SyncSpatialBatchNorm (N, C, L) \(backend)")
        }
        // 16 bits on a rank-5 input: the rank-4 reshape's bits.
        var sbn = try SpatialBatchNorm<Float>(channelCount: 4)
        let x: Tensor<Float> = randomInput([2, 4, 3, 5, 7], shift: 0.3, seed: 3)
        let halves = x.scalars.map { Float16($0) }
        var y5 = [Float16](repeating: 0, count: halves.count), y4 = y5
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        try halves.withUnsafeBufferPointer { input in
            try y5.withUnsafeMutableBufferPointer {
                try sbn.forward(input, shape: x.shape, mode: .inference, into: $0, cache: &cache, workspace: &workspace)
            }
            try y4.withUnsafeMutableBufferPointer {
                try sbn.forward(input, shape: [2, 4, 15, 7], mode: .inference, into: $0, cache: &cache,
                                workspace: &workspace)
            }
        }
        #expect(y5.map(\.bitPattern) == y4.map(\.bitPattern))
    }

    @Test("ranks other than 3-5, a wrong channel count or an empty extent are refused, naming every rank")
    func refusals() throws {
        var sbn = try SpatialBatchNorm<Double>(channelCount: 3)
        var last = try SpatialBatchNorm<Double>(channelCount: 3, layout: .nhwc)
        var gn = try GroupNorm<Double>(channelCount: 4, groupCount: 2)
        let before = (sbn, last, gn)
        for shape in [[2, 3], [2, 3, 2, 2, 2, 2], [2, 4, 5], [2, 3, 0], [0, 3, 4, 5, 6]] {
            #expect(throws: NormError.invalidShape(expected: "(N, 3, L), (N, 3, H, W) or (N, 3, D, H, W)",
                                                   actual: shape)) {
                try sbn.forward(Tensor<Double>(zeros: shape), mode: .training)
            }
        }
        #expect(throws: NormError.invalidShape(expected: "(N, L, 3), (N, H, W, 3) or (N, D, H, W, 3)",
                                               actual: [2, 3, 5])) {
            try last.forward(Tensor<Double>(zeros: [2, 3, 5]), mode: .training)
        }
        #expect(throws: NormError.invalidShape(expected: "(N, 4, L), (N, 4, H, W) or (N, 4, D, H, W)",
                                               actual: [2, 4])) {
            try gn.forward(Tensor<Double>(zeros: [2, 4]), mode: .training)
        }
        #expect(sbn == before.0 && last == before.1 && gn == before.2)
    }

    @Test("PyTorch BatchNorm1d(momentum=None) on (N, C, L), BatchNorm3d(track_running_stats=False), GroupNorm on 5-D")
    func pytorchRanks() throws {
        let state = try NumPyArchive(contentsOf: fixture("pytorch-layers.npz"))
        var bn = try SpatialBatchNorm<Double>(channelCount: 3, varianceEstimator: .unbiased, runningStatistics: .cumulative)
        bn.gamma = try state.tensor("bn1d_ncl_weight0").scalars
        bn.beta = try state.tensor("bn1d_ncl_bias0").scalars
        for step in 1...3 {
            let y = try bn.forward(state.tensor("bn1d_ncl_x\(step)"), mode: .training).output
            #expect(normwiseError(y.scalars, try state.tensor("bn1d_ncl_y\(step)", as: Double.self).scalars) < 1e-12)
        }
        #expect(normwiseError(bn.runningMean, try state.tensor("bn1d_ncl.running_mean", as: Double.self).scalars) < 1e-14)
        #expect(normwiseError(bn.runningVariance, try state.tensor("bn1d_ncl.running_var", as: Double.self).scalars) < 1e-13)
        var imported = try SpatialBatchNorm<Double>(pytorch: state, prefix: "bn1d_ncl.", pytorchMomentum: nil)
        #expect(imported.batchesTracked == 3 && imported.runningStatistics == .cumulative)
        let eval = try imported.forward(state.tensor("bn1d_ncl_eval_x"), mode: .inference).output
        #expect(normwiseError(eval.scalars, try state.tensor("bn1d_ncl_eval_y", as: Double.self).scalars) < 1e-12)

        for (name, layer) in [("bn3d", try SpatialBatchNorm<Double>(pytorch: state, prefix: "bn3d.") as any BufferedNormalizationLayer<Double>),
                              ("groupnorm3d", try GroupNorm<Double>(pytorch: state, prefix: "groupnorm3d.", groupCount: 2))] {
            var layer = layer
            let (y, cache) = try layer.forward(state.tensor("\(name)_x"), mode: .inference)
            let g = try layer.backward(state.tensor("\(name)_dy"), cache: cache)
            try expectMatchesFixture(state, name, y: y, gradients: g)
        }
    }
}

import Foundation
import NormKit
import Testing

/// A file of `Tests/NormKitTests/Fixtures`.
private func fixture(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent(name).path
}

/// The axes that move channels from position 1 to last, and back.
private func toLast(_ rank: Int) -> [Int] { [0] + Array(2..<rank) + [1] }
private func toFirst(_ rank: Int) -> [Int] { [0, rank - 1] + Array(1..<(rank - 1)) }

@Suite("GroupNorm and InstanceNorm channels last (DESIGN §2.5)")
struct ChannelsLastGroupTests {
    /// The channels-last layer against the channels-first one on the permuted
    /// input: outputs, statistics and gradients (normwise relative, `tolerance`).
    func compare<Layer: ActivatedNormalizationLayer>(
        first: Layer, last: Layer, shape: [Int], tolerance: Double, residual: Bool, shift: Double, _ what: String
    ) throws where Layer.Cache == NormCache<Layer.Scalar> {
        typealias S = Layer.Scalar
        var (first, last) = (first, last)
        let rank = shape.count
        let x: Tensor<S> = randomInput(shape, scale: 3.7, shift: shift, seed: UInt64(shape.reduce(7, +)))
        let dy: Tensor<S> = randomInput(shape, scale: 1, shift: 0.3, seed: 5)
        let r: Tensor<S>? = residual ? randomInput(shape, scale: 2, shift: -0.5, seed: 6) : nil
        let xl = try x.permuted(toLast(rank)), dyl = try dy.permuted(toLast(rank))
        let (yf, cf) = try r.map { try first.forward(x, residual: $0, mode: .training) }
            ?? first.forward(x, mode: .training)
        let (yl, cl) = try r.map { try last.forward(xl, residual: $0.permuted(toLast(rank)), mode: .training) }
            ?? last.forward(xl, mode: .training)
        if ProcessInfo.processInfo.environment["NORMKIT_SHOW_ERRORS"] != nil {
            print(what, shift, normwiseError(try yl.permuted(toFirst(rank)).scalars, yf.scalars))
        }
        #expect(normwiseError(try yl.permuted(toFirst(rank)).scalars, yf.scalars) < tolerance, "\(what) y")
        #expect(normwiseError(cl.mean, cf.mean, scale: shift + 3.7) < tolerance, "\(what) mean")
        #expect(normwiseError(cl.inverseStandardDeviation, cf.inverseStandardDeviation) < tolerance, "\(what) invstd")
        let gf = try first.backward(dy, cache: cf), gl = try last.backward(dyl, cache: cl)
        #expect(normwiseError(try gl.input.permuted(toFirst(rank)).scalars, gf.input.scalars) < 10 * tolerance,
                "\(what) dx")
        #expect(normwiseError(gl.gamma, gf.gamma) < 10 * tolerance, "\(what) dgamma")
        #expect(normwiseError(gl.beta, gf.beta) < 10 * tolerance, "\(what) dbeta")
        if !residual {
            #expect(sameBits(try last.infer(xl).scalars, yl.scalars), "\(what) infer")
        }
    }

    @Test("the bits of neither layout, but the channels-first results to rounding: ranks 3-5, groups 1 to C, ReLU and residual, both backends")
    func matchesChannelsFirst() throws {
        for backend in [Backend.blas, .naive] {
            for shape in [[3, 6, 7], [2, 6, 5, 3], [2, 6, 3, 2, 5], [1, 6, 33, 17]] { for shift in [0.3, 10000.1] {
                // Two correct results differ by the rounding of x - mean, amplified by shift / 3.7.
                let condition = max(1, shift / 3.7)
                for activation in [FusedActivation.none, .relu] {
                    let residual = activation == .relu
                    for groups in [1, 2, 3, 6] {
                        try compare(
                            first: try GroupNorm<Double>(channelCount: 6, groupCount: groups, activation: activation, backend: backend),
                            last: try GroupNorm<Double>(channelCount: 6, groupCount: groups, layout: .nhwc,
                                                        activation: activation, backend: backend),
                            shape: shape, tolerance: 4e-15 * condition, residual: residual, shift: shift,
                            "GroupNorm(\(groups)) \(shape) \(activation) \(backend)")
                    }
                    try compare(first: try InstanceNorm<Double>(channelCount: 6, activation: activation, backend: backend),
                                last: try InstanceNorm<Double>(channelCount: 6, layout: .nhwc, activation: activation,
                                                               backend: backend),
                                shape: shape, tolerance: 4e-15 * condition, residual: residual, shift: shift,
                                "InstanceNorm \(shape) \(activation) \(backend)")
                    try compare(
                        first: try GroupNorm<Float>(channelCount: 6, groupCount: 2, activation: activation, backend: backend),
                        last: try GroupNorm<Float>(channelCount: 6, groupCount: 2, layout: .nhwc, activation: activation,
                                                   backend: backend),
                        shape: shape, tolerance: 2e-6 * condition, residual: residual, shift: shift,
                        "Float GroupNorm(2) \(shape) \(backend)")
                }
            }}
        }
    }

    @Test("PyTorch nn.GroupNorm(2, 4) on a 5-D input in channels-last order: outputs and gradients")
    func pytorchChannelsLast() throws {
        let state = try NumPyArchive(contentsOf: fixture("pytorch-layers.npz"))
        var layer = try GroupNorm<Double>(pytorch: state, prefix: "groupnorm3d.", groupCount: 2)
        layer.layout = .nhwc
        let x: Tensor<Double> = try state.tensor("groupnorm3d_x")
        let (y, cache) = try layer.forward(x.permuted(toLast(5)), mode: .inference)
        let g = try layer.backward(state.tensor("groupnorm3d_dy", as: Double.self).permuted(toLast(5)), cache: cache)
        let back = NormGradients(input: try g.input.permuted(toFirst(5)), gamma: g.gamma, beta: g.beta)
        try expectMatchesFixture(state, "groupnorm3d", y: try y.permuted(toFirst(5)), gradients: back)
    }

    @Test("InstanceNorm channels last with running statistics: frozen inference is SpatialBatchNorm NHWC's, bit for bit")
    func instanceRunning() throws {
        var layer = try InstanceNorm<Float>(channelCount: 5, layout: .nhwc, runningStatistics: .exponential)
        var first = try InstanceNorm<Float>(channelCount: 5, runningStatistics: .exponential)
        for seed in UInt64(0)..<2 {
            let x: Tensor<Float> = randomInput([3, 5, 4, 2], shift: 100.1, seed: seed)
            _ = try first.forward(x, mode: .training)
            _ = try layer.forward(x.permuted([0, 2, 3, 1]), mode: .training)
        }
        #expect(normwiseError(layer.runningMean, first.runningMean) < 1e-6)
        #expect(normwiseError(layer.runningVariance, first.runningVariance) < 1e-5)
        var spatial = try SpatialBatchNorm<Float>(channelCount: 5, layout: .nhwc)
        (spatial.runningMean, spatial.runningVariance) = (layer.runningMean, layer.runningVariance)
        let x: Tensor<Float> = randomInput([2, 3, 4, 5], seed: 4)
        let (y, cache) = try layer.forward(x, mode: .inference)
        let (ys, spatialCache) = try spatial.forward(x, mode: .inference)
        #expect(sameBits(y.scalars, ys.scalars))
        let dy: Tensor<Float> = randomInput([2, 3, 4, 5], scale: 1, shift: 0, seed: 8)
        #expect(sameBits(try layer.backward(dy, cache: cache).input.scalars,
                         try spatial.backward(dy, cache: spatialCache).input.scalars))
    }

    @Test("bad input: a channels-first shape, a channels-first cache, a short 16-bit buffer; a constant group gives beta, in 16 bits rounded")
    func badInput() throws {
        var layer = try GroupNorm<Float>(channelCount: 4, groupCount: 2, layout: .nhwc)
        layer.beta = [0.1, -2.5, 3, 7.25]
        let before = layer
        #expect(throws: NormError.invalidShape(expected: "(N, L, 4), (N, H, W, 4) or (N, D, H, W, 4)",
                                               actual: [2, 4, 3, 3])) {
            try layer.forward(Tensor<Float>(randomNormal: [2, 4, 3, 3], seed: 1), mode: .training)
        }
        #expect(layer == before)
        var first = try GroupNorm<Float>(channelCount: 4, groupCount: 2)
        let (_, cache) = try first.forward(Tensor<Float>(randomNormal: [2, 4, 4, 4], seed: 1), mode: .training)
        #expect(throws: NormError.cacheMismatch(expected: layer.cacheOrigin.description,
                                                actual: first.cacheOrigin.description)) {
            try layer.backward(Tensor<Float>(randomNormal: [2, 4, 4, 4], seed: 2), cache: cache)
        }
        #expect(layer.cacheOrigin.description == "GroupNorm(channelCount: 4, groupCount: 2, layout: .nhwc)")
        var cache16 = NormCache<Float>(), workspace = Workspace<Float>()
        let x16 = [Float16](repeating: 1, count: 32)
        var y16 = x16
        // 16 bits: a constant input gives beta rounded, exactly; a short output throws.
        try reducedForward(&layer, x16, shape: [2, 2, 2, 4], &y16, &cache16, &workspace)
        #expect(y16.map(\.bitPattern) == (0..<32).map { Float16(layer.beta[$0 % 4]).bitPattern })
        var short = [Float16](repeating: 0, count: 31)
        #expect(throws: NormError.bufferCountMismatch(name: "output", expected: 32, actual: 31)) {
            try reducedForward(&layer, x16, shape: [2, 2, 2, 4], &short, &cache16, &workspace)
        }
        #expect(layer == before)
        // A constant input: each group's variance is 0, and y is beta exactly.
        let constant = try Tensor<Float>(shape: [2, 3, 5, 4], repeating: 10000.1)
        let y = try layer.forward(constant, mode: .training).output
        #expect(y.scalars == (0..<120).map { layer.beta[$0 % 4] })
    }
}

extension ProcessWideTests {
    @Suite("Channels-last group statistics over threads")
    struct ChannelsLastThreadTests {
        @Test("the same bits at every thread count")
        func threads() throws {
            let saved = Threading.threadCount
            defer { Threading.threadCount = saved }
            let shape = [37, 19, 23, 8]
            let x: Tensor<Float> = randomInput(shape, scale: 3, shift: 100.1, seed: 61)
            let dy: Tensor<Float> = randomInput(shape, scale: 1, shift: 0, seed: 62)
            var results: [[Float]] = []
            for count in [1, 2, 3] {
                Threading.threadCount = count
                var layer = try GroupNorm<Float>(channelCount: 8, groupCount: 4, layout: .nhwc, activation: .relu)
                let (y, cache) = try layer.forward(x, mode: .training)
                let g = try layer.backward(dy, cache: cache)
                results.append(y.scalars + g.input.scalars + g.gamma + g.beta + cache.mean)
            }
            #expect(sameBits(results[0], results[1]))
            #expect(sameBits(results[0], results[2]))
        }
    }
}

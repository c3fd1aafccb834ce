import Foundation
import NormKit
import Testing

/// GroupNorm over `(N, C, H, W)` in `Double` on the widened 16-bit values:
/// `y`, `dx`, the parameter gradients, and the size of the terms of each.
func groupReference<S: TestStorage>(
    x: [S], dy: [S], samples: Int, channels: Int, groups: Int, spatial: Int, gamma: [Float],
    beta: [Float], epsilon: Double
) -> (y: [Double], yScale: [Double], dx: [Double], dxScale: [Double], dgamma: [Double],
      dbeta: [Double], dgammaScale: [Double], dbetaScale: [Double]) {
    let perGroup = channels / groups, length = perGroup * spatial, l = Double(length)
    var y = [Double](repeating: 0, count: x.count), yScale = y, dx = y, dxScale = y
    var dgamma = [Double](repeating: 0, count: channels), dbeta = dgamma
    var dgammaScale = dgamma, dbetaScale = dgamma
    for n in 0..<samples {
        for g in 0..<groups {
            let start = (n * channels + g * perGroup) * spatial
            let at = Array(start..<(start + length))
            let xs = at.map { Double(x[$0].float) }, gs = at.map { Double(dy[$0].float) }
            let m = xs.reduce(0, +) / l
            let v = xs.map { ($0 - m) * ($0 - m) }.reduce(0, +) / l
            let s = 1 / (v + epsilon).squareRoot()
            let xhat = xs.map { ($0 - m) * s }
            let gammas = (0..<length).map { Double(gamma[g * perGroup + $0 / spatial]) }
            let dxhat = (0..<length).map { gs[$0] * gammas[$0] }
            let meanDxhat = dxhat.reduce(0, +) / l
            let meanDxhatXhat = zip(dxhat, xhat).map(*).reduce(0, +) / l
            let scale = s * (dxhat.map(abs).max() ?? 0)
            for k in 0..<length {
                let c = g * perGroup + k / spatial
                y[at[k]] = xhat[k] * gammas[k] + Double(beta[c])
                yScale[at[k]] = (abs(xs[k]) + abs(m)) * s * abs(gammas[k]) + abs(Double(beta[c]))
                dx[at[k]] = s * (dxhat[k] - meanDxhat - xhat[k] * meanDxhatXhat)
                dxScale[at[k]] = scale
                dgamma[c] += gs[k] * xhat[k]
                dgammaScale[c] += abs(gs[k] * xhat[k])
                dbeta[c] += gs[k]
                dbetaScale[c] += abs(gs[k])
            }
        }
    }
    return (y, yScale, dx, dxScale, dgamma, dbeta, dgammaScale, dbetaScale)
}

@Suite("16-bit storage: group statistics")
struct ReducedGroupTests {
    /// GroupNorm (`groups`) or InstanceNorm (`nil`) in `S` over `shape`
    /// against the Double reference: outputs and input gradients within 1 ulp
    /// of it rounded (or near zero within a few Float errors of their terms),
    /// parameter gradients within 1e-5; `infer` the forward's bits; with the
    /// BLAS backend and rows of at least 64 values, the `Float` forward on the
    /// widened input rounded, bit for bit.
    func check<S: TestStorage>(_: S.Type, shape: [Int], groups: Int?, backend: Backend,
                               shift: Double, relu: Bool = false) throws -> (UlpCount, UlpCount) {
        let (n, c, spatial) = (shape[0], shape[1], shape[2] * shape[3])
        let count = n * c * spatial
        let x: [S] = reducedInput(count, scale: 3, shift: shift, seed: 51)
        let dy: [S] = reducedInput(count, scale: 1, shift: 0.1, seed: 52)
        let gamma: [Float] = randomVector(c, scale: 0.5, shift: 1, seed: 53)
        let beta: [Float] = randomVector(c, scale: 0.3, shift: -0.1, seed: 54)
        let activation: FusedActivation = relu ? .relu : .none
        var y = [S](repeating: S(0), count: count), inferred = y, dx = y
        var dgamma = [Float](repeating: 0, count: c), dbeta = dgamma
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        var floatY: [Float] = []
        func run<L: ReducedPrecisionLayer>(_ layer: inout L) throws {
            var floatLayer = layer
            floatY = try floatLayer.forward(try Tensor<Float>(shape: shape, scalars: x.map(\.float)),
                                            mode: .training).output.scalars
            try reducedForward(&layer, x, shape: shape, &y, &cache, &workspace)
            try x.withUnsafeBufferPointer { xb in
                try inferred.withUnsafeMutableBufferPointer { yb in
                    try layer.infer(xb, shape: shape, into: yb, workspace: &workspace)
                }
            }
            try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        }
        if let groups {
            var layer = try GroupNorm<Float>(channelCount: c, groupCount: groups,
                                             activation: activation, backend: backend)
            layer.gamma = gamma; layer.beta = beta
            try run(&layer)
        } else {
            var layer = try InstanceNorm<Float>(channelCount: c, activation: activation,
                                                backend: backend)
            layer.gamma = gamma; layer.beta = beta
            try run(&layer)
        }
        let what = "\(S.name) \(groups.map { "GroupNorm(\($0))" } ?? "InstanceNorm") \(shape) \(backend)"
        #expect(y.map(\.bits) == inferred.map(\.bits), "\(what): infer = forward bit for bit")
        let length = (groups.map { c / $0 } ?? 1) * spatial
        if backend == .blas && length >= 64 {
            #expect(y.map(\.bits) == floatY.map { S($0).bits }, "\(what): the Float forward rounded")
        }
        var reference = groupReference(x: x, dy: dy, samples: n, channels: c, groups: groups ?? c,
                                       spatial: spatial, gamma: gamma, beta: beta, epsilon: 1e-5)
        if relu {
            // The ReLU's gradient: dy masked by the output's sign, then the
            // reference's backward on that gradient.
            let masked = (0..<count).map { reference.y[$0] > 0 ? dy[$0] : S(0) }
            reference = groupReference(x: x, dy: masked, samples: n, channels: c,
                                       groups: groups ?? c, spatial: spatial, gamma: gamma,
                                       beta: beta, epsilon: 1e-5)
            reference.y = reference.y.map { max(0, $0) }
        }
        var outputs = UlpCount(), gradients = UlpCount()
        for k in 0..<count {
            outputs.add(y[k], reference: reference.y[k], absolute: 1e-6 * reference.yScale[k], at: k)
            gradients.add(dx[k], reference: reference.dx[k], absolute: 1e-5 * reference.dxScale[k], at: k)
        }
        #expect(outputs.failures.isEmpty, "\(what) y: \(outputs.failures)")
        #expect(gradients.failures.isEmpty, "\(what) dx: \(gradients.failures)")
        for j in 0..<c {
            #expect(abs(Double(dgamma[j]) - reference.dgamma[j]) <= 1e-5 * reference.dgammaScale[j],
                    "\(what) dgamma[\(j)] \(dgamma[j]) vs \(reference.dgamma[j])")
            #expect(abs(Double(dbeta[j]) - reference.dbeta[j]) <= 1e-5 * reference.dbetaScale[j],
                    "\(what) dbeta[\(j)] \(dbeta[j]) vs \(reference.dbeta[j])")
        }
        return (outputs, gradients)
    }

    @Test("GroupNorm and InstanceNorm in 16 bits are within 1 ulp of the float64 reference",
          arguments: [Backend.blas, .naive])
    func accuracy(backend: Backend) throws {
        // Rows of 3·5·7 = 105 values (one at a time) and of 5·7 = 35 (row blocks).
        for shape in [[3, 6, 5, 7], [2, 6, 1, 13]] {
            for groups in [2, nil] as [Int?] {
                for shift in [0.3, 100.1] {
                    let (y16, dx16) = try check(Float16.self, shape: shape, groups: groups,
                                                backend: backend, shift: shift)
                    let (yb, dxb) = try check(BFloat16.self, shape: shape, groups: groups,
                                              backend: backend, shift: shift)
                    print("16-bit \(groups.map { "GroupNorm(\($0))" } ?? "InstanceNorm") \(shape) shift \(shift) \(backend): Float16 y \(y16), dx \(dx16); BFloat16 y \(yb), dx \(dxb)")
                }
                _ = try check(BFloat16.self, shape: shape, groups: groups, backend: backend,
                              shift: 0.3, relu: true)
            }
        }
    }

    @Test("GroupNorm 16-bit: a constant group gives beta rounded, exactly; bad input throws, state unchanged")
    func edgesAndBadInput() throws {
        var layer = try GroupNorm<Float>(channelCount: 4, groupCount: 2)
        layer.beta = [-1.1, 0.3, 2.7, 0.01]
        layer.gamma = [1.7, 1.7, 1.7, 1.7]
        let before = layer
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        let constant = [Float16](repeating: Float16(1000.1), count: 2 * 4 * 3)
        var y = constant
        try reducedForward(&layer, constant, shape: [2, 4, 3, 1], &y, &cache, &workspace)
        #expect(y.map(\.bitPattern) == (0..<24).map { Float16(layer.beta[($0 / 3) % 4]).bitPattern })
        let x: [BFloat16] = reducedInput(24, scale: 2, shift: 1, seed: 3)
        var out = [BFloat16](repeating: BFloat16(0), count: 24)
        #expect(throws: NormError.invalidShape(expected: "(N, 4, L), (N, 4, H, W) or (N, 4, D, H, W)", actual: [2, 3, 4, 1])) {
            try reducedForward(&layer, x, shape: [2, 3, 4, 1], &out, &cache, &workspace)
        }
        #expect(throws: NormError.bufferCountMismatch(name: "input", expected: 32, actual: 24)) {
            try reducedForward(&layer, x, shape: [2, 4, 4, 1], &out, &cache, &workspace)
        }
        var withInfinity = x
        withInfinity[13] = BFloat16(Float.infinity)
        #expect(throws: NormError.nonFiniteStatistics(index: 2)) {
            try reducedForward(&layer, withInfinity, shape: [2, 4, 3, 1], &out, &cache, &workspace)
        }
        #expect(layer == before)
        try reducedForward(&layer, x, shape: [2, 4, 3, 1], &out, &cache, &workspace)
        var dgamma = [Float](repeating: 0, count: 4), dbeta = dgamma
        #expect(throws: NormError.cacheMismatch(expected: "a cache filled at Float16 storage",
                                                actual: "a cache filled at BFloat16 storage")) {
            let dy = [Float16](repeating: 1, count: 24)
            var dx = dy
            try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        }
        let instance = try InstanceNorm<Float>(channelCount: 4)
        #expect(throws: NormError.cacheMismatch(expected: instance.cacheOrigin.description,
                                                actual: layer.cacheOrigin.description)) {
            let dy = [BFloat16](repeating: BFloat16(1), count: 24)
            var dx = dy
            try reducedBackward(instance, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        }
        #expect(throws: NormError.cacheMismatch(expected: "a cache filled at Float storage",
                                                actual: "a cache filled at BFloat16 storage")) {
            _ = try layer.backward(try Tensor<Float>(shape: [2, 4, 3, 1], repeating: 1), cache: cache)
        }
        #expect(layer == before)
    }
}

extension ReducedGroupTests {
    @Test("InstanceNorm with running statistics in 16 bits: training folds what the Float layer folds from the widened input; inference and its backward are SpatialBatchNorm's 16-bit ones")
    func instanceNormRunning() throws {
        let shape = [3, 4, 5, 3], count = 180
        let x: [BFloat16] = reducedInput(count, scale: 3, shift: 100.1, seed: 71)
        var reduced = try InstanceNorm<Float>(channelCount: 4, varianceEstimator: .unbiased, runningStatistics: .cumulative)
        var wide = reduced
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        var y = x
        for _ in 0..<2 {
            try reducedForward(&reduced, x, shape: shape, &y, &cache, &workspace)
            _ = try wide.forward(Tensor(x.map { Float($0) }, shape: shape), mode: .training)
        }
        #expect(reduced.batchesTracked == 2)
        #expect(normwiseError(reduced.runningMean, wide.runningMean) < 1e-6)
        #expect(normwiseError(reduced.runningVariance, wide.runningVariance) < 1e-5)

        var spatial = try SpatialBatchNorm<Float>(channelCount: 4)
        (spatial.runningMean, spatial.runningVariance) = (reduced.runningMean, reduced.runningVariance)
        spatial.gamma = [1.5, -0.5, 2, 0.25]
        reduced.gamma = spatial.gamma
        var spatialCache = NormCache<Float>(), spatialY = x
        let before = reduced
        try reducedForward(&reduced, x, shape: shape, &y, &cache, &workspace, mode: .inference)
        try reducedForward(&spatial, x, shape: shape, &spatialY, &spatialCache, &workspace, mode: .inference)
        #expect(y.map(\.bitPattern) == spatialY.map(\.bitPattern))
        #expect(reduced == before)
        let dy: [BFloat16] = reducedInput(count, scale: 1, shift: 0, seed: 72)
        var dx = dy, spatialDx = dy
        var dgamma = [Float](repeating: 0, count: 4), dbeta = dgamma, sg = dgamma, sb = dgamma
        try reducedBackward(reduced, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        try reducedBackward(spatial, dy, spatialCache, &spatialDx, &sg, &sb, &workspace)
        #expect(dx.map(\.bitPattern) == spatialDx.map(\.bitPattern))
        #expect(sameBits(dgamma, sg) && sameBits(dbeta, sb))
    }
}

extension ReducedGroupTests {
    /// A channels-last layer in `S` against the same `Float` layer on the
    /// widened input (whose channels-last kernels the 16-bit passes run on
    /// each widened sample): forward, infer and backward, the `Float` results
    /// rounded, bit for bit; the parameter gradients equal.
    @discardableResult
    func channelsLast<S: TestStorage, L: ReducedPrecisionLayer>(
        _: S.Type, _ layer: L, shape: [Int], training: Bool = true, inferIsForward: Bool = true
    ) throws -> (reduced: L, wide: L) where L.Cache == NormCache<Float> {
        var layer = layer, wide = layer
        let count = shape.reduce(1, *)
        let x: [S] = reducedInput(count, scale: 3, shift: 100.1, seed: 81)
        let dy: [S] = reducedInput(count, scale: 1, shift: 0.1, seed: 82)
        let mode: Mode = training ? .training : .inference
        var y = [S](repeating: S(0), count: count), inferred = y, dx = y
        var dgamma = [Float](repeating: 0, count: layer.gamma.count)
        var dbeta = [Float](repeating: 0, count: layer.beta.count)
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        try reducedForward(&layer, x, shape: shape, &y, &cache, &workspace, mode: mode)
        try x.withUnsafeBufferPointer { xb in
            try inferred.withUnsafeMutableBufferPointer { yb in
                try layer.infer(xb, shape: shape, into: yb, workspace: &workspace)
            }
        }
        try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        let (floatY, floatCache) = try wide.forward(try Tensor<Float>(shape: shape, scalars: x.map(\.float)),
                                                    mode: mode)
        let floatGradients = try wide.backward(try Tensor<Float>(shape: shape, scalars: dy.map(\.float)),
                                               cache: floatCache)
        let what = "\(S.name) \(L.self) \(shape) \(mode)"
        #expect(y.map(\.bits) == floatY.scalars.map { S($0).bits }, "\(what): y")
        if inferIsForward {
            #expect(y.map(\.bits) == inferred.map(\.bits), "\(what): infer = forward")
        }
        #expect(dx.map(\.bits) == floatGradients.input.scalars.map { S($0).bits }, "\(what): dx")
        #expect(sameBits(dgamma, floatGradients.gamma) && sameBits(dbeta, floatGradients.beta),
                "\(what): dgamma, dbeta")
        return (layer, wide)
    }

    @Test("channels-last GroupNorm and InstanceNorm in 16 bits: the Float channels-last layer on the widened input, rounded, bit for bit",
          arguments: [Backend.blas, .naive])
    func channelsLastLayers(backend: Backend) throws {
        // (N, H, W, C), (N, L, C) and (N, D, H, W, C); a ReLU; tracked running statistics.
        var group = try GroupNorm<Float>(channelCount: 6, groupCount: 2, layout: .nhwc, backend: backend)
        group.gamma = randomVector(6, scale: 0.5, shift: 1, seed: 83)
        group.beta = randomVector(6, scale: 0.3, shift: -0.1, seed: 84)
        var relu = group
        relu.activation = .relu
        let instance = try InstanceNorm<Float>(channelCount: 5, layout: .nhwc, backend: backend)
        let tracked = try InstanceNorm<Float>(channelCount: 5, layout: .nhwc, runningStatistics: .exponential,
                                              backend: backend)
        for shape in [[3, 5, 7, 6], [2, 13, 6], [2, 3, 2, 5, 6]] {
            try channelsLast(Float16.self, group, shape: shape)
            try channelsLast(BFloat16.self, group, shape: shape)
        }
        try channelsLast(BFloat16.self, relu, shape: [3, 5, 7, 6])
        try channelsLast(Float16.self, instance, shape: [3, 4, 9, 5])
        var (trained, wide) = try channelsLast(BFloat16.self, tracked, shape: [3, 4, 9, 5],
                                               inferIsForward: false)
        #expect(trained.batchesTracked == 1 && normwiseError(trained.runningMean, wide.runningMean) < 1e-6
                && normwiseError(trained.runningVariance, wide.runningVariance) < 1e-5)
        trained.runningMean = [0.5, -1, 100, 2, 0.25]
        trained.runningVariance = [1, 4, 9, 0.5, 2]
        (trained, wide) = try channelsLast(BFloat16.self, trained, shape: [3, 4, 9, 5], training: false)
        #expect(trained == wide, "inference changes no state")
        // A channels-first cache is refused by the channels-last layer.
        var first = try GroupNorm<Float>(channelCount: 6, groupCount: 2, backend: backend)
        let x: [BFloat16] = reducedInput(2 * 6 * 5, scale: 1, shift: 0, seed: 85)
        var y = x, cache = NormCache<Float>(), workspace = Workspace<Float>()
        try reducedForward(&first, x, shape: [2, 6, 5], &y, &cache, &workspace)
        var dx = x, dgamma = [Float](repeating: 0, count: 6), dbeta = dgamma
        #expect(throws: NormError.cacheMismatch(expected: group.cacheOrigin.description,
                                                actual: first.cacheOrigin.description)) {
            try reducedBackward(group, x, cache, &dx, &dgamma, &dbeta, &workspace)
        }
    }
}

extension ProcessWideTests {
    @Suite("16-bit group statistics over threads")
    struct ReducedGroupThreadTests {
        @Test("the same bits at every thread count")
        func threads() throws {
            let saved = Threading.threadCount
            defer { Threading.threadCount = saved }
            let shape = [37, 8, 19, 23]
            let count = shape.reduce(1, *)
            let x: [BFloat16] = reducedInput(count, scale: 3, shift: 100.1, seed: 61)
            let dy: [BFloat16] = reducedInput(count, scale: 1, shift: 0, seed: 62)
            var results: [[UInt16]] = []
            for threads in [1, 2, 3, 7] {
                Threading.threadCount = threads
                var layer = try GroupNorm<Float>(channelCount: 8, groupCount: 4)
                var y = [BFloat16](repeating: BFloat16(0), count: count), dx = y
                var dgamma = [Float](repeating: 0, count: 8), dbeta = dgamma
                var cache = NormCache<Float>(), workspace = Workspace<Float>()
                try reducedForward(&layer, x, shape: shape, &y, &cache, &workspace)
                try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
                results.append(y.map(\.bitPattern) + dx.map(\.bitPattern)
                               + (dgamma + dbeta).flatMap {
                                   [UInt16($0.bitPattern >> 16), UInt16($0.bitPattern & 0xffff)]
                               })
            }
            for k in 1..<results.count { #expect(results[k] == results[0], "threads run \(k)") }
        }
    }
}

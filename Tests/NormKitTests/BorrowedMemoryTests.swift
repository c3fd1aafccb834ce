import NormKit
import Testing

/// The entry points over borrowed memory (`UnsafeBufferPointer`, `Span`) and
/// `NormalizationStep` give the `Tensor` entry points' bits, never keep the
/// caller's memory, and refuse buffers of the wrong size.
@Suite("Borrowed memory")
struct BorrowedMemoryTests {
    /// Forward (training, then inference) and backward through the `Tensor`
    /// entry points, and the same through the buffer ones; returns both.
    func compare<L: BufferedNormalizationLayer>(_ layer: L, shape: [Int]) throws {
        let x: Tensor<L.Scalar> = randomInput(shape, scale: 3, shift: 10000.1, seed: 5)
        let dy: Tensor<L.Scalar> = randomInput(shape, scale: 1, shift: 0.3, seed: 6)
        for mode in [Mode.training, .inference] {
            var tensorLayer = layer, bufferLayer = layer, spanLayer = layer
            _ = try tensorLayer.forward(x, mode: .training)   // running statistics for inference
            _ = try bufferLayer.forward(x, mode: .training)
            _ = try spanLayer.forward(x, mode: .training)
            let (y, cache) = try tensorLayer.forward(x, mode: mode)
            let grads = try tensorLayer.backward(dy, cache: cache)

            // Buffers the caller owns; the input is overwritten after forward.
            var input = x.scalars, output = [L.Scalar](repeating: .nan, count: x.count)
            var bufferCache = NormCache<L.Scalar>(), workspace = Workspace<L.Scalar>()
            try input.withUnsafeBufferPointer { xb in
                try output.withUnsafeMutableBufferPointer { yb in
                    try bufferLayer.forward(xb, shape: shape, mode: mode, into: yb,
                                            cache: &bufferCache, workspace: &workspace)
                }
            }
            for i in input.indices { input[i] = .nan }
            #expect(bits(output) == bits(y.scalars), "\(L.self) \(mode) forward")
            let (dx, dgamma, dbeta) = try backwardIntoBuffers(bufferLayer, dy.scalars, cache: bufferCache,
                                                              workspace: &workspace)
            #expect(bits(dx) == bits(grads.input.scalars), "\(L.self) \(mode) dx")
            #expect(bits(dgamma) == bits(grads.gamma) && bits(dbeta) == bits(grads.beta))
            #expect(bits(bufferLayer.runningStatisticsForTest) == bits(tensorLayer.runningStatisticsForTest))

            // Spans, in place: the output overwrites the input.
            var inPlace = x.scalars, spanCache = NormCache<L.Scalar>()
            var spanWorkspace = Workspace<L.Scalar>()
            let copy = x.scalars
            var outputSpan = inPlace.mutableSpan
            try spanLayer.forward(copy.span, shape: shape, mode: mode, into: &outputSpan,
                                  cache: &spanCache, workspace: &spanWorkspace)
            _ = consume outputSpan
            #expect(bits(inPlace) == bits(y.scalars), "\(L.self) \(mode) span forward")
            var inPlaceAlias = x.scalars
            try inPlaceAlias.withUnsafeMutableBufferPointer { b in
                try spanLayer.forward(UnsafeBufferPointer(b), shape: shape, mode: mode, into: b,
                                      cache: &spanCache, workspace: &spanWorkspace)
            }
            #expect(bits(inPlaceAlias) == bits(y.scalars), "\(L.self) \(mode) in-place forward")
            var spanDx = [L.Scalar](repeating: 0, count: x.count)
            var spanGamma = [L.Scalar](repeating: 0, count: layer.gamma.count),
            spanBeta = [L.Scalar](repeating: 0, count: layer.beta.count)
            var dxSpan = spanDx.mutableSpan, gSpan = spanGamma.mutableSpan, bSpan = spanBeta.mutableSpan
            try spanLayer.backward(dy.scalars.span, cache: spanCache, inputGradient: &dxSpan,
                                   gammaGradient: &gSpan, betaGradient: &bSpan, workspace: &spanWorkspace)
            _ = consume dxSpan
            _ = consume gSpan
            _ = consume bSpan
            #expect(bits(spanDx) == bits(grads.input.scalars) && bits(spanGamma) == bits(grads.gamma))
        }
    }

    @Test("every layer's buffer and Span entry points give the Tensor entry points' bits")
    func sameBitsAsTensors() throws {
        try compare(BatchNorm<Double>(featureCount: 7), shape: [13, 7])
        try compare(BatchNorm<Float>(featureCount: 7, backend: .naive), shape: [13, 7])
        try compare(LayerNorm<Float>(featureCount: 9), shape: [5, 9])
        try compare(RMSNorm<Double>(featureCount: 9), shape: [5, 9])
        try compare(SpatialBatchNorm<Float>(channelCount: 3), shape: [2, 3, 5, 7])
        try compare(SpatialBatchNorm<Double>(channelCount: 3, layout: .nhwc), shape: [2, 5, 7, 3])
        try compare(GroupNorm<Double>(channelCount: 6, groupCount: 3), shape: [2, 6, 3, 5])
        try compare(InstanceNorm<Float>(channelCount: 4), shape: [3, 4, 5, 3])
        try compare(DecorrelatedBatchNorm<Double>(featureCount: 6, groupSize: 3), shape: [13, 6])
        try compare(DecorrelatedBatchNorm<Float>(featureCount: 6, groupSize: 2, method: .cholesky,
                                                 affine: .scaleOnly, backend: .naive), shape: [13, 6])
        try compare(DecorrelatedBatchNorm<Float>(featureCount: 4, groupSize: 4,
                                                 method: .newtonSchulz(iterations: 5)), shape: [29, 4])
    }

    @Test("DecorrelatedBatchNorm over buffers: wrong counts, shapes and caches are refused, state unchanged; a step runs it")
    func decorrelatedBuffers() throws {
        var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2)
        let x: Tensor<Double> = randomInput([9, 4], scale: 3, shift: 10000.1, seed: 1)
        let dy: Tensor<Double> = randomInput([9, 4], seed: 2)
        let (y, cache) = try dbn.forward(x, mode: .training)
        let before = dbn
        var cacheAfter = cache, workspace = Workspace<Double>()
        var short = [Double](repeating: 0, count: 35)
        #expect(throws: NormError.bufferCountMismatch(name: "output", expected: 36, actual: 35)) {
            try x.scalars.withUnsafeBufferPointer { xb in
                try short.withUnsafeMutableBufferPointer { yb in
                    try dbn.forward(xb, shape: [9, 4], mode: .training, into: yb, cache: &cacheAfter,
                                    workspace: &workspace)
                }
            }
        }
        #expect(dbn == before)
        #expect(throws: NormError.invalidShape(expected: "(N >= 1, 4)", actual: [4, 9])) {
            try x.scalars.withUnsafeBufferPointer { xb in
                var out = [Double](repeating: 0, count: 36)
                try out.withUnsafeMutableBufferPointer { yb in
                    try dbn.forward(xb, shape: [4, 9], mode: .training, into: yb, cache: &cacheAfter,
                                    workspace: &workspace)
                }
            }
        }
        #expect(dbn == before)
        // A refused forward leaves a cache that backward refuses.
        #expect(throws: NormError.cacheMismatch(
            expected: "DecorrelatedBatchNorm(featureCount: 4, groupSize: 2, method: eigen)",
            actual: "no forward pass (an empty cache, or one whose forward pass threw)")) {
            try dbn.backward(dy, cache: cacheAfter)
        }
        // Another layer's cache, and another method's.
        var bn = try BatchNorm<Double>(featureCount: 4)
        let bnCache = try bn.forward(x, mode: .training).cache
        #expect(throws: NormError.cacheMismatch(
            expected: "DecorrelatedBatchNorm(featureCount: 4, groupSize: 2, method: eigen)",
            actual: "BatchNorm(featureCount: 4)")) { try dbn.backward(dy, cache: bnCache) }
        let cholesky = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2, method: .cholesky)
        #expect(throws: NormError.cacheMismatch(
            expected: "DecorrelatedBatchNorm(featureCount: 4, groupSize: 2, method: cholesky)",
            actual: "DecorrelatedBatchNorm(featureCount: 4, groupSize: 2, method: eigen)")) {
            try cholesky.backward(dy, cache: cache)
        }
        // A gradient buffer of the wrong count.
        var dx = [Double](repeating: 0, count: 36), dgamma = [Double](repeating: 0, count: 3)
        var dbeta = [Double](repeating: 0, count: 4)
        #expect(throws: NormError.bufferCountMismatch(name: "gammaGradient", expected: 4, actual: 3)) {
            try dy.scalars.withUnsafeBufferPointer { d in
                try dx.withUnsafeMutableBufferPointer { dxb in
                    try dgamma.withUnsafeMutableBufferPointer { g in
                        try dbeta.withUnsafeMutableBufferPointer { b in
                            try dbn.backward(d, cache: cache, inputGradient: dxb, gammaGradient: g,
                                             betaGradient: b, workspace: &workspace)
                        }
                    }
                }
            }
        }
        // The cache: the input, its shape, the batch mean, W's diagonal.
        #expect(cache.shape == [9, 4] && cache.input.scalars == x.scalars && cache.mode == .training)
        #expect(cache.origin == .decorrelatedBatchNorm(featureCount: 4, groupSize: 2, method: .eigen))
        let columnMean = (0..<4).map { j in (0..<9).reduce(0.0) { $0 + x.scalars[$1 * 4 + j] } / 9 }
        for j in 0..<4 { #expect(abs(cache.mean[j] - columnMean[j]) <= 1e-12 * 10000) }
        // With groupSize 1, the diagonal is BatchNorm's 1/sqrt(var + eps).
        var single = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 1)
        let singleCache = try single.forward(x, mode: .training).cache
        for j in 0..<4 {
            #expect(abs(singleCache.inverseStandardDeviation[j] - bnCache.inverseStandardDeviation[j])
                    <= 1e-9 * bnCache.inverseStandardDeviation[j])
        }

        // A NormalizationStep over the layer gives the value API's bits, two steps running.
        var step = NormalizationStep(try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2))
        var reference = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2)
        for _ in 0..<2 {
            try step.forward(x, mode: .training)
            try step.backward(dy)
            let (ry, rc) = try reference.forward(x, mode: .training)
            let rg = try reference.backward(dy, cache: rc)
            #expect(bits(step.output.scalars) == bits(ry.scalars))
            #expect(bits(step.gradients.input.scalars) == bits(rg.input.scalars))
            #expect(bits(step.gradients.gamma + step.gradients.beta) == bits(rg.gamma + rg.beta))
        }
        #expect(step.layer == reference)
        // infer over buffers, in place, is the inference forward's output; the layer is unchanged.
        var inPlace = x.scalars
        try inPlace.withUnsafeMutableBufferPointer { b in
            try before.infer(UnsafeBufferPointer(b), shape: [9, 4], into: b, workspace: &workspace)
        }
        var copy = before
        #expect(bits(inPlace) == bits(try copy.forward(x, mode: .inference).output.scalars))
        #expect(y.shape == [9, 4] && dbn == before)
    }

    @Test("a copied workspace gives the same bits wherever its copy's storage lands")
    func copiedWorkspace() throws {
        // The workspace puts its ones and scratch on 64-byte lines: a copy
        // (copy-on-write, at its first use) lands at another offset from a
        // line, where the ones must be written again. Small allocations kept
        // alive between the copies move where the next one lands.
        var layerNorm = try LayerNorm<Float>(featureCount: 100)
        let batchNorm = try BatchNorm<Float>(featureCount: 7)
        let x: Tensor<Float> = randomInput([6, 100], scale: 3, shift: 10000.1, seed: 11)
        let columns: Tensor<Float> = randomInput([13, 7], scale: 3, shift: 10000.1, seed: 12)
        var workspace = Workspace<Float>(), output = try Tensor<Float>(zeros: [0])
        var cache = NormCache<Float>()
        try layerNorm.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
        let expected = bits(output.scalars)
        var bnWorkspace = Workspace<Float>()
        var bnLayer = batchNorm
        try bnLayer.forward(columns, mode: .training, into: &output, cache: &cache,
                            workspace: &bnWorkspace)
        let expectedColumns = bits(output.scalars)
        var pads: [[Float]] = []
        for k in 1...8 {
            pads.append([Float](repeating: 0, count: k))
            var copy = workspace
            try layerNorm.forward(x, mode: .training, into: &output, cache: &cache, workspace: &copy)
            let sameRows = bits(output.scalars) == expected
            #expect(sameRows, "LayerNorm, copy \(k)")
            var bnCopy = bnWorkspace
            bnLayer = batchNorm
            try bnLayer.forward(columns, mode: .training, into: &output, cache: &cache,
                                workspace: &bnCopy)
            let sameColumns = bits(output.scalars) == expectedColumns
            #expect(sameColumns, "BatchNorm, copy \(k)")
        }
        #expect(pads.count == 8)
    }

    @Test("buffers of the wrong size are refused, and the layer's state is unchanged")
    func wrongSizes() throws {
        var bn = try BatchNorm<Double>(featureCount: 4)
        _ = try bn.forward(randomInput([6, 4], seed: 1), mode: .training)
        let before = bn
        let x = [Double](repeating: 0.1, count: 24)
        var y = [Double](repeating: 0, count: 24), short = [Double](repeating: 0, count: 23)
        var cache = NormCache<Double>(), workspace = Workspace<Double>()
        func forward(_ shape: [Int], _ output: inout [Double]) throws(NormError) {
            try x.withUnsafeBufferPointer { (xb) throws(NormError) in
                try output.withUnsafeMutableBufferPointer { (yb) throws(NormError) in
                    try bn.forward(xb, shape: shape, mode: .training, into: yb, cache: &cache,
                                   workspace: &workspace)
                }
            }
        }
        #expect(throws: NormError.bufferCountMismatch(name: "input", expected: 28, actual: 24)) {
            try forward([7, 4], &y)
        }
        #expect(throws: NormError.bufferCountMismatch(name: "output", expected: 24, actual: 23)) {
            try forward([6, 4], &short)
        }
        #expect(throws: NormError.negativeDimension(shape: [-6, 4])) { try forward([-6, 4], &y) }
        #expect(throws: NormError.invalidShape(expected: "(N >= 1, 4)", actual: [4, 6])) {
            try forward([4, 6], &y)
        }
        #expect(bn == before)
        // A cache from a refused forward is refused by backward.
        var dx = y, g = [Double](repeating: 0, count: 4), b = g
        #expect(throws: NormError.self) {
            try y.withUnsafeBufferPointer { dyb in
                try dx.withUnsafeMutableBufferPointer { dxb in
                    try g.withUnsafeMutableBufferPointer { gb in
                        try b.withUnsafeMutableBufferPointer { bb in
                            try bn.backward(dyb, cache: cache, inputGradient: dxb, gammaGradient: gb,
                                            betaGradient: bb, workspace: &workspace)
                        }
                    }
                }
            }
        }
        try forward([6, 4], &y)
        var shortGamma = [Double](repeating: 0, count: 3)
        #expect(throws: NormError.bufferCountMismatch(name: "gammaGradient", expected: 4, actual: 3)) {
            try y.withUnsafeBufferPointer { dyb in
                try dx.withUnsafeMutableBufferPointer { dxb in
                    try shortGamma.withUnsafeMutableBufferPointer { gb in
                        try b.withUnsafeMutableBufferPointer { bb in
                            try bn.backward(dyb, cache: cache, inputGradient: dxb, gammaGradient: gb,
                                            betaGradient: bb, workspace: &workspace)
                        }
                    }
                }
            }
        }
    }

    @Test("NormalizationStep computes the value API's results and owns its copy of the input")
    func step() throws {
        var reference = try LayerNorm<Float>(featureCount: 9)
        var step = NormalizationStep(reference)
        for seed in 0..<3 as Range<UInt64> {
            var x: Tensor<Float> = randomInput([5, 9], scale: 2, shift: 0.1, seed: seed)
            let dy: Tensor<Float> = randomInput([5, 9], scale: 1, shift: 0, seed: seed + 10)
            try step.forward(x)
            x[0, 0] = .nan   // the step copied the input
            let (y, cache) = try reference.forward(randomInput([5, 9], scale: 2, shift: 0.1, seed: seed),
                                                   mode: .training)
            try step.backward(dy)
            let grads = try reference.backward(dy, cache: cache)
            #expect(bits(step.output.scalars) == bits(y.scalars))
            #expect(step.gradients == grads)
        }
        #expect(throws: NormError.gradientShapeMismatch(expected: [5, 9], actual: [9, 5])) {
            try step.backward(try Tensor<Float>(zeros: [9, 5]))
        }
        var bn = NormalizationStep(try BatchNorm<Double>(featureCount: 3))
        try bn.forward(randomInput([4, 3], seed: 1))
        let before = bn.layer
        #expect(throws: NormError.invalidShape(expected: "(N >= 1, 3)", actual: [3, 4])) {
            try bn.forward(randomInput([3, 4], seed: 2))
        }
        #expect(bn.layer == before)
        #expect(throws: NormError.cacheMismatch(expected: "BatchNorm(featureCount: 3)", actual: "no forward pass (an empty cache, or one whose forward pass threw)")) {
            try bn.backward(try Tensor<Double>(zeros: [3, 4]))
        }
    }
}

extension BufferedNormalizationLayer {
    /// The running statistics of the layers that have them, for comparisons.
    var runningStatisticsForTest: [Scalar] {
        if let bn = self as? BatchNorm<Scalar> { return bn.runningMean + bn.runningVariance }
        if let sbn = self as? SpatialBatchNorm<Scalar> { return sbn.runningMean + sbn.runningVariance }
        if let dbn = self as? DecorrelatedBatchNorm<Scalar> { return dbn.runningMean + dbn.runningWhitening }
        return []
    }
}

import NormKit
import Testing

/// NCHW to NHWC.
func channelsLast<S: BLASScalar>(_ t: Tensor<S>) throws -> Tensor<S> {
    let (n, c, h, w) = (t.shape[0], t.shape[1], t.shape[2], t.shape[3])
    var out = [S](repeating: 0, count: t.count)
    for a in 0..<n { for b in 0..<c { for i in 0..<h { for j in 0..<w {
        out[((a * h + i) * w + j) * c + b] = t.scalars[((a * c + b) * h + i) * w + j]
    }}}}
    return try Tensor(shape: [n, h, w, c], scalars: out)
}

/// Builds each layer of issue 3 for a shape; `seed` makes gamma and beta random.
enum ConvolutionalLayer: CaseIterable, CustomStringConvertible {
    case spatialNCHW, spatialNHWC, group, instance, rms

    var description: String {
        switch self {
        case .spatialNCHW: "SpatialBatchNorm(nchw)"
        case .spatialNHWC: "SpatialBatchNorm(nhwc)"
        case .group: "GroupNorm"
        case .instance: "InstanceNorm"
        case .rms: "RMSNorm"
        }
    }

    /// A type-erased forward and backward over a fresh layer.
    func make<S: BLASScalar>(_: S.Type, shape: [Int], groups: Int = 2, backend: Backend,
                             seed: UInt64) throws -> AnyLayer<S> {
        let channels = self == .spatialNHWC ? shape[3] : shape[1]
        switch self {
        case .spatialNCHW, .spatialNHWC:
            var layer = try SpatialBatchNorm<S>(channelCount: channels,
                                                layout: self == .spatialNHWC ? .nhwc : .nchw,
                                                backend: backend)
            layer.gamma = randomVector(channels, shift: 1, seed: seed)
            layer.beta = randomVector(channels, seed: seed + 1)
            return AnyLayer(layer)
        case .group:
            var layer = try GroupNorm<S>(channelCount: channels, groupCount: groups, backend: backend)
            layer.gamma = randomVector(channels, shift: 1, seed: seed)
            layer.beta = randomVector(channels, seed: seed + 1)
            return AnyLayer(layer)
        case .instance:
            var layer = try InstanceNorm<S>(channelCount: channels, backend: backend)
            layer.gamma = randomVector(channels, shift: 1, seed: seed)
            layer.beta = randomVector(channels, seed: seed + 1)
            return AnyLayer(layer)
        case .rms:
            var layer = try RMSNorm<S>(featureCount: shape[1], backend: backend)
            layer.gamma = randomVector(shape[1], shift: 1, seed: seed)
            return AnyLayer(layer)
        }
    }
}

/// A layer behind closures, so one test body serves every layer type.
struct AnyLayer<S: BLASScalar> {
    var forward: (Tensor<S>) throws -> (Tensor<S>, NormCache<S>)
    var backward: (Tensor<S>, NormCache<S>) throws -> NormGradients<S>
    var gamma: [S]
    var beta: [S]
    /// The same layer with other parameters (for the parameter gradient checks).
    var with: ([S], [S]) -> AnyLayer<S>

    init<L: BufferedNormalizationLayer>(_ layer: L) where L.Scalar == S {
        var state = layer
        forward = { input in try state.forward(input, mode: .training) }
        backward = { dy, cache in try layer.backward(dy, cache: cache) }
        gamma = layer.gamma
        beta = layer.beta
        with = { gamma, beta in
            var copy = layer
            copy.gamma = gamma
            copy.beta = beta
            return AnyLayer(copy)
        }
    }
}

@Suite("Convolutional and modern layers")
struct ConvolutionalTests {
    static func shape(for layer: ConvolutionalLayer) -> [Int] {
        switch layer {
        case .spatialNCHW, .instance: [2, 3, 4, 5]
        case .spatialNHWC: [2, 4, 5, 3]
        case .group: [2, 6, 4, 5]
        case .rms: [4, 5]
        }
    }

    @Test("gradient check in Double, cs231n's shapes", arguments: ConvolutionalLayer.allCases,
          [Backend.blas, .naive])
    func gradientCheck(layer kind: ConvolutionalLayer, backend: Backend) throws {
        for shape in [Self.shape(for: kind)] + (kind == .rms ? [[50, 30]] : []) {
            let layer = try kind.make(Double.self, shape: shape, backend: backend, seed: 3)
            let x: Tensor<Double> = randomInput(shape, seed: 4)
            let dout: Tensor<Double> = randomInput(shape, scale: 1, shift: 0, seed: 5)
            let (_, cache) = try layer.forward(x)
            let gradients = try layer.backward(dout, cache)
            let dx = try referenceGradient(at: x, outputGradient: dout) { try layer.forward($0).0 }
            let dgamma = try referenceGradient(
                at: Tensor(shape: [layer.gamma.count], scalars: layer.gamma), outputGradient: dout
            ) { g in try layer.with(g.scalars, layer.beta).forward(x).0 }
            #expect(GradientCheck.relativeError(gradients.input.scalars, dx.scalars, floor: 1e-3) <= 1e-8, "\(shape)")
            #expect(GradientCheck.relativeError(gradients.gamma, dgamma.scalars, floor: 1e-3) <= 1e-8, "\(shape)")
            if kind == .rms {
                #expect(gradients.beta.allSatisfy { $0 == 0 })
            } else {
                let dbeta = try referenceGradient(
                    at: Tensor(shape: [layer.beta.count], scalars: layer.beta), outputGradient: dout
                ) { b in try layer.with(layer.gamma, b.scalars).forward(x).0 }
                #expect(GradientCheck.relativeError(gradients.beta, dbeta.scalars, floor: 1e-3) <= 1e-8)
            }
        }
    }

    func backendsAgree<S: BLASScalar>(_: S.Type, kind: ConvolutionalLayer, tolerance: Double) throws {
        let shapes: [[Int]]
        switch kind {
        case .spatialNCHW: shapes = [[3, 5, 1, 1], [2, 3, 4, 5], [4, 40, 48, 48]]
        case .instance: shapes = [[3, 5, 1, 2], [2, 3, 4, 5], [4, 40, 48, 48]]   // H·W >= 2
        case .spatialNHWC: shapes = [[3, 1, 1, 5], [2, 4, 5, 3], [4, 48, 48, 40]]
        case .group: shapes = [[3, 6, 1, 1], [2, 6, 4, 5], [4, 40, 48, 48]]
        case .rms: shapes = [[2, 1], [7, 13], [10000, 37], [5, 3000]]
        }
        for shape in shapes {
            let groups = kind == .group ? (shape == [4, 40, 48, 48] ? 5 : 2) : 2
            let x: Tensor<S> = randomInput(shape, seed: UInt64(shape.reduce(1, *)))
            let dout: Tensor<S> = randomInput(shape, scale: 1, shift: 0, seed: 11)
            var results: [[[S]]] = []
            var dxScale = 0.0
            for backend in [Backend.blas, .naive] {
                let layer = try kind.make(S.self, shape: shape, groups: groups, backend: backend, seed: 7)
                let (y, cache) = try layer.forward(x)
                let gradients = try layer.backward(dout, cache)
                results.append([y.scalars, cache.mean, cache.inverseStandardDeviation,
                                gradients.input.scalars, gradients.gamma, gradients.beta])
                // RMSNorm's dx at D = 1 is gamma·dy/rms·(1 - xhat²), a near-total
                // cancellation: measure it against the size of its terms.
                if kind == .rms { dxScale = NormKitTests.dxScale(dout, cache: cache, perColumn: false) }
            }
            for (index, (blas, naive)) in zip(results[0], results[1]).enumerated() {
                #expect(normwiseError(blas, naive, scale: index == 3 ? dxScale : 0) <= tolerance,
                        "\(kind) \(shape) quantity \(index)")
            }
        }
    }

    @Test("BLAS and naive agree: Double 1e-12, Float 1e-5", arguments: ConvolutionalLayer.allCases)
    func backendsAgree(layer kind: ConvolutionalLayer) throws {
        try backendsAgree(Double.self, kind: kind, tolerance: 1e-12)
        try backendsAgree(Float.self, kind: kind, tolerance: 1e-5)
    }

    @Test("NHWC equals NCHW on the transposed tensor; both equal BatchNorm on (N·H·W, C)")
    func layouts() throws {
        let x: Tensor<Double> = randomInput([3, 4, 5, 6], seed: 1)
        let dout: Tensor<Double> = randomInput([3, 4, 5, 6], scale: 1, shift: 0, seed: 2)
        var nchw = try SpatialBatchNorm<Double>(channelCount: 4)
        nchw.gamma = randomVector(4, seed: 3)
        nchw.beta = randomVector(4, seed: 4)
        var nhwc = nchw
        nhwc.layout = .nhwc
        var bn = try BatchNorm<Double>(featureCount: 4)
        bn.gamma = nchw.gamma
        bn.beta = nchw.beta
        let xLast = try channelsLast(x), doutLast = try channelsLast(dout)
        let (yFirst, cacheFirst) = try nchw.forward(x, mode: .training)
        let (yLast, cacheLast) = try nhwc.forward(xLast, mode: .training)
        let matrix = try Tensor(shape: [90, 4], scalars: xLast.scalars)
        let (yMatrix, cacheMatrix) = try bn.forward(matrix, mode: .training)
        #expect(normwiseError(try channelsLast(yFirst).scalars, yLast.scalars) <= 1e-13)
        #expect(normwiseError(yMatrix.scalars, yLast.scalars) <= 1e-13)
        #expect(normwiseError(nchw.runningVariance, nhwc.runningVariance) <= 1e-13)
        #expect(normwiseError(bn.runningMean, nhwc.runningMean) <= 1e-13)
        let gFirst = try nchw.backward(dout, cache: cacheFirst)
        let gLast = try nhwc.backward(doutLast, cache: cacheLast)
        let gMatrix = try bn.backward(Tensor(shape: [90, 4], scalars: doutLast.scalars), cache: cacheMatrix)
        #expect(normwiseError(try channelsLast(gFirst.input).scalars, gLast.input.scalars) <= 1e-12)
        #expect(normwiseError(gMatrix.input.scalars, gLast.input.scalars) <= 1e-12)
        #expect(normwiseError(gFirst.gamma, gMatrix.gamma) <= 1e-12)
        #expect(normwiseError(gFirst.beta, gMatrix.beta) <= 1e-12)
    }

    @Test("GroupNorm with G = 1 is LayerNorm over C·H·W with a per-channel affine",
          arguments: [Backend.blas, .naive])
    func groupOfOne(backend: Backend) throws {
        let x: Tensor<Double> = randomInput([3, 4, 5, 6], seed: 8)
        var gn = try GroupNorm<Double>(channelCount: 4, groupCount: 1, backend: backend)
        gn.gamma = randomVector(4, seed: 9)
        gn.beta = randomVector(4, seed: 10)
        var ln = try LayerNorm<Double>(featureCount: 120, backend: backend)
        let y = try gn.forward(x, mode: .training).output
        let z = try ln.forward(Tensor(shape: [3, 120], scalars: x.scalars), mode: .training).output
        let expected = z.scalars.enumerated().map { k, v in
            let c = (k / 30) % 4
            return gn.gamma[c] * v + gn.beta[c]
        }
        #expect(normwiseError(y.scalars, expected) <= 1e-13)
    }

    @Test("InstanceNorm equals GroupNorm with G = C", arguments: [Backend.blas, .naive])
    func instanceIsGroupOfOneChannel(backend: Backend) throws {
        let x: Tensor<Double> = randomInput([2, 5, 3, 4], seed: 12)
        let dout: Tensor<Double> = randomInput([2, 5, 3, 4], scale: 1, shift: 0, seed: 13)
        var instance = try InstanceNorm<Double>(channelCount: 5, backend: backend)
        instance.gamma = randomVector(5, seed: 14)
        instance.beta = randomVector(5, seed: 15)
        var gn = try GroupNorm<Double>(channelCount: 5, groupCount: 5, backend: backend)
        gn.gamma = instance.gamma
        gn.beta = instance.beta
        let (a, cacheA) = try instance.forward(x, mode: .training)
        let (b, cacheB) = try gn.forward(x, mode: .inference)
        #expect(a == b)
        #expect(try instance.backward(dout, cache: cacheA) == (try gn.backward(dout, cache: cacheB)))
    }

    @Test("RMSNorm matches y = gamma·x / sqrt(mean(x²) + eps)", arguments: [Backend.blas, .naive])
    func rmsReference(backend: Backend) throws {
        let x: Tensor<Double> = randomInput([6, 7], scale: 2, shift: 1, seed: 16)
        var rms = try RMSNorm<Double>(featureCount: 7, epsilon: 1e-3, backend: backend)
        rms.gamma = randomVector(7, seed: 17)
        let y = try rms.forward(x, mode: .training).output
        for i in 0..<6 {
            let values = row(x, i)
            let r = 1 / (values.map { $0 * $0 }.reduce(0, +) / 7 + 1e-3).squareRoot()
            for j in 0..<7 {
                #expect(abs(y.scalars[i * 7 + j] - rms.gamma[j] * values[j] * r) <= 1e-14)
            }
        }
        var single = try RMSNorm<Double>(featureCount: 1, backend: backend)
        let one = try single.forward(Tensor(shape: [2, 1], scalars: [3, -4]), mode: .training).output
        #expect(abs(one.scalars[0] - 3 / (9 + 1e-5).squareRoot()) <= 1e-15)
    }

    @Test("after 50 training passes, inference normalizes each channel (cs231n's check)",
          arguments: [ChannelLayout.nchw, .nhwc], [Backend.blas, .naive])
    func runningStatistics(layout: ChannelLayout, backend: Backend) throws {
        let (n, c, h, w) = (10, 4, 11, 12)
        var sbn = try SpatialBatchNorm<Double>(channelCount: c, layout: layout, backend: backend)
        let shape = layout == .nchw ? [n, c, h, w] : [n, h, w, c]
        for step in 0..<50 {
            _ = try sbn.forward(randomInput(shape, scale: 4, shift: 10, seed: UInt64(100 + step)),
                                mode: .training)
        }
        let y = try sbn.forward(randomInput(shape, scale: 4, shift: 10, seed: 999), mode: .inference).output
        let perChannel = layout == .nchw ? try channelsLast(y) : y
        let matrix = try Tensor(shape: [n * h * w, c], scalars: perChannel.scalars)
        // "Near": one fresh batch of 1320 values per channel has a sampling error
        // of about 0.02 in its std, and the zero-started running variance is
        // 1 - 0.9^50 of its limit.
        for channel in 0..<c {
            #expect(abs(mean(column(matrix, channel))) <= 0.1)
            #expect(abs(standardDeviation(column(matrix, channel)) - 1) <= 0.1)
        }
    }

    @Test("bad input: G not dividing C, rank other than 4, wrong channels, a beta on a shift-free RMSNorm")
    func badInput() throws {
        #expect(throws: NormError.invalidGroupCount(groupCount: 4, channelCount: 6)) {
            try GroupNorm<Float>(channelCount: 6, groupCount: 4)
        }
        #expect(throws: NormError.invalidGroupCount(groupCount: 0, channelCount: 6)) {
            try GroupNorm<Float>(channelCount: 6, groupCount: 0)
        }
        #expect(throws: NormError.invalidFeatureCount(0)) { try InstanceNorm<Float>(channelCount: 0) }
        #expect(throws: NormError.invalidFeatureCount(0)) { try SpatialBatchNorm<Float>(channelCount: 0) }
        #expect(throws: NormError.invalidFeatureCount(-1)) { try RMSNorm<Float>(featureCount: -1) }

        var sbn = try SpatialBatchNorm<Double>(channelCount: 3)
        _ = try sbn.forward(randomInput([2, 3, 4, 5], seed: 1), mode: .training)
        let before = (bits(sbn.runningMean), bits(sbn.runningVariance))
        #expect(throws: NormError.invalidShape(expected: "(N, 3, L), (N, 3, H, W) or (N, 3, D, H, W)", actual: [2, 3])) {
            _ = try sbn.forward(Tensor(zeros: [2, 3]), mode: .training)
        }
        #expect(throws: NormError.invalidShape(expected: "(N, 3, L), (N, 3, H, W) or (N, 3, D, H, W)", actual: [2, 4, 4, 5])) {
            _ = try sbn.forward(Tensor(zeros: [2, 4, 4, 5]), mode: .training)
        }
        #expect(throws: NormError.invalidShape(expected: "(N, 3, L), (N, 3, H, W) or (N, 3, D, H, W)", actual: [2, 3, 0, 5])) {
            _ = try sbn.forward(Tensor(zeros: [2, 3, 0, 5]), mode: .inference)
        }
        #expect(throws: NormError.insufficientValues(valuesPerStatistic: 1)) {
            _ = try sbn.forward(Tensor(zeros: [1, 3, 1, 1]), mode: .training)
        }
        var scalars: [Double] = randomInput([2, 3, 4, 5], seed: 2).scalars
        scalars[25] = .infinity
        #expect(throws: NormError.nonFiniteStatistics(index: 1)) {
            _ = try sbn.forward(Tensor(shape: [2, 3, 4, 5], scalars: scalars), mode: .training)
        }
        sbn.momentum = 2
        #expect(throws: NormError.invalidMomentum(2)) {
            _ = try sbn.forward(randomInput([2, 3, 4, 5], seed: 3), mode: .training)
        }
        #expect(bits(sbn.runningMean) == before.0 && bits(sbn.runningVariance) == before.1)
        sbn.momentum = 0.9
        sbn.layout = .nhwc
        #expect(throws: NormError.invalidShape(expected: "(N, L, 3), (N, H, W, 3) or (N, D, H, W, 3)", actual: [2, 3, 4, 5])) {
            _ = try sbn.forward(Tensor(zeros: [2, 3, 4, 5]), mode: .training)
        }

        var gn = try GroupNorm<Float>(channelCount: 4, groupCount: 2)
        #expect(throws: NormError.invalidShape(expected: "(N, 4, L), (N, 4, H, W) or (N, 4, D, H, W)", actual: [2, 4])) {
            _ = try gn.forward(Tensor(zeros: [2, 4]), mode: .training)
        }
        var instance = try InstanceNorm<Float>(channelCount: 4)
        #expect(throws: NormError.insufficientValues(valuesPerStatistic: 1)) {
            _ = try instance.forward(Tensor(zeros: [2, 4, 1, 1]), mode: .inference)
        }
        let (_, cache) = try gn.forward(randomInput([2, 4, 3, 3], seed: 4), mode: .training)
        #expect(throws: NormError.gradientShapeMismatch(expected: [2, 4, 3, 3], actual: [2, 4, 3, 4])) {
            _ = try gn.backward(Tensor(zeros: [2, 4, 3, 4]), cache: cache)
        }
        let other = try GroupNorm<Float>(channelCount: 4, groupCount: 4)
        #expect(throws: NormError.cacheMismatch(expected: "GroupNorm(channelCount: 4, groupCount: 4)",
                                                actual: "GroupNorm(channelCount: 4, groupCount: 2)")) {
            _ = try other.backward(Tensor(zeros: [2, 4, 3, 3]), cache: cache)
        }

        // RMSNorm has no shift by default (Affine.scaleOnly): a beta is refused.
        var rms = try RMSNorm<Float>(featureCount: 3)
        rms.beta = [0, 0.5, 0]
        #expect(throws: NormError.parameterCountMismatch(name: "beta", expected: 0, actual: 3)) {
            _ = try rms.forward(Tensor(zeros: [2, 3]), mode: .training)
        }
    }
}

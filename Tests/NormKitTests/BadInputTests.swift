import NormKit
import Testing

/// The contract of every entry point (the Architecture article): every bad
/// input throws the matching `NormError` and changes no state.
@Suite("Bad input")
struct BadInputTests {
    /// A layer whose running statistics are not at their initial zeros, so that
    /// "unchanged" is a real check.
    func trainedBatchNorm<S: BLASScalar>(_: S.Type, backend: Backend) throws -> BatchNorm<S> {
        var bn = try BatchNorm<S>(featureCount: 3, backend: backend)
        _ = try bn.forward(randomInput([8, 3], seed: 1), mode: .training)
        return bn
    }

    /// Runs `body` on a copy of `bn`, expects `error`, and checks that the copy's
    /// running statistics are bit for bit those of `bn`.
    func expectRefusal<S: BLASScalar>(
        _ bn: BatchNorm<S>, _ error: NormError,
        sourceLocation: SourceLocation = #_sourceLocation,
        _ body: (inout BatchNorm<S>) throws -> Void
    ) {
        var copy = bn
        #expect(throws: error, sourceLocation: sourceLocation) { try body(&copy) }
        #expect(bits(copy.runningMean) == bits(bn.runningMean), sourceLocation: sourceLocation)
        #expect(bits(copy.runningVariance) == bits(bn.runningVariance), sourceLocation: sourceLocation)
    }

    func batchNormRefusals<S: BLASScalar>(_: S.Type, backend: Backend) throws {
        let bn = try trainedBatchNorm(S.self, backend: backend)
        let good: Tensor<S> = randomInput([4, 3], seed: 2)

        // Shapes.
        expectRefusal(bn, .invalidShape(expected: "(N >= 1, 3)", actual: [4, 3, 1])) {
            _ = try $0.forward(Tensor(zeros: [4, 3, 1]), mode: .training)
        }
        expectRefusal(bn, .invalidShape(expected: "(N >= 1, 3)", actual: [4, 2])) {
            _ = try $0.forward(Tensor(zeros: [4, 2]), mode: .inference)
        }
        expectRefusal(bn, .invalidShape(expected: "(N >= 1, 3)", actual: [0, 3])) {
            _ = try $0.forward(Tensor(zeros: [0, 3]), mode: .inference)
        }
        expectRefusal(bn, .invalidShape(expected: "(N >= 1, 3)", actual: [12])) {
            _ = try $0.forward(Tensor(zeros: [12]), mode: .training)
        }
        // One value per statistic in training (inference is fine).
        expectRefusal(bn, .insufficientValues(valuesPerStatistic: 1)) {
            _ = try $0.forward(randomInput([1, 3], seed: 3), mode: .training)
        }
        var inference = bn
        _ = try inference.forward(randomInput([1, 3], seed: 3), mode: .inference)
        // Hyperparameters changed through the public vars.
        // (NaN compares unequal to itself, so its case is checked by type below.)
        for epsilon in [S(0), -1, .infinity] {
            expectRefusal(bn, .invalidEpsilon(Double(epsilon))) {
                $0.epsilon = epsilon
                _ = try $0.forward(good, mode: .training)
            }
        }
        for momentum in [S(-0.1), 1.5] {
            expectRefusal(bn, .invalidMomentum(Double(momentum))) {
                $0.momentum = momentum
                _ = try $0.forward(good, mode: .training)
            }
        }
        for (epsilon, momentum) in [(S.nan, S(0.9)), (S(1e-5), S.nan)] {
            var copy = bn
            copy.epsilon = epsilon
            copy.momentum = momentum
            #expect(throws: NormError.self) { _ = try copy.forward(good, mode: .training) }
            #expect(bits(copy.runningMean) == bits(bn.runningMean))
            #expect(bits(copy.runningVariance) == bits(bn.runningVariance))
        }
        expectRefusal(bn, .parameterCountMismatch(name: "gamma", expected: 3, actual: 2)) {
            $0.gamma = [1, 1]
            _ = try $0.forward(good, mode: .training)
        }
        var wrongRunning = bn
        wrongRunning.runningVariance = [1, 1, 1, 1]
        #expect(throws: NormError.parameterCountMismatch(name: "runningVariance", expected: 3, actual: 4)) {
            _ = try wrongRunning.forward(good, mode: .training)
        }
        #expect(bits(wrongRunning.runningMean) == bits(bn.runningMean))
        // A batch holding a NaN or an infinity.
        var scalars = good.scalars
        scalars[4] = .nan
        let withNaN = try Tensor(shape: [4, 3], scalars: scalars)
        expectRefusal(bn, .nonFiniteStatistics(index: 1)) { _ = try $0.forward(withNaN, mode: .training) }
        scalars[4] = .infinity
        let withInfinity = try Tensor(shape: [4, 3], scalars: scalars)
        expectRefusal(bn, .nonFiniteStatistics(index: 1)) {
            var output = try Tensor<S>(zeros: [0]), cache = NormCache<S>(), workspace = Workspace<S>()
            try $0.forward(withInfinity, mode: .training, into: &output, cache: &cache,
                           workspace: &workspace)
        }
        // Backward: a gradient of another shape, a cache of another layer.
        var layer = bn
        let (_, cache) = try layer.forward(good, mode: .training)
        #expect(throws: NormError.gradientShapeMismatch(expected: [4, 3], actual: [3, 4])) {
            _ = try bn.backward(Tensor(zeros: [3, 4]), cache: cache)
        }
        #expect(throws: NormError.gradientShapeMismatch(expected: [4, 3], actual: [5, 3])) {
            _ = try bn.backwardThroughGraph(Tensor(zeros: [5, 3]), cache: cache)
        }
        let other = try BatchNorm<S>(featureCount: 5)
        #expect(throws: NormError.cacheMismatch(expected: "BatchNorm(featureCount: 5)",
                                                actual: "BatchNorm(featureCount: 3)")) {
            _ = try other.backward(good, cache: cache)
        }
        #expect(throws: NormError.cacheMismatch(expected: "BatchNorm(featureCount: 3)",
                                                actual: CacheOrigin.none.description)) {
            _ = try bn.backward(good, cache: NormCache<S>())
        }
    }

    @Test("BatchNorm refuses bad input and keeps its running statistics", arguments: [Backend.blas, .naive])
    func batchNorm(backend: Backend) throws {
        try batchNormRefusals(Float.self, backend: backend)
        try batchNormRefusals(Double.self, backend: backend)
    }

    @Test("initializers refuse bad sizes and hyperparameters")
    func initializers() {
        #expect(throws: NormError.invalidFeatureCount(0)) { try BatchNorm<Float>(featureCount: 0) }
        #expect(throws: NormError.invalidFeatureCount(-3)) { try BatchNorm<Double>(featureCount: -3) }
        #expect(throws: NormError.invalidEpsilon(0)) { try BatchNorm<Float>(featureCount: 2, epsilon: 0) }
        #expect(throws: NormError.invalidMomentum(2)) { try BatchNorm<Float>(featureCount: 2, momentum: 2) }
        #expect(throws: NormError.invalidFeatureCount(0)) { try LayerNorm<Float>(featureCount: 0) }
        #expect(throws: NormError.invalidEpsilon(-1)) { try LayerNorm<Double>(featureCount: 4, epsilon: -1) }
        #expect(throws: NormError.scalarCountMismatch(shape: [2, 3], scalarCount: 5)) {
            try Tensor<Float>(shape: [2, 3], scalars: [1, 2, 3, 4, 5])
        }
        #expect(throws: NormError.negativeDimension(shape: [2, -3])) {
            try Tensor<Float>(shape: [2, -3], scalars: [])
        }
    }

    func layerNormRefusals<S: BLASScalar>(_: S.Type, backend: Backend) throws {
        var ln = try LayerNorm<S>(featureCount: 4, backend: backend)
        #expect(throws: NormError.invalidShape(expected: "(..., 4) with at least one row", actual: [2, 5])) {
            _ = try ln.forward(Tensor(zeros: [2, 5]), mode: .training)
        }
        var scalars: [S] = randomInput([3, 4], seed: 1).scalars
        scalars[9] = .nan
        #expect(throws: NormError.nonFiniteStatistics(index: 2)) {
            _ = try ln.forward(Tensor(shape: [3, 4], scalars: scalars), mode: .inference)
        }
        var single = try LayerNorm<S>(featureCount: 1, backend: backend)
        #expect(throws: NormError.insufficientValues(valuesPerStatistic: 1)) {
            _ = try single.forward(Tensor(zeros: [5, 1]), mode: .training)
        }
        ln.beta = [0]
        #expect(throws: NormError.parameterCountMismatch(name: "beta", expected: 4, actual: 1)) {
            _ = try ln.forward(Tensor(zeros: [2, 4]), mode: .training)
        }
        ln.beta = [0, 0, 0, 0]
        ln.epsilon = .nan
        #expect(throws: NormError.self) { _ = try ln.forward(Tensor(zeros: [2, 4]), mode: .training) }
        ln.epsilon = 1e-5
        let (_, cache) = try ln.forward(randomInput([2, 4], seed: 2), mode: .training)
        #expect(throws: NormError.gradientShapeMismatch(expected: [2, 4], actual: [4, 2])) {
            _ = try ln.backward(Tensor(zeros: [4, 2]), cache: cache)
        }
    }

    @Test("LayerNorm refuses bad input", arguments: [Backend.blas, .naive])
    func layerNorm(backend: Backend) throws {
        try layerNormRefusals(Float.self, backend: backend)
        try layerNormRefusals(Double.self, backend: backend)
    }

    @Test("errors describe what was expected and what came")
    func descriptions() {
        let error = NormError.invalidShape(expected: "(N >= 1, 3)", actual: [4, 2])
        #expect(error.description == "expected an input of shape (N >= 1, 3), got [4, 2]")
        #expect(NormError.invalidMomentum(1.5).description.contains("1.5"))
        #expect(NormError.insufficientValues(valuesPerStatistic: 1).description.contains("at least 2"))
    }

    @Test("tensors refuse negative and overflowing shapes instead of trapping")
    func tensorShapes() throws {
        for shape in [[Int.max, 2], [1 << 62, 4], [2, Int.max], [1 << 32, 1 << 32]] {
            #expect(throws: NormError.shapeOverflow(shape: shape)) { _ = try Tensor<Float>(zeros: shape) }
            #expect(throws: NormError.shapeOverflow(shape: shape)) {
                _ = try Tensor<Double>(randomNormal: shape, seed: 1)
            }
            #expect(throws: NormError.shapeOverflow(shape: shape)) {
                _ = try Tensor<Float>(shape: shape, scalars: [1, 2])
            }
        }
        for shape in [[-1, 4], [0, -1], [Int.min, 2]] {
            #expect(throws: NormError.negativeDimension(shape: shape)) { _ = try Tensor<Float>(zeros: shape) }
            #expect(throws: NormError.negativeDimension(shape: shape)) {
                _ = try Tensor<Float>(randomNormal: shape, seed: 1)
            }
        }
        // A zero dimension holds no scalars whatever the others and their order.
        for shape in [[0, Int.max, 2], [Int.max, 2, 0], [Int.max, 0, Int.max]] {
            let t = try Tensor<Float>(zeros: shape)
            #expect(t.count == 0 && t.shape == shape)
            #expect(try Tensor<Float>(shape: shape, scalars: []).count == 0)
        }
        // Such tensors are refused by every layer, as any wrong shape is.
        var ln = try LayerNorm<Float>(featureCount: 2)
        #expect(throws: NormError.invalidShape(expected: "(..., 2) with at least one row", actual: [Int.max, 0])) {
            _ = try ln.forward(Tensor(zeros: [Int.max, 0]), mode: .training)
        }
        var gn = try GroupNorm<Float>(channelCount: 2, groupCount: 1)
        #expect(throws: NormError.self) {
            _ = try gn.forward(Tensor(zeros: [0, 2, Int.max, 2]), mode: .training)
        }
    }

    @Test("error descriptions are safe for any shape")
    func descriptionsOfExtremeShapes() {
        #expect(NormError.scalarCountMismatch(shape: [Int.max, 2], scalarCount: 3).description
                == "shape [\(Int.max), 2] holds more than Int.max scalars, but 3 were given")
        #expect(NormError.scalarCountMismatch(shape: [-1, 2], scalarCount: 3).description
                == "shape [-1, 2] holds no scalars, but 3 were given")
        #expect(NormError.scalarCountMismatch(shape: [Int.max, 0], scalarCount: 3).description
                == "shape [\(Int.max), 0] holds 0 scalars, but 3 were given")
        #expect(NormError.shapeOverflow(shape: [1 << 62, 4]).description.contains("more than Int.max"))
    }
}

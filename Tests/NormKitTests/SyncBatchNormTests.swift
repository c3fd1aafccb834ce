import NormKit
import Testing

/// The synchronized layers on one process (``SingleProcess``): the same bits
/// as their single-process twins, and an empty shard handled. The mpirun
/// tests (NormKitMPITests) check 1, 2 and 3 ranks with uneven batches.
@Suite("SyncBatchNorm on one process")
struct SyncBatchNormTests {
    /// Two training steps, their backward passes and an inference step, with
    /// `.unbiased` and momentum 0.8: outputs, gradients and running statistics
    /// bit for bit.
    func sameBits<S: BLASScalar, L: BufferedNormalizationLayer<S>, R: BufferedNormalizationLayer<S>>(
        _ reference: R, _ synchronized: L, shape: [Int], running: (R) -> [S], syncRunning: (L) -> [S]
    ) throws {
        var reference = reference, synchronized = synchronized
        for (step, mode) in [Mode.training, .training, .inference].enumerated() {
            let x: Tensor<S> = randomInput(shape, scale: 3, shift: 10000.1, seed: UInt64(step + 1))
            let dy: Tensor<S> = randomInput(shape, scale: 1, shift: 0.1, seed: UInt64(step + 11))
            let (y, cache) = try reference.forward(x, mode: mode)
            let (syncY, syncCache) = try synchronized.forward(x, mode: mode)
            let grads = try reference.backward(dy, cache: cache)
            let syncGrads = try synchronized.backward(dy, cache: syncCache)
            #expect(bits(syncY.scalars) == bits(y.scalars))
            #expect(bits(syncGrads.input.scalars) == bits(grads.input.scalars))
            #expect(bits(syncGrads.gamma + syncGrads.beta) == bits(grads.gamma + grads.beta))
            #expect(bits(syncRunning(synchronized)) == bits(running(reference)))
        }
    }

    func sameBitsEveryLayer<S: BLASScalar>(_: S.Type) throws {
        var bn = try BatchNorm<S>(featureCount: 7, momentum: 0.8, varianceEstimator: .unbiased)
        bn.gamma = randomVector(7, scale: 1, shift: 1, seed: 5)
        bn.beta = randomVector(7, seed: 6)
        try sameBits(bn, SyncBatchNorm(bn, communicator: SingleProcess()), shape: [37, 7],
                     running: { $0.runningMean + $0.runningVariance },
                     syncRunning: { $0.runningMean + $0.runningVariance })
        for (layout, shape) in [(ChannelLayout.nchw, [5, 3, 4, 7]), (.nhwc, [5, 4, 7, 3])] {
            var sbn = try SpatialBatchNorm<S>(channelCount: 3, momentum: 0.8, varianceEstimator: .unbiased,
                                              layout: layout)
            sbn.gamma = randomVector(3, scale: 1, shift: 1, seed: 7)
            try sameBits(sbn, SyncSpatialBatchNorm(sbn, communicator: SingleProcess()), shape: shape,
                         running: { $0.runningMean + $0.runningVariance },
                         syncRunning: { $0.runningMean + $0.runningVariance })
        }
    }

    @Test("with SingleProcess the results are BatchNorm's and SpatialBatchNorm's, bit for bit")
    func singleProcessBits() throws {
        try sameBitsEveryLayer(Float.self)
        try sameBitsEveryLayer(Double.self)
    }

    @Test("a NormalizationStep of SyncBatchNorm gives BatchNorm's bits")
    func step() throws {
        let x: Tensor<Double> = randomInput([2000, 33], scale: 3, shift: 10000.1, seed: 3)
        var step = NormalizationStep(try SyncBatchNorm<Double>(featureCount: 33, communicator: SingleProcess()))
        try step.forward(x)
        try step.backward(x)
        var reference = try BatchNorm<Double>(featureCount: 33)
        let (y, cache) = try reference.forward(x, mode: .training)
        let grads = try reference.backward(x, cache: cache)
        #expect(bits(step.output.scalars) == bits(y.scalars))
        #expect(bits(step.gradients.input.scalars) == bits(grads.input.scalars))
    }

    @Test("an empty shard: inference gives an empty output, training needs 2 values in the batch")
    func emptyShard() throws {
        var bn = try SyncBatchNorm<Float>(featureCount: 4, communicator: SingleProcess())
        let empty = try Tensor<Float>([], shape: [0, 4])
        let (y, _) = try bn.forward(empty, mode: .inference)
        #expect(y.shape == [0, 4])
        #expect(throws: NormError.insufficientValues(valuesPerStatistic: 0)) {
            try bn.forward(empty, mode: .training)
        }
        #expect(bn.runningMean == [0, 0, 0, 0])
        // Buffers without an address (count 0) are accepted.
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        try bn.forward(UnsafeBufferPointer(start: nil, count: 0), shape: [0, 4], mode: .inference,
                       into: UnsafeMutableBufferPointer(start: nil, count: 0), cache: &cache,
                       workspace: &workspace)
        var dgamma = [Float](repeating: 9, count: 4), dbeta = dgamma
        try dgamma.withUnsafeMutableBufferPointer { dgamma in
            try dbeta.withUnsafeMutableBufferPointer { dbeta in
                try bn.backward(UnsafeBufferPointer(start: nil, count: 0), cache: cache,
                                inputGradient: UnsafeMutableBufferPointer(start: nil, count: 0),
                                gammaGradient: dgamma, betaGradient: dbeta, workspace: &workspace)
            }
        }
        #expect(dgamma == [0, 0, 0, 0] && dbeta == [0, 0, 0, 0])
        // A NHWC image shard with no samples; other empty dimensions are refused.
        var sbn = try SyncSpatialBatchNorm<Double>(channelCount: 2, layout: .nhwc, communicator: SingleProcess())
        #expect(try sbn.forward(Tensor<Double>([], shape: [0, 3, 3, 2]), mode: .inference).output.count == 0)
        #expect(throws: NormError.invalidShape(expected: "(N, L, 2), (N, H, W, 2) or (N, D, H, W, 2)", actual: [1, 0, 3, 2])) {
            try sbn.forward(Tensor<Double>([], shape: [1, 0, 3, 2]), mode: .inference)
        }
        // No samples, but a sample's extents overflow (found by the fuzzer).
        var nchw = try SyncSpatialBatchNorm<Float>(channelCount: 2, communicator: SingleProcess())
        #expect(throws: NormError.sizeTooLarge(Int.max)) {
            try nchw.forward(Tensor<Float>([], shape: [0, 2, Int.max / 2, 3]), mode: .inference)
        }
    }

    @Test("bad input throws the single-process error and changes nothing; caches are not interchangeable")
    func badInput() throws {
        var bn = try SyncBatchNorm<Double>(featureCount: 3, communicator: SingleProcess())
        let x: Tensor<Double> = randomInput([6, 3], seed: 1)
        _ = try bn.forward(x, mode: .training)
        let before = bn.runningMean + bn.runningVariance
        #expect(throws: NormError.invalidShape(expected: "(N >= 0, 3)", actual: [6, 2])) {
            try bn.forward(randomInput([6, 2], seed: 2) as Tensor<Double>, mode: .training)
        }
        var poisoned = x
        poisoned[2, 1] = .nan
        #expect(throws: NormError.nonFiniteStatistics(index: 1)) { try bn.forward(poisoned, mode: .training) }
        #expect(bn.runningMean + bn.runningVariance == before)
        // A BatchNorm cache is not a SyncBatchNorm cache, nor the reverse.
        var plain = try BatchNorm<Double>(featureCount: 3)
        let (_, cache) = try plain.forward(x, mode: .training)
        #expect(throws: NormError.cacheMismatch(expected: "SyncBatchNorm(featureCount: 3)",
                                                actual: "BatchNorm(featureCount: 3)")) {
            try bn.backward(x, cache: cache)
        }
        let (_, syncCache) = try bn.forward(x, mode: .training)
        #expect(throws: NormError.gradientShapeMismatch(expected: [6, 3], actual: [3, 6])) {
            try bn.backward(x.reshaped([3, 6]), cache: syncCache)
        }
        #expect(throws: NormError.self) { try plain.backward(x, cache: syncCache) }
        // The state is BatchNorm's, read and written through the twin.
        bn.momentum = 0.5
        #expect(bn.batchNorm.momentum == 0.5 && bn.featureCount == 3)
    }

    @Test("Synchronized is one wrapper: its names read and write the one layer; shard geometries")
    func oneWrapper() throws {
        var bn = try SyncBatchNorm<Float>(featureCount: 3, communicator: SingleProcess())
        bn.batchNorm.momentum = 0.25
        #expect(bn.layer.momentum == 0.25 && bn.momentum == 0.25 && bn.channelCount == 3)
        bn.layer.runningMean = [1.5, 2.5, 3.5]
        #expect(bn.batchNorm.runningMean == [1.5, 2.5, 3.5])
        let wrapped: Synchronized<SpatialBatchNorm<Double>> = Synchronized(
            try SpatialBatchNorm<Double>(channelCount: 3, layout: .nhwc), communicator: SingleProcess())
        var sbn: SyncSpatialBatchNorm<Double> = wrapped
        sbn.spatialBatchNorm.epsilon = 1e-3
        #expect(sbn.layer.epsilon == 1e-3 && sbn.layout == .nhwc)
        #expect(sbn.cacheOrigin == .syncSpatialBatchNorm(channelCount: 3, layout: .nhwc))
        // Where a shard puts each channel: (outer runs, inner values); empty shards allowed.
        #expect(try bn.layer.channelGeometry(shape: [0, 3], minimumBatch: 0) == (0, 1))
        #expect(try bn.layer.channelGeometry(shape: [7, 3], minimumBatch: 0) == (7, 1))
        #expect(try sbn.layer.channelGeometry(shape: [2, 4, 5, 3], minimumBatch: 0) == (40, 1))
        let nchw = try SpatialBatchNorm<Double>(channelCount: 3)
        #expect(try nchw.channelGeometry(shape: [2, 3, 4, 5], minimumBatch: 0) == (2, 20))
        #expect(throws: NormError.invalidShape(expected: "(N >= 0, 3)", actual: [7, 2])) {
            try bn.layer.channelGeometry(shape: [7, 2], minimumBatch: 0)
        }
        // The layers' own passes need a sample.
        #expect(throws: NormError.invalidShape(expected: "(N >= 1, 3)", actual: [0, 3])) {
            try bn.layer.channelGeometry(shape: [0, 3], minimumBatch: 1)
        }
        #expect(throws: NormError.negativeDimension(shape: [2, 3, -4, 5])) {
            try nchw.channelGeometry(shape: [2, 3, -4, 5], minimumBatch: 0)
        }
    }
}

import Foundation
import NormKit
import Testing

/// A file of `Tests/NormKitTests/Fixtures`.
private func fixture(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent(name).path
}

@Suite("Running-statistics policies (DESIGN §2.5)")
struct RunningStatisticsTests {
    @Test("cumulative: the running statistics are the equal-weight mean of every batch's, from the first batch on")
    func cumulativeIsTheMeanOfBatches() throws {
        for backend in [Backend.blas, .naive] {
            var bn = try BatchNorm<Double>(featureCount: 5, varianceEstimator: .unbiased,
                                           runningStatistics: .cumulative, backend: backend)
            bn.runningMean = [7, 7, 7, 7, 7]   // replaced by the first batch
            var means = [[Double]](), variances = [[Double]]()
            for step in 0..<4 {
                let x: Tensor<Double> = randomInput([9, 5], scale: 3.7, shift: 10000.1, seed: UInt64(20 + step))
                _ = try bn.forward(x, mode: .training)
                means.append((0..<5).map { mean(column(x, $0)) })
                variances.append((0..<5).map { j in
                    let c = column(x, j), m = mean(c)
                    return c.reduce(0) { $0 + ($1 - m) * ($1 - m) } / 8
                })
                #expect(bn.batchesTracked == step + 1)
                let t = Double(step + 1)
                let expectedMean = (0..<5).map { j in means.reduce(0) { $0 + $1[j] } / t }
                let expectedVariance = (0..<5).map { j in variances.reduce(0) { $0 + $1[j] } / t }
                #expect(normwiseError(bn.runningMean, expectedMean) < 1e-14, "\(backend) step \(step)")
                #expect(normwiseError(bn.runningVariance, expectedVariance) < 1e-13, "\(backend) step \(step)")
            }
            // An inference forward counts nothing and changes nothing.
            let before = bn
            _ = try bn.forward(randomInput([3, 5], seed: 1), mode: .inference)
            #expect(bn == before)
        }
    }

    @Test("exponential counts batches and keeps today's bits")
    func exponentialCounts() throws {
        var counted = try BatchNorm<Float>(featureCount: 13)
        var plain = try BatchNorm<Float>(featureCount: 13)
        plain.batchesTracked = 0
        for step in 0..<3 {
            let x: Tensor<Float> = randomInput([37, 13], shift: 10000.1, seed: UInt64(step))
            let a = try counted.forward(x, mode: .training).output
            #expect(counted.batchesTracked == step + 1)
            // The running update is momentum · running + (1 - momentum) · batch, as before.
            let m = plain.runningMean
            let b = try plain.forward(x, mode: .training).output
            #expect(sameBits(a.scalars, b.scalars))
            let batchMean = (0..<13).map { Float(mean(column(x, $0))) }
            for j in 0..<13 {
                #expect(abs(counted.runningMean[j] - (0.9 * m[j] + 0.1 * batchMean[j])) <= 2e-3)
            }
        }
    }

    @Test("none: batch statistics in both modes, nothing updated or counted; inference backward is the full gradient")
    func noneUsesBatchStatistics() throws {
        for backend in [Backend.blas, .naive] {
            var bn = try BatchNorm<Double>(featureCount: 6, runningStatistics: .none, backend: backend)
            let x: Tensor<Double> = randomInput([11, 6], scale: 2.5, shift: 10000.1, seed: 4)
            let dy: Tensor<Double> = randomInput([11, 6], scale: 1, shift: 0.3, seed: 5)
            let before = bn
            let (yEval, cacheEval) = try bn.forward(x, mode: .inference)
            let (yTrain, cacheTrain) = try bn.forward(x, mode: .training)
            #expect(bn == before && bn.batchesTracked == 0)
            #expect(sameBits(yEval.scalars, yTrain.scalars))
            #expect(sameBits(try bn.infer(x).scalars, yTrain.scalars))
            let gEval = try bn.backward(dy, cache: cacheEval), gTrain = try bn.backward(dy, cache: cacheTrain)
            #expect(sameBits(gEval.input.scalars, gTrain.input.scalars))
            // The gradient check of the inference pass: batch statistics, not constants.
            let small: Tensor<Double> = randomInput([11, 6], scale: 2.5, shift: 0.3, seed: 4)
            let analytic = try bn.backward(dy, cache: bn.forward(small, mode: .inference).cache).input
            let frozen = bn
            let numeric = try GradientCheck.numericalGradient(at: small, outputGradient: dy) { (t) throws(NormError) in
                var layer = frozen
                return try layer.forward(t, mode: .inference).output
            }
            let check = GradientCheck.relativeError(analytic.scalars, numeric.scalars)
            #expect(check < 1e-6, "\(backend): relative error \(check)")
            // One sample cannot give batch statistics, in either mode.
            #expect(throws: NormError.insufficientValues(valuesPerStatistic: 1)) {
                try bn.forward(Tensor<Double>(zeros: [1, 6]), mode: .inference)
            }
            #expect(bn == before)
        }
        // SpatialBatchNorm, both layouts, and the 16-bit path.
        for layout in [ChannelLayout.nchw, .nhwc] {
            var sbn = try SpatialBatchNorm<Float>(channelCount: 3, layout: layout, runningStatistics: .none)
            let x: Tensor<Float> = randomInput(layout == .nchw ? [2, 3, 4, 5] : [2, 4, 5, 3], shift: 0.3, seed: 6)
            let before = sbn
            #expect(sameBits(try sbn.forward(x, mode: .inference).output.scalars,
                             try sbn.forward(x, mode: .training).output.scalars))
            #expect(sbn == before)
            let halves = x.scalars.map { BFloat16($0) }
            var yEval = [BFloat16](repeating: BFloat16(0), count: halves.count), yTrain = yEval, yInfer = yEval
            var cache = NormCache<Float>(), workspace = Workspace<Float>()
            try halves.withUnsafeBufferPointer { input in
                try yEval.withUnsafeMutableBufferPointer {
                    try sbn.forward(input, shape: x.shape, mode: .inference, into: $0, cache: &cache, workspace: &workspace)
                }
                try yTrain.withUnsafeMutableBufferPointer {
                    try sbn.forward(input, shape: x.shape, mode: .training, into: $0, cache: &cache, workspace: &workspace)
                }
                try yInfer.withUnsafeMutableBufferPointer {
                    try sbn.infer(input, shape: x.shape, into: $0, workspace: &workspace)
                }
            }
            #expect(yEval.map(\.bitPattern) == yTrain.map(\.bitPattern) && yInfer.map(\.bitPattern) == yTrain.map(\.bitPattern))
            #expect(sbn == before)
        }
    }

    /// The analytic gradient of an inference forward against centred
    /// differences of the same frozen layer.
    func frozenGradientError<Layer: BufferedNormalizationLayer<Double>>(_ layer: Layer, shape: [Int]) throws -> Double {
        var layer = layer
        let x: Tensor<Double> = randomInput(shape, scale: 2, shift: 0.7, seed: 31)
        let dy: Tensor<Double> = randomInput(shape, scale: 1, shift: 0, seed: 32)
        let analytic = try layer.backward(dy, cache: layer.forward(x, mode: .inference).cache).input
        let frozen = layer
        let numeric = try GradientCheck.numericalGradient(at: x, outputGradient: dy) { (t) throws(NormError) in
            var probe = frozen
            return try probe.forward(t, mode: .inference).output
        }
        return Double(GradientCheck.relativeError(analytic.scalars, numeric.scalars, floor: 1e-3))
    }

    @Test("backward after an inference forward is the exact gradient of every layer with running statistics, each policy")
    func frozenStatisticsGradient() throws {
        for policy in [RunningStatistics.exponential, .cumulative, .none] {
            var bn = try BatchNorm<Double>(featureCount: 5, varianceEstimator: .unbiased, runningStatistics: policy)
            var nchw = try SpatialBatchNorm<Double>(channelCount: 3, runningStatistics: policy)
            var nhwc = try SpatialBatchNorm<Double>(channelCount: 3, layout: .nhwc, activation: .relu,
                                                    runningStatistics: policy)
            var instance = try InstanceNorm<Double>(channelCount: 3, varianceEstimator: .unbiased, activation: .relu,
                                                    runningStatistics: policy)
            for seed in UInt64(0)..<2 {   // running statistics that are not the initial ones
                _ = try instance.forward(randomInput([2, 3, 4, 3], seed: seed), mode: .training)
                _ = try bn.forward(randomInput([9, 5], seed: seed), mode: .training)
                _ = try nchw.forward(randomInput([2, 3, 3, 4], seed: seed), mode: .training)
                _ = try nhwc.forward(randomInput([2, 3, 4, 3], seed: seed), mode: .training)
            }
            bn.gamma = randomVector(5, shift: 1, seed: 3)
            nchw.gamma = randomVector(3, shift: 1, seed: 4)
            let errors = [
                ("BatchNorm", try frozenGradientError(bn, shape: [6, 5])),
                ("SpatialBatchNorm NCHW", try frozenGradientError(nchw, shape: [2, 3, 3, 4])),
                ("SpatialBatchNorm NHWC ReLU", try frozenGradientError(nhwc, shape: [2, 3, 4, 3])),
                ("InstanceNorm ReLU", try frozenGradientError(instance, shape: [2, 3, 4, 3])),
                ("SyncBatchNorm", try frozenGradientError(SyncBatchNorm(bn, communicator: SingleProcess()), shape: [6, 5])),
                ("SyncSpatialBatchNorm", try frozenGradientError(SyncSpatialBatchNorm(nchw, communicator: SingleProcess()),
                                                                 shape: [2, 3, 3, 4])),
            ]
            for (name, error) in errors {
                #expect(error <= 1e-7, "\(name), \(policy): relative error \(error)")
            }
        }
    }

    @Test("batchesTracked outside 0..<Int.max is refused with the state unchanged")
    func refusesBadCount() throws {
        for count in [-1, Int.max] {
            var bn = try BatchNorm<Float>(featureCount: 4, runningStatistics: .cumulative)
            bn.batchesTracked = count
            let before = bn
            #expect(throws: NormError.unsupportedParameter(
                name: "batchesTracked", expected: "from 0 to Int.max - 1, got \(count)")) {
                try bn.forward(Tensor<Float>(randomNormal: [5, 4], seed: 1), mode: .training)
            }
            #expect(bn == before)
        }
    }

    @Test("Codable keeps the policy and the count; archives without them decode with PyTorch's defaults")
    func codable() throws {
        var bn = try BatchNorm<Float>(featureCount: 3, runningStatistics: .cumulative)
        _ = try bn.forward(randomInput([4, 3], seed: 2), mode: .training)
        let data = try JSONEncoder().encode(bn)
        #expect(try JSONDecoder().decode(BatchNorm<Float>.self, from: data) == bn)
        var object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        object["runningStatistics"] = nil
        object["batchesTracked"] = nil
        let old = try JSONDecoder().decode(BatchNorm<Float>.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(old.runningStatistics == .exponential && old.batchesTracked == 0 && old.runningMean == bn.runningMean)
        object["batchesTracked"] = -3
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(BatchNorm<Float>.self, from: JSONSerialization.data(withJSONObject: object))
        }
        let sbn = try SpatialBatchNorm<Double>(channelCount: 2, layout: .nhwc, runningStatistics: .none)
        #expect(try JSONDecoder().decode(SpatialBatchNorm<Double>.self, from: JSONEncoder().encode(sbn)) == sbn)
    }

    @Test("SyncBatchNorm and SyncSpatialBatchNorm over one process: the single-process layer's bits and counts")
    func synchronized() throws {
        for policy in [RunningStatistics.exponential, .cumulative, .none] {
            var local = try BatchNorm<Float>(featureCount: 5, runningStatistics: policy)
            var sync = try SyncBatchNorm<Float>(featureCount: 5, runningStatistics: policy, communicator: SingleProcess())
            for step in 0..<3 {
                let x: Tensor<Float> = randomInput([6, 5], shift: 10.1, seed: UInt64(step))
                let mode: Mode = step == 2 ? .inference : .training
                #expect(sameBits(try local.forward(x, mode: mode).output.scalars,
                                 try sync.forward(x, mode: mode).output.scalars))
            }
            #expect(sync.batchNorm == local && sync.batchesTracked == (policy == .none ? 0 : 2))
            var localSpatial = try SpatialBatchNorm<Double>(channelCount: 3, runningStatistics: policy)
            var syncSpatial = try SyncSpatialBatchNorm<Double>(channelCount: 3, runningStatistics: policy,
                                                              communicator: SingleProcess())
            let images: Tensor<Double> = randomInput([2, 3, 3, 2], seed: 9)
            for mode in [Mode.training, .training, .inference] {
                #expect(sameBits(try localSpatial.forward(images, mode: mode).output.scalars,
                                 try syncSpatial.forward(images, mode: mode).output.scalars))
            }
            #expect(syncSpatial.spatialBatchNorm == localSpatial)
        }
    }

    @Test("PyTorch BatchNorm1d(momentum=None): three training steps, gradients, state and eval output")
    func pytorchCumulative() throws {
        let state = try NumPyArchive(contentsOf: fixture("pytorch-running.npz"))
        var bn = try BatchNorm<Double>(featureCount: 5, varianceEstimator: .unbiased, runningStatistics: .cumulative)
        bn.gamma = try state.tensor("cumulative.weight").scalars
        bn.beta = try state.tensor("cumulative.bias").scalars
        var lastCache = NormCache<Double>()
        for step in 1...3 {
            let (y, cache) = try bn.forward(state.tensor("cumulative_x\(step)"), mode: .training)
            #expect(normwiseError(y.scalars, try state.tensor("cumulative_y\(step)", as: Double.self).scalars) < 1e-12)
            lastCache = cache
        }
        let grads = try bn.backward(state.tensor("cumulative_dy3"), cache: lastCache)
        #expect(normwiseError(grads.input.scalars, try state.tensor("cumulative_dx3", as: Double.self).scalars) < 1e-10)
        #expect(normwiseError(grads.gamma, try state.tensor("cumulative_dweight3", as: Double.self).scalars) < 1e-12)
        #expect(normwiseError(grads.beta, try state.tensor("cumulative_dbias3", as: Double.self).scalars) < 1e-12)
        #expect(normwiseError(bn.runningMean, try state.tensor("cumulative.running_mean", as: Double.self).scalars) < 1e-14)
        #expect(normwiseError(bn.runningVariance, try state.tensor("cumulative.running_var", as: Double.self).scalars) < 1e-13)
        #expect(bn.batchesTracked == 3)
        // The state_dict in: the policy from momentum=None, the count from num_batches_tracked.
        var imported = try BatchNorm<Double>(pytorch: state, prefix: "cumulative.", pytorchMomentum: nil)
        #expect(imported.runningStatistics == .cumulative && imported.batchesTracked == 3)
        #expect(normwiseError(imported.runningMean, bn.runningMean) < 1e-15)
        let eval = try imported.forward(state.tensor("cumulative_eval_input"), mode: .inference).output
        #expect(normwiseError(eval.scalars, try state.tensor("cumulative_eval_output", as: Double.self).scalars) < 1e-12)
        // And out: the same arrays, under the same names.
        let exported = imported.pytorchState(prefix: "cumulative.")
        for name in ["weight", "bias", "running_mean", "running_var"] {
            #expect(exported["cumulative." + name] == state["cumulative." + name], "\(name)")
        }
        #expect(try exported["cumulative.num_batches_tracked"]?.integers() == [3])
        #expect(exported["cumulative.num_batches_tracked"]?.shape == [])
        #expect(try BatchNorm<Double>(pytorch: exported, prefix: "cumulative.", pytorchMomentum: nil) == imported)
    }

    @Test("PyTorch BatchNorm2d(track_running_stats=False): eval uses the batch's statistics, backward is theirs")
    func pytorchUntracked() throws {
        let state = try NumPyArchive(contentsOf: fixture("pytorch-running.npz"))
        var sbn = try SpatialBatchNorm<Double>(pytorch: state, prefix: "untracked.")
        #expect(sbn.runningStatistics == .none)
        let (y, cache) = try sbn.forward(state.tensor("untracked_eval_input"), mode: .inference)
        #expect(normwiseError(y.scalars, try state.tensor("untracked_eval_output", as: Double.self).scalars) < 1e-12)
        let grads = try sbn.backward(state.tensor("untracked_eval_dy"), cache: cache)
        #expect(normwiseError(grads.input.scalars, try state.tensor("untracked_eval_dx", as: Double.self).scalars) < 1e-10)
        let exported = sbn.pytorchState(prefix: "untracked.")
        #expect(exported.names == ["untracked.weight", "untracked.bias"])
        #expect(try SpatialBatchNorm<Double>(pytorch: exported, prefix: "untracked.") == sbn)
        // Only one running statistic, or an integer weight: errors naming the entries.
        var broken = state
        broken["untracked.running_mean"] = NumPyArray([0.0, 0, 0])
        #expect(throws: NormError.self) { try SpatialBatchNorm<Double>(pytorch: broken, prefix: "untracked.") }
        broken["untracked.running_mean"] = nil
        broken["untracked.weight"] = NumPyArray(integer: 3)
        do {
            _ = try SpatialBatchNorm<Double>(pytorch: broken, prefix: "untracked.")
            Issue.record("an integer weight was accepted")
        } catch {
            #expect("\(error)".contains("untracked.weight"), "\(error)")
        }
    }

    /// With `NORMKIT_PYTORCH_STATE=D`, writes the exported states for
    /// `make_porting_fixture.py --check D`, which loads them into PyTorch.
    @Test("pytorchState of each policy is what load_state_dict(strict=True) takes (checked by the fixture script)")
    func exportsForPyTorch() throws {
        let state = try NumPyArchive(contentsOf: fixture("pytorch-running.npz"))
        var exponential = try BatchNorm<Double>(featureCount: 5, momentum: 0.9, varianceEstimator: .unbiased)
        for seed in 0..<3 { _ = try exponential.forward(randomInput([8, 5], seed: UInt64(seed)), mode: .training) }
        let layers: [(String, NumPyArchive, Tensor<Double>, Tensor<Double>)] = [
            ("cumulative", try BatchNorm<Double>(pytorch: state, prefix: "cumulative.", pytorchMomentum: nil).pytorchState(),
             try state.tensor("cumulative_eval_input"),
             try BatchNorm<Double>(pytorch: state, prefix: "cumulative.", pytorchMomentum: nil).infer(state.tensor("cumulative_eval_input"))),
            ("untracked", try SpatialBatchNorm<Double>(pytorch: state, prefix: "untracked.").pytorchState(),
             try state.tensor("untracked_eval_input"),
             try SpatialBatchNorm<Double>(pytorch: state, prefix: "untracked.").infer(state.tensor("untracked_eval_input"))),
            ("exponential1d", exponential.pytorchState(), randomInput([4, 5], seed: 7),
             try exponential.infer(randomInput([4, 5], seed: 7))),
        ]
        for (name, archive, _, _) in layers {
            #expect(archive.names.allSatisfy { !$0.contains(".") }, "\(name): \(archive.names)")
        }
        guard let directory = ProcessInfo.processInfo.environment["NORMKIT_PYTORCH_STATE"] else { return }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (name, archive, input, output) in layers {
            try archive.write(to: "\(directory)/\(name).npz")
            try input.writeNPY(to: "\(directory)/\(name)_input.npy")
            try output.writeNPY(to: "\(directory)/\(name)_output.npy")
        }
    }

    @Test("InstanceNorm's running statistics: the mean of the instance statistics, each policy, both backends; inference is SpatialBatchNorm's with them")
    func instanceNormRunning() throws {
        for backend in [Backend.blas, .naive] {
            for policy in [RunningStatistics.exponential, .cumulative] {
                var layer = try InstanceNorm<Double>(channelCount: 3, momentum: 0.7, varianceEstimator: .unbiased,
                                                     runningStatistics: policy, backend: backend)
                var expectedMean = [Double](repeating: 0, count: 3), expectedVariance = expectedMean
                for step in 0..<3 {
                    let x: Tensor<Double> = randomInput([4, 3, 5, 3], scale: 3.7, shift: 10000.1, seed: UInt64(40 + step))
                    _ = try layer.forward(x, mode: .training)
                    let take = policy == .exponential ? 0.3 : 1 / Double(step + 1)
                    for c in 0..<3 {
                        var means = 0.0, variances = 0.0
                        for n in 0..<4 {
                            let slab = Array(x.scalars[(n * 3 + c) * 15 ..< (n * 3 + c + 1) * 15])
                            let m = mean(slab)
                            means += m
                            variances += slab.reduce(0) { $0 + ($1 - m) * ($1 - m) } / 14
                        }
                        expectedMean[c] = (1 - take) * expectedMean[c] + take * means / 4
                        expectedVariance[c] = (1 - take) * expectedVariance[c] + take * variances / 4
                    }
                    #expect(normwiseError(layer.runningMean, expectedMean) < 1e-14, "\(backend) \(policy) \(step)")
                    #expect(normwiseError(layer.runningVariance, expectedVariance) < 1e-10, "\(backend) \(policy) \(step)")
                    #expect(layer.batchesTracked == step + 1)
                }
                // Inference: SpatialBatchNorm's with the same running statistics, bit for bit.
                var spatial = try SpatialBatchNorm<Double>(channelCount: 3, backend: backend)
                (spatial.runningMean, spatial.runningVariance) = (layer.runningMean, layer.runningVariance)
                let x: Tensor<Double> = randomInput([2, 3, 4, 5], seed: 9)
                let before = layer
                #expect(sameBits(try layer.forward(x, mode: .inference).output.scalars,
                                 try spatial.forward(x, mode: .inference).output.scalars))
                #expect(sameBits(try layer.infer(x).scalars, try spatial.infer(x).scalars))
                #expect(layer == before)   // inference updates and counts nothing
            }
            // .none (the default) is unchanged: both modes the instance statistics, nothing kept.
            var plain = try InstanceNorm<Double>(channelCount: 3, backend: backend)
            let x: Tensor<Double> = randomInput([2, 3, 4, 5], seed: 10)
            let training = try plain.forward(x, mode: .training).output
            #expect(sameBits(try plain.forward(x, mode: .inference).output.scalars, training.scalars))
            #expect(plain.runningMean == [0, 0, 0] && plain.batchesTracked == 0)
        }
    }

    @Test("InstanceNorm refuses bad running state with the state unchanged; a single spatial value is fine in frozen inference")
    func instanceNormBadState() throws {
        var layer = try InstanceNorm<Float>(channelCount: 3, runningStatistics: .exponential)
        layer.runningVariance = [1, 1]
        let before = layer
        #expect(throws: NormError.parameterCountMismatch(name: "runningVariance", expected: 3, actual: 2)) {
            try layer.forward(Tensor<Float>(randomNormal: [2, 3, 4, 4], seed: 1), mode: .training)
        }
        #expect(layer == before)
        #expect(throws: NormError.invalidMomentum(2)) { try InstanceNorm<Float>(channelCount: 3, momentum: 2) }
        layer.runningVariance = [1, 2, 3]
        _ = try layer.forward(Tensor<Float>(randomNormal: [2, 3, 1, 1], seed: 1), mode: .inference)
        #expect(throws: NormError.insufficientValues(valuesPerStatistic: 1)) {
            try layer.forward(Tensor<Float>(randomNormal: [2, 3, 1, 1], seed: 1), mode: .training)
        }
    }
}

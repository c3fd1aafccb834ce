import Foundation
import NormKit
import Testing

/// A file of `Tests/NormKitTests/Fixtures`.
private func fixture(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent(name).path
}

@Suite("Affine switches (DESIGN §2.5)")
struct AffineTests {
    /// `absent` (a layer without some parameter) against `full`, the same
    /// layer with both, whose `gamma` is `absent`'s (ones without one) and
    /// whose `beta` is zeros: the same outputs and input gradients (values;
    /// `x + 0` may only turn a `-0` into `+0`), the same `dgamma` where it
    /// exists, and empty gradients for the absent parameters. Two training
    /// steps first, so that running statistics differ from their start.
    func expectSameFunction<L: NormalizationLayer>(
        _ label: String, absent: L, full: L, shape: [Int], shift: Double = 10000.1,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        var absent = absent, full = full
        #expect(absent.gamma.count == absent.affine.scaleCount(full.gamma.count), "\(label) gamma",
                sourceLocation: sourceLocation)
        #expect(absent.beta.count == absent.affine.shiftCount(full.beta.count), "\(label) beta",
                sourceLocation: sourceLocation)
        full.gamma = absent.gamma.isEmpty ? [L.Scalar](repeating: 1, count: full.gamma.count) : absent.gamma
        full.beta = [L.Scalar](repeating: 0, count: full.gamma.count)
        for step in 0..<2 {
            let x: Tensor<L.Scalar> = randomInput(shape, scale: 3.7, shift: shift, seed: 40 + UInt64(step))
            _ = try absent.forward(x, mode: .training)
            _ = try full.forward(x, mode: .training)
        }
        for mode in [Mode.training, .inference] {
            let x: Tensor<L.Scalar> = randomInput(shape, scale: 3.7, shift: shift, seed: 50)
            let dy: Tensor<L.Scalar> = randomInput(shape, scale: 1, shift: 0.1, seed: 51)
            let (y, cache) = try absent.forward(x, mode: mode)
            let (yFull, cacheFull) = try full.forward(x, mode: mode)
            #expect(y.scalars == yFull.scalars, "\(label) \(mode) y", sourceLocation: sourceLocation)
            if let cache = cache as? NormCache<L.Scalar> {
                #expect(cache.affine == absent.affine, sourceLocation: sourceLocation)
            }
            let g = try absent.backward(dy, cache: cache), gFull = try full.backward(dy, cache: cacheFull)
            #expect(g.input.scalars == gFull.input.scalars, "\(label) \(mode) dx", sourceLocation: sourceLocation)
            #expect(g.gamma == (absent.affine.hasScale ? gFull.gamma : []), "\(label) \(mode) dgamma",
                    sourceLocation: sourceLocation)
            #expect(g.beta == (absent.affine.hasShift ? gFull.beta : []), "\(label) \(mode) dbeta",
                    sourceLocation: sourceLocation)
        }
    }

    @Test("every layer without a shift, or without either parameter, computes the full layer's function with ones and zeros; absent gradients are empty",
          arguments: [Backend.blas, .naive])
    func sameFunction(backend: Backend) throws {
        for affine in [Affine.scaleOnly, .none] {
            let label = "\(affine) \(backend)"
            var bn = try BatchNorm<Double>(featureCount: 7, affine: affine, backend: backend)
            if affine.hasScale { bn.gamma = randomVector(7, scale: 0.4, shift: 1, seed: 3) }
            try expectSameFunction("BatchNorm " + label, absent: bn,
                                   full: BatchNorm(featureCount: 7, backend: backend), shape: [37, 7])
            let relu = try BatchNorm<Float>(featureCount: 5, activation: .relu, runningStatistics: .cumulative,
                                            affine: affine, backend: backend)
            try expectSameFunction("BatchNorm relu " + label, absent: relu,
                                   full: BatchNorm(featureCount: 5, activation: .relu, runningStatistics: .cumulative,
                                                   backend: backend), shape: [19, 5], shift: 0.3)
            for layout in [ChannelLayout.nchw, .nhwc] {
                let shape = layout == .nchw ? [3, 4, 5, 7] : [3, 5, 7, 4]
                try expectSameFunction(
                    "SpatialBatchNorm \(layout) " + label,
                    absent: SpatialBatchNorm<Float>(channelCount: 4, layout: layout, affine: affine, backend: backend),
                    full: SpatialBatchNorm(channelCount: 4, layout: layout, backend: backend), shape: shape)
                try expectSameFunction(
                    "GroupNorm \(layout) " + label,
                    absent: GroupNorm<Double>(channelCount: 4, groupCount: 2, layout: layout, affine: affine,
                                              backend: backend),
                    full: GroupNorm(channelCount: 4, groupCount: 2, layout: layout, backend: backend), shape: shape)
                for policy in [RunningStatistics.none, .exponential] {
                    try expectSameFunction(
                        "InstanceNorm \(layout) \(policy) " + label,
                        absent: InstanceNorm<Float>(channelCount: 4, layout: layout, runningStatistics: policy,
                                                    affine: affine, backend: backend),
                        full: InstanceNorm(channelCount: 4, layout: layout, runningStatistics: policy,
                                           backend: backend), shape: shape)
                }
            }
            // Row layers on both row kernels (short rows, and rows of 1029).
            for (rows, columns) in [(37, 6), (9, 1029)] {
                var ln = try LayerNorm<Float>(featureCount: columns, affine: affine, backend: backend)
                if affine.hasScale { ln.gamma = randomVector(columns, scale: 0.4, shift: 1, seed: 5) }
                try expectSameFunction("LayerNorm \(columns) " + label, absent: ln,
                                       full: LayerNorm(featureCount: columns, backend: backend),
                                       shape: [rows, columns])
                try expectSameFunction("RMSNorm \(columns) " + label,
                                       absent: RMSNorm<Double>(featureCount: columns, affine: affine, backend: backend),
                                       full: RMSNorm(featureCount: columns, affine: .scaleAndShift, backend: backend),
                                       shape: [rows, columns], shift: 0.2)
            }
            try expectSameFunction(
                "DecorrelatedBatchNorm " + label,
                absent: DecorrelatedBatchNorm<Double>(featureCount: 6, groupSize: 3, affine: affine, backend: backend),
                full: DecorrelatedBatchNorm(featureCount: 6, groupSize: 3, backend: backend), shape: [41, 6], shift: 3)
            try expectSameFunction(
                "SyncBatchNorm " + label,
                absent: SyncBatchNorm<Double>(featureCount: 7, affine: affine, communicator: SingleProcess(),
                                              backend: backend),
                full: SyncBatchNorm(featureCount: 7, communicator: SingleProcess(), backend: backend), shape: [37, 7])
        }
    }

    @Test("RMSNorm with a shift: y = gamma·x/rms + beta, dbeta = Σ dy, the gradient exact by centred differences")
    func rmsShift() throws {
        var rms = try RMSNorm<Double>(featureCount: 5, affine: .scaleAndShift)
        rms.gamma = randomVector(5, scale: 0.4, shift: 1, seed: 6)
        rms.beta = randomVector(5, scale: 0.3, shift: 0.1, seed: 7)
        var plain = try RMSNorm<Double>(featureCount: 5)
        plain.gamma = rms.gamma
        let x: Tensor<Double> = randomInput([9, 5], scale: 2, shift: 0.5, seed: 8)
        let dy: Tensor<Double> = randomInput([9, 5], scale: 1, shift: 0, seed: 9)
        let (y, cache) = try rms.forward(x, mode: .training)
        let yPlain = try plain.forward(x, mode: .training).output
        for i in 0..<9 { for j in 0..<5 {
            #expect(abs(y.scalars[i * 5 + j] - (yPlain.scalars[i * 5 + j] + rms.beta[j])) <= 1e-15 * 4)
        }}
        let g = try rms.backward(dy, cache: cache)
        for j in 0..<5 {
            let sum = (0..<9).reduce(0.0) { $0 + dy.scalars[$1 * 5 + j] }
            #expect(abs(g.beta[j] - sum) <= 1e-14 * 9)
        }
        var probe = rms
        let numeric = try GradientCheck.numericalGradient(at: x, outputGradient: dy) {
            try probe.forward($0, mode: .training).output
        }
        #expect(normwiseError(g.input.scalars, numeric.scalars) < 1e-8)
    }

    @Test("16 bits: LayerNorm without a shift and BatchNorm without parameters are the full layers' bits")
    func reduced() throws {
        let x = (randomInput([33, 40], scale: 3, shift: 100.1, seed: 10) as Tensor<Float>).scalars.map { BFloat16($0) }
        let dy = (randomInput([33, 40], scale: 1, shift: 0, seed: 11) as Tensor<Float>).scalars.map { BFloat16($0) }
        func run<L: BufferedNormalizationLayer<Float>>(_ layer: L) throws -> (y: [UInt16], dx: [UInt16], dgamma: [Float], dbeta: [Float]) {
            var layer = layer
            var y = [BFloat16](repeating: BFloat16(0), count: x.count), dx = y
            var dgamma = [Float](repeating: 0, count: layer.gamma.count), dbeta = [Float](repeating: 0, count: layer.beta.count)
            var cache = NormCache<Float>(), workspace = Workspace<Float>()
            try x.withUnsafeBufferPointer { input in
                try y.withUnsafeMutableBufferPointer { output in
                    if var ln = layer as? LayerNorm<Float> {
                        try ln.forward(input, shape: [33, 40], mode: .training, into: output, cache: &cache, workspace: &workspace)
                    } else if var bn = layer as? BatchNorm<Float> {
                        try bn.forward(input, shape: [33, 40], mode: .training, into: output, cache: &cache, workspace: &workspace)
                        layer = bn as! L
                    }
                }
            }
            try dy.withUnsafeBufferPointer { g in
                try dx.withUnsafeMutableBufferPointer { d in
                    try dgamma.withUnsafeMutableBufferPointer { dg in
                        try dbeta.withUnsafeMutableBufferPointer { db in
                            if let ln = layer as? LayerNorm<Float> {
                                try ln.backward(g, cache: cache, inputGradient: d, gammaGradient: dg, betaGradient: db,
                                                workspace: &workspace)
                            } else if let bn = layer as? BatchNorm<Float> {
                                try bn.backward(g, cache: cache, inputGradient: d, gammaGradient: dg, betaGradient: db,
                                                workspace: &workspace)
                            }
                        }
                    }
                }
            }
            return (y.map(\.bitPattern), dx.map(\.bitPattern), dgamma, dbeta)
        }
        var scaled = try LayerNorm<Float>(featureCount: 40, affine: .scaleOnly)
        scaled.gamma = randomVector(40, scale: 0.4, shift: 1, seed: 12)
        var full = try LayerNorm<Float>(featureCount: 40)
        full.gamma = scaled.gamma
        let (a, b) = (try run(scaled), try run(full))
        #expect(a.y == b.y && a.dx == b.dx && a.dgamma == b.dgamma && a.dbeta.isEmpty)
        let (c, d) = (try run(BatchNorm<Float>(featureCount: 40, affine: .none)), try run(BatchNorm<Float>(featureCount: 40)))
        #expect(c.y == d.y && c.dx == d.dx && c.dgamma.isEmpty && c.dbeta.isEmpty)
    }

    @Test("a gradient buffer for an absent parameter, or a gamma or beta of another count, is refused with the state unchanged")
    func refusals() throws {
        var bn = try BatchNorm<Float>(featureCount: 3, affine: .none)
        let x: Tensor<Float> = randomInput([8, 3], seed: 13)
        let (_, cache) = try bn.forward(x, mode: .training)
        var workspace = Workspace<Float>()
        var dx = [Float](repeating: 0, count: 24), three = [Float](repeating: 0, count: 3), none: [Float] = []
        try x.scalars.withUnsafeBufferPointer { dy in
            try dx.withUnsafeMutableBufferPointer { dx in
                try three.withUnsafeMutableBufferPointer { dgamma in
                    try none.withUnsafeMutableBufferPointer { dbeta in
                        #expect(throws: NormError.bufferCountMismatch(name: "gammaGradient", expected: 0, actual: 3)) {
                            try bn.backward(dy, cache: cache, inputGradient: dx, gammaGradient: dgamma,
                                            betaGradient: dbeta, workspace: &workspace)
                        }
                    }
                }
            }
        }
        let before = bn
        bn.gamma = [1, 1, 1]
        let withGamma = bn
        #expect(throws: NormError.parameterCountMismatch(name: "gamma", expected: 0, actual: 3)) {
            _ = try bn.forward(x, mode: .training)
        }
        #expect(bn == withGamma && bn.runningMean == before.runningMean && bn.batchesTracked == before.batchesTracked)
        var ln = try LayerNorm<Double>(featureCount: 4, affine: .scaleOnly)
        ln.beta = [0, 0, 0, 0]
        #expect(throws: NormError.parameterCountMismatch(name: "beta", expected: 0, actual: 4)) {
            _ = try ln.forward(randomInput([3, 4], seed: 14), mode: .training)
        }
        var gn = try GroupNorm<Float>(channelCount: 4, groupCount: 2)
        gn.beta = []
        #expect(throws: NormError.parameterCountMismatch(name: "beta", expected: 4, actual: 0)) {
            _ = try gn.infer(randomInput([2, 4, 3, 3], seed: 15))
        }
    }

    @Test("archive(), Codable and NormalizationStep keep the affine map; older archives decode with the defaults")
    func state() throws {
        func roundTrip<L: ArchivableLayer & Equatable>(_ layer: L) throws {
            #expect(try L(archive: NumPyArchive(npz: layer.archive().npz())) == layer, "\(layer)")
            #expect(try JSONDecoder().decode(L.self, from: JSONEncoder().encode(layer)) == layer, "\(layer)")
        }
        for affine in [Affine.scaleAndShift, .scaleOnly, .none] {
            var bn = try BatchNorm<Float>(featureCount: 3, affine: affine)
            _ = try bn.forward(randomInput([5, 3], seed: 16), mode: .training)
            try roundTrip(bn)
            try roundTrip(SpatialBatchNorm<Double>(channelCount: 2, affine: affine))
            try roundTrip(LayerNorm<Float>(normalizedShape: [2, 3], affine: affine))
            try roundTrip(RMSNorm<Double>(featureCount: 4, affine: affine))
            try roundTrip(GroupNorm<Float>(channelCount: 4, groupCount: 2, affine: affine))
            try roundTrip(InstanceNorm<Double>(channelCount: 3, runningStatistics: .cumulative, affine: affine))
            try roundTrip(DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2, affine: affine))
        }
        // The default is not written, so earlier archives read as before.
        #expect(!(try LayerNorm<Float>(featureCount: 3).archive().names.contains("affine")))
        #expect(try LayerNorm<Float>(featureCount: 3, affine: .none).archive().names.contains("affine"))
        #expect(!(try RMSNorm<Float>(featureCount: 3).archive().names.contains("affine")))

        // A NormalizationStep sizes the gradients by the layer's parameters.
        var step = NormalizationStep(try LayerNorm<Float>(featureCount: 6, affine: .none), inputShape: [4, 6])
        try step.forward(randomInput([4, 6], seed: 17) as Tensor<Float>)
        try step.backward(randomInput([4, 6], scale: 1, shift: 0, seed: 18) as Tensor<Float>)
        #expect(step.gradients.gamma.isEmpty && step.gradients.beta.isEmpty && step.gradients.input.count == 24)
        var rmsStep = NormalizationStep(try RMSNorm<Float>(featureCount: 6), inputShape: [4, 6])
        try rmsStep.forward(randomInput([4, 6], seed: 17) as Tensor<Float>)
        try rmsStep.backward(randomInput([4, 6], scale: 1, shift: 0, seed: 18) as Tensor<Float>)
        #expect(rmsStep.gradients.gamma.count == 6 && rmsStep.gradients.beta.isEmpty)
    }

    @Test("PyTorch modules without parameters: LayerNorm(bias=False), GroupNorm(affine=False), BatchNorm2d(affine=False) match, and their state goes back")
    func pytorch() throws {
        let state = try NumPyArchive(contentsOf: fixture("pytorch-layers.npz"))
        var exports: [(String, NumPyArchive, Tensor<Double>, Tensor<Double>)] = []

        var ln = try LayerNorm<Double>(pytorch: state, prefix: "layernorm_nobias.")
        #expect(ln.affine == .scaleOnly && ln.beta.isEmpty)
        let x: Tensor<Double> = try state.tensor("layernorm_nobias_x")
        let (y, cache) = try ln.forward(x, mode: .training)
        let g = try ln.backward(state.tensor("layernorm_nobias_dy"), cache: cache)
        try expectMatchesFixture(state, "layernorm_nobias", y: y, gradients: g, hasBias: false)
        let lnState = ln.pytorchState(prefix: "layernorm_nobias.")
        #expect(lnState.names == ["layernorm_nobias.weight"])
        exports.append(("layernorm_nobias", ln.pytorchState(), x, y))

        var gn = try GroupNorm<Double>(channelCount: 6, groupCount: 2, affine: .none)
        let gx: Tensor<Double> = try state.tensor("groupnorm_noaffine_x")
        let (gy, gcache) = try gn.forward(gx, mode: .training)
        let gg = try gn.backward(state.tensor("groupnorm_noaffine_dy"), cache: gcache)
        #expect(normwiseError(gy.scalars, try state.tensor("groupnorm_noaffine_y").scalars) < 1e-12)
        #expect(normwiseError(gg.input.scalars, try state.tensor("groupnorm_noaffine_dx").scalars) < 1e-10)
        #expect(gg.gamma.isEmpty && gg.beta.isEmpty && gn.pytorchState().names.isEmpty)
        #expect(throws: NormError.self) { try GroupNorm<Double>(pytorch: NumPyArchive(), groupCount: 2) }
        exports.append(("groupnorm_noaffine", gn.pytorchState(), gx, gy))

        let name = "bn2d_noaffine"
        var bn = try SpatialBatchNorm<Double>(channelCount: 3, momentum: 0.9, varianceEstimator: .unbiased,
                                              affine: .none)
        bn.runningVariance = [1, 1, 1]   // PyTorch's start
        for step in 1...3 {
            let (y, cache) = try bn.forward(state.tensor("\(name)_x\(step)"), mode: .training)
            #expect(normwiseError(y.scalars, try state.tensor("\(name)_y\(step)").scalars) < 1e-12)
            if step == 3 {
                let g = try bn.backward(state.tensor("\(name)_dy3"), cache: cache)
                #expect(normwiseError(g.input.scalars, try state.tensor("\(name)_dx3").scalars) < 1e-10)
                #expect(g.gamma.isEmpty && g.beta.isEmpty)
            }
        }
        #expect(normwiseError(bn.runningMean, try state.tensor(name + ".running_mean").scalars) < 1e-14)
        #expect(normwiseError(bn.runningVariance, try state.tensor(name + ".running_var").scalars) < 1e-13)
        let imported = try SpatialBatchNorm<Double>(pytorch: state, prefix: name + ".")
        #expect(imported.affine == .none && imported.gamma.isEmpty && imported.batchesTracked == 3)
        var eval = imported
        let ex: Tensor<Double> = try state.tensor("\(name)_eval_x")
        let (ey, ecache) = try eval.forward(ex, mode: .inference)
        #expect(normwiseError(ey.scalars, try state.tensor("\(name)_eval_y").scalars) < 1e-12)
        let eg = try eval.backward(state.tensor("\(name)_eval_dy"), cache: ecache)
        #expect(normwiseError(eg.input.scalars, try state.tensor("\(name)_eval_dx").scalars) < 1e-12)
        let bnState = bn.pytorchState()
        #expect(Set(bnState.names) == ["running_mean", "running_var", "num_batches_tracked"])
        exports.append((name, bnState, ex, ey))

        if let directory = ProcessInfo.processInfo.environment["NORMKIT_PYTORCH_STATE"] {
            // For make_porting_fixture.py --check.
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for (name, archive, input, output) in exports {
                try archive.write(to: "\(directory)/\(name).npz")
                try input.writeNPY(to: "\(directory)/\(name)_input.npy")
                try output.writeNPY(to: "\(directory)/\(name)_output.npy")
            }
        }
    }
}

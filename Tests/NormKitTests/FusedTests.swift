import Foundation
import NormKit
import Testing

/// DESIGN §2.4: the fused residual and ReLU forms equal the unfused sequence
/// (add, layer, ReLU) bit for bit, forward and backward; `infer` equals
/// `forward(mode: .inference)`'s output bit for bit and changes nothing; the
/// fused gradients pass a gradient check; bad buffers are refused by name.
@Suite("Fused passes and infer")
struct FusedTests {
    /// `relu(v)` as DESIGN §2.4 defines it: `v` when `v > 0` or NaN, `+0` otherwise.
    static func relu<S: BLASScalar>(_ v: S) -> S { v > 0 || v.isNaN ? v : 0 }

    /// `a + b`, elementwise.
    static func add<S: BLASScalar>(_ a: Tensor<S>, _ b: Tensor<S>) throws -> Tensor<S> {
        try Tensor(shape: a.shape, scalars: zip(a.scalars, b.scalars).map { $0 + $1 })
    }

    // MARK: Per-channel layers: residual and ReLU

    /// The layer with ``FusedActivation/relu`` and a residual, against the same
    /// layer without activation, then `+ r`, then ReLU; and its backward
    /// against the plain backward of `dy` masked by `y > 0`. Two training
    /// steps and an inference step; running statistics compared too.
    func expectFusedEqualsUnfused<L: ActivatedNormalizationLayer>(
        _ layer: L, shape: [Int], state: (L) -> [L.Scalar] = { $0.gamma + $0.beta },
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        var fused = layer, plain = layer
        fused.activation = .relu
        plain.activation = .none
        for (step, mode) in [Mode.training, .training, .inference].enumerated() {
            let x: Tensor<L.Scalar> = randomInput(shape, scale: 3, shift: 10000.1, seed: UInt64(step + 1))
            let r: Tensor<L.Scalar> = randomInput(shape, scale: 1, shift: 0.1, seed: UInt64(step + 21))
            let dy: Tensor<L.Scalar> = randomInput(shape, scale: 1, shift: 0.1, seed: UInt64(step + 41))
            let (y, cache) = try fused.forward(x, residual: r, mode: mode)
            let (z, plainCache) = try plain.forward(x, mode: mode)
            let expected = zip(z.scalars, r.scalars).map { Self.relu($0 + $1) }
            #expect(sameBits(y.scalars, expected), "output, \(mode)", sourceLocation: sourceLocation)
            // Without a residual: relu(norm(x)).
            var reluOnly = fused
            let (yOnly, _) = try reluOnly.forward(x, mode: mode)
            #expect(sameBits(yOnly.scalars, z.scalars.map(Self.relu)), sourceLocation: sourceLocation)

            var gradients = NormGradients<L.Scalar>(), residualGradient = try Tensor<L.Scalar>(zeros: [0])
            var workspace = Workspace<L.Scalar>()
            try fused.backward(dy, cache: cache, into: &gradients, residualGradient: &residualGradient,
                               workspace: &workspace)
            let masked = try Tensor(shape: shape, scalars: zip(dy.scalars, y.scalars).map {
                $1 > 0 ? $0 : 0
            })
            let reference = try plain.backward(masked, cache: plainCache)
            #expect(sameBits(gradients.input.scalars, reference.input.scalars), "dx, \(mode)",
                    sourceLocation: sourceLocation)
            #expect(sameBits(gradients.gamma + gradients.beta, reference.gamma + reference.beta),
                    sourceLocation: sourceLocation)
            #expect(sameBits(residualGradient.scalars, masked.scalars), sourceLocation: sourceLocation)
            // The plain backward of a ReLU forward masks too.
            let again = try fused.backward(dy, cache: cache)
            #expect(sameBits(again.input.scalars, reference.input.scalars), sourceLocation: sourceLocation)
            // The value form, and the Span form.
            let valued = try fused.backwardWithResidual(dy, cache: cache)
            #expect(sameBits(valued.gradients.input.scalars, reference.input.scalars),
                    sourceLocation: sourceLocation)
            #expect(sameBits(valued.residualGradient.scalars, masked.scalars), sourceLocation: sourceLocation)
            #expect(valued.residualGradient.shape == shape, sourceLocation: sourceLocation)
            var dxs = [L.Scalar](repeating: 0, count: dy.count), drs = dxs
            var dgs = [L.Scalar](repeating: 0, count: layer.gamma.count),
            dbs = [L.Scalar](repeating: 0, count: layer.beta.count)
            var dxSpan = dxs.mutableSpan, drSpan = drs.mutableSpan
            var dgSpan = dgs.mutableSpan, dbSpan = dbs.mutableSpan
            try fused.backward(dy.scalars.span, cache: cache, inputGradient: &dxSpan,
                               residualGradient: &drSpan, gammaGradient: &dgSpan,
                               betaGradient: &dbSpan, workspace: &workspace)
            _ = consume dxSpan; _ = consume drSpan; _ = consume dgSpan; _ = consume dbSpan
            #expect(sameBits(dxs, reference.input.scalars), sourceLocation: sourceLocation)
            #expect(sameBits(drs, masked.scalars), sourceLocation: sourceLocation)
            #expect(sameBits(dgs + dbs, reference.gamma + reference.beta), sourceLocation: sourceLocation)
        }
        #expect(sameBits(state(fused), state(plain)), "state", sourceLocation: sourceLocation)
    }

    func perChannelLayers<S: BLASScalar>(_: S.Type, backend: Backend) throws {
        var bn = try BatchNorm<S>(featureCount: 37, momentum: 0.8, backend: backend)
        bn.gamma = randomVector(37, scale: 1, shift: 0.5, seed: 5)
        bn.beta = randomVector(37, scale: 0.5, seed: 6)
        let running: (BatchNorm<S>) -> [S] = { $0.runningMean + $0.runningVariance }
        try expectFusedEqualsUnfused(bn, shape: [129, 37], state: running)
        try expectFusedEqualsUnfused(bn, shape: [3000, 37], state: running)
        for (layout, shape) in [(ChannelLayout.nchw, [5, 3, 9, 7]), (.nhwc, [5, 9, 7, 3])] {
            var sbn = try SpatialBatchNorm<S>(channelCount: 3, momentum: 0.8, layout: layout,
                                              backend: backend)
            sbn.gamma = randomVector(3, scale: 1, shift: 1, seed: 7)
            try expectFusedEqualsUnfused(sbn, shape: shape, state: { $0.runningMean + $0.runningVariance })
        }
        var gn = try GroupNorm<S>(channelCount: 6, groupCount: 3, backend: backend)
        gn.gamma = randomVector(6, scale: 1, shift: 1, seed: 8)
        gn.beta = randomVector(6, scale: 0.5, seed: 9)
        try expectFusedEqualsUnfused(gn, shape: [3, 6, 5, 7])     // rows of 70: one at a time
        try expectFusedEqualsUnfused(gn, shape: [3, 6, 3, 3])     // rows of 18: row blocks
        try expectFusedEqualsUnfused(try InstanceNorm<S>(channelCount: 4, backend: backend),
                                     shape: [3, 4, 5, 3])
        try expectFusedEqualsUnfused(SyncBatchNorm(bn, communicator: SingleProcess()), shape: [41, 37],
                                     state: { $0.runningMean + $0.runningVariance })
        try expectFusedEqualsUnfused(
            SyncSpatialBatchNorm(try SpatialBatchNorm<S>(channelCount: 3, backend: backend),
                                 communicator: SingleProcess()),
            shape: [4, 3, 6, 5])
    }

    @Test("ReLU and residual forms equal norm, add, ReLU bit for bit, and their gradients",
          arguments: [Backend.blas, .naive])
    func activationBits(backend: Backend) throws {
        try perChannelLayers(Float.self, backend: backend)
        try perChannelLayers(Double.self, backend: backend)
    }

    @Test("relu(-0) is +0 and NaN stays NaN; the gradient at 0 is 0")
    func reluConventions() throws {
        // A constant column with beta -0.0: xhat is 0, gamma·0 + (-0) is +0 or
        // -0, relu gives +0, and its gradient is 0 there.
        var bn = try BatchNorm<Double>(featureCount: 2, activation: .relu)
        bn.beta = [-0.0, 0.25]
        let x = try Tensor<Double>(shape: [3, 2], scalars: [5, 1, 5, 2, 5, 4])
        let (y, cache) = try bn.forward(x, mode: .training)
        for i in 0..<3 {
            #expect(y.scalars[2 * i] == 0 && y.scalars[2 * i].sign == .plus)
        }
        let grads = try bn.backward(try Tensor(shape: [3, 2], repeating: 1), cache: cache)
        #expect(grads.beta[0] == 0 && grads.gamma[0] == 0)
        // Column 2 is [1, 2, 4]: xhat + 0.25 is about -0.82, -0.02 and 1.59, one above 0.
        #expect(grads.beta[1] == 1)
        var gn = try GroupNorm<Double>(channelCount: 2, groupCount: 1, activation: .relu)
        let nan = try Tensor<Double>(shape: [1, 2, 1, 2], scalars: [1, .nan, 3, 4])
        #expect(throws: NormError.nonFiniteStatistics(index: 0)) { _ = try gn.forward(nan, mode: .training) }
        let r = try Tensor<Double>(shape: [1, 2, 1, 2], scalars: [.nan, 0, 0, 0])
        let (yNaN, _) = try gn.forward(try Tensor(shape: [1, 2, 1, 2], scalars: [1, 2, 3, 4]),
                                       residual: r, mode: .training)
        #expect(yNaN.scalars[0].isNaN)
        // gamma and beta both NaN, with other payloads (the fuzzer's case,
        // Conventions "NaN"): fused and unfused give NaN everywhere, payloads
        // aside; the fused form run again gives the same NaN bits.
        var sbn = try SpatialBatchNorm<Double>(channelCount: 3)
        sbn.gamma = (0..<3).map { Double(nan: 0x7affff + $0, signaling: false) }
        sbn.beta = (0..<3).map { Double(nan: 0x100000 + $0, signaling: false) }
        let x3: Tensor<Double> = randomInput([2, 3, 1, 5], scale: 1, shift: 0.37, seed: 3)
        let r3: Tensor<Double> = randomInput([2, 3, 1, 5], scale: 1, shift: 0.1, seed: 4)
        var fused = sbn, plain = sbn
        fused.activation = .relu
        let (y1, _) = try fused.forward(x3, residual: r3, mode: .training)
        let (y2, _) = try fused.forward(x3, residual: r3, mode: .training)
        let (z, _) = try plain.forward(x3, mode: .training)
        #expect(y1.scalars.allSatisfy(\.isNaN) && z.scalars.allSatisfy(\.isNaN))
        #expect(sameBits(y1.scalars, y2.scalars))
    }

    // MARK: LayerNorm and RMSNorm: residual

    func expectResidualEqualsUnfused<L: ResidualNormalizationLayer>(
        _ layer: L, shape: [Int], sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        var layer = layer
        let x: Tensor<L.Scalar> = randomInput(shape, scale: 3, shift: 10000.1, seed: 1)
        let r: Tensor<L.Scalar> = randomInput(shape, scale: 2, shift: -0.3, seed: 2)
        let dy: Tensor<L.Scalar> = randomInput(shape, scale: 1, shift: 0.1, seed: 3)
        let ds: Tensor<L.Scalar> = randomInput(shape, scale: 1, shift: 0.2, seed: 4)
        let s = try Self.add(x, r)
        let (z, plainCache) = try layer.forward(s, mode: .training)
        let plain = try layer.backward(dy, cache: plainCache)

        // Tensor form (the cache shares the sum), twice with the same buffers.
        var output = try Tensor<L.Scalar>(zeros: [0]), sum = try Tensor<L.Scalar>(zeros: [0])
        var cache = NormCache<L.Scalar>(), workspace = Workspace<L.Scalar>()
        for _ in 0..<2 {
            try layer.forward(x, residual: r, mode: .training, into: &output, sum: &sum, cache: &cache,
                              workspace: &workspace)
            #expect(sameBits(output.scalars, z.scalars), sourceLocation: sourceLocation)
            #expect(sameBits(sum.scalars, s.scalars), sourceLocation: sourceLocation)
            #expect(sameBits(cache.mean + cache.inverseStandardDeviation,
                             plainCache.mean + plainCache.inverseStandardDeviation),
                    sourceLocation: sourceLocation)
        }
        let fused = try layer.backward(dy, sumGradient: ds, cache: cache)
        #expect(sameBits(fused.input.scalars, zip(plain.input.scalars, ds.scalars).map { $0 + $1 }),
                sourceLocation: sourceLocation)
        #expect(sameBits(fused.gamma + fused.beta, plain.gamma + plain.beta), sourceLocation: sourceLocation)
        // The Span form.
        var dxs = [L.Scalar](repeating: 0, count: dy.count)
        var dgs = [L.Scalar](repeating: 0, count: layer.gamma.count),
            dbs = [L.Scalar](repeating: 0, count: layer.beta.count)
        var dxSpan = dxs.mutableSpan, dgSpan = dgs.mutableSpan, dbSpan = dbs.mutableSpan
        try layer.backward(dy.scalars.span, sumGradient: ds.scalars.span, cache: cache,
                           inputGradient: &dxSpan, gammaGradient: &dgSpan, betaGradient: &dbSpan,
                           workspace: &workspace)
        _ = consume dxSpan; _ = consume dgSpan; _ = consume dbSpan
        #expect(sameBits(dxs, fused.input.scalars), sourceLocation: sourceLocation)
        #expect(sameBits(dgs + dbs, fused.gamma + fused.beta), sourceLocation: sourceLocation)
        // The plain backward accepts a residual forward's cache.
        let withoutSum = try layer.backward(dy, cache: cache)
        #expect(sameBits(withoutSum.input.scalars, plain.input.scalars), sourceLocation: sourceLocation)

        // Buffer form, in place: the output over the input, the sum over the residual.
        var buffer = x.scalars, sumBuffer = r.scalars
        var bufferCache = NormCache<L.Scalar>()
        try buffer.withUnsafeMutableBufferPointer { xy in
            try sumBuffer.withUnsafeMutableBufferPointer { rs in
                try layer.forward(UnsafeBufferPointer(xy), residual: UnsafeBufferPointer(rs),
                                  shape: shape, mode: .training, into: xy, sum: rs,
                                  cache: &bufferCache, workspace: &workspace)
            }
        }
        #expect(sameBits(buffer, z.scalars), sourceLocation: sourceLocation)
        #expect(sameBits(sumBuffer, s.scalars), sourceLocation: sourceLocation)
        #expect(sameBits(bufferCache.input.scalars, s.scalars), sourceLocation: sourceLocation)
    }

    func rowLayers<S: BLASScalar>(_: S.Type, backend: Backend) throws {
        for shape in [[7, 13], [129, 257], [3000, 37], [5, 1000]] {
            var ln = try LayerNorm<S>(featureCount: shape[1], backend: backend)
            ln.gamma = randomVector(shape[1], scale: 1, shift: 1, seed: 5)
            ln.beta = randomVector(shape[1], seed: 6)
            try expectResidualEqualsUnfused(ln, shape: shape)
            var rms = try RMSNorm<S>(featureCount: shape[1], backend: backend)
            rms.gamma = randomVector(shape[1], scale: 1, shift: 1, seed: 7)
            try expectResidualEqualsUnfused(rms, shape: shape)
        }
    }

    @Test("LayerNorm and RMSNorm with a residual equal add-then-normalize bit for bit",
          arguments: [Backend.blas, .naive])
    func residualBits(backend: Backend) throws {
        try rowLayers(Float.self, backend: backend)
        try rowLayers(Double.self, backend: backend)
    }

    // MARK: infer

    func expectInferEqualsForward<L: BufferedNormalizationLayer & Equatable>(
        _ layer: L, shape: [Int], sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        var trained = layer
        let x: Tensor<L.Scalar> = randomInput(shape, scale: 3, shift: 10000.1, seed: 1)
        _ = try trained.forward(x, mode: .training)   // running statistics that are not the defaults
        let before = trained
        let y = try trained.infer(x)
        var copy = trained
        let (expected, _) = try copy.forward(x, mode: .inference)
        #expect(sameBits(y.scalars, expected.scalars), sourceLocation: sourceLocation)
        #expect(trained == before, sourceLocation: sourceLocation)
        // In place over one buffer.
        var buffer = x.scalars, workspace = Workspace<L.Scalar>()
        try buffer.withUnsafeMutableBufferPointer { xy in
            try trained.infer(UnsafeBufferPointer(xy), shape: shape, into: xy, workspace: &workspace)
        }
        #expect(sameBits(buffer, expected.scalars), "in place", sourceLocation: sourceLocation)
    }

    func everyLayer<S: BLASScalar>(_: S.Type, backend: Backend) throws {
        for activation in [FusedActivation.none, .relu] {
            for shape in [[7, 13], [129, 257], [3000, 37]] {
                var bn = try BatchNorm<S>(featureCount: shape[1], activation: activation, backend: backend)
                bn.beta = randomVector(shape[1], seed: 6)
                try expectInferEqualsForward(bn, shape: shape)
                if activation == .none {
                    try expectInferEqualsForward(try LayerNorm<S>(featureCount: shape[1], backend: backend),
                                                 shape: shape)
                    try expectInferEqualsForward(try RMSNorm<S>(featureCount: shape[1], backend: backend),
                                                 shape: shape)
                }
            }
            for (layout, shape) in [(ChannelLayout.nchw, [5, 3, 9, 7]), (.nhwc, [5, 9, 7, 3])] {
                try expectInferEqualsForward(
                    try SpatialBatchNorm<S>(channelCount: 3, layout: layout, activation: activation,
                                            backend: backend), shape: shape)
            }
            for shape in [[3, 6, 5, 7], [3, 6, 3, 3]] {
                var gn = try GroupNorm<S>(channelCount: 6, groupCount: 3, activation: activation,
                                          backend: backend)
                gn.beta = randomVector(6, seed: 9)
                try expectInferEqualsForward(gn, shape: shape)
                try expectInferEqualsForward(
                    try InstanceNorm<S>(channelCount: 6, activation: activation, backend: backend),
                    shape: shape)
            }
        }
    }

    @Test("infer equals forward(mode: .inference) bit for bit, in place too, and changes nothing",
          arguments: [Backend.blas, .naive])
    func inferBits(backend: Backend) throws {
        try everyLayer(Float.self, backend: backend)
        try everyLayer(Double.self, backend: backend)
        var sync = try SyncBatchNorm<Double>(featureCount: 5, communicator: SingleProcess())
        let x: Tensor<Double> = randomInput([9, 5], seed: 3)
        _ = try sync.forward(x, mode: .training)
        var copy = sync
        #expect(sameBits(try sync.infer(x).scalars, try copy.forward(x, mode: .inference).output.scalars))
        var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2)
        let w: Tensor<Double> = randomInput([20, 4], seed: 4)
        _ = try dbn.forward(w, mode: .training)
        var dbnCopy = dbn
        #expect(sameBits(try dbn.infer(w).scalars, try dbnCopy.forward(w, mode: .inference).output.scalars))
    }

    // MARK: Gradient checks (Double)

    @Test("gradient check: BatchNorm and GroupNorm with ReLU and a residual, input and residual")
    func activationGradientCheck() throws {
        let shape = [6, 5]
        var bn = try BatchNorm<Double>(featureCount: 5, activation: .relu)
        bn.gamma = randomVector(5, scale: 1, shift: 1, seed: 5)
        let x: Tensor<Double> = randomInput(shape, scale: 2, shift: 3, seed: 1)
        let dy: Tensor<Double> = randomInput(shape, scale: 1, shift: 0, seed: 2)
        // A residual that keeps every pre-activation at least 0.3 from ReLU's kink.
        var plain = bn
        plain.activation = .none
        let (z, _) = try plain.forward(x, mode: .training)
        let r = try Tensor(shape: shape, scalars: z.scalars.map { $0 >= 0 ? 0.3 : -0.3 })
        var probe = bn
        let (_, cache) = try probe.forward(x, residual: r, mode: .training)
        var gradients = NormGradients<Double>(), dr = try Tensor<Double>(zeros: [0])
        var workspace = Workspace<Double>()
        try bn.backward(dy, cache: cache, into: &gradients, residualGradient: &dr, workspace: &workspace)
        let numericX = try referenceGradient(at: x, outputGradient: dy, step: 1e-4) { input in
            var layer = bn
            return try layer.forward(input, residual: r, mode: .training).output
        }
        let numericR = try referenceGradient(at: r, outputGradient: dy, step: 1e-4) { residual in
            var layer = bn
            return try layer.forward(x, residual: residual, mode: .training).output
        }
        #expect(normwiseError(gradients.input.scalars, numericX.scalars) < 1e-7)
        #expect(normwiseError(dr.scalars, numericR.scalars) < 1e-7)

        let image = [2, 4, 3, 3]
        var gn = try GroupNorm<Double>(channelCount: 4, groupCount: 2, activation: .relu)
        gn.gamma = randomVector(4, scale: 1, shift: 1, seed: 8)
        let xi: Tensor<Double> = randomInput(image, scale: 2, shift: 3, seed: 3)
        let dyi: Tensor<Double> = randomInput(image, seed: 4)
        var gnPlain = gn
        gnPlain.activation = .none
        let ri = try Tensor(shape: image, scalars: try gnPlain.forward(xi, mode: .training).output.scalars
            .map { $0 >= 0 ? 0.3 : -0.3 })
        var gnProbe = gn
        let (_, gnCache) = try gnProbe.forward(xi, residual: ri, mode: .training)
        try gn.backward(dyi, cache: gnCache, into: &gradients, residualGradient: &dr, workspace: &workspace)
        let numericGN = try referenceGradient(at: xi, outputGradient: dyi, step: 1e-4) { input in
            var layer = gn
            return try layer.forward(input, residual: ri, mode: .training).output
        }
        #expect(normwiseError(gradients.input.scalars, numericGN.scalars) < 1e-7)
    }

    @Test("gradient check: LayerNorm and RMSNorm with a residual, through the sum and its gradient")
    func residualGradientCheck() throws {
        let shape = [4, 7]
        let x: Tensor<Double> = randomInput(shape, scale: 2, shift: 1, seed: 1)
        let r: Tensor<Double> = randomInput(shape, scale: 1, shift: -0.5, seed: 2)
        let dy: Tensor<Double> = randomInput(shape, seed: 3)
        let ds: Tensor<Double> = randomInput(shape, seed: 4)
        var ln = try LayerNorm<Double>(featureCount: 7)
        ln.gamma = randomVector(7, scale: 1, shift: 1, seed: 5)
        var rms = try RMSNorm<Double>(featureCount: 7)
        rms.gamma = randomVector(7, scale: 1, shift: 1, seed: 6)
        for layer in [ln as any ResidualNormalizationLayer<Double>, rms] {
            try check(layer, x: x, r: r, dy: dy, ds: ds)
        }
    }

    /// The loss `Σ dy·y + Σ ds·s`: its gradient in `x` (equal to that in `r`)
    /// is backward's `inputGradient` with `sumGradient = ds`.
    func check<L: ResidualNormalizationLayer<Double>>(
        _ layer: L, x: Tensor<Double>, r: Tensor<Double>, dy: Tensor<Double>, ds: Tensor<Double>
    ) throws {
        var probe = layer
        let (_, _, cache) = try probe.forward(x, residual: r, mode: .training)
        let analytic = try layer.backward(dy, sumGradient: ds, cache: cache)
        let shape = x.shape
        // Both outputs at once: y and s side by side, against dy and ds.
        let joint = try Tensor<Double>(shape: [2] + shape, scalars: dy.scalars + ds.scalars)
        for (name, moving) in [("input", true), ("residual", false)] {
            let numeric = try referenceGradient(at: moving ? x : r, outputGradient: joint, step: 1e-4) { v in
                var l = layer
                let (y, s, _) = try l.forward(moving ? v : x, residual: moving ? r : v, mode: .training)
                return try Tensor(shape: [2] + shape, scalars: y.scalars + s.scalars)
            }
            #expect(normwiseError(analytic.input.scalars, numeric.scalars) < 1e-7, "\(L.self) \(name)")
        }
    }

    // MARK: Bad input

    @Test("a residual, sum or gradient buffer of the wrong size is refused by name, state unchanged")
    func badBuffers() throws {
        var bn = try BatchNorm<Double>(featureCount: 3, activation: .relu)
        let x: Tensor<Double> = randomInput([5, 3], seed: 1)
        let before = bn
        #expect(throws: NormError.invalidShape(expected: "[5, 3] (residual must have the input's shape)",
                                               actual: [4, 3])) {
            _ = try bn.forward(x, residual: try Tensor(zeros: [4, 3]), mode: .training)
        }
        var y = [Double](repeating: 0, count: 15), cache = NormCache<Double>()
        var workspace = Workspace<Double>()
        let short = [Double](repeating: 0, count: 14)
        #expect(throws: NormError.bufferCountMismatch(name: "residual", expected: 15, actual: 14)) {
            try x.withUnsafeBufferPointer { xb in
                try short.withUnsafeBufferPointer { rb in
                    try y.withUnsafeMutableBufferPointer { yb in
                        try bn.forward(xb, residual: rb, shape: [5, 3], mode: .training, into: yb,
                                       cache: &cache, workspace: &workspace)
                    }
                }
            }
        }
        #expect(bn == before)
        let (_, trained) = try bn.forward(x, mode: .training)
        var dx = [Double](repeating: 0, count: 15), dr = [Double](repeating: 0, count: 14)
        var dg = [Double](repeating: 0, count: 3), db = dg
        #expect(throws: NormError.bufferCountMismatch(name: "residualGradient", expected: 15, actual: 14)) {
            try x.withUnsafeBufferPointer { dy in
                try dx.withUnsafeMutableBufferPointer { dxb in
                    try dr.withUnsafeMutableBufferPointer { drb in
                        try dg.withUnsafeMutableBufferPointer { dgb in
                            try db.withUnsafeMutableBufferPointer { dbb in
                                try bn.backward(dy, cache: trained, inputGradient: dxb,
                                                residualGradient: drb, gammaGradient: dgb,
                                                betaGradient: dbb, workspace: &workspace)
                            }
                        }
                    }
                }
            }
        }

        var ln = try LayerNorm<Double>(featureCount: 3)
        var sum = [Double](repeating: 0, count: 14)
        #expect(throws: NormError.bufferCountMismatch(name: "sum", expected: 15, actual: 14)) {
            try x.withUnsafeBufferPointer { xb in
                try y.withUnsafeMutableBufferPointer { yb in
                    try sum.withUnsafeMutableBufferPointer { sb in
                        try ln.forward(xb, residual: xb, shape: [5, 3], mode: .training, into: yb, sum: sb,
                                       cache: &cache, workspace: &workspace)
                    }
                }
            }
        }
        let (_, lnCache) = try ln.forward(x, mode: .training)
        #expect(throws: NormError.invalidShape(expected: "[5, 3] (sumGradient must have the input's shape)",
                                               actual: [3, 5])) {
            _ = try ln.backward(x, sumGradient: try Tensor(zeros: [3, 5]), cache: lnCache)
        }
        #expect(throws: NormError.bufferCountMismatch(name: "output", expected: 15, actual: 14)) {
            try x.withUnsafeBufferPointer { xb in
                try sum.withUnsafeMutableBufferPointer { yb in
                    try ln.infer(xb, shape: [5, 3], into: yb, workspace: &workspace)
                }
            }
        }
        #expect(throws: NormError.invalidShape(expected: "(..., 3) with at least one row", actual: [3, 5])) {
            _ = try ln.infer(try Tensor<Double>(zeros: [3, 5]))
        }
    }

    @Test("activation is part of the layer's Codable and Equatable state")
    func activationCodable() throws {
        func roundTrip<T: Codable>(_ value: T) throws -> T {
            try JSONDecoder().decode(T.self, from: try JSONEncoder().encode(value))
        }
        var gn = try GroupNorm<Float>(channelCount: 4, groupCount: 2, activation: .relu)
        gn.beta = [0.5, -1, 2, 0.25]
        let decoded = try roundTrip(gn)
        #expect(decoded == gn)
        var plain = gn
        plain.activation = .none
        #expect(plain != gn)
        #expect(try roundTrip(try SpatialBatchNorm<Double>(channelCount: 2, activation: .relu))
                    .activation == .relu)
    }
}

extension FusedTests {
    @Test("a NormalizationStep of LayerNorm takes a residual and a sum gradient")
    func residualStep() throws {
        let shape = [33, 70]
        let x: Tensor<Float> = randomInput(shape, scale: 2, shift: 3, seed: 1)
        let r: Tensor<Float> = randomInput(shape, scale: 1, shift: 0.1, seed: 2)
        let dy: Tensor<Float> = randomInput(shape, seed: 3)
        var step = NormalizationStep(try LayerNorm<Float>(featureCount: 70))
        try x.withUnsafeBufferPointer { xb in
            try r.withUnsafeBufferPointer { rb in try step.forward(xb, residual: rb, shape: shape) }
        }
        try dy.withUnsafeBufferPointer { g in try step.backward(g, sumGradient: g) }
        var ln = try LayerNorm<Float>(featureCount: 70)
        let (y, s, cache) = try ln.forward(x, residual: r, mode: .training)
        let grads = try ln.backward(dy, sumGradient: dy, cache: cache)
        #expect(sameBits(step.output.scalars, y.scalars) && sameBits(step.sum.scalars, s.scalars))
        #expect(sameBits(step.gradients.input.scalars, grads.input.scalars))
    }
}

extension ProcessWideTests {
    /// The fused forms split over threads as the plain ones do: the same bits
    /// at 1, 2, 3 and 7 threads, and nothing allocated per call once sized.
    @Suite("Fused passes over threads")
    struct FusedThreadTests {
        func run<L: ActivatedNormalizationLayer>(_ layer: L, shape: [Int], threads: Int) throws -> [[L.Scalar]] {
            let before = Threading.threadCount, grain = Threading.minimumBytesPerWorker
            defer { Threading.threadCount = before; Threading.minimumBytesPerWorker = grain }
            Threading.threadCount = threads
            Threading.minimumBytesPerWorker = 0
            var layer = layer
            layer.activation = .relu
            let x: Tensor<L.Scalar> = randomInput(shape, scale: 3, shift: 5, seed: 1)
            let r: Tensor<L.Scalar> = randomInput(shape, scale: 1, seed: 2)
            let (y, cache) = try layer.forward(x, residual: r, mode: .training)
            var g = NormGradients<L.Scalar>(), dr = try Tensor<L.Scalar>(zeros: [0])
            var workspace = Workspace<L.Scalar>()
            try layer.backward(r, cache: cache, into: &g, residualGradient: &dr, workspace: &workspace)
            return [y.scalars, g.input.scalars, g.gamma, g.beta, dr.scalars, try layer.infer(x).scalars]
        }

        func runResidual<L: ResidualNormalizationLayer>(_ layer: L, shape: [Int], threads: Int) throws -> [[L.Scalar]] {
            let before = Threading.threadCount, grain = Threading.minimumBytesPerWorker
            defer { Threading.threadCount = before; Threading.minimumBytesPerWorker = grain }
            Threading.threadCount = threads
            Threading.minimumBytesPerWorker = 0
            var layer = layer
            let x: Tensor<L.Scalar> = randomInput(shape, scale: 3, shift: 5, seed: 1)
            let r: Tensor<L.Scalar> = randomInput(shape, scale: 1, seed: 2)
            let (y, s, cache) = try layer.forward(x, residual: r, mode: .training)
            let g = try layer.backward(r, sumGradient: x, cache: cache)
            return [y.scalars, s.scalars, g.input.scalars, g.gamma, g.beta, try layer.infer(x).scalars]
        }

        @Test("fused forms and infer give the same bits at 1, 2, 3 and 7 threads")
        func sameBits() throws {
            let n = { (samples: Int) in optimizedBuild ? samples : max(2, samples / 4) }
            func same<S: BLASScalar>(_ make: (Int) throws -> [[S]], _ name: String) throws {
                let one = try make(1)
                // The sanitizers' debug builds run the kernels a hundred times slower.
                for threads in optimizedBuild ? [2, 3, 7] : [2, 7] {
                    for (index, (a, b)) in zip(one, try make(threads)).enumerated() {
                        let same = bits(a) == bits(b)
                        #expect(same, "\(name): quantity \(index) at \(threads) threads")
                    }
                }
            }
            try same({ try run(BatchNorm<Double>(featureCount: 37), shape: [n(9001), 37], threads: $0) }, "BatchNorm")
            try same({ try run(SpatialBatchNorm<Float>(channelCount: 16), shape: [n(12), 16, 32, 32], threads: $0) },
                     "SpatialBatchNorm")
            try same({ try run(GroupNorm<Double>(channelCount: 16, groupCount: 4), shape: [n(12), 16, 32, 32],
                               threads: $0) }, "GroupNorm")
            try same({ try runResidual(LayerNorm<Float>(featureCount: 300), shape: [n(2001), 300], threads: $0) },
                     "LayerNorm")
            try same({ try runResidual(RMSNorm<Double>(featureCount: 37), shape: [n(3001), 37], threads: $0) },
                     "RMSNorm")
        }
    }
}

extension ProcessWideTests.AllocationTests {
    @Test("infer and the fused forms allocate nothing once their buffers are sized",
          arguments: [1, 2])
    func fusedAllocateNothing(threads: Int) throws {
        let before = Threading.threadCount
        defer { Threading.threadCount = before }
        Threading.threadCount = threads
        let shape = [512, 300]
        let x = try Tensor<Float>(randomNormal: shape, mean: 3, standardDeviation: 2, seed: 1)
        let r = try Tensor<Float>(randomNormal: shape, seed: 2)
        var output = try Tensor<Float>(zeros: [0]), sum = try Tensor<Float>(zeros: [0])
        var dr = try Tensor<Float>(zeros: [0])
        var cache = NormCache<Float>(), workspace = Workspace<Float>(), gradients = NormGradients<Float>()

        var bn = try BatchNorm<Float>(featureCount: 300, activation: .relu)
        let bnForward = try allocations {
            try bn.forward(x, residual: r, mode: .training, into: &output, cache: &cache, workspace: &workspace)
        }
        let bnBackward = try allocations {
            try bn.backward(r, cache: cache, into: &gradients, residualGradient: &dr, workspace: &workspace)
        }
        let bnPlainBackward = try allocations {
            try bn.backward(r, cache: cache, into: &gradients, workspace: &workspace)
        }
        let bnInfer = try allocations { try bn.infer(x, into: &output, workspace: &workspace) }
        var ln = try LayerNorm<Float>(featureCount: 300)
        var lnCache = NormCache<Float>()
        let lnForward = try allocations {
            try ln.forward(x, residual: r, mode: .training, into: &output, sum: &sum, cache: &lnCache,
                           workspace: &workspace)
        }
        let lnBackward = try allocations {
            try ln.backward(r, sumGradient: x, cache: lnCache, into: &gradients, workspace: &workspace)
        }
        let gn = try GroupNorm<Float>(channelCount: 300, groupCount: 30, activation: .relu)
        let image = try Tensor<Float>(randomNormal: [4, 300, 3, 5], seed: 3)
        let gnInfer = try allocations { try gn.infer(image, into: &output, workspace: &workspace) }
        let counts: [Int] = [bnForward, bnBackward, bnPlainBackward, bnInfer, lnForward, lnBackward, gnInfer]
        #expect(counts == [0, 0, 0, 0, 0, 0, 0], "allocations per 10 calls")
    }
}

import Foundation
import NormKit
import Testing

/// Batch statistics over a geometry `(outer, channels, inner)` (value
/// `(n, c, t)` at `(n·channels + c)·inner + t`) in `Double` on the widened
/// 16-bit values: the training forward and backward (or, with `running`, the
/// inference ones with those statistics), and for each element the size of
/// the terms it is a difference of.
func batchReference<S: TestStorage>(
    x: [S], dy: [S], outer: Int, channels: Int, inner: Int, gamma: [Float], beta: [Float],
    epsilon: Double, relu: Bool = false, running: (mean: [Float], variance: [Float])? = nil
) -> (y: [Double], yScale: [Double], dx: [Double], dxScale: [Double], dgamma: [Double],
      dbeta: [Double], dgammaScale: [Double], dbetaScale: [Double], mean: [Double], variance: [Double]) {
    let count = x.count, m = Double(outer * inner)
    func indices(_ c: Int) -> [Int] {
        (0..<outer).flatMap { n in (0..<inner).map { (n * channels + c) * inner + $0 } }
    }
    var y = [Double](repeating: 0, count: count), yScale = y, dx = y, dxScale = y
    var dgamma = [Double](repeating: 0, count: channels), dbeta = dgamma
    var dgammaScale = dgamma, dbetaScale = dgamma, means = dgamma, variances = dgamma
    for c in 0..<channels {
        let at = indices(c)
        let xs = at.map { Double(x[$0].float) }
        let mean = running.map { Double($0.mean[c]) } ?? xs.reduce(0, +) / m
        let variance = running.map { Double($0.variance[c]) }
            ?? xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / m
        means[c] = mean; variances[c] = variance
        let s = 1 / (variance + epsilon).squareRoot(), g = Double(gamma[c]), b = Double(beta[c])
        var gs = at.map { Double(dy[$0].float) }
        for (k, i) in at.enumerated() {
            let xhat = (xs[k] - mean) * s
            y[i] = xhat * g + b
            yScale[i] = (abs(xs[k]) + abs(mean)) * s * abs(g) + abs(b)
            if relu && y[i] <= 0 { gs[k] = 0 }
        }
        let xhats = xs.map { ($0 - mean) * s }
        let sumG = gs.reduce(0, +), sumGX = zip(gs, xhats).map(*).reduce(0, +)
        dbeta[c] = sumG; dgamma[c] = sumGX
        dbetaScale[c] = gs.map(abs).reduce(0, +)
        dgammaScale[c] = zip(gs, xhats).map { abs($0 * $1) }.reduce(0, +)
        let scale = s * abs(g) * (gs.map(abs).max() ?? 0)
        for (k, i) in at.enumerated() {
            dx[i] = running == nil
                ? g * s / m * (m * gs[k] - sumG - xhats[k] * sumGX) : g * s * gs[k]
            dxScale[i] = scale
        }
    }
    if relu { for i in 0..<count { y[i] = max(0, y[i]) } }
    return (y, yScale, dx, dxScale, dgamma, dbeta, dgammaScale, dbetaScale, means, variances)
}

/// The layers with batch statistics over 16-bit storage.
@Suite("16-bit storage: batch statistics")
struct ReducedBatchTests {
    /// One case: a layer and its geometry.
    enum Case: CustomStringConvertible, CaseIterable {
        case matrix, wide, nchw, nhwc

        var description: String {
            switch self {
            case .matrix: "BatchNorm 37x13"
            case .wide: "BatchNorm 37x257 (statistics one row at a time)"
            case .nchw: "SpatialBatchNorm NCHW 3x5x7x9"
            case .nhwc: "SpatialBatchNorm NHWC 3x7x9x5"
            }
        }
        var shape: [Int] {
            switch self {
            case .matrix: [37, 13]
            case .wide: [37, 257]
            case .nchw: [3, 5, 7, 9]
            case .nhwc: [3, 7, 9, 5]
            }
        }
        /// `(outer, channels, inner)`.
        var geometry: (Int, Int, Int) {
            switch self {
            case .matrix: (37, 13, 1)
            case .wide: (37, 257, 1)
            case .nchw: (3, 5, 63)
            case .nhwc: (189, 5, 1)
            }
        }
    }

    /// Runs `body` with the case's layer (gamma, beta and running
    /// statistics set), generic over the layer type.
    func withLayer<R>(_ c: Case, backend: Backend, relu: Bool = false,
                      _ body: (inout any ReducedPrecisionLayer) throws -> R) throws -> R {
        let channels = c.geometry.1
        let gamma: [Float] = randomVector(channels, scale: 0.5, shift: 1, seed: 21)
        let beta: [Float] = randomVector(channels, scale: 0.3, shift: -0.1, seed: 22)
        let mean: [Float] = randomVector(channels, scale: 0.5, shift: 0.2, seed: 23)
        let variance: [Float] = randomVector(channels, scale: 0.2, shift: 1.3, seed: 24)
        let activation: FusedActivation = relu ? .relu : .none
        var layer: any ReducedPrecisionLayer
        switch c {
        case .matrix, .wide:
            var bn = try BatchNorm<Float>(featureCount: channels, activation: activation,
                                          backend: backend)
            bn.gamma = gamma; bn.beta = beta; bn.runningMean = mean; bn.runningVariance = variance
            layer = bn
        case .nchw, .nhwc:
            var sbn = try SpatialBatchNorm<Float>(channelCount: channels,
                                                  layout: c == .nchw ? .nchw : .nhwc,
                                                  activation: activation, backend: backend)
            sbn.gamma = gamma; sbn.beta = beta; sbn.runningMean = mean; sbn.runningVariance = variance
            layer = sbn
        }
        return try body(&layer)
    }

    /// The case in `S` against the Double reference, training then inference
    /// (forward and backward each): outputs and input gradients within 1 ulp
    /// of the reference rounded (or within a few Float errors of their terms
    /// where it is near zero), parameter gradients within 1e-5 of the terms'
    /// size, the running statistics as the `Float` layer's on the widened
    /// input to 1e-6.
    func check<S: TestStorage>(_: S.Type, _ c: Case, backend: Backend, shift: Double,
                               relu: Bool = false) throws -> (UlpCount, UlpCount) {
        let (outer, channels, inner) = c.geometry
        let count = outer * channels * inner
        let x: [S] = reducedInput(count, scale: 3, shift: shift, seed: 25)
        let dy: [S] = reducedInput(count, scale: 1, shift: 0.1, seed: 26)
        var outputs = UlpCount(), gradients = UlpCount()
        try withLayer(c, backend: backend, relu: relu) { layer in
            try check(&layer, x: x, dy: dy, c, &outputs, &gradients, relu: relu)
        }
        #expect(outputs.failures.isEmpty, "\(S.name) \(c) \(backend) y: \(outputs.failures)")
        #expect(gradients.failures.isEmpty, "\(S.name) \(c) \(backend) dx: \(gradients.failures)")
        return (outputs, gradients)
    }

    func check<L: ReducedPrecisionLayer, S: TestStorage>(
        _ layer: inout L, x: [S], dy: [S], _ c: Case, _ outputs: inout UlpCount,
        _ gradients: inout UlpCount, relu: Bool
    ) throws {
        let (outer, channels, inner) = c.geometry
        let (gamma, beta) = parameters(layer)
        var y = [S](repeating: S(0), count: x.count), dx = y, inferred = y, y2 = y
        var dgamma = [Float](repeating: 0, count: channels), dbeta = dgamma
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        // The Float layer on the widened input: its running statistics, and
        // (BLAS: the same sums in the same order) its output rounded.
        var floatLayer = layer
        let widened = try Tensor<Float>(shape: c.shape, scalars: x.map(\.float))
        let (floatY, _) = try floatLayer.forward(widened, mode: .training)
        try reducedForward(&layer, x, shape: c.shape, &y, &cache, &workspace)
        try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        let reference = batchReference(x: x, dy: dy, outer: outer, channels: channels,
                                       inner: inner, gamma: gamma, beta: beta, epsilon: 1e-5,
                                       relu: relu)
        compare(y, dx, dgamma, dbeta, reference, &outputs, &gradients)
        if (layer as? BatchNorm<Float>)?.backend ?? (layer as? SpatialBatchNorm<Float>)?.backend == .blas {
            #expect(y.map(\.bits) == floatY.scalars.map { S($0).bits },
                    "\(c): the Float forward on the widened input, rounded")
        }
        let (newRunning, floatRunning) = (runningStatistics(layer), runningStatistics(floatLayer))
        for k in 0..<channels {
            #expect(abs(newRunning.mean[k] - floatRunning.mean[k]) <= 1e-6 * abs(floatRunning.mean[k]) + 1e-7)
            #expect(abs(newRunning.variance[k] - floatRunning.variance[k]) <= 1e-6 * floatRunning.variance[k])
        }
        // Inference: the forward with the running statistics, `infer` bit for
        // bit, and the backward with frozen statistics.
        x.withUnsafeBufferPointer { xb in
            y2.withUnsafeMutableBufferPointer { yb in
                try! layer.forward(xb, shape: c.shape, mode: .inference, into: yb, cache: &cache,
                                   workspace: &workspace)
            }
            inferred.withUnsafeMutableBufferPointer { yb in
                try! layer.infer(xb, shape: c.shape, into: yb, workspace: &workspace)
            }
        }
        #expect(y2.map(\.bits) == inferred.map(\.bits), "infer = forward(.inference) bit for bit")
        try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        let frozen = batchReference(x: x, dy: dy, outer: outer, channels: channels, inner: inner,
                                    gamma: gamma, beta: beta, epsilon: 1e-5, relu: relu,
                                    running: newRunning)
        compare(y2, dx, dgamma, dbeta, frozen, &outputs, &gradients)
        // In place: `infer` over its own input.
        var inPlace = x
        inPlace.withUnsafeMutableBufferPointer { b in
            try! layer.infer(UnsafeBufferPointer(b), shape: c.shape, into: b, workspace: &workspace)
        }
        #expect(inPlace.map(\.bits) == inferred.map(\.bits), "infer in place")
        // A forward into its own input: the same output, and a cache that
        // holds the input (not the output), so the same gradients.
        for mode in [Mode.inference, .training] {
            var apartLayer = layer, inPlaceLayer = layer
            var apartCache = NormCache<Float>(), inPlaceCache = NormCache<Float>()
            var apart = [S](repeating: S(0), count: x.count), overwritten = x
            x.withUnsafeBufferPointer { xb in
                apart.withUnsafeMutableBufferPointer { yb in
                    try! apartLayer.forward(xb, shape: c.shape, mode: mode, into: yb,
                                            cache: &apartCache, workspace: &workspace)
                }
            }
            overwritten.withUnsafeMutableBufferPointer { b in
                try! inPlaceLayer.forward(UnsafeBufferPointer(b), shape: c.shape, mode: mode, into: b,
                                          cache: &inPlaceCache, workspace: &workspace)
            }
            #expect(overwritten.map(\.bits) == apart.map(\.bits), "\(c) \(mode) forward in place")
            var dxApart = dx, dgammaApart = dgamma, dbetaApart = dbeta
            var dxInPlace = dx, dgammaInPlace = dgamma, dbetaInPlace = dbeta
            try reducedBackward(apartLayer, dy, apartCache, &dxApart, &dgammaApart, &dbetaApart,
                                &workspace)
            try reducedBackward(inPlaceLayer, dy, inPlaceCache, &dxInPlace, &dgammaInPlace,
                                &dbetaInPlace, &workspace)
            #expect(dxInPlace.map(\.bits) == dxApart.map(\.bits) && dgammaInPlace == dgammaApart
                        && dbetaInPlace == dbetaApart,
                    "\(c) \(mode): the backward after a forward in place")
            // The backward into its own output gradient.
            var overwrittenGradient = dy, dgammaOver = dgamma, dbetaOver = dbeta
            overwrittenGradient.withUnsafeMutableBufferPointer { g in
                dgammaOver.withUnsafeMutableBufferPointer { dg in
                    dbetaOver.withUnsafeMutableBufferPointer { db in
                        try! apartLayer.backward(UnsafeBufferPointer(g), cache: apartCache,
                                                 inputGradient: g, gammaGradient: dg,
                                                 betaGradient: db, workspace: &workspace)
                    }
                }
            }
            #expect(overwrittenGradient.map(\.bits) == dxApart.map(\.bits)
                        && dgammaOver == dgammaApart && dbetaOver == dbetaApart,
                    "\(c) \(mode): the backward into its own output gradient")
        }
    }

    func compare<S: TestStorage>(
        _ y: [S], _ dx: [S], _ dgamma: [Float], _ dbeta: [Float],
        _ reference: (y: [Double], yScale: [Double], dx: [Double], dxScale: [Double],
                      dgamma: [Double], dbeta: [Double], dgammaScale: [Double],
                      dbetaScale: [Double], mean: [Double], variance: [Double]),
        _ outputs: inout UlpCount, _ gradients: inout UlpCount
    ) {
        for k in 0..<y.count {
            outputs.add(y[k], reference: reference.y[k], absolute: 1e-6 * reference.yScale[k], at: k)
            gradients.add(dx[k], reference: reference.dx[k], absolute: 1e-5 * reference.dxScale[k],
                          at: k)
        }
        for j in 0..<dgamma.count {
            #expect(abs(Double(dgamma[j]) - reference.dgamma[j]) <= 1e-5 * reference.dgammaScale[j],
                    "dgamma[\(j)] \(dgamma[j]) vs \(reference.dgamma[j])")
            #expect(abs(Double(dbeta[j]) - reference.dbeta[j]) <= 1e-5 * reference.dbetaScale[j],
                    "dbeta[\(j)] \(dbeta[j]) vs \(reference.dbeta[j])")
        }
    }

    func parameters<L: ReducedPrecisionLayer>(_ layer: L) -> ([Float], [Float]) {
        if let bn = layer as? BatchNorm<Float> { return (bn.gamma, bn.beta) }
        let sbn = layer as! SpatialBatchNorm<Float>
        return (sbn.gamma, sbn.beta)
    }

    func runningStatistics<L: ReducedPrecisionLayer>(_ layer: L) -> (mean: [Float], variance: [Float]) {
        if let bn = layer as? BatchNorm<Float> { return (bn.runningMean, bn.runningVariance) }
        let sbn = layer as! SpatialBatchNorm<Float>
        return (sbn.runningMean, sbn.runningVariance)
    }

    @Test("BatchNorm and SpatialBatchNorm (both layouts) in 16 bits are within 1 ulp of the float64 reference",
          arguments: [Backend.blas, .naive])
    func accuracy(backend: Backend) throws {
        for c in Case.allCases {
            for shift in [0.3, 100.1] {
                let (y16, dx16) = try check(Float16.self, c, backend: backend, shift: shift)
                let (yb, dxb) = try check(BFloat16.self, c, backend: backend, shift: shift)
                print("16-bit \(c) shift \(shift) \(backend): Float16 y \(y16), dx \(dx16); BFloat16 y \(yb), dx \(dxb)")
            }
            _ = try check(BFloat16.self, c, backend: backend, shift: 0.3, relu: true)
            _ = try check(Float16.self, c, backend: backend, shift: 0.3, relu: true)
        }
    }

    /// PyTorch's functional `batch_norm` on a 16-bit tensor (training, then
    /// eval with the initial running statistics) against NormKit's 16-bit
    /// BatchNorm (rank 2) or SpatialBatchNorm (rank 4), unbiased running
    /// variance and momentum 0.9 (PyTorch's 0.1).
    func pytorchBatch<S: TestStorage>(_: S.Type, dtype: String) throws {
        let archive = try NumPyArchive(contentsOf: ReducedPrecisionTests.torch)
        for shape in [[37, 13], [3, 5, 7, 9]] {
            let key = "\(dtype)_bn_\(shape.map(String.init).joined(separator: "x"))"
            func bits(_ name: String) throws -> [UInt16] {
                try #require(archive["\(key)_\(name)"]).integers().map { UInt16($0) }
            }
            func floats(_ name: String) throws -> [Float] {
                try archive.tensor("\(key)_\(name)", as: Float.self).scalars
            }
            let x = try bits("x").map(S.from(bits:)), dy = try bits("dy").map(S.from(bits:))
            let channels = shape[1], inner = shape.count == 4 ? shape[2] * shape[3] : 1
            let gamma = try floats("weight"), beta = try floats("bias")
            let mean0 = try floats("running_mean0"), variance0 = try floats("running_var0")
            for mode in [Mode.training, .inference] {
                var y = [S](repeating: S(0), count: x.count), dx = y
                var dgamma = [Float](repeating: 0, count: channels), dbeta = dgamma
                var cache = NormCache<Float>(), workspace = Workspace<Float>()
                var running: ([Float], [Float])
                func run<L: ReducedPrecisionLayer>(_ layer: inout L) throws {
                    try x.withUnsafeBufferPointer { xb in
                        try y.withUnsafeMutableBufferPointer { yb in
                            try layer.forward(xb, shape: shape, mode: mode, into: yb, cache: &cache,
                                              workspace: &workspace)
                        }
                    }
                    try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
                }
                if shape.count == 2 {
                    var layer = try BatchNorm<Float>(featureCount: channels, varianceEstimator: .unbiased)
                    layer.gamma = gamma; layer.beta = beta
                    layer.runningMean = mean0; layer.runningVariance = variance0
                    try run(&layer)
                    running = (layer.runningMean, layer.runningVariance)
                } else {
                    var layer = try SpatialBatchNorm<Float>(channelCount: channels,
                                                            varianceEstimator: .unbiased)
                    layer.gamma = gamma; layer.beta = beta
                    layer.runningMean = mean0; layer.runningVariance = variance0
                    try run(&layer)
                    running = (layer.runningMean, layer.runningVariance)
                }
                let tag = mode == .training ? "train" : "eval"
                let what = "\(key) \(tag)"
                let reference = batchReference(
                    x: x, dy: dy, outer: shape[0], channels: channels, inner: inner, gamma: gamma,
                    beta: beta, epsilon: 1e-5,
                    running: mode == .training ? nil : (mean0, variance0))
                // Both round a Float result once: at most 2 ulp apart, or near
                // zero within twice the reference test's allowance.
                let checks = ReducedPrecisionTests()
                let yWorst = checks.agree(y, try bits("\(tag)_y"), ulps: 2,
                                          absolute: reference.yScale.map { 2e-6 * $0 }, what + " y")
                let dxWorst = checks.agree(dx, try bits("\(tag)_dx"), ulps: 2,
                                           absolute: reference.dxScale.map { 2e-5 * $0 }, what + " dx")
                // Parameter gradients: both against the float64 sums.
                let exact = (reference.dgamma + reference.dbeta).map { Float($0) }
                let ours = normwiseError(dgamma + dbeta, exact)
                let pytorch = normwiseError(try floats("\(tag)_dweight") + floats("\(tag)_dbias"), exact)
                #expect(ours < 1e-5, "\(what) parameter gradients: \(ours) from float64")
                if mode == .training {
                    let theirs = try floats("running_mean") + floats("running_var")
                    let error = normwiseError(running.0 + running.1, theirs)
                    #expect(error < 1e-6, "\(what) running statistics: \(error) from PyTorch's")
                }
                print("PyTorch batch_norm \(what): y within \(yWorst) ulp, dx within \(dxWorst) ulp; parameter gradients from float64: NormKit \(ours), PyTorch \(pytorch)")
            }
        }
    }

    @Test("PyTorch's batch_norm on bfloat16 and float16 tensors (BatchNorm1d, BatchNorm2d): outputs, gradients and running statistics agree")
    func pytorchFixture() throws {
        try pytorchBatch(BFloat16.self, dtype: "bfloat16")
        try pytorchBatch(Float16.self, dtype: "float16")
    }

    @Test("SyncBatchNorm and SyncSpatialBatchNorm over SingleProcess give the 16-bit single-process bits; an empty shard")
    func synchronized() throws {
        let x: [BFloat16] = reducedInput(6 * 4 * 15, scale: 2, shift: 10000.1, seed: 41)
        let dy: [BFloat16] = reducedInput(6 * 4 * 15, scale: 1, shift: 0, seed: 42)
        func both<L: ReducedPrecisionLayer>(_ layer: L, shape: [Int]) throws -> [UInt16] {
            var layer = layer
            var y = x, dx = x, out: [UInt16] = []
            var dgamma = [Float](repeating: 0, count: layer.gamma.count),
            dbeta = [Float](repeating: 0, count: layer.beta.count)
            var cache = NormCache<Float>(), workspace = Workspace<Float>()
            for _ in 0..<2 {
                try reducedForward(&layer, x, shape: shape, &y, &cache, &workspace)
                try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
                out += y.map(\.bitPattern) + dx.map(\.bitPattern)
                    + (dgamma + dbeta).map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
            }
            return out
        }
        let bn = try BatchNorm<Float>(featureCount: 60, activation: .relu)
        #expect(try both(SyncBatchNorm(bn, communicator: SingleProcess()), shape: [6, 60])
                == both(bn, shape: [6, 60]))
        for layout in [ChannelLayout.nchw, .nhwc] {
            let sbn = try SpatialBatchNorm<Float>(channelCount: 4, layout: layout)
            let shape = layout == .nchw ? [6, 4, 3, 5] : [6, 3, 5, 4]
            #expect(try both(SyncSpatialBatchNorm(sbn, communicator: SingleProcess()), shape: shape)
                    == both(sbn, shape: shape), "\(layout)")
        }
        // An empty shard: inference gives an empty output; training needs
        // two values in the batch; the running statistics stay.
        var sync = try SyncBatchNorm<Float>(featureCount: 3, communicator: SingleProcess())
        let before = sync.runningMean + sync.runningVariance
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        var empty: [Float16] = []
        try [Float16]().withUnsafeBufferPointer { xb in
            try empty.withUnsafeMutableBufferPointer { yb in
                try sync.forward(xb, shape: [0, 3], mode: .inference, into: yb, cache: &cache,
                                 workspace: &workspace)
            }
        }
        #expect(throws: NormError.insufficientValues(valuesPerStatistic: 0)) {
            try [Float16]().withUnsafeBufferPointer { xb in
                try empty.withUnsafeMutableBufferPointer { yb in
                    try sync.forward(xb, shape: [0, 3], mode: .training, into: yb, cache: &cache,
                                     workspace: &workspace)
                }
            }
        }
        #expect(sync.runningMean + sync.runningVariance == before)
    }

    @Test("a 16-bit NormalizationStep gives the layer's bits, its gradients in the step")
    func step() throws {
        let bn = try BatchNorm<Float>(featureCount: 13)
        var layer = bn, step = NormalizationStep(bn)
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        for k in 0..<3 {
            let x: [BFloat16] = reducedInput(37 * 13, scale: 2, shift: 10000.1, seed: 80 + UInt64(k))
            let dy: [BFloat16] = reducedInput(37 * 13, scale: 1, shift: 0, seed: 90 + UInt64(k))
            var y = x, dx = x, stepY = x, stepDx = x
            var dgamma = [Float](repeating: 0, count: 13), dbeta = dgamma
            try reducedForward(&layer, x, shape: [37, 13], &y, &cache, &workspace)
            try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
            try x.withUnsafeBufferPointer { xb in
                try stepY.withUnsafeMutableBufferPointer { try step.forward(xb, shape: [37, 13], into: $0) }
            }
            try dy.withUnsafeBufferPointer { g in
                try stepDx.withUnsafeMutableBufferPointer { try step.backward(g, into: $0) }
            }
            #expect(stepY.map(\.bitPattern) == y.map(\.bitPattern))
            #expect(stepDx.map(\.bitPattern) == dx.map(\.bitPattern))
            #expect(step.gradients.gamma == dgamma && step.gradients.beta == dbeta)
            #expect(step.gradients.input.count == 0)
            #expect(step.layer.runningMean == layer.runningMean)
        }
        // A Float16 gradient after a BFloat16 forward: the cache's precision.
        #expect(throws: NormError.cacheMismatch(expected: "a cache filled at Float16 storage",
                                                actual: "a cache filled at BFloat16 storage")) {
            let dy = [Float16](repeating: 1, count: 37 * 13)
            var dx = dy
            try dy.withUnsafeBufferPointer { g in
                try dx.withUnsafeMutableBufferPointer { try step.backward(g, into: $0) }
            }
        }
    }

    @Test("the Span forms give the buffer forms' bits, and their errors")
    func spans() throws {
        var layer = try SpatialBatchNorm<Float>(channelCount: 3, layout: .nhwc)
        var twin = layer
        let x: [Float16] = reducedInput(2 * 4 * 5 * 3, scale: 2, shift: 10.1, seed: 71)
        let dy: [Float16] = reducedInput(x.count, scale: 1, shift: 0, seed: 72)
        var y = x, dx = x, dgamma = [Float](repeating: 0, count: 3), dbeta = dgamma
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        try reducedForward(&layer, x, shape: [2, 4, 5, 3], &y, &cache, &workspace)
        try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        var y2 = [Float16](repeating: 0, count: x.count), inferred = y2, dx2 = y2
        var dgamma2 = [Float](repeating: 0, count: 3), dbeta2 = dgamma2
        var spanCache = NormCache<Float>()
        var output = y2.mutableSpan
        try twin.forward(x.span, shape: [2, 4, 5, 3], mode: .training, into: &output,
                         cache: &spanCache, workspace: &workspace)
        var inputGradient = dx2.mutableSpan, gammaGradient = dgamma2.mutableSpan
        var betaGradient = dbeta2.mutableSpan
        try twin.backward(dy.span, cache: spanCache, inputGradient: &inputGradient,
                          gammaGradient: &gammaGradient, betaGradient: &betaGradient,
                          workspace: &workspace)
        var inferredSpan = inferred.mutableSpan
        try twin.infer(x.span, shape: [2, 4, 5, 3], into: &inferredSpan, workspace: &workspace)
        #expect(y2.map(\.bitPattern) == y.map(\.bitPattern))
        #expect(dx2.map(\.bitPattern) == dx.map(\.bitPattern))
        #expect(dgamma2 == dgamma && dbeta2 == dbeta)
        #expect(twin.runningMean == layer.runningMean)
        let finite = inferred.allSatisfy { $0.isFinite }
        #expect(finite)
        #expect(throws: NormError.bufferCountMismatch(name: "inputGradient", expected: 120, actual: 3)) {
            var short = [Float16](repeating: 0, count: 3), g = [Float](repeating: 0, count: 3)
            var b = g
            var shortSpan = short.mutableSpan, gs = g.mutableSpan, bs = b.mutableSpan
            try twin.backward(dy.span, cache: spanCache, inputGradient: &shortSpan,
                              gammaGradient: &gs, betaGradient: &bs, workspace: &workspace)
        }
    }

    @Test("`.npy` `<f2` reads into [Float16] with NumPy's bits and writes what it reads; another type is refused")
    func npyFloat16() throws {
        let archive = try NumPyArchive(contentsOf: ReducedPrecisionTests.torch)
        let array = try #require(archive["npy_float16"])
        let values = try array.float16Values()
        let bits = try #require(archive["npy_float16_bits"]).integers().map { UInt16($0) }
        #expect(values.count == 12 && array.shape == [3, 4])
        #expect(values.map(\.bitPattern) == bits)
        let written = try NumPyArray(values, shape: [3, 4])
        #expect(written.npy == array.npy, "the same bytes as NumPy's")
        let read = try NumPyArray(npy: written.npy)
        #expect(try read.float16Values().map(\.bitPattern) == bits)
        #expect(throws: NormError.invalidNumPyData(expected: "'<f2' for [Float16]", found: "'<f4'")) {
            _ = try NumPyArray(try Tensor<Float>(shape: [2], scalars: [1, 2])).float16Values()
        }
        #expect(throws: NormError.invalidNumPyData(expected: "50 bytes of data for shape [5, 5]",
                                                   found: "24")) {
            _ = try NumPyArray(values, shape: [5, 5])
        }
    }

    @Test("a constant channel gives beta rounded, exactly; Float16 inputs near 6e4 keep finite statistics")
    func edges() throws {
        var layer = try SpatialBatchNorm<Float>(channelCount: 3)
        layer.beta = [-1.1, 0.3, 2.7]
        layer.gamma = [1.7, 1.7, 1.7]
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        let constant = [BFloat16](repeating: BFloat16(10000.1), count: 2 * 3 * 5)
        var y = constant
        try reducedForward(&layer, constant, shape: [2, 3, 5, 1], &y, &cache, &workspace)
        let expected = (0..<30).map { BFloat16(layer.beta[($0 / 5) % 3]).bitPattern }
        #expect(y.map(\.bitPattern) == expected)
        // 257 features (statistics one row at a time, the rows widened
        // twice): a constant feature among varying ones, recomputed exactly
        // from its block widened again.
        var rows = try BatchNorm<Float>(featureCount: 257)
        rows.beta = randomVector(257, scale: 1, shift: 0.3, seed: 88)
        var mixed: [BFloat16] = reducedInput(41 * 257, scale: 3, shift: 100.1, seed: 89)
        for i in 0..<41 { mixed[i * 257 + 200] = BFloat16(10000.1) }
        var mixedY = mixed
        try reducedForward(&rows, mixed, shape: [41, 257], &mixedY, &cache, &workspace)
        #expect((0..<41).allSatisfy { mixedY[$0 * 257 + 200].bitPattern == BFloat16(rows.beta[200]).bitPattern })
        #expect(cache.mean[200] == BFloat16(10000.1).float)
        #expect(cache.inverseStandardDeviation.allSatisfy { $0.isFinite })
        var bn = try BatchNorm<Float>(featureCount: 2)
        // Rows alternate near +6e4 and -5.9e4: a variance near 3.6e9.
        let big: [Float16] = (0..<10).map { Float16(($0 / 2) % 2 == 0 ? 6e4 : -5.9e4) + Float16($0 * 40) }
        var y16 = [Float16](repeating: 0, count: 10)
        try reducedForward(&bn, big, shape: [5, 2], &y16, &cache, &workspace)
        #expect(cache.inverseStandardDeviation.allSatisfy { $0.isFinite && $0 > 0 })
        #expect(bn.runningVariance.allSatisfy { $0.isFinite && $0 > 1e5 })
        #expect(y16.allSatisfy { $0.isFinite })
    }

    /// BatchNorm over `S` inputs of 1,029 features (64 vectors of sixteen and
    /// a tail of five, so every vector form of the normalize pass runs its
    /// loop): the training forward, `infer` and the inference forward against
    /// the `Float` layer on the widened input, rounded once.
    func wideRows<S: TestStorage>(_: S.Type) throws {
        // How many of `ours` differ in bits from `reference` rounded to `S`.
        func differing(_ ours: [S], _ reference: [Float]) -> Int {
            zip(ours, reference).filter { $0.bits != S($1).bits }.count
        }
        let features = 1029, shape = [23, 1029]
        let x: [S] = reducedInput(23 * features, scale: 3, shift: 100.1, seed: 61)
        var layer = try BatchNorm<Float>(featureCount: features)
        layer.gamma = randomVector(features, scale: 0.5, shift: 1.1, seed: 62)
        layer.beta = randomVector(features, scale: 1, shift: 0.3, seed: 63)
        // Running statistics of another scale, so that inference differs.
        layer.runningMean = randomVector(features, scale: 1, shift: 99.7, seed: 64)
        layer.runningVariance = randomVector(features, scale: 0.5, shift: 8.9, seed: 65)
        let reference = layer
        var floatLayer = layer
        let widened = try Tensor<Float>(shape: shape, scalars: x.map(\.float))
        let (yTraining, _) = try floatLayer.forward(widened, mode: .training)
        let yInference = try reference.infer(widened)
        var y = [S](repeating: S(0), count: x.count)
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        var trained = layer
        try reducedForward(&trained, x, shape: shape, &y, &cache, &workspace)
        #expect(differing(y, yTraining.scalars) == 0, "\(S.name) training forward")
        #expect(trained == floatLayer, "\(S.name) running statistics")
        var inferred = [S](repeating: S(0), count: x.count)
        try x.withUnsafeBufferPointer { xb in
            try inferred.withUnsafeMutableBufferPointer { yb in
                try layer.infer(xb, shape: shape, into: yb, workspace: &workspace)
            }
        }
        #expect(differing(inferred, yInference.scalars) == 0, "\(S.name) infer")
        // In place, and through the inference forward (which copies x to the cache).
        var inPlace = x
        try inPlace.withUnsafeMutableBufferPointer { buffer in
            try layer.infer(UnsafeBufferPointer(buffer), shape: shape, into: buffer, workspace: &workspace)
        }
        #expect(differing(inPlace, inferred.map(\.float)) == 0, "\(S.name) infer in place")
        var frozen = layer
        try reducedForward(&frozen, x, shape: shape, &y, &cache, &workspace, mode: .inference)
        #expect(differing(y, inferred.map(\.float)) == 0, "\(S.name) inference forward")
    }

    @Test("BatchNorm over 1,029 features in 16 bits equals the Float layer on the widened input, rounded, bit for bit: training forward, infer (in place too) and inference forward")
    func wideRowsBothTypes() throws {
        try wideRows(Float16.self)
        try wideRows(BFloat16.self)
    }

    @Test("wrong counts, another precision's cache and non-finite input throw, running statistics unchanged")
    func badInput() throws {
        var layer = try BatchNorm<Float>(featureCount: 5)
        layer.runningMean = [0.1, 0.2, 0.3, 0.4, 0.5]
        let before = layer
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        let x: [BFloat16] = reducedInput(15, scale: 2, shift: 1, seed: 3)
        var y = [BFloat16](repeating: BFloat16(0), count: 15)
        var short = [BFloat16](repeating: BFloat16(0), count: 14)
        #expect(throws: NormError.bufferCountMismatch(name: "output", expected: 15, actual: 14)) {
            try reducedForward(&layer, x, shape: [3, 5], &short, &cache, &workspace)
        }
        #expect(throws: NormError.bufferCountMismatch(name: "input", expected: 16, actual: 15)) {
            try reducedForward(&layer, x, shape: [4, 4], &y, &cache, &workspace)
        }
        #expect(throws: NormError.invalidShape(expected: "(N >= 1, 5)", actual: [5, 3])) {
            try reducedForward(&layer, x, shape: [5, 3], &y, &cache, &workspace)
        }
        #expect(throws: NormError.insufficientValues(valuesPerStatistic: 1)) {
            var one = [BFloat16](repeating: BFloat16(0), count: 5)
            try reducedForward(&layer, Array(x[0..<5]), shape: [1, 5], &one, &cache, &workspace)
        }
        var withNaN = x
        withNaN[8] = BFloat16(Float.nan)
        #expect(throws: NormError.nonFiniteStatistics(index: 3)) {
            try reducedForward(&layer, withNaN, shape: [3, 5], &y, &cache, &workspace)
        }
        #expect(layer == before)
        // A BFloat16 cache: the Float and Float16 backwards refuse it.
        try reducedForward(&layer, x, shape: [3, 5], &y, &cache, &workspace)
        let trained = layer
        var dgamma = [Float](repeating: 0, count: 5), dbeta = dgamma
        #expect(throws: NormError.cacheMismatch(expected: "a cache filled at Float16 storage",
                                                actual: "a cache filled at BFloat16 storage")) {
            let dy = [Float16](repeating: 1, count: 15)
            var dx = dy
            try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        }
        #expect(throws: NormError.cacheMismatch(expected: "a cache filled at Float storage",
                                                actual: "a cache filled at BFloat16 storage")) {
            _ = try layer.backward(try Tensor<Float>(shape: [3, 5], repeating: 1), cache: cache)
        }
        #expect(throws: NormError.bufferCountMismatch(name: "betaGradient", expected: 5, actual: 4)) {
            let dy = [BFloat16](repeating: BFloat16(1), count: 15)
            var dx = dy, shortBeta = [Float](repeating: 0, count: 4)
            try reducedBackward(layer, dy, cache, &dx, &dgamma, &shortBeta, &workspace)
        }
        // Another layer's 16-bit cache.
        var spatial = try SpatialBatchNorm<Float>(channelCount: 5, layout: .nhwc)
        #expect(throws: NormError.cacheMismatch(
            expected: spatial.cacheOrigin.description, actual: layer.cacheOrigin.description)) {
            let dy = [BFloat16](repeating: BFloat16(1), count: 15)
            var dx = dy
            try reducedBackward(spatial, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        }
        // A Float forward's cache refuses the 16-bit backward.
        let (_, floatCache) = try spatial.forward(
            try Tensor<Float>(shape: [1, 3, 1, 5], scalars: x.map(\.float)), mode: .training)
        #expect(throws: NormError.cacheMismatch(expected: "a cache filled at BFloat16 storage",
                                                actual: "a cache filled at Float storage")) {
            let dy = [BFloat16](repeating: BFloat16(1), count: 15)
            var dx = dy
            try reducedBackward(spatial, dy, floatCache, &dx, &dgamma, &dbeta, &workspace)
        }
        #expect(layer == trained)
    }
}

extension ProcessWideTests {
    @Suite("16-bit batch statistics over threads")
    struct ReducedBatchThreadTests {
        @Test("the same bits at every thread count, both geometries")
        func threads() throws {
            let saved = Threading.threadCount
            defer { Threading.threadCount = saved }
            let x: [Float16] = reducedInput(301 * 1029, scale: 3, shift: 100.1, seed: 31)
            let dy: [Float16] = reducedInput(301 * 1029, scale: 1, shift: 0, seed: 32)
            var results: [[UInt16]] = []
            for threads in [1, 2, 3, 7] {
                Threading.threadCount = threads
                for spatial in [false, true] {
                    var y = [Float16](repeating: 0, count: x.count), dx = y
                    let channels = spatial ? 7 : 1029
                    var dgamma = [Float](repeating: 0, count: channels), dbeta = dgamma
                    var cache = NormCache<Float>(), workspace = Workspace<Float>()
                    var running: [Float]
                    if spatial {
                        var layer = try SpatialBatchNorm<Float>(channelCount: 7)
                        try reducedForward(&layer, x, shape: [43, 7, 21, 49], &y, &cache, &workspace)
                        try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
                        running = layer.runningMean + layer.runningVariance
                    } else {
                        var layer = try BatchNorm<Float>(featureCount: 1029)
                        try reducedForward(&layer, x, shape: [301, 1029], &y, &cache, &workspace)
                        try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
                        running = layer.runningMean + layer.runningVariance
                    }
                    results.append(y.map(\.bitPattern) + dx.map(\.bitPattern)
                                   + (dgamma + dbeta + running).flatMap {
                                       [UInt16($0.bitPattern >> 16), UInt16($0.bitPattern & 0xffff)]
                                   })
                }
            }
            for k in 2..<results.count { #expect(results[k] == results[k % 2], "threads run \(k / 2)") }
        }
    }
}

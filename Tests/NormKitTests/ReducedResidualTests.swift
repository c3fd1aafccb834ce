import NormKit
import Testing

/// DESIGN §2.3 with §2.4: LayerNorm's and RMSNorm's residual form over 16-bit
/// storage. The forward equals the unfused sequence (the 16-bit addition,
/// then the 16-bit forward) bit for bit; the backward adds the sum's gradient
/// in `Float` before its one rounding, within 1 ulp of the float64 reference.
@Suite("16-bit residual forms")
struct ReducedResidualTests {
    /// `s = x + r` as a model without the fused form computes it in 16 bits:
    /// the `Float` sum rounded once (exact for two 16-bit values before it).
    static func added<S: TestStorage>(_ x: [S], _ r: [S]) -> [S] {
        zip(x, r).map { S($0.float + $1.float) }
    }

    static func layer(centred: Bool, columns: Int, backend: Backend) throws
        -> any ReducedPrecisionResidualLayer
    {
        let gamma: [Float] = randomVector(columns, scale: 0.5, shift: 1, seed: 21)
        if centred {
            var layer = try LayerNorm<Float>(featureCount: columns, backend: backend)
            layer.gamma = gamma
            layer.beta = randomVector(columns, scale: 0.3, shift: 0.1, seed: 22)
            return layer
        }
        var layer = try RMSNorm<Float>(featureCount: columns, backend: backend)
        layer.gamma = gamma
        return layer
    }

    /// The fused 16-bit residual forward over buffers: `y` and `sum`.
    static func fusedForward<S: TestStorage, L: ReducedPrecisionResidualLayer>(
        _ layer: inout L, _ x: [S], _ r: [S], shape: [Int], _ y: inout [S], _ sum: inout [S],
        _ cache: inout NormCache<Float>, _ workspace: inout Workspace<Float>
    ) throws {
        try x.withUnsafeBufferPointer { xb in
            try r.withUnsafeBufferPointer { rb in
                try y.withUnsafeMutableBufferPointer { yb in
                    try sum.withUnsafeMutableBufferPointer { sb in
                        try layer.forward(xb, residual: rb, shape: shape, mode: .training, into: yb,
                                          sum: sb, cache: &cache, workspace: &workspace)
                    }
                }
            }
        }
    }

    /// The fused backward over buffers, `ds` the sum's gradient (`nil`: none).
    static func fusedBackward<S: TestStorage, L: ReducedPrecisionResidualLayer>(
        _ layer: L, _ dy: [S], sumGradient ds: [S]?, _ cache: NormCache<Float>, _ dx: inout [S],
        _ dg: inout [Float], _ db: inout [Float], _ workspace: inout Workspace<Float>
    ) throws {
        func run(_ dsb: UnsafeBufferPointer<S>?) throws {
            try dy.withUnsafeBufferPointer { g in
                try dx.withUnsafeMutableBufferPointer { d in
                    try dg.withUnsafeMutableBufferPointer { dgb in
                        try db.withUnsafeMutableBufferPointer { dbb in
                            try layer.backward(g, sumGradient: dsb, cache: cache, inputGradient: d,
                                               gammaGradient: dgb, betaGradient: dbb,
                                               workspace: &workspace)
                        }
                    }
                }
            }
        }
        if let ds { try ds.withUnsafeBufferPointer { try run($0) } } else { try run(nil) }
    }

    func check<S: TestStorage, L: ReducedPrecisionResidualLayer>(
        _: S.Type, _ layer: L, rows: Int, columns: Int, centred: Bool
    ) throws -> UlpCount {
        var layer = layer
        let count = rows * columns
        let x: [S] = reducedInput(count, scale: 3, shift: 100.1, seed: 23)
        let r: [S] = reducedInput(count, scale: 2, shift: -0.7, seed: 24)
        let dy: [S] = reducedInput(count, scale: 1, shift: 0.1, seed: 25)
        let ds: [S] = reducedInput(count, scale: 0.5, shift: 0.01, seed: 26)
        let s = Self.added(x, r)
        let shape = [rows, columns], zero = S(0)
        var workspace = Workspace<Float>()

        // Unfused: the plain 16-bit forward and backward on the rounded sum.
        var plainCache = NormCache<Float>()
        var yPlain = [S](repeating: zero, count: count), dxPlain = yPlain
        var dgPlain = [Float](repeating: 0, count: columns)
        var dbPlain = [Float](repeating: 0, count: layer.beta.count)
        try reducedForward(&layer, s, shape: shape, &yPlain, &plainCache, &workspace)
        try reducedBackward(layer, dy, plainCache, &dxPlain, &dgPlain, &dbPlain, &workspace)

        // Fused, over buffers.
        var cache = NormCache<Float>()
        var y = [S](repeating: zero, count: count), sum = y, dx = y, dxNone = y
        var dg = [Float](repeating: 0, count: columns), db = [Float](repeating: 0, count: layer.beta.count)
        var dgNone = dg, dbNone = db
        try Self.fusedForward(&layer, x, r, shape: shape, &y, &sum, &cache, &workspace)
        #expect(sum.map(\.bits) == s.map(\.bits), "sum = the 16-bit addition")
        #expect(y.map(\.bits) == yPlain.map(\.bits), "y = norm(x + r) bit for bit")
        // Without a sum gradient, and through the plain backward: the plain bits.
        try reducedBackward(layer, dy, cache, &dxNone, &dgNone, &dbNone, &workspace)
        #expect(dxNone.map(\.bits) == dxPlain.map(\.bits) && dgNone == dgPlain && dbNone == dbPlain)
        try Self.fusedBackward(layer, dy, sumGradient: nil, cache, &dx, &dg, &db, &workspace)
        #expect(dx.map(\.bits) == dxPlain.map(\.bits), "sumGradient nil: the plain backward")
        // With the sum gradient: the parameter gradients unchanged, dx within
        // 1 ulp of the float64 reference plus ds.
        try Self.fusedBackward(layer, dy, sumGradient: ds, cache, &dx, &dg, &db, &workspace)
        #expect(dg == dgPlain && db == dbPlain, "dgamma and dbeta do not see the sum gradient")
        let reference = rowReference(
            x: s, dy: dy, rows: rows, columns: columns, gamma: layer.gamma,
            beta: centred ? layer.beta : [Float](repeating: 0, count: columns), epsilon: 1e-5,
            centred: centred)
        var gradients = UlpCount()
        for k in 0..<count {
            let d = Double(ds[k].float)
            gradients.add(dx[k], reference: reference.dx[k] + d,
                          absolute: 1e-5 * (reference.dxScale[k] + abs(d)), at: k)
        }
        #expect(gradients.failures.isEmpty, "\(S.name) \(rows)x\(columns) dx: \(gradients.failures)")

        // Span forms: the same bits.
        var ySpan = [S](repeating: zero, count: count), sumSpan = ySpan, dxSpan = ySpan
        var dgSpan = [Float](repeating: 0, count: columns), dbSpan = [Float](repeating: 0, count: layer.beta.count)
        var spanCache = NormCache<Float>()
        var yMutable = ySpan.mutableSpan, sumMutable = sumSpan.mutableSpan
        try layer.forward(x.span, residual: r.span, shape: shape, mode: .training, into: &yMutable,
                          sum: &sumMutable, cache: &spanCache, workspace: &workspace)
        var dxMutable = dxSpan.mutableSpan, dgMutable = dgSpan.mutableSpan, dbMutable = dbSpan.mutableSpan
        try layer.backward(dy.span, sumGradient: ds.span, cache: spanCache, inputGradient: &dxMutable,
                           gammaGradient: &dgMutable, betaGradient: &dbMutable, workspace: &workspace)
        #expect(ySpan.map(\.bits) == y.map(\.bits) && sumSpan.map(\.bits) == s.map(\.bits))
        #expect(dxSpan.map(\.bits) == dx.map(\.bits) && dgSpan == dg && dbSpan == db)

        // In place: the output over the input, the sum over the residual.
        var xy = x, rs = r
        var inPlaceCache = NormCache<Float>()
        try xy.withUnsafeMutableBufferPointer { xyb in
            try rs.withUnsafeMutableBufferPointer { rsb in
                try layer.forward(UnsafeBufferPointer(xyb), residual: UnsafeBufferPointer(rsb),
                                  shape: shape, mode: .training, into: xyb, sum: rsb,
                                  cache: &inPlaceCache, workspace: &workspace)
            }
        }
        #expect(xy.map(\.bits) == y.map(\.bits) && rs.map(\.bits) == s.map(\.bits), "in place")
        return gradients
    }

    @Test("LayerNorm and RMSNorm: the 16-bit residual forward equals add-then-normalize bit for bit; the backward adds the sum's gradient within 1 ulp",
          arguments: [Backend.blas, .naive])
    func residual(backend: Backend) throws {
        // 7x13: the row blocks; 37x1029: one row at a time.
        for (rows, columns) in [(7, 13), (37, 1029)] {
            for centred in [true, false] {
                let layer = try Self.layer(centred: centred, columns: columns, backend: backend)
                let f16 = try check(Float16.self, layer, rows: rows, columns: columns, centred: centred)
                let bf16 = try check(BFloat16.self, layer, rows: rows, columns: columns, centred: centred)
                print("16-bit residual \(centred ? "LayerNorm" : "RMSNorm") \(rows)x\(columns) \(backend): dx Float16 \(f16); BFloat16 \(bf16)")
            }
        }
    }

    @Test("wrong residual, sum and sumGradient counts throw, naming the buffer; layer and cache unchanged")
    func badCounts() throws {
        var layer = try LayerNorm<Float>(featureCount: 5)
        layer.beta = [0.1, 0.2, 0.3, 0.4, 0.5]
        let before = layer
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        let x: [BFloat16] = reducedInput(15, scale: 2, shift: 10000.1, seed: 31)
        var y = [BFloat16](repeating: BFloat16(0), count: 15), sum = y
        // A good forward first: a throwing call must leave its cache usable.
        try Self.fusedForward(&layer, x, x, shape: [3, 5], &y, &sum, &cache, &workspace)
        let good = cache
        var dxBefore = y, dgBefore = [Float](repeating: 0, count: 5), dbBefore = dgBefore
        try reducedBackward(layer, y, cache, &dxBefore, &dgBefore, &dbBefore, &workspace)
        let short = [BFloat16](repeating: BFloat16(1), count: 14)
        var shortOut = short
        #expect(throws: NormError.bufferCountMismatch(name: "residual", expected: 15, actual: 14)) {
            try x.withUnsafeBufferPointer { xb in
                try short.withUnsafeBufferPointer { rb in
                    try y.withUnsafeMutableBufferPointer { yb in
                        try layer.forward(xb, residual: rb, shape: [3, 5], mode: .training, into: yb,
                                          sum: nil, cache: &cache, workspace: &workspace)
                    }
                }
            }
        }
        #expect(throws: NormError.bufferCountMismatch(name: "sum", expected: 15, actual: 14)) {
            try Self.fusedForward(&layer, x, x, shape: [3, 5], &y, &shortOut, &cache, &workspace)
        }
        #expect(cache.mean == good.mean
                && cache.inverseStandardDeviation == good.inverseStandardDeviation)
        var dx = y, dgamma = [Float](repeating: 0, count: 5), dbeta = dgamma
        #expect(throws: NormError.bufferCountMismatch(name: "sumGradient", expected: 15, actual: 14)) {
            try Self.fusedBackward(layer, y, sumGradient: short, cache, &dx, &dgamma, &dbeta, &workspace)
        }
        // The cache still gives the same backward after the refusals.
        try reducedBackward(layer, y, cache, &dx, &dgamma, &dbeta, &workspace)
        #expect(dx.map(\.bits) == dxBefore.map(\.bits) && dgamma == dgBefore && dbeta == dbBefore)
        #expect(layer == before)
    }
}

extension ProcessWideTests {
    @Suite("16-bit residual forms over threads")
    struct ReducedResidualThreadTests {
        @Test("the residual forward and backward give the same bits at every thread count")
        func threads() throws {
            let saved = Threading.threadCount
            defer { Threading.threadCount = saved }
            let rows = 301, columns = 1029, count = rows * columns
            let x: [Float16] = reducedInput(count, scale: 3, shift: 100.1, seed: 41)
            let r: [Float16] = reducedInput(count, scale: 1, shift: 0.3, seed: 42)
            let dy: [Float16] = reducedInput(count, scale: 1, shift: 0, seed: 43)
            var results: [[UInt16]] = []
            var parameterGradients: [[Float]] = []
            for threads in [1, 2, 3] {
                Threading.threadCount = threads
                var layer = try LayerNorm<Float>(featureCount: columns)
                var cache = NormCache<Float>(), workspace = Workspace<Float>()
                var y = [Float16](repeating: 0, count: count), sum = y, dx = y
                var dgamma = [Float](repeating: 0, count: columns), dbeta = dgamma
                try ReducedResidualTests.fusedForward(&layer, x, r, shape: [rows, columns], &y, &sum,
                                                      &cache, &workspace)
                try ReducedResidualTests.fusedBackward(layer, dy, sumGradient: dy, cache, &dx, &dgamma,
                                                       &dbeta, &workspace)
                results.append(y.map(\.bitPattern) + sum.map(\.bitPattern) + dx.map(\.bitPattern))
                parameterGradients.append(dgamma + dbeta)
            }
            #expect(results.allSatisfy { $0 == results[0] })
            #expect(parameterGradients.allSatisfy { $0 == parameterGradients[0] })
        }
    }
}

/// The per-channel layers' fused epilogue over 16-bit storage:
/// `y = act(norm(x) + residual)` in `Float`, rounded once.
@Suite("16-bit residual and ReLU of the per-channel layers")
struct ReducedActivatedTests {
    /// The layer in `S` with a residual against the same `Float` layer on the
    /// widened input and residual: `y` and the residual's gradient the
    /// `Float` results rounded (bit for bit on the BLAS backend, within 1 ulp
    /// on the naive one, whose 16-bit units merge in another order), the
    /// parameter gradients within 1e-5 of the largest `Float` one and `dx`
    /// within 1 ulp, or near zero within four `Float` errors of the largest
    /// `dx` (the 16-bit NCHW backward sums its widened units in another order,
    /// and `dx` takes those sums: whether a rounding flips depends on the
    /// BLAS kernel's order too; OpenBLAS's Prescott kernels flip some).
    func check<S: TestStorage, L: ReducedPrecisionActivatedLayer>(
        _: S.Type, _ layer: L, shape: [Int], mode: Mode = .training
    ) throws {
        var layer = layer, wide = layer
        let count = shape.reduce(1, *)
        let x: [S] = reducedInput(count, scale: 3, shift: 100.1, seed: 91)
        let r: [S] = reducedInput(count, scale: 2, shift: -0.3, seed: 92)
        let dy: [S] = reducedInput(count, scale: 1, shift: 0.1, seed: 93)
        var y = [S](repeating: S(0), count: count), dx = y, dr = y
        var dgamma = [Float](repeating: 0, count: layer.gamma.count)
        var dbeta = [Float](repeating: 0, count: layer.beta.count)
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        try x.withUnsafeBufferPointer { xb in
            try r.withUnsafeBufferPointer { rb in
                try y.withUnsafeMutableBufferPointer { yb in
                    try layer.forward(xb, residual: rb, shape: shape, mode: mode, into: yb,
                                      cache: &cache, workspace: &workspace)
                }
            }
        }
        try dy.withUnsafeBufferPointer { g in
            try dx.withUnsafeMutableBufferPointer { d in
                try dr.withUnsafeMutableBufferPointer { rg in
                    try dgamma.withUnsafeMutableBufferPointer { dg in
                        try dbeta.withUnsafeMutableBufferPointer { db in
                            try layer.backward(g, cache: cache, inputGradient: d, residualGradient: rg,
                                               gammaGradient: dg, betaGradient: db, workspace: &workspace)
                        }
                    }
                }
            }
        }
        let tensor = { (v: [S]) in try Tensor<Float>(shape: shape, scalars: v.map(\.float)) }
        let (floatY, floatCache) = try wide.forward(try tensor(x), residual: try tensor(r), mode: mode)
        let (floatGradients, floatResidual) = try wide.backwardWithResidual(try tensor(dy), cache: floatCache)
        let ulps = layer.backend == .blas ? 0 : 1
        let what = "\(S.name) \(L.self) \(shape) \(layer.backend) \(mode)"
        func within(_ got: [S], _ float: [Float], _ name: String, ulps: Int, nearZero: Float = 0) {
            let bad = zip(got, float).filter {
                ulpDistance($0, S($1)) > ulps && abs($0.float - $1) > nearZero
            }.count
            #expect(bad == 0, "\(what): \(bad) of \(got.count) \(name) beyond \(ulps) ulp of the Float result rounded")
        }
        within(y, floatY.scalars, "y", ulps: ulps)
        let largest = floatGradients.input.scalars.map(abs).max() ?? 0
        within(dx, floatGradients.input.scalars, "dx", ulps: 1, nearZero: 4 * Float.ulpOfOne * largest)
        #expect(dr.map(\.bits) == floatResidual.scalars.map { S($0).bits }, "\(what): the residual's gradient")
        #expect(dr.map(\.bits) == zip(dy, floatY.scalars).map {
            layer.activation == .relu && !($1 > 0) ? 0 : $0.bits
        }, "\(what): dy through the mask")
        for (got, float) in [(dgamma, floatGradients.gamma), (dbeta, floatGradients.beta)] {
            let scale = float.map(abs).max() ?? 0
            #expect(zip(got, float).allSatisfy { abs($0 - $1) <= 1e-5 * scale },
                    "\(what): parameter gradients")
        }
    }

    @Test("BatchNorm, SpatialBatchNorm, GroupNorm and InstanceNorm: the 16-bit residual and ReLU forward and backward are the Float layer's on the widened input, rounded",
          arguments: [Backend.blas, .naive])
    func layers(backend: Backend) throws {
        var bn = try BatchNorm<Float>(featureCount: 13, activation: .relu, backend: backend)
        bn.gamma = randomVector(13, scale: 0.5, shift: 1, seed: 94)
        bn.beta = randomVector(13, scale: 0.3, shift: 0.1, seed: 95)
        try check(Float16.self, bn, shape: [37, 13])
        try check(BFloat16.self, bn, shape: [37, 13])
        bn.runningMean = randomVector(13, scale: 1, shift: 100, seed: 96)
        bn.runningVariance = randomVector(13, scale: 0.5, shift: 9, seed: 97)
        try check(BFloat16.self, bn, shape: [37, 13], mode: .inference)
        var plain = bn
        plain.activation = .none
        try check(Float16.self, plain, shape: [37, 13])
        // 257 features: the kernels that sum one row at a time, each 16-bit
        // row (dy masked) widened into L1 before each of their passes.
        let wide = try BatchNorm<Float>(featureCount: 257, activation: .relu, backend: backend)
        try check(BFloat16.self, wide, shape: [67, 257])
        try check(Float16.self, wide, shape: [67, 257])
        // The synchronized forms (one process): the same 16-bit residual path.
        try check(Float16.self, SyncBatchNorm(bn, communicator: SingleProcess()), shape: [37, 13])
        try check(BFloat16.self, SyncBatchNorm(bn, communicator: SingleProcess()), shape: [37, 13],
                  mode: .inference)
        for layout in [ChannelLayout.nchw, .nhwc] {
            let spatial = try SpatialBatchNorm<Float>(channelCount: 5, layout: layout, activation: .relu,
                                                      backend: backend)
            let shape = layout == .nchw ? [3, 5, 7, 9] : [3, 7, 9, 5]
            try check(Float16.self, spatial, shape: shape)
            try check(BFloat16.self, spatial, shape: shape)
            try check(BFloat16.self, SyncSpatialBatchNorm(spatial, communicator: SingleProcess()),
                      shape: shape)
            // Rows of 2·72 and 72 values: the Float kernels' own arithmetic.
            let group = try GroupNorm<Float>(channelCount: 4, groupCount: 2, layout: layout,
                                             activation: .relu, backend: backend)
            let instance = try InstanceNorm<Float>(channelCount: 4, layout: layout, activation: .relu,
                                                   backend: backend)
            let images = layout == .nchw ? [3, 4, 8, 9] : [3, 8, 9, 4]
            try check(BFloat16.self, group, shape: images)
            try check(Float16.self, instance, shape: images)
        }
        var tracked = try InstanceNorm<Float>(channelCount: 4, activation: .relu,
                                              runningStatistics: .exponential, backend: backend)
        tracked.runningMean = [100, 99.5, 100.2, 101]
        tracked.runningVariance = [9, 4, 8.5, 10]
        try check(BFloat16.self, tracked, shape: [3, 4, 8, 9], mode: .inference)
    }

    /// `layer` (5 channels, inputs `[3, 5]`) refuses a short residual and a
    /// short residual gradient, naming them; `state` (its running statistics
    /// and parameters) unchanged, nothing written.
    func refusesShortCounts<L: ReducedPrecisionActivatedLayer>(_ layer: L, state: (L) -> [Float]) throws {
        var layer = layer
        let before = state(layer)
        let x: [BFloat16] = reducedInput(15, scale: 2, shift: 10000.1, seed: 98)
        let short = [BFloat16](repeating: BFloat16(1), count: 14)
        var y = x, cache = NormCache<Float>(), workspace = Workspace<Float>()
        #expect(throws: NormError.bufferCountMismatch(name: "residual", expected: 15, actual: 14)) {
            try x.withUnsafeBufferPointer { xb in
                try short.withUnsafeBufferPointer { rb in
                    try y.withUnsafeMutableBufferPointer { yb in
                        try layer.forward(xb, residual: rb, shape: [3, 5], mode: .training, into: yb,
                                          cache: &cache, workspace: &workspace)
                    }
                }
            }
        }
        #expect(state(layer) == before, "\(L.self): state unchanged")
        try reducedForward(&layer, x, shape: [3, 5], &y, &cache, &workspace)
        var dx = x, shortGradient = short
        var dgamma = [Float](repeating: 0, count: 5), dbeta = dgamma
        #expect(throws: NormError.bufferCountMismatch(name: "residualGradient", expected: 15, actual: 14)) {
            try x.withUnsafeBufferPointer { g in
                try dx.withUnsafeMutableBufferPointer { d in
                    try shortGradient.withUnsafeMutableBufferPointer { rg in
                        try dgamma.withUnsafeMutableBufferPointer { dg in
                            try dbeta.withUnsafeMutableBufferPointer { db in
                                try layer.backward(g, cache: cache, inputGradient: d, residualGradient: rg,
                                                   gammaGradient: dg, betaGradient: db, workspace: &workspace)
                            }
                        }
                    }
                }
            }
        }
        #expect(shortGradient.map(\.bitPattern) == short.map(\.bitPattern), "\(L.self): nothing written")
    }

    @Test("a wrong residual or residualGradient count throws, naming it; the running statistics unchanged")
    func badCounts() throws {
        let bn = try BatchNorm<Float>(featureCount: 5, activation: .relu)
        try refusesShortCounts(bn) {
            $0.runningMean + $0.runningVariance + $0.gamma + $0.beta + [Float($0.batchesTracked)]
        }
        // The synchronized form refuses the same counts (one process: no rank waits).
        try refusesShortCounts(SyncBatchNorm(bn, communicator: SingleProcess())) {
            $0.runningMean + $0.runningVariance + $0.gamma + $0.beta + [Float($0.batchesTracked)]
        }
    }
}

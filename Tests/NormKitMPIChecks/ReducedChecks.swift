import NormKit
import NormKitMPI

/// The 16-bit storage types the checks run.
protocol CheckStorage: ReducedPrecision {
    init(_ value: Float)
    var widened: Float { get }
    var bits: UInt16 { get }
}
extension Float16: CheckStorage {
    var widened: Float { Float(self) }
    var bits: UInt16 { bitPattern }
}
extension BFloat16: CheckStorage {
    var widened: Float { Float(self) }
    var bits: UInt16 { bitPattern }
}

extension Checker {
    /// The 16-bit synchronized layers against the 16-bit single-process
    /// layer on the whole batch, over two training steps and an inference
    /// step, with a residual: each rank's outputs and input gradients within
    /// 1 unit in the last place of its rows of the reference's (the sums'
    /// order differs across ranks; a `dx` near zero within four `Float`
    /// errors of the largest), the residual's gradient its rows of `dy`
    /// bit for bit, the running statistics and the summed parameter
    /// gradients within 1e-5, the running statistics the same bits on every
    /// rank.
    mutating func reducedAgreement<S: CheckStorage>(_: S.Type, family: Family, split: [Int]) {
        let label = "\(S.self) \(family) split \(split)"
        let total = split.reduce(0, +)
        let first = split.prefix(world.rank).reduce(0, +)
        let (reference, sync) = makeLayers(family, Float.self)
        guard var reference = reference as? any ReducedPrecisionActivatedLayer,
              var sync = sync as? any ReducedPrecisionActivatedLayer else {
            return expect(false, "\(label): the layers take 16-bit buffers")
        }
        for (step, mode) in [Mode.training, .training, .inference].enumerated() {
            let shape = family.shape(total), myShape = family.shape(split[world.rank])
            let per = shape.dropFirst().reduce(1, *)
            let mine = (first * per)..<((first + split[world.rank]) * per)
            let x = tensor(shape, seed: UInt64(30 + step), shift: Float(100.1)).scalars.map { S($0) }
            let dy = tensor(shape, seed: UInt64(40 + step), shift: Float(0)).scalars.map { S($0) }
            let r = tensor(shape, seed: UInt64(50 + step), shift: Float(-0.3)).scalars.map { S($0) }
            do {
                let whole = try run(&reference, x, dy, residual: r, shape: shape, mode: mode)
                let part = try run(&sync, Array(x[mine]), Array(dy[mine]), residual: Array(r[mine]),
                                   shape: myShape, mode: mode)
                // dx near zero (cancelling terms) within four Float errors of
                // the largest: its sums' order differs across ranks, and a
                // BLAS kernel's order (OpenBLAS's Prescott kernels) can move
                // such a dx by 2 ulp.
                let largest = whole.dx.map { abs($0.widened) }.max() ?? 0
                let outputs = ulps(part.y, Array(whole.y[mine]))
                let gradients = ulps(part.dx, Array(whole.dx[mine]), nearZero: 4 * Float.ulpOfOne * largest)
                expect(outputs <= 1, "\(label) step \(step): 16-bit output within \(outputs) ulp")
                expect(gradients <= 1, "\(label) step \(step): 16-bit dx within \(gradients) ulp")
                expect(part.dr.map(\.bits) == dy[mine].map(\.bits),
                       "\(label) step \(step): 16-bit residual gradient is dy, bit for bit")
                var parameters = part.dgamma + part.dbeta
                try world.allReduceSum(&parameters)
                let parameterError = error(parameters, whole.dgamma + whole.dbeta)
                expect(parameterError <= 1e-5, "\(label) step \(step): summed 16-bit dgamma, dbeta, error \(parameterError)")
                let running = runningStatistics(sync as! any BufferedNormalizationLayer<Float>)
                let runningError = error(running, runningStatistics(reference as! any BufferedNormalizationLayer<Float>))
                expect(runningError <= 1e-5, "\(label) step \(step): 16-bit running statistics, error \(runningError)")
                let everyRank = try world.allGather(running)
                let same = (0..<world.size).allSatisfy { r in
                    running.indices.allSatisfy { sameBits(everyRank[r * running.count + $0], running[$0]) }
                }
                expect(same, "\(label) step \(step): 16-bit running statistics identical bits on every rank")
            } catch {
                expect(false, "\(label) step \(step) threw \(error)")
            }
        }
    }

    /// A 16-bit forward with `residual` and its backward of `layer` over arrays.
    func run<L: ReducedPrecisionActivatedLayer, S: CheckStorage>(
        _ layer: inout L, _ x: [S], _ dy: [S], residual: [S], shape: [Int], mode: Mode
    ) throws -> (y: [S], dx: [S], dr: [S], dgamma: [Float], dbeta: [Float]) {
        var y = [S](repeating: S(0), count: x.count), dx = y, dr = y
        let channels = layer.gamma.count
        var dgamma = [Float](repeating: 0, count: channels), dbeta = dgamma
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        try x.withUnsafeBufferPointer { xb in
            try residual.withUnsafeBufferPointer { rb in
                try y.withUnsafeMutableBufferPointer { yb in
                    try layer.forward(xb, residual: rb, shape: shape, mode: mode, into: yb, cache: &cache,
                                      workspace: &workspace)
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
        return (y, dx, dr, dgamma, dbeta)
    }

    /// The largest distance in units in the last place between two arrays
    /// of 16-bit values (`Int.max` for a NaN or another count), leaving out
    /// pairs within `nearZero` of each other.
    func ulps<S: CheckStorage>(_ a: [S], _ b: [S], nearZero: Float = 0) -> Int {
        guard a.count == b.count else { return .max }
        func key(_ bits: UInt16) -> Int {
            bits & 0x8000 != 0 ? -Int(bits & 0x7fff) : Int(bits & 0x7fff)
        }
        var worst = 0
        for (u, v) in zip(a, b) {
            if u.widened.isNaN || v.widened.isNaN { return .max }
            if abs(u.widened - v.widened) <= nearZero { continue }
            worst = max(worst, abs(key(u.bits) - key(v.bits)))
        }
        return worst
    }
}

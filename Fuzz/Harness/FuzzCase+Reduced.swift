import NormKit

/// A 16-bit storage type the harness decodes (flag 16: `Float16`, else `BFloat16`).
protocol FuzzStorage: ReducedPrecision {
    init(_ value: Float)
    var widened: Float { get }
    var bits: UInt16 { get }
}

extension Float16: FuzzStorage {
    var widened: Float { Float(self) }
    var bits: UInt16 { bitPattern }
}

extension BFloat16: FuzzStorage {
    var widened: Float { Float(self) }
    var bits: UInt16 { bitPattern }
}

extension FuzzCase {
    /// The 16-bit entry points of LayerNorm, RMSNorm, BatchNorm,
    /// SpatialBatchNorm, GroupNorm and InstanceNorm (Float cases; `Float16` when the graph flag, or for
    /// the batch layers the unbiased estimator, is set, `BFloat16` otherwise):
    /// the input rounded to the storage type runs through the 16-bit forward
    /// and through the `Float` forward on its widened values. Where both run
    /// the same arithmetic (LayerNorm and RMSNorm: rows of at least 64 values,
    /// the naive backend; the batch layers: the BLAS backend; the group
    /// layers: the BLAS backend with rows of at least 64 values), both throw
    /// the same error or neither does, and each 16-bit output is the `Float`
    /// one rounded (1 ulp allowed) or both are NaN. The backward runs (tame
    /// input and settings, ``FuzzCase/tameRun``: finite BFloat16 gradients), and each
    /// precision's cache is refused by the other's backward.
    func checkReduced<Layer: BufferedNormalizationLayer>(
        _ layer: Layer, input: Tensor<Scalar>, gradient: Tensor<Scalar>?,
        sameArithmetic: Bool? = nil, float16: Bool? = nil, _ report: inout Report
    ) where Layer.Scalar == Scalar {
        guard let x = input as? Tensor<Float>, let layer = layer as? any ReducedPrecisionLayer
        else { return }
        let dy = gradient as? Tensor<Float>
        if float16 ?? header.throughGraph {
            checkReduced(Float16.self, layer, x, dy, sameArithmetic: sameArithmetic, &report)
        } else {
            checkReduced(BFloat16.self, layer, x, dy, sameArithmetic: sameArithmetic, &report)
        }
    }

    func checkReduced<S: FuzzStorage, Layer: ReducedPrecisionLayer>(
        _: S.Type, _ layer: Layer, _ x: Tensor<Float>, _ dy: Tensor<Float>?,
        sameArithmetic: Bool?, _ report: inout Report
    ) {
        var floatLayer = layer
        let xs = x.scalars.map { S($0) }
        guard let widened = try? Tensor<Float>(shape: x.shape, scalars: xs.map(\.widened)) else { return }
        var floatResult: (output: Tensor<Float>, cache: NormCache<Float>)?, floatError: NormError?
        do { floatResult = try floatLayer.forward(widened, mode: header.mode) } catch { floatError = error }
        var ys = [S](repeating: S(0), count: xs.count)
        var cache = NormCache<Float>(), workspace = Workspace<Float>(), reducedError: NormError?
        do {
            try forward16(layer, xs, x.shape, &ys, &cache, &workspace)
        } catch {
            reducedError = error
            _ = error.description
        }
        // Rows of at least 64 values (one at a time) and the naive backend run
        // the Float passes' own arithmetic on the widened values; shorter
        // rows sum blocks of another height, which may order a sum
        // differently (and so differ near an overflow or a degenerate row).
        // The other layers' callers say (the batch layers' BLAS units are the
        // Float kernels' blocks; their naive 16-bit pass merges units the
        // Float loops sum at once).
        let columns = x.shape.last ?? 0
        let sameArithmetic = sameArithmetic ?? (header.backend == .naive || columns >= 64)
        // (By description: an error may carry a NaN, which is not equal to itself.)
        guard floatError?.description == reducedError?.description || !sameArithmetic else {
            report.fail("16-bit \(S.self) forward: \(String(describing: reducedError)), Float forward on the widened input: \(String(describing: floatError))")
            return
        }
        guard let floatResult, reducedError == nil else { return }
        for (k, y) in floatResult.output.scalars.enumerated() where sameArithmetic {
            let rounded = S(y), got = ys[k]
            if rounded.widened.isNaN && got.widened.isNaN { continue }
            let a = Int(rounded.bits & 0x7fff) * (rounded.bits & 0x8000 != 0 ? -1 : 1)
            let b = Int(got.bits & 0x7fff) * (got.bits & 0x8000 != 0 ? -1 : 1)
            if abs(a - b) > 1 {
                report.fail("16-bit \(S.self) output [\(k)] \(got.widened), Float's rounded \(rounded.widened)")
                return
            }
        }
        guard let dy, dy.shape == x.shape else { return }
        let gs = dy.scalars.map { S($0) }
        var dx = [S](repeating: S(0), count: gs.count)
        var dgamma = [Float](repeating: 0, count: floatResult.cache.affine.scaleCount(floatResult.cache.gamma.count))
        var dbeta = [Float](repeating: 0, count: floatResult.cache.affine.shiftCount(floatResult.cache.gamma.count))
        do {
            try backward16(layer, gs, cache, &dx, &dgamma, &dbeta, &workspace)
            // Float16's range ends at 65504, which tame input may pass.
            if tameRun && header.mode == .training && S.self == BFloat16.self
                && !(dx.allSatisfy { $0.widened.isFinite } && dgamma.allSatisfy(\.isFinite)) {
                report.fail("16-bit \(S.self) backward on tame input gave a non-finite gradient")
            }
        } catch {
            report.fail("16-bit \(S.self) backward threw \(error) after its forward succeeded")
        }
        // Each precision's cache is refused by the other's backward.
        do {
            try backward16(layer, gs, floatResult.cache, &dx, &dgamma, &dbeta, &workspace)
            report.fail("16-bit \(S.self) backward accepted a Float cache")
        } catch {
            if case .cacheMismatch = error {} else { report.fail("a Float cache in a 16-bit backward: \(error)") }
        }
        do {
            _ = try layer.backward(dy, cache: cache)
            report.fail("the Float backward accepted a 16-bit cache")
        } catch {
            if case .cacheMismatch = error {} else { report.fail("a 16-bit cache in a Float backward: \(error)") }
        }
    }

    func forward16<S: FuzzStorage, Layer: ReducedPrecisionLayer>(
        _ layer: Layer, _ xs: [S], _ shape: [Int], _ ys: inout [S], _ cache: inout NormCache<Float>,
        _ workspace: inout Workspace<Float>
    ) throws(NormError) {
        var layer = layer
        let failure: NormError? = xs.withUnsafeBufferPointer { x in
            ys.withUnsafeMutableBufferPointer { y in
                do throws(NormError) {
                    try layer.forward(x, shape: shape, mode: header.mode, into: y, cache: &cache,
                                      workspace: &workspace)
                    return nil
                } catch { return error }
            }
        }
        if let failure { throw failure }
    }

    func backward16<S: FuzzStorage, Layer: ReducedPrecisionLayer>(
        _ layer: Layer, _ gs: [S], _ cache: NormCache<Float>, _ dx: inout [S], _ dgamma: inout [Float],
        _ dbeta: inout [Float], _ workspace: inout Workspace<Float>
    ) throws(NormError) {
        let failure: NormError? = gs.withUnsafeBufferPointer { g in
            dx.withUnsafeMutableBufferPointer { d in
                dgamma.withUnsafeMutableBufferPointer { dg in
                    dbeta.withUnsafeMutableBufferPointer { db in
                        do throws(NormError) {
                            try layer.backward(g, cache: cache, inputGradient: d, gammaGradient: dg,
                                               betaGradient: db, workspace: &workspace)
                            return nil
                        } catch { return error }
                    }
                }
            }
        }
        if let failure { throw failure }
    }
}

/// The values per statistic of a group layer on `shape` (0 unless rank 4
/// with `channels` channels; `Int.max` where the product overflows, as it
/// may for an empty batch).
func groupRowLength(_ shape: [Int], channels: Int, groups: Int) -> Int {
    guard shape.count == 4, shape[1] == channels, groups > 0 else { return 0 }
    let (rows, first) = (channels / groups).multipliedReportingOverflow(by: shape[2])
    let (length, second) = rows.multipliedReportingOverflow(by: shape[3])
    return first || second ? .max : length
}

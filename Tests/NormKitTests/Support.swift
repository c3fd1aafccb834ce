import NormKit
import Testing

/// cs231n's test input: `scale * randn + shift`, deterministic for a seed.
func randomInput<S: BLASScalar>(_ shape: [Int], scale: Double = 5, shift: Double = 12,
                                seed: UInt64) -> Tensor<S> {
    try! Tensor<S>(randomNormal: shape, mean: S(shift), standardDeviation: S(scale), seed: seed)
}

/// `count` values `scale * randn + shift`.
func randomVector<S: BLASScalar>(_ count: Int, scale: Double = 1, shift: Double = 0,
                                 seed: UInt64) -> [S] {
    randomInput([count], scale: scale, shift: shift, seed: seed).scalars
}

/// Normwise relative difference `max|a - b| / max(max|b|, scale)` (at least
/// 1e-30 below): the metric of the backend-agreement targets, insensitive to
/// entries that are tiny next to the rest. `scale` is the size of the terms a
/// result is computed from, where it cancels (BatchNorm's `dx` at N = 2 is a
/// difference of terms of size `gamma·invstd·dy` that nearly cancel).
func normwiseError<S: BLASScalar>(_ a: [S], _ b: [S], scale: Double = 0) -> Double {
    guard a.count == b.count else { return .infinity }
    var difference = 0.0, size = max(1e-30, scale)
    for (x, y) in zip(a, b) {
        let d = abs(Double(x) - Double(y))
        if d.isNaN { return .infinity }
        difference = max(difference, d)
        size = max(size, abs(Double(y)))
    }
    return difference / size
}

/// The exact bits of every element, so that "unchanged" means bit for bit.
func bits<S: BLASScalar>(_ values: [S]) -> [String] {
    values.map { "\($0.sign)|\($0.exponentBitPattern)|\($0.significandBitPattern)" }
}

/// The backward pass through the buffer entry point, into fresh arrays
/// filled with NaN first: `(dx, dgamma, dbeta)`.
func backwardIntoBuffers<L: BufferedNormalizationLayer>(
    _ layer: L, _ dy: [L.Scalar], cache: NormCache<L.Scalar>, workspace: inout Workspace<L.Scalar>
) throws -> (dx: [L.Scalar], dgamma: [L.Scalar], dbeta: [L.Scalar]) {
    var dx = [L.Scalar](repeating: .nan, count: dy.count)
    var dgamma = [L.Scalar](repeating: .nan, count: layer.gamma.count)
    var dbeta = [L.Scalar](repeating: .nan, count: layer.beta.count)
    try dy.withUnsafeBufferPointer { dyb in
        try dx.withUnsafeMutableBufferPointer { dxb in
            try dgamma.withUnsafeMutableBufferPointer { gb in
                try dbeta.withUnsafeMutableBufferPointer { bb in
                    try layer.backward(dyb, cache: cache, inputGradient: dxb, gammaGradient: gb,
                                       betaGradient: bb, workspace: &workspace)
                }
            }
        }
    }
    return (dx, dgamma, dbeta)
}

/// Column `j` of an `(N, D)` tensor as Doubles.
func column<S: BLASScalar>(_ t: Tensor<S>, _ j: Int) -> [Double] {
    let d = t.shape[1]
    return (0..<t.shape[0]).map { Double(t.scalars[$0 * d + j]) }
}

/// Row `i` of an `(N, D)` tensor as Doubles.
func row<S: BLASScalar>(_ t: Tensor<S>, _ i: Int) -> [Double] {
    let d = t.shape[1]
    return (0..<d).map { Double(t.scalars[i * d + $0]) }
}

func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(values.count) }

/// The biased standard deviation (two-pass).
func standardDeviation(_ values: [Double]) -> Double {
    let m = mean(values)
    return (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(values.count)).squareRoot()
}

/// The shapes the backend-agreement tests run over: D = 1, N = 2, odd sizes,
/// and a tall matrix that spans many L2 blocks.
let agreementShapes: [[Int]] = [[2, 1], [2, 5], [3, 1], [7, 13], [64, 33], [129, 257], [10000, 37]]

/// The size of the terms BatchNorm's and LayerNorm's `dx` is summed from:
/// `max |gamma · invstd · dy|` over the elements (the statistics per column
/// when `perColumn`, per row otherwise).
func dxScale<S: BLASScalar>(_ dout: Tensor<S>, cache: NormCache<S>, perColumn: Bool) -> Double {
    let d = dout.shape[1]
    var scale = 0.0
    for (k, g) in dout.scalars.enumerated() {
        let (i, j) = (k / d, k % d)
        let invstd = Double(cache.inverseStandardDeviation[perColumn ? j : i])
        scale = max(scale, abs(Double(cache.gamma[j]) * invstd * Double(g)))
    }
    return scale
}

/// The gradient check's numerical reference: centred differences at steps `h`
/// and `2h` combined by Richardson extrapolation, `(4·D(h) - D(2h)) / 3`, which
/// is fourth-order accurate. Plain centred differences at h = 1e-5 carry about
/// 1e-10 of absolute round-off, which on gradient entries of 1e-5 already
/// exceeds cs231n's 1e-8 elementwise relative error; this reference does not.
func referenceGradient<S: BLASScalar>(
    at x: Tensor<S>, outputGradient: Tensor<S>, step: S = 3e-3,
    _ f: (Tensor<S>) throws -> Tensor<S>
) throws -> Tensor<S> {
    let fine = try GradientCheck.numericalGradient(at: x, outputGradient: outputGradient, step: step, f)
    let coarse = try GradientCheck.numericalGradient(at: x, outputGradient: outputGradient,
                                                     step: 2 * step, f)
    return try Tensor(shape: x.shape, scalars: zip(fine.scalars, coarse.scalars).map { (4 * $0 - $1) / 3 })
}

/// Bitwise equality of two arrays of scalars (NaNs and signed zeros included).
func sameBits<S: BLASScalar>(_ a: [S], _ b: [S]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy {
        $0.sign == $1.sign && $0.exponentBitPattern == $1.exponentBitPattern
            && $0.significandBitPattern == $1.significandBitPattern
    }
}

/// Expects a float64 layer's results to match a PyTorch fixture's arrays
/// `<name>_<key><suffix>`: the output `y` to 1e-12, the gradients' `dx` to
/// 1e-10 and `dweight`, `dbias` (when `hasBias`) to 1e-12, normwise relative.
func expectMatchesFixture(
    _ state: NumPyArchive, _ name: String, suffix: String = "", y: Tensor<Double>,
    gradients: NormGradients<Double>? = nil, hasBias: Bool = true,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    func expected(_ key: String) throws -> [Double] { try state.tensor("\(name)_\(key)\(suffix)").scalars }
    #expect(normwiseError(y.scalars, try expected("y")) < 1e-12, "\(name) y\(suffix)", sourceLocation: sourceLocation)
    guard let gradients else { return }
    #expect(normwiseError(gradients.input.scalars, try expected("dx")) < 1e-10, "\(name) dx\(suffix)",
            sourceLocation: sourceLocation)
    #expect(normwiseError(gradients.gamma, try expected("dweight")) < 1e-12, "\(name) dweight\(suffix)",
            sourceLocation: sourceLocation)
    if hasBias {
        #expect(normwiseError(gradients.beta, try expected("dbias")) < 1e-12, "\(name) dbias\(suffix)",
                sourceLocation: sourceLocation)
    } else {
        // No shift (Affine): its gradient is empty.
        #expect(gradients.beta.isEmpty, "\(name) has no dbias", sourceLocation: sourceLocation)
    }
}

import NormKit
import Testing

/// A batch norm with running statistics from a few training batches of odd,
/// offset input, and gamma/beta away from their defaults.
private func trainedRunningStatistics<L: BufferedNormalizationLayer>(
    _ layer: inout L, shape: [Int], seed: UInt64
) throws where L.Scalar == Double {
    for step in 0..<3 {
        let x: Tensor<Double> = randomInput(shape, scale: 3.7, shift: 10000.1, seed: seed + UInt64(step))
        _ = try layer.forward(x, mode: .training)
    }
    layer.gamma = randomVector(layer.gamma.count, scale: 0.8, shift: 1.1, seed: seed + 10)
    layer.beta = randomVector(layer.beta.count, scale: 0.5, shift: -0.3, seed: seed + 11)
}

/// `x Wᵀ + b` for `x` (N, I) and `W` (O, I), in plain loops.
private func affine(_ x: Tensor<Double>, _ w: Tensor<Double>, _ b: [Double]) throws -> Tensor<Double> {
    let n = x.shape[0], i = x.shape[1], o = w.shape[0]
    var out = [Double](repeating: 0, count: n * o)
    for r in 0..<n { for c in 0..<o {
        var sum = b[c]
        for k in 0..<i { sum += x.scalars[r * i + k] * w.scalars[c * i + k] }
        out[r * o + c] = sum
    } }
    return try Tensor(out, shape: [n, o])
}

/// A stride-1, unpadded NCHW convolution with filters (O, C, kh, kw), in plain loops.
private func convolution(_ x: Tensor<Double>, _ w: Tensor<Double>, _ b: [Double]) throws -> Tensor<Double> {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (o, kh, kw) = (w.shape[0], w.shape[2], w.shape[3])
    let oh = h - kh + 1, ow = wd - kw + 1
    var out = [Double](repeating: 0, count: n * o * oh * ow)
    for s in 0..<n { for f in 0..<o { for y in 0..<oh { for xx in 0..<ow {
        var sum = b[f]
        for ch in 0..<c { for dy in 0..<kh { for dx in 0..<kw {
            sum += x[s, ch, y + dy, xx + dx] * w[f, ch, dy, dx]
        } } }
        out[((s * o + f) * oh + y) * ow + xx] = sum
    } } } }
    return try Tensor(out, shape: [n, o, oh, ow])
}

@Suite("Folding batch norm into the layer before it")
struct FoldingTests {
    @Test("BatchNorm folded into an affine layer equals affine then BatchNorm inference",
          arguments: [true, false])
    func affineFold(withBias: Bool) throws {
        var bn = try BatchNorm<Double>(featureCount: 5, varianceEstimator: .unbiased)
        try trainedRunningStatistics(&bn, shape: [9, 5], seed: 21)
        let w: Tensor<Double> = randomInput([5, 7], scale: 0.4, shift: 0.05, seed: 3)
        let b: [Double] = withBias ? randomVector(5, scale: 2, shift: 10000.1, seed: 4) : []
        let x: Tensor<Double> = randomInput([11, 7], scale: 1.3, shift: 0.2, seed: 5)
        let bias = withBias ? b : [Double](repeating: 0, count: 5)
        let expected = try bn.forward(try affine(x, w, bias), mode: .inference).output
        let (fw, fb) = try bn.folded(weights: w, bias: withBias ? b : nil)
        let fused = try affine(x, fw, fb)
        #expect(fw.shape == w.shape)
        #expect(normwiseError(fused.scalars, expected.scalars) < 1e-12)
    }

    @Test("SpatialBatchNorm folded into a convolution equals conv then SpatialBatchNorm inference")
    func convolutionFold() throws {
        var sbn = try SpatialBatchNorm<Double>(channelCount: 4)
        try trainedRunningStatistics(&sbn, shape: [3, 4, 5, 3], seed: 31)
        let w: Tensor<Double> = randomInput([4, 3, 3, 3], scale: 0.3, shift: 0.01, seed: 6)
        let b: [Double] = randomVector(4, scale: 1.5, shift: 7.3, seed: 7)
        let x: Tensor<Double> = randomInput([2, 3, 7, 6], scale: 1, shift: 0.4, seed: 8)
        let expected = try sbn.forward(try convolution(x, w, b), mode: .inference).output
        let (fw, fb) = try sbn.folded(weights: w, bias: b)
        let fused = try convolution(x, fw, fb)
        #expect(normwiseError(fused.scalars, expected.scalars) < 1e-12)
        // The bias term is what folding bugs get wrong: it must move by s * (b - mean) + beta.
        let (_, noBias) = try sbn.folded(weights: w, bias: nil)
        let s0 = sbn.gamma[0] / (sbn.runningVariance[0] + sbn.epsilon).squareRoot()
        #expect(abs(fb[0] - noBias[0] - s0 * b[0]) < 1e-12 * max(1, abs(fb[0])))
    }

    @Test("folding refuses wrong shapes and bias lengths and changes nothing")
    func badInput() throws {
        let bn = try BatchNorm<Float>(featureCount: 3)
        let w = try Tensor<Float>(shape: [3, 2], repeating: 0.1)
        #expect(throws: NormError.invalidShape(expected: "(3, D_in)", actual: [2, 3])) {
            try bn.folded(weights: try w.reshaped([2, 3]), bias: nil)
        }
        #expect(throws: NormError.parameterCountMismatch(name: "bias", expected: 3, actual: 2)) {
            try bn.folded(weights: w, bias: [1, 2])
        }
        let sbn = try SpatialBatchNorm<Float>(channelCount: 3)
        #expect(throws: NormError.invalidShape(expected: "(3, C_in, kh, kw)", actual: [3, 2])) {
            try sbn.folded(weights: w, bias: nil)
        }
        var broken = bn
        broken.runningVariance = [1, -1, 1]
        #expect(throws: NormError.self) { try broken.folded(weights: w, bias: nil) }
    }
}

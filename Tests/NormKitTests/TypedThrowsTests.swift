import NormKit
import Testing

/// A gradient check written inside a `throws(NormError)` function, as an app
/// would: no `as!`, no `do`/`catch`.
private func layerNormInputGradientError(_ x: Tensor<Double>, _ dy: Tensor<Double>) throws(NormError) -> Double {
    var ln = try LayerNorm<Double>(featureCount: x.shape[1])
    let (_, cache) = try ln.forward(x, mode: .training)
    let analytic = try ln.backward(dy, cache: cache).input
    let numeric = try GradientCheck.numericalGradient(at: x, outputGradient: dy) {
        (probe) throws(NormError) -> Tensor<Double> in try ln.forward(probe, mode: .training).output
    }
    return GradientCheck.relativeError(analytic.scalars, numeric.scalars, floor: 1e-3)
}

@Suite("Typed throws")
struct TypedThrowsTests {
    @Test("GradientCheck passes a closure's NormError through, typed")
    func gradientCheckTypedThrows() throws {
        let x: Tensor<Double> = randomInput([3, 7], scale: 2, shift: 0.7, seed: 12)
        let dy: Tensor<Double> = randomInput([3, 7], scale: 1, shift: 0, seed: 13)
        #expect(try layerNormInputGradientError(x, dy) < 1e-6)
        let wrong: Tensor<Double> = randomInput([3, 6], scale: 1, shift: 0, seed: 14)
        #expect(throws: NormError.self) { try layerNormInputGradientError(wrong, dy) }
    }
}

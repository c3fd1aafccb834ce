/// Numerical gradients and the relative error that compares them with
/// analytic ones, as cs231n's `eval_numerical_gradient_array` and `rel_error`.
public enum GradientCheck {
    /// The gradient of `sum(f(x) * outputGradient)` with respect to `x` by
    /// centred differences:
    /// `grad[i] = Σ (f(x + h·e_i) - f(x - h·e_i)) * outputGradient / (2h)`.
    ///
    /// Evaluates `f` twice per element of `x`; accumulates in `Double`. Use
    /// `Double` tensors and the default step for checks to about 1e-8.
    /// - Parameters:
    ///   - x: where to differentiate.
    ///   - outputGradient: the upstream gradient, `f(x)`'s shape.
    ///   - step: `h`.
    ///   - f: the function; it may capture and mutate state (a layer in training mode).
    /// - Throws: what `f` throws, typed: inside a `throws(NormError)` function a
    ///   closure of layer calls needs neither `as!` nor a `do`/`catch`.
    /// - Complexity: `2 · x.count` evaluations of `f`.
    public static func numericalGradient<Scalar: BLASScalar, Failure: Error>(
        at x: Tensor<Scalar>, outputGradient: Tensor<Scalar>, step: Scalar = 1e-5,
        _ f: (Tensor<Scalar>) throws(Failure) -> Tensor<Scalar>
    ) throws(Failure) -> Tensor<Scalar> {
        var gradient = Tensor<Scalar>(validatedShape: x.shape,
                                      scalars: .zeros(count: x.count))
        var probe = x
        let upstream = outputGradient.scalars
        for index in 0..<x.count {
            let original = x.scalars[index]
            probe.withUnsafeMutableBufferPointer { $0[index] = original + step }
            let plus = try f(probe).scalars
            probe.withUnsafeMutableBufferPointer { $0[index] = original - step }
            let minus = try f(probe).scalars
            probe.withUnsafeMutableBufferPointer { $0[index] = original }
            var sum = 0.0
            for k in 0..<min(plus.count, upstream.count) {
                sum += Double(plus[k] - minus[k]) * Double(upstream[k])
            }
            gradient.withUnsafeMutableBufferPointer { $0[index] = Scalar(sum / (2 * Double(step))) }
        }
        return gradient
    }

    /// `max_i |a_i - b_i| / max(1e-8, |a_i| + |b_i|)`, cs231n's `rel_error`.
    /// Arrays of different lengths, or any NaN, give `.infinity`.
    public static func relativeError<Scalar: BLASScalar>(_ a: [Scalar], _ b: [Scalar]) -> Scalar {
        relativeError(a, b, floor: 0)
    }

    /// `max_i |a_i - b_i| / max(|a_i| + |b_i|, floor · max_k |b_k|, 1e-8)`:
    /// ``relativeError(_:_:)`` with the denominator of the entries that are
    /// tiny next to the largest one held at `floor` times its size.
    ///
    /// Centred differences carry an absolute round-off of about `ε·|f|/h` on
    /// every entry, so on an entry a thousand times smaller than the largest
    /// their plain relative error measures that round-off, not the analytic
    /// gradient; `floor: 1e-3` judges such entries against a thousandth of the
    /// largest. With `floor` 0 this is ``relativeError(_:_:)``.
    /// - Complexity: O(n).
    public static func relativeError<Scalar: BLASScalar>(
        _ a: [Scalar], _ b: [Scalar], floor: Scalar
    ) -> Scalar {
        guard a.count == b.count else { return .infinity }
        var largest: Scalar = 0
        for y in b { largest = max(largest, abs(y)) }
        let minimum = max(1e-8, floor * largest)
        var worst: Scalar = 0
        for (x, y) in zip(a, b) {
            let error = abs(x - y) / max(minimum, abs(x) + abs(y))
            if error.isNaN { return .infinity }
            worst = max(worst, error)
        }
        return worst
    }
}

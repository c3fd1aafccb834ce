import NormKit

extension FuzzCase {
    /// A batch-norm layer against its synchronized twin on one process
    /// (``SingleProcess``): the same bits of output, cache statistics, running
    /// statistics and gradients, or both throw and neither changes its state.
    /// The twin accepts one input the layer refuses: an empty batch in
    /// inference (an empty shard), which it normalizes to an empty output.
    func checkSynchronizedTwin<Plain: BufferedNormalizationLayer, Twin: BufferedNormalizationLayer>(
        _ plain: Plain, _ twin: Twin, plainState: (Plain) -> [[Scalar]], twinState: (Twin) -> [[Scalar]],
        input: Tensor<Scalar>, gradient: Tensor<Scalar>?, _ report: inout Report
    ) where Plain.Scalar == Scalar, Twin.Scalar == Scalar {
        var plain = plain, twin = twin
        let before = twinState(twin)
        var plainResult: (output: Tensor<Scalar>, cache: NormCache<Scalar>)?
        var twinResult: (output: Tensor<Scalar>, cache: NormCache<Scalar>)?
        do { plainResult = try plain.forward(input, mode: header.mode) } catch { _ = error.description }
        do {
            twinResult = try twin.forward(input, mode: header.mode)
        } catch {
            _ = error.description
            if !sameState(twinState(twin), before) {
                report.fail("the synchronized twin threw \(error) and changed its state")
            }
        }
        switch (plainResult, twinResult) {
        case let (.some(a), .some(b)):
            if !sameBits(a.output.scalars, b.output.scalars) || !sameBits(a.cache.mean, b.cache.mean)
                || !sameBits(a.cache.inverseStandardDeviation, b.cache.inverseStandardDeviation)
                || !sameState(plainState(plain), twinState(twin)) {
                report.fail("the synchronized twin's forward differs from the layer's")
            }
            guard let gradient else { return }
            var plainGradients: NormGradients<Scalar>?, twinGradients: NormGradients<Scalar>?
            do { plainGradients = try plain.backward(gradient, cache: a.cache) } catch { _ = error.description }
            do { twinGradients = try twin.backward(gradient, cache: b.cache) } catch { _ = error.description }
            switch (plainGradients, twinGradients) {
            case let (.some(g), .some(h)):
                if !sameBits(g.input.scalars, h.input.scalars) || !sameBits(g.gamma, h.gamma)
                    || !sameBits(g.beta, h.beta) {
                    report.fail("the synchronized twin's backward differs from the layer's")
                }
            case (nil, nil): break
            default: report.fail("only one of the layer and its synchronized twin threw in backward")
            }
        case (.some, nil):
            report.fail("the synchronized twin threw where the layer did not")
        case (nil, .some):
            if !(header.mode == .inference && input.shape.first == 0 && input.count == 0) {
                report.fail("the synchronized twin accepted an input of shape \(input.shape) that the layer refused")
            }
        case (nil, nil):
            break
        }
    }
}

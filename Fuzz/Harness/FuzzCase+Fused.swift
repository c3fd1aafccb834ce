import NormKit

extension FuzzCase {
    /// `infer` against the value API's inference forward on a copy of the
    /// layer: the same output bits, or both throw; `infer` changes nothing.
    func checkInfer<Layer: BufferedNormalizationLayer>(
        _ layer: Layer, state: (Layer) -> [[Scalar]], input: Tensor<Scalar>, _ report: inout Report
    ) where Layer.Scalar == Scalar {
        let before = state(layer)
        var copy = layer
        let expected = try? copy.forward(input, mode: .inference).output
        let inferred: Tensor<Scalar>?
        do { inferred = try layer.infer(input) } catch { _ = error.description; inferred = nil }
        switch (expected, inferred) {
        case let (.some(a), .some(b)):
            if !sameBits(a.scalars, b.scalars) { report.fail("infer differs from forward(mode: .inference)") }
        case (nil, nil): break
        default: report.fail("only one of infer and forward(mode: .inference) threw")
        }
        if !sameState(state(layer), before) { report.fail("infer changed the layer's state") }
    }

    /// The layer with ReLU and `residual` (when it has the input's shape)
    /// against the layer, an add and a ReLU: the same output and gradients
    /// (``sameValues(_:_:)``: bit for bit, a NaN for a NaN) and the same state
    /// bit for bit, or both throw; a residual of another shape is refused
    /// without a change of state.
    func checkFused<Layer: ActivatedNormalizationLayer>(
        _ layer: Layer, state: (Layer) -> [[Scalar]], input: Tensor<Scalar>, residual: Tensor<Scalar>?,
        _ report: inout Report
    ) where Layer.Scalar == Scalar {
        guard let residual else { return }
        var fused = layer, plain = layer
        fused.activation = .relu
        plain.activation = .none
        let before = state(fused)
        let mode = header.mode
        var result: (output: Tensor<Scalar>, cache: NormCache<Scalar>)?
        do {
            result = try fused.forward(input, residual: residual, mode: mode)
        } catch {
            _ = error.description
            if !sameState(state(fused), before) { report.fail("a fused forward threw \(error) and changed state") }
            if residual.shape != input.shape { return }
        }
        if residual.shape != input.shape {
            if result != nil { report.fail("a residual of shape \(residual.shape) was accepted") }
            return
        }
        let reference = try? plain.forward(input, mode: mode)
        switch (result, reference) {
        case let (.some(a), .some(b)):
            let expected = zip(b.output.scalars, residual.scalars).map { v, r -> Scalar in
                let s = v + r
                return s > 0 || s.isNaN ? s : 0
            }
            if !sameValues(a.output.scalars, expected) || !sameState(state(fused), state(plain)) {
                report.fail("the fused forward differs from the layer, add and ReLU")
            }
            let masked = zip(residual.scalars, a.output.scalars).map { g, y -> Scalar in y > 0 ? g : 0 }
            guard let dz = try? Tensor<Scalar>(shape: input.shape, scalars: masked) else { return }
            let g = try? fused.backward(residual, cache: a.cache)
            let h = try? plain.backward(dz, cache: b.cache)
            switch (g, h) {
            case let (.some(g), .some(h)):
                if !sameValues(g.input.scalars, h.input.scalars)
                    || !sameValues(g.gamma + g.beta, h.gamma + h.beta) {
                    report.fail("the fused backward differs from the masked backward")
                }
            case (nil, nil): break
            default: report.fail("only one of the fused and the masked backward threw")
            }
        case (nil, nil): break
        default: report.fail("only one of the fused forward and the layer threw")
        }
    }

    /// LayerNorm's or RMSNorm's residual form against add-then-normalize
    /// (``sameValues(_:_:)``: bit for bit, a NaN for a NaN).
    func checkResidual<Layer: ResidualNormalizationLayer>(
        _ layer: Layer, input: Tensor<Scalar>, residual: Tensor<Scalar>?, _ report: inout Report
    ) where Layer.Scalar == Scalar {
        guard let residual, residual.shape == input.shape,
              let sum = try? Tensor<Scalar>(shape: input.shape,
                                            scalars: zip(input.scalars, residual.scalars).map { $0 + $1 })
        else { return }
        var fused = layer, plain = layer
        let result = try? fused.forward(input, residual: residual, mode: header.mode)
        let reference = try? plain.forward(sum, mode: header.mode)
        switch (result, reference) {
        case let (.some(a), .some(b)):
            if !sameValues(a.output.scalars, b.output.scalars) || !sameValues(a.sum.scalars, sum.scalars) {
                report.fail("the residual forward differs from add-then-normalize")
            }
            let g = try? fused.backward(residual, sumGradient: input, cache: a.cache)
            let h = try? plain.backward(residual, cache: b.cache)
            switch (g, h) {
            case let (.some(g), .some(h)):
                let expected = zip(h.input.scalars, input.scalars).map { $0 + $1 }
                if !sameValues(g.input.scalars, expected) || !sameValues(g.gamma, h.gamma) {
                    report.fail("the residual backward differs from the backward plus the sum gradient")
                }
            case (nil, nil): break
            default: report.fail("only one of the residual and the plain backward threw")
            }
        case (nil, nil): break
        default: report.fail("only one of the residual forward and add-then-normalize threw")
        }
    }
}

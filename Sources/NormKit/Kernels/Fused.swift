/// The elementwise step a layer applies after its affine map in the same
/// pass (DESIGN §2.4): `y = act(gamma·xhat + beta + residual)`.
///
/// `.relu` is `max(v, 0)` with PyTorch's conventions: `relu(v) = v > 0 ? v : +0`
/// (so `-0` becomes `+0`), NaN stays NaN, and its gradient at `v = 0` is 0.
public enum FusedActivation: String, Sendable, Hashable, Codable {
    /// No activation: `y = gamma·xhat + beta (+ residual)`.
    case none
    /// `y = relu(gamma·xhat + beta (+ residual))`.
    case relu
}

/// What a fused output pass does to each value `z` its affine map computed:
/// adds the residual's value at the same index, then applies the activation.
/// The sum is one rounded IEEE addition and the ReLU is exact, the same
/// operations in the same order as the layer, an add and a ReLU run one after
/// another, so a fused pass gives their bits.
@usableFromInline
struct Epilogue<Scalar: BLASScalar> {
    /// The residual at the first value of the current run, or `nil`.
    @usableFromInline let residual: UnsafePointer<Scalar>?
    @usableFromInline let relu: Bool
    /// Where the output is written a second time (the cache's copy, which a
    /// ReLU's backward reads), or `nil`.
    @usableFromInline let keep: UnsafeMutablePointer<Scalar>?

    @inlinable
    init(residual: UnsafePointer<Scalar>?, activation: FusedActivation,
         keep: UnsafeMutablePointer<Scalar>? = nil) {
        self.residual = residual
        self.relu = activation == .relu
        self.keep = keep
    }

    /// Nothing to add, apply or keep.
    @inlinable
    static var identity: Epilogue { Epilogue(residual: nil, activation: .none) }

    /// Neither a residual nor an activation nor a copy.
    @inlinable
    var isIdentity: Bool { residual == nil && !relu && keep == nil }

    /// The same epilogue for the run that starts `offset` values later.
    @inlinable
    func advanced(by offset: Int) -> Epilogue {
        Epilogue(residual: residual.map { $0 + offset }, activation: relu ? .relu : .none,
                 keep: keep.map { $0 + offset })
    }

    /// `y[t] = act(z[t] + residual[t])` for `t < count` (and the same into
    /// `keep`), with streaming stores when `streaming`; `z` may be `y` (in
    /// place; the C pass then fills `keep` first and copies it to `y`). One C pass
    /// (``BLASScalar/epilogue(count:z:residual:y:keep:relu:streaming:)``).
    @inlinable
    func apply(_ z: UnsafePointer<Scalar>, count: Int, into y: UnsafeMutablePointer<Scalar>,
               streaming: Bool) {
        Scalar.epilogueRow(count: count, z: z, residual: residual, into: y, keep: keep, relu: relu,
                           streaming: streaming)
    }

    /// ``apply(_:count:into:streaming:)`` for a run whose values come from a
    /// closure (the slab paths' affine maps): `z(t)` is computed into a
    /// stack piece of 512 values at a time (in L1), which the C pass reads.
    @inlinable @inline(__always)
    func write(_ y: UnsafeMutablePointer<Scalar>, count: Int, streaming: Bool,
               z: (Int) -> Scalar) {
        if !streaming {
            // y's lines come into cache anyway: z there, then the C pass in place.
            for t in 0..<count { y[t] = z(t) }
            apply(y, count: count, into: y, streaming: false)
            return
        }
        withUnsafeTemporaryAllocation(of: Scalar.self, capacity: 512) { piece in
            let p = piece.baseAddress!
            var start = 0
            while start < count {
                let n = min(512, count - start)
                for t in 0..<n { p[t] = z(start + t) }
                advanced(by: start).apply(p, count: n, into: y + start, streaming: streaming)
                start += n
            }
        }
    }
}

/// The passes of the fused forms around a layer's own: the residual sum
/// before LayerNorm and RMSNorm, and the gradient through the ReLU and the
/// residual after the batch-statistics and group layers.
@usableFromInline
enum Fused {
    /// `s = x + r`, written to `s` and (when not `nil`) to `copy`, `count`
    /// values; `copy` with streaming stores when `streaming`.
    @inlinable
    static func sum<Scalar: BLASScalar>(
        _ x: UnsafePointer<Scalar>, _ r: UnsafePointer<Scalar>, count: Int,
        into s: UnsafeMutablePointer<Scalar>, copy: UnsafeMutablePointer<Scalar>?, streaming: Bool
    ) {
        typealias S = StreamingStores
        for j in 0..<count { s[j] = x[j] + r[j] }
        if let copy {
            S.write(copy, count: count, streaming: streaming,
                    value: { j in s[j] }, vector: { j in S.load(s + j) })
        }
    }

    /// `g = y > 0 ? dy : 0`: the gradient through a ReLU whose output was `y`
    /// (0 where the ReLU's input was 0, negative or NaN); one C pass.
    @inlinable
    static func mask<Scalar: BLASScalar>(
        _ dy: UnsafePointer<Scalar>, output y: UnsafePointer<Scalar>, count: Int,
        into g: UnsafeMutablePointer<Scalar>
    ) {
        Scalar.reluMaskRow(count: count, dy: dy, y: y, into: g)
    }

    /// `dx += ds`, `count` values.
    @inlinable
    static func accumulate<Scalar: BLASScalar>(
        _ ds: UnsafePointer<Scalar>, count: Int, into dx: UnsafeMutablePointer<Scalar>
    ) {
        for j in 0..<count { dx[j] += ds[j] }
    }
}

extension NormCache {
    /// Runs a backward pass's `body` on the gradient that reaches the layer's
    /// affine map: `dy` itself, or, after a ReLU forward, `dy` masked by the
    /// kept output's sign (into `residualGradient` when given, otherwise into
    /// the workspace's gradient buffer). With a `residualGradient` it also
    /// receives that gradient (`dy`, or the masked one): the residual of
    /// `y = act(norm(x) + residual)` gets what the sum gets.
    ///
    /// Checks `dy`'s and `residualGradient`'s counts first; `body` does the
    /// rest of the validation. Errors come back as values (see
    /// `NormalizationStep.forward`).
    @inlinable
    func withActivationGradient(
        _ buffers: GradientBuffers<Scalar>, residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        workspace: inout Workspace<Scalar>,
        _ body: (GradientBuffers<Scalar>, inout Workspace<Scalar>) -> NormError?
    ) -> NormError? {
        let count = input.count
        do throws(NormError) {
            try Validation.buffer("outputGradient", buffers.dy.count, expected: count)
            if let residualGradient {
                try Validation.buffer("residualGradient", residualGradient.count, expected: count)
            }
        } catch { return error }
        if origin == .none { return body(buffers, &workspace) }   // which refuses the cache
        guard activation == .relu, storedOutput.count == count else {
            if let residualGradient, let dy = buffers.dy.baseAddress, count > 0 {
                residualGradient.baseAddress!.update(from: dy, count: count)
            }
            return body(buffers, &workspace)
        }
        // The masked gradient's home: the caller's residual gradient, or the
        // workspace's buffer (taken out while `body` uses the workspace).
        var held: [Scalar] = []
        if residualGradient == nil {
            swap(&held, &workspace.gradient)
            held.resizeReusingStorage(to: count)
        }
        defer { if residualGradient == nil { swap(&held, &workspace.gradient) } }
        return held.withUnsafeMutableBufferPointer { own in
            let target = residualGradient ?? own
            storedOutput.withUnsafeBufferPointer { y in
                if count > 0 {
                    Fused.mask(buffers.dy.baseAddress!, output: y.baseAddress!, count: count,
                               into: target.baseAddress!)
                }
            }
            return body(GradientBuffers(dy: UnsafeBufferPointer(target), dx: buffers.dx,
                                        dgamma: buffers.dgamma, dbeta: buffers.dbeta), &workspace)
        }
    }
}

extension NormCache {
    /// ``withActivationGradient(_:residualGradient:workspace:_:)`` for a
    /// backward that throws: builds the buffers, runs `body` on the gradient
    /// that reaches the affine map, and rethrows its error.
    @inlinable
    func backwardThroughActivation(
        _ buffers: GradientBuffers<Scalar>, residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        workspace: inout Workspace<Scalar>,
        _ body: (GradientBuffers<Scalar>, inout Workspace<Scalar>) throws(NormError) -> Void
    ) throws(NormError) {
        let failure = withActivationGradient(buffers, residualGradient: residualGradient,
                                             workspace: &workspace) { buffers, workspace in
            do throws(NormError) {
                try body(buffers, &workspace)
                return nil
            } catch { return error }
        }
        if let failure { throw failure }
    }
}

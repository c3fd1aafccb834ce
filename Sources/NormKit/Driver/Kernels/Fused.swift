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
    /// Where a ReLU records which outputs are positive (one byte per value:
    /// the cache's mask, which its backward reads), or `nil`.
    @usableFromInline let mask: UnsafeMutablePointer<UInt8>?

    @inlinable
    init(residual: UnsafePointer<Scalar>?, activation: FusedActivation,
         mask: UnsafeMutablePointer<UInt8>? = nil) {
        self.residual = residual
        self.relu = activation == .relu
        self.mask = relu ? mask : nil
    }

    /// Nothing to add, apply or record.
    @inlinable
    static var identity: Epilogue { Epilogue(residual: nil, activation: .none) }

    /// Neither a residual nor an activation.
    @inlinable
    var isIdentity: Bool { residual == nil && !relu }

    /// The same epilogue for the run that starts `offset` values later.
    @inlinable
    func advanced(by offset: Int) -> Epilogue {
        Epilogue(residual: residual.map { $0 + offset }, activation: relu ? .relu : .none,
                 mask: mask.map { $0 + offset })
    }

    /// The same epilogue for the run that starts `offset` values later,
    /// reading that run's residual from `residual` (a copy widened from 16
    /// bits) instead.
    @inlinable
    func advanced(by offset: Int, residual: UnsafePointer<Scalar>?) -> Epilogue {
        Epilogue(residual: residual, activation: relu ? .relu : .none, mask: mask.map { $0 + offset })
    }

    /// `y[t] = act(z[t] + residual[t])` for `t < count` (and a ReLU's mask
    /// bytes), with streaming stores when `streaming`; `z` may be `y`. One C
    /// pass (``BLASScalar/epilogue(count:z:residual:y:mask:relu:streaming:)``).
    @inlinable
    func apply(_ z: UnsafePointer<Scalar>, count: Int, into y: UnsafeMutablePointer<Scalar>,
               streaming: Bool) {
        Scalar.epilogueRow(count: count, z: z, residual: residual, into: y, mask: mask, relu: relu,
                           streaming: streaming)
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

    /// `g = mask != 0 ? dy : +0`: the gradient through a ReLU whose epilogue
    /// wrote `mask` (0 where the ReLU's input was 0, negative or NaN); one C pass.
    @inlinable
    static func mask<Scalar: BLASScalar>(
        _ dy: UnsafePointer<Scalar>, by mask: UnsafePointer<UInt8>, count: Int,
        into g: UnsafeMutablePointer<Scalar>
    ) {
        Scalar.reluMaskRow(count: count, dy: dy, mask: mask, into: g)
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
    /// cache's mask of positive outputs. With a `residualGradient` it also
    /// receives that gradient (`dy`, or the masked one): the residual of
    /// `y = act(norm(x) + residual)` gets what the sum gets.
    ///
    /// The masked gradient is written by a pass of its own, into
    /// `residualGradient` when given, otherwise into the workspace's gradient
    /// buffer; except when `masksInside` (the body applies the mask in its own
    /// passes) and there is no `residualGradient`: then `body` gets `dy` and
    /// the mask. Otherwise its mask is `nil`.
    ///
    /// Checks `dy`'s and `residualGradient`'s counts first; `body` does the
    /// rest of the validation. Errors come back as values (see
    /// `NormalizationStep.forward`).
    @inlinable
    func withActivationGradient(
        _ buffers: GradientBuffers<Scalar>, residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        masksInside: Bool = false, workspace: inout Workspace<Scalar>,
        _ body: (GradientBuffers<Scalar>, UnsafePointer<UInt8>?, inout Workspace<Scalar>) -> NormError?
    ) -> NormError? {
        let count = input.count
        do throws(NormError) {
            try Validation.buffer("outputGradient", buffers.dy.count, expected: count)
            if let residualGradient {
                try Validation.buffer("residualGradient", residualGradient.count, expected: count)
            }
        } catch { return error }
        if origin == .none { return body(buffers, nil, &workspace) }   // which refuses the cache
        guard activation == .relu, storedMask.count == count, count > 0 else {
            if let residualGradient, let dy = buffers.dy.baseAddress, count > 0 {
                residualGradient.baseAddress!.update(from: dy, count: count)
            }
            return body(buffers, nil, &workspace)
        }
        if masksInside, residualGradient == nil {
            return storedMask.withUnsafeBufferPointer { body(buffers, $0.baseAddress!, &workspace) }
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
            storedMask.withUnsafeBufferPointer { mask in
                Fused.mask(buffers.dy.baseAddress!, by: mask.baseAddress!, count: count,
                           into: target.baseAddress!)
            }
            return body(GradientBuffers(dy: UnsafeBufferPointer(target), dx: buffers.dx,
                                        dgamma: buffers.dgamma, dbeta: buffers.dbeta), nil, &workspace)
        }
    }
}

extension NormCache {
    /// ``withActivationGradient(_:residualGradient:masksInside:workspace:_:)``
    /// for a backward that throws: runs `body` on the gradient that reaches
    /// the affine map (and the mask, when `masksInside` and it is not applied
    /// yet), and rethrows its error.
    @inlinable
    func backwardThroughActivation(
        _ buffers: GradientBuffers<Scalar>, residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        masksInside: Bool = false, workspace: inout Workspace<Scalar>,
        _ body: (GradientBuffers<Scalar>, UnsafePointer<UInt8>?, inout Workspace<Scalar>) throws(NormError) -> Void
    ) throws(NormError) {
        let failure = withActivationGradient(buffers, residualGradient: residualGradient,
                                             masksInside: masksInside,
                                             workspace: &workspace) { buffers, mask, workspace in
            do throws(NormError) {
                try body(buffers, mask, &workspace)
                return nil
            } catch { return error }
        }
        if let failure { throw failure }
    }
}

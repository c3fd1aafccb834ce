/// What a normalization layer's forward pass saves for its backward pass: the
/// input, the statistics that normalized it and the `gamma` it used.
///
/// The statistics are one per normalized set: per feature for ``BatchNorm``,
/// per sample for ``LayerNorm``.
///
/// Reuse one cache across calls of the allocation-free entry points: its
/// storage is sized on first use and overwritten in place afterwards. After a
/// call that threw, its contents are unspecified.
///
/// A forward pass over a `Tensor` shares that tensor (no copy: tensors are
/// copy-on-write). A forward pass over borrowed memory copies the input into
/// the cache's own storage, reused from call to call, so the cache never
/// refers to the caller's memory.
public struct NormCache<Scalar: BLASScalar>: Sendable {
    /// The forward input `x`: the caller's tensor, shared, or the cache's copy
    /// of borrowed memory. Empty after a 16-bit forward (``ReducedPrecision``),
    /// whose input the cache keeps at 2 bytes an element instead.
    public internal(set) var input: Tensor<Scalar>
    /// The mean of each normalized set: for ``BatchNorm`` the batch mean in
    /// training and the running mean in inference.
    public var mean: [Scalar] { storedMean }
    /// `1 / sqrt(var + epsilon)` of each normalized set; for
    /// ``DecorrelatedBatchNorm``, the diagonal of each group's whitening
    /// matrix (with `groupSize` 1, ``BatchNorm``'s value).
    public var inverseStandardDeviation: [Scalar] { storedInverseStandardDeviation }
    /// The forward input's shape, after a 16-bit forward too (whose
    /// ``input`` is empty).
    /// - Complexity: O(rank).
    public var shape: [Int] { precision == .float ? input.shape : reducedShape }

    /// The number of the synchronized training forward that filled the cache
    /// (``SyncBatchNorm``, ``SyncSpatialBatchNorm``), which its backward
    /// sends with its status word; 0 otherwise.
    @usableFromInline var call = 0
    /// The activation of the forward pass that filled the cache (its
    /// layer's ``FusedActivation``); with `.relu`, ``storedMask`` records
    /// which of that pass's outputs were positive, by which backward masks
    /// the gradient.
    @usableFromInline var activation: FusedActivation = .none
    /// One byte per output when ``activation`` is `.relu`: 1 where the output
    /// was positive, 0 where the ReLU made it 0; empty otherwise.
    @usableFromInline var storedMask: [UInt8] = []
    /// The precision the forward input was stored at: `.float` for the
    /// `Scalar` entry points, 16 bits for the ``ReducedPrecision`` ones,
    /// whose input is in ``reducedInput`` (and ``input`` is empty).
    @usableFromInline var precision: StoragePrecision = .float
    /// A 16-bit forward's input, its bit patterns, in ``reducedShape``.
    @usableFromInline var reducedInput: [UInt16] = []
    @usableFromInline var reducedShape: [Int] = []
    @usableFromInline var storedMean: [Scalar]
    @usableFromInline var storedInverseStandardDeviation: [Scalar]
    /// The `gamma` the forward pass used (ones for a layer without a scale,
    /// ``Affine``).
    public internal(set) var gamma: [Scalar]
    /// The affine map of the layer whose forward pass filled the cache: its
    /// backward writes the gradients of the parameters it has, and an absent
    /// one's gradient buffer must be empty.
    public internal(set) var affine: Affine = .scaleAndShift
    /// The mode of the forward pass. After a ``BatchNorm`` inference pass the
    /// statistics are constants, and backward returns the gradient of that
    /// (affine) function.
    public internal(set) var mode: Mode
    /// The layer whose forward pass filled this cache; ``CacheOrigin/none``
    /// when none did or the last one threw. Backward refuses a cache whose
    /// origin is not its own layer.
    public internal(set) var origin: CacheOrigin
    /// What a ``DecorrelatedBatchNorm`` forward keeps besides the input and
    /// the mean: the centred input, the normalized output and each group's
    /// whitening factors (empty after every other layer's).
    var whitening = WhiteningCache<Scalar>()

    /// An empty cache for the allocation-free entry points to fill.
    public init() {
        input = .empty
        storedMean = []
        storedInverseStandardDeviation = []
        gamma = []
        mode = .training
        origin = .none
    }

    /// Shares a tensor as the forward input (the `Tensor` entry points), and
    /// marks the cache as filled by no forward pass until one succeeds.
    @usableFromInline
    mutating func share(_ tensor: Tensor<Scalar>) {
        origin = .none
        precision = .float
        input = tensor
    }

    /// Makes `x`, of `shape`, the forward input: copied into the cache's own
    /// storage (reused when the count matches), unless `x` already is that
    /// storage (the `Tensor` entry points, after ``share(_:)``). Marks the
    /// cache as filled by no forward pass until one succeeds.
    /// - Throws: ``NormError/negativeDimension(shape:)``,
    ///   ``NormError/shapeOverflow(shape:)``,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    @usableFromInline
    mutating func adopt(_ x: UnsafeBufferPointer<Scalar>, shape: [Int]) throws(NormError) {
        guard try adoptLater(x, shape: shape) else { return }
        input.withUnsafeMutableBufferPointer { target in
            guard let source = x.baseAddress, let destination = target.baseAddress else { return }
            UnsafeMutableRawPointer(destination).copyMemory(
                from: source, byteCount: x.count * MemoryLayout<Scalar>.stride)
        }
    }

    /// ``adopt(_:shape:)`` on the naive backend, ``adoptLater(_:shape:)`` on
    /// the BLAS one, whose passes copy `x` as they first read it: returns
    /// whether the pass must copy `x` (to be given as its `source`). With
    /// `onlyStreamed` (GroupNorm's and InstanceNorm's per-sample passes), the
    /// pass copies only a copy that streams
    /// (``StreamingStores/streamsCopy(count:of:)``, ``InputCopy``), and one
    /// that stays in cache is made here.
    /// - Throws: as ``adopt(_:shape:)``.
    @inlinable
    mutating func adopt(_ x: UnsafeBufferPointer<Scalar>, shape: [Int],
                        backend: Backend, onlyStreamed: Bool = false) throws(NormError) -> Bool {
        guard backend == .blas,
              !onlyStreamed || StreamingStores.streamsCopy(count: x.count, of: Scalar.self) else {
            try adopt(x, shape: shape)
            return false
        }
        return try adoptLater(x, shape: shape)
    }

    /// ``adopt(_:shape:)`` but for the copy, which the forward pass makes as
    /// it first reads each block of `x` (one read of `x` from memory where a
    /// copy ahead of the pass made two): sizes the cache's own storage, and
    /// returns whether `x` must be copied there (`false` when `x` already is
    /// that storage).
    /// - Throws: as ``adopt(_:shape:)``.
    @usableFromInline
    mutating func adoptLater(_ x: UnsafeBufferPointer<Scalar>, shape: [Int]) throws(NormError) -> Bool {
        origin = .none
        precision = .float
        let count = try Tensor<Scalar>.elementCount(of: shape)
        try Validation.buffer("input", x.count, expected: count)
        let isOwn = input.shape == shape && input.withUnsafeBufferPointer {
            $0.baseAddress == x.baseAddress && $0.count == x.count
        }
        if isOwn { return false }
        input.prepare(shape: shape)
        return true
    }

    /// Swaps the cached input with `tensor` (a residual `Tensor` form hands
    /// its sum's storage to the cache, which then writes it in place), and
    /// marks the cache as filled by no forward pass until one succeeds.
    @usableFromInline
    mutating func exchangeInput(_ tensor: inout Tensor<Scalar>) {
        origin = .none
        precision = .float
        swap(&input, &tensor)
    }

    /// Sizes the input to `shape` (a valid shape) in the cache's own storage,
    /// to be written by the forward pass (a residual form's sum), and marks
    /// the cache as filled by no forward pass until one succeeds.
    @usableFromInline
    mutating func prepareInput(shape: [Int]) {
        origin = .none
        precision = .float
        input.prepare(shape: shape)
    }

    /// Sizes ``reducedInput`` (reused when the count matches) for `x`, 16-bit
    /// values of `precision` in `shape`, which the forward pass then copies
    /// there block by block; empties ``input``. Marks the cache as filled by
    /// no forward pass until one succeeds.
    /// - Throws: ``NormError/negativeDimension(shape:)``,
    ///   ``NormError/shapeOverflow(shape:)``,
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``.
    @usableFromInline
    mutating func adoptReduced<Storage: ReducedPrecision>(
        _ x: UnsafeBufferPointer<Storage>, shape: [Int], precision: StoragePrecision
    ) throws(NormError) {
        origin = .none
        let count = try Tensor<Scalar>.elementCount(of: shape)
        try Validation.buffer("input", x.count, expected: count)
        self.precision = precision
        if input.count != 0 { input = .empty }
        reducedShape = shape
        if reducedInput.count != count { reducedInput = [UInt16](repeating: 0, count: count) }
    }

    /// The cache's buffers as a forward pass writes them.
    @usableFromInline
    struct ForwardPointers {
        /// The cached input (`nil` for no values, or after a 16-bit forward
        /// began, which keeps it in ``reduced``).
        @usableFromInline let x: UnsafePointer<Scalar>?
        /// The statistics, sized by ``record(gamma:beta:parameters:mode:statisticCount:origin:)``.
        @usableFromInline let mean, invstd: UnsafeMutablePointer<Scalar>
        /// The ReLU's mask (sized by ``prepareMask(activation:count:)``), or `nil`.
        @usableFromInline let mask: UnsafeMutablePointer<UInt8>?
        /// The 16-bit input's storage (sized by ``adoptReduced(_:shape:precision:)``), or `nil`.
        @usableFromInline let reduced: UnsafeMutableRawPointer?

        @inlinable
        init(x: UnsafePointer<Scalar>?, mean: UnsafeMutablePointer<Scalar>?, invstd: UnsafeMutablePointer<Scalar>?,
             mask: UnsafeMutablePointer<UInt8>?, reduced: UnsafeMutablePointer<UInt16>?) {
            self.x = x
            self.mean = mean!
            self.invstd = invstd!
            self.mask = mask
            self.reduced = reduced.map { UnsafeMutableRawPointer($0) }
        }
    }

    /// Calls `body` with the buffers a forward pass writes (after
    /// ``record(gamma:beta:parameters:mode:statisticCount:origin:)``); the
    /// input too when `writingInput` (the pass copies it there:
    /// ``adoptLater(_:shape:)``), through ``ForwardPointers/x`` made mutable.
    /// - Complexity: O(1) besides `body`.
    @usableFromInline
    mutating func withForwardPointers<R>(writingInput: Bool = false,
                                         _ body: (ForwardPointers) -> R) -> R {
        if writingInput {
            return withMutablePointers(&storedMean, &storedInverseStandardDeviation) { mean, invstd in
                withMutablePointers(&storedMask, &reducedInput) { mask, reduced in
                    input.withUnsafeMutableBufferPointer { x in
                        body(ForwardPointers(x: UnsafePointer(x.baseAddress), mean: mean, invstd: invstd,
                                             mask: mask, reduced: reduced))
                    }
                }
            }
        }
        let shared = input
        return withMutablePointers(&storedMean, &storedInverseStandardDeviation) { mean, invstd in
            withMutablePointers(&storedMask, &reducedInput) { mask, reduced in
                shared.withUnsafeBufferPointer { x in
                    body(ForwardPointers(x: x.baseAddress, mean: mean, invstd: invstd, mask: mask,
                                         reduced: reduced))
                }
            }
        }
    }

    /// Calls `body` with the input (writable when `writable`: a residual
    /// form's sum is written there) and the statistics vectors, sized by
    /// ``record(gamma:beta:parameters:mode:statisticCount:origin:)``.
    @usableFromInline
    mutating func withInputAndStatistics<R>(
        writable: Bool,
        _ body: (UnsafeMutablePointer<Scalar>, UnsafeMutablePointer<Scalar>,
                 UnsafeMutablePointer<Scalar>) -> R
    ) -> R {
        storedMean.withUnsafeMutableBufferPointer { mean in
            storedInverseStandardDeviation.withUnsafeMutableBufferPointer { invstd in
                if writable {
                    return input.withUnsafeMutableBufferPointer { x in
                        body(x.baseAddress!, mean.baseAddress!, invstd.baseAddress!)
                    }
                }
                return input.withUnsafeBufferPointer { x in
                    body(UnsafeMutablePointer(mutating: x.baseAddress!), mean.baseAddress!,
                         invstd.baseAddress!)
                }
            }
        }
    }

    /// Sizes the statistics vectors, records the mode, the layer and its
    /// affine map (from which of `gamma` and `beta` are empty), copies
    /// `gamma` in place (the input is already recorded: ``share(_:)``,
    /// ``adopt(_:shape:)``). A forward pass that then throws calls ``invalidate()``.
    @usableFromInline
    mutating func record(gamma source: [Scalar], beta: [Scalar], parameters: Int, mode: Mode,
                         statisticCount: Int, origin: CacheOrigin) {
        self.affine = Affine(scale: !source.isEmpty, shift: !beta.isEmpty)
        self.mode = mode
        self.origin = origin
        self.activation = .none
        storedMean.resizeReusingStorage(to: statisticCount)
        storedInverseStandardDeviation.resizeReusingStorage(to: statisticCount)
        gamma.resizeReusingStorage(to: parameters)
        gamma.withUnsafeMutableBufferPointer { target in
            // A layer without a scale (`Affine`) multiplies by ones.
            if source.isEmpty { target.update(repeating: 1); return }
            source.withUnsafeBufferPointer { _ = target.update(fromContentsOf: $0) }
        }
    }

    /// Records the forward pass's `activation` and sizes the mask that a
    /// ReLU's backward reads (`count` bytes; none without one).
    @usableFromInline
    mutating func prepareMask(activation: FusedActivation, count: Int) {
        self.activation = activation
        let bytes = activation == .relu ? count : 0
        if storedMask.count != bytes { storedMask = [UInt8](repeating: 0, count: bytes) }
    }

    /// Marks the cache as filled by no forward pass (its statistics are partial).
    @usableFromInline
    mutating func invalidate() { origin = .none }

    /// After a forward pass into the cache: when it reported `failure` (the
    /// first row or channel whose statistics are not finite), invalidates the
    /// cache and throws ``NormError/nonFiniteStatistics(index:)``.
    @inlinable
    mutating func settle(failure: Int?) throws(NormError) {
        guard let index = failure else { return }
        invalidate()
        throw .nonFiniteStatistics(index: index)
    }
}


/// The caller's buffers of a backward pass: the output gradient it reads, the
/// gradients it writes.
@usableFromInline
struct GradientBuffers<Scalar: BLASScalar> {
    @usableFromInline let dy: UnsafeBufferPointer<Scalar>
    @usableFromInline let dx, dgamma, dbeta: UnsafeMutableBufferPointer<Scalar>

    @inlinable
    init(dy: UnsafeBufferPointer<Scalar>, dx: UnsafeMutableBufferPointer<Scalar>,
         dgamma: UnsafeMutableBufferPointer<Scalar>, dbeta: UnsafeMutableBufferPointer<Scalar>) {
        self.dy = dy; self.dx = dx; self.dgamma = dgamma; self.dbeta = dbeta
    }
}

/// The raw pointers a backward kernel reads and writes: the output gradient,
/// the cache's input, statistics and `gamma`, and the gradients' buffers
/// (stand-ins that nobody reads for a gradient the caller does not want:
/// `keepsGamma`, `keepsBeta` false).
@usableFromInline
struct BackwardPointers<Scalar: BLASScalar> {
    @usableFromInline let dy, x, mean, invstd, gamma: UnsafePointer<Scalar>
    @usableFromInline let dx, dgamma, dbeta: UnsafeMutablePointer<Scalar>
    @usableFromInline let keepsGamma, keepsBeta: Bool

    @inlinable
    init(dy: UnsafePointer<Scalar>, x: UnsafePointer<Scalar>, mean: UnsafePointer<Scalar>,
         invstd: UnsafePointer<Scalar>, gamma: UnsafePointer<Scalar>,
         dx: UnsafeMutablePointer<Scalar>, dgamma: UnsafeMutablePointer<Scalar>,
         dbeta: UnsafeMutablePointer<Scalar>, keepsGamma: Bool = true, keepsBeta: Bool = true) {
        self.dy = dy; self.x = x; self.mean = mean; self.invstd = invstd; self.gamma = gamma
        self.dx = dx; self.dgamma = dgamma; self.dbeta = dbeta
        self.keepsGamma = keepsGamma; self.keepsBeta = keepsBeta
    }

    /// `dgamma` when the caller wants it, else `nil`.
    @inlinable var wantedGamma: UnsafeMutablePointer<Scalar>? { keepsGamma ? dgamma : nil }
    /// `dbeta` when the caller wants it, else `nil`.
    @inlinable var wantedBeta: UnsafeMutablePointer<Scalar>? { keepsBeta ? dbeta : nil }
}

extension NormCache {
    /// Calls `body` with the pointers of a backward pass through this cache:
    /// the one place every layer's backward opens its buffers. The buffers
    /// were validated (``Validation/gradientBuffers(_:cache:parameters:)``);
    /// an empty `dgamma` or `dbeta` (a layer without that parameter,
    /// ``Affine``) is written to `standIns`' discard vectors.
    @inlinable
    func withBackwardPointers<R>(
        _ buffers: GradientBuffers<Scalar>, standIns: AffineStandIns<Scalar>,
        _ body: (BackwardPointers<Scalar>) -> R
    ) -> R {
        input.withUnsafeBufferPointer { x in
        withPointers(storedMean, storedInverseStandardDeviation) { mean, invstd in
        gamma.withUnsafeBufferPointer { gamma in
            // An empty shard's caller may pass buffers without an address;
            // nothing reads or writes them then, so the cache's own stands in.
            let own = x.baseAddress!
            return body(BackwardPointers(
                dy: buffers.dy.baseAddress ?? own, x: own, mean: mean!,
                invstd: invstd!, gamma: gamma.baseAddress!,
                dx: buffers.dx.baseAddress ?? UnsafeMutablePointer(mutating: own),
                dgamma: buffers.dgamma.isEmpty ? standIns.discard : buffers.dgamma.baseAddress!,
                dbeta: buffers.dbeta.isEmpty ? standIns.discard + standIns.stride : buffers.dbeta.baseAddress!,
                keepsGamma: !buffers.dgamma.isEmpty, keepsBeta: !buffers.dbeta.isEmpty))
        }}}
    }
}

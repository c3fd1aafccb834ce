/// How ``DecorrelatedBatchNorm`` computes a group's whitening matrix `W` from
/// its covariance `Sigma`.
public enum WhiteningMethod: Sendable, Hashable, Codable {
    /// ZCA whitening: `Sigma = U diag(l) Uᵀ` (LAPACK `?syevd`),
    /// `W = U diag(1/sqrt(l + eps)) Uᵀ` (Huang et al., CVPR 2018).
    case eigen
    /// Cholesky whitening: `Sigma + eps I = L Lᵀ` (`?potrf`), `W = L⁻ᵀ`
    /// (`?trtri`) (Siarohin et al., ICLR 2019).
    case cholesky
    /// Iterative normalization (Huang et al., CVPR 2019): `S = Sigma + eps I`,
    /// `SN = S / tr(S)`, `P_0 = I`, `P_(k+1) = 1.5 P_k - 0.5 P_k³ SN`,
    /// `W = P_T / sqrt(tr(S))`; matrix products only. It approaches `.eigen`'s
    /// `W` as `iterations` grows, quadratically once close. `iterations` is
    /// 1...64 and a most: the iteration stops one step after its residual
    /// `‖P³ SN − P‖ / ‖P‖` falls to `sqrt(ulp)`, because past convergence
    /// this (uncoupled) iteration lets round-off grow geometrically, the
    /// faster the worse the covariance is conditioned; a residual that grows
    /// before then throws ``NormError/whiteningDiverged(group:iteration:)``
    /// (IterNorm uses 5 iterations).
    case newtonSchulz(iterations: Int)
}

/// What ``DecorrelatedBatchNorm``'s forward pass saves for its backward pass:
/// a ``NormCache`` (its ``NormCache/input``, ``NormCache/mean`` (the batch
/// mean in training, the running mean in inference), ``NormCache/gamma``,
/// ``NormCache/mode`` and ``NormCache/shape``) that also keeps the centred
/// input, the normalized output and each group's whitening matrix and the
/// factors it was computed from.
public typealias DecorrelatedCache<Scalar: BLASScalar> = NormCache<Scalar>

/// The whitening part of a ``DecorrelatedBatchNorm`` forward's cache, sized on
/// first use and reused (the `N x D` arrays) afterwards.
struct WhiteningCache<Scalar: BLASScalar>: Sendable {
    /// `Xc = x - mean`, `N x D`.
    var centred: [Scalar] = []
    /// `xhat = Xc W`, `N x D`.
    var normalized: [Scalar] = []
    /// Each group's `W` and, in training, what it was computed from.
    var factors: [WhiteningKernels.Factors<Scalar>] = []
}

/// Decorrelated batch normalization of an `(N, D)` input (Huang et al.,
/// "Decorrelated Batch Normalization", CVPR 2018): the `D` features in
/// `D / groupSize` groups of `groupSize` contiguous features, each group
/// whitened over the batch.
///
/// Training: `mu = mean over N`, `Xc = X - mu`, per group
/// `Sigma = Xc_gᵀ Xc_g / N` (biased), `W` by ``method``, `xhat_g = Xc_g W`,
/// then `y = gamma * xhat + beta` per feature. Running statistics:
/// `runningMean = momentum * runningMean + (1 - momentum) * mu` and the same
/// for `runningWhitening` with the batch's `W`. Inference:
/// `xhat_g = (x - runningMean)_g W_running`. With `groupSize` 1 and `.eigen`
/// this is ``BatchNorm``.
///
/// ```swift
/// var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 64, groupSize: 16)
/// let x = try Tensor<Double>(randomNormal: [256, 64], seed: 1)
/// let (y, cache) = try dbn.forward(x, mode: .training)   // each group's covariance ≈ I
/// let grads = try dbn.backward(y, cache: cache)
/// ```
///
/// Backward in training is the exact derivative of what forward computed:
/// through the eigendecomposition (Daleckii–Krein divided differences, finite
/// for equal eigenvalues), the Cholesky factor and its inverse, or each
/// Newton–Schulz iteration. The BLAS backend uses `?syrk` for the covariance,
/// LAPACKE `?syevd`, `?potrf` and `?trtri`, and `?gemm` for every product; the
/// naive backend is the textbook: triple loops, a cyclic Jacobi eigensolver, a
/// plain Cholesky and forward substitution. The `N x D` products (the
/// covariance, `Xc W`, and backward's) split over NormKit's threads
/// (``Threading/threadCount``) in chunks of rows fixed by the shape, with
/// OpenBLAS on one thread in each, so that the results are the same bits at
/// every thread count (OpenBLAS's own threads sum in an order that depends on
/// their count); the factorizations run on the calling thread.
///
/// It is a ``BufferedNormalizationLayer``: entry points over borrowed memory,
/// `Span`s and `Tensor` buffers, and ``NormalizationStep``. Its `N x D`
/// intermediates live in the cache and the workspace, sized on first use and
/// reused; each call still allocates its groups' `groupSize x groupSize`
/// matrices and LAPACK's work arrays (O(D · groupSize) scalars).
public struct DecorrelatedBatchNorm<Scalar: BLASScalar>: BufferedNormalizationLayer, Equatable {
    /// The forward pass's input, mean, centred input, output and whitening factors.
    public typealias Cache = NormCache<Scalar>

    /// `D`, the number of features.
    public let featureCount: Int
    /// The features per group; divides `featureCount`.
    public let groupSize: Int
    /// How each group's whitening matrix is computed.
    public let method: WhiteningMethod
    /// Which of `gamma` and `beta` the layer has (PyTorch's `affine`).
    public let affine: Affine
    /// The scale, one per feature; starts at ones; empty without one (``Affine/none``).
    public var gamma: [Scalar]
    /// The shift, one per feature; starts at zeros; empty without one
    /// (``Affine/scaleOnly``, ``Affine/none``).
    public var beta: [Scalar]
    /// The running mean, `D`; starts at zeros.
    public var runningMean: [Scalar]
    /// The running whitening matrices: `D / groupSize` blocks of
    /// `groupSize x groupSize`, group after group, each row-major; starts at
    /// identities.
    public var runningWhitening: [Scalar]
    /// Added to the covariance's diagonal; finite and positive.
    public var epsilon: Scalar
    /// The weight of the old running value, in `[0, 1]`, as ``BatchNorm``'s.
    public var momentum: Scalar
    /// The implementation used.
    public var backend: Backend

    /// Creates a decorrelated batch-norm layer with `gamma` ones, `beta`
    /// zeros, running mean zeros and running whitening identities.
    ///
    /// - Throws: ``NormError/invalidFeatureCount(_:)``,
    ///   ``NormError/invalidGroupSize(groupSize:featureCount:)`` when
    ///   `groupSize < 1` or it does not divide `featureCount`,
    ///   ``NormError/invalidIterationCount(_:)`` for `.newtonSchulz` with fewer
    ///   than 1 or more than 64 iterations, ``NormError/whiteningTooLarge(featureCount:groupSize:maximum:)``
    ///   when the running whitening matrices would hold more than
    ///   ``maximumWhiteningScalars`` scalars (checked before anything is
    ///   allocated), ``NormError/invalidEpsilon(_:)``, ``NormError/invalidMomentum(_:)``.
    /// - Complexity: O(D · groupSize).
    public init(featureCount: Int, groupSize: Int, method: WhiteningMethod = .eigen,
                epsilon: Scalar = 1e-5, momentum: Scalar = 0.9, affine: Affine = .scaleAndShift,
                backend: Backend = .blas) throws(NormError) {
        try Validation.featureCount(featureCount)
        guard groupSize >= 1, featureCount % groupSize == 0 else {
            throw .invalidGroupSize(groupSize: groupSize, featureCount: featureCount)
        }
        let (scalars, overflow) = featureCount.multipliedReportingOverflow(by: groupSize)
        guard !overflow, scalars <= Self.maximumWhiteningScalars else {
            throw .whiteningTooLarge(featureCount: featureCount, groupSize: groupSize,
                                     maximum: Self.maximumWhiteningScalars)
        }
        if case .newtonSchulz(let iterations) = method,
           !(1...WhiteningKernels.maximumNewtonSchulzIterations).contains(iterations) {
            throw .invalidIterationCount(iterations)
        }
        try Validation.epsilon(epsilon)
        try Validation.momentum(momentum)
        self.featureCount = featureCount
        self.groupSize = groupSize
        self.method = method
        self.affine = affine
        gamma = Array(repeating: 1, count: affine.scaleCount(featureCount))
        beta = Array(repeating: 0, count: affine.shiftCount(featureCount))
        runningMean = Array(repeating: 0, count: featureCount)
        runningWhitening = Array(repeating: 0, count: featureCount * groupSize)
        for g in 0..<(featureCount / groupSize) {
            for i in 0..<groupSize {
                runningWhitening[g * groupSize * groupSize + i * groupSize + i] = 1
            }
        }
        self.epsilon = epsilon
        self.momentum = momentum
        self.backend = backend
    }

    /// The number of groups, `D / groupSize`.
    public var groupCount: Int { featureCount / groupSize }

    /// The most scalars the running whitening matrices may hold,
    /// `featureCount · groupSize`: 2²⁶ (256 MiB of Float, 512 MiB of Double;
    /// for example 65,536 features in groups of 1,024).
    public static var maximumWhiteningScalars: Int { 1 << 26 }

    /// Checks group `g`'s running whitening matrix before inference uses it:
    /// finite, and of the form ``method`` produces: for `.cholesky` upper
    /// triangular with a positive diagonal (`L⁻ᵀ`), otherwise symmetric
    /// positive definite (its symmetric part has a Cholesky factor). A zero,
    /// indefinite or non-finite matrix would whiten nothing, or silently.
    /// - Throws: ``NormError/nonFiniteStatistics(index:)``,
    ///   ``NormError/notPositiveDefinite(group:minor:)``,
    ///   ``NormError/unsupportedParameter(name:expected:)``.
    func checkRunningWhitening(group g: Int, _ w: ArraySlice<Scalar>) throws(NormError) {
        let m = groupSize, w = Array(w)
        guard w.allSatisfy(\.isFinite) else { throw .nonFiniteStatistics(index: g * m) }
        switch method {
        case .cholesky:
            for i in 0..<m {
                guard w[i * m + i] > 0 else { throw .notPositiveDefinite(group: g, minor: i + 1) }
                for j in 0..<i where w[i * m + j] != 0 {
                    throw .unsupportedParameter(name: "runningWhitening",
                                                expected: "upper triangular blocks (L⁻ᵀ, .cholesky)")
                }
            }
        case .eigen, .newtonSchulz:
            var symmetric = w
            for i in 0..<m { for j in 0..<m { symmetric[i * m + j] = (w[i * m + j] + w[j * m + i]) / 2 } }
            _ = try WhiteningKernels.cholesky(symmetric, order: m, group: g, backend: backend)
        }
    }

    /// Re-validates the public `var`s that `forward` depends on.
    func validateParameters() throws(NormError) {
        try Validation.epsilon(epsilon)
        try Validation.momentum(momentum)
        try Validation.affineParameters(affine, gamma: gamma, beta: beta, count: featureCount)
        try Validation.count("runningMean", runningMean.count, expected: featureCount)
        try Validation.count("runningWhitening", runningWhitening.count, expected: featureCount * groupSize)
    }

    /// The origin its forward passes record in a cache:
    /// `.decorrelatedBatchNorm(featureCount:groupSize:method:)`.
    public var cacheOrigin: CacheOrigin {
        .decorrelatedBatchNorm(featureCount: featureCount, groupSize: groupSize, method: method)
    }

    // MARK: Forward

    /// Whitens an `(N, D)` batch group by group; see the type's documentation.
    ///
    /// Over borrowed memory; the `Tensor` and `Span` entry points and the value
    /// API call this. The cache copies the input; `cache` and `workspace` are
    /// sized on first use and reused afterwards. `output` may be `input`'s memory.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` for a shape other
    ///   than `(N, D)`; ``NormError/insufficientValues(valuesPerStatistic:)`` for
    ///   `N < 2` in training; ``NormError/nonFiniteStatistics(index:)`` (the
    ///   feature, or a group's first feature) for a non-finite mean or whitening
    ///   matrix, an overflowing covariance, or (`.eigen`) a group whose smallest
    ///   eigenvalue plus `epsilon` is below the eigensolver's accuracy;
    ///   ``NormError/notPositiveDefinite(group:minor:)`` and
    ///   ``NormError/lapackFailure(routine:info:)`` from the factorizations;
    ///   ``NormError/whiteningDiverged(group:iteration:)`` (`.newtonSchulz`);
    ///   in inference, the errors of a running whitening block that is not
    ///   finite or not of its method's form (see the type's documentation); the
    ///   hyperparameter and buffer errors. A throwing call changes no state.
    /// - Complexity: O(N·D·groupSize + D·groupSize²), and `.newtonSchulz`'s
    ///   `3 · iterations` products of `groupSize x groupSize` matrices per group.
    ///   Inference also checks each running whitening block (for `.eigen` and
    ///   `.newtonSchulz` a Cholesky factorization of its symmetric part,
    ///   O(D·groupSize²)).
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public mutating func forward(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int], mode: Mode,
        into output: UnsafeMutableBufferPointer<Scalar>, cache: inout Cache, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try validateParameters()
        try cache.adopt(input, shape: shape)
        try Validation.buffer("output", output.count, expected: input.count)
        let n = try Validation.matrixRows(shape: shape, count: input.count, columns: featureCount)
        if mode == .training { try Validation.valuesPerStatistic(n) }
        let d = featureCount
        cache.record(gamma: gamma, beta: beta, parameters: d, mode: mode, statisticCount: d, origin: cacheOrigin)
        // Moved out for the pass (no copy), back in whether or not it throws.
        var kept = WhiteningCache<Scalar>()
        swap(&kept, &cache.whitening)
        defer { swap(&kept, &cache.whitening) }
        kept.centred.resizeReusingStorage(to: n * d)
        kept.normalized.resizeReusingStorage(to: n * d)
        let layer = self
        let result: Result<[WhiteningKernels.Factors<Scalar>], NormError> =
            withMutablePointers(&kept.centred, &kept.normalized) { centred, normalized in
            cache.storedMean.withUnsafeMutableBufferPointer { mean in
                workspace.withRegions(ones: mode == .training ? n : 0, scratch: 0) { ones, _ in
                    do throws(NormError) {
                        return .success(try layer.whiten(
                            input.baseAddress!, rows: n, mode: mode, ones: ones, mean: mean.baseAddress!,
                            centred: centred!, normalized: normalized!, output: output.baseAddress!))
                    } catch { return .failure(error) }
                }
            }}
        switch result {
        case .failure(let error):
            cache.invalidate()
            throw error
        case .success(let factors):
            kept.factors = factors
            recordDiagonals(factors, into: &cache.storedInverseStandardDeviation)
            if mode == .training { updateRunning(mean: cache.storedMean, factors: factors) }
        }
    }

    /// Inference with the running mean and whitening, keeping nothing for
    /// backward: `forward(mode: .inference)`'s output bit for bit, with no
    /// state changed; `output` may be `input`'s memory.
    /// - Throws: as the forward pass in inference.
    /// - Complexity: as the forward pass.
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public func infer(
        _ input: UnsafeBufferPointer<Scalar>, shape: [Int],
        into output: UnsafeMutableBufferPointer<Scalar>, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try validateParameters()
        let count = try Validation.inferBuffers(input, output, shape: shape)
        let n = try Validation.matrixRows(shape: shape, count: count, columns: featureCount)
        let d = featureCount
        var layout = ScratchLayout<Scalar>()
        let mean = layout.region(d), centred = layout.region(n * d), normalized = layout.region(n * d)
        let failure: NormError? = workspace.withRegions(ones: 0, scratch: layout.count) { ones, scratch in
            do throws(NormError) {
                _ = try whiten(input.baseAddress!, rows: n, mode: .inference, ones: ones,
                               mean: mean.pointer(in: scratch),
                               centred: centred.pointer(in: scratch),
                               normalized: normalized.pointer(in: scratch),
                               output: output.baseAddress!)
                return nil
            } catch { return error }
        }
        if let failure { throw failure }
    }

    /// The forward pass over validated pointers, in a workspace's regions
    /// (OpenBLAS on one thread): `mean` (`D`), `Xc` into `centred`, each
    /// group's `W` and `xhat = Xc W` into `normalized` (`N x D` each), then
    /// `y = gamma * xhat + beta` into `output` (which may be `x`: the input
    /// is read before the output is written). `ones` holds `rows` ones in training.
    /// - Returns: each group's factors.
    func whiten(
        _ x: UnsafePointer<Scalar>, rows n: Int, mode: Mode, ones: UnsafePointer<Scalar>,
        mean: UnsafeMutablePointer<Scalar>, centred: UnsafeMutablePointer<Scalar>,
        normalized: UnsafeMutablePointer<Scalar>, output y: UnsafeMutablePointer<Scalar>
    ) throws(NormError) -> [WhiteningKernels.Factors<Scalar>] {
        let d = featureCount, m = groupSize, backend = self.backend
        switch mode {
        case .training:
            WhiteningKernels.centre(x, rows: n, columns: d, mean: mean, centred: centred, ones: ones,
                                    backend: backend)
        case .inference:
            runningMean.withUnsafeBufferPointer { mean.update(from: $0.baseAddress!, count: d) }
            WhiteningKernels.subtractRow(x, row: mean, rows: n, columns: d, into: centred)
        }
        for j in 0..<d where !mean[j].isFinite { throw .nonFiniteStatistics(index: j) }

        var factors: [WhiteningKernels.Factors<Scalar>] = []
        factors.reserveCapacity(groupCount)
        for g in 0..<groupCount {
            let f: WhiteningKernels.Factors<Scalar>
            switch mode {
            case .training:
                let sigma = WhiteningKernels.groupCovariance(centred, rows: n, columns: d, group: g,
                                                             groupSize: m, divisor: Scalar(n), backend: backend)
                // An overflowing covariance is refused on both backends, before a
                // factorization can turn it into zeros.
                guard sigma.allSatisfy(\.isFinite) else { throw .nonFiniteStatistics(index: g * m) }
                f = try WhiteningKernels.whiten(covariance: sigma, order: m, method: method,
                                                epsilon: epsilon, group: g, backend: backend)
                guard f.whitening.allSatisfy(\.isFinite), f.isDifferentiable(epsilon: epsilon) else {
                    throw .nonFiniteStatistics(index: g * m)
                }
            case .inference:
                let w = runningWhitening[(g * m * m)..<((g + 1) * m * m)]
                try checkRunningWhitening(group: g, w)
                f = WhiteningKernels.Factors(whitening: Array(w))
            }
            WhiteningKernels.applyGroup(centred, f.whitening, rows: n, columns: d, group: g, groupSize: m,
                                        into: normalized, backend: backend)
            factors.append(f)
        }
        gamma.withUnsafeBufferPointer { g in
            beta.withUnsafeBufferPointer { b in
                // An absent scale multiplies by one, an absent shift adds nothing (`Affine`).
                for i in 0..<n {
                    for j in 0..<d {
                        let scaled = g.isEmpty ? normalized[i * d + j] : g[j] * normalized[i * d + j]
                        y[i * d + j] = b.isEmpty ? scaled : scaled + b[j]
                    }
                }
            }
        }
        return factors
    }

    /// The diagonal of each group's whitening matrix, feature by feature
    /// (``NormCache/inverseStandardDeviation``).
    func recordDiagonals(_ factors: [WhiteningKernels.Factors<Scalar>], into diagonal: inout [Scalar]) {
        let m = groupSize
        for (g, f) in factors.enumerated() {
            for i in 0..<m { diagonal[g * m + i] = f.whitening[i * m + i] }
        }
    }

    /// After a training pass: `running = momentum · running + (1 - momentum) · batch`
    /// for the mean and each group's whitening matrix.
    mutating func updateRunning(mean: [Scalar], factors: [WhiteningKernels.Factors<Scalar>]) {
        let keep = momentum, take = 1 - momentum, m = groupSize
        for j in 0..<featureCount { runningMean[j] = keep * runningMean[j] + take * mean[j] }
        for g in 0..<groupCount {
            for k in 0..<(m * m) {
                let index = g * m * m + k
                runningWhitening[index] = keep * runningWhitening[index] + take * factors[g].whitening[k]
            }
        }
    }

    // MARK: Backward

    /// The exact backward pass: `dbeta = Σ dy`, `dgamma = Σ dy·xhat`,
    /// `dXhat = gamma·dy`; per group `dXc = dXhat Wᵀ + Xc (D + Dᵀ) / N` with `D`
    /// the adjoint of `W`'s computation at `Xc_gᵀ dXhat_g`, then
    /// `dx = dXc - mean over N of dXc`. After an inference forward,
    /// `dx = dXhat Wᵀ`.
    ///
    /// Over borrowed memory; the `Tensor` and `Span` entry points and the value
    /// API call this. `dXhat` and `dy·xhat` take `2·N·D` scalars of the workspace.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache from
    ///   another layer or a forward pass that threw;
    ///   ``NormError/bufferCountMismatch(name:expected:actual:)``; the
    ///   factorizations' errors of the adjoint.
    /// - Complexity: as forward.
    @_specialize(where Scalar == Float)
    @_specialize(where Scalar == Double)
    public func backward(
        _ outputGradient: UnsafeBufferPointer<Scalar>, cache: Cache,
        inputGradient: UnsafeMutableBufferPointer<Scalar>,
        gammaGradient: UnsafeMutableBufferPointer<Scalar>,
        betaGradient: UnsafeMutableBufferPointer<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        try Validation.origin(cache, expected: cacheOrigin)
        let buffers = GradientBuffers(dy: outputGradient, dx: inputGradient, dgamma: gammaGradient,
                                      dbeta: betaGradient)
        try Validation.gradientBuffers(buffers, cache: cache, parameters: featureCount)
        let n = cache.input.shape[0], d = featureCount
        var layout = ScratchLayout<Scalar>()
        let product = layout.region(n * d), dxhat = layout.region(n * d), sums = layout.region(d)
        let failure: NormError? = workspace.withRegions(ones: n, scratch: layout.count) { ones, scratch in
            cache.whitening.centred.withUnsafeBufferPointer { centred in
            cache.whitening.normalized.withUnsafeBufferPointer { xhat in
                do throws(NormError) {
                    try backpropagate(
                        buffers, cache: cache, rows: n, ones: ones, centred: centred.baseAddress!,
                        xhat: xhat.baseAddress!, product: product.pointer(in: scratch),
                        dxhat: dxhat.pointer(in: scratch), sums: sums.pointer(in: scratch))
                    return nil
                } catch { return error }
            }}
        }
        if let failure { throw failure }
    }

    /// The backward pass over validated buffers, in a workspace's regions:
    /// `product` and `dxhat` (`N x D`) and `sums` (`D`) are scratch, `ones`
    /// holds `rows` ones.
    func backpropagate(
        _ buffers: GradientBuffers<Scalar>, cache: Cache, rows n: Int, ones: UnsafePointer<Scalar>,
        centred: UnsafePointer<Scalar>, xhat: UnsafePointer<Scalar>, product p: UnsafeMutablePointer<Scalar>,
        dxhat h: UnsafeMutablePointer<Scalar>, sums: UnsafeMutablePointer<Scalar>
    ) throws(NormError) {
        let d = featureCount, m = groupSize, backend = self.backend
        let dy = buffers.dy.baseAddress!, dx = buffers.dx.baseAddress!
        cache.gamma.withUnsafeBufferPointer { g in
            for i in 0..<n {
                for j in 0..<d {
                    p[i * d + j] = dy[i * d + j] * xhat[i * d + j]
                    h[i * d + j] = dy[i * d + j] * g[j]
                }
            }
        }
        // Only the parameters the forward's layer has (`Affine`); an absent one's buffer is empty.
        if !buffers.dbeta.isEmpty {
            WhiteningKernels.columnSums(dy, rows: n, columns: d, into: buffers.dbeta.baseAddress!, ones: ones,
                                        backend: backend)
        }
        if !buffers.dgamma.isEmpty {
            WhiteningKernels.columnSums(p, rows: n, columns: d, into: buffers.dgamma.baseAddress!, ones: ones,
                                        backend: backend)
        }
        for g in 0..<groupCount {
            let f = cache.whitening.factors[g]
            // dXc_g = dXhat_g Wᵀ.
            WhiteningKernels.applyGroup(h, f.whitening, transposed: true, rows: n, columns: d, group: g,
                                        groupSize: m, into: dx, backend: backend)
            guard cache.mode == .training else { continue }
            let g2 = WhiteningKernels.groupCrossProduct(centred, h, rows: n, columns: d, group: g,
                                                        groupSize: m, backend: backend)
            let adjoint = try WhiteningKernels.covarianceAdjoint(g2, factors: f, order: m, method: method,
                                                                epsilon: epsilon, group: g, backend: backend)
            var symmetric = adjoint
            for i in 0..<m { for j in 0..<m { symmetric[i * m + j] = adjoint[i * m + j] + adjoint[j * m + i] } }
            // dXc_g += Xc_g (D + Dᵀ) / N.
            WhiteningKernels.applyGroup(centred, symmetric, rows: n, columns: d, group: g, groupSize: m,
                                        into: dx, alpha: 1 / Scalar(n), accumulate: true, backend: backend)
        }
        if cache.mode == .training {
            WhiteningKernels.columnSums(dx, rows: n, columns: d, into: sums, ones: ones, backend: backend)
            for j in 0..<d { sums[j] /= Scalar(n) }
            WhiteningKernels.subtractRow(dx, row: sums, rows: n, columns: d, into: dx)
        }
    }
}

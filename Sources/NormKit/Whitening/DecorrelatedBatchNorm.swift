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
/// the centred input, the normalized output, each group's whitening matrix
/// and the factors it was computed from, and the `gamma` forward used.
public struct DecorrelatedCache<Scalar: BLASScalar>: Sendable {
    /// The forward input's shape, `(N, D)`.
    public internal(set) var shape: [Int] = [0]
    /// The mode of the forward pass; after inference `W` and the mean are constants.
    public internal(set) var mode: Mode = .training
    /// The layer that filled the cache, `nil` when none did or its forward threw.
    var origin: (featureCount: Int, groupSize: Int, method: WhiteningMethod)?
    /// `Xc = x - mean`, `N x D`.
    var centred: [Scalar] = []
    /// `xhat = Xc W`, `N x D`.
    var normalized: [Scalar] = []
    /// Each group's `W` and, in training, what it was computed from.
    var factors: [WhiteningKernels.Factors<Scalar>] = []
    /// The `gamma` the forward pass used.
    public internal(set) var gamma: [Scalar] = []

    /// An empty cache.
    public init() {}
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
public struct DecorrelatedBatchNorm<Scalar: BLASScalar>: NormalizationLayer, Equatable {
    /// The forward pass's centred input, output and whitening factors.
    public typealias Cache = DecorrelatedCache<Scalar>

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

    // MARK: Forward

    /// Whitens an `(N, D)` batch group by group; see the type's documentation.
    ///
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
    ///   hyperparameter errors. A throwing call changes no state.
    /// - Complexity: O(N·D·groupSize + D·groupSize²), and `.newtonSchulz`'s
    ///   `3 · iterations` products of `groupSize x groupSize` matrices per group.
    ///   Inference also checks each running whitening block (for `.eigen` and
    ///   `.newtonSchulz` a Cholesky factorization of its symmetric part,
    ///   O(D·groupSize²)).
    @_specialize(exported: true, where Scalar == Float)
    @_specialize(exported: true, where Scalar == Double)
    public mutating func forward(_ input: Tensor<Scalar>, mode: Mode) throws(NormError)
        -> (output: Tensor<Scalar>, cache: Cache) {
        try WhiteningKernels.withThreadPolicy { () throws(NormError) in try whiten(input, mode: mode) }
    }

    /// Inference with the running mean and whitening, keeping nothing for
    /// backward: `forward(input, mode: .inference).output`, bit for bit, with
    /// no state changed (the layer has the value API only, so the
    /// intermediates it computes are allocated per call).
    /// - Throws: as ``forward(_:mode:)`` in inference.
    /// - Complexity: as ``forward(_:mode:)``.
    public func infer(_ input: Tensor<Scalar>) throws(NormError) -> Tensor<Scalar> {
        var layer = self
        return try layer.forward(input, mode: .inference).output
    }

    /// ``forward(_:mode:)`` inside the thread policy.
    mutating func whiten(_ input: Tensor<Scalar>, mode: Mode) throws(NormError)
        -> (output: Tensor<Scalar>, cache: Cache) {
        try validateParameters()
        let n = try Validation.matrixRows(input, columns: featureCount)
        if mode == .training { try Validation.valuesPerStatistic(n) }
        let d = featureCount, m = groupSize, backend = self.backend
        var cache = Cache()
        cache.shape = input.shape
        cache.mode = mode
        // Without a scale (`Affine`) the backward multiplies by ones.
        cache.gamma = gamma.isEmpty ? [Scalar](repeating: 1, count: featureCount) : gamma
        let mean: [Scalar]
        var centred: [Scalar]
        switch mode {
        case .training:
            (mean, centred) = input.withUnsafeBufferPointer {
                WhiteningKernels.centre($0, rows: n, columns: d, backend: backend)
            }
        case .inference:
            mean = runningMean
            centred = [Scalar].unspecified(count: n * d)
            input.withUnsafeBufferPointer { x in
                mean.withUnsafeBufferPointer { WhiteningKernels.subtractRow(x, row: $0, rows: n, into: &centred) }
            }
        }
        if let bad = mean.firstIndex(where: { !$0.isFinite }) { throw .nonFiniteStatistics(index: bad) }

        var normalized = [Scalar].unspecified(count: n * d)
        var factors: [WhiteningKernels.Factors<Scalar>] = []
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
                                        into: &normalized, backend: backend)
            factors.append(f)
        }
        var output = [Scalar].unspecified(count: n * d)
        output.withUnsafeMutableBufferPointer { y in
            normalized.withUnsafeBufferPointer { xhat in
                cache.gamma.withUnsafeBufferPointer { g in
                    beta.withUnsafeBufferPointer { b in
                        // An absent shift (`Affine`) adds nothing.
                        if b.isEmpty {
                            for i in 0..<n { for j in 0..<d { y[i * d + j] = g[j] * xhat[i * d + j] } }
                        } else {
                            for i in 0..<n { for j in 0..<d { y[i * d + j] = g[j] * xhat[i * d + j] + b[j] } }
                        }
                    }
                }
            }
        }

        if mode == .training {
            let keep = momentum, take = 1 - momentum
            for j in 0..<d { runningMean[j] = keep * runningMean[j] + take * mean[j] }
            for g in 0..<groupCount {
                for k in 0..<(m * m) {
                    let index = g * m * m + k
                    runningWhitening[index] = keep * runningWhitening[index] + take * factors[g].whitening[k]
                }
            }
        }
        cache.centred = centred
        cache.normalized = normalized
        cache.factors = factors
        cache.origin = (featureCount, groupSize, method)
        return (Tensor(validatedShape: input.shape, scalars: output), cache)
    }

    // MARK: Backward

    /// The exact backward pass: `dbeta = Σ dy`, `dgamma = Σ dy·xhat`,
    /// `dXhat = gamma·dy`; per group `dXc = dXhat Wᵀ + Xc (D + Dᵀ) / N` with `D`
    /// the adjoint of `W`'s computation at `Xc_gᵀ dXhat_g`, then
    /// `dx = dXc - mean over N of dXc`. After an inference forward,
    /// `dx = dXhat Wᵀ`.
    /// - Throws: ``NormError/cacheMismatch(expected:actual:)`` for a cache from
    ///   another layer or a forward pass that threw;
    ///   ``NormError/gradientShapeMismatch(expected:actual:)``.
    /// - Complexity: as forward.
    @_specialize(exported: true, where Scalar == Float)
    @_specialize(exported: true, where Scalar == Double)
    public func backward(_ outputGradient: Tensor<Scalar>, cache: Cache) throws(NormError)
        -> NormGradients<Scalar> {
        try WhiteningKernels.withThreadPolicy { () throws(NormError) in
            try backpropagate(outputGradient, cache: cache)
        }
    }

    /// ``backward(_:cache:)`` inside the thread policy.
    func backpropagate(_ outputGradient: Tensor<Scalar>, cache: Cache) throws(NormError)
        -> NormGradients<Scalar> {
        let expected = "DecorrelatedBatchNorm(featureCount: \(featureCount), groupSize: \(groupSize), "
            + "method: \(method))"
        guard let origin = cache.origin, origin.featureCount == featureCount,
              origin.groupSize == groupSize, origin.method == method else {
            let actual = cache.origin.map {
                "DecorrelatedBatchNorm(featureCount: \($0.featureCount), groupSize: \($0.groupSize), method: \($0.method))"
            } ?? "no forward pass (an empty cache, or one whose forward pass threw)"
            throw .cacheMismatch(expected: expected, actual: actual)
        }
        try Validation.gradientShape(outputGradient.shape, expected: cache.shape)
        let n = cache.shape[0], d = featureCount, m = groupSize, backend = self.backend
        let dy = outputGradient.scalars
        var dgamma = [Scalar](repeating: 0, count: d), dbeta = [Scalar](repeating: 0, count: d)
        var product = [Scalar].unspecified(count: n * d), dxhat = [Scalar].unspecified(count: n * d)
        product.withUnsafeMutableBufferPointer { p in
            dxhat.withUnsafeMutableBufferPointer { h in
                dy.withUnsafeBufferPointer { dy in
                    cache.normalized.withUnsafeBufferPointer { xhat in
                        cache.gamma.withUnsafeBufferPointer { g in
                            for i in 0..<n {
                                for j in 0..<d {
                                    p[i * d + j] = dy[i * d + j] * xhat[i * d + j]
                                    h[i * d + j] = dy[i * d + j] * g[j]
                                }
                            }
                        }
                    }
                }
            }
        }
        // Only the parameters the layer has (`Affine`); an absent one's gradient is empty.
        if affine.hasShift {
            WhiteningKernels.columnSums(dy, rows: n, columns: d, into: &dbeta, backend: backend)
        } else {
            dbeta = []
        }
        if affine.hasScale {
            WhiteningKernels.columnSums(product, rows: n, columns: d, into: &dgamma, backend: backend)
        } else {
            dgamma = []
        }

        var dx = [Scalar].unspecified(count: n * d)
        for g in 0..<groupCount {
            let f = cache.factors[g]
            // dXc_g = dXhat_g Wᵀ.
            WhiteningKernels.applyGroup(dxhat, f.whitening, transposed: true, rows: n, columns: d, group: g,
                                        groupSize: m, into: &dx, backend: backend)
            guard cache.mode == .training else { continue }
            let g2 = WhiteningKernels.groupCrossProduct(cache.centred, dxhat, rows: n, columns: d, group: g,
                                                        groupSize: m, backend: backend)
            let adjoint = try WhiteningKernels.covarianceAdjoint(g2, factors: f, order: m, method: method,
                                                                epsilon: epsilon, group: g, backend: backend)
            var symmetric = adjoint
            for i in 0..<m { for j in 0..<m { symmetric[i * m + j] = adjoint[i * m + j] + adjoint[j * m + i] } }
            // dXc_g += Xc_g (D + Dᵀ) / N.
            WhiteningKernels.applyGroup(cache.centred, symmetric, rows: n, columns: d, group: g, groupSize: m,
                                        into: &dx, alpha: 1 / Scalar(n), accumulate: true, backend: backend)
        }
        if cache.mode == .training {
            var sums = [Scalar](repeating: 0, count: d)
            WhiteningKernels.columnSums(dx, rows: n, columns: d, into: &sums, backend: backend)
            for j in 0..<d { sums[j] /= Scalar(n) }
            dx.withUnsafeMutableBufferPointer { c in
                sums.withUnsafeBufferPointer { WhiteningKernels.subtractRow(UnsafeBufferPointer(c), row: $0, rows: n, into: c) }
            }
        }
        return NormGradients(input: Tensor(validatedShape: cache.shape, scalars: dx), gamma: dgamma, beta: dbeta)
    }

}

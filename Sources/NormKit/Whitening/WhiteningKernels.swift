/// The linear algebra of whitening (``DecorrelatedBatchNorm``, ``Whitening``):
/// products, the symmetric eigendecomposition, the Cholesky factor and its
/// inverse, each on the BLAS/LAPACK backend or in textbook loops (a cyclic
/// Jacobi eigensolver, a plain Cholesky, forward substitution, triple loops),
/// and each method's whitening matrix with the adjoint of its computation.
///
/// Matrices are row-major. The small ones (a group's `m x m` covariance,
/// whitening matrix and factors) are arrays; the `N x D` ones are pointers with
/// a leading dimension, so that a group's columns are used in place.
enum WhiteningKernels {
    // MARK: Products

    /// `C = alpha * op(A) op(B) + beta * C`, `op(A)` `rows x inner`, `op(B)`
    /// `inner x columns`: `gemm` or a triple loop.
    static func multiply<Scalar: BLASScalar>(
        rows: Int, columns: Int, inner: Int, alpha: Scalar = 1,
        a: UnsafePointer<Scalar>, lda: Int, transposeA: Bool,
        b: UnsafePointer<Scalar>, ldb: Int, transposeB: Bool,
        beta: Scalar, c: UnsafeMutablePointer<Scalar>, ldc: Int, backend: Backend
    ) {
        switch backend {
        case .blas:
            Scalar.gemm(transposeA: transposeA, transposeB: transposeB, rows: rows, columns: columns,
                        inner: inner, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta,
                        c: c, ldc: ldc)
        case .naive:
            for i in 0..<rows {
                for j in 0..<columns {
                    var sum: Scalar = 0
                    for k in 0..<inner {
                        let x = transposeA ? a[k * lda + i] : a[i * lda + k]
                        let y = transposeB ? b[j * ldb + k] : b[k * ldb + j]
                        sum += x * y
                    }
                    c[i * ldc + j] = alpha * sum + (beta == 0 ? 0 : beta * c[i * ldc + j])
                }
            }
        }
    }

    /// `alpha * op(A) op(B)` of two `n x n` matrices.
    static func product<Scalar: BLASScalar>(
        _ a: [Scalar], _ transposeA: Bool, _ b: [Scalar], _ transposeB: Bool, order n: Int,
        alpha: Scalar = 1, backend: Backend
    ) -> [Scalar] {
        var c = [Scalar](repeating: 0, count: n * n)
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    multiply(rows: n, columns: n, inner: n, alpha: alpha, a: a.baseAddress!, lda: n,
                             transposeA: transposeA, b: b.baseAddress!, ldb: n, transposeB: transposeB,
                             beta: 0, c: c.baseAddress!, ldc: n, backend: backend)
                }
            }
        }
        return c
    }

    static func transpose<Scalar: BLASScalar>(_ a: [Scalar], order n: Int) -> [Scalar] {
        var t = a
        for i in 0..<n { for j in 0..<n { t[i * n + j] = a[j * n + i] } }
        return t
    }

    // MARK: The N x D parts

    /// `out[i][j] = a[i][j] - row[j]` for `rows` rows of `columns` columns
    /// (`out` may be `a`).
    static func subtractRow<Scalar: BLASScalar>(
        _ a: UnsafePointer<Scalar>, row: UnsafePointer<Scalar>, rows: Int, columns: Int,
        into out: UnsafeMutablePointer<Scalar>
    ) {
        for i in 0..<rows { for j in 0..<columns { out[i * columns + j] = a[i * columns + j] - row[j] } }
    }

    /// The column means of a row-major `rows x columns` matrix into `mean`
    /// and the matrix centred by them into `centred`, shifted by the first
    /// row: `t = x - x[0]`, `mean = x[0] + Σt / rows`, `centred = t - Σt / rows`,
    /// so that a constant column has its value as mean and exact zeros as
    /// deviations. The sums are ``columnSums(_:rows:columns:into:ones:backend:)``.
    static func centre<Scalar: BLASScalar>(
        _ x: UnsafePointer<Scalar>, rows: Int, columns: Int, mean: UnsafeMutablePointer<Scalar>,
        centred: UnsafeMutablePointer<Scalar>, ones: UnsafePointer<Scalar>, backend: Backend
    ) {
        subtractRow(x, row: x, rows: rows, columns: columns, into: centred)
        // `mean` holds the shift `Σt / rows` until the last line.
        columnSums(centred, rows: rows, columns: columns, into: mean, ones: ones, backend: backend)
        for j in 0..<columns { mean[j] /= Scalar(rows) }
        subtractRow(centred, row: mean, rows: rows, columns: columns, into: centred)
        for j in 0..<columns { mean[j] = x[j] + mean[j] }
    }

    /// The column sums of a row-major `rows x columns` matrix:
    /// `gemv(Trans, A, ones)` (`ones` holds `rows` ones) or a loop.
    static func columnSums<Scalar: BLASScalar>(
        _ a: UnsafePointer<Scalar>, rows: Int, columns: Int, into sums: UnsafeMutablePointer<Scalar>,
        ones: UnsafePointer<Scalar>, backend: Backend
    ) {
        switch backend {
        case .blas:
            Scalar.gemvTransposed(rows: rows, columns: columns, a: a, x: ones, beta: 0, y: sums)
        case .naive:
            for j in 0..<columns {
                var sum: Scalar = 0
                for i in 0..<rows { sum += a[i * columns + j] }
                sums[j] = sum
            }
        }
    }

    /// Group `group`'s covariance `Xc_gᵀ Xc_g / divisor`, `groupSize x
    /// groupSize`, from the centred `rows x columns` matrix: `?syrk` (upper,
    /// then mirrored) or a triple loop.
    static func groupCovariance<Scalar: BLASScalar>(
        _ centred: UnsafePointer<Scalar>, rows: Int, columns: Int, group: Int, groupSize m: Int,
        divisor: Scalar, backend: Backend
    ) -> [Scalar] {
        var sigma = [Scalar](repeating: 0, count: m * m)
        switch backend {
        case .blas:
            // Each chunk's `?syrk` into its own partial, then the partials
            // added in chunk order: fixed by the shape, whoever runs them.
            let split = rowSplit(rows: rows, columns: columns, backend: backend, of: Scalar.self)
            var partials = [Scalar](repeating: 0, count: split.chunks * m * m)
            partials.withUnsafeMutableBufferPointer { p in
                Threading.run(split, CovariancePass(
                    split: split, x: centred + group * m, columns: columns, m: m, alpha: 1 / divisor,
                    partials: p.baseAddress!))
                sigma.withUnsafeMutableBufferPointer { sum in
                    Threading.sumPartials(chunks: split.chunks, first: p.baseAddress!, stride: m * m,
                                          count: m * m, into: sum.baseAddress!)
                }
            }
        case .naive:
            for i in 0..<m {
                for j in i..<m {
                    var sum: Scalar = 0
                    for k in 0..<rows { sum += centred[k * columns + group * m + i] * centred[k * columns + group * m + j] }
                    sigma[i * m + j] = sum / divisor
                }
            }
        }
        for i in 0..<m { for j in 0..<i { sigma[i * m + j] = sigma[j * m + i] } }
        return sigma
    }

    /// The covariance's phase: each chunk of rows its `?syrk` into its own
    /// `m x m` partial.
    struct CovariancePass<Scalar: BLASScalar>: Threading.Pass {
        let split: Threading.Split
        let x: UnsafePointer<Scalar>
        let columns, m: Int
        let alpha: Scalar
        let partials: UnsafeMutablePointer<Scalar>

        init(split: Threading.Split, x: UnsafePointer<Scalar>, columns: Int, m: Int, alpha: Scalar,
             partials: UnsafeMutablePointer<Scalar>) {
            self.split = split; self.x = x; self.columns = columns; self.m = m; self.alpha = alpha
            self.partials = partials
        }

        func run(chunk: Int, worker: Int) {
            let range = split.rows(ofChunk: chunk)
            Scalar.syrk(order: m, inner: range.count, alpha: alpha,
                        a: x + range.lowerBound * columns, lda: columns, beta: 0,
                        c: partials + chunk * m * m, ldc: m)
        }
    }

    /// `out_g = alpha * A_g op(W) (+ out_g when accumulating)` for the columns
    /// of group `group` of the `rows x columns` matrices `a` and `out`, with
    /// the `groupSize x groupSize` matrix `w` (transposed when asked).
    /// Each chunk of rows (``rowSplit(rows:columns:backend:of:)``) is one product
    /// of its own, on NormKit's threads.
    static func applyGroup<Scalar: BLASScalar>(
        _ a: UnsafePointer<Scalar>, _ w: [Scalar], transposed: Bool = false, rows: Int, columns: Int,
        group: Int, groupSize m: Int, into out: UnsafeMutablePointer<Scalar>, alpha: Scalar = 1,
        accumulate: Bool = false, backend: Backend
    ) {
        let split = rowSplit(rows: rows, columns: columns, backend: backend, of: Scalar.self)
        w.withUnsafeBufferPointer { w in
            Threading.run(split, ApplyPass(
                split: split, a: a + group * m, w: w.baseAddress!, c: out + group * m, columns: columns, m: m,
                alpha: alpha, transposed: transposed, beta: accumulate ? Scalar(1) : 0, backend: backend))
        }
    }

    /// `applyGroup`'s phase: each chunk of rows one product of its own.
    struct ApplyPass<Scalar: BLASScalar>: Threading.Pass {
        let split: Threading.Split
        let a, w: UnsafePointer<Scalar>
        let c: UnsafeMutablePointer<Scalar>
        let columns, m: Int
        let alpha: Scalar
        let transposed: Bool
        let beta: Scalar
        let backend: Backend

        init(split: Threading.Split, a: UnsafePointer<Scalar>, w: UnsafePointer<Scalar>,
             c: UnsafeMutablePointer<Scalar>, columns: Int, m: Int, alpha: Scalar, transposed: Bool,
             beta: Scalar, backend: Backend) {
            self.split = split; self.a = a; self.w = w; self.c = c; self.columns = columns; self.m = m
            self.alpha = alpha; self.transposed = transposed; self.beta = beta; self.backend = backend
        }

        func run(chunk: Int, worker: Int) {
            let range = split.rows(ofChunk: chunk)
            let offset = range.lowerBound * columns
            multiply(rows: range.count, columns: m, inner: m, alpha: alpha, a: a + offset,
                     lda: columns, transposeA: false, b: w, ldb: m,
                     transposeB: transposed, beta: beta, c: c + offset, ldc: columns,
                     backend: backend)
        }
    }

    /// The chunks of rows the `N x D` products split into: fixed by the shape
    /// (``Threading/split(outer:scalarsPerRow:of:backend:)``, one chunk on the
    /// naive backend), so the results are the same bits at every thread
    /// count, with OpenBLAS on one thread inside each (the caller's
    /// ``Workspace`` regions, as for every layer).
    static func rowSplit<Scalar: BLASScalar>(
        rows: Int, columns: Int, backend: Backend, of _: Scalar.Type
    ) -> Threading.Split {
        Threading.split(outer: rows, scalarsPerRow: columns, of: Scalar.self, backend: backend)
    }

    /// `A_gᵀ B_g`, `groupSize x groupSize`, for the columns of group `group`
    /// of two `rows x columns` matrices.
    static func groupCrossProduct<Scalar: BLASScalar>(
        _ a: UnsafePointer<Scalar>, _ b: UnsafePointer<Scalar>, rows: Int, columns: Int, group: Int,
        groupSize m: Int, backend: Backend
    ) -> [Scalar] {
        // Each chunk of rows its partial product, added in chunk order.
        let split = rowSplit(rows: rows, columns: columns, backend: backend, of: Scalar.self)
        var partials = [Scalar](repeating: 0, count: split.chunks * m * m)
        var c = [Scalar](repeating: 0, count: m * m)
        partials.withUnsafeMutableBufferPointer { p in
            Threading.run(split, CrossProductPass(
                split: split, a: a + group * m, b: b + group * m, columns: columns, m: m,
                partials: p.baseAddress!, backend: backend))
            c.withUnsafeMutableBufferPointer { sum in
                Threading.sumPartials(chunks: split.chunks, first: p.baseAddress!, stride: m * m,
                                      count: m * m, into: sum.baseAddress!)
            }
        }
        return c
    }

    /// `groupCrossProduct`'s phase: each chunk of rows its partial `A_gᵀ B_g`
    /// into its own `m x m` partial.
    struct CrossProductPass<Scalar: BLASScalar>: Threading.Pass {
        let split: Threading.Split
        let a, b: UnsafePointer<Scalar>
        let columns, m: Int
        let partials: UnsafeMutablePointer<Scalar>
        let backend: Backend

        init(split: Threading.Split, a: UnsafePointer<Scalar>, b: UnsafePointer<Scalar>, columns: Int, m: Int,
             partials: UnsafeMutablePointer<Scalar>, backend: Backend) {
            self.split = split; self.a = a; self.b = b; self.columns = columns; self.m = m
            self.partials = partials; self.backend = backend
        }

        func run(chunk: Int, worker: Int) {
            let range = split.rows(ofChunk: chunk)
            let offset = range.lowerBound * columns
            multiply(rows: m, columns: m, inner: range.count, a: a + offset, lda: columns,
                     transposeA: true, b: b + offset, ldb: columns, transposeB: false,
                     beta: 0, c: partials + chunk * m * m, ldc: m, backend: backend)
        }
    }

    // MARK: Factorizations

    /// The eigenvalues, ascending, and the eigenvectors (columns) of the
    /// symmetric `n x n` matrix `a`: LAPACK's `?syevd`, or cyclic Jacobi sweeps.
    /// - Throws: ``NormError/lapackFailure(routine:info:)``.
    static func eigen<Scalar: BLASScalar>(
        _ a: [Scalar], order n: Int, backend: Backend
    ) throws(NormError) -> (values: [Scalar], vectors: [Scalar]) {
        switch backend {
        case .blas:
            var vectors = a, values = [Scalar](repeating: 0, count: n)
            let info = vectors.withUnsafeMutableBufferPointer { v in
                values.withUnsafeMutableBufferPointer { w in
                    Scalar.syevd(order: n, a: v.baseAddress!, lda: n, values: w.baseAddress!)
                }
            }
            guard info == 0 else { throw .lapackFailure(routine: "syevd", info: info) }
            return (values, vectors)
        case .naive:
            return jacobiEigen(a, order: n)
        }
    }

    /// Cyclic Jacobi (Golub and Van Loan, Algorithm 8.5.3): rotations that zero
    /// each off-diagonal entry in turn, sweep after sweep, until the
    /// off-diagonal part is below the rounding of the matrix's norm.
    static func jacobiEigen<Scalar: BLASScalar>(
        _ input: [Scalar], order n: Int
    ) -> (values: [Scalar], vectors: [Scalar]) {
        var a = input
        var v = [Scalar](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        var norm: Scalar = 0
        for x in a { norm += x * x }
        let tolerance = Scalar.ulpOfOne * Scalar.ulpOfOne * norm
        for _ in 0..<100 {
            var off: Scalar = 0
            for i in 0..<n { for j in 0..<n where j != i { off += a[i * n + j] * a[i * n + j] } }
            if !(off > tolerance) { break }
            for p in 0..<n {
                for q in (p + 1)..<max(p + 1, n) where a[p * n + q] != 0 {
                    let tau = (a[q * n + q] - a[p * n + p]) / (2 * a[p * n + q])
                    let t = (tau >= 0 ? 1 : -1) / (abs(tau) + (1 + tau * tau).squareRoot())
                    let c = 1 / (1 + t * t).squareRoot(), s = t * c
                    for k in 0..<n {
                        let akp = a[k * n + p], akq = a[k * n + q]
                        a[k * n + p] = c * akp - s * akq
                        a[k * n + q] = s * akp + c * akq
                    }
                    for k in 0..<n {
                        let apk = a[p * n + k], aqk = a[q * n + k]
                        a[p * n + k] = c * apk - s * aqk
                        a[q * n + k] = s * apk + c * aqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        let order = (0..<n).sorted { a[$0 * n + $0] < a[$1 * n + $1] }
        var values = [Scalar](repeating: 0, count: n), vectors = v
        for (column, source) in order.enumerated() {
            values[column] = a[source * n + source]
            for k in 0..<n { vectors[k * n + column] = v[k * n + source] }
        }
        return (values, vectors)
    }

    /// The lower Cholesky factor of the symmetric `n x n` matrix `a` (zeros
    /// above the diagonal): LAPACK's `?potrf`, or the textbook column by column.
    /// - Throws: ``NormError/notPositiveDefinite(group:minor:)``,
    ///   ``NormError/lapackFailure(routine:info:)``.
    static func cholesky<Scalar: BLASScalar>(
        _ a: [Scalar], order n: Int, group: Int, backend: Backend
    ) throws(NormError) -> [Scalar] {
        var l = a
        switch backend {
        case .blas:
            let info = l.withUnsafeMutableBufferPointer { Scalar.potrf(order: n, a: $0.baseAddress!, lda: n) }
            if info > 0 { throw .notPositiveDefinite(group: group, minor: info) }
            guard info == 0 else { throw .lapackFailure(routine: "potrf", info: info) }
        case .naive:
            for j in 0..<n {
                var d = a[j * n + j]
                for k in 0..<j { d -= l[j * n + k] * l[j * n + k] }
                guard d > 0 else { throw .notPositiveDefinite(group: group, minor: j + 1) }
                let root = d.squareRoot()
                l[j * n + j] = root
                for i in (j + 1)..<max(j + 1, n) {
                    var x = a[i * n + j]
                    for k in 0..<j { x -= l[i * n + k] * l[j * n + k] }
                    l[i * n + j] = x / root
                }
            }
        }
        for i in 0..<n { for j in (i + 1)..<max(i + 1, n) { l[i * n + j] = 0 } }
        return l
    }

    /// The inverse of the lower-triangular `n x n` matrix `l`: LAPACK's
    /// `?trtri`, or forward substitution.
    /// - Throws: ``NormError/lapackFailure(routine:info:)`` for a zero pivot.
    static func lowerInverse<Scalar: BLASScalar>(
        _ l: [Scalar], order n: Int, backend: Backend
    ) throws(NormError) -> [Scalar] {
        var m = l
        switch backend {
        case .blas:
            let info = m.withUnsafeMutableBufferPointer { Scalar.trtri(order: n, a: $0.baseAddress!, lda: n) }
            guard info == 0 else { throw .lapackFailure(routine: "trtri", info: info) }
        case .naive:
            m = [Scalar](repeating: 0, count: n * n)
            for j in 0..<n {
                m[j * n + j] = 1 / l[j * n + j]
                for i in (j + 1)..<max(j + 1, n) {
                    var sum: Scalar = 0
                    for k in j..<i { sum += l[i * n + k] * m[k * n + j] }
                    m[i * n + j] = -sum / l[i * n + i]
                }
            }
        }
        for i in 0..<n { for j in (i + 1)..<max(i + 1, n) { m[i * n + j] = 0 } }
        return m
    }

    // MARK: Whitening matrices and their adjoints

    /// What a group's whitening matrix was computed from, kept for backward.
    struct Factors<Scalar: BLASScalar>: Sendable {
        /// `W`, `m x m`: `xhat = Xc W`.
        var whitening: [Scalar]
        /// `.eigen`: the eigenvalues of the covariance (ascending) and its
        /// eigenvectors (columns).
        var values: [Scalar] = []
        var vectors: [Scalar] = []
        /// `.cholesky`: `L` of `Sigma + eps I = L Lᵀ`, and `L⁻¹`.
        var lower: [Scalar] = []
        var lowerInverse: [Scalar] = []
        /// `.newtonSchulz`: the normalized `S / tr(S)`, `tr(S)` and the
        /// iterations taken (at most the method's, fewer once converged);
        /// backward recomputes the iterates from them (the same products, so
        /// the same bits) rather than forward keeping them.
        var normalized: [Scalar] = []
        var trace: Scalar = 0
        var iterations = 0

        /// Whether the group's whitening is well defined and backward's
        /// adjoint stays finite. For `.eigen`: the smallest eigenvalue plus
        /// `epsilon` must exceed the eigensolver's accuracy, `m · ulp` times the
        /// largest eigenvalue (below it the sign and size of an eigenvalue are
        /// round-off, and the two backends' eigensolvers round a zero one
        /// differently), and the largest divided difference, `1 / (2 a³)` with
        /// `a = sqrt(l_min + eps)`, must be finite. The other methods' factors
        /// are checked through `W`.
        func isDifferentiable(epsilon: Scalar) -> Bool {
            guard let smallest = values.min(), let largest = values.max() else { return true }
            let a = (smallest + epsilon).squareRoot()
            return WhiteningKernels.exceedsRoundOff(smallest, epsilon: epsilon, largest: largest,
                                                    order: values.count)
                && (1 / (2 * a * a * a)).isFinite
        }
    }

    /// Whether the eigenvalue `value` plus `epsilon` exceeds the eigensolver's
    /// accuracy for a matrix of `order` whose largest eigenvalue is `largest`:
    /// `order · ulp · largest` (LAPACK's rank tolerance). At or below it the
    /// sign and size of an eigenvalue are round-off, so it counts as zero.
    static func exceedsRoundOff<Scalar: BLASScalar>(_ value: Scalar, epsilon: Scalar, largest: Scalar,
                                                    order: Int) -> Bool {
        value + epsilon > Scalar(order) * Scalar.ulpOfOne * largest
    }

    /// The most Newton–Schulz iterations ``WhiteningMethod/newtonSchulz(iterations:)``
    /// takes: convergence is quadratic once close, so more only lets
    /// round-off grow (IterNorm uses 5).
    static let maximumNewtonSchulzIterations = 64

    /// The Newton–Schulz iterates `P_0 = I`, `P_(k+1) = 1.5 P_k - 0.5 P_k³ SN`
    /// of the `n x n` normalized covariance `sn`, `P_0 ... P_K`, or only
    /// `P_K` (in a one-element array) unless `keepingAll`, and `K`, at most
    /// `iterations`.
    ///
    /// Each step's residual `r_k = ‖P_k³ SN - P_k‖_F / ‖P_k‖_F` (zero exactly
    /// when `P_k² SN = I`) decreases in exact arithmetic, quadratically once
    /// small; in floating point the uncoupled iteration is unstable, and past
    /// convergence round-off grows geometrically (in Double, after about 17
    /// iterations on well-conditioned data). So the iteration stops one step
    /// after `r_k` falls to `sqrt(ulp)` (that step brings it to round-off),
    /// and a residual above `sqrt(ulp)` and ten times the smallest so far is
    /// divergence:
    /// - Throws: ``NormError/whiteningDiverged(group:iteration:)``.
    static func newtonSchulzIterates<Scalar: BLASScalar>(
        _ sn: [Scalar], order n: Int, iterations: Int, group: Int, keepingAll: Bool, backend: Backend
    ) throws(NormError) -> (iterates: [[Scalar]], taken: Int) {
        var p = [Scalar](repeating: 0, count: n * n)
        for i in 0..<n { p[i * n + i] = 1 }
        var iterates = [p], taken = 0
        var smallest = Scalar.infinity
        let floor = Scalar.ulpOfOne.squareRoot()
        for step in 0...iterations {
            let p3s = product(product(product(p, false, p, false, order: n, backend: backend),
                                      false, p, false, order: n, backend: backend),
                              false, sn, false, order: n, backend: backend)
            var residual: Scalar = 0, size: Scalar = 0
            for k in 0..<(n * n) {
                residual += (p3s[k] - p[k]) * (p3s[k] - p[k])
                size += p[k] * p[k]
            }
            let r = (residual / size).squareRoot()
            guard r.isFinite, !(r > floor && r > 10 * smallest) else {
                throw .whiteningDiverged(group: group, iteration: step)
            }
            smallest = min(smallest, r)
            if step == iterations { break }
            for k in 0..<(n * n) { p[k] = 1.5 * p[k] - 0.5 * p3s[k] }
            if keepingAll { iterates.append(p) } else { iterates[0] = p }
            taken += 1
            if r <= floor { break }   // converged: this step reached round-off
        }
        return (iterates, taken)
    }

    /// The whitening matrix of a group's `m x m` covariance `sigma` by `method`.
    /// - Throws: ``NormError/notPositiveDefinite(group:minor:)``,
    ///   ``NormError/lapackFailure(routine:info:)``.
    static func whiten<Scalar: BLASScalar>(
        covariance sigma: [Scalar], order n: Int, method: WhiteningMethod, epsilon: Scalar,
        group: Int, backend: Backend
    ) throws(NormError) -> Factors<Scalar> {
        switch method {
        case .eigen:
            let (values, vectors) = try eigen(sigma, order: n, backend: backend)
            // W = U diag(1/sqrt(l + eps)) Uᵀ.
            var scaled = vectors
            for i in 0..<n { for j in 0..<n { scaled[i * n + j] *= 1 / (values[j] + epsilon).squareRoot() } }
            let w = product(scaled, false, vectors, true, order: n, backend: backend)
            return Factors(whitening: w, values: values, vectors: vectors)
        case .cholesky:
            var s = sigma
            for i in 0..<n { s[i * n + i] += epsilon }
            let l = try cholesky(s, order: n, group: group, backend: backend)
            let m = try lowerInverse(l, order: n, backend: backend)
            return Factors(whitening: transpose(m, order: n), lower: l, lowerInverse: m)
        case .newtonSchulz(let iterations):
            var s = sigma
            for i in 0..<n { s[i * n + i] += epsilon }
            var trace: Scalar = 0
            for i in 0..<n { trace += s[i * n + i] }
            let normalized = s.map { $0 / trace }
            let (last, taken) = try newtonSchulzIterates(normalized, order: n, iterations: iterations,
                                                         group: group, keepingAll: false, backend: backend)
            let scale = 1 / trace.squareRoot()
            return Factors(whitening: last[0].map { $0 * scale }, normalized: normalized, trace: trace,
                           iterations: taken)
        }
    }

    /// The adjoint of ``whiten(covariance:order:method:epsilon:group:backend:)``:
    /// from `g = dL/dW` the `m x m` matrix `D` with `dL = <D, dSigma>` for every
    /// symmetric `dSigma` (only `D + Dᵀ` matters to the caller).
    ///
    /// - `.eigen`: Daleckii–Krein, `D = U (F ∘ (Uᵀ g U)) Uᵀ` with the divided
    ///   differences of `f(l) = (l + eps)^(-1/2)` written as
    ///   `F_ij = -1 / (a_i a_j (a_i + a_j))`, `a = sqrt(l + eps)`, which is also
    ///   `f'` on the diagonal and stays finite for equal eigenvalues.
    /// - `.cholesky`: `W = L⁻ᵀ`, so `Lbar = tril(-L⁻ᵀ gᵀ L⁻ᵀ)`, then Murray's
    ///   adjoint of the factorization, `D = L⁻ᵀ Φ(Lᵀ Lbar) L⁻¹` (`Φ`: the lower
    ///   triangle with the diagonal halved).
    /// - `.newtonSchulz`: each iteration `P' = 1.5 P - 0.5 P³ SN` in reverse,
    ///   then `SN = S / tr(S)` and `W = P_T / sqrt(tr(S))`.
    /// - Throws: ``NormError/whiteningDiverged(group:iteration:)`` only as
    ///   forward would have (the recomputed iterates are forward's).
    static func covarianceAdjoint<Scalar: BLASScalar>(
        _ g: [Scalar], factors f: Factors<Scalar>, order n: Int, method: WhiteningMethod,
        epsilon: Scalar, group: Int, backend: Backend
    ) throws(NormError) -> [Scalar] {
        switch method {
        case .eigen:
            var inner = product(product(f.vectors, true, g, false, order: n, backend: backend),
                                false, f.vectors, false, order: n, backend: backend)
            let roots = f.values.map { ($0 + epsilon).squareRoot() }
            for i in 0..<n {
                for j in 0..<n { inner[i * n + j] *= -1 / (roots[i] * roots[j] * (roots[i] + roots[j])) }
            }
            return product(product(f.vectors, false, inner, false, order: n, backend: backend),
                           false, f.vectors, true, order: n, backend: backend)
        case .cholesky:
            // dL/dM = gᵀ (W = Mᵀ); dL/dL = -Mᵀ gᵀ Mᵀ, restricted to the lower triangle.
            var lowerBar = product(product(f.lowerInverse, true, g, true, order: n, backend: backend),
                                   false, f.lowerInverse, true, order: n, alpha: -1, backend: backend)
            for i in 0..<n { for j in (i + 1)..<max(i + 1, n) { lowerBar[i * n + j] = 0 } }
            var phi = product(f.lower, true, lowerBar, false, order: n, backend: backend)
            for i in 0..<n {
                phi[i * n + i] *= 0.5
                for j in (i + 1)..<max(i + 1, n) { phi[i * n + j] = 0 }
            }
            return product(product(f.lowerInverse, true, phi, false, order: n, backend: backend),
                           false, f.lowerInverse, false, order: n, backend: backend)
        case .newtonSchulz:
            let t = f.trace, root = t.squareRoot()
            let iterates = try newtonSchulzIterates(f.normalized, order: n, iterations: f.iterations,
                                                    group: group, keepingAll: true, backend: backend).iterates
            var pBar = g.map { $0 / root }
            var tBar: Scalar = 0
            let last = iterates[iterates.count - 1]
            for k in 0..<(n * n) { tBar += g[k] * last[k] }
            tBar *= -0.5 / (t * root)
            var snBar = [Scalar](repeating: 0, count: n * n)
            let sn = f.normalized
            for step in stride(from: iterates.count - 2, through: 0, by: -1) {
                let p = iterates[step]
                let p2 = product(p, false, p, false, order: n, backend: backend)
                let p3 = product(p2, false, p, false, order: n, backend: backend)
                let ps = product(p, false, sn, false, order: n, backend: backend)
                let p2s = product(p2, false, sn, false, order: n, backend: backend)
                let b = pBar
                // d(P³ SN) = dP P² SN + P dP P SN + P² dP SN + P³ dSN.
                let t1 = product(b, false, p2s, true, order: n, backend: backend)
                let t2 = product(product(p, true, b, false, order: n, backend: backend),
                                 false, ps, true, order: n, backend: backend)
                let t3 = product(product(p2, true, b, false, order: n, backend: backend),
                                 false, sn, true, order: n, backend: backend)
                let s4 = product(p3, true, b, false, order: n, backend: backend)
                for k in 0..<(n * n) {
                    pBar[k] = 1.5 * b[k] - 0.5 * (t1[k] + t2[k] + t3[k])
                    snBar[k] -= 0.5 * s4[k]
                }
            }
            // SN = S / t and t = tr(S): dS = SNbar / t + (tBar - <SNbar, S> / t²) I.
            var inner: Scalar = 0
            for k in 0..<(n * n) { inner += snBar[k] * sn[k] }
            tBar -= inner / t   // <SNbar, S> / t² = <SNbar, SN> / t
            var d = snBar.map { $0 / t }
            for i in 0..<n { d[i * n + i] += tBar }
            return d
        }
    }
}

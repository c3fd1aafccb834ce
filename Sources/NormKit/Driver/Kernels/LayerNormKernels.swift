/// The kernels of layer normalization over an `N x D` row-major matrix, where
/// every statistic belongs to a row (a sample) and runs over its `D` features.
///
/// Forward, rows of at least ``rowKernelMinimumColumns`` columns go one at a
/// time (``forwardRowsBLAS``): two `dot`s and two C passes while the row is in
/// L1. Shorter rows, and the backward, work on row blocks sized so that the
/// block's input and output stay in L2: the statistics (`gemv(NoTrans, X_b, 1)`)
/// and the normalize pass then share one read of the input from memory (8 bytes
/// per Float element forward, 12 backward). The per-row forward's and the
/// backward's elementwise passes are C (`CNormKitPasses`, through
/// ``BLASScalar``'s SPI).
///
/// A block-sized intermediate that a gemv reduces (`dy ∘ xhat` backward, the
/// squares of RMSNorm's forward) is written into the output's block, which the
/// last pass then overwrites, whenever the pass that writes it is the first to
/// read the block from memory: that pass then streams the inputs and the
/// output's lines together, and a separate scratch block would cost one more
/// line written and read back per element. Measured against a scratch block
/// (normbench, one thread, 32768x1024 and 8x256x56x56, three alternating runs):
/// Float backward 9-20% faster, RMSNorm forward 8-17% faster, Double RMSNorm
/// and GroupNorm backward 6-10% faster, Double LayerNorm backward 5-12% slower.
/// After a mean gemv has read the block first (LayerNorm's and GroupNorm's
/// forward) the output block measured 9% slower, so the centred statistics
/// keep a scratch block. An output block that served as scratch is not written
/// with streaming stores (its lines are in cache already); keeping it free of
/// scratch so that it could be streamed measured 10% slower for Float
/// backward at 32768x1024 (5-8% faster for Double), so it stays as it is.
/// The naive kernels are the textbook's loops, with the statistics of all rows
/// computed before the normalize pass.
@usableFromInline
enum LayerNormKernels {
    // MARK: Forward

    /// Scratch scalars ``forwardBLAS`` needs beyond `max(blockRows, columns)`
    /// ones. One row at a time (at least ``rowKernelMinimumColumns`` columns):
    /// one row of centred values when `centred`, with a page of slack to place
    /// it (``rowScratch(_:input:)``), none otherwise. In row blocks
    /// (``rowStatisticsBLAS``): the block of squares when `centred` (otherwise
    /// they go into the output), then one per row of a block.
    @inlinable
    static func forwardScratch<Scalar: BLASScalar>(
        blockRows: Int, columns: Int, rowStatistics: RowStatistics, separateSquares: Bool = false,
        of _: Scalar.Type
    ) -> Int {
        let centred = rowStatistics.centred
        if columns >= rowKernelMinimumColumns {
            return centred ? columns + Workspace<Scalar>.pageScalars : 0
        }
        return BlockScratch<Scalar>.count(blockRows: blockRows, columns: columns,
                                          squares: centred || separateSquares)
    }

    /// The scratch of ``rowStatisticsBLAS``'s row blocks, named from its
    /// first scalar: the block of squares (when they do not go into the
    /// output block), then one variance per row.
    @usableFromInline
    struct BlockScratch<Scalar: BLASScalar> {
        /// `blockRows x columns` squares, or `nil` when the caller's output
        /// block holds them.
        @usableFromInline let squares: UnsafeMutablePointer<Scalar>?
        /// One variance per row of a block.
        @usableFromInline let variance: UnsafeMutablePointer<Scalar>

        /// The scalars the regions take.
        @inlinable
        static func count(blockRows: Int, columns: Int, squares: Bool) -> Int {
            blockRows + (squares ? blockRows * columns : 0)
        }

        @inlinable
        init(_ scratch: UnsafeMutablePointer<Scalar>, blockRows: Int, columns: Int, squares: Bool) {
            self.squares = squares ? scratch : nil
            variance = scratch + (squares ? blockRows * columns : 0)
        }
    }

    /// The row blocks' working set in blocks: input and output, and the squares
    /// when `centred`.
    @inlinable
    static func forwardBuffers(rowStatistics: RowStatistics) -> Int { rowStatistics.centred ? 3 : 2 }

    /// The statistics of `rows` rows of `columns` values, one block of rows
    /// that stays in L2: `mean = gemv(NoTrans, X_b, 1) / D` (zeros when not
    /// `centred`, for RMSNorm), the centred squares into `squares`, and
    /// `invstd = 1 / sqrt(gemv(NoTrans, S_b, 1) / D + epsilon)`. A row whose
    /// variance is within the error of that mean (a constant row, say) is
    /// recomputed exactly (``Moments/exact(_:count:stride:scratch:ones:)``).
    /// `ones` holds at least `max(rows, columns)` ones when `centred`.
    ///
    /// - Parameters:
    ///   - squares: `rows x columns` scalars to overwrite (a scratch block, or the
    ///     caller's output block, which its normalize pass writes next).
    ///   - variance: `rows` scalars of scratch.
    /// - Returns: the first row (counted from 0 in this block) whose statistics
    ///   are not finite, or `nil`.
    @inlinable
    static func rowStatisticsBLAS<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int, epsilon: Scalar, rowStatistics: RowStatistics,
        mean: UnsafeMutablePointer<Scalar>, invstd: UnsafeMutablePointer<Scalar>,
        squares block: UnsafeMutablePointer<Scalar>, variance: UnsafeMutablePointer<Scalar>,
        ones: UnsafePointer<Scalar>
    ) -> Int? {
        let centred = rowStatistics.centred
        let inverseCount = 1 / Scalar(columns)
        if centred {
            Scalar.gemvRows(rows: rows, columns: columns, alpha: inverseCount, a: x, x: ones,
                            beta: 0, y: mean)
        } else {
            mean.update(repeating: 0, count: rows)
        }
        for i in 0..<rows {
            let row = x + i * columns, out = block + i * columns, m = mean[i]
            for j in 0..<columns {
                let d = row[j] - m
                out[j] = d * d
            }
        }
        Scalar.gemvRows(rows: rows, columns: columns, alpha: inverseCount, a: block, x: ones,
                        beta: 0, y: variance)
        for i in 0..<rows where centred
            && Moments.isDegenerate(mean: mean[i], m2: variance[i] * Scalar(columns), count: columns) {
            // A constant (or nearly constant) row: the exact shifted two-pass,
            // in this row of the squares block, which its gemv has consumed.
            let (m, m2) = Moments.exact(x + i * columns, count: columns, stride: 1,
                                        scratch: block + i * columns, ones: ones)
            mean[i] = m
            variance[i] = m2 * inverseCount
        }
        for i in 0..<rows {
            let s = 1 / (variance[i] + epsilon).squareRoot()
            guard mean[i].isFinite, s.isFinite, variance[i].isFinite else { return i }
            invstd[i] = s
        }
        return nil
    }

    /// The textbook statistics of `rows` rows, shifted by each row's first
    /// value `k` as ``rowStatisticsBLAS`` is: a loop for the shifted mean
    /// `m' = Σ(x - k) / D` (skipped when not `centred`, where `k = m' = 0`) and
    /// a loop for `Σ((x - k) - m')²`; `mean = k + m'`.
    /// - Returns: the first row whose statistics are not finite, or `nil`.
    @inlinable
    static func rowStatisticsNaive<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int, epsilon: Scalar, rowStatistics: RowStatistics,
        mean: UnsafeMutablePointer<Scalar>, invstd: UnsafeMutablePointer<Scalar>
    ) -> Int? {
        let centred = rowStatistics.centred
        let d = Scalar(columns)
        for i in 0..<rows {
            let row = x + i * columns
            let k: Scalar = centred ? row[0] : 0
            var m: Scalar = 0
            if centred {
                for j in 0..<columns { m += row[j] - k }
                m /= d
            }
            var squares: Scalar = 0
            for j in 0..<columns {
                let centredValue = (row[j] - k) - m
                squares += centredValue * centredValue
            }
            let variance = squares / d
            let s = 1 / (variance + epsilon).squareRoot()
            let rowMean = k + m
            guard rowMean.isFinite, variance.isFinite, s.isFinite else { return i }
            mean[i] = rowMean
            invstd[i] = s
        }
        return nil
    }

    /// Rows of at least this many columns take the per-row kernels
    /// (``forwardRowsBLAS``); shorter rows the row blocks, whose one `gemv`
    /// per block costs less than two `dot` calls per row when a row is short.
    @inlinable
    static var rowKernelMinimumColumns: Int { 64 }

    /// Backward, rows of at least this many columns take the per-row kernels
    /// (two `dot` calls per row: slower than a block's `gemv` at 64 columns,
    /// faster at 128; measured on the Intel Xeon).
    @inlinable
    static var rowBackwardMinimumColumns: Int { 128 }

    /// The shortest rows whose backward adds each row to the column sums
    /// `dbeta`, `dgamma` with `axpy` while it is in L1, rather than one
    /// `gemv(Trans)` per block: ``BatchNormKernels/rowMomentsMinimumColumns``,
    /// BatchNorm's rule for the same sums. OpenBLAS's Prescott `sgemv(Trans)`
    /// reads a block from L2 at about a third of the speed of its per-row
    /// `saxpy` (the Architecture article has the measurements).
    @inlinable
    static var rowSumsMinimumColumns: Int { BatchNormKernels.rowMomentsMinimumColumns }

    /// How many rows ahead the per-row backward asks for `dy` and `x` (and a
    /// residual form's sum gradient) when it streams: the row about
    /// ``prefetchBytesAhead`` on, and at least the next.
    @inlinable
    static func prefetchRows<Scalar>(columns: Int, of _: Scalar.Type) -> Int {
        max(1, prefetchBytesAhead / max(1, columns * MemoryLayout<Scalar>.stride))
    }

    /// How far ahead, in bytes of one stream, the per-row backward asks for
    /// its rows: far enough that a row has arrived when its product pass
    /// starts, near enough that the rows asked for stay in L2 (the
    /// Performance article has the measurements).
    @inlinable
    static var prefetchBytesAhead: Int { 8192 }

    /// ``forwardRowsBLAS`` when a row has at least ``rowKernelMinimumColumns``
    /// columns, ``forwardBlocksBLAS`` otherwise. `scratch` holds
    /// ``forwardScratch(blockRows:columns:rowStatistics:)`` scalars, sized for the path it takes.
    ///
    /// - Returns: the first row whose statistics are not finite, or `nil`. Rows
    ///   before it have been written.
    @inlinable
    static func forwardBLAS<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int, blockRows: Int, epsilon: Scalar,
        rowStatistics: RowStatistics, gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>,
        mean: UnsafeMutablePointer<Scalar>, invstd: UnsafeMutablePointer<Scalar>,
        y: UnsafeMutablePointer<Scalar>, streaming: Bool, separateSquares: Bool = false,
        copy: RowCopy<Scalar>? = nil,
        ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>
    ) -> Int? {
        let centred = rowStatistics.centred
        if columns >= rowKernelMinimumColumns {
            return forwardRowsBLAS(
                x: x, rows: rows, columns: columns, epsilon: epsilon, rowStatistics: rowStatistics,
                gamma: gamma, beta: beta, mean: mean, invstd: invstd, y: y, streaming: streaming,
                copy: copy, ones: ones, row: centred ? rowScratch(scratch, input: x) : scratch)
        }
        precondition(copy == nil, "the row blocks copy ahead of the kernel")
        return forwardBlocksBLAS(
            x: x, rows: rows, columns: columns, blockRows: blockRows, epsilon: epsilon,
            rowStatistics: rowStatistics, gamma: gamma, beta: beta, mean: mean, invstd: invstd, y: y,
            streaming: streaming, separateSquares: separateSquares, ones: ones, scratch: scratch)
    }

    /// The scratch row of the one-row-at-a-time path in `scratch` (on a line,
    /// a page of slack after it): half a page from the input's offset in a
    /// page, so that neither `centre`'s loads of `x` nor `scaleShift`'s
    /// loads of the row wait on the other pass's stores
    /// (``Workspace/placed(_:awayFrom:by:)``).
    @inlinable
    static func rowScratch<Scalar: BLASScalar>(
        _ scratch: UnsafeMutablePointer<Scalar>, input x: UnsafePointer<Scalar>
    ) -> UnsafeMutablePointer<Scalar> {
        Workspace<Scalar>.placed(scratch, awayFrom: x, by: 2048)
    }

    /// One row at a time, so that a row stays in L1 from its first read to its
    /// output: `mean = dot(x_i, 1) / D` (0 when not `centred`, for RMSNorm),
    /// `c = x_i - mean` into `row` (C, ``BLASScalar/centre(count:x:mean:c:)``;
    /// `c = x_i` when not `centred`), `invstd = 1 / sqrt(dot(c, c) / D + epsilon)`,
    /// then `y_i = c · invstd · gamma + beta` (C,
    /// ``BLASScalar/scaleShift(count:c:scale:gamma:beta:y:streaming:)``). A
    /// row whose variance is within the error of its mean (a constant row)
    /// is recomputed exactly (``Moments/exact(_:count:stride:scratch:ones:)``)
    /// and centred again. The output pass asks for the next row as it writes
    /// this one; with a `copy`, each row goes to the cache's storage after its
    /// statistics. Reads `x` once from memory and writes `y` once.
    ///
    /// - Parameters:
    ///   - ones: at least `columns` ones when `centred`.
    ///   - row: `columns` scalars of scratch when `centred`.
    /// - Returns: the first row whose statistics are not finite, or `nil`. Rows
    ///   before it have been written.
    @inlinable
    static func forwardRowsBLAS<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int, epsilon: Scalar, rowStatistics: RowStatistics,
        gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>,
        mean: UnsafeMutablePointer<Scalar>, invstd: UnsafeMutablePointer<Scalar>,
        y: UnsafeMutablePointer<Scalar>, streaming: Bool, copy: RowCopy<Scalar>? = nil,
        ones: UnsafePointer<Scalar>, row: UnsafeMutablePointer<Scalar>
    ) -> Int? {
        let centred = rowStatistics.centred
        for i in 0..<rows {
            let xi = x + i * columns
            guard let (m, s) = statistics(ofRow: xi, columns: columns, epsilon: epsilon,
                                          rowStatistics: rowStatistics, ones: ones, row: row) else {
                StreamingStores.fence(streaming || copy?.streaming == true)
                return i
            }
            if let copy {
                StreamingStores.copy(xi, count: columns, into: copy.target + i * columns,
                                     streaming: copy.streaming)
            }
            mean[i] = m
            invstd[i] = s
            // The next row is asked for while this one is written, so that
            // its first pass (a `dot`) finds it in cache.
            Scalar.scaleShiftRow(count: columns, c: centred ? UnsafePointer(row) : xi, scale: s,
                                 gamma: gamma, beta: beta, into: y + i * columns,
                                 streaming: streaming, next: i + 1 < rows ? xi + columns : nil)
        }
        StreamingStores.fence(streaming || copy?.streaming == true)
        return nil
    }

    /// Where the per-row forward copies each row it has read (the cache's
    /// storage), and whether with streaming stores.
    @usableFromInline
    struct RowCopy<Scalar: BLASScalar> {
        @usableFromInline let target: UnsafeMutablePointer<Scalar>
        @usableFromInline let streaming: Bool
        @inlinable init(target: UnsafeMutablePointer<Scalar>, streaming: Bool) {
            self.target = target; self.streaming = streaming
        }
    }

    /// The statistics of one row of `columns` values, as ``forwardRowsBLAS``
    /// takes them: `mean = dot(x, 1) / D` (0 when not `centred`), `c = x - mean`
    /// into `row` when `centred`, `invstd = 1 / sqrt(dot(c, c) / D + epsilon)`
    /// (`c = x` when not `centred`), the exact moments for a degenerate row.
    /// - Returns: `(mean, invstd)`, or `nil` when either is not finite.
    @inlinable @inline(__always)
    static func statistics<Scalar: BLASScalar>(
        ofRow x: UnsafePointer<Scalar>, columns: Int, epsilon: Scalar, rowStatistics: RowStatistics,
        ones: UnsafePointer<Scalar>, row: UnsafeMutablePointer<Scalar>
    ) -> (mean: Scalar, invstd: Scalar)? {
        let centred = rowStatistics.centred
        let inverseCount = 1 / Scalar(columns)
        var m: Scalar = 0
        if centred {
            m = Scalar.dot(count: columns, x: x, y: ones) * inverseCount
            Scalar.centreRow(count: columns, x: x, mean: m, into: row)
        }
        let c = centred ? UnsafePointer(row) : x
        var variance = Scalar.dot(count: columns, x: c, y: c) * inverseCount
        if centred
            && Moments.isDegenerate(mean: m, m2: variance * Scalar(columns), count: columns) {
            let exact = Moments.exact(x, count: columns, stride: 1, scratch: row, ones: ones)
            m = exact.mean
            variance = exact.m2 * inverseCount
            Scalar.centreRow(count: columns, x: x, mean: m, into: row)
        }
        let s = 1 / (variance + epsilon).squareRoot()
        guard m.isFinite, s.isFinite, variance.isFinite else { return nil }
        return (m, s)
    }

    /// Per row block: ``rowStatisticsBLAS`` (the squares in scratch when
    /// `centred`, in `Y_b` otherwise), then
    /// `y = (x - mean_i) · invstd_i · gamma_j + beta_j` while the block is in L2.
    /// `scratch` holds ``forwardScratch(blockRows:columns:rowStatistics:)`` scalars.
    ///
    /// - Returns: the first row whose statistics are not finite, or `nil`. Rows
    ///   before it have been written.
    @inlinable
    static func forwardBlocksBLAS<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int, blockRows: Int, epsilon: Scalar,
        rowStatistics: RowStatistics, gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>,
        mean: UnsafeMutablePointer<Scalar>, invstd: UnsafeMutablePointer<Scalar>,
        y: UnsafeMutablePointer<Scalar>, streaming: Bool, separateSquares: Bool = false,
        ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>
    ) -> Int? {
        let centred = rowStatistics.centred
        // RMSNorm's squares go into Y_b unless `y` is `x` (inference in place).
        let scratchSquares = centred || separateSquares
        let regions = BlockScratch(scratch, blockRows: blockRows, columns: columns, squares: scratchSquares)
        var start = 0
        while start < rows {
            let b = min(blockRows, rows - start)
            let xb = x + start * columns, yb = y + start * columns
            if let bad = rowStatisticsBLAS(x: xb, rows: b, columns: columns, epsilon: epsilon,
                                           rowStatistics: rowStatistics, mean: mean + start,
                                           invstd: invstd + start,
                                           squares: regions.squares ?? yb,
                                           variance: regions.variance, ones: ones) {
                return start + bad
            }
            // Y_b's lines are in cache already when it held the squares.
            affine(x: xb, rows: b, columns: columns, mean: mean + start, invstd: invstd + start,
                   gamma: gamma, beta: beta, y: yb, streaming: streaming && scratchSquares)
            start += b
        }
        return nil
    }

    /// The textbook: ``rowStatisticsNaive`` for all rows, then the normalize pass.
    @inlinable
    static func forwardNaive<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int, epsilon: Scalar, rowStatistics: RowStatistics,
        gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>,
        mean: UnsafeMutablePointer<Scalar>, invstd: UnsafeMutablePointer<Scalar>,
        y: UnsafeMutablePointer<Scalar>, streaming: Bool
    ) -> Int? {
        if let bad = rowStatisticsNaive(x: x, rows: rows, columns: columns, epsilon: epsilon,
                                        rowStatistics: rowStatistics, mean: mean, invstd: invstd) {
            return bad
        }
        affine(x: x, rows: rows, columns: columns, mean: mean, invstd: invstd,
               gamma: gamma, beta: beta, y: y, streaming: streaming)
        return nil
    }

    /// `y = (x - mean_i) · invstd_i · gamma_j + beta_j`, with streaming stores
    /// when `streaming` (see ``StreamingStores``).
    @inlinable
    static func affine<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int,
        mean: UnsafePointer<Scalar>, invstd: UnsafePointer<Scalar>,
        gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>, y: UnsafeMutablePointer<Scalar>,
        streaming: Bool
    ) {
        typealias S = StreamingStores
        for i in 0..<rows {
            let row = x + i * columns
            let m = mean[i], s = invstd[i]
            S.write(y + i * columns, count: columns, streaming: streaming,
                    value: { j in (row[j] - m) * s * gamma[j] + beta[j] },
                    vector: { j in (S.load(row + j) - m) * s * S.load(gamma + j) + S.load(beta + j) })
        }
        S.fence(streaming)
    }

    // MARK: Backward

    /// Scratch scalars ``backwardBLAS`` needs beyond `blockRows` ones: for the
    /// per-row kernels (rows of at least ``rowBackwardMinimumColumns``) a
    /// block for `P_b` with a page of slack, for the block form two per row.
    @inlinable
    static func backwardScratch<Scalar: BLASScalar>(blockRows: Int, columns: Int, of _: Scalar.Type) -> Int {
        columns >= rowBackwardMinimumColumns
            ? blockRows * columns + Workspace<Scalar>.pageScalars : 2 * blockRows
    }

    /// With `xhat = (x - mean_i)·invstd_i` and `dxhat = dy ∘ gamma`:
    /// `dx = invstd_i · (dxhat - Σ_j dxhat / D - xhat · Σ_j dxhat·xhat / D)`,
    /// `dgamma = Σ_i dy·xhat`, `dbeta = Σ_i dy`. Per block of rows that stays
    /// in L2 (``backwardBlock``): for rows of at least
    /// ``rowBackwardMinimumColumns``, one row at a time while it is in L1,
    /// `P_i = dy_i ∘ xhat_i` (C) into scratch, the row terms `dot(dy_i, gamma)`
    /// and `dot(P_i, gamma)`, `dx_i` (C); `dbeta += dy_i`, `dgamma += P_i`
    /// (`axpy`) per row from ``rowSumsMinimumColumns``, below it
    /// `dbeta += gemv(Trans, dY_b, 1)`, `dgamma += gemv(Trans, P_b, 1)` per
    /// block. Shorter rows: `P_b` first (into `dX_b`),
    /// the column sums, the row terms `gemv(NoTrans, dY_b, gamma)` and
    /// `gemv(NoTrans, P_b, gamma)`, then `dx` over the block (two `dot` calls
    /// per row cost more than a `gemv` per block when a row is short).
    /// Reads `dy` and `x` once, writes `dx` once, a residual form's
    /// `sumGradient` added in the same pass for rows taken one at a time
    /// (after the block for shorter rows); rows written one at a time with
    /// streaming stores when `streaming`, each row's `dx` pass then asking
    /// for the `dy`, `x` (and `sumGradient`) of a row ahead
    /// (``prefetchRows(columns:of:)``).
    /// Not `centred` (RMSNorm: `mean = 0`): the `Σ dxhat` term is zero and not
    /// computed. A `nil` `dgamma` or `dbeta` (a layer without that parameter,
    /// ``Affine``) skips its column sums.
    @inlinable
    static func backwardBLAS<Scalar: BLASScalar>(
        dy: UnsafePointer<Scalar>, x: UnsafePointer<Scalar>, rows: Int, columns: Int,
        blockRows: Int, rowStatistics: RowStatistics, mean: UnsafePointer<Scalar>, invstd: UnsafePointer<Scalar>,
        gamma: UnsafePointer<Scalar>,
        dx: UnsafeMutablePointer<Scalar>, dgamma: UnsafeMutablePointer<Scalar>?,
        dbeta: UnsafeMutablePointer<Scalar>?, sumGradient: UnsafePointer<Scalar>? = nil,
        streaming: Bool = false, ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>
    ) {
        dgamma?.update(repeating: 0, count: columns)
        dbeta?.update(repeating: 0, count: columns)
        var start = 0
        while start < rows {
            let b = min(blockRows, rows - start)
            let offset = start * columns
            backwardBlock(dy: dy + offset, x: x + offset, rows: b, columns: columns,
                          rowStatistics: rowStatistics, mean: mean + start, invstd: invstd + start,
                          gamma: gamma, dx: dx + offset, dgamma: dgamma, dbeta: dbeta,
                          sumGradient: sumGradient.map { $0 + offset }, streaming: streaming,
                          ones: ones, scratch: scratch)
            start += b
        }
        StreamingStores.fence(streaming)
    }

    /// The per-row backward's terms of one row while it is in L1:
    /// `P = dy ∘ xhat` into `p`, `a = dot(dy, gamma)/D` (0 when the row is
    /// not centred) and `b = dot(P, gamma)/D` (`dot`), then `dbeta += dy` and
    /// `dgamma += P` (`axpy`) for those given; `dx = invstd·(gamma·dy - a -
    /// (x - mean)·invstd·b)` follows from them.
    /// - Complexity: O(`columns`): a product pass, two `dot`, up to two `axpy`.
    @inlinable @inline(__always)
    static func rowTerms<Scalar: BLASScalar>(
        dy: UnsafePointer<Scalar>, x: UnsafePointer<Scalar>, columns: Int, centred: Bool,
        mean: Scalar, invstd: Scalar, gamma: UnsafePointer<Scalar>, p: UnsafeMutablePointer<Scalar>,
        dgamma: UnsafeMutablePointer<Scalar>?, dbeta: UnsafeMutablePointer<Scalar>?
    ) -> (a: Scalar, b: Scalar) {
        let inverseCount = 1 / Scalar(columns)
        Scalar.productRow(count: columns, dy: dy, x: x, mean: mean, invstd: invstd, into: p)
        let a = centred ? Scalar.dot(count: columns, x: dy, y: gamma) * inverseCount : 0
        let b = Scalar.dot(count: columns, x: p, y: gamma) * inverseCount
        if let dbeta { Scalar.axpy(count: columns, alpha: 1, x: dy, y: dbeta) }
        if let dgamma { Scalar.axpy(count: columns, alpha: 1, x: p, y: dgamma) }
        return (a, b)
    }

    /// Where the per-row backward keeps a row's `P` in its kernel scratch:
    /// 2 KiB past `dy`'s offset in a page (``Workspace/placed(_:awayFrom:by:)``),
    /// so that the product pass's stores do not wait on `dy`'s loads (4K
    /// aliasing).
    @inlinable @inline(__always)
    static func rowProducts<Scalar: BLASScalar>(
        _ scratch: UnsafeMutablePointer<Scalar>, awayFrom dy: UnsafePointer<Scalar>
    ) -> UnsafeMutablePointer<Scalar> {
        Workspace<Scalar>.placed(scratch, awayFrom: dy, by: 2048)
    }

    /// One block of ``backwardBLAS`` (`rows` at most its `blockRows`): `dx`
    /// of the block, its terms added to `dgamma` and `dbeta`. `scratch` holds
    /// ``backwardScratch(blockRows:columns:of:)`` scalars. With `streaming`,
    /// rows written one at a time are written with streaming stores; the
    /// caller fences.
    @inlinable
    static func backwardBlock<Scalar: BLASScalar>(
        dy dyb: UnsafePointer<Scalar>, x xb: UnsafePointer<Scalar>, rows b: Int, columns: Int,
        rowStatistics: RowStatistics, mean: UnsafePointer<Scalar>, invstd: UnsafePointer<Scalar>,
        gamma: UnsafePointer<Scalar>, dx block: UnsafeMutablePointer<Scalar>,
        dgamma: UnsafeMutablePointer<Scalar>?, dbeta: UnsafeMutablePointer<Scalar>?,
        sumGradient: UnsafePointer<Scalar>?, streaming: Bool = false, ones: UnsafePointer<Scalar>,
        scratch: UnsafeMutablePointer<Scalar>
    ) {
        let centred = rowStatistics.centred
        let inverseCount = 1 / Scalar(columns)
        // Rows of at least `rowBackwardMinimumColumns`: one row at a time while
        // it is in L1 (``rowTerms``), then dx_i. Shorter rows: P_b into dX_b,
        // the row terms by `gemv` after the column sums, then dx over the
        // block (which overwrites P_b).
        let perRow = columns >= rowBackwardMinimumColumns
        // From ``rowSumsMinimumColumns``, the column sums too while the row is
        // in L1 (`axpy`), so `P_i` needs one row of scratch, not a block.
        let sumsPerRow = columns >= rowSumsMinimumColumns
        let p = perRow ? rowProducts(scratch, awayFrom: dyb) : block
        let ahead = prefetchRows(columns: columns, of: Scalar.self)
        for i in 0..<b {
            let g = dyb + i * columns, row = xb + i * columns
            let pi = sumsPerRow ? p : p + i * columns
            guard perRow else {
                Scalar.productRow(count: columns, dy: g, x: row, mean: mean[i], invstd: invstd[i],
                                  into: pi)
                continue
            }
            let (a, c) = rowTerms(dy: g, x: row, columns: columns, centred: centred,
                                  mean: mean[i], invstd: invstd[i], gamma: gamma, p: pi,
                                  dgamma: sumsPerRow ? dgamma : nil,
                                  dbeta: sumsPerRow ? dbeta : nil)
            // A row of dx is written once, here, a residual form's sum
            // gradient added to it: streamed when the caller streams dx.
            // When dx streams (the rows come from memory), it asks for the
            // dy, x (and sum gradient) of the row `ahead` rows on into L2 as
            // it goes, which that row's first pass would otherwise wait on.
            let ds = sumGradient.map { $0 + i * columns }
            Scalar.combineRow(count: columns, dy: g, x: row, sum: ds, mean: mean[i],
                              invstd: invstd[i], a: a, b: c, gamma: gamma,
                              into: block + i * columns, streaming: streaming,
                              next: streaming && i + ahead < b
                                  ? (g + ahead * columns, row + ahead * columns,
                                     ds.map { $0 + ahead * columns }) : nil)
        }
        // The column sums only for the parameters the caller wants (`Affine`).
        if let dbeta, !sumsPerRow {
            Scalar.gemvTransposed(rows: b, columns: columns, a: dyb, x: ones, beta: 1, y: dbeta)
        }
        if let dgamma, !sumsPerRow {
            Scalar.gemvTransposed(rows: b, columns: columns, a: p, x: ones, beta: 1, y: dgamma)
        }
        if !perRow {
            let sumDxhat = scratch, sumDxhatXhat = sumDxhat + b
            if centred {
                Scalar.gemvRows(rows: b, columns: columns, alpha: inverseCount, a: dyb, x: gamma,
                                beta: 0, y: sumDxhat)
            } else {
                sumDxhat.update(repeating: 0, count: b)
            }
            Scalar.gemvRows(rows: b, columns: columns, alpha: inverseCount, a: block, x: gamma,
                            beta: 0, y: sumDxhatXhat)
            // dX_b held P_b: its lines are in cache, so no streaming stores.
            combine(dy: dyb, x: xb, rows: b, columns: columns, mean: mean, invstd: invstd,
                    gamma: gamma, meanDxhat: sumDxhat, meanDxhatXhat: sumDxhatXhat, dx: block,
                    streaming: false)
        }
        // The block form's residual sum gradient, added while dX_b is in L2
        // (the per-row form added it in its `dx` pass).
        if let sumGradient, !perRow {
            Fused.accumulate(sumGradient, count: b * columns, into: block)
        }
    }

    /// The same formulas with the textbook's loops, one row at a time, and the
    /// column sums `dgamma`, `dbeta` accumulated in the same loops.
    /// `scratch` holds `2 * rows` scalars.
    @inlinable
    static func backwardNaive<Scalar: BLASScalar>(
        dy: UnsafePointer<Scalar>, x: UnsafePointer<Scalar>, rows: Int, columns: Int,
        rowStatistics: RowStatistics, mean: UnsafePointer<Scalar>, invstd: UnsafePointer<Scalar>,
        gamma: UnsafePointer<Scalar>,
        dx: UnsafeMutablePointer<Scalar>, dgamma: UnsafeMutablePointer<Scalar>?,
        dbeta: UnsafeMutablePointer<Scalar>?, streaming: Bool, sumGradient: UnsafePointer<Scalar>? = nil,
        scratch: UnsafeMutablePointer<Scalar>
    ) {
        let centred = rowStatistics.centred
        let perRow = VectorSet(first: scratch, stride: rows, count: 2)
        let meanDxhat = perRow[0], meanDxhatXhat = perRow[1]
        let d = Scalar(columns)
        dgamma?.update(repeating: 0, count: columns)
        dbeta?.update(repeating: 0, count: columns)
        for i in 0..<rows {
            let g = dy + i * columns, row = x + i * columns
            let m = mean[i], s = invstd[i]
            var sum: Scalar = 0, sumXhat: Scalar = 0
            for j in 0..<columns {
                let xhat = (row[j] - m) * s
                let dxhat = g[j] * gamma[j]
                sum += dxhat
                sumXhat += dxhat * xhat
                dbeta?[j] += g[j]
                dgamma?[j] += g[j] * xhat
            }
            meanDxhat[i] = centred ? sum / d : 0
            meanDxhatXhat[i] = sumXhat / d
        }
        combine(dy: dy, x: x, rows: rows, columns: columns, mean: mean, invstd: invstd,
                gamma: gamma, meanDxhat: meanDxhat, meanDxhatXhat: meanDxhatXhat, dx: dx,
                streaming: streaming && sumGradient == nil)
        if let sumGradient { Fused.accumulate(sumGradient, count: rows * columns, into: dx) }
    }

    /// `dx = invstd_i · (gamma_j·dy - mean(dxhat)_i - xhat · mean(dxhat·xhat)_i)`,
    /// with streaming stores when `streaming`: the output pass of both
    /// backends, in C (``BLASScalar/combine(count:dy:x:mean:invstd:a:b:gamma:dx:streaming:next:)``).
    @inlinable
    static func combine<Scalar: BLASScalar>(
        dy: UnsafePointer<Scalar>, x: UnsafePointer<Scalar>, rows: Int, columns: Int,
        mean: UnsafePointer<Scalar>, invstd: UnsafePointer<Scalar>, gamma: UnsafePointer<Scalar>,
        meanDxhat: UnsafePointer<Scalar>, meanDxhatXhat: UnsafePointer<Scalar>,
        dx: UnsafeMutablePointer<Scalar>, streaming: Bool
    ) {
        for i in 0..<rows {
            Scalar.combineRow(count: columns, dy: dy + i * columns, x: x + i * columns,
                              mean: mean[i], invstd: invstd[i], a: meanDxhat[i],
                              b: meanDxhatXhat[i], gamma: gamma, into: dx + i * columns,
                              streaming: streaming)
        }
        StreamingStores.fence(streaming)
    }
}

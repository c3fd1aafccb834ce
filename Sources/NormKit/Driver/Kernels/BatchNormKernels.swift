/// The kernels of batch normalization over an `N x D` row-major matrix, where
/// every statistic belongs to a column (a feature) and runs over the rows.
///
/// The BLAS kernels follow the Architecture article: column sums are `gemv(Trans, X_b, 1)`
/// on row blocks `X_b` sized to stay in L2, so that each pass reads the input
/// from memory once; the naive kernels are the textbook's nested loops.
/// Elementwise steps are plain loops over raw pointers (they vectorize), shared
/// by both backends. None of these functions allocates or throws: the layers
/// validate first and hand them sized buffers.
@usableFromInline
enum BatchNormKernels {
    // MARK: Statistics

    /// Column means and `M2 = Σ(x - mean)²` of `x` (`rows x columns`), blockwise,
    /// merged by ``Moments/merge``; reads `x` from memory once. Per block of
    /// rows, with rows of at least ``rowMomentsMinimumColumns`` values, one
    /// row at a time: `mean_b = Σ_i axpy(x_i) / b`, then the centred squares
    /// of up to four rows in one pass (``centringGroupRows(columns:bytesPerScalar:)``)
    /// into L1 rows of scratch and `M2_b += axpy(s_i)` for each; with shorter
    /// rows, the block at once: `mean_b = gemv(Trans, X_b, 1) / b`, the centred
    /// squares into scratch, `M2_b = gemv(Trans, S_b, 1)`.
    ///
    /// The centring loop also sums the residuals `r = Σ(x - mean_b)`, which
    /// rounding leaves nonzero when `|mean| ≫ std`: the corrected two-pass
    /// algorithm (Chan, Golub, LeVeque) then uses `mean_b + r/b` and
    /// `M2_b - r²/b`, so a Float column with mean 1e4 keeps its mean to the
    /// precision Float can represent. A column whose variance is still within
    /// the error of its mean (a constant column, say) is recomputed exactly
    /// (``Moments/exact(_:count:stride:scratch:ones:)``).
    ///
    /// - Parameters:
    ///   - ones: at least `blockRows` ones.
    ///   - scratch: at least `blockRows·columns + 3·columns` scalars and
    ///     ``ChannelGeometry/placementSlack``: three column vectors, then one
    ///     block placed half a page from the input's offset.
    ///   - copy: where the centring loop also copies `x` (a training pass's
    ///     cache), or `nil`.
    ///   - load: for an input stored in another type (16 bits), makes its
    ///     rows `row..<row + count` ready as `Scalar`s and returns where they
    ///     are, copying them to the cache when `first` (the mean's pass);
    ///     `x` is then not read. Per row it is called before each pass that
    ///     reads the row (once with `centre`), so the widened row stays in
    ///     L1; per block once, and again for a degenerate column's exact
    ///     recomputation.
    ///   - centre: with `load` and no `copy`, when the kernel sums per row:
    ///     the second pass's centred squares of row `row` from its stored
    ///     form (widened in registers; ``Scalar/centredSquaresBlock(rows:count:x:mean:squares:residual:copy:)``'s
    ///     expressions and bits) instead of loading it again.
    @inlinable
    static func columnMomentsBLAS<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int, blockRows: Int,
        mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>,
        copy: UnsafeMutablePointer<Scalar>? = nil,
        centre: ((_ row: Int, _ mean: UnsafePointer<Scalar>, _ squares: UnsafeMutablePointer<Scalar>,
                  _ residual: UnsafeMutablePointer<Scalar>) -> Void)? = nil,
        load: ((_ row: Int, _ count: Int, _ first: Bool) -> UnsafePointer<Scalar>)? = nil
    ) {
        // The block's mean, M2 and residual, then the block's region.
        var layout = ScratchLayout<Scalar>()
        let sums = layout.region(3 * columns).vectors(3, of: columns, in: scratch)
        let blockMean = sums[0], blockM2 = sums[1], residual = sums[2]
        let region = layout.rest.pointer(in: scratch)
        let perRow = columns >= rowMomentsMinimumColumns
        // Rows the per-row form centres in one pass (the caller's rows only:
        // a 16-bit row is loaded, or centred from its stored form, one at a time).
        let group = load == nil && centre == nil
            ? min(blockRows, centringGroupRows(columns: columns, bytesPerScalar: MemoryLayout<Scalar>.stride))
            : 1
        mean.update(repeating: 0, count: columns)
        m2.update(repeating: 0, count: columns)
        var count = 0
        var start = 0
        while start < rows {
            let b = min(blockRows, rows - start)
            let copyb = copy.map { $0 + start * columns }
            // The block's rows: the caller's, or (`load`) widened, the whole
            // block at once in the block form.
            var xb = x + start * columns
            if let load, !perRow { xb = load(start, b, true) }
            let block = Workspace<Scalar>.placed(region, awayFrom: xb, by: 2048)
            residual.update(repeating: 0, count: columns)
            if perRow {
                // Each row added from memory into the block's sums (in L1),
                // then each centred square, in one L1 row, into its M2.
                blockMean.update(repeating: 0, count: columns)
                for i in 0..<b {
                    let row = load?(start + i, 1, true) ?? xb + i * columns
                    Scalar.axpy(count: columns, alpha: 1, x: row, y: blockMean)
                }
                Scalar.scal(count: columns, alpha: 1 / Scalar(b), x: blockMean)
                // The centred squares of a group of rows into L1 in one pass
                // (their residuals added in row order: the bits of one row at
                // a time), then each row's into M2.
                blockM2.update(repeating: 0, count: columns)
                for first in stride(from: 0, to: b, by: group) {
                    let k = min(group, b - first)
                    if let centre {
                        centre(start + first, blockMean, block, residual)
                    } else {
                        let xk = load?(start + first, k, false) ?? xb + first * columns
                        Scalar.centredSquaresBlock(rows: k, count: columns, x: xk,
                                                   mean: blockMean, squares: block,
                                                   residual: residual,
                                                   copy: copyb.map { $0 + first * columns },
                                                   inOrder: true)
                    }
                    for i in 0..<k {
                        Scalar.axpy(count: columns, alpha: 1, x: block + i * columns, y: blockM2)
                    }
                }
            } else {
                Scalar.gemvTransposed(rows: b, columns: columns, alpha: 1 / Scalar(b),
                                      a: xb, x: ones, beta: 0, y: blockMean)
                // The centred squares and the residual sums, four rows at a
                // time (row-major order keeps the accesses sequential).
                Scalar.centredSquaresBlock(rows: b, count: columns, x: xb, mean: blockMean,
                                           squares: block, residual: residual, copy: copyb)
                Scalar.gemvTransposed(rows: b, columns: columns, a: block, x: ones,
                                      beta: 0, y: blockM2)
            }
            let suspect = Moments.correct(count: b, mean: blockMean, m2: blockM2,
                                          residual: residual, length: columns)
            var whole = perRow && load != nil ? nil : xb
            for j in 0..<(suspect ? columns : 0)
            where Moments.isDegenerate(mean: blockMean[j], m2: blockM2[j], count: b) {
                // A constant (or nearly constant) column of the block: exactly,
                // in the squares block, which its gemv has consumed (rows
                // loaded one at a time are loaded again, as a block).
                let source = whole ?? load!(start, b, false)
                whole = source
                (blockMean[j], blockM2[j]) = Moments.exact(source + j, count: b, stride: columns,
                                                           scratch: block, ones: ones)
            }
            count = Moments.merge(count: count, mean: mean, m2: m2, blockCount: b,
                                  blockMean: blockMean, blockM2: blockM2, length: columns)
            start += b
        }
    }

    /// The shortest rows ``columnMomentsBLAS(x:rows:columns:blockRows:mean:m2:ones:scratch:copy:centre:load:)``
    /// and ``parameterSums(dy:mask:x:geometry:block:backend:mean:dgammaRaw:dbeta:ones:scratch:load:)``
    /// sum one at a time with `axpy`: below it, the per-call cost of `axpy`
    /// outweighs the block `gemv`'s second pass over the squares in L2 (the
    /// Architecture article has the measurements).
    @inlinable static var rowMomentsMinimumColumns: Int { 256 }

    /// The rows whose centred squares the per-row form of
    /// ``columnMomentsBLAS(x:rows:columns:blockRows:mean:m2:ones:scratch:copy:centre:load:)``
    /// writes into L1 in one pass, so that it reads and writes the residual
    /// sums once per four rows: four when their squares fit in
    /// ``centringGroupBytes``, else one.
    @inlinable
    static func centringGroupRows(columns: Int, bytesPerScalar: Int) -> Int {
        4 * columns * bytesPerScalar <= centringGroupBytes ? 4 : 1
    }

    /// 16 KiB: four rows of 1024 `Float`s or 512 `Double`s, a third of a
    /// 48 KiB L1 (the Performance article has the sizes measured).
    @inlinable static var centringGroupBytes: Int { 16384 }

    /// Whether the BLAS kernels of this geometry sum one row at a time: rows
    /// of at least ``rowMomentsMinimumColumns`` channels.
    @inlinable
    static func perRow(geometry g: ChannelGeometry, backend: Backend) -> Bool {
        backend == .blas && g.inner == 1 && g.channels >= rowMomentsMinimumColumns
    }

    /// The textbook, shifted by the first row `k` (see ``Moments``): one pass
    /// of nested loops for the shifted means `m' = Σ(x - k) / N`, a second for
    /// `M2 = Σ((x - k) - m')²`; `mean = k + m'`. A constant column has
    /// `x - k = 0` exactly: its mean is its value and its `M2` is 0.
    @inlinable
    static func columnMomentsNaive<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int,
        mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>
    ) {
        let k = x
        mean.update(repeating: 0, count: columns)
        for i in 0..<rows {
            let row = x + i * columns
            for j in 0..<columns { mean[j] += row[j] - k[j] }
        }
        let n = Scalar(rows)
        for j in 0..<columns { mean[j] /= n }
        m2.update(repeating: 0, count: columns)
        for i in 0..<rows {
            let row = x + i * columns
            for j in 0..<columns {
                let d = (row[j] - k[j]) - mean[j]
                m2[j] += d * d
            }
        }
        for j in 0..<columns { mean[j] += k[j] }
    }

    /// Column sums with nested loops (the naive backend's reduction).
    @inlinable
    static func columnSumsNaive<Scalar: BLASScalar>(
        _ a: UnsafePointer<Scalar>, rows: Int, columns: Int, into sums: UnsafeMutablePointer<Scalar>
    ) {
        sums.update(repeating: 0, count: columns)
        addColumnSumsNaive(a, rows: rows, columns: columns, to: sums)
    }

    /// Adds the column sums of `a` to `sums` with nested loops.
    @inlinable
    static func addColumnSumsNaive<Scalar: BLASScalar>(
        _ a: UnsafePointer<Scalar>, rows: Int, columns: Int, to sums: UnsafeMutablePointer<Scalar>
    ) {
        for i in 0..<rows {
            let row = a + i * columns
            for j in 0..<columns { sums[j] += row[j] }
        }
    }

    // MARK: Forward

    /// `y = (x - mean) * scale + shift` per column: the normalize pass, which
    /// reads `x` once and writes `y` once (with streaming stores when
    /// `streaming`, see ``StreamingStores``). `scale = gamma / sqrt(var + eps)`.
    /// Subtracting the mean first keeps Float accurate when `|mean| ≫ std`.
    @inlinable
    static func normalize<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int,
        mean: UnsafePointer<Scalar>, scale: UnsafePointer<Scalar>, shift: UnsafePointer<Scalar>,
        y: UnsafeMutablePointer<Scalar>, streaming: Bool
    ) {
        Scalar.normalizeRows(rows, count: columns, x: x, mean: mean, scale: scale, shift: shift,
                             into: y, streaming: streaming)
        StreamingStores.fence(streaming)
    }

    // MARK: Backward through the graph

    // The staged backward walks cs231n's `batchnorm_backward` graph of
    // `xmu = x - mu`, `var`, `ivar = 1/sqrt(var + eps)`, `xhat = xmu * ivar`,
    // `y = gamma * xhat + beta` node by node, every node a full pass over its
    // rows. Two nodes need column sums over the whole batch (`divar` and `dmu`),
    // so the walk has three stages; the rows of each stage may be split into
    // chunks on threads, with the chunks' partial column sums added between
    // stages. Each column reduction is `gemv(Trans, ·, 1)` (BLAS) or a loop
    // (naive). `dx` holds the `dxhat` and `dxmu` nodes on the way.
    //
    // The BLAS backend walks the nodes of stages 1 and 2 block by block of
    // `blockRows` rows that stay in L2, so that a stage reads its inputs from
    // memory once however many nodes it has (the naive backend: one block).

    /// Adds the column sums of `a` (`rows x columns`) to `sums`:
    /// `gemv(Trans, A, 1)` with `beta = 1` (BLAS) or nested loops (naive).
    @inlinable
    static func addColumnSums<Scalar: BLASScalar>(
        _ a: UnsafePointer<Scalar>, rows: Int, columns: Int, backend: Backend,
        ones: UnsafePointer<Scalar>, to sums: UnsafeMutablePointer<Scalar>
    ) {
        switch backend {
        case .blas:
            Scalar.gemvTransposed(rows: rows, columns: columns, a: a, x: ones, beta: 1, y: sums)
        case .naive:
            addColumnSumsNaive(a, rows: rows, columns: columns, to: sums)
        }
    }

    /// Stage 1 over `rows` rows, per block: the `dy ∘ xhat` node and
    /// `dgamma = Σ dy ∘ xhat`, `dbeta = Σ dy`, `dxhat = dy ∘ gamma` (into `dx`),
    /// and, unless the statistics are `frozen`, the `dxhat ∘ xmu` node and
    /// `divar = Σ dxhat ∘ xmu`. With `frozen` statistics `dx = dxhat ∘ ivar` and
    /// the walk ends here. The sums are this chunk's partial sums; `node` holds
    /// `blockRows x columns` scalars.
    @inlinable
    static func graphStageOne<Scalar: BLASScalar>(
        dy: UnsafePointer<Scalar>, x: UnsafePointer<Scalar>, rows: Int, columns: Int,
        blockRows: Int, mean: UnsafePointer<Scalar>, invstd: UnsafePointer<Scalar>,
        gamma: UnsafePointer<Scalar>, forwardMode: Mode, backend: Backend,
        dx: UnsafeMutablePointer<Scalar>, node: UnsafeMutablePointer<Scalar>,
        dgamma: UnsafeMutablePointer<Scalar>, dbeta: UnsafeMutablePointer<Scalar>,
        divar: UnsafeMutablePointer<Scalar>, ones: UnsafePointer<Scalar>
    ) {
        let frozen = forwardMode == .inference
        dgamma.update(repeating: 0, count: columns)
        dbeta.update(repeating: 0, count: columns)
        divar.update(repeating: 0, count: columns)
        var start = 0
        while start < rows {
            let b = min(blockRows, rows - start), offset = start * columns
            let dy = dy + offset, x = x + offset, dx = dx + offset
            // xhat node (it streams dy and x from memory together), then
            // dgamma = Σ dy ∘ xhat and dbeta = Σ dy.
            for i in 0..<b {
                let row = x + i * columns, out = node + i * columns, g = dy + i * columns
                for j in 0..<columns { out[j] = g[j] * ((row[j] - mean[j]) * invstd[j]) }
            }
            addColumnSums(node, rows: b, columns: columns, backend: backend, ones: ones, to: dgamma)
            addColumnSums(dy, rows: b, columns: columns, backend: backend, ones: ones, to: dbeta)
            // dxhat = dy ∘ gamma (into dx).
            for i in 0..<b {
                let g = dy + i * columns, out = dx + i * columns
                for j in 0..<columns { out[j] = g[j] * gamma[j] }
            }
            if frozen {
                // dx = dxhat ∘ ivar.
                for i in 0..<b {
                    let out = dx + i * columns
                    for j in 0..<columns { out[j] *= invstd[j] }
                }
            } else {
                // divar = Σ dxhat ∘ xmu.
                for i in 0..<b {
                    let row = x + i * columns, d = dx + i * columns, out = node + i * columns
                    for j in 0..<columns { out[j] = d[j] * (row[j] - mean[j]) }
                }
                addColumnSums(node, rows: b, columns: columns, backend: backend, ones: ones, to: divar)
            }
            start += b
        }
    }

    /// Between stages 1 and 2, from the batch's `divar`:
    /// `dsqrtvar = -ivar² · divar` (`-ivar · (ivar · divar)` where `ivar²`
    /// overflows), `dvar = 0.5 · ivar · dsqrtvar`.
    @inlinable
    static func graphVarianceNode<Scalar: BLASScalar>(
        divar: UnsafePointer<Scalar>, invstd: UnsafePointer<Scalar>, columns: Int,
        dvar: UnsafeMutablePointer<Scalar>
    ) {
        for j in 0..<columns {
            // As in `coefficients`: `ivar²` may overflow where `divar` is 0.
            var dsqrtvar = -invstd[j] * invstd[j] * divar[j]
            if !dsqrtvar.isFinite { dsqrtvar = -invstd[j] * (invstd[j] * divar[j]) }
            dvar[j] = 0.5 * invstd[j] * dsqrtvar
        }
    }

    /// Stage 2 over `rows` of a batch of `count` rows, per block:
    /// `dxmu = dxhat ∘ ivar + 2 · xmu ∘ dvar / N` (`dxmu1 + dxmu2` through
    /// `dsq`) in place in `dx`, and this chunk's partial `dmu = Σ dxmu`.
    @inlinable
    static func graphStageTwo<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, rows: Int, columns: Int, blockRows: Int, count: Int,
        mean: UnsafePointer<Scalar>, invstd: UnsafePointer<Scalar>, dvar: UnsafePointer<Scalar>,
        backend: Backend, dx: UnsafeMutablePointer<Scalar>, dmu: UnsafeMutablePointer<Scalar>,
        ones: UnsafePointer<Scalar>
    ) {
        let n = Scalar(count)
        dmu.update(repeating: 0, count: columns)
        var start = 0
        while start < rows {
            let b = min(blockRows, rows - start), offset = start * columns
            let x = x + offset, dx = dx + offset
            for i in 0..<b {
                let row = x + i * columns, out = dx + i * columns
                for j in 0..<columns {
                    out[j] = out[j] * invstd[j] + 2 * (row[j] - mean[j]) * dvar[j] / n
                }
            }
            addColumnSums(UnsafePointer(dx), rows: b, columns: columns, backend: backend,
                          ones: ones, to: dmu)
            start += b
        }
    }

    /// Stage 3 over `rows` of a batch of `count` rows, from the batch's
    /// `Σ dxmu`: `dmu = -Σ dxmu`, `dx = dxmu + dmu / N`.
    @inlinable
    static func graphStageThree<Scalar: BLASScalar>(
        rows: Int, columns: Int, count: Int, sumDxmu: UnsafePointer<Scalar>,
        dx: UnsafeMutablePointer<Scalar>
    ) {
        let n = Scalar(count)
        for i in 0..<rows {
            let out = dx + i * columns
            for j in 0..<columns { out[j] -= sumDxmu[j] / n }
        }
    }

    // MARK: Running statistics

    /// `running = momentum · running + weight · batch`: `scal` then `axpy` (BLAS)
    /// or a loop (naive).
    @inlinable
    static func updateRunning<Scalar: BLASScalar>(
        _ running: UnsafeMutablePointer<Scalar>, momentum: Scalar,
        batch: UnsafePointer<Scalar>, weight: Scalar, count: Int, backend: Backend
    ) {
        switch backend {
        case .blas:
            Scalar.scal(count: count, alpha: momentum, x: running)
            Scalar.axpy(count: count, alpha: weight, x: batch, y: running)
        case .naive:
            for j in 0..<count { running[j] = momentum * running[j] + weight * batch[j] }
        }
    }
}

/// Where batch statistics run: `outer x channels x inner` values, one
/// statistic per channel over `outer * inner` values.
///
/// `BatchNorm` is `(N, D, 1)`; `SpatialBatchNorm` is `(N, C, H*W)` in NCHW and
/// `(N*H*W, C, 1)` in NHWC. With `inner == 1` the data is an `outer x channels`
/// matrix and the column kernels (`gemv(Trans)` on row blocks) apply; otherwise
/// each sample is a `channels x inner` slab and the channel kernels
/// (`gemv(NoTrans, slab, 1)` accumulated over samples) apply.
@usableFromInline
struct ChannelGeometry: Sendable {
    @usableFromInline let outer: Int
    @usableFromInline let channels: Int
    @usableFromInline let inner: Int

    @inlinable
    init(outer: Int, channels: Int, inner: Int) {
        self.outer = outer
        self.channels = channels
        self.inner = inner
    }

    /// The number of values each statistic runs over.
    @inlinable var valuesPerStatistic: Int { outer * inner }

    /// Rows of a block (matrix: rows of `channels`; slabs: channels of `inner`)
    /// such that `buffers` blocks fit in half of L2.
    @inlinable
    func block(bytesPerScalar: Int, buffers: Int) -> Int {
        inner == 1
            ? CacheGeometry.blockRows(rows: outer, columns: channels,
                                      bytesPerScalar: bytesPerScalar, buffers: buffers)
            : CacheGeometry.blockRows(rows: channels, columns: inner,
                                      bytesPerScalar: bytesPerScalar, buffers: buffers)
    }

    /// The length of the ones vector the BLAS kernels need for `block`.
    @inlinable func onesCount(block: Int) -> Int { inner == 1 ? block : inner }

    /// Scratch for a block of `block` rows, plus `vectors` channel vectors;
    /// with vectors (the moments kernels'), ``placementSlack`` more, where the
    /// block is placed half a page from the input's offset in a page.
    @inlinable
    func scratchCount(block: Int, vectors: Int) -> Int {
        block * (inner == 1 ? channels : inner) + vectors * channels
            + (vectors > 0 ? Self.placementSlack : 0)
    }

    /// A 4 KiB page and a 64-byte line of `Float`s: the slack in scalars that
    /// ``Workspace/placed(_:awayFrom:by:)`` needs after vectors rounded to
    /// lines, for `Float` and (more than enough) `Double`.
    @inlinable static var placementSlack: Int { 1024 + 16 }
}

extension BatchNormKernels {
    // MARK: Geometry dispatch

    /// Per-channel mean and `M2` over the geometry, by the backend's kernel.
    /// `scratch` holds `geometry.scratchCount(block:vectors: 3)` scalars.
    /// `copy` (the BLAS kernel of the matrix geometry only, see
    /// ``copiesWhileReading(geometry:backend:)``) also receives the values.
    @inlinable
    static func moments<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, geometry g: ChannelGeometry, block: Int, backend: Backend,
        mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>,
        copy: UnsafeMutablePointer<Scalar>? = nil
    ) {
        precondition(copy == nil || copiesWhileReading(geometry: g, backend: backend),
                     "only the BLAS matrix kernel copies its input as it reads it")
        switch (backend, g.inner == 1) {
        case (.blas, true):
            columnMomentsBLAS(x: x, rows: g.outer, columns: g.channels, blockRows: block,
                              mean: mean, m2: m2, ones: ones, scratch: scratch, copy: copy)
        case (.naive, true):
            columnMomentsNaive(x: x, rows: g.outer, columns: g.channels, mean: mean, m2: m2)
        case (.blas, false):
            channelMomentsBLAS(x: x, geometry: g, channelBlock: block, mean: mean, m2: m2,
                               ones: ones, scratch: scratch)
        case (.naive, false):
            channelMomentsNaive(x: x, geometry: g, mean: mean, m2: m2)
        }
    }

    /// Whether ``moments(x:geometry:block:backend:mean:m2:ones:scratch:copy:)``
    /// can copy its input while it reads it: the BLAS kernel of the matrix
    /// geometry, whose centring loop reads every value once from L2.
    @inlinable
    static func copiesWhileReading(geometry g: ChannelGeometry, backend: Backend) -> Bool {
        backend == .blas && g.inner == 1
    }

    /// `y = act((x - mean_c) * scale_c + shift_c + residual)` over the
    /// geometry (the `epilogue`'s residual and activation in the same C loop:
    /// per row of channels for the matrix geometry, per slab otherwise).
    @inlinable
    static func normalize<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, geometry g: ChannelGeometry,
        mean: UnsafePointer<Scalar>, scale: UnsafePointer<Scalar>, shift: UnsafePointer<Scalar>,
        y: UnsafeMutablePointer<Scalar>, streaming: Bool,
        epilogue: Epilogue<Scalar> = .identity
    ) {
        typealias S = StreamingStores
        if g.inner == 1 {
            guard !epilogue.isIdentity else {
                normalize(x: x, rows: g.outer, columns: g.channels, mean: mean, scale: scale,
                          shift: shift, y: y, streaming: streaming)
                return
            }
            for i in 0..<g.outer {
                let offset = i * g.channels, e = epilogue.advanced(by: offset)
                Scalar.normalizeEpilogueRow(count: g.channels, x: x + offset, mean: mean,
                                            scale: scale, shift: shift, residual: e.residual,
                                            into: y + offset, mask: e.mask, relu: e.relu,
                                            streaming: streaming)
            }
            S.fence(streaming)
            return
        }
        for slab in 0..<(g.outer * g.channels) {
            let c = slab % g.channels, offset = slab * g.inner
            let m = mean[c], a = scale[c], b = shift[c]
            let e = epilogue.advanced(by: offset)
            Scalar.affineSlab(count: g.inner, x: x + offset, mean: m, scale: a, shift: b,
                              residual: e.residual, into: y + offset, mask: e.mask, relu: e.relu,
                              streaming: streaming)
        }
        S.fence(streaming)
    }

    // MARK: Backward, closed form

    /// Pass 1 of the closed-form backward over the geometry: `dbeta = Σ dy` and
    /// `dgammaRaw = Σ dy·(x - mean)` per channel (not yet scaled by `invstd`).
    ///
    /// BLAS, matrix geometry: per row, with rows of at least
    /// ``rowMomentsMinimumColumns`` channels, `p_i = dy_i ∘ (x_i - mean)` into
    /// an L1 row of scratch, `dbeta += axpy(dy_i)`, `dgammaRaw += axpy(p_i)`;
    /// with shorter rows, per row block `dbeta += gemv(Trans, dY_b, 1)`,
    /// `P_b = dY_b ∘ (X_b - mean)` into scratch, `dgammaRaw += gemv(Trans, P_b, 1)`.
    /// BLAS, channel geometry: the same per (sample, channel block) with
    /// `gemv(NoTrans, ·, 1_HW)`. Naive: the textbook's loops.
    /// `scratch` holds `geometry.scratchCount(block:vectors: 0)` scalars and,
    /// for the matrix geometry, a page more: `P_b` goes half a page from `x`'s
    /// offset in a page (``Workspace/placed(_:awayFrom:by:)``).
    ///
    /// `load`, for tensors stored in another type (16 bits; the per-row form
    /// only, ``perRow(geometry:backend:)``): makes row `i`'s `dy` (through
    /// the ReLU's mask) and `x` ready as `Scalar`s in L1 and returns where
    /// they are; `dy`, `mask` and `x` are then not read.
    @inlinable
    static func parameterSums<Scalar: BLASScalar>(
        dy: UnsafePointer<Scalar>, mask: UnsafePointer<UInt8>? = nil, x: UnsafePointer<Scalar>,
        geometry g: ChannelGeometry, block: Int, backend: Backend, mean: UnsafePointer<Scalar>,
        dgammaRaw: UnsafeMutablePointer<Scalar>, dbeta: UnsafeMutablePointer<Scalar>,
        ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>,
        load: ((_ row: Int) -> (dy: UnsafePointer<Scalar>, x: UnsafePointer<Scalar>))? = nil
    ) {
        precondition(load == nil || perRow(geometry: g, backend: backend),
                     "rows are loaded one at a time in the per-row form only")
        assert(mask == nil || g.inner == 1, "a ReLU's mask is applied inside for rows of channels only")
        let channels = g.channels
        dgammaRaw.update(repeating: 0, count: channels)
        dbeta.update(repeating: 0, count: channels)
        // With a ReLU's mask (rows of channels only, `inner == 1`: the slab
        // paths' callers mask in a pass of their own, as the Swift slab loops
        // could give a NaN another sign than the unmasked ones), the masked
        // gradient of each block goes to the second half of the scratch (the
        // blocks were sized for it), at the same offset in a cache line as
        // `dy`'s block: the gemv that sums it then splits its loops where it
        // would over `dy`, so the sums are the plain backward's bits.
        let half = g.scratchCount(block: block, vectors: 0)
        func maskedBlock(_ base: UnsafeMutablePointer<Scalar>, like dyb: UnsafePointer<Scalar>)
            -> UnsafeMutablePointer<Scalar> {
            let bytes = (Int(bitPattern: dyb) - Int(bitPattern: base)) & 63
            return base + bytes / MemoryLayout<Scalar>.stride
        }
        if g.inner == 1 {
            switch backend {
            case .blas where perRow(geometry: g, backend: backend):
                // One row at a time, as the forward's moments: the product
                // (and the masked gradient) into an L1 row, then each row
                // added into the sums with `axpy` (elementwise, so a masked
                // row gives the plain backward's bits).
                let row = Workspace<Scalar>.placed(scratch, awayFrom: x, by: 2048)
                let maskedRow = row + half
                for i in 0..<g.outer {
                    var (dyi, xi) = load?(i) ?? (dy + i * channels, x + i * channels)
                    if let mask, load == nil {
                        Scalar.centredProductMaskedRow(
                            count: channels, dy: dyi, mask: mask + i * channels, x: xi,
                            mean: mean, g: maskedRow, into: row)
                        dyi = UnsafePointer(maskedRow)
                    } else {
                        Scalar.centredProductRow(count: channels, dy: dyi, x: xi, mean: mean,
                                                 into: row)
                    }
                    Scalar.axpy(count: channels, alpha: 1, x: dyi, y: dbeta)
                    Scalar.axpy(count: channels, alpha: 1, x: row, y: dgammaRaw)
                }
            case .blas:
                let scratch = Workspace<Scalar>.placed(scratch, awayFrom: x, by: 2048)
                var start = 0
                while start < g.outer {
                    let b = min(block, g.outer - start)
                    let dyb = dy + start * channels, xb = x + start * channels
                    // The elementwise pass first: it streams dy and x from memory
                    // together, and leaves dY_b in L2 for its gemv.
                    let masked = maskedBlock(scratch + half, like: dyb)
                    if let mask {
                        let mb = mask + start * channels
                        for i in 0..<b {
                            Scalar.centredProductMaskedRow(
                                count: channels, dy: dyb + i * channels, mask: mb + i * channels,
                                x: xb + i * channels, mean: mean, g: masked + i * channels,
                                into: scratch + i * channels)
                        }
                    } else {
                        for i in 0..<b {
                            Scalar.centredProductRow(count: channels, dy: dyb + i * channels,
                                                     x: xb + i * channels, mean: mean,
                                                     into: scratch + i * channels)
                        }
                    }
                    Scalar.gemvTransposed(rows: b, columns: channels,
                                          a: mask == nil ? dyb : UnsafePointer(masked),
                                          x: ones, beta: 1, y: dbeta)
                    Scalar.gemvTransposed(rows: b, columns: channels, a: scratch, x: ones, beta: 1,
                                          y: dgammaRaw)
                    start += b
                }
            case .naive:
                for i in 0..<g.outer {
                    let gi = dy + i * channels, row = x + i * channels
                    for j in 0..<channels {
                        let v = mask.map { $0[i * channels + j] != 0 ? gi[j] : 0 } ?? gi[j]
                        dbeta[j] += v
                        dgammaRaw[j] += v * (row[j] - mean[j])
                    }
                }
            }
            return
        }
        let hw = g.inner
        for n in 0..<g.outer {
            var c0 = 0
            while c0 < channels {
                let cb = min(block, channels - c0)
                let offset = (n * channels + c0) * hw
                let dyb = dy + offset, xb = x + offset
                for k in 0..<cb {
                    // dy·(x - mean) as dy·((x - mean)·1): the same bits.
                    Scalar.productRow(count: hw, dy: dyb + k * hw, x: xb + k * hw,
                                      mean: mean[c0 + k], invstd: 1, into: scratch + k * hw)
                }
                switch backend {
                case .blas:
                    Scalar.gemvRows(rows: cb, columns: hw, a: dyb, x: ones, beta: 1, y: dbeta + c0)
                    Scalar.gemvRows(rows: cb, columns: hw, a: scratch, x: ones, beta: 1, y: dgammaRaw + c0)
                case .naive:
                    for k in 0..<cb {
                        var sumDy: Scalar = 0, sumP: Scalar = 0
                        for t in 0..<hw {
                            sumDy += dyb[k * hw + t]
                            sumP += scratch[k * hw + t]
                        }
                        dbeta[c0 + k] += sumDy
                        dgammaRaw[c0 + k] += sumP
                    }
                }
                c0 += cb
            }
        }
    }

    /// From the parameter sums, `dgamma = invstd ∘ dgammaRaw` (in place) and the
    /// per-channel coefficients of `dx = A∘dy + B∘(x - mean) + C`:
    /// `A = gamma·invstd`, `B = -A·invstd·dgamma/m`, `C = -A·dbeta/m` with `m`
    /// values per statistic in the batch and `dgamma`, `dbeta` the batch's sums
    /// `sums[0]` (`Σ dy·(x - mean)`) and `sums[1]` (`Σ dy`) (this process's, or all ranks'),
    /// while `p.dgamma` (this process's `Σ dy·(x - mean)`) becomes `Σ dy·xhat`.
    /// With `frozen` statistics, `B = C = 0`. Where `A·invstd` overflows
    /// (a tiny epsilon on a constant channel), `B = -A·(invstd·dgamma)/m`.
    @inlinable
    static func coefficients<Scalar: BLASScalar>(
        _ p: BackwardPointers<Scalar>, sums: VectorSet<Scalar>, channels: Int, count: Int,
        forwardMode: Mode, into coefficients: CombineCoefficients<Scalar>
    ) {
        let frozen = forwardMode == .inference
        let a = coefficients.a, b = coefficients.b, c = coefficients.c
        let sumDyXc = sums[0], sumDy = sums[1]
        let m = Scalar(count)
        for j in 0..<channels {
            p.dgamma[j] *= p.invstd[j]
            let dgamma = sumDyXc[j] * p.invstd[j]
            a[j] = p.gamma[j] * p.invstd[j]
            // `A·invstd` overflows when invstd exceeds ~1.8e19 in Float (an
            // epsilon below ~3e-39 on a constant column, whose dgamma is 0):
            // then the product is taken the other way round.
            var bj = -a[j] * p.invstd[j] * dgamma / m
            if !bj.isFinite { bj = -a[j] * (p.invstd[j] * dgamma) / m }
            b[j] = frozen ? 0 : bj
            c[j] = frozen ? 0 : -a[j] * sumDy[j] / m
        }
    }

    /// `dx = A∘dy + B∘(x - mean) + C` per channel over the geometry: the closed
    /// form's one pass that writes `dx` (with streaming stores when `streaming`).
    /// A, B, C and the mean are ``coefficients(_:sums:channels:count:forwardMode:into:)``'s.
    @inlinable
    static func combine<Scalar: BLASScalar>(
        dy: UnsafePointer<Scalar>, mask: UnsafePointer<UInt8>? = nil, x: UnsafePointer<Scalar>,
        geometry g: ChannelGeometry, coefficients: CombineCoefficients<Scalar>,
        dx: UnsafeMutablePointer<Scalar>, streaming: Bool
    ) {
        assert(mask == nil || g.inner == 1, "a ReLU's mask is applied inside for rows of channels only")
        typealias S = StreamingStores
        let channels = g.channels
        let a = coefficients.a, b = coefficients.b, c = coefficients.c
        let mean = UnsafePointer(coefficients.mean)
        if g.inner == 1 {
            for i in 0..<g.outer {
                let offset = i * channels
                if let mask {
                    Scalar.combineColumnsMaskedRow(count: channels, dy: dy + offset,
                                                   mask: mask + offset, x: x + offset, mean: mean,
                                                   a: a, b: b, c: c, into: dx + offset,
                                                   streaming: streaming)
                } else {
                    Scalar.combineColumnsRow(count: channels, dy: dy + offset, x: x + offset,
                                             mean: mean, a: a, b: b, c: c, into: dx + offset,
                                             streaming: streaming)
                }
            }
            S.fence(streaming)
            return
        }
        let hw = g.inner
        for slab in 0..<(g.outer * channels) {
            let j = slab % channels, offset = slab * hw
            Scalar.combineSlabRow(count: hw, dy: dy + offset, x: x + offset, mean: mean[j],
                                  a: a[j], b: b[j], c: c[j], into: dx + offset,
                                  streaming: streaming)
        }
        S.fence(streaming)
    }

    // MARK: Channels (NCHW)

    /// Per-channel moments of NCHW data: for each sample and block of channels,
    /// `mean_b = gemv(NoTrans, X_b, 1_HW) / HW` (one row per channel), the centred
    /// values into scratch, their residual `gemv(NoTrans, ·, 1_HW)`, the squares
    /// in place, `M2_b = gemv(NoTrans, S_b, 1_HW)`, and a Chan merge of the block
    /// (count `HW` per channel) into the running per-channel totals. A slab
    /// whose variance is within the error of its mean is recomputed exactly
    /// (``Moments/exact(_:count:stride:scratch:ones:)``).
    @inlinable
    static func channelMomentsBLAS<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, geometry g: ChannelGeometry, channelBlock: Int,
        mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>
    ) {
        let hw = g.inner, channels = g.channels
        // The block's mean, M2 and residual, then the block's region.
        var layout = ScratchLayout<Scalar>()
        let sums = layout.region(3 * channels).vectors(3, of: channels, in: scratch)
        let blockMean = sums[0], blockM2 = sums[1], residual = sums[2]
        let region = layout.rest.pointer(in: scratch)
        let inverseCount = 1 / Scalar(hw)
        mean.update(repeating: 0, count: channels)
        m2.update(repeating: 0, count: channels)
        for n in 0..<g.outer {
            var c0 = 0
            while c0 < channels {
                let cb = min(channelBlock, channels - c0)
                let xb = x + (n * channels + c0) * hw
                let block = Workspace<Scalar>.placed(region, awayFrom: xb, by: 2048)
                Scalar.gemvRows(rows: cb, columns: hw, alpha: inverseCount, a: xb, x: ones,
                                beta: 0, y: blockMean)
                for k in 0..<cb {
                    Scalar.centreRow(count: hw, x: xb + k * hw, mean: blockMean[k],
                                     into: block + k * hw)
                }
                Scalar.gemvRows(rows: cb, columns: hw, a: block, x: ones, beta: 0, y: residual)
                Scalar.squareRow(count: cb * hw, block)
                Scalar.gemvRows(rows: cb, columns: hw, a: block, x: ones, beta: 0, y: blockM2)
                let suspect = Moments.correct(count: hw, mean: blockMean, m2: blockM2,
                                              residual: residual, length: cb)
                for k in 0..<(suspect ? cb : 0)
                where Moments.isDegenerate(mean: blockMean[k], m2: blockM2[k], count: hw) {
                    (blockMean[k], blockM2[k]) = Moments.exact(xb + k * hw, count: hw, stride: 1,
                                                               scratch: block + k * hw, ones: ones)
                }
                _ = Moments.merge(count: n * hw, mean: mean + c0, m2: m2 + c0, blockCount: hw,
                                  blockMean: blockMean, blockM2: blockM2, length: cb)
                c0 += cb
            }
        }
    }

    /// The textbook for NCHW, shifted by each channel's first value `k_c` (of
    /// sample 0; see ``Moments``): one pass of loops for the shifted sums
    /// `Σ(x - k_c)`, a second for `M2 = Σ((x - k_c) - m'_c)²`; `mean = k_c + m'_c`.
    @inlinable
    static func channelMomentsNaive<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, geometry g: ChannelGeometry,
        mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>
    ) {
        let hw = g.inner, channels = g.channels
        mean.update(repeating: 0, count: channels)
        m2.update(repeating: 0, count: channels)
        for slab in 0..<(g.outer * channels) {
            let row = x + slab * hw, k = x[(slab % channels) * hw]
            var sum: Scalar = 0
            for t in 0..<hw { sum += row[t] - k }
            mean[slab % channels] += sum
        }
        let count = Scalar(g.valuesPerStatistic)
        for c in 0..<channels { mean[c] /= count }
        for slab in 0..<(g.outer * channels) {
            let row = x + slab * hw, c = slab % channels, k = x[c * hw], m = mean[c]
            var sum: Scalar = 0
            for t in 0..<hw {
                let d = (row[t] - k) - m
                sum += d * d
            }
            m2[c] += sum
        }
        for c in 0..<channels { mean[c] += x[c * hw] }
    }
}

/// The normalize pass's per-channel vectors, `y = (x - mean)·scale + shift`:
/// three vectors of a ``VectorSet`` (``Workspace/spread(_:of:in:awayFrom:)``'s,
/// which the pass reads for every row).
@usableFromInline
struct AffineVectors<Scalar: BLASScalar> {
    @usableFromInline let mean, scale, shift: UnsafePointer<Scalar>

    @inlinable
    init(mean: UnsafePointer<Scalar>, scale: UnsafePointer<Scalar>, shift: UnsafePointer<Scalar>) {
        self.mean = mean; self.scale = scale; self.shift = shift
    }

    /// Vectors 0, 1 and 2 of `set`: the mean, the scale and the shift.
    @inlinable
    init(_ set: VectorSet<Scalar>) {
        self.init(mean: set[0], scale: set[1], shift: set[2])
    }

    /// Each vector from channel `channel` on (a unit's first channel).
    /// - Complexity: O(1).
    @inlinable
    func advanced(by channel: Int) -> AffineVectors {
        AffineVectors(mean: mean + channel, scale: scale + channel, shift: shift + channel)
    }
}

/// The closed-form backward's per-channel coefficients of
/// `dx = a·dy + b·(x - mean) + c`, and the mean: four vectors of a
/// ``VectorSet`` that
/// ``BatchNormKernels/coefficients(_:sums:channels:count:forwardMode:into:)``
/// writes and the combine pass reads for every row.
@usableFromInline
struct CombineCoefficients<Scalar: BLASScalar> {
    @usableFromInline let a, b, c, mean: UnsafeMutablePointer<Scalar>

    @inlinable
    init(a: UnsafeMutablePointer<Scalar>, b: UnsafeMutablePointer<Scalar>, c: UnsafeMutablePointer<Scalar>,
         mean: UnsafeMutablePointer<Scalar>) {
        self.a = a; self.b = b; self.c = c; self.mean = mean
    }

    /// Vectors 0 to 3 of `set`: `a`, `b`, `c` and the mean.
    @inlinable
    init(_ set: VectorSet<Scalar>) {
        self.init(a: set[0], b: set[1], c: set[2], mean: set[3])
    }

    /// Each vector from channel `channel` on (a unit's first channel).
    /// - Complexity: O(1).
    @inlinable
    func advanced(by channel: Int) -> CombineCoefficients {
        CombineCoefficients(a: a + channel, b: b + channel, c: c + channel, mean: mean + channel)
    }
}

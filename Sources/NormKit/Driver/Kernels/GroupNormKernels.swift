/// The kernels of group normalization over NCHW data. Each sample's `C`
/// channels form `G` groups of `C/G` contiguous channels; group `(n, g)` is the
/// contiguous row `n·G + g` of an `(N·G) x L` matrix, `L = (C/G)·H·W`, and its
/// channels are `C/G` slabs of `H·W` inside that row.
///
/// Statistics are per row: one row at a time with two `dot`s
/// (``LayerNormKernels/statistics(ofRow:columns:epsilon:rowStatistics:ones:row:)``) when a
/// row has at least ``LayerNormKernels/rowKernelMinimumColumns`` values,
/// otherwise ``LayerNormKernels/rowStatisticsBLAS`` (`gemv(NoTrans, X_b, 1_L)`
/// on row blocks that stay in L2); the affine step
/// and the parameter gradients are per channel, with per-slab sums
/// `gemv(NoTrans, ·, 1_HW)` over the block's `(C/G)` slabs per row.
@usableFromInline
enum GroupNormKernels {
    /// The shape of a group-norm problem.
    @usableFromInline
    struct Geometry: Sendable {
        @usableFromInline let samples: Int
        @usableFromInline let channels: Int
        @usableFromInline let groups: Int
        @usableFromInline let spatial: Int

        @inlinable
        init(samples: Int, channels: Int, groups: Int, spatial: Int) {
            self.samples = samples
            self.channels = channels
            self.groups = groups
            self.spatial = spatial
        }

        /// Channels per group.
        @inlinable var channelsPerGroup: Int { channels / groups }
        /// Rows of the `(N·G) x L` view.
        @inlinable var rows: Int { samples * groups }
        /// `L = (C/G)·H·W`, the values per statistic.
        @inlinable var rowLength: Int { channelsPerGroup * spatial }
    }

    // MARK: Forward

    /// Statistics per row and `y = (x - mean_r)·invstd_r·gamma_c + beta_c`: one
    /// row at a time, or by row blocks for short rows (BLAS), or two textbook
    /// passes (naive).
    ///
    /// - Parameters:
    ///   - ones: at least `L` ones (BLAS).
    ///   - scratch: ``LayerNormKernels/forwardScratch(blockRows:columns:rowStatistics:)``
    ///     with `columns = L`, centred (BLAS).
    ///   - copy: where `x` is copied as it is first read (the cache's storage,
    ///     for a forward over borrowed memory: ``InputCopy``), or `nil`; a
    ///     unit of rows at a time (a block of short rows, or as many whole
    ///     rows as ``InputCopy/unitRows(length:)`` says), which the passes then
    ///     read from L2. Not on the naive backend.
    /// - Returns: the first row `n·G + g` whose statistics are not finite, or `nil`.
    @inlinable
    static func forward<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, geometry g: Geometry, blockRows: Int, epsilon: Scalar,
        backend: Backend, gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>,
        mean: UnsafeMutablePointer<Scalar>, invstd: UnsafeMutablePointer<Scalar>,
        y: UnsafeMutablePointer<Scalar>, streaming: Bool, epilogue: Epilogue<Scalar> = .identity,
        copy: InputCopy<Scalar>? = nil,
        ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>
    ) -> Int? {
        let length = g.rowLength
        precondition(copy == nil || backend == .blas, "the naive backend copies ahead of its passes")
        switch backend {
        case .blas where length >= LayerNormKernels.rowKernelMinimumColumns:
            // One row (group) at a time, as LayerNorm's forward.
            let row = LayerNormKernels.rowScratch(scratch, input: x)
            let unit = copy?.unitRows(length: length) ?? 1
            for r in 0..<g.rows {
                if let copy, r % unit == 0 {
                    copy.copy(x, offset: r * length, count: min(unit, g.rows - r) * length)
                }
                guard let (m, s) = LayerNormKernels.statistics(
                    ofRow: x + r * length, columns: length, epsilon: epsilon, rowStatistics: .meanAndVariance,
                    ones: ones, row: row) else { return r }
                mean[r] = m
                invstd[r] = s
                affine(x: x, geometry: g, rows: r..<(r + 1), mean: mean, invstd: invstd,
                       gamma: gamma, beta: beta, y: y, streaming: streaming, epilogue: epilogue)
            }
            return nil
        case .blas:
            let regions = LayerNormKernels.BlockScratch(scratch, blockRows: blockRows, columns: length,
                                                        squares: true)
            var start = 0
            while start < g.rows {
                let b = min(blockRows, g.rows - start)
                copy?.copy(x, offset: start * length, count: b * length)
                if let bad = LayerNormKernels.rowStatisticsBLAS(
                    x: x + start * length, rows: b, columns: length, epsilon: epsilon,
                    rowStatistics: .meanAndVariance, mean: mean + start, invstd: invstd + start,
                    squares: regions.squares!, variance: regions.variance, ones: ones) {
                    return start + bad
                }
                affine(x: x, geometry: g, rows: start..<(start + b), mean: mean, invstd: invstd,
                       gamma: gamma, beta: beta, y: y, streaming: streaming, epilogue: epilogue)
                start += b
            }
            return nil
        case .naive:
            if let bad = LayerNormKernels.rowStatisticsNaive(
                x: x, rows: g.rows, columns: length, epsilon: epsilon, rowStatistics: .meanAndVariance,
                mean: mean, invstd: invstd) {
                return bad
            }
            affine(x: x, geometry: g, rows: 0..<g.rows, mean: mean, invstd: invstd,
                   gamma: gamma, beta: beta, y: y, streaming: streaming, epilogue: epilogue)
            return nil
        }
    }

    /// `y = (x - mean_r) · invstd_r · gamma_c + beta_c` for the rows in `rows`,
    /// with streaming stores when `streaming` (see ``StreamingStores``).
    @inlinable
    static func affine<Scalar: BLASScalar>(
        x: UnsafePointer<Scalar>, geometry g: Geometry, rows: Range<Int>,
        mean: UnsafePointer<Scalar>, invstd: UnsafePointer<Scalar>,
        gamma: UnsafePointer<Scalar>, beta: UnsafePointer<Scalar>, y: UnsafeMutablePointer<Scalar>,
        streaming: Bool, epilogue: Epilogue<Scalar> = .identity
    ) {
        typealias S = StreamingStores
        let perGroup = g.channelsPerGroup, hw = g.spatial
        for r in rows {
            let firstChannel = (r % g.groups) * perGroup
            let m = mean[r], s = invstd[r]
            for k in 0..<perGroup {
                let c = firstChannel + k, offset = (r * perGroup + k) * hw
                let a = s * gamma[c], shift = beta[c]
                let e = epilogue.advanced(by: offset)
                Scalar.affineSlab(count: hw, x: x + offset, mean: m, scale: a, shift: shift,
                                  residual: e.residual, into: y + offset, mask: e.mask,
                                  relu: e.relu, streaming: streaming)
            }
        }
        S.fence(streaming)
    }

    // MARK: Backward

    /// Scratch ``backward`` needs: two per-slab sums and two per-row terms per
    /// row of a block (the block's `P = dy ∘ xhat` lives in `dx`'s block).
    @inlinable
    static func backwardScratch(geometry g: Geometry, blockRows: Int) -> Int {
        2 * blockRows * g.channelsPerGroup + 2 * blockRows
    }

    /// ``backward``'s scratch (``backwardScratch(geometry:blockRows:)``
    /// scalars), named from its first scalar: per slab of a block its `Σ dy`
    /// and `Σ dy·xhat`, then per row its two means.
    @usableFromInline
    struct BackwardScratch<Scalar: BLASScalar> {
        @usableFromInline let slabDy, slabP, rowDxhat, rowDxhatXhat: UnsafeMutablePointer<Scalar>

        @inlinable
        init(_ scratch: UnsafeMutablePointer<Scalar>, slabs: Int, rows: Int) {
            let perSlab = VectorSet(first: scratch, stride: slabs, count: 2)
            let perRow = VectorSet(first: scratch + 2 * slabs, stride: rows, count: 2)
            slabDy = perSlab[0]; slabP = perSlab[1]
            rowDxhat = perRow[0]; rowDxhatXhat = perRow[1]
        }
    }

    /// With `xhat = (x - mean_r)·invstd_r` and `dxhat = gamma_c·dy`, per row:
    /// `dx = invstd_r · (dxhat - mean_L(dxhat) - xhat · mean_L(dxhat·xhat))`;
    /// `dgamma_c = Σ dy·xhat`, `dbeta_c = Σ dy` over samples and space.
    ///
    /// Per block of rows: the per-slab sums `s1 = gemv(NoTrans, dY_b, 1_HW)` and
    /// `s2 = gemv(NoTrans, P_b, 1_HW)` (loops on the naive backend); `dbeta_c += s1`,
    /// `dgamma_c += s2`, and the row terms `Σ_c gamma_c·s1 / L`, `Σ_c gamma_c·s2 / L`;
    /// then `dx` while the block is in L2. `P_b` is written into `dX_b`, which
    /// `dx` then overwrites.
    @inlinable
    static func backward<Scalar: BLASScalar>(
        _ p: BackwardPointers<Scalar>, geometry g: Geometry, blockRows: Int, backend: Backend,
        ones: UnsafePointer<Scalar>, scratch: UnsafeMutablePointer<Scalar>
    ) {
        let perGroup = g.channelsPerGroup, hw = g.spatial, length = g.rowLength
        let regions = BackwardScratch(scratch, slabs: blockRows * perGroup, rows: blockRows)
        let slabDy = regions.slabDy, slabP = regions.slabP
        let rowDxhat = regions.rowDxhat, rowDxhatXhat = regions.rowDxhatXhat
        let inverseLength = 1 / Scalar(length)
        p.dgamma.update(repeating: 0, count: g.channels)
        p.dbeta.update(repeating: 0, count: g.channels)
        var start = 0
        while start < g.rows {
            let b = min(blockRows, g.rows - start), slabs = b * perGroup
            let offset = start * length
            let dyb = p.dy + offset, xb = p.x + offset, block = p.dx + offset
            for r in 0..<b {
                Scalar.productRow(count: length, dy: dyb + r * length, x: xb + r * length,
                                  mean: p.mean[start + r], invstd: p.invstd[start + r],
                                  into: block + r * length)
            }
            switch backend {
            case .blas:
                Scalar.gemvRows(rows: slabs, columns: hw, a: dyb, x: ones, beta: 0, y: slabDy)
                Scalar.gemvRows(rows: slabs, columns: hw, a: block, x: ones, beta: 0, y: slabP)
            case .naive:
                for slab in 0..<slabs {
                    var sumDy: Scalar = 0, sumP: Scalar = 0
                    for t in 0..<hw {
                        sumDy += dyb[slab * hw + t]
                        sumP += block[slab * hw + t]
                    }
                    slabDy[slab] = sumDy
                    slabP[slab] = sumP
                }
            }
            for r in 0..<b {
                let firstChannel = ((start + r) % g.groups) * perGroup
                var a: Scalar = 0, c: Scalar = 0
                for k in 0..<perGroup {
                    let channel = firstChannel + k, slab = r * perGroup + k
                    p.dbeta[channel] += slabDy[slab]
                    p.dgamma[channel] += slabP[slab]
                    a += p.gamma[channel] * slabDy[slab]
                    c += p.gamma[channel] * slabP[slab]
                }
                rowDxhat[r] = a * inverseLength
                rowDxhatXhat[r] = c * inverseLength
            }
            for r in 0..<b {
                let firstChannel = ((start + r) % g.groups) * perGroup
                let m = p.mean[start + r], s = p.invstd[start + r]
                let a = rowDxhat[r], c = rowDxhatXhat[r]
                for k in 0..<perGroup {
                    let slabOffset = offset + (r * perGroup + k) * hw
                    Scalar.groupCombineRow(count: hw, dy: p.dy + slabOffset, x: p.x + slabOffset,
                                           mean: m, invstd: s, gamma: p.gamma[firstChannel + k],
                                           a: a, c: c, into: p.dx + slabOffset)
                }
            }
            start += b
        }
    }
}

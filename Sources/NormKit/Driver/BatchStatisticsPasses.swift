// The parallel phases of the batch-statistics passes (``BatchStatistics``),
// each a named ``Threading/Pass``: its fields are what its chunks read and
// write, its `run(chunk:worker:)` one chunk of rows.

extension BatchStatistics {
    /// The moments phase of a training forward: each chunk of rows (samples)
    /// its own per-channel mean and M2 into its partials (a 16-bit pass
    /// widening unit by unit first, a pass with a `source` copying it into
    /// the cache `x` unit by unit); Chan then merges them in chunk order.
    @usableFromInline
    struct MomentsPass<Scalar: BLASScalar>: Threading.Pass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let geometry: ChannelGeometry
        @usableFromInline let x: UnsafePointer<Scalar>
        @usableFromInline let plan: ForwardScratch<Scalar>
        @usableFromInline let scratch: UnsafeMutablePointer<Scalar>
        @usableFromInline let ones: UnsafePointer<Scalar>
        @usableFromInline let block: Int
        @usableFromInline let backend: Backend
        @usableFromInline let reduced: ReducedStreams?
        @usableFromInline let source: UnsafePointer<Scalar>?
        /// Whether the cache's copy is written with streaming stores.
        @usableFromInline let streaming: Bool

        @inlinable
        init(split: Threading.Split, geometry: ChannelGeometry, x: UnsafePointer<Scalar>,
             plan: ForwardScratch<Scalar>, scratch: UnsafeMutablePointer<Scalar>, ones: UnsafePointer<Scalar>,
             block: Int, backend: Backend, reduced: ReducedStreams?, source: UnsafePointer<Scalar>?,
             streaming: Bool) {
            self.split = split; self.geometry = geometry; self.x = x; self.plan = plan
            self.scratch = scratch; self.ones = ones; self.block = block; self.backend = backend
            self.reduced = reduced; self.source = source; self.streaming = streaming
        }

        @inlinable
        func run(chunk: Int, worker: Int) {
            let g = geometry, channels = g.channels, rows = split.rows(ofChunk: chunk)
            let own = plan.partials.vectors(2, of: channels, in: scratch, chunk)
            let kernelScratch = plan.kernel.pointer(in: scratch, worker)
            if let r = reduced {
                BatchStatistics.reducedMoments(
                    r, rows: rows, geometry: g, block: block, backend: backend, mean: own[0],
                    m2: own[1], ones: ones, kernelScratch: kernelScratch,
                    units: plan.units.pointer(in: scratch, worker), streaming: streaming)
                return
            }
            // A training pass over borrowed memory copies its input into the
            // cache: in the BLAS matrix kernel's centring loop, which reads
            // each row from L2 after the mean's pass brought it there (not
            // with streaming stores); otherwise unit by unit ahead of the
            // moments.
            let copiesInKernel = source != nil && !streaming
                && BatchNormKernels.copiesWhileReading(geometry: g, backend: backend)
            if let source, !copiesInKernel {
                // Each unit copied into the cache, its moments from the
                // caller's (in cache since the copy read it), merged.
                let target = UnsafeMutablePointer(mutating: x)
                BatchStatistics.unitMoments(
                    rows: rows, geometry: g, block: block, backend: backend, mean: own[0],
                    m2: own[1], ones: ones, kernelScratch: kernelScratch,
                    sums: plan.units.vectors(2, of: channels, in: scratch, worker)
                ) { offset, count in
                    StreamingStores.copy(source + offset, count: count, into: target + offset,
                                         streaming: streaming)
                    return source + offset
                }
                StreamingStores.fence(streaming)
                return
            }
            let first = rows.lowerBound * channels * g.inner
            BatchNormKernels.moments(
                x: (source ?? x) + first,
                geometry: ChannelGeometry(outer: rows.count, channels: channels, inner: g.inner),
                block: block, backend: backend, mean: own[0], m2: own[1], ones: ones,
                scratch: kernelScratch,
                copy: copiesInKernel ? UnsafeMutablePointer(mutating: x) + first : nil)
        }
    }

    /// The normalize phase: `y = act((x - mean) * scale + shift + residual)`
    /// (the epilogue's) over a chunk of rows, with the mean, scale and shift
    /// of ``vectors``; a 16-bit
    /// pass widens, runs the `Float` pass and narrows per unit (each worker
    /// its units). An inference forward over borrowed memory (``copy``)
    /// copies `x` into the cache unit by unit and normalizes each unit while
    /// the copy has it in cache.
    @usableFromInline
    struct NormalizePass<Scalar: BLASScalar>: Threading.Pass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let geometry: ChannelGeometry
        @usableFromInline let x: UnsafePointer<Scalar>
        @usableFromInline let y: UnsafeMutablePointer<Scalar>
        @usableFromInline let vectors: AffineVectors<Scalar>
        @usableFromInline let streaming: Bool
        @usableFromInline let epilogue: Epilogue<Scalar>
        /// The geometry's block: a unit's rows (or a sample's channels) where
        /// the pass widens or copies unit by unit
        /// (``ChannelGeometry/forEachUnit(rows:block:_:)``).
        @usableFromInline let block: Int
        @usableFromInline let reduced: (streams: ReducedStreams, copying: Bool,
                                        units: ScratchRegions<Scalar>, scratch: UnsafeMutablePointer<Scalar>)?
        /// The cache's storage that `x` is copied into (a `Float`/`Double`
        /// inference forward over borrowed memory), unit by unit.
        @usableFromInline let copy: InputCopy<Scalar>?

        @inlinable
        init(split: Threading.Split, geometry: ChannelGeometry, x: UnsafePointer<Scalar>,
             y: UnsafeMutablePointer<Scalar>, vectors: AffineVectors<Scalar>, streaming: Bool,
             epilogue: Epilogue<Scalar>, block: Int,
             reduced: (streams: ReducedStreams, copying: Bool, units: ScratchRegions<Scalar>,
                       scratch: UnsafeMutablePointer<Scalar>)?,
             copy: InputCopy<Scalar>?) {
            self.split = split; self.geometry = geometry; self.x = x; self.y = y; self.vectors = vectors
            self.streaming = streaming; self.epilogue = epilogue; self.block = block
            self.reduced = reduced; self.copy = copy
        }

        @inlinable
        func run(chunk: Int, worker: Int) {
            let g = geometry, rows = split.rows(ofChunk: chunk)
            if let r = reduced {
                BatchStatistics.reducedNormalize(
                    r.streams, rows: rows, geometry: g, block: block, vectors: vectors,
                    copying: r.copying, streaming: streaming, epilogue: epilogue,
                    units: r.units.pointer(in: r.scratch, worker))
                return
            }
            if let copy {
                // Elementwise: the units' outputs are the chunk's bits.
                g.forEachUnit(rows: rows, block: block) { offset, unit, c0, _ in
                    copy.copy(x, offset: offset, count: unit.count)
                    let v = vectors.advanced(by: c0)
                    BatchNormKernels.normalize(
                        x: x + offset, geometry: unit, mean: v.mean, scale: v.scale, shift: v.shift,
                        y: y + offset, streaming: streaming,
                        epilogue: epilogue.advanced(by: offset))
                }
                copy.fence()
                return
            }
            let offset = rows.lowerBound * g.channels * g.inner
            BatchNormKernels.normalize(
                x: x + offset, geometry: ChannelGeometry(outer: rows.count, channels: g.channels, inner: g.inner),
                mean: vectors.mean, scale: vectors.scale, shift: vectors.shift, y: y + offset,
                streaming: streaming, epilogue: epilogue.advanced(by: offset))
        }
    }

    /// The first phase of the closed-form backward: each chunk of rows its
    /// partial `Σ dy·(x - mean)` and `Σ dy` per channel (through a ReLU's
    /// mask when there is one; a 16-bit pass widening per unit).
    @usableFromInline
    struct ParameterSumsPass<Scalar: BLASScalar>: Threading.Pass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let geometry: ChannelGeometry
        @usableFromInline let pointers: BackwardPointers<Scalar>
        @usableFromInline let plan: BackwardScratch<Scalar>
        @usableFromInline let scratch: UnsafeMutablePointer<Scalar>
        @usableFromInline let mean: UnsafePointer<Scalar>
        @usableFromInline let ones: UnsafePointer<Scalar>
        @usableFromInline let mask: UnsafePointer<UInt8>?
        @usableFromInline let block: Int
        @usableFromInline let backend: Backend
        @usableFromInline let reduced: ReducedStreams?

        @inlinable
        init(split: Threading.Split, geometry: ChannelGeometry, pointers: BackwardPointers<Scalar>,
             plan: BackwardScratch<Scalar>, scratch: UnsafeMutablePointer<Scalar>, mean: UnsafePointer<Scalar>,
             ones: UnsafePointer<Scalar>, mask: UnsafePointer<UInt8>?, block: Int, backend: Backend,
             reduced: ReducedStreams?) {
            self.split = split; self.geometry = geometry; self.pointers = pointers; self.plan = plan
            self.scratch = scratch; self.mean = mean; self.ones = ones; self.mask = mask; self.block = block
            self.backend = backend; self.reduced = reduced
        }

        @inlinable
        func run(chunk: Int, worker: Int) {
            let g = geometry, p = pointers, channels = g.channels, rows = split.rows(ofChunk: chunk)
            let partial = plan.partials.vectors(2, of: channels, in: scratch, chunk)
            let kernelScratch = plan.kernel.pointer(in: scratch, worker)
            if let r = reduced {
                BatchStatistics.reducedParameterSums(
                    r, rows: rows, geometry: g, block: block, backend: backend, mask: mask, mean: mean,
                    dgammaRaw: partial[0], dbeta: partial[1], ones: ones, kernelScratch: kernelScratch,
                    units: plan.units.pointer(in: scratch, worker))
                return
            }
            let offset = rows.lowerBound * channels * g.inner
            BatchNormKernels.parameterSums(
                dy: p.dy + offset, mask: mask.map { $0 + offset }, x: p.x + offset,
                geometry: ChannelGeometry(outer: rows.count, channels: channels, inner: g.inner),
                block: block, backend: backend, mean: mean, dgammaRaw: partial[0], dbeta: partial[1],
                ones: ones, scratch: kernelScratch)
        }
    }

    /// The second phase of the closed-form backward: `dx = A·dy + B·(x - mean) + C`
    /// per channel over a chunk of rows, with `A`, `B`, `C` and the mean of
    /// ``coefficients`` (a 16-bit pass per unit).
    @usableFromInline
    struct CombinePass<Scalar: BLASScalar>: Threading.Pass {
        @usableFromInline let split: Threading.Split
        @usableFromInline let geometry: ChannelGeometry
        @usableFromInline let pointers: BackwardPointers<Scalar>
        @usableFromInline let coefficients: CombineCoefficients<Scalar>
        @usableFromInline let streaming: Bool
        @usableFromInline let mask: UnsafePointer<UInt8>?
        @usableFromInline let block: Int
        @usableFromInline let reduced: ReducedStreams?
        @usableFromInline let units: ScratchRegions<Scalar>
        @usableFromInline let scratch: UnsafeMutablePointer<Scalar>

        @inlinable
        init(split: Threading.Split, geometry: ChannelGeometry, pointers: BackwardPointers<Scalar>,
             coefficients: CombineCoefficients<Scalar>, streaming: Bool, mask: UnsafePointer<UInt8>?,
             block: Int, reduced: ReducedStreams?, units: ScratchRegions<Scalar>,
             scratch: UnsafeMutablePointer<Scalar>) {
            self.split = split; self.geometry = geometry; self.pointers = pointers
            self.coefficients = coefficients; self.streaming = streaming; self.mask = mask
            self.block = block; self.reduced = reduced; self.units = units; self.scratch = scratch
        }

        @inlinable
        func run(chunk: Int, worker: Int) {
            let g = geometry, p = pointers, rows = split.rows(ofChunk: chunk)
            if let r = reduced {
                BatchStatistics.reducedCombine(
                    r, rows: rows, geometry: g, block: block, mask: mask, coefficients: coefficients,
                    streaming: streaming,
                    units: units.pointer(in: scratch, worker))
                return
            }
            let offset = rows.lowerBound * g.channels * g.inner
            BatchNormKernels.combine(
                dy: p.dy + offset, mask: mask.map { $0 + offset }, x: p.x + offset,
                geometry: ChannelGeometry(outer: rows.count, channels: g.channels, inner: g.inner),
                coefficients: coefficients, dx: p.dx + offset, streaming: streaming)
        }
    }

    /// The staged backward's three phases over a chunk of rows (one struct,
    /// its ``stage`` set between them): cs231n's graph up to `divar` with the
    /// chunk's partial `dgamma`, `dbeta` and `divar` (``Stage/one``); the
    /// `dxmu` node with its partial `dmu` (``Stage/two``); `dx` from the
    /// batch's `Σ dxmu` (``Stage/three``). Worker `w` keeps its node block in
    /// `nodes`, chunk `k` its four partials in `chunkSums`.
    @usableFromInline
    struct GraphStagePass<Scalar: BLASScalar>: Threading.Pass {
        @usableFromInline
        enum Stage { case one, two, three }

        @usableFromInline var stage: Stage
        @usableFromInline let split: Threading.Split
        @usableFromInline let channels: Int
        @usableFromInline let pointers: BackwardPointers<Scalar>
        @usableFromInline let chunkSums, nodes: ScratchRegions<Scalar>
        @usableFromInline let scratch: UnsafeMutablePointer<Scalar>
        @usableFromInline let ones: UnsafePointer<Scalar>
        @usableFromInline let blockRows: Int
        @usableFromInline let forwardMode: Mode
        @usableFromInline let backend: Backend
        /// The batch's `dvar` (stage two) and `Σ dxmu` (stage three).
        @usableFromInline let dvar, batchSum: UnsafePointer<Scalar>

        @inlinable
        init(stage: Stage, split: Threading.Split, channels: Int, pointers: BackwardPointers<Scalar>,
             chunkSums: ScratchRegions<Scalar>, nodes: ScratchRegions<Scalar>, scratch: UnsafeMutablePointer<Scalar>,
             ones: UnsafePointer<Scalar>, blockRows: Int, forwardMode: Mode, backend: Backend,
             dvar: UnsafePointer<Scalar>, batchSum: UnsafePointer<Scalar>) {
            self.stage = stage; self.split = split; self.channels = channels; self.pointers = pointers
            self.chunkSums = chunkSums; self.nodes = nodes; self.scratch = scratch; self.ones = ones
            self.blockRows = blockRows; self.forwardMode = forwardMode; self.backend = backend
            self.dvar = dvar; self.batchSum = batchSum
        }

        @inlinable
        func run(chunk: Int, worker: Int) {
            let p = pointers, rows = split.rows(ofChunk: chunk), offset = rows.lowerBound * channels
            let sums = chunkSums.vectors(4, of: channels, in: scratch, chunk)
            switch stage {
            case .one:
                BatchNormKernels.graphStageOne(
                    dy: p.dy + offset, x: p.x + offset, rows: rows.count, columns: channels,
                    blockRows: blockRows, mean: p.mean, invstd: p.invstd, gamma: p.gamma,
                    forwardMode: forwardMode, backend: backend, dx: p.dx + offset,
                    node: nodes.pointer(in: scratch, worker),
                    dgamma: sums[0], dbeta: sums[1], divar: sums[2], ones: ones)
            case .two:
                BatchNormKernels.graphStageTwo(
                    x: p.x + offset, rows: rows.count, columns: channels, blockRows: blockRows,
                    count: split.outer, mean: p.mean, invstd: p.invstd, dvar: dvar, backend: backend,
                    dx: p.dx + offset, dmu: sums[3], ones: ones)
            case .three:
                BatchNormKernels.graphStageThree(rows: rows.count, columns: channels, count: split.outer,
                                                 sumDxmu: batchSum, dx: p.dx + offset)
            }
        }
    }
}

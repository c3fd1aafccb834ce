internal import CNormKitSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How many threads NormKit's BLAS kernels use, and how they split the work.
///
/// NormKit owns its parallelism. The BLAS backend splits the samples (rows) of
/// an input into chunks fixed by the input's shape alone (`Threading.Split`), runs the
/// chunks on up to `threadCount` threads, and merges the chunks' partial
/// results in chunk order (moments with Chan's formula, parameter gradients
/// and the staged backward's column sums by summation). The reduction tree is
/// therefore the same at every thread count, and so are the results, bit for
/// bit; only which thread computes which chunk changes. The naive backend
/// stays on the calling thread.
///
/// While the chunks run, OpenBLAS runs on one thread (``BLASRuntime``), so the
/// two never oversubscribe the cores. The default is the number of cores this
/// process may run on (its CPU affinity mask, not the host's core count).
public enum Threading {
    static let storage = Atomic<Int>(defaultThreadCount)

    /// The default ``threadCount``: the cores in this process's CPU affinity
    /// mask when NormKit first read it (what `taskset`, cgroup cpusets and
    /// container CPU sets allow), not the host's core count.
    public static let defaultThreadCount = affinityCoreCount()

    /// The number of threads the BLAS kernels may use, at least 1. Process-wide.
    /// Defaults to the cores in this process's CPU affinity mask. More threads
    /// than cores gain nothing: on one core, 2 threads took twice as long as 1
    /// at 64x1024 and 3-6% longer at 4096x1024 (measured with normbench).
    ///
    /// Results do not depend on it: see ``Threading``.
    public static var threadCount: Int {
        get { storage.load(ordering: .relaxed) }
        set { storage.store(max(1, newValue), ordering: .relaxed) }
    }

    /// The cores this process may run on: `sched_getaffinity`'s mask (what
    /// `taskset`, cgroups' cpusets and container limits set), or the online
    /// processors when the mask cannot be read.
    static func affinityCoreCount() -> Int {
        let count = Int(normkit_affinity_cpu_count())
        return count > 0 ? count : max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }

    /// The scalars per chunk: 32768, so that a 64x1024 input has two.
    @usableFromInline static let minimumScalarsPerChunk = 1 << 15

    /// The most chunks an input is split into: enough to balance 16 or more
    /// threads, few enough that merging the chunks' partials stays a small
    /// fraction of the work.
    @usableFromInline static let maximumChunks = 64

    static let minimumBytesStorage = Atomic<Int>(128 << 10)

    /// The least input, in bytes, worth a worker thread of its own (default
    /// 128 KiB, one chunk of Float). Process-wide.
    ///
    /// A kernel uses `min(threadCount, chunks, inputBytes / minimumBytesPerWorker)`
    /// threads. NormKit's workers (`WorkerPool`) wake in microseconds, and on
    /// the development machine (2-core AMD EPYC guest) two threads already
    /// gained 1.5x to 1.9x on every pass at 64x1024 Float (256 KiB, two
    /// chunks). A machine where waking threads costs more may want a larger
    /// value. Which thread runs a chunk never changes the results, so this
    /// decides speed only.
    public static var minimumBytesPerWorker: Int {
        get { minimumBytesStorage.load(ordering: .relaxed) }
        set { minimumBytesStorage.store(max(0, newValue), ordering: .relaxed) }
    }

    /// A split of `outer` rows into chunks fixed by the shape, run by `workers`
    /// threads (each a contiguous run of chunks).
    @usableFromInline
    struct Split: Sendable {
        /// The number of chunks: fixed by the shape and the backend.
        @usableFromInline let chunks: Int
        /// The number of threads that run them: at most `threadCount` and
        /// `chunks`, and one per ``Threading/minimumBytesPerWorker`` of input.
        @usableFromInline let workers: Int
        /// The rows split.
        @usableFromInline let outer: Int

        @inlinable
        init(chunks: Int, workers: Int, outer: Int) {
            self.chunks = chunks
            self.workers = workers
            self.outer = outer
        }

        /// The rows of chunk `index`.
        @inlinable
        func rows(ofChunk index: Int) -> Range<Int> {
            Threading.rows(ofChunk: index, count: chunks, outer: outer)
        }
    }

    /// The split of `outer` rows of `scalarsPerRow` scalars of `Scalar`: one
    /// chunk per ``minimumScalarsPerChunk`` scalars, at most ``maximumChunks``
    /// and at most one per row (the naive backend: one chunk), all fixed by the
    /// shape; then up to ``threadCount`` workers (read once, here), one per
    /// ``minimumBytesPerWorker`` bytes of input.
    @inlinable
    static func split<Scalar>(outer: Int, scalarsPerRow: Int, of _: Scalar.Type,
                              backend: Backend) -> Split {
        guard backend == .blas else { return Split(chunks: 1, workers: 1, outer: outer) }
        let scalars = outer * scalarsPerRow
        let chunks = max(1, min(maximumChunks, outer, scalars / minimumScalarsPerChunk))
        let byBytes = scalars / max(1, minimumBytesPerWorker / MemoryLayout<Scalar>.stride)
        return Split(chunks: chunks, workers: max(1, min(threadCount, chunks, byBytes)), outer: outer)
    }

    /// The rows of chunk `index` of `count` chunks over `outer` rows.
    @inlinable
    static func rows(ofChunk index: Int, count: Int, outer: Int) -> Range<Int> {
        (outer * index / count)..<(outer * (index + 1) / count)
    }

    /// Runs `body(context, chunk, worker)` for every chunk of `split`, worker
    /// `w` taking a contiguous run of chunks in order, on `WorkerPool`'s
    /// threads when there is more than one worker, and returns when all have
    /// finished. `worker` indexes per-thread scratch; `chunk` indexes per-chunk
    /// partial results. Every caller runs inside ``Workspace``'s `withRegions`,
    /// which holds OpenBLAS on one thread meanwhile (see ``BLASRuntime``).
    ///
    /// `body` captures nothing: what it needs comes through `context` (a tuple
    /// of the caller's pointers and sizes, which lives on the caller's stack).
    /// A closure without captures has no context of its own, so handing it to
    /// the worker threads allocates nothing; a capturing one would allocate
    /// its context once per call (which the allocation tests would show).
    @inlinable
    static func run<Context>(
        _ split: Split, _ context: Context,
        _ body: @escaping (_ context: UnsafePointer<Context>, _ chunk: Int, _ worker: Int) -> Void
    ) {
        withUnsafePointer(to: context) { context in
            perform(ChunkJob(split: split, context: context, body: body))
        }
    }

    /// Runs `job` on `job.split.workers` workers: on the calling thread alone
    /// when that is one, or when another thread's kernel holds the pool;
    /// otherwise on `WorkerPool`, which sees the job through a pointer to this
    /// stack frame.
    @inlinable
    static func perform<Job: ChunkedJob>(_ job: Job) {
        let workers = job.split.workers
        if workers == 1 {
            job.run(worker: 0, of: 1)
            return
        }
        let ran = withUnsafePointer(to: job) { job in
            WorkerPool.shared.run(workers: workers, job: WorkerJobReference(job: job))
        }
        // Another thread's kernel holds the pool: this one runs alone.
        if !ran { job.run(worker: 0, of: 1) }
    }

    /// A parallel phase over a split's chunks: worker `w` of `workers` runs a
    /// contiguous run of them.
    @usableFromInline
    protocol ChunkedJob: WorkerJob {
        var split: Split { get }
        func run(worker: Int, of workers: Int)
    }

    /// ``run(_:_:_:)``'s phase.
    @usableFromInline
    struct ChunkJob<Context>: ChunkedJob {
        @usableFromInline let split: Split
        @usableFromInline let context: UnsafePointer<Context>
        @usableFromInline let body: (UnsafePointer<Context>, Int, Int) -> Void

        @inlinable
        init(split: Split, context: UnsafePointer<Context>,
             body: @escaping (UnsafePointer<Context>, Int, Int) -> Void) {
            self.split = split
            self.context = context
            self.body = body
        }

        @inlinable
        func run(worker: Int, of workers: Int) {
            for chunk in Threading.rows(ofChunk: worker, count: workers, outer: split.chunks) {
                body(context, chunk, worker)
            }
        }

        @inlinable
        func run(worker: Int) { run(worker: worker, of: split.workers) }
    }
}

extension Threading {
    /// A named parallel phase: a struct whose fields are what its chunks
    /// read and write, and whose ``run(chunk:worker:)`` runs one chunk
    /// (`worker` indexes per-worker scratch, `chunk` per-chunk partials).
    /// ``run(_:_:)`` hands the pool a pointer to it on the caller's stack:
    /// nothing is allocated.
    @usableFromInline
    protocol Pass {
        func run(chunk: Int, worker: Int)
    }

    /// Runs `pass` for every chunk of `split`, as ``run(_:_:_:)`` runs a body:
    /// through a closure without captures written here, so that it is
    /// specialized with the caller (a worker thread that called the pass
    /// through its protocol conformance would run the unspecialized generic
    /// code: measured 5-45x slower at 2 threads).
    @inlinable
    static func run<P: Pass>(_ split: Split, _ pass: P) {
        run(split, pass) { pass, chunk, worker in pass.pointee.run(chunk: chunk, worker: worker) }
    }
}

extension Threading {
    /// A named parallel phase that can fail on a row: ``run(chunk:worker:)``
    /// returns the first row of its chunk whose statistics are not finite
    /// (counted from the whole split's first), or `nil`.
    @usableFromInline
    protocol FailablePass {
        func run(chunk: Int, worker: Int) -> Int?
    }

    /// Runs `pass` for every chunk of `split` and returns the smallest
    /// failing row, or `nil`: ``firstFailure(_:_:_:)`` through a closure
    /// without captures written here (specialized with the caller, as in
    /// ``run(_:_:)``).
    @inlinable
    static func firstFailure<P: FailablePass>(_ split: Split, _ pass: P) -> Int? {
        firstFailure(split, pass) { pass, chunk, worker in pass.pointee.run(chunk: chunk, worker: worker) }
    }

    /// Runs `body(context, chunk, worker)` for every chunk as
    /// ``run(_:_:_:)`` does and returns the smallest non-`nil` result (the
    /// first failing row), or `nil`. The per-chunk results live on the stack:
    /// nothing is allocated. `body` captures nothing, as in ``run(_:_:_:)``.
    @inlinable
    static func firstFailure<Context>(
        _ split: Split, _ context: Context,
        _ body: @escaping (_ context: UnsafePointer<Context>, _ chunk: Int, _ worker: Int) -> Int?
    ) -> Int? {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: split.chunks) { results in
            withUnsafePointer(to: context) { context in
                perform(FirstFailureJob(split: split, context: context, body: body,
                                        results: results.baseAddress!))
            }
            let first = results.min()!
            return first == Int.max ? nil : first
        }
    }
}

extension Threading {
    /// ``firstFailure(_:_:_:)``'s phase: each chunk's result (`Int.max` for
    /// `nil`) into `results[chunk]`.
    @usableFromInline
    struct FirstFailureJob<Context>: ChunkedJob {
        @usableFromInline let split: Split
        @usableFromInline let context: UnsafePointer<Context>
        @usableFromInline let body: (UnsafePointer<Context>, Int, Int) -> Int?
        @usableFromInline let results: UnsafeMutablePointer<Int>

        @inlinable
        init(split: Split, context: UnsafePointer<Context>,
             body: @escaping (UnsafePointer<Context>, Int, Int) -> Int?,
             results: UnsafeMutablePointer<Int>) {
            self.split = split
            self.context = context
            self.body = body
            self.results = results
        }

        /// Worker `worker` of `workers`: its contiguous run of chunks.
        @inlinable
        func run(worker: Int, of workers: Int) {
            for chunk in Threading.rows(ofChunk: worker, count: workers, outer: split.chunks) {
                results[chunk] = body(context, chunk, worker) ?? Int.max
            }
        }

        @inlinable
        func run(worker: Int) { run(worker: worker, of: split.workers) }
    }

    /// Sums the chunks' partial sums of one vector: chunk `k`'s `count` scalars
    /// are at `first + k * stride`. The first chunk's are copied, the others
    /// added by `axpy`.
    @inlinable
    static func sumPartials<Scalar: BLASScalar>(
        chunks: Int, first: UnsafePointer<Scalar>, stride: Int, count: Int,
        into sum: UnsafeMutablePointer<Scalar>
    ) {
        sum.update(from: first, count: count)
        for chunk in 1..<max(chunks, 1) {
            Scalar.axpy(count: count, alpha: 1, x: first + chunk * stride, y: sum)
        }
    }

    /// Sums the chunks' partial parameter gradients: chunk `k`'s region of
    /// `partials` holds its partial `dgamma` and then its partial `dbeta`
    /// (``ScratchRegions/vectors(_:of:in:_:)``, `count` each); a `nil` one is
    /// not summed.
    @inlinable
    static func sumPartials<Scalar: BLASScalar>(
        _ partials: ScratchRegions<Scalar>, in scratch: UnsafeMutablePointer<Scalar>, chunks: Int, count: Int,
        dgamma: UnsafeMutablePointer<Scalar>?, dbeta: UnsafeMutablePointer<Scalar>?
    ) {
        let first = partials.vectors(2, of: count, in: scratch, 0)
        if let dgamma { sumPartials(chunks: chunks, first: first[0], stride: partials.stride, count: count, into: dgamma) }
        if let dbeta { sumPartials(chunks: chunks, first: first[1], stride: partials.stride, count: count, into: dbeta) }
    }
}

import Dispatch
import Synchronization

/// How many threads NormKit's BLAS kernels use.
///
/// NormKit owns its parallelism: with `threadCount > 1`, the BLAS backend splits
/// the samples (rows) of a large enough input into that many contiguous
/// chunks, runs each chunk's blocks on its own thread, and merges the partial
/// results (moments with Chan's formula, parameter gradients and the staged
/// backward's column sums by summation). The naive backend stays on the calling
/// thread.
///
/// While the chunks run, OpenBLAS runs on one thread (``BLASRuntime``), so the
/// two never oversubscribe the cores. The default is 1.
public enum Threading {
    static let storage = Atomic<Int>(1)

    /// The number of threads the BLAS kernels may use, at least 1. Process-wide.
    public static var threadCount: Int {
        get { storage.load(ordering: .relaxed) }
        set { storage.store(max(1, newValue), ordering: .relaxed) }
    }

    /// The smallest number of scalars worth a thread of its own.
    @usableFromInline static let minimumScalarsPerChunk = 1 << 16

    /// How many chunks to split `outer` rows of `scalarsPerRow` scalars into.
    @inlinable
    static func chunkCount(outer: Int, scalarsPerRow: Int, backend: Backend) -> Int {
        guard backend == .blas else { return 1 }
        let byWork = outer * scalarsPerRow / minimumScalarsPerChunk
        return max(1, min(threadCount, outer, byWork))
    }

    /// The rows of chunk `index` of `count` chunks over `outer` rows.
    @inlinable
    static func rows(ofChunk index: Int, count: Int, outer: Int) -> Range<Int> {
        (outer * index / count)..<(outer * (index + 1) / count)
    }

    /// Runs `body(chunk)` for every chunk in `0..<count`, in parallel when
    /// `count > 1`, and returns when all have finished. OpenBLAS runs on one
    /// thread meanwhile (see ``BLASRuntime``).
    @inlinable
    static func run(chunks count: Int, _ body: (Int) -> Void) {
        BLASRuntime.enterSingleThreaded()
        defer { BLASRuntime.leaveSingleThreaded() }
        if count == 1 {
            body(0)
            return
        }
        // The chunks write disjoint memory through raw pointers, which Swift
        // cannot see; the box states that the closure may cross threads.
        withoutActuallyEscaping(body) { escapable in
            let box = UncheckedSendableBody(body: escapable)
            DispatchQueue.concurrentPerform(iterations: count) { box.body($0) }
        }
    }
}

extension Threading {
    /// Runs `body(chunk)` for every chunk as ``run(chunks:_:)`` does and returns
    /// the smallest non-`nil` result (the first failing row), or `nil`. The
    /// per-chunk results live on the stack: nothing is allocated.
    @inlinable
    static func firstFailure(chunks count: Int, _ body: (Int) -> Int?) -> Int? {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: count) { results in
            run(chunks: count) { chunk in results[chunk] = body(chunk) ?? Int.max }
            let first = results.min()!
            return first == Int.max ? nil : first
        }
    }
}

extension Threading {
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
            Scalar.axpy(count: count, alpha: 1, x: first + chunk * stride, incx: 1, y: sum, incy: 1)
        }
    }

    /// Sums the chunks' partial parameter gradients: chunk `k` holds its partial
    /// `dgamma` at `first + k * stride` and its partial `dbeta` right after it
    /// (`count` each).
    @inlinable
    static func sumPartials<Scalar: BLASScalar>(
        chunks: Int, first: UnsafePointer<Scalar>, stride: Int, count: Int,
        dgamma: UnsafeMutablePointer<Scalar>, dbeta: UnsafeMutablePointer<Scalar>
    ) {
        sumPartials(chunks: chunks, first: first, stride: stride, count: count, into: dgamma)
        sumPartials(chunks: chunks, first: first + count, stride: stride, count: count, into: dbeta)
    }
}

/// A closure that ``Threading/run(chunks:_:)`` runs on several threads; every
/// caller writes only its own chunk's memory.
@usableFromInline
struct UncheckedSendableBody: @unchecked Sendable {
    @usableFromInline let body: (Int) -> Void
    @inlinable init(body: @escaping (Int) -> Void) { self.body = body }
}

#if canImport(Glibc)
import Glibc
#endif

/// The cache sizes that row blocks are sized against.
public enum CacheGeometry {
    /// The per-core L2 cache in bytes, as the C library reports it
    /// (`sysconf(_SC_LEVEL2_CACHE_SIZE)`), or 512 KiB when it reports nothing.
    public static let level2Bytes: Int = {
        #if canImport(Glibc)
        let reported = sysconf(Int32(_SC_LEVEL2_CACHE_SIZE))
        if reported > 0 { return reported }
        #endif
        return 512 * 1024
    }()

    /// The rows per block such that `buffers` blocks of `rows x columns`
    /// scalars of `bytesPerScalar` bytes fill at most half of L2 (the other
    /// half is left to parameters, vectors and the hardware's prefetching).
    /// At least 1 and at most `rows`.
    @inlinable
    public static func blockRows(rows: Int, columns: Int, bytesPerScalar: Int, buffers: Int) -> Int {
        let budget = level2Bytes / 2
        let perRow = max(1, columns * bytesPerScalar * buffers)
        return max(1, min(rows, budget / perRow))
    }
}

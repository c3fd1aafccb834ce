import CBLAS

/// The OpenBLAS library NormKit runs on: its build and its thread pool.
///
/// NormKit parallelizes its own kernels (``Threading``) and calls BLAS on
/// blocks small enough to stay in L2, where OpenBLAS's own threads only add
/// overhead and oversubscribe the cores. NormKit never changes OpenBLAS's
/// thread count behind your back; set ``threadCount`` (or the environment
/// variable `OPENBLAS_NUM_THREADS`) yourself. `normbench` sets it to 1.
public enum BLASRuntime {
    /// The number of threads OpenBLAS uses (`openblas_get_num_threads` /
    /// `openblas_set_num_threads`). Process-wide.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(clamping: max(1, newValue))) }
    }

    /// OpenBLAS's build configuration string (`openblas_get_config`),
    /// for example `"OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64"`.
    public static var configuration: String {
        guard let text = openblas_get_config() else { return "unknown" }
        return String(cString: text)
    }

    /// The CPU kernel family OpenBLAS selected (`openblas_get_corename`), for
    /// example `"Haswell"`; `OPENBLAS_CORETYPE` overrides the detection.
    public static var coreName: String {
        guard let text = openblas_get_corename() else { return "unknown" }
        return String(cString: text)
    }
}

import CBLAS
import Synchronization

/// The OpenBLAS library NormKit runs on: its build and its thread pool.
///
/// NormKit parallelizes its own kernels (``Threading``) and calls BLAS on
/// blocks small enough to stay in L2. OpenBLAS splits any gemv of at least
/// 9216 elements over its own threads, which for such blocks costs far more
/// than it gains (BatchNorm forward at 32768x1024 took 2.3 times as long with
/// OpenBLAS on 2 threads as on 1) and, beside NormKit's threads, oversubscribes
/// the cores. So while NormKit's kernels run, OpenBLAS runs on one thread; the
/// count it had is restored when they finish, so your own BLAS calls (a GEMM,
/// say) keep OpenBLAS's threads. A call to OpenBLAS from another thread while
/// a NormKit kernel runs gets one thread too.
public enum BLASRuntime {
    /// The number of threads OpenBLAS uses outside NormKit's kernels
    /// (`openblas_get_num_threads` / `openblas_set_num_threads`). Process-wide.
    /// Set while a NormKit kernel runs on another thread, it takes effect
    /// when the last running kernel finishes.
    public static var threadCount: Int {
        get {
            scope.withLock { state in
                Int(state.active > 0 ? state.saved : openblas_get_num_threads())
            }
        }
        set {
            let count = Int32(clamping: max(1, newValue))
            scope.withLock { state in
                if state.active > 0 { state.saved = count } else { openblas_set_num_threads(count) }
            }
        }
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

extension BLASRuntime {
    /// How many NormKit kernels are running, and OpenBLAS's thread count from
    /// before the first of them began (or as ``threadCount`` set it since).
    struct SingleThreadedScope {
        var active = 0
        var saved: Int32 = 1
    }

    static let scope = Mutex(SingleThreadedScope())

    /// Called when a NormKit kernel begins: the first one sets OpenBLAS to one
    /// thread and remembers its count (`openblas_get_num_threads`).
    @usableFromInline
    static func enterSingleThreaded() {
        scope.withLock { state in
            if state.active == 0 {
                state.saved = openblas_get_num_threads()
                if state.saved > 1 { openblas_set_num_threads(1) }
            }
            state.active += 1
        }
    }

    /// Called when a NormKit kernel ends: the last one restores the count.
    @usableFromInline
    static func leaveSingleThreaded() {
        scope.withLock { state in
            state.active -= 1
            if state.active == 0, state.saved > 1 { openblas_set_num_threads(state.saved) }
        }
    }
}

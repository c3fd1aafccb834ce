internal import CBLAS
internal import CNormKitSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

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

// MARK: - OpenBLAS's kernel choice

extension BLASRuntime {
    /// The widest vector instruction set of an x86-64 CPU, or of the kernels an
    /// OpenBLAS core type uses.
    public enum VectorLevel: Int, Sendable, Comparable, CustomStringConvertible {
        /// SSE2/SSE3 only (OpenBLAS's Prescott, Core2, Nehalem, …), or not x86-64.
        case sse = 0
        /// AVX (OpenBLAS's Sandybridge, Bulldozer, Piledriver, Steamroller).
        case avx = 1
        /// AVX2 with FMA (OpenBLAS's Haswell, Zen, Excavator).
        case avx2 = 2
        /// AVX-512 F, CD, BW, DQ and VL (OpenBLAS's SkylakeX, Cooperlake,
        /// SapphireRapids).
        case avx512 = 3

        public static func < (a: VectorLevel, b: VectorLevel) -> Bool { a.rawValue < b.rawValue }

        public var description: String {
            switch self {
            case .sse: "SSE"
            case .avx: "AVX"
            case .avx2: "AVX2"
            case .avx512: "AVX-512"
            }
        }

        /// The `OPENBLAS_CORETYPE` whose kernels use this level.
        public var openBLASCoreType: String {
            switch self {
            case .sse: "Prescott"
            case .avx: "Sandybridge"
            case .avx2: "Haswell"
            case .avx512: "SkylakeX"
            }
        }

        /// The level of an OpenBLAS core type's kernels (case-insensitive), or
        /// `nil` for a name this table does not know (another architecture's,
        /// or a newer one).
        public init?(openBLASCore name: String) {
            switch name.lowercased() {
            case "skylakex", "cooperlake", "sapphirerapids": self = .avx512
            case "haswell", "zen", "excavator": self = .avx2
            case "sandybridge", "bulldozer", "piledriver", "steamroller": self = .avx
            case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "athlon",
                 "opteron", "opteron_sse3", "barcelona", "bobcat", "katmai", "coppermine",
                 "northwood", "banias", "nano": self = .sse
            default: return nil
            }
        }
    }

    /// Advice to set `OPENBLAS_CORETYPE`: OpenBLAS chose kernels older than
    /// the CPU supports.
    public struct CoreAdvice: Sendable, Equatable, CustomStringConvertible {
        /// The core type OpenBLAS chose (``coreName``).
        public let chosen: String
        /// The CPU's vector level.
        public let cpu: VectorLevel
        /// The `OPENBLAS_CORETYPE` to set before the process starts.
        public let recommended: String

        public var description: String {
            "OpenBLAS chose its \(chosen) kernels on a CPU with \(cpu);"
                + " start the process with OPENBLAS_CORETYPE=\(recommended) to use \(cpu) kernels"
        }
    }

    /// This CPU's vector level, as the CPU and the operating system report it
    /// (`__builtin_cpu_supports`).
    public static var cpuVectorLevel: VectorLevel {
        VectorLevel(rawValue: Int(normkit_cpu_vector_tier())) ?? .sse
    }

    /// Advice when OpenBLAS chose an older kernel family than this CPU
    /// supports (OpenBLAS 0.3.21 takes a CPU it does not recognise, such as a
    /// recent Xeon, for a Prescott and runs SSE3 kernels on it); `nil` when its
    /// choice is as good as the CPU allows or its core is not known.
    ///
    /// OpenBLAS reads `OPENBLAS_CORETYPE` when it loads: set it before the
    /// process starts (``restartWithAdvisedCoreIfNeeded(tool:)`` does that
    /// for a command-line tool), or call ``useAdvisedCore()`` at the start of
    /// the program.
    public static var coreAdvice: CoreAdvice? {
        coreAdvice(cpu: cpuVectorLevel, openBLASCore: coreName)
    }

    /// The advice for a CPU of level `cpu` on which OpenBLAS chose
    /// `openBLASCore`: `nil` unless the core's level is known and lower.
    public static func coreAdvice(cpu: VectorLevel, openBLASCore: String) -> CoreAdvice? {
        guard let chosen = VectorLevel(openBLASCore: openBLASCore), chosen < cpu else { return nil }
        return CoreAdvice(chosen: openBLASCore, cpu: cpu, recommended: cpu.openBLASCoreType)
    }

    /// For command-line tools: when ``coreAdvice`` has advice and
    /// `OPENBLAS_CORETYPE` is unset, says so on standard error and re-executes
    /// this process once (`/proc/self/exe`, same arguments) with
    /// `OPENBLAS_CORETYPE` set to the advice. When the variable is already set,
    /// or after the restart, it only prints the advice. Returns when there is
    /// nothing to do or the restart failed.
    public static func restartWithAdvisedCoreIfNeeded(tool: String) {
        guard let advice = coreAdvice else { return }
        let alreadySet = getenv("OPENBLAS_CORETYPE") != nil
        let restarted = getenv("NORMKIT_CORETYPE_RESTARTED") != nil
        if alreadySet || restarted {
            writeError("\(tool): \(advice)\n")
            return
        }
        writeError("\(tool): \(advice); restarting with OPENBLAS_CORETYPE=\(advice.recommended)\n")
        setenv("OPENBLAS_CORETYPE", advice.recommended, 1)
        setenv("NORMKIT_CORETYPE_RESTARTED", "1", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        writeError("\(tool): the restart failed (errno \(errno)); continuing with \(advice.chosen)\n")
    }

    /// What ``useAdvisedCore()`` did.
    public enum CoreSelection: Sendable, Equatable, CustomStringConvertible {
        /// OpenBLAS now runs `to`'s kernels (``coreName``) instead of `from`'s.
        case switched(from: String, to: String)
        /// Nothing to change: ``coreAdvice`` is `nil` for `core`, OpenBLAS's
        /// choice (as good as the CPU allows, or a core this table does not know).
        case unchanged(core: String)
        /// Not switched, for `reason`: `OPENBLAS_CORETYPE` is set (whoever
        /// started the process chose), the OpenBLAS library selects no kernels
        /// at run time (a build for one CPU, not `DYNAMIC_ARCH`), a NormKit
        /// kernel is running, or OpenBLAS, asked again, chose the same kernels.
        case declined(reason: String)

        public var description: String {
            switch self {
            case .switched(let from, let to): "OpenBLAS switched from its \(from) kernels to \(to)"
            case .unchanged(let core): "OpenBLAS keeps its \(core) kernels"
            case .declined(let reason): "OpenBLAS's kernels unchanged: \(reason)"
            }
        }
    }

    /// Switches OpenBLAS to the kernels ``coreAdvice`` recommends, in this
    /// process, without a restart: OpenBLAS chooses again exactly as it does
    /// when it loads with `OPENBLAS_CORETYPE` set to the advice (its
    /// `DYNAMIC_ARCH` entry points `gotoblas_dynamic_quit` and
    /// `gotoblas_dynamic_init`, found with `dlsym`; the variable is unset
    /// again afterwards). Every later BLAS and LAPACK call in the process, yours
    /// included, runs the new kernels; ``coreName`` names them.
    ///
    /// Call it at the start of the program, before any thread calls BLAS:
    /// while it runs OpenBLAS has no kernels, so a BLAS call on another
    /// thread at that moment would crash. It declines while a NormKit kernel
    /// runs, when `OPENBLAS_CORETYPE` is set (that choice stands), and with an
    /// OpenBLAS built for one CPU (no run-time selection to redo). Results of
    /// reductions may differ in the last bits between kernel families (their
    /// sums run in another order), as between two processes started with
    /// different `OPENBLAS_CORETYPE`s.
    ///
    /// ```swift
    /// // First thing in main, before any thread calls BLAS:
    /// let selection = BLASRuntime.useAdvisedCore()
    /// print(selection)   // "OpenBLAS switched from its Prescott kernels to SkylakeX", say
    /// ```
    /// - Returns: what it did; ``CoreSelection/switched(from:to:)`` names the
    ///   kernels OpenBLAS chose (it may fall back from the advice when the
    ///   operating system does not enable the advised vector registers).
    /// - Complexity: O(1): OpenBLAS reads the CPU's identity and its cache sizes.
    @discardableResult
    public static func useAdvisedCore() -> CoreSelection {
        let before = coreName
        guard let advice = coreAdvice(cpu: cpuVectorLevel, openBLASCore: before) else {
            return .unchanged(core: before)
        }
        if let set = getenv("OPENBLAS_CORETYPE") {
            return .declined(reason: "OPENBLAS_CORETYPE is set (\(String(cString: set)))")
        }
        let status: Int32? = scope.withLock { state in
            state.active > 0 ? nil : normkit_openblas_reselect_core(advice.recommended)
        }
        switch status {
        case nil: return .declined(reason: "a NormKit kernel is running")
        case 0:
            let after = coreName
            return after == before
                ? .declined(reason: "OpenBLAS chose its \(before) kernels again") : .switched(from: before, to: after)
        case -1:
            return .declined(reason: "this OpenBLAS selects no kernels at run time (not a DYNAMIC_ARCH build)")
        default: return .declined(reason: "setenv failed (errno \(errno))")
        }
    }

    static func writeError(_ text: String) {
        var text = text
        text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }
}

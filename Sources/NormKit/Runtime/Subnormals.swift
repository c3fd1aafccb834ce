internal import CNormKitSupport

/// Flush-to-zero for subnormal numbers (magnitudes below
/// `Float.leastNormalMagnitude`, 1.2e-38, or Double's 2.2e-308), scoped to a
/// block of code.
///
/// x86-64 CPUs handle subnormal operands and results in microcode, tens to
/// hundreds of cycles each, so a tensor full of them runs several times
/// slower through any layer. ``flushingToZero(_:)`` sets the CPU's
/// flush-to-zero and denormals-are-zero modes (MXCSR FTZ and DAZ) on the
/// calling thread for the duration of `body`, and restores the previous mode
/// afterwards. NormKit's worker threads run each parallel phase in the mode
/// of the thread that called the layer, so the setting covers a whole call:
/// its OpenBLAS calls, its C passes and its Swift loops. A subnormal input or
/// intermediate then counts as zero, and only results that involve subnormal
/// values change: this is PyTorch's `torch.set_flush_denormal(True)`, but for
/// one block of code on one thread rather than for the process.
///
/// Outside such a block NormKit computes with IEEE gradual underflow (unless
/// the caller's thread set FTZ/DAZ itself, which NormKit then honours on its
/// workers too).
///
/// ```swift
/// var bn = try BatchNorm<Float>(featureCount: 16)
/// let x = try Tensor<Float>(randomNormal: [32, 16], seed: 1)
/// let (y, cache) = try Subnormals.flushingToZero { try bn.forward(x, mode: .training) }
/// ```
///
/// On other architectures than x86-64 both are no-ops.
public enum Subnormals {
    /// Runs `body` with flush-to-zero and denormals-are-zero on the calling
    /// thread (and on NormKit's workers for the kernels it calls), then
    /// restores the thread's previous mode, also when `body` throws.
    /// - Complexity: O(1) besides `body`: two MXCSR writes.
    public static func flushingToZero<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let saved = normkit_floating_point_mode()
        normkit_set_floating_point_mode(normkit_flushing_subnormals(saved))
        defer { normkit_set_floating_point_mode(saved) }
        return try body()
    }

    /// Whether the calling thread flushes subnormals to zero now (MXCSR FTZ
    /// and DAZ both set); `false` on other architectures.
    public static var isFlushingToZero: Bool {
        let mode = normkit_floating_point_mode()
        return mode != 0 && normkit_flushing_subnormals(mode) == mode
    }

    /// The calling thread's floating-point mode, which ``WorkerPool`` hands to
    /// the workers that run a job with it.
    static var threadMode: UInt32 { normkit_floating_point_mode() }

    /// Runs `body` with the calling thread's mode set to `mode`, then restores it.
    static func with(threadMode mode: UInt32, _ body: () -> Void) {
        let saved = normkit_floating_point_mode()
        if saved != mode { normkit_set_floating_point_mode(mode) }
        body()
        if saved != mode { normkit_set_floating_point_mode(saved) }
    }
}

internal import CNormKitPasses

/// A 16-bit brain floating-point value: the top half of a `Float`'s bits
/// (sign, 8 exponent bits, 7 significand bits), as `torch.bfloat16`.
///
/// `BFloat16` is a storage type: convert to `Float` (exact) to compute, and
/// back with ``init(_:)`` (rounded to nearest even). It has `Float`'s range and
/// about 3 significant decimal digits. Equality and hashing compare bit
/// patterns (`+0` and `-0` differ; a NaN equals itself).
///
/// ```swift
/// let b = BFloat16(1.00390625)    // halfway between 1 and 1 + 2^-7: rounds to even
/// Float(b) == 1                   // true
/// ```
@frozen
public struct BFloat16: Sendable, Hashable, BitwiseCopyable, CustomStringConvertible {
    /// The value's bits: `Float(self).bitPattern >> 16`.
    public var bitPattern: UInt16

    /// The value whose bits are `bitPattern`.
    /// - Complexity: O(1).
    @inlinable
    public init(bitPattern: UInt16) { self.bitPattern = bitPattern }

    /// `value` rounded to the nearest `BFloat16`, ties to the even one (what
    /// `torch.tensor(value).bfloat16()` gives for every non-NaN value). A value
    /// beyond the largest finite `BFloat16` (about 3.39e38) rounds to an
    /// infinity; a NaN stays a quiet NaN with its sign and the top bits of its
    /// payload (PyTorch writes `0x7FC0` or `0xFFFF` for NaN, depending on the
    /// code path).
    /// - Complexity: O(1).
    @inlinable
    public init(_ value: Float) {
        let u = value.bitPattern
        if u & 0x7fff_ffff > 0x7f80_0000 {
            bitPattern = UInt16(truncatingIfNeeded: u >> 16) | 0x0040
        } else {
            bitPattern = UInt16(truncatingIfNeeded: (u &+ 0x7fff &+ ((u >> 16) & 1)) >> 16)
        }
    }

    /// The value as `Float` prints it.
    public var description: String { Float(self).description }
}

extension Float {
    /// `value` exactly (a `BFloat16` is a `Float` with its low 16 bits zero).
    /// - Complexity: O(1).
    @inlinable
    public init(_ value: BFloat16) { self.init(bitPattern: UInt32(value.bitPattern) << 16) }
}

/// A 16-bit storage type the layers whose `Scalar` is `Float` read and write
/// (``BFloat16`` and Swift's `Float16`): the tensors that stream (input,
/// output, their gradients) in 16 bits, everything the layer owns and every
/// statistic in `Float`.
///
/// NormKit supports these two conforming types; an entry point given another
/// throws ``NormError/unsupportedParameter(name:expected:)``.
public protocol ReducedPrecision: BitwiseCopyable, Sendable {}

extension Float16: ReducedPrecision {}
extension BFloat16: ReducedPrecision {}

/// The precision a cache's input was stored at, and the C passes that widen
/// a 16-bit one to `Float` and narrow `Float` to it.
@usableFromInline
enum StoragePrecision: Sendable, Equatable, CustomStringConvertible {
    case float, float16, bfloat16

    /// The precision of `Storage`.
    /// - Throws: ``NormError/unsupportedParameter(name:expected:)`` for a
    ///   conforming type other than `Float16` and ``BFloat16``.
    @inlinable
    init<Storage: ReducedPrecision>(_: Storage.Type) throws(NormError) {
        if Storage.self == Float16.self {
            self = .float16
        } else if Storage.self == BFloat16.self {
            self = .bfloat16
        } else {
            throw .unsupportedParameter(name: "Storage (\(Storage.self))",
                                        expected: "Float16 or BFloat16")
        }
    }

    @usableFromInline
    var description: String {
        switch self {
        case .float: "Float"
        case .float16: "Float16"
        case .bfloat16: "BFloat16"
        }
    }

    /// `count` 16-bit values at `source` into `target`, exactly, and copied
    /// to `copy` (a training forward's cache; with streaming stores when
    /// `streaming`) when it is not `nil`.
    @usableFromInline
    func widen(_ source: UnsafeRawPointer, into target: UnsafeMutablePointer<Float>, count: Int,
               copy: UnsafeMutableRawPointer? = nil, streaming: Bool = false) {
        let h = source.assumingMemoryBound(to: UInt16.self)
        let c = copy?.assumingMemoryBound(to: UInt16.self)
        switch self {
        case .float16: normkit_widen_f16(h, target, c, count, streaming ? 1 : 0)
        case .bfloat16: normkit_widen_bf16(h, target, c, count, streaming ? 1 : 0)
        case .float: preconditionFailure("a Float cache has nothing to widen")
        }
    }

    /// BatchNorm's centred squares over one row of `count` 16-bit values at
    /// `x`, widened in registers: `d = x[j] - mean[j]`, `residual[j] += d`,
    /// `squares[j] = d·d`, the `Float` pass's expressions on the widened row
    /// (the same bits as ``widen(_:into:count:copy:streaming:)`` and then it).
    @usableFromInline
    func centredSquares(_ x: UnsafeRawPointer, count: Int, mean: UnsafePointer<Float>,
                        squares: UnsafeMutablePointer<Float>,
                        residual: UnsafeMutablePointer<Float>) {
        let h = x.assumingMemoryBound(to: UInt16.self)
        switch self {
        case .float16: normkit_centred_squares_row_f16(h, squares, residual, count, mean)
        case .bfloat16: normkit_centred_squares_row_bf16(h, squares, residual, count, mean)
        case .float: preconditionFailure("a Float row has nothing to widen")
        }
    }

    /// `count` values at `source` rounded to 16 bits (nearest even) into
    /// `target`, with streaming stores when `streaming`; through a fused
    /// epilogue when there is one: `act(source + widen(residual))`, the
    /// `Float` epilogue's expressions and order, a ReLU recording `mask`,
    /// rounded once (`residual` may be `target`'s memory).
    @usableFromInline
    func narrow(_ source: UnsafePointer<Float>, into target: UnsafeMutableRawPointer, count: Int,
                streaming: Bool, residual: UnsafeRawPointer? = nil,
                mask: UnsafeMutablePointer<UInt8>? = nil, relu: Bool = false) {
        let h = target.assumingMemoryBound(to: UInt16.self)
        let s: Int32 = streaming ? 1 : 0
        guard residual != nil || relu else {
            switch self {
            case .float16: normkit_narrow_f16(source, h, count, s)
            case .bfloat16: normkit_narrow_bf16(source, h, count, s)
            case .float: preconditionFailure("a Float output has nothing to narrow")
            }
            return
        }
        let r = residual?.assumingMemoryBound(to: UInt16.self)
        let act: Int32 = relu ? 1 : 0
        switch self {
        case .float16: normkit_narrow_epilogue_f16(source, r, h, mask, count, act, s)
        case .bfloat16: normkit_narrow_epilogue_bf16(source, r, h, mask, count, act, s)
        case .float: preconditionFailure("a Float output has nothing to narrow")
        }
    }

    /// A residual form's prologue over `count` values: `s = x + r` rounded
    /// once to 16 bits (the 16-bit addition), `s` widened into `target` and
    /// copied to `sum` (with streaming stores when `streaming`) when it is
    /// not `nil`. `x` and `r` may be `sum`'s memory.
    @usableFromInline
    func residualSum(_ x: UnsafeRawPointer, _ r: UnsafeRawPointer, into s: UnsafeMutableRawPointer,
                     sum: UnsafeMutableRawPointer?, widened target: UnsafeMutablePointer<Float>,
                     count: Int, streaming: Bool) {
        let h = { (p: UnsafeRawPointer) in p.assumingMemoryBound(to: UInt16.self) }
        let out = s.assumingMemoryBound(to: UInt16.self)
        let copy = sum?.assumingMemoryBound(to: UInt16.self)
        switch self {
        case .float16:
            normkit_residual_sum_f16(h(x), h(r), out, copy, target, count, streaming ? 1 : 0)
        case .bfloat16:
            normkit_residual_sum_bf16(h(x), h(r), out, copy, target, count, streaming ? 1 : 0)
        case .float: preconditionFailure("a Float input has nothing to widen")
        }
    }

    /// BatchNorm's normalize pass over one row of `count` 16-bit values and
    /// its epilogue, `y = act((x - mean) · scale + shift + residual)` per
    /// column, computed in `Float` as the `Float` pass does (the residual
    /// widened) and rounded once to 16 bits, with streaming stores when
    /// `streaming`; a ReLU records `mask = 1` where its input is positive when
    /// `mask` is given; `x` is copied to `copy` in the same loop when given
    /// (an inference forward's cache). `x` and `residual` may be `y`; `copy`
    /// is apart from them.
    @usableFromInline
    func normalizeColumns(count: Int, x: UnsafeRawPointer, mean: UnsafePointer<Float>,
                          scale: UnsafePointer<Float>, shift: UnsafePointer<Float>,
                          residual: UnsafeRawPointer?, mask: UnsafeMutablePointer<UInt8>?,
                          relu: Bool, copy: UnsafeMutableRawPointer?,
                          into y: UnsafeMutableRawPointer, streaming: Bool) {
        let h = x.assumingMemoryBound(to: UInt16.self), out = y.assumingMemoryBound(to: UInt16.self)
        let r = residual?.assumingMemoryBound(to: UInt16.self)
        let c = copy?.assumingMemoryBound(to: UInt16.self)
        switch self {
        case .float16:
            normkit_normalize_columns_f16(h, out, count, mean, scale, shift, r, mask, relu ? 1 : 0,
                                          c, streaming ? 1 : 0)
        case .bfloat16:
            normkit_normalize_columns_bf16(h, out, count, mean, scale, shift, r, mask, relu ? 1 : 0,
                                           c, streaming ? 1 : 0)
        case .float: preconditionFailure("a Float output has nothing to narrow")
        }
    }

    /// BatchNorm's input-gradient pass over one row of `count` 16-bit values,
    /// `dx = a · g + b · (x - mean) + c` per column with `g = dy`, or after a
    /// ReLU `g = mask ? dy : +0`, computed in `Float` as the `Float` pass does
    /// and rounded once to 16 bits. `dy` may be `dx`.
    @usableFromInline
    func combineColumns(count: Int, dy: UnsafeRawPointer, mask: UnsafePointer<UInt8>?,
                        x: UnsafeRawPointer, mean: UnsafePointer<Float>, a: UnsafePointer<Float>,
                        b: UnsafePointer<Float>, c: UnsafePointer<Float>,
                        into dx: UnsafeMutableRawPointer, streaming: Bool) {
        let g = dy.assumingMemoryBound(to: UInt16.self), h = x.assumingMemoryBound(to: UInt16.self)
        let out = dx.assumingMemoryBound(to: UInt16.self)
        switch self {
        case .float16:
            normkit_combine_columns_f16(g, mask, h, out, count, mean, a, b, c, streaming ? 1 : 0)
        case .bfloat16:
            normkit_combine_columns_bf16(g, mask, h, out, count, mean, a, b, c, streaming ? 1 : 0)
        case .float: preconditionFailure("a Float output has nothing to narrow")
        }
    }

    /// LayerNorm's and RMSNorm's `dx` over one row, the `Float` pass's
    /// expression `invstd·(gamma·dy - a - (x - mean)·invstd·b)` (plus the
    /// residual form's `sum` gradient) on `Float` rows, each value rounded
    /// once to 16 bits at `dx`, with streaming stores when `streaming`.
    @usableFromInline
    func combineRow(count: Int, dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
                    sum: UnsafePointer<Float>?, mean: Float, invstd: Float, a: Float, b: Float,
                    gamma: UnsafePointer<Float>, into dx: UnsafeMutableRawPointer, streaming: Bool) {
        let h = dx.assumingMemoryBound(to: UInt16.self), stream: Int32 = streaming ? 1 : 0
        switch self {
        case .float16:
            normkit_combine_row_f16(dy, x, sum, h, count, mean, invstd, a, b, gamma, stream)
        case .bfloat16:
            normkit_combine_row_bf16(dy, x, sum, h, count, mean, invstd, a, b, gamma, stream)
        case .float: preconditionFailure("a Float output has nothing to narrow")
        }
    }

    /// `y = c · scale · gamma + beta` over one row (the `Float` pass's
    /// expression), each value rounded once to 16 bits at `y`, with streaming
    /// stores when `streaming`.
    @usableFromInline
    func scaleShift(count: Int, c: UnsafePointer<Float>, scale: Float, gamma: UnsafePointer<Float>,
                    beta: UnsafePointer<Float>, into y: UnsafeMutableRawPointer, streaming: Bool) {
        let h = y.assumingMemoryBound(to: UInt16.self)
        switch self {
        case .float16: normkit_scale_shift_f16(c, h, count, scale, gamma, beta, streaming ? 1 : 0)
        case .bfloat16: normkit_scale_shift_bf16(c, h, count, scale, gamma, beta, streaming ? 1 : 0)
        case .float: preconditionFailure("a Float output has nothing to narrow")
        }
    }
}

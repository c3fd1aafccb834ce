import CStreamingStore
import Synchronization

/// Streaming (non-temporal) stores for the passes that write a layer's output.
///
/// A store to a line that is not in cache first reads the line from memory
/// (write-allocate), so a pass that reads `x` and writes `y` moves three
/// lines per output line. A streaming store skips that read and leaves the
/// caches alone, so the pass's input stays in cache for whoever reads it
/// again. It pays only when the output cannot stay in cache for whoever reads
/// it next, so the layers stream an output of more than ``minimumBytes`` (a
/// quarter of the last-level cache unless you set it: the input and output of
/// a pass then fill more than half of it, a share the last-level cache of a
/// shared or virtual machine does not keep for one process) and store smaller
/// ones normally; and only where the output's lines are not in cache already
/// (not where a block of the output served as scratch first). What a pass
/// writes for later, the cache's copy of its input and a residual form's two
/// outputs, streams when the pass's whole traffic exceeds four times
/// ``minimumBytes`` (the last-level cache by default). A call over 16-bit
/// storage streams what it writes when all the tensors it reads and writes
/// exceed twice ``minimumBytes`` (`shouldStream(reduced:tensors:)`): its
/// inference passes as the output rule, its training forwards and backwards
/// from smaller outputs. Both
/// backends share the output passes, so the choice favours neither, except in
/// GroupNorm's backward, whose naive intermediate spans the whole batch and so
/// stays in `dx`, unstreamed. The results are the same bit for bit either way.
///
/// Swift has no streaming store; the header-only `CStreamingStore` module
/// provides one (`__builtin_nontemporal_store`) for Swift to inline.
public enum StreamingStores {
    static let storage = Atomic<Int>(-1)

    /// Outputs of more bytes than this are written with streaming stores
    /// (a 16-bit training forward or backward: when its tensors together
    /// exceed twice this). Process-wide; the default is a quarter of
    /// ``CacheGeometry/lastLevelBytes``. Set `Int.max` to never stream, 0 to
    /// stream every output.
    public static var minimumBytes: Int {
        get {
            let value = storage.load(ordering: .relaxed)
            return value < 0 ? CacheGeometry.lastLevelBytes / 4 : value
        }
        set { storage.store(max(0, newValue), ordering: .relaxed) }
    }

    /// The traffic of a pass (the bytes of every tensor it reads and writes)
    /// beyond which what it writes for later streams: four times
    /// ``minimumBytes``, the last-level cache by default (saturating).
    @inlinable
    static var cacheBytes: Int {
        let (bytes, overflow) = minimumBytes.multipliedReportingOverflow(by: 4)
        return overflow ? Int.max : bytes
    }

    /// Whether a pass that writes `count` scalars of `Scalar` streams them.
    @inlinable
    static func shouldStream<Scalar: BLASScalar>(count: Int, of _: Scalar.Type) -> Bool {
        count * MemoryLayout<Scalar>.stride > minimumBytes
    }

    /// Whether a call over 16-bit storage streams what it writes (its output
    /// and, in a training forward, the cache's copy): when the tensors it
    /// reads and writes, `tensors` of `count` 2-byte values each, exceed
    /// twice ``minimumBytes`` (half the last-level cache by default). With
    /// two tensors (inference: the input and the output) this is the output
    /// rule of ``shouldStream(count:of:)``; a training forward counts three
    /// (the input, the output and the copy), a backward three (the output
    /// gradient, the cached input, the input gradient) or four (with a
    /// residual form's sum gradient). The `Float` passes keep the output
    /// rule (see the Performance article).
    /// - Complexity: O(1).
    @inlinable
    static func shouldStream(reduced count: Int, tensors: Int) -> Bool {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: 2 * tensors)
        return overflow || bytes / 2 > minimumBytes
    }

    /// Whether a forward pass streams its copy of `count` scalars of input
    /// into the cache (a 16-bit copy counts as half as many `Float`s): when
    /// the pass's traffic (the input, the output and the copy) exceeds
    /// ``cacheBytes``, so that the copy, which nothing reads before the
    /// backward pass, neither reads its lines first nor evicts the output's.
    /// - Complexity: O(1).
    @inlinable
    static func streamsCopy<Scalar: BLASScalar>(count: Int, of _: Scalar.Type) -> Bool {
        exceedsCache(count: 3 * count, of: Scalar.self)
    }

    /// Whether `count` scalars of `Scalar` (a pass's tensors together) are
    /// more than ``cacheBytes``.
    @inlinable
    static func exceedsCache<Scalar: BLASScalar>(count: Int, of _: Scalar.Type) -> Bool {
        count.multipliedReportingOverflow(by: MemoryLayout<Scalar>.stride).partialValue > cacheBytes
    }

    /// Four values from `pointer`, which need not be aligned.
    @inlinable @inline(__always)
    static func load<Scalar: BLASScalar>(_ pointer: UnsafePointer<Scalar>) -> SIMD4<Scalar> {
        UnsafeRawPointer(pointer).loadUnaligned(as: SIMD4<Scalar>.self)
    }

    /// `count` values copied from `source` to `target` (apart), with
    /// streaming stores on the 16-byte-aligned middle when `streaming`.
    @inlinable
    static func copy<Scalar: BLASScalar>(
        _ source: UnsafePointer<Scalar>, count: Int, into target: UnsafeMutablePointer<Scalar>,
        streaming: Bool
    ) {
        guard streaming else {
            target.update(from: source, count: count)
            return
        }
        write(target, count: count, streaming: true, value: { j in source[j] },
              vector: { j in load(source + j) })
    }

    /// Writes `count` values `value(j)` (or `vector(j)` for `j ..< j + 4`) to
    /// `out`: with streaming stores on the 16-byte-aligned middle when
    /// `streaming`, with plain stores otherwise (and on the ends). `vector`
    /// must compute what `value` computes, four lanes at a time.
    @inlinable @inline(__always)
    static func write<Scalar: BLASScalar>(
        _ out: UnsafeMutablePointer<Scalar>, count: Int, streaming: Bool,
        value: (Int) -> Scalar, vector: (Int) -> SIMD4<Scalar>
    ) {
        guard streaming else {
            for j in 0..<count { out[j] = value(j) }
            return
        }
        let size = MemoryLayout<Scalar>.stride
        let misalignment = Int(bitPattern: UnsafeRawPointer(out)) & 15
        // Scalars are at least 4-byte aligned; reach the next 16-byte boundary.
        let head = misalignment == 0 ? 0 : min(count, (16 - misalignment) / size)
        for j in 0..<head { out[j] = value(j) }
        var j = head
        while j + 4 <= count {
            withUnsafeBytes(of: vector(j)) { bytes in
                var offset = 0
                while offset < 4 * size {
                    normkit_stream_store16(UnsafeMutableRawPointer(out + j) + offset,
                                           bytes.baseAddress! + offset)
                    offset += 16
                }
            }
            j += 4
        }
        while j < count {
            out[j] = value(j)
            j += 1
        }
    }

    /// Makes the streaming stores visible before anything stored after it:
    /// call it once a pass has written its output.
    @inlinable
    static func fence(_ streaming: Bool) {
        if streaming { normkit_stream_fence() }
    }
}

/// Where a forward pass over borrowed memory copies its input as it first
/// reads it: the cache's storage, at the input's offsets, with streaming
/// stores when ``streaming`` (``StreamingStores/streamsCopy(count:of:)``).
/// BatchNorm's inference normalize pass copies this way; GroupNorm's and
/// InstanceNorm's passes only where the copy streams (the input then comes
/// from memory, and the copy's read of it serves the passes after it), a
/// copy that stays in cache being made ahead of them, one long copy.
@usableFromInline
struct InputCopy<Scalar: BLASScalar> {
    /// The copy of the input's first value.
    @usableFromInline let target: UnsafeMutablePointer<Scalar>
    /// Whether the copy is written with streaming stores.
    @usableFromInline let streaming: Bool

    @inlinable
    init(_ target: UnsafeMutablePointer<Scalar>, streaming: Bool) {
        self.target = target
        self.streaming = streaming
    }

    /// The same copy for the input that starts `offset` values later.
    @inlinable
    func advanced(by offset: Int) -> InputCopy {
        InputCopy(target + offset, streaming: streaming)
    }

    /// Copies `count` values of `source` from `offset` to the same offset.
    @inlinable
    func copy(_ source: UnsafePointer<Scalar>, offset: Int, count: Int) {
        StreamingStores.copy(source + offset, count: count, into: target + offset, streaming: streaming)
    }

    /// Makes the copy's streaming stores visible (``StreamingStores/fence(_:)``).
    @inlinable
    func fence() {
        StreamingStores.fence(streaming)
    }

    /// How many whole rows of `length` values one copy moves: a quarter of
    /// L2, at least one row, so that the passes after it find the rows in L2.
    @inlinable
    func unitRows(length: Int) -> Int {
        max(1, CacheGeometry.level2Bytes / 4 / max(1, length * MemoryLayout<Scalar>.stride))
    }
}

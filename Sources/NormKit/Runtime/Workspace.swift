/// Caller-owned scratch memory for the allocation-free entry points.
///
/// A workspace grows to the largest size a call has asked of it and is then
/// reused: a training loop or a benchmark that keeps one workspace per layer
/// allocates only on its first call (or when a shape grows). It holds a vector
/// of ones (the `x` of the column- and row-sum `gemv` calls) followed by
/// scratch space for the row blocks, each starting on a 64-byte boundary.
///
/// A workspace is a value; give each concurrent caller its own.
public struct Workspace<Scalar: BLASScalar>: Sendable {
    @usableFromInline var storage: [Scalar] = []
    @usableFromInline var onesCount = 0
    /// Where the ones start, in scalars from the storage's first element (the
    /// first 64-byte boundary); -1 when they must be written again (new
    /// storage, or a copy whose elements sit at another offset from a line).
    @usableFromInline var onesOffset = -1
    /// The gradient through a fused ReLU when the caller passes no residual
    /// gradient to hold it (`NormCache.withActivationGradient`).
    @usableFromInline var gradient: [Scalar] = []
    /// What a pass reads and writes in place of the parameters a layer does
    /// not have (``Affine``): ones, zeros, and room for two unwanted
    /// gradients, `lines(count)` scalars each (``AffineStandIns``).
    @usableFromInline var standIns: [Scalar] = []

    /// An empty workspace; the first call that uses it sizes it.
    public init() {}

    /// The number of scalars currently held (ones, scratch, and the slack
    /// that puts both on 64-byte boundaries).
    public var capacity: Int { storage.count }

    /// The scalars in one 64-byte cache line.
    @inlinable
    static var lineScalars: Int { 64 / MemoryLayout<Scalar>.stride }

    /// `count` rounded up to whole 64-byte lines. A kernel that carves the
    /// scratch region into parts of such sizes (one per worker, say) gets
    /// every part on a line boundary.
    @inlinable
    static func lines(_ count: Int) -> Int {
        (count + lineScalars - 1) / lineScalars * lineScalars
    }

    /// The scalars in one 4 KiB page: the slack a vector needs in scratch for
    /// ``placed(_:awayFrom:by:)``.
    @inlinable
    static var pageScalars: Int { 4096 / MemoryLayout<Scalar>.stride }

    /// The first address from `region` (with ``pageScalars`` scalars of slack
    /// after what the caller uses) whose offset in a 4 KiB page is `anchor`'s
    /// plus `bytes`, rounded down to a 64-byte line. A scratch row that a pass
    /// stores while it loads the input, or loads while it stores the output,
    /// then sits far from their offsets in the page, where a load would
    /// otherwise wait on an unrelated store whose address matches in its low
    /// 12 bits (4K aliasing; the Architecture article has the measurements).
    /// - Complexity: O(1).
    @inlinable
    static func placed(
        _ region: UnsafeMutablePointer<Scalar>, awayFrom anchor: UnsafePointer<Scalar>, by bytes: Int
    ) -> UnsafeMutablePointer<Scalar> {
        let target = ((Int(bitPattern: anchor) + bytes) % 4096) & ~63
        let distance = (target - Int(bitPattern: region) % 4096 + 4096) % 4096
        return region + distance / MemoryLayout<Scalar>.stride
    }

    /// The scratch ``spread(_:of:in:awayFrom:)`` needs for `vectors` vectors of
    /// `count` scalars.
    @inlinable
    static func spreadScratch(_ vectors: Int, of count: Int) -> Int {
        vectors * spreadStride(vectors, of: count) + pageScalars
    }

    /// The distance in scalars between consecutive vectors of
    /// ``spread(_:of:in:awayFrom:)``: whole lines, and `4096 / (vectors + 1)`
    /// bytes (rounded down to a line) more than a multiple of a page.
    @inlinable
    static func spreadStride(_ vectors: Int, of count: Int) -> Int {
        let step = 4096 / (vectors + 1) / 64 * 64
        let bytes = lines(count) * MemoryLayout<Scalar>.stride
        return (bytes + ((step - bytes) % 4096 + 4096) % 4096) / MemoryLayout<Scalar>.stride
    }

    /// Room in `region` (``spreadScratch(_:of:)`` scalars) for
    /// `vectors` vectors of `count` scalars that a pass reads for every row
    /// (gamma, beta, a mean, coefficients): each on a line, the first
    /// `4096 / (vectors + 1)` bytes past `anchor`'s offset in a page and each
    /// next as far again (``placed(_:awayFrom:by:)``), so that the vectors and
    /// the rows at `anchor`'s offset sit at evenly spaced offsets.
    /// - Returns: the vectors, `[k]` the `k`th.
    @inlinable
    static func spread(
        _ vectors: Int, of count: Int, in region: UnsafeMutablePointer<Scalar>,
        awayFrom anchor: UnsafePointer<Scalar>
    ) -> VectorSet<Scalar> {
        let step = 4096 / (vectors + 1) / 64 * 64
        return VectorSet(first: placed(region, awayFrom: anchor, by: step), stride: spreadStride(vectors, of: count),
                         count: vectors)
    }

    /// Calls `body` with at least `ones` ones and a scratch region of at least
    /// `scratch` scalars, growing the storage only when it is too small. Both
    /// regions start on a 64-byte boundary, whatever the allocator returned:
    /// an AVX2 load from an address 16 bytes off a 32-byte boundary splits a
    /// cache line every other time, and the kernels read their scratch rows
    /// several times each (see the Architecture article).
    ///
    /// Every BLAS call of a layer's pass happens inside such a call, kernels,
    /// merges and running-statistics updates alike, so OpenBLAS runs on one
    /// thread for all of them (``BLASRuntime``).
    @inlinable
    mutating func withRegions<R>(
        ones: Int, scratch: Int,
        _ body: (UnsafePointer<Scalar>, UnsafeMutablePointer<Scalar>) -> R
    ) -> R {
        // The ones start at most a line minus one scalar into the storage.
        let slack = Self.lineScalars - 1
        let scratchCapacity = storage.count - slack - Self.lines(onesCount)
        if storage.isEmpty || ones > onesCount || scratchCapacity < scratch {
            let newOnes = max(ones, onesCount)
            // At least one scratch scalar, so the base address always exists.
            let newScratch = max(1, scratch, scratchCapacity)
            storage = [Scalar].zeros(count: slack + Self.lines(newOnes) + newScratch)
            onesCount = newOnes
            onesOffset = -1
        }
        let onesCount = self.onesCount, written = onesOffset
        BLASRuntime.enterSingleThreaded()
        defer { BLASRuntime.leaveSingleThreaded() }
        var offset = 0
        let result = storage.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            let address = Int(bitPattern: base)
            offset = ((64 - address % 64) % 64) / MemoryLayout<Scalar>.stride
            if offset != written { (base + offset).update(repeating: 1, count: onesCount) }
            return body(UnsafePointer(base + offset), base + offset + Self.lines(onesCount))
        }
        onesOffset = offset
        return result
    }

    /// ``withRegions(ones:scratch:_:)`` with the stand-ins of ``Affine``'s
    /// absent parameters for `parameters` features or channels (sized once,
    /// like the rest).
    @inlinable
    mutating func withRegions<R>(
        ones: Int, scratch: Int, parameters: Int,
        _ body: (UnsafePointer<Scalar>, UnsafeMutablePointer<Scalar>, AffineStandIns<Scalar>) -> R
    ) -> R {
        let stride = Self.lines(max(parameters, 1))
        // Moved out while the regions are open (no copy: `self` then holds none).
        var own = standIns
        standIns = []
        if own.count < 4 * stride {
            own = [Scalar](repeating: 1, count: stride) + [Scalar].zeros(count: 3 * stride)
        }
        defer { standIns = own }
        return own.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!, stride = buffer.count / 4
            let standIns = AffineStandIns(ones: UnsafePointer(base), zeros: UnsafePointer(base + stride),
                                          discard: base + 2 * stride, stride: stride)
            return withRegions(ones: ones, scratch: scratch) { body($0, $1, standIns) }
        }
    }

    /// ``withRegions(ones:scratch:parameters:_:)`` with `gamma` and `beta`
    /// open: `body` gets the ones, the scratch, and the first elements of
    /// `gamma` and `beta`, or of the stand-ins' ones for an empty `gamma` and
    /// zeros for an empty `beta` (a layer without them, ``Affine``).
    /// - Complexity: O(1) besides `body` once the workspace is sized.
    @inlinable
    mutating func withRegions<R>(
        ones: Int, scratch: Int, parameters: Int, gamma: [Scalar], beta: [Scalar],
        _ body: (_ ones: UnsafePointer<Scalar>, _ scratch: UnsafeMutablePointer<Scalar>,
                 _ gamma: UnsafePointer<Scalar>, _ beta: UnsafePointer<Scalar>) -> R
    ) -> R {
        withRegions(ones: ones, scratch: scratch, parameters: parameters) { ones, scratch, standIns in
            withPointers(gamma, beta) { g, b in
                body(ones, scratch, gamma.isEmpty ? standIns.ones : g!, beta.isEmpty ? standIns.zeros : b!)
            }
        }
    }
}

/// What a pass uses for the parameters a layer does not have (``Affine``):
/// ones in place of `gamma`, zeros in place of `beta`, and two vectors that
/// take the gradients nobody asked for (at `discard` and `discard + stride`).
@usableFromInline
struct AffineStandIns<Scalar: BLASScalar> {
    @usableFromInline let ones, zeros: UnsafePointer<Scalar>
    @usableFromInline let discard: UnsafeMutablePointer<Scalar>
    @usableFromInline let stride: Int

    @inlinable
    init(ones: UnsafePointer<Scalar>, zeros: UnsafePointer<Scalar>, discard: UnsafeMutablePointer<Scalar>,
         stride: Int) {
        self.ones = ones; self.zeros = zeros; self.discard = discard; self.stride = stride
    }
}

/// The regions of a pass's scratch, one after another, each on whole 64-byte
/// lines: a pass names each region once (``region(_:)``, or one per worker
/// or chunk with ``regions(_:of:)``), asks the workspace for ``count``
/// scalars, and opens each region from the scratch's first element, so no
/// call site computes an offset and every pass that shares scratch (a forward
/// and its running-statistics update) reads the same layout.
@usableFromInline
struct ScratchLayout<Scalar: BLASScalar> {
    /// The scalars the regions take so far, on whole lines.
    @usableFromInline var count = 0

    @inlinable
    init() {}

    /// A region of `scalars` scalars after the others.
    /// - Complexity: O(1).
    @inlinable
    mutating func region(_ scalars: Int) -> ScratchRegion<Scalar> {
        defer { count += Workspace<Scalar>.lines(scalars) }
        return ScratchRegion(offset: count, count: scalars)
    }

    /// The scratch after the regions so far (a kernel's block, which it
    /// places itself in what its caller sized).
    /// - Complexity: O(1).
    @inlinable
    var rest: ScratchRegion<Scalar> { ScratchRegion(offset: count, count: 0) }

    /// `copies` regions of `scalars` scalars each (one per worker, or per
    /// chunk), each on whole lines, after the others.
    /// - Complexity: O(1).
    @inlinable
    mutating func regions(_ copies: Int, of scalars: Int) -> ScratchRegions<Scalar> {
        let stride = Workspace<Scalar>.lines(scalars)
        defer { count += copies * stride }
        return ScratchRegions(offset: count, stride: stride, copies: copies)
    }
}

/// One region of a ``ScratchLayout``.
@usableFromInline
struct ScratchRegion<Scalar: BLASScalar> {
    @usableFromInline let offset, count: Int

    @inlinable
    init(offset: Int, count: Int) { self.offset = offset; self.count = count }

    /// The region's first scalar in the scratch that starts at `scratch`.
    /// - Complexity: O(1).
    @inlinable
    func pointer(in scratch: UnsafeMutablePointer<Scalar>) -> UnsafeMutablePointer<Scalar> {
        scratch + offset
    }

    /// The region as `vectors` vectors of `length` scalars, back to back.
    /// - Complexity: O(1).
    @inlinable
    func vectors(_ vectors: Int, of length: Int, in scratch: UnsafeMutablePointer<Scalar>) -> VectorSet<Scalar> {
        assert(vectors * length <= count, "\(vectors) vectors of \(length) in a region of \(count)")
        return VectorSet(first: scratch + offset, stride: length, count: vectors)
    }
}

/// Equal regions of a ``ScratchLayout``, one per worker or chunk, ``stride``
/// scalars apart.
@usableFromInline
struct ScratchRegions<Scalar: BLASScalar> {
    @usableFromInline let offset, stride, copies: Int

    @inlinable
    init(offset: Int, stride: Int, copies: Int) {
        self.offset = offset; self.stride = stride; self.copies = copies
    }

    /// Region `index`'s first scalar in the scratch that starts at `scratch`.
    /// - Complexity: O(1).
    @inlinable
    func pointer(in scratch: UnsafeMutablePointer<Scalar>, _ index: Int) -> UnsafeMutablePointer<Scalar> {
        assert(index >= 0 && index < copies, "scratch region \(index) of \(copies)")
        return scratch + offset + index * stride
    }

    /// The regions themselves as a vector set, `[k]` region `k` (each of
    /// at least the scalars the layout asked for).
    /// - Complexity: O(1).
    @inlinable
    func vectors(in scratch: UnsafeMutablePointer<Scalar>) -> VectorSet<Scalar> {
        VectorSet(first: scratch + offset, stride: stride, count: copies)
    }

    /// Region `index` as `vectors` vectors of `length` scalars, back to back.
    /// - Complexity: O(1).
    @inlinable
    func vectors(
        _ vectors: Int, of length: Int, in scratch: UnsafeMutablePointer<Scalar>, _ index: Int
    ) -> VectorSet<Scalar> {
        assert(vectors * length <= stride, "\(vectors) vectors of \(length) in a region of \(stride)")
        return VectorSet(first: pointer(in: scratch, index), stride: length, count: vectors)
    }
}

/// `count` vectors, `stride` scalars apart from `first`: the named parts of
/// a scratch region (a chunk's partial mean and M2, a pass's mean, scale
/// and shift), so that no call site computes where the second one starts.
/// ``Workspace/spread(_:of:in:awayFrom:)`` places them on lines spread over
/// a page; ``ScratchRegions/vectors(_:of:in:_:)`` and
/// ``ScratchRegion/vectors(_:of:in:)`` back to back.
@usableFromInline
struct VectorSet<Scalar: BLASScalar> {
    @usableFromInline let first: UnsafeMutablePointer<Scalar>
    @usableFromInline let stride, count: Int

    @inlinable
    init(first: UnsafeMutablePointer<Scalar>, stride: Int, count: Int) {
        self.first = first; self.stride = stride; self.count = count
    }

    /// The `k`th vector.
    /// - Complexity: O(1).
    @inlinable
    subscript(_ k: Int) -> UnsafeMutablePointer<Scalar> {
        assert(k >= 0 && k < count, "vector \(k) of \(count)")
        return first + k * stride
    }

    /// Every vector advanced to its element `index` (a unit's first channel).
    /// - Complexity: O(1).
    @inlinable
    func advanced(by index: Int) -> VectorSet {
        VectorSet(first: first + index, stride: stride, count: count)
    }
}

/// Reordering the axes of a row-major array: `Tensor.permuted(_:)` and the
/// `.npy` reader's Fortran-order arrays share it.
enum AxisPermutation {
    /// Checks that `axes` names each of `0..<rank` once.
    /// - Throws: ``NormError/invalidShape(expected:actual:)``.
    static func check(_ axes: [Int], rank: Int) throws(NormError) {
        var seen = [Bool](repeating: false, count: rank)
        guard axes.count == rank else {
            throw .invalidShape(expected: "a permutation of the \(rank) axes 0..<\(rank)", actual: axes)
        }
        for axis in axes {
            guard axis >= 0, axis < rank, !seen[axis] else {
                throw .invalidShape(expected: "a permutation of the \(rank) axes 0..<\(rank)", actual: axes)
            }
            seen[axis] = true
        }
    }

    /// Copies `source`, row-major of `shape`, into `destination`, row-major of
    /// `axes.map { shape[$0] }`: the destination's element at index `i` is the
    /// source's whose index along axis `axes[k]` is `i[k]`. `axes` is a
    /// permutation (``check(_:rank:)``) and both buffers hold the product of `shape`.
    /// - Complexity: O(count + rank).
    static func copy<T: BitwiseCopyable>(_ source: UnsafeBufferPointer<T>, shape: [Int], axes: [Int],
                                         into destination: UnsafeMutableBufferPointer<T>) {
        let count = destination.count
        guard count > 0, let from = source.baseAddress, let to = destination.baseAddress else { return }
        guard !axes.isEmpty else { to[0] = from[0]; return }
        var sourceStrides = [Int](repeating: 1, count: shape.count)
        for axis in shape.indices.dropLast().reversed() { sourceStrides[axis] = sourceStrides[axis + 1] * shape[axis + 1] }
        let extents = axes.map { shape[$0] }, strides = axes.map { sourceStrides[$0] }
        let last = extents.count - 1, run = extents[last], step = strides[last]
        var index = [Int](repeating: 0, count: extents.count)
        var offset = 0, written = 0
        while written < count {
            // One run along the destination's last axis, then the odometer.
            var at = offset
            for j in 0..<run { to[written + j] = from[at]; at += step }
            written += run
            var axis = last - 1
            while axis >= 0 {
                index[axis] += 1
                offset += strides[axis]
                if index[axis] < extents[axis] { break }
                offset -= strides[axis] * extents[axis]
                index[axis] = 0
                axis -= 1
            }
        }
    }

    /// ``copy(_:shape:axes:into:)`` over raw items of `itemSize` bytes.
    static func copyBytes(_ source: [UInt8], shape: [Int], axes: [Int], itemSize: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: source.count)
        func copy<T: BitwiseCopyable>(as _: T.Type, shape: [Int], axes: [Int]) {
            source.withUnsafeBytes { from in
                result.withUnsafeMutableBytes { to in
                    AxisPermutation.copy(from.assumingMemoryBound(to: T.self), shape: shape,
                                         axes: axes, into: to.assumingMemoryBound(to: T.self))
                }
            }
        }
        switch itemSize {
        case 1: copy(as: UInt8.self, shape: shape, axes: axes)
        case 2: copy(as: UInt16.self, shape: shape, axes: axes)
        case 4: copy(as: UInt32.self, shape: shape, axes: axes)
        case 8: copy(as: UInt64.self, shape: shape, axes: axes)
        default: copy(as: UInt8.self, shape: shape + [itemSize], axes: axes + [shape.count])   // each item's bytes in order
        }
        return result
    }
}

extension Tensor {
    /// The tensor with its axes reordered: `result.shape[k] == shape[axes[k]]`,
    /// and the result's element at index `i` is this tensor's element whose
    /// index along axis `axes[k]` is `i[k]` (NumPy's `transpose(axes)`,
    /// PyTorch's `permute`). `permuted([1, 0])` transposes a matrix;
    /// `permuted([0, 2, 3, 1])` turns NCHW into NHWC.
    /// - Throws: ``NormError/invalidShape(expected:actual:)`` when `axes` does
    ///   not name each of `0..<rank` once.
    /// - Complexity: O(count + rank); the scalars are copied in the new order.
    public func permuted(_ axes: [Int]) throws(NormError) -> Tensor<Scalar> {
        try AxisPermutation.check(axes, rank: shape.count)
        var scalars = [Scalar].unspecified(count: count)
        storedScalars.withUnsafeBufferPointer { source in
            scalars.withUnsafeMutableBufferPointer { destination in
                AxisPermutation.copy(source, shape: shape, axes: axes, into: destination)
            }
        }
        return Tensor(validatedShape: axes.map { shape[$0] }, scalars: scalars)
    }

    /// The tensor of another scalar type, same shape: each scalar converted
    /// as `Scalar(_:)` converts it: exactly when widening (`Float` to
    /// `Double`), rounded to the nearest, ties to even, when narrowing (a
    /// `Double` beyond `Float`'s range becomes an infinity).
    /// - Complexity: O(count).
    public init<Other: BLASScalar>(_ other: Tensor<Other>) {
        self.init(validatedShape: other.shape, scalars: other.scalars.map { Scalar($0) })
    }
}

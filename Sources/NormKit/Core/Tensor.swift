import Foundation

/// A dense, row-major (C order) array of scalars with a shape.
///
/// `Tensor` is a value type with copy-on-write storage: passing one to a layer,
/// keeping it in a cache or returning it copies no scalars. The last dimension
/// varies fastest: a `(N, D)` tensor holds row `i` at `scalars[i*D ..< (i+1)*D]`,
/// and a `(N, C, H, W)` tensor holds channel `c` of sample `n` as the
/// contiguous slab `scalars[(n*C + c)*H*W ..< (n*C + c + 1)*H*W]`.
public struct Tensor<Scalar: BLASScalar>: Sendable, Equatable {
    /// The extent of each dimension.
    public var shape: [Int] { storedShape }
    /// The scalars in row-major order; `scalars.count == shape.reduce(1, *)`.
    public var scalars: [Scalar] { storedScalars }

    @usableFromInline var storedShape: [Int]
    @usableFromInline var storedScalars: [Scalar]

    /// Creates a tensor from a shape and its scalars in row-major order.
    ///
    /// - Throws: ``NormError/negativeDimension(shape:)`` for a negative
    ///   dimension, ``NormError/scalarCountMismatch(shape:scalarCount:)`` when
    ///   `scalars.count` is not the product of `shape`.
    public init(shape: [Int], scalars: [Scalar]) throws(NormError) {
        let count = try Tensor.elementCount(of: shape)
        guard count == scalars.count else {
            throw .scalarCountMismatch(shape: shape, scalarCount: scalars.count)
        }
        self.storedShape = shape
        self.storedScalars = scalars
    }

    /// Creates a tensor of zeros.
    ///
    /// - Throws: ``NormError/negativeDimension(shape:)`` for a negative
    ///   dimension, ``NormError/shapeOverflow(shape:)`` when the product of
    ///   `shape` does not fit in `Int`. A shape with a zero extent has no
    ///   scalars and is valid whatever its other extents.
    /// - Complexity: O(product of `shape`).
    public init(zeros shape: [Int]) throws(NormError) {
        let count = try Tensor.elementCount(of: shape)
        self.init(validatedShape: shape, scalars: .zeros(count: count))
    }

    /// A tensor from a shape already validated by ``elementCount(of:)`` (or
    /// known to be valid, as `[0]`) and its scalars.
    @usableFromInline
    init(validatedShape shape: [Int], scalars: [Scalar]) {
        self.storedShape = shape
        self.storedScalars = scalars
    }

    /// An empty tensor of shape `[0]`, what unfilled caches and outputs hold.
    @inlinable
    static var empty: Tensor<Scalar> { Tensor(validatedShape: [0], scalars: []) }

    /// Creates a tensor of independent normal samples, the same for the same seed
    /// on every platform.
    ///
    /// The generator is SplitMix64 feeding the Box–Muller transform, computed in
    /// `Double` and rounded to `Scalar`.
    /// - Throws: ``NormError/negativeDimension(shape:)``,
    ///   ``NormError/shapeOverflow(shape:)``, as ``init(zeros:)``.
    /// - Complexity: O(product of `shape`).
    public init(randomNormal shape: [Int], mean: Scalar = 0,
                standardDeviation: Scalar = 1, seed: UInt64) throws(NormError) {
        try self.init(zeros: shape)
        var generator = SplitMix64(seed: seed)
        let mu = Double(mean), sigma = Double(standardDeviation)
        storedScalars.withUnsafeMutableBufferPointer { buffer in
            var index = 0
            while index < buffer.count {
                let (z0, z1) = generator.nextGaussianPair()
                buffer[index] = Scalar(mu + sigma * z0)
                if index + 1 < buffer.count { buffer[index + 1] = Scalar(mu + sigma * z1) }
                index += 2
            }
        }
    }

    /// The number of scalars, the product of ``shape``.
    @inlinable public var count: Int { storedScalars.count }

    /// Calls `body` with the scalars in row-major order.
    @inlinable
    public func withUnsafeBufferPointer<R, E: Error>(
        _ body: (UnsafeBufferPointer<Scalar>) throws(E) -> R
    ) throws(E) -> R {
        try storedScalars.withUnsafeBufferPointer { (buffer) throws(E) -> R in try body(buffer) }
    }

    /// Calls `body` with mutable access to the scalars in row-major order. The
    /// shape cannot change; writes are in place when the storage is unique.
    @inlinable
    public mutating func withUnsafeMutableBufferPointer<R, E: Error>(
        _ body: (inout UnsafeMutableBufferPointer<Scalar>) throws(E) -> R
    ) throws(E) -> R {
        try storedScalars.withUnsafeMutableBufferPointer { (buffer) throws(E) -> R in
            let base = buffer.baseAddress, count = buffer.count
            var view = buffer
            defer { precondition(view.baseAddress == base && view.count == count,
                                 "Tensor: the buffer must not be replaced") }
            return try body(&view)
        }
    }

    /// Gives the tensor `shape`, reusing its storage when the element count
    /// already matches (no allocation) and allocating storage of unspecified
    /// values otherwise, which the caller then overwrites in full. The one way
    /// caller-owned outputs and gradients are sized.
    @usableFromInline
    mutating func prepare(shape newShape: [Int]) {
        if storedShape != newShape { storedShape = newShape }
        let count = newShape.reduce(1, *)
        if storedScalars.count != count { storedScalars = .unspecified(count: count) }
    }

    /// The product of `shape`: every dimension non-negative, 0 when any
    /// dimension is 0 (whatever the others), and otherwise a product that fits
    /// in `Int`, so that the order of the dimensions never matters.
    @usableFromInline
    static func elementCount(of shape: [Int]) throws(NormError) -> Int {
        guard shape.allSatisfy({ $0 >= 0 }) else { throw .negativeDimension(shape: shape) }
        guard let count = Validation.checkedProduct(shape) else { throw .shapeOverflow(shape: shape) }
        return count
    }
}

extension Tensor: CustomStringConvertible {
    /// The scalar type, shape and count (not the scalars).
    public var description: String { "Tensor<\(Scalar.self)>(shape: \(shape), \(count) scalars)" }
}


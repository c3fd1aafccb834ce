
/// A dense, row-major (C order) array of scalars with a shape.
///
/// `Tensor` is a value type with copy-on-write storage: passing one to a layer,
/// keeping it in a cache or returning it copies no scalars. The last dimension
/// varies fastest: a `(N, D)` tensor holds row `i` at `scalars[i*D ..< (i+1)*D]`,
/// and a `(N, C, H, W)` tensor holds channel `c` of sample `n` as the
/// contiguous slab `scalars[(n*C + c)*H*W ..< (n*C + c + 1)*H*W]`.
///
/// ```swift
/// var t = try Tensor<Double>([1, 2, 3, 4, 5, 6], shape: [2, 3])
/// t[1, 2] = 10.5                        // row 1, column 2
/// let column = try t.reshaped([-1, 1])  // (6, 1); -1 is inferred
/// ```
///
/// No shape traps: a negative dimension, a product that overflows `Int` or a
/// scalar count that does not match throws a ``NormError``. Only the subscript
/// traps on an out-of-range index, as `Array`'s does.
public struct Tensor<Scalar: BLASScalar>: Sendable, Hashable {
    /// The extent of each dimension.
    public var shape: [Int] { storedShape }

    /// The scalars in row-major order; `scalars.count == shape.reduce(1, *)`.
    ///
    /// Writes through it are in place (`t.scalars[i] = v` copies nothing when
    /// the storage is unique). Assigning an array of another count makes the
    /// tensor one-dimensional, `[count]`; give it back a shape with
    /// ``reshaped(_:)``.
    public var scalars: [Scalar] {
        get { storedScalars }
        _modify {
            yield &storedScalars
            if storedScalars.count != count(of: storedShape) { storedShape = [storedScalars.count] }
        }
        set {
            storedScalars = newValue
            if newValue.count != count(of: storedShape) { storedShape = [newValue.count] }
        }
    }

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

    /// Creates a tensor from scalars in row-major order and a shape; the same as
    /// ``init(shape:scalars:)``.
    ///
    /// - Throws: ``NormError/negativeDimension(shape:)``,
    ///   ``NormError/shapeOverflow(shape:)``,
    ///   ``NormError/scalarCountMismatch(shape:scalarCount:)``.
    /// - Complexity: O(1) beyond the validation of `shape`; the array is not copied.
    public init(_ scalars: [Scalar], shape: [Int]) throws(NormError) {
        try self.init(shape: shape, scalars: scalars)
    }

    /// A one-dimensional tensor, shape `[scalars.count]`; it cannot fail.
    /// - Complexity: O(1); the array is not copied.
    public init(_ scalars: [Scalar]) {
        self.init(validatedShape: [scalars.count], scalars: scalars)
    }

    /// Creates a tensor with every scalar equal to `value`.
    ///
    /// It throws rather than trap, because `shape` is usually computed at run
    /// time: a negative dimension or an overflowing product is a ``NormError``.
    /// - Throws: ``NormError/negativeDimension(shape:)``,
    ///   ``NormError/shapeOverflow(shape:)``.
    /// - Complexity: O(product of `shape`).
    public init(shape: [Int], repeating value: Scalar) throws(NormError) {
        let count = try Tensor.elementCount(of: shape)
        self.init(validatedShape: shape, scalars: Array(repeating: value, count: count))
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

    /// The product of a shape already known to be valid.
    private func count(of shape: [Int]) -> Int { shape.reduce(1, &*) }

    /// The scalar at a multi-index, one index per dimension: `t[i, j]` of an
    /// `(N, D)` tensor is `scalars[i * D + j]`.
    ///
    /// Traps, as `Array`'s subscript does, when the number of indices is not
    /// the rank or an index is out of its dimension's range.
    /// - Complexity: O(rank).
    public subscript(_ indices: Int...) -> Scalar {
        get { storedScalars[offset(of: indices)] }
        set { storedScalars[offset(of: indices)] = newValue }
    }

    /// The row-major offset of a multi-index; traps when it is out of range.
    private func offset(of indices: [Int]) -> Int {
        precondition(indices.count == storedShape.count,
                     "Tensor: \(indices.count) indices for a tensor of rank \(storedShape.count)")
        var offset = 0
        for (index, extent) in zip(indices, storedShape) {
            precondition(index >= 0 && index < extent,
                         "Tensor: index \(indices) out of range for shape \(storedShape)")
            offset = offset * extent + index
        }
        return offset
    }

    /// The same scalars with another shape of the same count; at most one
    /// dimension may be -1, inferred from the others (as numpy's `reshape`).
    ///
    /// - Throws: ``NormError/scalarCountMismatch(shape:scalarCount:)`` when the
    ///   counts differ or the -1 cannot be inferred exactly,
    ///   ``NormError/negativeDimension(shape:)`` for another negative extent or
    ///   more than one -1, ``NormError/shapeOverflow(shape:)``.
    /// - Complexity: O(rank); the scalars are shared, not copied.
    public func reshaped(_ newShape: [Int]) throws(NormError) -> Tensor<Scalar> {
        var resolved = newShape
        let inferred = newShape.indices.filter { newShape[$0] == -1 }
        if inferred.count == 1 {
            var known = newShape
            known[inferred[0]] = 1
            let product = try Tensor.elementCount(of: known)
            guard product > 0, count % product == 0 else {
                throw .scalarCountMismatch(shape: newShape, scalarCount: count)
            }
            resolved[inferred[0]] = count / product
        }
        let newCount = try Tensor.elementCount(of: resolved)
        guard newCount == count else { throw .scalarCountMismatch(shape: resolved, scalarCount: count) }
        return Tensor(validatedShape: resolved, scalars: storedScalars)
    }

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

    /// Gives the tensor `shape` (a valid tensor's: ``elementCount(of:)`` does
    /// not throw), reusing its storage when the element count already matches
    /// (no allocation) and allocating storage of unspecified values otherwise,
    /// which the caller then overwrites in full. The one way caller-owned
    /// outputs and gradients are sized.
    @usableFromInline
    mutating func prepare(shape newShape: [Int]) {
        if storedShape != newShape { storedShape = newShape }
        // Not `reduce(1, *)`: [Int.max, 2, 0] is valid and its running product overflows.
        let count = Validation.checkedProduct(newShape) ?? 0
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
    /// The scalars nested by dimension, as numpy prints them, with the shape:
    /// `Tensor<Float>([[1.0, 2.0], [3.0, 4.0]], shape: [2, 2])`. Past 1,000
    /// scalars, or 1,000 rows (empty ones too: shape `[Int.max, 0]`), each
    /// dimension shows its first and last three entries around `...`.
    /// - Complexity: O(count) up to 1,000 scalars and rows, then O(6^rank).
    public var description: String {
        var rows = 1
        for extent in storedShape.dropLast() {
            let (product, overflow) = rows.multipliedReportingOverflow(by: extent)
            rows = overflow ? Int.max : product
        }
        let elide = count > 1000 || rows > 1000
        var text = ""
        func write(dimension: Int, offset: Int) {
            if dimension == storedShape.count {
                text += "\(storedScalars[offset])"
                return
            }
            let extent = storedShape[dimension]
            let stride = storedShape[(dimension + 1)...].reduce(1, &*)
            text += "["
            let shown: [Range<Int>] = elide && extent > 6 ? [0..<3, (extent - 3)..<extent] : [0..<extent]
            for (part, indices) in shown.enumerated() {
                if part > 0 { text += ", ..." }
                for index in indices {
                    if index > 0 { text += ", " }
                    write(dimension: dimension + 1, offset: offset + index * stride)
                }
            }
            text += "]"
        }
        write(dimension: 0, offset: 0)
        return "Tensor<\(Scalar.self)>(\(text), shape: \(storedShape))"
    }
}

extension Tensor: Codable {
    private enum CodingKeys: String, CodingKey { case shape, scalars }

    /// Decodes a shape and its scalars in row-major order, and validates them
    /// as ``init(shape:scalars:)`` does.
    /// - Throws: `DecodingError.dataCorrupted` naming the ``NormError`` when
    ///   they do not make a tensor.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let shape = try container.decode([Int].self, forKey: .shape)
        let scalars = try container.decode([Scalar].self, forKey: .scalars)
        do {
            try self.init(shape: shape, scalars: scalars)
        } catch {
            throw DecodingError.dataCorrupted(.init(
                codingPath: container.codingPath, debugDescription: error.description))
        }
    }

    /// Encodes the shape and the scalars in row-major order.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(storedShape, forKey: .shape)
        try container.encode(storedScalars, forKey: .scalars)
    }
}

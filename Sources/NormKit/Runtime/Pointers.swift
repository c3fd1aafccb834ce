// Two arrays opened together, so that a pass that needs several of them
// (a cache's statistics, a layer's gamma and beta) nests one closure per pair.

/// Calls `body` with the first elements of two arrays' storage (`nil` for an
/// empty one's, where the standard library gives none).
/// - Complexity: O(1) besides `body`.
@inlinable
func withPointers<A, B, R>(
    _ a: [A], _ b: [B], _ body: (UnsafePointer<A>?, UnsafePointer<B>?) -> R
) -> R {
    a.withUnsafeBufferPointer { a in
        b.withUnsafeBufferPointer { b in body(a.baseAddress, b.baseAddress) }
    }
}

/// Calls `body` with the first elements of two arrays' mutable storage
/// (`nil` for an empty one's); the arrays may be two stored properties of one
/// value.
/// - Complexity: O(1) besides `body` (O(count) when an array's storage is
///   shared and is copied first).
@inlinable
func withMutablePointers<A, B, R>(
    _ a: inout [A], _ b: inout [B], _ body: (UnsafeMutablePointer<A>?, UnsafeMutablePointer<B>?) -> R
) -> R {
    a.withUnsafeMutableBufferPointer { a in
        b.withUnsafeMutableBufferPointer { b in body(a.baseAddress, b.baseAddress) }
    }
}

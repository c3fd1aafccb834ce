// The `Span` entry points open their spans as buffers and call the entry
// points over borrowed memory. These helpers open them together, read-only
// spans (R) first, then mutable ones (W), in the order of the entry point's
// parameters; each is written with the one before it, so no closure nests
// deeper than two. A `NormError` thrown by the body reaches the caller.
//
// The error leaves the standard library's closures as a value, never thrown
// through them (see `NormalizationStep.forward(_:shape:mode:)`: Swift 6.3.1's
// release build failed LLVM's verifier when the thrown form was inlined into
// an app's top-level code). Only the one-span helpers open spans; the others
// nest them, and their bodies throw through NormKit's own functions.

/// R: `a` as a buffer for `body`.
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffer<A>(
    _ a: Span<A>, _ body: (UnsafeBufferPointer<A>) throws(NormError) -> Void
) throws(NormError) {
    let failure: NormError? = a.withUnsafeBufferPointer { a in
        do throws(NormError) { try body(a); return nil } catch { return error }
    }
    if let failure { throw failure }
}

/// W: `a` as a buffer for `body`.
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffer<A>(
    _ a: inout MutableSpan<A>, _ body: (UnsafeMutableBufferPointer<A>) throws(NormError) -> Void
) throws(NormError) {
    let failure: NormError? = a.withUnsafeMutableBufferPointer { a in
        do throws(NormError) { try body(a); return nil } catch { return error }
    }
    if let failure { throw failure }
}

/// R W: the spans as buffers for `body`.
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffers<A, B>(
    _ a: Span<A>, _ b: inout MutableSpan<B>,
    _ body: (UnsafeBufferPointer<A>, UnsafeMutableBufferPointer<B>) throws(NormError) -> Void
) throws(NormError) {
    try withBuffer(a) { (a) throws(NormError) in
        try withBuffer(&b) { (b) throws(NormError) in try body(a, b) }
    }
}

/// W W: the spans as buffers for `body`.
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffers<A, B>(
    _ a: inout MutableSpan<A>, _ b: inout MutableSpan<B>,
    _ body: (UnsafeMutableBufferPointer<A>, UnsafeMutableBufferPointer<B>) throws(NormError) -> Void
) throws(NormError) {
    try withBuffer(&a) { (a) throws(NormError) in
        try withBuffer(&b) { (b) throws(NormError) in try body(a, b) }
    }
}

/// W W W: the spans as buffers for `body`.
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffers<A, B, C>(
    _ a: inout MutableSpan<A>, _ b: inout MutableSpan<B>, _ c: inout MutableSpan<C>,
    _ body: (UnsafeMutableBufferPointer<A>, UnsafeMutableBufferPointer<B>,
             UnsafeMutableBufferPointer<C>) throws(NormError) -> Void
) throws(NormError) {
    try withBuffer(&a) { (a) throws(NormError) in
        try withBuffers(&b, &c) { (b, c) throws(NormError) in try body(a, b, c) }
    }
}

/// W W W W: the spans as buffers for `body`.
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffers<A, B, C, D>(
    _ a: inout MutableSpan<A>, _ b: inout MutableSpan<B>,
    _ c: inout MutableSpan<C>, _ d: inout MutableSpan<D>,
    _ body: (UnsafeMutableBufferPointer<A>, UnsafeMutableBufferPointer<B>,
             UnsafeMutableBufferPointer<C>, UnsafeMutableBufferPointer<D>) throws(NormError) -> Void
) throws(NormError) {
    try withBuffer(&a) { (a) throws(NormError) in
        try withBuffers(&b, &c, &d) { (b, c, d) throws(NormError) in try body(a, b, c, d) }
    }
}

/// R R W: the spans as buffers for `body` (a residual forward's `x`, `r`, `y`).
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffers<A, B, C>(
    _ a: Span<A>, _ b: Span<B>, _ c: inout MutableSpan<C>,
    _ body: (UnsafeBufferPointer<A>, UnsafeBufferPointer<B>,
             UnsafeMutableBufferPointer<C>) throws(NormError) -> Void
) throws(NormError) {
    try withBuffer(a) { (a) throws(NormError) in
        try withBuffers(b, &c) { (b, c) throws(NormError) in try body(a, b, c) }
    }
}

/// R W W: the spans as buffers for `body`.
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffers<A, B, C>(
    _ a: Span<A>, _ b: inout MutableSpan<B>, _ c: inout MutableSpan<C>,
    _ body: (UnsafeBufferPointer<A>, UnsafeMutableBufferPointer<B>,
             UnsafeMutableBufferPointer<C>) throws(NormError) -> Void
) throws(NormError) {
    try withBuffer(a) { (a) throws(NormError) in
        try withBuffers(&b, &c) { (b, c) throws(NormError) in try body(a, b, c) }
    }
}

/// R R W W: the spans as buffers for `body` (a residual forward's `x`, `r`, `y`, `sum`).
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffers<A, B, C, D>(
    _ a: Span<A>, _ b: Span<B>, _ c: inout MutableSpan<C>, _ d: inout MutableSpan<D>,
    _ body: (UnsafeBufferPointer<A>, UnsafeBufferPointer<B>,
             UnsafeMutableBufferPointer<C>, UnsafeMutableBufferPointer<D>) throws(NormError) -> Void
) throws(NormError) {
    try withBuffer(a) { (a) throws(NormError) in
        try withBuffers(b, &c, &d) { (b, c, d) throws(NormError) in try body(a, b, c, d) }
    }
}

/// R W W W: the spans as buffers for `body` (a backward's `dy`, `dx`, `dgamma`, `dbeta`).
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffers<A, B, C, D>(
    _ a: Span<A>, _ b: inout MutableSpan<B>, _ c: inout MutableSpan<C>, _ d: inout MutableSpan<D>,
    _ body: (UnsafeBufferPointer<A>, UnsafeMutableBufferPointer<B>,
             UnsafeMutableBufferPointer<C>, UnsafeMutableBufferPointer<D>) throws(NormError) -> Void
) throws(NormError) {
    try withBuffer(a) { (a) throws(NormError) in
        try withBuffers(&b, &c, &d) { (b, c, d) throws(NormError) in try body(a, b, c, d) }
    }
}

/// R W W W W: the spans as buffers for `body` (a backward's `dy`, `dx`, the residual's gradient,
/// `dgamma`, `dbeta`).
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffers<A, B, C, D, E>(
    _ a: Span<A>, _ b: inout MutableSpan<B>, _ c: inout MutableSpan<C>,
    _ d: inout MutableSpan<D>, _ e: inout MutableSpan<E>,
    _ body: (UnsafeBufferPointer<A>, UnsafeMutableBufferPointer<B>, UnsafeMutableBufferPointer<C>,
             UnsafeMutableBufferPointer<D>, UnsafeMutableBufferPointer<E>) throws(NormError) -> Void
) throws(NormError) {
    try withBuffer(a) { (a) throws(NormError) in
        try withBuffers(&b, &c, &d, &e) { (b, c, d, e) throws(NormError) in try body(a, b, c, d, e) }
    }
}

/// R R W W W: the spans as buffers for `body` (a backward's `dy`, the sum's gradient, `dx`, `dgamma`,
/// `dbeta`).
/// - Complexity: O(1) besides `body`.
@inlinable
func withBuffers<A, B, C, D, E>(
    _ a: Span<A>, _ b: Span<B>, _ c: inout MutableSpan<C>,
    _ d: inout MutableSpan<D>, _ e: inout MutableSpan<E>,
    _ body: (UnsafeBufferPointer<A>, UnsafeBufferPointer<B>, UnsafeMutableBufferPointer<C>,
             UnsafeMutableBufferPointer<D>, UnsafeMutableBufferPointer<E>) throws(NormError) -> Void
) throws(NormError) {
    try withBuffer(a) { (a) throws(NormError) in
        try withBuffers(b, &c, &d, &e) { (b, c, d, e) throws(NormError) in try body(a, b, c, d, e) }
    }
}

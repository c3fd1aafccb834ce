/// How NormKit allocates scalar storage.
///
/// NormKit's non-inlinable code is generic over ``BLASScalar`` and compiled
/// once, unspecialized, so `Array(repeating: 0, count: n)` there copies every
/// element through the type's value witness: about 15 times slower than
/// `memset`. These helpers fill with raw bytes instead (the all-zero bit
/// pattern is `+0` in IEEE 754), at the same speed whether specialized or not.
extension Array where Element: BLASScalar {
    /// `count` zeros, written as bytes.
    /// - Complexity: O(`count`), one `memset`.
    @usableFromInline
    static func zeros(count: Int) -> [Element] {
        // With count 0, `init(unsafeUninitializedCapacity:)` writes the count
        // into the shared empty-array singleton, a write that two threads
        // making empty tensors at once race on (ThreadSanitizer saw it).
        guard count > 0 else { return [] }
        return Array(unsafeUninitializedCapacity: count) { buffer, initializedCount in
            UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
            initializedCount = count
        }
    }

    /// `count` scalars whose values are unspecified, for a kernel that then
    /// writes every one of them (an output or a gradient): the fresh buffers of
    /// the value API cost an allocation and no extra pass over memory. Only for
    /// outputs documented to hold unspecified values after a throw. (`Float`
    /// and `Double` are trivial types: any bits are a value.)
    /// - Complexity: O(1) besides the allocation.
    @usableFromInline
    static func unspecified(count: Int) -> [Element] {
        guard count > 0 else { return [] }    // as in `zeros(count:)`
        return Array(unsafeUninitializedCapacity: count) { _, initializedCount in
            initializedCount = count
        }
    }

    /// Gives the array `count` elements, reusing its storage when it already
    /// has them (then it allocates nothing) and zero-filling otherwise.
    @usableFromInline
    mutating func resizeReusingStorage(to count: Int) {
        if self.count != count { self = .zeros(count: count) }
    }
}

/// The collective operations synchronized batch statistics need from a group
/// of processes (ranks), so that NormKit's layers depend on no transport:
/// ``SingleProcess`` here, `MPICommunicator` in the `NormKitMPI` product.
///
/// Every rank calls each collective with the same count, in the same order.
/// ``SyncBatchNorm`` and ``SyncSpatialBatchNorm`` call the forms over borrowed
/// memory, which allocate nothing in ``SingleProcess`` and `MPICommunicator`;
/// a communicator that implements only the array forms gets buffer forms that
/// copy through arrays.
public protocol Communicator: Sendable {
    /// This process's index, `0 ..< size`.
    var rank: Int { get }
    /// The number of processes.
    var size: Int { get }
    /// The ranks' `local` arrays concatenated in rank order (every rank passes
    /// the same count).
    /// - Throws: a ``NormError`` when the transport fails.
    func allGather<Scalar: BLASScalar>(_ local: [Scalar]) throws(NormError) -> [Scalar]
    /// Replaces `values` with their elementwise sum over the ranks.
    /// - Throws: a ``NormError`` when the transport fails.
    func allReduceSum<Scalar: BLASScalar>(_ values: inout [Scalar]) throws(NormError)
    /// The ranks' `local` buffers concatenated in rank order into `result`,
    /// which holds `size * local.count` scalars (every rank passes the same count).
    /// - Throws: ``NormError/bufferCountMismatch(name:expected:actual:)`` for a
    ///   `result` of another count; a ``NormError`` when the transport fails.
    func allGather<Scalar: BLASScalar>(
        _ local: UnsafeBufferPointer<Scalar>, into result: UnsafeMutableBufferPointer<Scalar>
    ) throws(NormError)
    /// Replaces `values` with their elementwise sum over the ranks.
    /// - Throws: a ``NormError`` when the transport fails.
    func allReduceSum<Scalar: BLASScalar>(_ values: UnsafeMutableBufferPointer<Scalar>) throws(NormError)
}

extension Communicator {
    /// The buffer form through the array form of `allGather`: copies into an array and back.
    /// - Throws: ``NormError/bufferCountMismatch(name:expected:actual:)`` when
    ///   `result` does not hold `size * local.count` scalars; what the array form throws.
    /// - Complexity: O(`size * local.count`), and two allocations.
    public func allGather<Scalar: BLASScalar>(
        _ local: UnsafeBufferPointer<Scalar>, into result: UnsafeMutableBufferPointer<Scalar>
    ) throws(NormError) {
        try Validation.buffer("result", result.count, expected: size * local.count)
        let gathered = try allGather(Array(local))
        try Validation.buffer("result", result.count, expected: gathered.count)
        _ = result.update(fromContentsOf: gathered)
    }

    /// The buffer form through the array form of `allReduceSum`: copies
    /// into an array and back.
    /// - Throws: what the array form throws.
    /// - Complexity: O(`values.count`), and one allocation.
    public func allReduceSum<Scalar: BLASScalar>(_ values: UnsafeMutableBufferPointer<Scalar>) throws(NormError) {
        var copy = Array(values)
        try allReduceSum(&copy)
        _ = values.update(fromContentsOf: copy)
    }
}

/// One process alone: rank 0 of 1, whose collectives return their input.
public struct SingleProcess: Communicator {
    /// The only process.
    public init() {}
    /// Always 0.
    public var rank: Int { 0 }
    /// Always 1.
    public var size: Int { 1 }
    /// `local` itself.
    /// - Complexity: O(1).
    public func allGather<Scalar: BLASScalar>(_ local: [Scalar]) throws(NormError) -> [Scalar] { local }
    /// Leaves `values` unchanged.
    /// - Complexity: O(1).
    public func allReduceSum<Scalar: BLASScalar>(_ values: inout [Scalar]) throws(NormError) {}
    /// Copies `local` into `result`.
    /// - Throws: ``NormError/bufferCountMismatch(name:expected:actual:)`` when
    ///   `result` holds another count.
    /// - Complexity: O(`local.count`).
    public func allGather<Scalar: BLASScalar>(
        _ local: UnsafeBufferPointer<Scalar>, into result: UnsafeMutableBufferPointer<Scalar>
    ) throws(NormError) {
        try Validation.buffer("result", result.count, expected: local.count)
        _ = result.update(fromContentsOf: local)
    }
    /// Leaves `values` unchanged.
    /// - Complexity: O(1).
    public func allReduceSum<Scalar: BLASScalar>(_ values: UnsafeMutableBufferPointer<Scalar>) throws(NormError) {}
}

/// The collective operations synchronized batch statistics need from a group
/// of processes (ranks), so that NormKit's layers depend on no transport:
/// ``SingleProcess`` here, `MPICommunicator` in the `NormKitMPI` product.
///
/// Every rank calls each collective with the same count, in the same order.
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
}

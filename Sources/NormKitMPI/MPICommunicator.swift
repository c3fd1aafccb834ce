internal import CMPI
public import NormKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The ranks of `MPI_COMM_WORLD` as a NormKit ``Communicator``: the processes
/// that `mpirun -np K` started (Open MPI). ``SyncBatchNorm`` and
/// ``SyncSpatialBatchNorm`` use it to share each batch's statistics.
///
/// ```swift
/// let world = try MPICommunicator.world()
/// var bn = try SyncBatchNorm<Float>(featureCount: 256, communicator: world)
/// ```
///
/// ``world()`` initializes MPI once per process (`MPI_Init_thread` with
/// `MPI_THREAD_SERIALIZED`, unless the application initialized it) and
/// registers `MPI_Finalize` for exit. Collectives are called from one thread
/// at a time; every rank calls them in the same order. MPI's default error
/// handler aborts the whole job on a transport failure, so no rank is left
/// waiting; a nonzero return code that does come back becomes
/// ``NormError/communicationFailure(operation:reason:)``.
///
/// A rank that never makes a collective call (it crashed, or left its loop
/// early) leaves the others waiting in it. With a ``deadline``, the
/// collectives are non-blocking (`MPI_Iallgather`, `MPI_Iallreduce`) and
/// polled: the ranks still waiting when it passes throw
/// ``NormError/communicationFailure(operation:reason:)`` instead of hanging.
/// The abandoned request stays pending inside Open MPI, so the job cannot go
/// on communicating: report the error and end it (`MPI_Abort`, or exit and
/// let `mpirun` end the others).
public final class MPICommunicator: Communicator, @unchecked Sendable {
    // @unchecked: `communicator` is an immutable handle; MPI itself
    // serializes the calls (MPI_THREAD_SERIALIZED); the deadline is an atomic.
    let communicator: MPI_Comm?
    /// This process's rank in `MPI_COMM_WORLD`.
    public let rank: Int
    /// The number of processes in `MPI_COMM_WORLD`.
    public let size: Int
    /// The deadline in nanoseconds, 0 for none.
    private let deadlineNanoseconds = Atomic<Int64>(0)

    /// How long a collective may wait for the other ranks before it throws,
    /// or `nil` (the default) to wait as long as it takes. Process-wide, for
    /// this communicator; set it on every rank. A deadline costs a polling
    /// loop instead of a blocking call; after one passes, end the job (see
    /// the type's documentation).
    public var deadline: Duration? {
        get {
            let nanoseconds = deadlineNanoseconds.load(ordering: .relaxed)
            return nanoseconds == 0 ? nil : .nanoseconds(nanoseconds)
        }
        set {
            let nanoseconds = newValue.map { max(1, $0.components.seconds * 1_000_000_000
                                                    + $0.components.attoseconds / 1_000_000_000) } ?? 0
            deadlineNanoseconds.store(nanoseconds, ordering: .relaxed)
        }
    }

    private init(communicator: MPI_Comm?, rank: Int, size: Int) {
        self.communicator = communicator
        self.rank = rank
        self.size = size
    }

    private static let shared: Result<MPICommunicator, NormError> = {
        var provided: Int32 = 0
        do throws(NormError) {
            try check(normkit_mpi_initialize(&provided), "MPI_Init_thread")
            guard provided >= normkit_mpi_thread_serialized() else {
                throw .communicationFailure(
                    operation: "MPI_Init_thread",
                    reason: "MPI provides thread level \(provided), below MPI_THREAD_SERIALIZED")
            }
            let world = normkit_mpi_comm_world()
            var rank: Int32 = 0, size: Int32 = 0
            try check(MPI_Comm_rank(world, &rank), "MPI_Comm_rank")
            try check(MPI_Comm_size(world, &size), "MPI_Comm_size")
            return .success(MPICommunicator(communicator: world, rank: Int(rank), size: Int(size)))
        } catch {
            return .failure(error)
        }
    }()

    /// The processes of `MPI_COMM_WORLD`, initializing MPI on the first call
    /// in the process (later calls return the same communicator).
    /// - Throws: ``NormError/communicationFailure(operation:reason:)`` when MPI
    ///   cannot be initialized or grants less than `MPI_THREAD_SERIALIZED`.
    /// - Complexity: `MPI_Init_thread` once; O(1) afterwards.
    public static func world() throws(NormError) -> MPICommunicator {
        try shared.get()
    }

    /// Throws for an MPI return code other than `MPI_SUCCESS`, with MPI's message.
    static func check(_ code: Int32, _ operation: String) throws(NormError) {
        guard code != normkit_mpi_success() else { return }
        var message = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
        var length: Int32 = 0
        _ = MPI_Error_string(code, &message, &length)
        let bytes = message.prefix(Int(length)).map { UInt8(bitPattern: $0) }
        throw .communicationFailure(operation: operation, reason: String(decoding: bytes, as: UTF8.self))
    }

    /// A count of MPI's `int`.
    static func mpiCount(_ count: Int) throws(NormError) -> Int32 {
        guard let value = Int32(exactly: count) else { throw .sizeTooLarge(count) }
        return value
    }

    // MARK: Collectives

    /// `MPI_Allgather` of `local`'s bytes into `result` (`size * local.count`
    /// scalars), in rank order.
    /// - Throws: ``NormError/bufferCountMismatch(name:expected:actual:)``;
    ///   ``NormError/communicationFailure(operation:reason:)``.
    /// - Complexity: one `MPI_Allgather` of `local.count` scalars per rank.
    public func allGather<Scalar: BLASScalar>(
        _ local: UnsafeBufferPointer<Scalar>, into result: UnsafeMutableBufferPointer<Scalar>
    ) throws(NormError) {
        guard result.count == size * local.count else {
            throw .bufferCountMismatch(name: "result", expected: size * local.count, actual: result.count)
        }
        let bytes = try Self.mpiCount(local.count * MemoryLayout<Scalar>.stride)
        if let limit = deadline {
            var request: MPI_Request? = nil
            try Self.check(MPI_Iallgather(local.baseAddress, bytes, normkit_mpi_byte(), result.baseAddress,
                                          bytes, normkit_mpi_byte(), communicator, &request),
                           "MPI_Iallgather")
            try wait(for: &request, within: limit, "MPI_Iallgather")
            return
        }
        try Self.check(MPI_Allgather(local.baseAddress, bytes, normkit_mpi_byte(),
                                     result.baseAddress, bytes, normkit_mpi_byte(), communicator),
                       "MPI_Allgather")
    }

    /// Polls `request` (`MPI_Test`) until it completes or `limit` has passed.
    /// - Throws: ``NormError/communicationFailure(operation:reason:)`` when the
    ///   deadline passes first, or MPI fails.
    private func wait(for request: inout MPI_Request?, within limit: Duration, _ operation: String) throws(NormError) {
        let clock = ContinuousClock(), start = clock.now
        var done: Int32 = 0, polls = 0
        while true {
            try Self.check(MPI_Test(&request, &done, normkit_mpi_status_ignore()), operation)
            if done != 0 { return }
            if clock.now - start > limit {
                throw .communicationFailure(
                    operation: operation,
                    reason: "not every rank called it within the deadline of \(limit) (a rank that never "
                        + "calls leaves the request pending: end the job)")
            }
            polls += 1
            // Spin briefly (a collective usually completes in microseconds), then yield the core.
            if polls > 1000 { usleep(polls > 100_000 ? 1000 : 50) }
        }
    }

    /// `MPI_Allreduce` with `MPI_SUM`, in place (`MPI_IN_PLACE`), as
    /// `MPI_FLOAT` or `MPI_DOUBLE`. Open MPI chooses the order of the sums;
    /// every rank receives the same result.
    /// - Throws: ``NormError/communicationFailure(operation:reason:)``, also for
    ///   a scalar type MPI has no datatype for here (neither Float nor Double).
    /// - Complexity: one `MPI_Allreduce` of `values.count` scalars.
    public func allReduceSum<Scalar: BLASScalar>(_ values: UnsafeMutableBufferPointer<Scalar>) throws(NormError) {
        guard let type = (Scalar.self as? any MPIDatatype.Type)?.mpiDatatype else {
            throw .communicationFailure(operation: "MPI_Allreduce",
                                        reason: "no MPI datatype for \(Scalar.self)")
        }
        let count = try Self.mpiCount(values.count)
        if let limit = deadline {
            var request: MPI_Request? = nil
            try Self.check(MPI_Iallreduce(normkit_mpi_in_place(), values.baseAddress, count, type,
                                          normkit_mpi_sum(), communicator, &request),
                           "MPI_Iallreduce")
            try wait(for: &request, within: limit, "MPI_Iallreduce")
            return
        }
        try Self.check(MPI_Allreduce(normkit_mpi_in_place(), values.baseAddress, count, type,
                                     normkit_mpi_sum(), communicator),
                       "MPI_Allreduce")
    }

    /// The ranks' arrays concatenated in rank order (``allGather(_:into:)``).
    /// - Throws: as ``allGather(_:into:)``.
    /// - Complexity: one `MPI_Allgather`, and one allocation.
    public func allGather<Scalar: BLASScalar>(_ local: [Scalar]) throws(NormError) -> [Scalar] {
        var result = [Scalar](repeating: 0, count: size * local.count)
        let failure: NormError? = local.withUnsafeBufferPointer { local in
            result.withUnsafeMutableBufferPointer { result in
                do throws(NormError) { try allGather(local, into: result); return nil }
                catch { return error }
            }
        }
        if let failure { throw failure }
        return result
    }

    /// The elementwise sum over the ranks, in place (the `MPI_Allreduce` of the buffer form).
    /// - Throws: as that method.
    /// - Complexity: one `MPI_Allreduce`.
    public func allReduceSum<Scalar: BLASScalar>(_ values: inout [Scalar]) throws(NormError) {
        let failure: NormError? = values.withUnsafeMutableBufferPointer { values in
            do throws(NormError) { try allReduceSum(values); return nil }
            catch { return error }
        }
        if let failure { throw failure }
    }

    /// Ends every process of the job (`MPI_Abort`), with `code` as `mpirun`'s
    /// exit status: what to do after a collective's ``deadline`` passed.
    public func abort(code: Int32) -> Never {
        _ = MPI_Abort(communicator, code)
        exit(code)
    }

    /// Waits until every rank has called it (`MPI_Barrier`).
    /// - Throws: ``NormError/communicationFailure(operation:reason:)``.
    public func barrier() throws(NormError) {
        try Self.check(MPI_Barrier(communicator), "MPI_Barrier")
    }
}

/// The MPI datatype of a scalar type, for reductions (a gather moves bytes).
protocol MPIDatatype {
    static var mpiDatatype: MPI_Datatype? { get }
}

extension Float: MPIDatatype {
    static var mpiDatatype: MPI_Datatype? { normkit_mpi_float() }
}

extension Double: MPIDatatype {
    static var mpiDatatype: MPI_Datatype? { normkit_mpi_double() }
}

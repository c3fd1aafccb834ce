import ChildProcess
import Foundation
import Testing

/// The synchronized layers across processes: `NormKitMPIChecks` (in
/// Tests/NormKitMPIChecks) under `mpirun` with 1, 2 and 3 ranks, each with a
/// time limit, so a rank that waits forever fails the test (mpirun reports
/// the limit and aborts the job) instead of hanging the suite. Skipped when NORMKIT_SKIP_MPI is set (the sanitizer runs: Open
/// MPI's own allocations are not ours to chase).
@Suite("mpirun")
struct MPIRunTests {
    /// Runs the checks (built beside this test bundle) under `mpirun -np
    /// ranks` with `arguments`, and returns mpirun's exit status and output.
    /// mpirun's own --timeout aborts every rank of a job that outlives it (a
    /// rank left waiting); the outer timeout is a backstop for mpirun.
    static func mpirun(ranks: Int, _ arguments: [String] = []) throws -> (status: Int32, output: String) {
        let limit = Int(ProcessInfo.processInfo.environment["NORMKIT_MPI_TIMEOUT"] ?? "") ?? 180
        return try ChildProcess.run(
            seconds: limit + 30,
            ["mpirun", "--allow-run-as-root", "--oversubscribe", "--timeout", "\(limit)", "-np", "\(ranks)",
             ChildProcess.built("NormKitMPIChecks")] + arguments)
    }

    @Test("SyncBatchNorm and SyncSpatialBatchNorm agree with the single-process layers", arguments: [1, 2, 3])
    func ranks(_ count: Int) throws {
        if ProcessInfo.processInfo.environment["NORMKIT_SKIP_MPI"] != nil { return }
        let (status, output) = try Self.mpirun(ranks: count)
        #expect(status == 0, "mpirun -np \(count) exited \(status):\n\(output)")
        #expect(output.contains("\(count) rank(s):") && output.contains("all passed"), "\(output)")
    }

    @Test("a rank left alone in a collective throws when MPICommunicator's deadline passes")
    func deadline() throws {
        if ProcessInfo.processInfo.environment["NORMKIT_SKIP_MPI"] != nil { return }
        let (status, output) = try Self.mpirun(ranks: 2, ["deadline"])
        // Rank 0 ends the job with MPI_Abort(3) after its forward threw.
        #expect(status == 3, "mpirun exited \(status):\n\(output)")
        #expect(output.contains("deadline: rank 0 threw after") && output.contains("within the deadline"),
                "\(output)")
    }
}

import ChildProcess
import Foundation
import Testing

/// `mpirun -np K normlab compare --data-parallel`: the batch-norm net trained
/// with every batch split over K ranks and SyncBatchNorm follows the
/// single-process run with the same global batches and seed to within Double
/// round-off, and with each rank's own BatchNorm (ghost batch norm) it does
/// not. Skipped when NORMKIT_SKIP_MPI is set (the sanitizer runs).
@Suite("data-parallel normlab")
struct DataParallelTests {
    @Test("SyncBatchNorm's loss curve is the single-process one; local BatchNorm's is not", arguments: [2, 3])
    func lossCurves(_ ranks: Int) throws {
        if ProcessInfo.processInfo.environment["NORMKIT_SKIP_MPI"] != nil { return }
        let normlab = ChildProcess.built("normlab")
        let output = FileManager.default.temporaryDirectory
            .appendingPathComponent("normlab-data-parallel-\(ranks)-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let (status, log) = try ChildProcess.run(
            seconds: 330,
            ["mpirun", "--allow-run-as-root", "--oversubscribe", "--timeout", "300", "-np", "\(ranks)", normlab,
             "compare", "--data-parallel", "--epochs", "2", "--output", output])
        try #require(status == 0, "mpirun -np \(ranks) normlab exited \(status):\n\(log)")

        let csv = try String(contentsOfFile: output + "/compare-data-parallel-loss.csv", encoding: .utf8)
        let rows = csv.split(separator: "\n").dropFirst().map { $0.split(separator: ",").map { Double($0)! } }
        #expect(rows.count == 40)   // 1000 samples / batch 50 x 2 epochs
        var synchronized = 0.0, local = 0.0
        for row in rows {
            let single = row[1]
            synchronized = max(synchronized, abs(row[2] - single) / abs(single))
            local = max(local, abs(row[3] - single) / abs(single))
        }
        // Sums in another order (the ranks' shares, then across ranks), 40 Adam
        // steps: measured 6e-16 (2 ranks) when written.
        #expect(synchronized <= 1e-12, "largest relative difference \(synchronized)")
        #expect(local > 1e-3, "local batch norm should differ, got \(local)")
        #expect(FileManager.default.fileExists(atPath: output + "/compare-data-parallel-loss.svg"))
    }
}

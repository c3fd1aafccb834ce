import ArgumentParser
import Foundation
import NormKit
import NormKitMPI

/// Monotonic time in seconds.
func now() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) * 1e-9
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted(), middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/// What SyncBatchNorm costs: run under `mpirun -np K`. Every rank times, in
/// alternation and for the same number of rounds, a training forward and
/// backward of SyncBatchNorm on its (N, D) shard, BatchNorm on the same shard
/// alone, BatchNorm on the whole batch (K·N rows) on one process, and the
/// collectives alone; rank 0 prints the medians and their ratios.
@main
struct NormBenchMPI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "normbench-mpi",
        abstract: "Times SyncBatchNorm across MPI ranks against BatchNorm on one rank's shard and on the whole batch.")

    @Option(help: "Rows per rank.")
    var rows = 4096

    @Option(help: "Features.")
    var features = 1024

    @Option(help: "Comma-separated dtypes: float, double.")
    var dtypes = "float"

    @Option(help: "Timed rounds; every round runs each case once, on every rank alike.")
    var rounds = 30

    @Option(help: "Threading.threadCount on each rank.")
    var threads = 1

    @Flag(help: "A small shape and few rounds: a smoke test.")
    var quick = false

    mutating func run() throws {
        if quick { (rows, features, rounds) = (256, 128, 5) }
        let world = try MPICommunicator.world()
        Threading.threadCount = threads
        if world.rank == 0 {
            let cpu = ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
                .split(separator: "\n").first { $0.hasPrefix("model name") }
                .map { String($0.split(separator: ":", maxSplits: 1)[1]).trimmingCharacters(in: .whitespaces) }
                ?? "unknown"
            print("normbench-mpi: \(world.size) ranks (mpirun), \(threads) thread(s) per rank, "
                  + "\(ProcessInfo.processInfo.activeProcessorCount) cores on this host, \(cpu); "
                  + "OpenBLAS \(BLASRuntime.configuration), core \(BLASRuntime.coreName)")
            print("each round: every case once on every rank (a barrier before each); medians of \(rounds) rounds, rank 0's clock")
        }
        for dtype in dtypes.split(separator: ",") {
            switch dtype {
            case "float": try measure(Float.self, world: world)
            case "double": try measure(Double.self, world: world)
            default: throw ValidationError("unknown dtype '\(dtype)' (float, double)")
            }
        }
    }

    func measure<S: BLASScalar>(_: S.Type, world: MPICommunicator) throws {
        let (n, d, k) = (rows, features, world.size)
        let whole = try Tensor<S>(randomNormal: [k * n, d], mean: 3, standardDeviation: 2, seed: 1)
        let shard = try Tensor<S>(Array(whole.scalars[(world.rank * n * d)..<((world.rank + 1) * n * d)]),
                                  shape: [n, d])
        let dyWhole = try Tensor<S>(randomNormal: [k * n, d], seed: 2)
        let dyShard = try Tensor<S>(Array(dyWhole.scalars[(world.rank * n * d)..<((world.rank + 1) * n * d)]),
                                    shape: [n, d])

        // Each layer's training forward and backward into buffers it reuses.
        var sync = NormalizationStep(try SyncBatchNorm<S>(featureCount: d, communicator: world))
        var local = NormalizationStep(try BatchNorm<S>(featureCount: d))
        var all = NormalizationStep(try BatchNorm<S>(featureCount: d))
        // The collectives of one step alone, as SyncBatchNorm makes them: one
        // all-gather each way of a message of 11 header scalars (status,
        // call, number, channels, count) and 2·D sums.
        let message = [S](repeating: 1, count: 11 + 2 * d)
        func collectives() throws {
            _ = try world.allGather(message)
            _ = try world.allGather(message)
        }

        var times: [[Double]] = Array(repeating: [], count: 4)
        for round in -1..<rounds {        // round -1 warms up
            let cases: [() throws -> Void] = [
                { try sync.forward(shard); try sync.backward(dyShard) },
                { try local.forward(shard); try local.backward(dyShard) },
                { try all.forward(whole); try all.backward(dyWhole) },
                { try collectives() },
            ]
            for (index, body) in cases.enumerated() {
                try world.barrier()
                let t0 = now()
                try body()
                if round >= 0 { times[index].append(now() - t0) }
            }
        }
        guard world.rank == 0 else { return }
        let m = times.map(median)
        let size = MemoryLayout<S>.stride
        let forwardBytes = (11 + 2 * d) * size, backwardBytes = (11 + 2 * d) * size
        let names = ["SyncBatchNorm, \(n) rows on each of \(k) ranks", "BatchNorm on one rank's \(n) rows",
                     "BatchNorm on the whole batch, \(k * n) rows", "the step's collectives alone"]
        print("\n\(S.self) (N, D) = (\(n), \(d)) per rank, batch \(k * n) rows; training forward + backward")
        print("case".padding(toLength: 46, withPad: " ", startingAt: 0) + "median ms  ratio to SyncBatchNorm")
        for (name, value) in zip(names, m) {
            print(name.padding(toLength: 46, withPad: " ", startingAt: 0) + fmt(value * 1e3, 9)
                  + fmt(value / m[0], 8))
        }
        print("sent per rank per step: forward \(forwardBytes) B (one all-gather: an 11-scalar header, "
              + "moments 2·D scalars), backward \(backwardBytes) B (one all-gather: the header, Σdy and "
              + "Σdy·(x-mean) 2·D scalars); each rank receives \(k)x what it sends")
    }

    func fmt(_ value: Double, _ width: Int) -> String {
        let text = String(format: value < 10 ? "%.3f" : "%.2f", value)
        return String(repeating: " ", count: max(0, width - text.count)) + text
    }
}

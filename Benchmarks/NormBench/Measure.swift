import Foundation
import NormKit

/// Monotonic time in seconds.
func now() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) * 1e-9
}

/// Timings of one case: at least `repetitions` runs and at least `minTime`
/// seconds of runs, after one warm-up run.
struct Timing {
    var samples: [Double]
    var median: Double {
        let sorted = samples.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
    var min: Double { samples.min() ?? .nan }
    var max: Double { samples.max() ?? .nan }

    init(samples: [Double]) { self.samples = samples }

    init(repetitions: Int, minTime: Double, _ body: () throws -> Void) rethrows {
        self = try withoutActuallyEscaping(body) {
            try Timing.interleaved([$0], repetitions: repetitions, minTime: minTime)[0]
        }
    }

    /// Times several cases in alternation: one warm-up run each, then rounds in
    /// which every case takes a turn of runs (at least one, and at least
    /// `turnTime` seconds, so that a case whose data fits in cache runs mostly
    /// hot), until every case has at least `repetitions` runs and at least
    /// `minTime` seconds of runs. On a shared machine a slow spell then falls on
    /// all the cases alike, so their ratio holds even when absolute times drift.
    static func interleaved(_ bodies: [() throws -> Void], repetitions: Int, minTime: Double,
                            turnTime: Double = 0.02) throws -> [Timing] {
        for body in bodies { try body() }
        var samples = Array(repeating: [Double](), count: bodies.count)
        var spent = Array(repeating: 0.0, count: bodies.count)
        while samples.contains(where: { $0.count < repetitions }) || spent.contains(where: { $0 < minTime }) {
            for (index, body) in bodies.enumerated() {
                var turn = 0.0
                repeat {
                    let t0 = now()
                    try body()
                    let elapsed = now() - t0
                    samples[index].append(elapsed)
                    turn += elapsed
                } while turn < turnTime
                spent[index] += turn
            }
        }
        return samples.map(Timing.init(samples:))
    }
}

/// Pointers that the triad's threads share; each writes its own range.
struct TriadBuffers<S: BLASScalar>: @unchecked Sendable {
    let a: UnsafeMutablePointer<S>, b: UnsafeMutablePointer<S>, c: UnsafeMutablePointer<S>
}

/// STREAM's triad `a = b + s·c` over `count` elements of `S`, split over
/// `threads` threads as NormKit splits its rows: the memory bandwidth a
/// streaming kernel of that size can reach here, counted as 3 · count · size
/// bytes per run (write-allocate traffic not counted, as STREAM).
func triadBandwidth<S: BLASScalar>(_: S.Type, count: Int, threads: Int, repetitions: Int,
                                   minTime: Double) -> Double {
    let a = UnsafeMutablePointer<S>.allocate(capacity: count)
    let b = UnsafeMutablePointer<S>.allocate(capacity: count)
    let c = UnsafeMutablePointer<S>.allocate(capacity: count)
    defer { a.deallocate(); b.deallocate(); c.deallocate() }
    b.initialize(repeating: 1, count: count)
    c.initialize(repeating: 2, count: count)
    a.initialize(repeating: 0, count: count)
    let buffers = TriadBuffers(a: a, b: b, c: c)
    let timing = Timing(repetitions: repetitions, minTime: minTime) {
        DispatchQueue.concurrentPerform(iterations: threads) { chunk in
            let scalar: S = 3
            let range = (count * chunk / threads)..<(count * (chunk + 1) / threads)
            let a = buffers.a, b = buffers.b, c = buffers.c
            for i in range { a[i] = b[i] + scalar * c[i] }
        }
    }
    // Keep the result observable so the loop is not removed.
    if a[count / 2] != 7 { fatalError("triad computed \(a[count / 2]), expected 7") }
    return Double(3 * count * MemoryLayout<S>.stride) / timing.median / 1e9
}

/// What the benchmark knows about the machine it ran on.
struct MachineInfo {
    var cpu: String
    var cores: Int
    var blasThreads: Int
    var libraryThreads: Int
    var blasConfiguration: String
    var blasCore: String
    var build: String

    static func current(libraryThreads: Int) -> MachineInfo {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n")
            .first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: .whitespaces) }
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        return MachineInfo(
            cpu: model ?? "unknown", cores: ProcessInfo.processInfo.activeProcessorCount,
            blasThreads: BLASRuntime.threadCount, libraryThreads: libraryThreads,
            blasConfiguration: BLASRuntime.configuration, blasCore: BLASRuntime.coreName,
            build: build)
    }
}

import ArgumentParser
import Foundation
import NormKit

/// One line of `--json` output.
struct Record: Codable {
    var op: String
    var pass: String
    var backend: String
    var dtype: String
    var shape: [Int]
    var threads: Int
    var api: String
    var medianSeconds: Double
    var minSeconds: Double
    var maxSeconds: Double
    var bytesPerElement: Int
    var gbps: Double
    var bandwidthGBps: Double
    var speedupVsNaive: Double?
    var valueOverBuffered: Double?

    enum CodingKeys: String, CodingKey {
        case op, pass, backend, dtype, shape, threads, api, gbps
        case medianSeconds = "median_s", minSeconds = "min_s", maxSeconds = "max_s"
        case bytesPerElement = "bytes_per_element", bandwidthGBps = "bandwidth_gbps"
        case speedupVsNaive = "speedup_vs_naive", valueOverBuffered = "value_over_buffered"
    }
}

@main
struct NormBench: ParsableCommand {
    /// Restarts once with a better `OPENBLAS_CORETYPE` when OpenBLAS chose
    /// kernels older than the CPU supports (the header then names both), then
    /// parses and runs.
    static func main() {
        BLASRuntime.restartWithAdvisedCoreIfNeeded(tool: "normbench")
        main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "normbench",
        abstract: "Times NormKit's BLAS paths against naive loops and the in-run memory bandwidth.")

    @Option(help: "Comma-separated layers: batchnorm, layernorm, rmsnorm (on (N, D) shapes); spatialbatchnorm, groupnorm (G = 32), instancenorm (on (N, C, H, W) shapes); opt-in, on (N, D) shapes: decorrelated (DecorrelatedBatchNorm, see --methods and --group-sizes), whitening-fit (Whitening.fit, ZCA), batchnorm-noaffine, layernorm-noaffine, rmsnorm-noaffine (affine: .none); on (N, C, H, W) shapes: spatialbatchnorm-nhwc, groupnorm-nhwc, instancenorm-nhwc (layout: .nhwc, the same values as an (N, H, W, C) tensor, with their ReLU passes).")
    var ops = "batchnorm,layernorm,rmsnorm,spatialbatchnorm,groupnorm,instancenorm"

    @Option(help: "Comma-separated whitening methods for --ops decorrelated: eigen, cholesky, ns<T> (Newton–Schulz, T iterations).")
    var methods = "eigen,cholesky,ns5"

    @Option(help: "Comma-separated group sizes for --ops decorrelated (each that divides D).")
    var groupSizes = "16,64,256"

    @Option(help: "Comma-separated shapes, (N, D) or (N, C, H, W), e.g. 64x1024,8x256x56x56.")
    var shapes = "64x1024,4096x1024,32768x1024,32x64x32x32,8x256x56x56"

    @Option(help: "Comma-separated dtypes: float, double, bfloat16, float16 (bfloat16 and float16: 16-bit storage with Float statistics, every layer but the whitening ones).")
    var dtypes = "float,double"

    @Option(help: "Comma-separated backends: blas, naive.")
    var backends = "blas,naive"

    @Option(help: "Comma-separated thread counts (Threading.threadCount) for the BLAS paths, timed in alternation with a scaling table when there are several; naive runs on one. Default: 1 and the cores this process may use.")
    var threads = Threading.defaultThreadCount > 1 ? "1,\(Threading.defaultThreadCount)" : "1"

    @Option(help: "Comma-separated APIs to time on the BLAS paths: buffered (the allocation-free entry points: Tensor buffers, whose cache shares the input; the 16-bit cases' buffers), value (forward(_:mode:) and backward(_:cache:), which allocate their results), borrowed (opt-in: the Float and Double forwards over UnsafeBufferPointers, whose cache copies the input, as the 16-bit cases' does).")
    var apis = "buffered,value"

    @Option(help: "Threading.minimumBytesPerWorker: the least input per worker thread (default: NormKit's, 128 KiB). 0 gives every chunk a worker, to measure where threads pay.")
    var minBytesPerWorker: Int?

    @Option(help: "StreamingStores.minimumBytes: outputs of more bytes are written with streaming stores (default: NormKit's, a quarter of the last-level cache). 0 streams every output.")
    var streamAbove: Int?

    @Option(help: "OpenBLAS's threads outside NormKit's kernels (inside them NormKit runs OpenBLAS on one). Default: OpenBLAS's own setting.")
    var blasThreads: Int?

    @Option(help: "Minimum timed repetitions per case.")
    var repetitions = 5

    @Option(help: "Minimum timed seconds per case.")
    var minTime = 0.2

    @Option(help: "Write one JSON record per case to this path.")
    var json: String?

    @Flag(help: "Small shapes and few repetitions: a smoke test of a few seconds.")
    var quick = false

    /// `--threads` without repeats (checked by `validate()`).
    var threadList: [Int] {
        var seen: [Int] = []
        for count in list(threads).compactMap({ Int($0) }) where !seen.contains(count) {
            seen.append(count)
        }
        return seen
    }

    /// `--apis` (checked by `validate()`).
    var apiList: [API] { list(apis).compactMap(API.init(rawValue:)) }

    /// `--backends` (checked by `validate()`).
    var backendList: [Backend] { list(backends).compactMap { try? parseBackend($0) } }

    func validate() throws {
        for text in list(threads) where (Int(text) ?? 0) < 1 {
            throw ValidationError("thread count '\(text)' is not a positive integer")
        }
        guard !threadList.isEmpty, (blasThreads ?? 1) >= 1 else {
            throw ValidationError("thread counts must be at least 1")
        }
        for text in list(apis) where API(rawValue: text) == nil {
            throw ValidationError("unknown API '\(text)' (buffered, value, borrowed)")
        }
        guard apiList.contains(.buffered) else {
            throw ValidationError("--apis must include buffered (the value API is timed against it)")
        }
        for text in list(backends) { _ = try parseBackend(text) }
        for text in list(methods) { _ = try parseMethod(text) }
        for text in list(groupSizes) where (Int(text) ?? 0) < 1 {
            throw ValidationError("group size '\(text)' is not a positive integer")
        }
        guard (minBytesPerWorker ?? 0) >= 0 else {
            throw ValidationError("--min-bytes-per-worker must not be negative")
        }
        guard (streamAbove ?? 0) >= 0 else {
            throw ValidationError("--stream-above must not be negative")
        }
    }

    mutating func run() throws {
        if quick {
            shapes = "64x256,512x128,4x32x8x8"
            repetitions = 3
            minTime = 0.01
        }
        if let blasThreads { BLASRuntime.threadCount = blasThreads }
        if let minBytesPerWorker { Threading.minimumBytesPerWorker = minBytesPerWorker }
        if let streamAbove { StreamingStores.minimumBytes = streamAbove }
        Threading.threadCount = threadList[0]
        let machine = MachineInfo.current(libraryThreads: threadList[0])
        let opSet = Set(list(ops))
        let knownOps = matrixOps + imageOps + whiteningOps + noAffineOps + channelsLastOps
        for op in opSet where !knownOps.contains(op) {
            throw ValidationError("unknown op '\(op)' (\(knownOps.joined(separator: ", ")))")
        }
        let parsedShapes = try list(shapes).map(parseShape)

        print("normbench: NormKit BLAS paths vs naive loops vs in-run triad bandwidth")
        print("CPU: \(machine.cpu), \(machine.cores) cores")
        print("threads: NormKit \(threadList.map(String.init).joined(separator: ", ")) (BLAS paths; naive uses 1; default \(Threading.defaultThreadCount), this process's cores; a worker per \(Threading.minimumBytesPerWorker) bytes of input), OpenBLAS"
              + " \(machine.blasThreads) outside NormKit's kernels and 1 inside them"
              + " (OPENBLAS_CORETYPE=\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset"))")
        print("OpenBLAS: \(machine.blasConfiguration); core \(machine.blasCore); CPU vector level"
              + " \(BLASRuntime.cpuVectorLevel)"
              + (BLASRuntime.coreAdvice.map { " (advice: \($0))" } ?? ""))
        print("build: \(machine.build); L2 \(CacheGeometry.level2Bytes / 1024) KiB per core,"
              + " last-level cache \(CacheGeometry.lastLevelBytes / 1024) KiB;"
              + " streaming stores for outputs above \(StreamingStores.minimumBytes / 1024) KiB")
        if machine.build == "debug" {
            print(String(repeating: "!", count: 72))
            print("!! DEBUG BUILD: these timings mean nothing. Use `swift run -c release normbench`.")
            print(String(repeating: "!", count: 72))
        }
        print("Times are medians over >= \(repetitions) runs and >= \(minTime) s per case, the"
              + " backends' runs alternating in turns of >= 20 ms;"
              + " GB/s counts the bytes per element of NormKit's Architecture article.")

        var records: [Record] = []
        for dtype in list(dtypes) {
            for shape in parsedShapes {
                switch dtype {
                case "float": records += try measure(Float.self, dtype: dtype, shape: shape,
                                                      ops: opSet, backends: backendList, machine: machine)
                case "double": records += try measure(Double.self, dtype: dtype, shape: shape,
                                                       ops: opSet, backends: backendList, machine: machine)
                case "bfloat16": records += try measure(Float.self, dtype: dtype, shape: shape,
                                                         ops: opSet, backends: backendList,
                                                         machine: machine, storage: BFloat16.self)
                case "float16": records += try measure(Float.self, dtype: dtype, shape: shape,
                                                        ops: opSet, backends: backendList,
                                                        machine: machine, storage: Float16.self)
                default:
                    throw ValidationError("unknown dtype '\(dtype)' (float, double, bfloat16, float16)")
                }
            }
        }
        if let path = json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(records).write(to: URL(fileURLWithPath: path))
            print("wrote \(records.count) records to \(path)")
        }
    }

    /// One timed variant of a case: a backend, an API and a thread count.
    struct Variant {
        var backend: Backend
        var api: API
        var threads: Int
    }

    /// The variants timed in alternation for each case: every backend on the
    /// first thread count, then the BLAS backend on the others; each BLAS
    /// variant through the buffered API and, if asked, the value and the
    /// borrowed API (for the cases that have it).
    var variants: [Variant] {
        var all: [Variant] = []
        for threads in threadList {
            for backend in backendList where backend == .blas || threads == threadList[0] {
                all.append(Variant(backend: backend, api: .buffered, threads: threads))
                for api in [API.value, .borrowed] where backend == .blas && apiList.contains(api) {
                    all.append(Variant(backend: backend, api: api, threads: threads))
                }
            }
        }
        return all
    }

    func measure<S: BLASScalar>(
        _: S.Type, dtype: String, shape: [Int], ops: Set<String>, backends: [Backend],
        machine: MachineInfo, storage: (any BenchStorage.Type)? = nil
    ) throws -> [Record] {
        var byBackend: [Backend: [Case]] = [:]
        for backend in backends {
            if let storage {
                byBackend[backend] = try reducedCases(storage, shape: shape, backend: backend, ops: ops)
            } else {
                byBackend[backend] = try cases(S.self, shape: shape, backend: backend, ops: ops,
                                               methods: list(methods).compactMap { try? parseMethod($0) },
                                               groupSizes: list(groupSizes).compactMap { Int($0) })
            }
        }
        // The bytes of one streamed element: 2 for 16-bit storage.
        let elementBytes = storage == nil ? MemoryLayout<S>.stride : 2
        let caseCount = byBackend.values.first?.count ?? 0
        guard caseCount > 0 else { return [] }   // no requested layer takes this rank
        let elements = shape.reduce(1, *)
        var bandwidth: [Int: Double] = [:]
        for threads in threadList {
            bandwidth[threads] = triadBandwidth(S.self, count: elements, threads: threads,
                                                repetitions: repetitions, minTime: minTime)
        }
        let shapeText = shape.map(String.init).joined(separator: "x")
        print("\n\(dtype) \(shapeText): triad bandwidth "
              + threadList.map { "\(format(bandwidth[$0]!, 1)) GB/s on \($0) thread(s)" }
                .joined(separator: ", "))
        print(pad("op", 17) + pad("pass", 19) + pad("backend", 8) + pad("api", 9) + padLeft("thr", 4)
              + padLeft("median ms", 11) + padLeft("min ms", 10) + padLeft("max ms", 10)
              + padLeft("GB/s", 8) + padLeft("% triad", 9) + padLeft("blas/naive", 12)
              + padLeft("api/buf", 11))
        var records: [Record] = []
        var scaling: [(Case, [Double])] = []
        let allVariants = self.variants
        // Layers with the value API only (the whitening ones) allocate their
        // results on every call, and the first cases of a process ran about
        // 4.4x slower than the same cases later (measured: DecorrelatedBatchNorm
        // inference at 4096x256, 6.2 ms first against 1.4 ms after other
        // cases), however often the first case repeated; most likely until
        // glibc's heap had grown to the passes' working set (not proved). Two
        // untimed runs of every such case first removed it.
        for index in 0..<caseCount where byBackend.values.contains(where: { $0[index].runValue == nil }) {
            for variant in allVariants where variant.api != .borrowed {
                Threading.threadCount = variant.threads
                for _ in 0..<2 { try byBackend[variant.backend]![index].run() }
            }
        }
        Threading.threadCount = threadList[0]
        for index in 0..<caseCount {
            // Every variant's runs alternate, so that their ratios are measured
            // under the same conditions; the borrowed API only for the cases
            // that have it.
            let variants = allVariants.filter {
                $0.api != .borrowed || byBackend[$0.backend]![index].runBorrowed != nil
            }
            let items = variants.map { byBackend[$0.backend]![index] }
            let bodies: [() throws -> Void] = zip(variants, items).map { variant, item in
                let run = switch variant.api {
                case .buffered: item.run
                case .value: item.runValue ?? item.run
                case .borrowed: item.runBorrowed ?? item.run
                }
                let threads = variant.threads
                return {
                    Threading.threadCount = threads
                    try run()
                }
            }
            progress("  timing \(items[0].op) \(items[0].pass) \(dtype) \(shapeText)...")
            let timings = try Timing.interleaved(bodies, repetitions: repetitions, minTime: minTime)
            Threading.threadCount = threadList[0]
            func median(_ backend: Backend, _ api: API, _ threads: Int) -> Double? {
                zip(variants, timings).first {
                    $0.0.backend == backend && $0.0.api == api && $0.0.threads == threads
                }?.1.median
            }
            for (variant, (item, timing)) in zip(variants, zip(items, timings)) {
                // The borrowed forwards also write the cache's copy.
                let copyBytes = variant.api == .borrowed ? 4 : 0
                let bytes = (item.bytesPerFloatElement + copyBytes) * elementBytes / 4
                let gbps = Double(bytes * elements) / timing.median / 1e9
                var speedup: Double?, apiRatio: Double?
                if variant.backend == .blas, variant.api == .buffered,
                   let naive = median(.naive, .buffered, threadList[0]) {
                    speedup = naive / timing.median
                }
                // The value and borrowed forms over the buffered one (not for
                // a layer with the value API only, whose `run` is it).
                if variant.api == .borrowed || (variant.api == .value && item.runValue != nil),
                   let buffered = median(variant.backend, .buffered, variant.threads) {
                    apiRatio = timing.median / buffered
                }
                let triad = bandwidth[variant.threads]!
                records.append(Record(
                    op: item.op, pass: item.pass, backend: "\(variant.backend)", dtype: dtype,
                    shape: shape, threads: variant.backend == .naive ? 1 : variant.threads,
                    api: variant.api.rawValue, medianSeconds: timing.median,
                    minSeconds: timing.min, maxSeconds: timing.max, bytesPerElement: bytes,
                    gbps: gbps, bandwidthGBps: triad, speedupVsNaive: speedup,
                    valueOverBuffered: variant.api == .value ? apiRatio : nil))
                print(pad(item.op, 17) + pad(item.pass, 19) + pad("\(variant.backend)", 8)
                      + pad(variant.api.rawValue, 9)
                      + padLeft("\(variant.backend == .naive ? 1 : variant.threads)", 4)
                      + padLeft(format(timing.median * 1e3, 3), 11)
                      + padLeft(format(timing.min * 1e3, 3), 10)
                      + padLeft(format(timing.max * 1e3, 3), 10)
                      + padLeft(format(gbps, 1), 8)
                      + padLeft(format(100 * gbps / triad, 0) + "%", 9)
                      + padLeft(speedup.map { format($0, 2) + "x" } ?? "", 12)
                      + padLeft(apiRatio.map { format($0, 2) + "x" } ?? "", 11))
            }
            if threadList.count > 1 {
                scaling.append((items[0], threadList.compactMap { median(.blas, .buffered, $0) }))
            }
        }
        if !scaling.isEmpty {
            print("scaling, \(dtype) \(shapeText), BLAS buffered: median ms by NormKit threads"
                  + " (results are the same bits at every count)")
            print(pad("op", 17) + pad("pass", 19)
                  + threadList.map { padLeft("\($0) thr", 10) }.joined()
                  + padLeft("speedup", 10))
            for (item, medians) in scaling {
                print(pad(item.op, 17) + pad(item.pass, 19)
                      + medians.map { padLeft(format($0 * 1e3, 3), 10) }.joined()
                      + padLeft(format(medians[0] / medians[medians.count - 1], 2) + "x", 10))
            }
        }
        progress("")
        return records
    }
}

/// The API a variant times.
enum API: String {
    case buffered, value, borrowed
}

func list(_ text: String) -> [String] {
    text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        .filter { !$0.isEmpty }
}

func parseShape(_ text: String) throws -> [Int] {
    let parts = text.split(separator: "x").compactMap { Int($0) }
    guard parts.count == 2 || parts.count == 4, parts.allSatisfy({ $0 > 0 }) else {
        throw ValidationError("shape '\(text)' is not NxD or NxCxHxW with positive sizes")
    }
    return parts
}

func parseBackend(_ text: String) throws -> Backend {
    switch text {
    case "blas": return .blas
    case "naive": return .naive
    default: throw ValidationError("unknown backend '\(text)' (blas, naive)")
    }
}

func parseMethod(_ text: String) throws -> WhiteningMethod {
    switch text {
    case "eigen": return .eigen
    case "cholesky": return .cholesky
    default:
        if text.hasPrefix("ns"), let t = Int(text.dropFirst(2)), t >= 1 { return .newtonSchulz(iterations: t) }
        throw ValidationError("unknown whitening method '\(text)' (eigen, cholesky, ns<T>)")
    }
}

func format(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }
func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}
func padLeft(_ text: String, _ width: Int) -> String {
    text.count >= width ? " " + text : String(repeating: " ", count: width - text.count) + text
}

/// A progress line on standard error, rewritten in place on a terminal and
/// left out when standard error is a file (CI logs).
func progress(_ text: String) {
    guard isatty(2) != 0 else { return }
    let line = text.padding(toLength: 72, withPad: " ", startingAt: 0) + "\r"
    FileHandle.standardError.write(line.data(using: .utf8)!)
}

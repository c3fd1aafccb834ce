import Foundation
import MallocCounter
import NormKit
import Testing

/// Whether this test binary was optimized. The allocation-free guarantee is for
/// optimized builds: an unoptimized (debug) build of NormKit heap-allocates
/// closure contexts and generic metadata on the way (two allocations per call
/// were counted), as unoptimized Swift does. `make test` builds with `-c release`.
#if DEBUG
let optimizedBuild = false
#else
let optimizedBuild = true
#endif

/// Whether the malloc interposer counts (it compiles out under ASan and TSan,
/// whose runtimes own malloc; `make sanitize` runs without it).
let allocationCounterActive = normkit_allocation_counter_active() != 0

/// Tests that change or depend on the process-wide `Threading.threadCount` run
/// one at a time, inside this suite.
@Suite("Process-wide settings", .serialized)
struct ProcessWideTests {}

extension ProcessWideTests {
/// The allocation-free entry points allocate nothing per call once their
/// buffers are sized: counted with a malloc/calloc/realloc interposer
/// (Tests/MallocCounter) on the calling thread and on NormKit's worker threads.
@Suite("Allocation-free entry points",
       .enabled(if: optimizedBuild, "allocation freedom is a property of optimized builds; run make test"),
       .enabled(if: allocationCounterActive, "the malloc interposer is compiled out under sanitizers"))
struct AllocationTests {
    /// Runs `body` once to size the buffers, then counts the allocations of ten
    /// more calls.
    func allocations(_ body: () throws -> Void) rethrows -> Int {
        try body()
        let before = normkit_thread_allocation_count(), workers = normkit_worker_allocation_count()
        for _ in 0..<10 { try body() }
        return normkit_thread_allocation_count() - before + normkit_worker_allocation_count() - workers
    }

    /// Checks that ten training forwards, inference forwards and backwards
    /// each allocate at most `atMost` times (after a first call of each).
    func check<L: BufferedNormalizationLayer>(_ layer: L, shape: [Int], atMost: Int = 0) throws {
        var layer = layer
        let x = try Tensor<L.Scalar>(randomNormal: shape, mean: 3, standardDeviation: 2, seed: 1)
        let dy = try Tensor<L.Scalar>(randomNormal: shape, seed: 2)
        var output = try Tensor<L.Scalar>(zeros: [0]), cache = NormCache<L.Scalar>()
        var workspace = Workspace<L.Scalar>(), gradients = NormGradients<L.Scalar>()
        let forward = try allocations {
            try layer.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
        }
        let inference = try allocations {
            try layer.forward(x, mode: .inference, into: &output, cache: &cache, workspace: &workspace)
        }
        let backward = try allocations {
            try layer.backward(dy, cache: cache, into: &gradients, workspace: &workspace)
        }
        #expect(forward <= atMost, "\(L.self) forward allocated \(forward) times in 10 calls")
        #expect(inference <= atMost, "\(L.self) inference allocated \(inference) times in 10 calls")
        #expect(backward <= atMost, "\(L.self) backward allocated \(backward) times in 10 calls")
    }

    @Test("the counter counts: the value API allocates")
    func counterWorks() throws {
        var bn = try BatchNorm<Float>(featureCount: 16)
        let x = try Tensor<Float>(randomNormal: [8, 16], seed: 1)
        let count = try allocations { _ = try bn.forward(x, mode: .training) }
        #expect(count >= 10)
    }

    @Test("the worker counter counts what threads named normkit-worker allocate, and NormKit's workers carry that name")
    func workerCounterWorks() throws {
        // A thread of this test, named as NormKit names its workers, allocates ten times.
        let before = normkit_worker_allocation_count()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            normkit_counter_name_this_thread("normkit-worker")
            // Kept until all ten are made, so that the optimizer cannot pair and drop them.
            let blocks = (1...10).map { malloc(16 * $0) }
            blocks.forEach { free($0) }
            done.signal()
        }
        thread.start()
        done.wait()
        #expect(normkit_worker_allocation_count() - before >= 10)
        // A two-thread pass starts NormKit's workers under that name.
        let threads = Threading.threadCount
        defer { Threading.threadCount = threads }
        Threading.threadCount = 2
        var ln = try LayerNorm<Float>(featureCount: 300)
        _ = try ln.forward(try Tensor<Float>(randomNormal: [1000, 300], seed: 1), mode: .training)
        let names = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").map {
            (try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8)) ?? ""
        }
        #expect(names.contains("normkit-worker\n"))
    }

    /// Each layer once with ordinary stores and once with every output streamed
    /// (`StreamingStores.minimumBytes = 0`).
    @Test("every layer's buffered forward and backward allocate nothing",
          arguments: [Backend.blas, .naive], [Int.max, 0])
    func noAllocation(backend: Backend, streamAbove: Int) throws {
        let before = StreamingStores.minimumBytes
        defer { StreamingStores.minimumBytes = before }
        StreamingStores.minimumBytes = streamAbove
        try check(BatchNorm<Float>(featureCount: 33, backend: backend), shape: [70, 33])
        try check(BatchNorm<Double>(featureCount: 33, backend: backend), shape: [70, 33])
        try check(LayerNorm<Float>(featureCount: 33, backend: backend), shape: [70, 33])
        try check(RMSNorm<Double>(featureCount: 33, backend: backend), shape: [70, 33])
        try check(SpatialBatchNorm<Float>(channelCount: 6, backend: backend), shape: [3, 6, 5, 7])
        try check(SpatialBatchNorm<Float>(channelCount: 6, layout: .nhwc, backend: backend),
                  shape: [3, 5, 7, 6])
        try check(GroupNorm<Double>(channelCount: 6, groupCount: 3, backend: backend), shape: [3, 6, 5, 7])
        try check(InstanceNorm<Float>(channelCount: 6, backend: backend), shape: [3, 6, 5, 7])
        // The synchronized twins on one process: the status header lives on
        // the stack, the moments in the workspace.
        try check(SyncBatchNorm<Float>(featureCount: 33, communicator: SingleProcess(), backend: backend),
                  shape: [70, 33])
        try check(SyncSpatialBatchNorm<Double>(channelCount: 6, layout: .nhwc, communicator: SingleProcess(),
                                               backend: backend), shape: [3, 5, 7, 6])
    }

    /// DecorrelatedBatchNorm's buffered passes keep their `N x D`
    /// intermediates in the cache and the workspace: after the first call,
    /// nothing they allocate (each group's `m x m` factors, LAPACK's work
    /// arrays) is anywhere near one `N x D` array, on either backend and
    /// method. The value API, which sizes fresh buffers, does allocate one.
    @Test("DecorrelatedBatchNorm's buffered passes allocate no N x D array per call",
          arguments: [Backend.blas, .naive],
          [WhiteningMethod.eigen, .cholesky, .newtonSchulz(iterations: 5)])
    func decorrelatedAllocationSize(backend: Backend, method: WhiteningMethod) throws {
        let shape = [2049, 12], arrayBytes = 2049 * 12 * MemoryLayout<Float>.stride
        var layer = try DecorrelatedBatchNorm<Float>(featureCount: 12, groupSize: 4, method: method,
                                                     backend: backend)
        let x = try Tensor<Float>(randomNormal: shape, mean: 10000.1, standardDeviation: 2, seed: 1)
        let dy = try Tensor<Float>(randomNormal: shape, seed: 2)
        var output = try Tensor<Float>(zeros: [0]), cache = NormCache<Float>()
        var workspace = Workspace<Float>(), gradients = NormGradients<Float>()
        for mode in [Mode.training, .inference] {
            try layer.forward(x, mode: mode, into: &output, cache: &cache, workspace: &workspace)
            try layer.backward(dy, cache: cache, into: &gradients, workspace: &workspace)
            try layer.infer(x, into: &output, workspace: &workspace)
            _ = normkit_thread_largest_allocation()
            for _ in 0..<3 {
                try layer.forward(x, mode: mode, into: &output, cache: &cache, workspace: &workspace)
                try layer.backward(dy, cache: cache, into: &gradients, workspace: &workspace)
                try layer.infer(x, into: &output, workspace: &workspace)
            }
            let largest = normkit_thread_largest_allocation()
            #expect(largest < arrayBytes / 8, "\(method) \(mode): \(largest) bytes in one allocation")
        }
        _ = try layer.forward(x, mode: .training)
        #expect(normkit_thread_largest_allocation() >= arrayBytes)
    }

    /// On several workers, nothing either, on the calling thread or on the
    /// workers: a parallel phase hands the pool a job on the caller's stack
    /// and a closure without captures (`Threading.run`). [1000, 300] Float is
    /// 1.2 MB, 9 chunks, and as many workers as the thread count allows.
    @Test("on 2 and 7 threads, a buffered pass allocates nothing on any thread",
          arguments: [2, 7])
    func threaded(threads: Int) throws {
        let before = Threading.threadCount
        defer { Threading.threadCount = before }
        Threading.threadCount = threads
        #expect(Threading.minimumBytesPerWorker * threads <= 1000 * 300 * 4)
        try check(BatchNorm<Float>(featureCount: 300), shape: [1000, 300])
        try check(LayerNorm<Float>(featureCount: 300), shape: [1000, 300])
        try check(GroupNorm<Float>(channelCount: 6, groupCount: 3), shape: [40, 6, 35, 36])
        try check(SyncBatchNorm<Float>(featureCount: 300, communicator: SingleProcess()), shape: [1000, 300])
    }

    @Test("BatchNorm's staged backward allocates nothing either")
    func graphBackward() throws {
        var bn = try BatchNorm<Double>(featureCount: 9)
        let x = try Tensor<Double>(randomNormal: [40, 9], seed: 3)
        var output = try Tensor<Double>(zeros: [0]), cache = NormCache<Double>()
        var workspace = Workspace<Double>(), gradients = NormGradients<Double>()
        try bn.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
        let count = try allocations {
            try bn.backwardThroughGraph(x, cache: cache, into: &gradients, workspace: &workspace)
        }
        #expect(count == 0)
    }
}
}

extension ProcessWideTests {
    /// The BLAS backend splits the rows into chunks fixed by the shape and
    /// merges them in chunk order, whatever the thread count: the results are
    /// the same bits at any `Threading.threadCount`.
    @Suite("Threads")
    struct ThreadTests {
        /// Every result of a training forward, an inference forward and a
        /// backward (closed form, or BatchNorm's staged one with `graph`), with
        /// the running statistics `state` reads.
        func results<L: BufferedNormalizationLayer>(
            _ layer: L, x: Tensor<L.Scalar>, dy: Tensor<L.Scalar>, threads: Int,
            state: (L) -> [[L.Scalar]], backward: (L, Tensor<L.Scalar>, NormCache<L.Scalar>) throws
                -> NormGradients<L.Scalar>
        ) throws -> [[L.Scalar]] {
            let before = Threading.threadCount, grain = Threading.minimumBytesPerWorker
            defer {
                Threading.threadCount = before
                Threading.minimumBytesPerWorker = grain
            }
            Threading.threadCount = threads
            // Every chunk may get its own worker, however small the input.
            Threading.minimumBytesPerWorker = 0
            var copy = layer
            let (y, cache) = try copy.forward(x, mode: .training)
            let g = try backward(copy, dy, cache)
            let (yInference, inferenceCache) = try copy.forward(x, mode: .inference)
            let gInference = try backward(copy, dy, inferenceCache)
            return [y.scalars, cache.mean, cache.inverseStandardDeviation, g.input.scalars, g.gamma,
                    g.beta, yInference.scalars, gInference.input.scalars, gInference.gamma]
                + state(copy)
        }

        func expectSameBits<L: BufferedNormalizationLayer>(
            _ layer: L, shape: [Int], state: (L) -> [[L.Scalar]] = { _ in [] },
            backward: (L, Tensor<L.Scalar>, NormCache<L.Scalar>) throws -> NormGradients<L.Scalar>
                = { try $0.backward($1, cache: $2) },
            sourceLocation: SourceLocation = #_sourceLocation
        ) throws {
            let x = try Tensor<L.Scalar>(randomNormal: shape, mean: 5, standardDeviation: 3, seed: 1)
            let dy = try Tensor<L.Scalar>(randomNormal: shape, seed: 2)
            let one = try results(layer, x: x, dy: dy, threads: 1, state: state, backward: backward)
            for threads in [2, 3, 7] {
                let many = try results(layer, x: x, dy: dy, threads: threads, state: state,
                                       backward: backward)
                for (index, (a, b)) in zip(one, many).enumerated() {
                    let same = sameBits(a, b)
                    #expect(same, "\(L.self) \(shape): quantity \(index) differs at \(threads) threads",
                            sourceLocation: sourceLocation)
                }
            }
        }

        @Test("every layer gives the same bits at 1, 2, 3 and 7 threads")
        func sameBitsAtAnyThreadCount() throws {
            // A quarter of the samples in the sanitizers' debug builds, whose
            // kernels run a hundred times slower: 2 chunks instead of 5 to 9.
            let n = { (samples: Int) in optimizedBuild ? samples : max(2, samples / 4) }
            let running: (BatchNorm<Double>) -> [[Double]] = { [$0.runningMean, $0.runningVariance] }
            // 9 chunks: more than 7 threads have.
            try expectSameBits(BatchNorm<Double>(featureCount: 37), shape: [n(16001), 37], state: running)
            try expectSameBits(BatchNorm<Float>(featureCount: 150), shape: [n(4001), 150],
                               state: { [$0.runningMean, $0.runningVariance] })
            try expectSameBits(BatchNorm<Double>(featureCount: 37), shape: [n(9001), 37], state: running,
                               backward: { try $0.backwardThroughGraph($1, cache: $2) })
            try expectSameBits(SpatialBatchNorm<Double>(channelCount: 16), shape: [n(12), 16, 32, 32],
                               state: { [$0.runningMean, $0.runningVariance] })
            try expectSameBits(SpatialBatchNorm<Float>(channelCount: 16, layout: .nhwc),
                               shape: [n(13), 31, 33, 16], state: { [$0.runningMean, $0.runningVariance] })
            try expectSameBits(LayerNorm<Double>(featureCount: 300), shape: [n(2001), 300])
            try expectSameBits(LayerNorm<Float>(featureCount: 1000), shape: [n(611), 1000])
            try expectSameBits(RMSNorm<Float>(featureCount: 300), shape: [n(999), 300])
            try expectSameBits(GroupNorm<Double>(channelCount: 16, groupCount: 4), shape: [n(12), 16, 32, 32])
            try expectSameBits(InstanceNorm<Float>(channelCount: 16), shape: [n(17), 16, 31, 29])
            try expectSameBits(SyncBatchNorm<Double>(featureCount: 37, communicator: SingleProcess()),
                               shape: [n(16001), 37], state: { [$0.runningMean, $0.runningVariance] })
            try expectSameBits(SyncSpatialBatchNorm<Float>(channelCount: 16, communicator: SingleProcess()),
                               shape: [n(13), 16, 31, 33], state: { [$0.runningMean, $0.runningVariance] })
        }

        /// The kernel's own account of the affinity mask, `Cpus_allowed` in
        /// /proc/self/status (hexadecimal words separated by commas).
        func allowedCPUs() throws -> Int {
            let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
            let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed:") })
            let mask = line.dropFirst("Cpus_allowed:".count).filter { $0.isHexDigit }
            return mask.reduce(0) { $0 + Int($1.hexDigitValue!).nonzeroBitCount }
        }

        @Test("the default is the cores this process may run on")
        func defaultThreadCount() throws {
            #expect(Threading.defaultThreadCount == (try allowedCPUs()))
        }
    }
}

extension ProcessWideTests {
    /// NormKit runs OpenBLAS on one thread while its kernels run and leaves the
    /// caller's setting as it found it.
    @Suite("OpenBLAS's threads")
    struct BLASThreadTests {
        @Test("a layer call leaves OpenBLAS's thread count as it was, and its results alone")
        func restoresThreadCount() throws {
            let before = BLASRuntime.threadCount
            defer { BLASRuntime.threadCount = before }
            let x = try Tensor<Float>(randomNormal: [3000, 64], mean: 2, standardDeviation: 3, seed: 1)
            let dy = try Tensor<Float>(randomNormal: [3000, 64], seed: 2)
            var results: [[[Float]]] = []
            for (blasThreads, libraryThreads) in [(1, 1), (2, 1), (2, 2)] {
                BLASRuntime.threadCount = blasThreads
                Threading.threadCount = libraryThreads
                defer { Threading.threadCount = Threading.defaultThreadCount }
                var bn = try BatchNorm<Float>(featureCount: 64)
                var ln = try LayerNorm<Float>(featureCount: 64)
                let (y, cache) = try bn.forward(x, mode: .training)
                let g = try bn.backward(dy, cache: cache)
                let (z, lnCache) = try ln.forward(x, mode: .training)
                let h = try ln.backward(dy, cache: lnCache)
                // Other suites may run NormKit kernels meanwhile; threadCount
                // reports the count outside kernels all the same.
                #expect(BLASRuntime.threadCount == blasThreads,
                        "OpenBLAS had \(blasThreads) threads before the calls")
                results.append([y.scalars, g.input.scalars, g.gamma, z.scalars, h.input.scalars, h.gamma])
            }
            for run in results.dropFirst() {
                for (index, (a, b)) in zip(run, results[0]).enumerated() {
                    #expect(normwiseError(a, b) <= 1e-5, "quantity \(index)")
                }
            }
        }
    }
}

extension ProcessWideTests {
    /// Outputs larger than `StreamingStores.minimumBytes` are written with
    /// streaming stores; the values must not change.
    @Suite("Streaming stores")
    struct StreamingTests {
        func results<L: BufferedNormalizationLayer>(_ layer: L, shape: [Int]) throws -> [[L.Scalar]] {
            var layer = layer
            let count = layer.gamma.count
            layer.gamma = try Tensor<L.Scalar>(randomNormal: [count], mean: 1, seed: 7).scalars
            if layer.affine.hasShift {   // RMSNorm's default has no beta
                layer.beta = try Tensor<L.Scalar>(randomNormal: [count], seed: 8).scalars
            }
            let x = try Tensor<L.Scalar>(randomNormal: shape, mean: 3, standardDeviation: 2, seed: 5)
            let dy = try Tensor<L.Scalar>(randomNormal: shape, seed: 6)
            let (y, cache) = try layer.forward(x, mode: .training)
            let (inference, _) = try layer.forward(x, mode: .inference)
            let g = try layer.backward(dy, cache: cache)
            return [y.scalars, inference.scalars, g.input.scalars, g.gamma, g.beta]
        }

        /// Odd extents, so that rows start at every alignment and the aligned
        /// middle of each row has a head and a tail.
        /// Checks that ten training forwards, inference forwards and backwards
    /// each allocate at most `atMost` times (after a first call of each).
    func check<L: BufferedNormalizationLayer>(_ layer: L, shape: [Int], atMost: Int = 0) throws {
            try expectStreamedEqualsStored("\(L.self) \(shape)") { try results(layer, shape: shape).map(bits) }
        }

        @Test("streamed outputs equal stored ones bit for bit", arguments: [Backend.blas, .naive])
        func bitForBit(backend: Backend) throws {
            try check(BatchNorm<Float>(featureCount: 37, backend: backend), shape: [45, 37])
            try check(BatchNorm<Double>(featureCount: 37, backend: backend), shape: [45, 37])
            try check(LayerNorm<Float>(featureCount: 29, backend: backend), shape: [31, 29])
            try check(LayerNorm<Double>(featureCount: 29, backend: backend), shape: [31, 29])
            try check(RMSNorm<Float>(featureCount: 29, backend: backend), shape: [31, 29])
            // Rows the row kernels take one at a time (128 values and more; the
            // column sums per row from 256), whose backward streams each row of dx.
            try check(LayerNorm<Float>(featureCount: 301, backend: backend), shape: [13, 301])
            try check(RMSNorm<Double>(featureCount: 133, backend: backend), shape: [11, 133])
            try check(SpatialBatchNorm<Float>(channelCount: 5, backend: backend), shape: [3, 5, 7, 9])
            try check(SpatialBatchNorm<Double>(channelCount: 5, layout: .nhwc, backend: backend),
                      shape: [3, 7, 9, 5])
            try check(GroupNorm<Float>(channelCount: 6, groupCount: 3, backend: backend), shape: [3, 6, 7, 5])
            try check(InstanceNorm<Double>(channelCount: 6, backend: backend), shape: [3, 6, 7, 5])
        }

        /// The fused forms: LayerNorm's and RMSNorm's residual forward (whose
        /// streamed sum goes through a scratch block) and backward, and
        /// BatchNorm's and SpatialBatchNorm's ReLU with a residual, forward and
        /// the backward that applies the mask inside its passes.
        func fusedResults<S: BLASScalar>(_: S.Type, backend: Backend, rowLength: Int) throws -> [[S]] {
            var out: [[S]] = []
            let shape = [37, rowLength]
            let x = try Tensor<S>(randomNormal: shape, mean: 3, standardDeviation: 2, seed: 5)
            let r = try Tensor<S>(randomNormal: shape, seed: 9)
            let dy = try Tensor<S>(randomNormal: shape, seed: 6)
            let ln = try LayerNorm<S>(featureCount: rowLength, backend: backend)
            let rms = try RMSNorm<S>(featureCount: rowLength, backend: backend)
            for layer in [ln as any ResidualNormalizationLayer<S>, rms] {
                var layer = layer
                let (y, sum, cache) = try layer.forward(x, residual: r, mode: .training)
                let g = try layer.backward(dy, sumGradient: r, cache: cache)
                out += [y.scalars, sum.scalars, g.input.scalars, g.gamma]
            }
            var bn = try BatchNorm<S>(featureCount: rowLength, activation: .relu, backend: backend)
            for mode in [Mode.training, .inference] {
                let (y, cache) = try bn.forward(x, residual: r, mode: mode)
                let g = try bn.backward(dy, cache: cache)
                let withResidual = try bn.backwardWithResidual(dy, cache: cache)
                out += [y.scalars, g.input.scalars, g.gamma, g.beta, withResidual.residualGradient.scalars]
            }
            let image = [3, 5, 7, rowLength / 8 + 1]
            let xi = try Tensor<S>(randomNormal: image, mean: 3, standardDeviation: 2, seed: 5)
            let ri = try Tensor<S>(randomNormal: image, seed: 9)
            let dyi = try Tensor<S>(randomNormal: image, seed: 6)
            var sbn = try SpatialBatchNorm<S>(channelCount: 5, activation: .relu, backend: backend)
            let (yi, cachei) = try sbn.forward(xi, residual: ri, mode: .training)
            let gi = try sbn.backward(dyi, cache: cachei)
            out += [yi.scalars, gi.input.scalars, gi.gamma, gi.beta]
            return out
        }

        @Test("fused forms streamed equal stored bit for bit", arguments: [Backend.blas, .naive])
        func fusedBitForBit(backend: Backend) throws {
            // Rows of 29 (row blocks) and 1029 (one row at a time).
            for rowLength in [29, 1029] {
                try expectStreamedEqualsStored("rows of \(rowLength),") {
                    try fusedResults(Float.self, backend: backend, rowLength: rowLength).map(bits)
                }
                try expectStreamedEqualsStored("Double rows of \(rowLength),") {
                    try fusedResults(Double.self, backend: backend, rowLength: rowLength).map(bits)
                }
            }
        }

        /// LayerNorm's and RMSNorm's 16-bit residual forward (`y`, `sum`, and
        /// the cache through the backward's `dx` with a sum gradient), the
        /// bit patterns of each quantity.
        func reducedResidualResults<S: TestStorage>(_: S.Type, backend: Backend, columns: Int) throws
            -> [[UInt16]]
        {
            let rows = 37, count = rows * columns, shape = [rows, columns]
            let x: [S] = reducedInput(count, scale: 3, shift: 100.1, seed: 23)
            let r: [S] = reducedInput(count, scale: 2, shift: -0.7, seed: 24)
            let dy: [S] = reducedInput(count, scale: 1, shift: 0.1, seed: 25)
            let ds: [S] = reducedInput(count, scale: 0.5, shift: 0.01, seed: 26)
            var out: [[UInt16]] = []
            for centred in [true, false] {
                var layer = try ReducedResidualTests.layer(centred: centred, columns: columns, backend: backend)
                var workspace = Workspace<Float>(), cache = NormCache<Float>()
                var y = [S](repeating: S(0), count: count), sum = y, dx = y
                var dg = [Float](repeating: 0, count: columns), db = [Float](repeating: 0, count: layer.beta.count)
                try ReducedResidualTests.fusedForward(&layer, x, r, shape: shape, &y, &sum, &cache, &workspace)
                try ReducedResidualTests.fusedBackward(layer, dy, sumGradient: ds, cache, &dx, &dg, &db,
                                                       &workspace)
                out += [y.map(\.bits), sum.map(\.bits), dx.map(\.bits)]
            }
            return out
        }

        @Test("16-bit residual forms streamed equal stored bit for bit", arguments: [Backend.blas, .naive])
        func reducedResidualBitForBit(backend: Backend) throws {
            // Rows of 29 (row blocks) and 1029 (one row at a time, an odd
            // length: rows start at every 2-byte alignment).
            for columns in [29, 1029] {
                try expectStreamedEqualsStored("Float16 rows of \(columns),") {
                    try reducedResidualResults(Float16.self, backend: backend, columns: columns)
                }
                try expectStreamedEqualsStored("BFloat16 rows of \(columns),") {
                    try reducedResidualResults(BFloat16.self, backend: backend, columns: columns)
                }
            }
        }

        /// `results` (each quantity's bit patterns) with every output stored
        /// (`StreamingStores.minimumBytes = .max`) and streamed (0): each
        /// quantity the same; the setting restored after.
        func expectStreamedEqualsStored<T: Equatable>(_ label: String, _ results: () throws -> [[T]]) throws {
            let before = StreamingStores.minimumBytes
            defer { StreamingStores.minimumBytes = before }
            StreamingStores.minimumBytes = .max
            let stored = try results()
            StreamingStores.minimumBytes = 0
            let streamed = try results()
            for (index, (a, b)) in zip(streamed, stored).enumerated() {
                let differing = zip(a, b).filter { $0 != $1 }.count
                #expect(a.count == b.count && differing == 0,
                        "\(label) quantity \(index): \(differing) of \(b.count) values differ")
            }
        }

        /// Whether `a` and `b` hold the same bit patterns (NaN payloads too).
        func sameBits<S: BLASScalar>(_ a: [S], _ b: [S]) -> Bool {
            a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.elementsEqual(y) } }
        }

        /// A borrowed-memory forward (training, or inference after a
        /// training forward), apart and into its own input, and the backward
        /// after each, against the `Tensor` entry points (which share the
        /// input): the same bits, the input overwritten with NaN after the
        /// forward (the cache holds its own copy).
        func borrowedMatchesTensor<L: BufferedNormalizationLayer>(_ layer: L, shape: [Int],
                                                                  mode: Mode) throws {
            let x: Tensor<L.Scalar> = randomInput(shape, scale: 3, shift: 10000.1, seed: 5)
            let dy: Tensor<L.Scalar> = randomInput(shape, scale: 1, shift: 0.3, seed: 6)
            var layer = layer
            if mode == .inference {   // running statistics other than the initial ones
                _ = try layer.forward(randomInput(shape, scale: 2, shift: 10000.3, seed: 7), mode: .training)
            }
            var tensorLayer = layer
            let (y, cache) = try tensorLayer.forward(x, mode: mode)
            let g = try tensorLayer.backward(dy, cache: cache)
            for inPlace in [false, true] {
                var borrowed = layer, bufferCache = NormCache<L.Scalar>()
                var workspace = Workspace<L.Scalar>()
                var input = x.scalars, output = [L.Scalar](repeating: .nan, count: x.count)
                if inPlace {
                    try input.withUnsafeMutableBufferPointer { b in
                        try borrowed.forward(UnsafeBufferPointer(b), shape: shape, mode: mode,
                                             into: b, cache: &bufferCache, workspace: &workspace)
                    }
                    output = input
                } else {
                    try input.withUnsafeBufferPointer { xb in
                        try output.withUnsafeMutableBufferPointer { yb in
                            try borrowed.forward(xb, shape: shape, mode: mode, into: yb,
                                                 cache: &bufferCache, workspace: &workspace)
                        }
                    }
                }
                for i in input.indices { input[i] = .nan }
                let (dx, dgamma, dbeta) = try backwardIntoBuffers(borrowed, dy.scalars, cache: bufferCache,
                                                                  workspace: &workspace)
                let what = "\(L.self) \(shape) \(mode), in place: \(inPlace), \(Threading.threadCount) threads, streaming above \(StreamingStores.minimumBytes)"
                #expect(sameBits(output, y.scalars), "\(what): forward")
                #expect(sameBits(dx, g.input.scalars) && sameBits(dgamma, g.gamma)
                        && sameBits(dbeta, g.beta), "\(what): backward")
                #expect(sameBits(borrowed.runningStatisticsForTest, tensorLayer.runningStatisticsForTest),
                        "\(what): running statistics")
            }
        }

        /// Training forwards copy in the moments pass (LayerNorm's, RMSNorm's:
        /// the row pass; GroupNorm's and InstanceNorm's: the per-group pass),
        /// inference forwards with running statistics in the normalize pass,
        /// unit by unit (through the ReLU's mask).
        @Test("a borrowed-memory forward that copies its input as it reads it gives the Tensor forward's bits, over many L2 blocks, stored and streamed, in place, on 1 and 2 threads, training and inference")
        func copyInThePass() throws {
            let before = (StreamingStores.minimumBytes, Threading.threadCount)
            defer { (StreamingStores.minimumBytes, Threading.threadCount) = before }
            // Every pairing in optimized builds; two in the sanitizers' debug builds.
            let settings = optimizedBuild ? [(1, Int.max), (2, Int.max), (1, 0), (2, 0)] : [(1, Int.max), (2, 0)]
            for (threads, minimum) in settings {
                Threading.threadCount = threads
                StreamingStores.minimumBytes = minimum
                for mode in [Mode.training, .inference] {
                    try borrowedMatchesTensor(LayerNorm<Float>(featureCount: 1029), shape: [301, 1029], mode: mode)
                    try borrowedMatchesTensor(LayerNorm<Double>(featureCount: 29), shape: [4001, 29], mode: mode)
                    try borrowedMatchesTensor(RMSNorm<Float>(featureCount: 257), shape: [999, 257], mode: mode)
                    try borrowedMatchesTensor(BatchNorm<Float>(featureCount: 37), shape: [4001, 37], mode: mode)
                    try borrowedMatchesTensor(BatchNorm<Double>(featureCount: 301, activation: .relu),
                                              shape: [1001, 301], mode: mode)
                    try borrowedMatchesTensor(BatchNorm<Double>(featureCount: 5, backend: .naive), shape: [301, 5],
                                              mode: mode)
                    try borrowedMatchesTensor(SpatialBatchNorm<Float>(channelCount: 5, activation: .relu),
                                              shape: [7, 5, 61, 67], mode: mode)
                    try borrowedMatchesTensor(SpatialBatchNorm<Double>(channelCount: 9, layout: .nhwc),
                                              shape: [5, 33, 41, 9], mode: mode)
                    try borrowedMatchesTensor(InstanceNorm<Float>(channelCount: 6, activation: .relu,
                                                                  runningStatistics: .exponential),
                                              shape: [5, 6, 31, 33], mode: mode)
                    // GroupNorm and InstanceNorm without running statistics: per
                    // row (group), per block of short rows, per channels-last
                    // sample (ahead of its column kernel where the copy
                    // streams; otherwise `adopt` copies ahead of the pass).
                    try borrowedMatchesTensor(GroupNorm<Float>(channelCount: 16, groupCount: 4, activation: .relu),
                                              shape: [5, 16, 31, 33], mode: mode)
                    try borrowedMatchesTensor(GroupNorm<Double>(channelCount: 12, groupCount: 6),
                                              shape: [9, 12, 3, 5], mode: mode)
                    try borrowedMatchesTensor(GroupNorm<Float>(channelCount: 32, groupCount: 8, layout: .nhwc,
                                                               activation: .relu),
                                              shape: [5, 17, 19, 32], mode: mode)
                    try borrowedMatchesTensor(GroupNorm<Float>(channelCount: 8, groupCount: 2, backend: .naive),
                                              shape: [3, 8, 9, 11], mode: mode)
                    try borrowedMatchesTensor(InstanceNorm<Double>(channelCount: 7), shape: [4, 7, 29, 31],
                                              mode: mode)
                    try borrowedMatchesTensor(SyncBatchNorm<Float>(featureCount: 301, communicator: SingleProcess()),
                                              shape: [1001, 301], mode: mode)
                    try borrowedMatchesTensor(SyncSpatialBatchNorm<Double>(channelCount: 5,
                                                                           communicator: SingleProcess()),
                                              shape: [7, 5, 61, 67], mode: mode)
                }
            }
        }

        @Test("the threshold defaults to a quarter of the last-level cache and clamps at 0")
        func threshold() {
            let before = StreamingStores.minimumBytes
            defer { StreamingStores.minimumBytes = before }
            #expect(before == CacheGeometry.lastLevelBytes / 4)
            StreamingStores.minimumBytes = -5
            #expect(StreamingStores.minimumBytes == 0)
        }
    }
}

extension ProcessWideTests.AllocationTests {
    /// The README's training loop over memory the app owns, verbatim between
    /// the markers (`ReadmeTextTests` checks the README holds the same text).
    func readmeLoop() throws -> NormalizationStep<BatchNorm<Float>> {
        // README-LOOP-BEGIN
        var step = NormalizationStep(try BatchNorm<Float>(featureCount: 128), inputShape: [64, 128])
        var x = [Float](repeating: 0, count: 64 * 128)    // the app's activations, reused
        var dy = [Float](repeating: 0, count: 64 * 128)   // the upstream gradient, reused
        for iteration in 1...100 {
            for i in x.indices { x[i] = Float((i * 7 + iteration) % 13) * 0.3 }   // the next batch
            try x.withUnsafeBufferPointer { try step.forward($0) }
            step.output.withUnsafeBufferPointer { y in    // the loss sum(y²)/2 has dL/dy = y
                for i in dy.indices { dy[i] = y[i] }
            }
            try dy.withUnsafeBufferPointer { try step.backward($0) }
            for j in 0..<128 { step.layer.gamma[j] -= 0.01 * step.gradients.gamma[j] }   // SGD
        }
        // README-LOOP-END
        return step
    }

    @Test("the README's NormalizationStep loop allocates nothing per step, on one thread and on two")
    func readmeLoopAllocations() throws {
        let before = Threading.threadCount
        defer { Threading.threadCount = before }
        _ = try readmeLoop()   // the process's one-time set-up (cache sizes from sysfs, ...)
        for threads in [1, 2] {
            Threading.threadCount = threads
            let start = normkit_thread_allocation_count()
            let step = try readmeLoop()
            let count = normkit_thread_allocation_count() - start
            // The first step sizes the buffers (15 allocations when this was
            // written); one allocation per step would make a hundred more. 64x128 Float is one
            // chunk, so two threads run it on one.
            #expect(count <= 30, "\(count) allocations in 100 steps on \(threads) thread(s)")
            #expect(step.output.shape == [64, 128] && step.layer.gamma.allSatisfy(\.isFinite))
        }
    }

    @Test("a step given its input shape once allocates nothing per step; a call without any shape throws")
    func inputShapeStepAllocations() throws {
        let features = 128
        let x = (0..<64 * features).map { Float($0 % 97) * 0.37 + 10000.1 }
        let n = x.count / features
        var step = NormalizationStep(try LayerNorm<Float>(featureCount: features), inputShape: [n, features])
        try x.withUnsafeBufferPointer { try step.forward($0) }
        try x.withUnsafeBufferPointer { try step.backward($0) }
        let start = normkit_thread_allocation_count()
        for _ in 0..<100 {
            try x.withUnsafeBufferPointer { try step.forward($0) }
            try x.withUnsafeBufferPointer { try step.backward($0) }
        }
        let count = normkit_thread_allocation_count() - start
        #expect(count == 0, "\(count) allocations in 100 steps")
        #expect(step.output.shape == [64, 128] && step.inputShape == [64, 128])
        // A forward with a shape sets it; one without, before any, throws.
        var fresh = NormalizationStep(try LayerNorm<Float>(featureCount: features))
        #expect(throws: NormError.invalidShape(
            expected: "an input shape: NormalizationStep(_:inputShape:) or forward(_:shape:)", actual: [])) {
            try x.withUnsafeBufferPointer { try fresh.forward($0) }
        }
        // A refused shape leaves the step's shape as it was; an accepted one sets it.
        #expect(throws: NormError.self) { try x.withUnsafeBufferPointer { try fresh.forward($0, shape: [32, 256]) } }
        #expect(fresh.inputShape.isEmpty)
        try x.withUnsafeBufferPointer { try fresh.forward($0, shape: [n, features]) }
        #expect(fresh.inputShape == [64, 128])
        fresh.inputShape = [32, 256]
        #expect(throws: NormError.self) { try x.withUnsafeBufferPointer { try fresh.forward($0) } }
    }
}

// Run under mpirun with any number of ranks (NormKitMPITests starts 1, 2 and
// 3): every rank checks its synchronized layers against the single-process
// layers on the whole batch, which every rank can compute (the data is
// deterministic). Exit status 0 when every rank passed every check.
import Glibc
import NormKit
import NormKitMPI

@main
enum NormKitMPIChecks {
    static func main() {
        let world: MPICommunicator
        do {
            world = try MPICommunicator.world()
        } catch {
            print("MPICommunicator.world() failed: \(error)")
            exit(2)
        }
        if CommandLine.arguments.dropFirst().first == "deadline" { deadline(world) }
        if CommandLine.arguments.dropFirst().first == "channels" { channels(world) }
        var checks = Checker(world: world)
        checks.run()
        var failed = [Double(checks.failures)]
        do { try world.allReduceSum(&failed) } catch {
            print("rank \(world.rank): allReduceSum failed: \(error)")
            exit(2)
        }
        if world.rank == 0 {
            print("\(world.size) rank(s): \(checks.count) checks per rank, "
                  + (failed[0] == 0 ? "all passed" : "\(Int(failed[0])) failed"))
        }
        exit(failed[0] == 0 ? 0 : 1)
    }
}

/// `NormKitMPIChecks deadline`: rank 0 makes a training forward that no
/// other rank makes, with a deadline of 0.3 s; it must throw
/// `communicationFailure` instead of waiting forever. Its request then stays
/// pending, so it ends the job (MPI_Abort with code 3, which the test
/// expects) while the other ranks wait in a barrier rank 0 never enters.
func deadline(_ world: MPICommunicator) -> Never {
    if world.rank == 0 {
        world.deadline = .milliseconds(300)
        var bn = try! SyncBatchNorm<Float>(featureCount: 5, communicator: world)
        let clock = ContinuousClock(), start = clock.now
        do {
            _ = try bn.forward(try Tensor<Float>(randomNormal: [4, 5], seed: 1), mode: .training)
            print("deadline: the forward returned")
        } catch {
            let waited = clock.now - start
            let ok = waited >= .milliseconds(300) && waited < .seconds(10)
            if case .communicationFailure = error, ok {
                print("deadline: rank 0 threw after \(waited): \(error)")
            } else {
                print("deadline: rank 0 threw \(error) after \(waited)")
            }
        }
        fflush(nil)
        world.abort(code: 3)
    }
    try? world.barrier()
    exit(1)
}

/// `NormKitMPIChecks channels`: each rank's layer has another feature count
/// (5 + rank), so the ranks' messages differ in size. Open MPI's default
/// error handler ends the job (no rank waits); mpirun then exits nonzero.
/// Not part of the test suite (it ends in an abort); for checking by hand.
func channels(_ world: MPICommunicator) -> Never {
    var bn = try! SyncBatchNorm<Float>(featureCount: 5 + world.rank, communicator: world)
    do {
        _ = try bn.forward(try Tensor<Float>(randomNormal: [4, 5 + world.rank], seed: 1), mode: .training)
        print("channels: rank \(world.rank)'s forward returned")
    } catch {
        print("channels: rank \(world.rank) threw \(error)")
    }
    exit(0)
}

/// Which synchronized layer a case runs, and how its input is shaped.
enum Family: CaseIterable {
    case matrix, nchw, nhwc

    /// The shape of `n` samples.
    func shape(_ n: Int) -> [Int] {
        switch self {
        case .matrix: [n, 7]
        case .nchw: [n, 3, 2, 5]
        case .nhwc: [n, 2, 5, 3]
        }
    }
    var channels: Int { self == .matrix ? 7 : 3 }
}

struct Checker {
    let world: MPICommunicator
    var failures = 0
    var count = 0

    mutating func expect(_ condition: Bool, _ what: @autoclosure () -> String) {
        count += 1
        if !condition {
            failures += 1
            print("rank \(world.rank) of \(world.size): FAILED \(what())")
        }
    }

    /// The uneven splits of the batch for this many ranks, each with an
    /// empty shard where there are several ranks.
    var splits: [[Int]] {
        switch world.size {
        case 1: [[17]]
        case 2: [[5, 12], [0, 17]]
        case 3: [[5, 0, 12], [12, 5, 0]]
        default: [Array(repeating: 3, count: world.size - 1) + [0]]
        }
    }

    mutating func run() {
        for split in splits {
            for family in Family.allCases {
                // Float's inputs sit at 100.1, not 10000.1: at 1e4 a Float's
                // spacing (1e-3) is already 3e-4 of the spread (3), so any two
                // orders of summation differ by more than 1e-5 there.
                for policy in [RunningStatistics.exponential, .cumulative, .none] {
                    agreement(Double.self, family: family, split: split, shift: 10000.1, tolerance: 1e-12,
                              policy: policy)
                }
                agreement(Float.self, family: family, split: split, shift: 100.1, tolerance: 1e-5)
                reducedAgreement(BFloat16.self, family: family, split: split)
                reducedAgreement(Float16.self, family: family, split: split)
            }
        }
        badInput(Double.self)
        badInput(Float.self)
        if world.size > 1 {
            callMismatch(Double.self)
            callMismatch(Float.self)
        }
        do { try readmeExample() } catch { expect(false, "the README's example threw \(error)") }
    }

    /// The README's data-parallel example (ReadmeTextTests checks the README
    /// holds this text), run on every rank.
    mutating func readmeExample() throws {
        // README-MPI-BEGIN
        let world = try MPICommunicator.world()   // MPI_Init_thread once per process
        var bn = try SyncBatchNorm<Float>(featureCount: 256, communicator: world)
        // Each rank passes its own rows of the batch: any count, 0 included.
        let rows = world.rank == 0 ? 5 : 12
        let shard = try Tensor<Float>(randomNormal: [rows, 256], seed: UInt64(world.rank))
        let (y, cache) = try bn.forward(shard, mode: .training)   // the whole batch's statistics
        let grads = try bn.backward(y, cache: cache)   // dx as one process would; gamma, beta: this rank's share
        var parameterGradients = grads.gamma + grads.beta
        try world.allReduceSum(&parameterGradients)    // sum the shares, as for every other parameter
        // README-MPI-END
        expect(y.shape == [rows, 256] && grads.input.shape == [rows, 256] && parameterGradients.count == 512,
               "the README's example: shapes")
        var total = [Double(rows)]
        try world.allReduceSum(&total)
        expect(bn.runningMean.allSatisfy(\.isFinite) && total[0] == Double(5 + 12 * (world.size - 1)),
               "the README's example: running statistics and rows")
    }

    // MARK: Agreement with the single-process layer on the whole batch

    func tensor<S: BLASScalar>(_ shape: [Int], seed: UInt64, shift: S = 0) -> Tensor<S> {
        try! Tensor<S>(randomNormal: shape, mean: shift, standardDeviation: 3, seed: seed)
    }

    /// Samples `range` of a tensor whose first dimension is the batch.
    func samples<S: BLASScalar>(_ t: Tensor<S>, _ range: Range<Int>) -> Tensor<S> {
        let per = t.shape.dropFirst().reduce(1, *)
        return try! Tensor(Array(t.scalars[(range.lowerBound * per)..<(range.upperBound * per)]),
                           shape: [range.count] + t.shape.dropFirst())
    }

    func sameBits<S: BLASScalar>(_ a: S, _ b: S) -> Bool {
        a.sign == b.sign && a.exponentBitPattern == b.exponentBitPattern
            && a.significandBitPattern == b.significandBitPattern
    }

    /// `max|a - b| / max|b|`.
    func error<S: BLASScalar>(_ a: [S], _ b: [S]) -> Double {
        guard a.count == b.count else { return .infinity }
        var difference = 0.0, size = 1e-30
        for (x, y) in zip(a, b) {
            let d = abs(Double(x) - Double(y))
            if d.isNaN { return .infinity }
            difference = max(difference, d)
            size = max(size, abs(Double(y)))
        }
        return difference / size
    }

    func makeLayers<S: BLASScalar>(_ family: Family, _: S.Type, policy: RunningStatistics = .exponential)
        -> (reference: any BufferedNormalizationLayer<S>, sync: any BufferedNormalizationLayer<S>) {
        let c = family.channels
        let gamma: [S] = (0..<c).map { (j: Int) -> S in 1.5 - S(j) / 4 }
        let beta: [S] = (0..<c).map { (j: Int) -> S in S(j) / 3 - 1 }
        switch family {
        case .matrix:
            var reference = try! BatchNorm<S>(featureCount: c, momentum: 0.8, varianceEstimator: .unbiased,
                                              runningStatistics: policy)
            reference.gamma = gamma
            reference.beta = beta
            return (reference, SyncBatchNorm(reference, communicator: world))
        case .nchw, .nhwc:
            var reference = try! SpatialBatchNorm<S>(channelCount: c, momentum: 0.8,
                                                     varianceEstimator: .unbiased,
                                                     layout: family == .nchw ? .nchw : .nhwc,
                                                     runningStatistics: policy)
            reference.gamma = gamma
            reference.beta = beta
            return (reference, SyncSpatialBatchNorm(reference, communicator: world))
        }
    }

    func runningStatistics<S: BLASScalar>(_ layer: any BufferedNormalizationLayer<S>) -> [S] {
        switch layer {
        case let l as BatchNorm<S>: l.runningMean + l.runningVariance + [S(l.batchesTracked)]
        case let l as SpatialBatchNorm<S>: l.runningMean + l.runningVariance + [S(l.batchesTracked)]
        case let l as SyncBatchNorm<S>: l.runningMean + l.runningVariance + [S(l.batchesTracked)]
        case let l as SyncSpatialBatchNorm<S>: l.runningMean + l.runningVariance + [S(l.batchesTracked)]
        default: []
        }
    }

    /// Two training steps and an inference step: each rank's outputs, input
    /// gradients and running statistics (and count of batches) equal its rows
    /// of the single-process layer's on the concatenated batch, its parameter
    /// gradients summed over the ranks equal the batch's, and the running
    /// statistics are the same bits on every rank. With `policy` `.none` the
    /// inference step exchanges batch statistics too.
    mutating func agreement<S: BLASScalar>(_: S.Type, family: Family, split: [Int], shift: S,
                                           tolerance: Double, policy: RunningStatistics = .exponential) {
        let label = "\(S.self) \(family) split \(split) \(policy)"
        let total = split.reduce(0, +)
        let first = split.prefix(world.rank).reduce(0, +)
        let mine = first..<(first + split[world.rank])
        var (reference, sync) = makeLayers(family, S.self, policy: policy)
        for (step, mode) in [Mode.training, .training, .inference].enumerated() {
            let x: Tensor<S> = tensor(family.shape(total), seed: UInt64(10 + step), shift: shift)
            let dy: Tensor<S> = tensor(family.shape(total), seed: UInt64(20 + step))
            do {
                let (y, cache) = try reference.forward(x, mode: mode)
                let grads = try reference.backward(dy, cache: cache)
                let (myY, myCache) = try sync.forward(samples(x, mine), mode: mode)
                let myGrads = try sync.backward(samples(dy, mine), cache: myCache)
                let outputError = error(myY.scalars, samples(y, mine).scalars)
                expect(outputError <= tolerance, "\(label) step \(step): output, error \(outputError)")
                let dxError = error(myGrads.input.scalars, samples(grads.input, mine).scalars)
                expect(dxError <= tolerance, "\(label) step \(step): dx, error \(dxError)")
                var parameters = myGrads.gamma + myGrads.beta
                try world.allReduceSum(&parameters)
                let parameterError = error(parameters, grads.gamma + grads.beta)
                expect(parameterError <= tolerance,
                       "\(label) step \(step): summed dgamma, dbeta, error \(parameterError)")
                let running = runningStatistics(sync)
                let runningError = error(running, runningStatistics(reference))
                expect(runningError <= tolerance, "\(label) step \(step): running statistics, error \(runningError)")
                let everyRank = try world.allGather(running)
                var same = true
                for r in 0..<world.size {
                    for (j, value) in running.enumerated() {
                        same = same && sameBits(everyRank[r * running.count + j], value)
                    }
                }
                expect(same, "\(label) step \(step): running statistics identical bits on every rank")
            } catch {
                expect(false, "\(label) step \(step) threw \(error)")
            }
        }
    }

    // MARK: Bad input on one rank

    /// A refused call on the last rank makes every rank throw (that rank its
    /// own error, the others `rankFailed`), changes no running statistic, and
    /// leaves the ranks in step for the next call.
    mutating func badInput<S: BLASScalar>(_: S.Type) {
        let last = world.size - 1, isLast = world.rank == last
        var layer = try! SyncBatchNorm<S>(featureCount: 7, communicator: world)
        let good: Tensor<S> = tensor([4, 7], seed: 31, shift: S(10000.1))
        let wrong: Tensor<S> = tensor([4, 6], seed: 32)
        _ = try? layer.forward(good, mode: .training)
        let before = layer.runningMean + layer.runningVariance

        // Forward: a wrong shape on the last rank.
        let shape = isLast ? wrong : good
        let expected: NormError = isLast
            ? .invalidShape(expected: "(N >= 0, 7)", actual: [4, 6]) : .rankFailed(rank: last)
        do {
            _ = try layer.forward(shape, mode: .training)
            expect(false, "\(S.self): forward with a wrong shape on rank \(last) did not throw")
        } catch {
            expect(error == expected, "\(S.self): forward threw \(error), expected \(expected)")
        }
        expect(layer.runningMean + layer.runningVariance == before,
               "\(S.self): running statistics unchanged after a refused forward")

        // Backward (Tensor form, refused before its buffers): a gradient of
        // the wrong shape on the last rank.
        do {
            let (_, cache) = try layer.forward(good, mode: .training)
            let dy: Tensor<S> = isLast ? wrong : tensor([4, 7], seed: 33)
            let expectedBackward: NormError = isLast
                ? .gradientShapeMismatch(expected: [4, 7], actual: [4, 6]) : .rankFailed(rank: last)
            do {
                _ = try layer.backward(dy, cache: cache)
                expect(false, "\(S.self): backward with a wrong gradient on rank \(last) did not throw")
            } catch {
                expect(error == expectedBackward, "\(S.self): backward threw \(error), expected \(expectedBackward)")
            }
            // Still in step: a good backward on every rank.
            _ = try layer.backward(tensor([4, 7], seed: 33), cache: cache)
        } catch {
            expect(false, "\(S.self): a good step after a refused one threw \(error)")
        }

        // Too few values in the whole batch (1 row on rank 0, none elsewhere).
        let tiny: Tensor<S> = tensor([world.rank == 0 ? 1 : 0, 7], seed: 34)
        do {
            _ = try layer.forward(tiny, mode: .training)
            expect(false, "\(S.self): a batch of one row did not throw")
        } catch {
            expect(error == .insufficientValues(valuesPerStatistic: 1), "\(S.self): one row threw \(error)")
        }

        // A NaN on the last rank: the merged statistics are NaN on every rank.
        var poisoned: Tensor<S> = good
        if isLast { poisoned.scalars[9] = .nan }
        do {
            _ = try layer.forward(poisoned, mode: .training)
            expect(false, "\(S.self): a NaN on rank \(last) did not throw")
        } catch {
            expect(error == .nonFiniteStatistics(index: 2), "\(S.self): a NaN threw \(error)")
        }
    }

    // MARK: Ranks in different calls

    /// A rank that skips a backward pairs its next forward with the others'
    /// backward, and a rank may backpropagate another step's cache: every rank
    /// throws `callMismatch`, no running statistic changes, and the ranks are
    /// in step for the next call.
    mutating func callMismatch<S: BLASScalar>(_: S.Type) {
        let last = world.size - 1, isLast = world.rank == last
        var layer = try! SyncBatchNorm<S>(featureCount: 7, communicator: world)
        let x: Tensor<S> = tensor([4, 7], seed: 41, shift: S(10000.1))
        let dy: Tensor<S> = tensor([4, 7], seed: 42)
        do {
            // Two good steps: forward #1 and #2 (caches kept), backward #2.
            let (_, first) = try layer.forward(x, mode: .training)
            let (_, second) = try layer.forward(x, mode: .training)
            _ = try layer.backward(dy, cache: second)
            let before = layer.runningMean + layer.runningVariance

            // The last rank skips its backward of #2 and goes on to forward #3.
            do {
                if isLast { _ = try layer.forward(x, mode: .training) } else { _ = try layer.backward(dy, cache: second) }
                expect(false, "\(S.self): a skipped backward was not found out")
            } catch {
                let expected: NormError = isLast
                    ? .callMismatch(rank: 0, expected: "forward #3", actual: "backward #2")
                    : .callMismatch(rank: last, expected: "backward #2", actual: "forward #3")
                expect(error == expected, "\(S.self): a skipped backward threw \(error), expected \(expected)")
            }
            expect(layer.runningMean + layer.runningVariance == before,
                   "\(S.self): running statistics unchanged after a call mismatch")

            // The last rank backpropagates forward #1's cache, the others #2's.
            do {
                _ = try layer.backward(dy, cache: isLast ? first : second)
                expect(false, "\(S.self): backward of another step's cache was not found out")
            } catch {
                let expected: NormError = isLast
                    ? .callMismatch(rank: 0, expected: "backward #1", actual: "backward #2")
                    : .callMismatch(rank: last, expected: "backward #2", actual: "backward #1")
                expect(error == expected, "\(S.self): another step's backward threw \(error), expected \(expected)")
            }

            // In step again: forward #3 and its backward on every rank.
            let (_, third) = try layer.forward(x, mode: .training)
            _ = try layer.backward(dy, cache: third)
            expect(layer.runningMean != Array(before.prefix(7)), "\(S.self): the next step updated the statistics")
        } catch {
            expect(false, "\(S.self): a step in step threw \(error)")
        }
    }
}

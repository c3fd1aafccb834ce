import NormKit
import Testing

/// Float `(rows, 2)` data whose covariance has condition number about
/// `condition`: `x1 = z1`, `x2 = z1 + z2 / sqrt(condition)`, offset by 10000.1.
private func illConditioned(rows: Int, condition: Double, seed: UInt64) -> Tensor<Float> {
    let z: Tensor<Double> = randomInput([rows, 2], scale: 1, shift: 0, seed: seed)
    var x = [Float](repeating: 0, count: rows * 2)
    for i in 0..<rows {
        x[i * 2] = Float(10000.1 + z.scalars[i * 2])
        x[i * 2 + 1] = Float(10000.1 + z.scalars[i * 2] + 2 * z.scalars[i * 2 + 1] / condition.squareRoot())
    }
    return try! Tensor(x, shape: [rows, 2])
}

/// Whitening's determinism, Newton–Schulz's bounds, and the state and
/// extremes every backend must refuse alike.
@Suite("Whitening: determinism, Newton–Schulz bounds, refused state")
struct WhiteningReliabilityTests {
    @Test("DecorrelatedBatchNorm and Whitening give the same bits at every NormKit and OpenBLAS thread count",
          arguments: [WhiteningMethod.eigen, .cholesky, .newtonSchulz(iterations: 5)])
    func sameBitsAtEveryThreadCount(method: WhiteningMethod) throws {
        let x = correlatedInput(rows: 2000, columns: 128, seed: 7)
        let threads = Threading.threadCount, blasThreads = BLASRuntime.threadCount
        defer { (Threading.threadCount, BLASRuntime.threadCount) = (threads, blasThreads) }
        var results: [[Double]] = []
        for (normKit, openBLAS) in [(1, 1), (2, 2), (2, 1), (1, 2)] {
            (Threading.threadCount, BLASRuntime.threadCount) = (normKit, openBLAS)
            var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 128, groupSize: 64, method: method)
            let (y, cache) = try dbn.forward(x, mode: .training)
            let grads = try dbn.backward(y, cache: cache)
            let fit = try Whitening.fit(x, kind: .zca, epsilon: 1e-3)
            results.append(y.scalars + grads.input.scalars + dbn.runningWhitening + fit.components.scalars)
        }
        for other in results.dropFirst() { #expect(sameBits(other, results[0]), "\(method)") }
    }

    @Test("Newton–Schulz iterations are bounded: 1...64")
    func iterationBound() throws {
        for iterations in [0, 65, 100_000_000] {
            #expect(throws: NormError.invalidIterationCount(iterations)) {
                try DecorrelatedBatchNorm<Float>(featureCount: 4, groupSize: 2,
                                                 method: .newtonSchulz(iterations: iterations))
            }
        }
        var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2, method: .newtonSchulz(iterations: 64))
        let (y, _) = try dbn.forward(correlatedInput(rows: 50, columns: 4, seed: 2), mode: .training)
        #expect(y.scalars.allSatisfy { $0.isFinite })
    }

    @Test("Newton–Schulz on an ill-conditioned group throws whiteningDiverged instead of returning huge values")
    func divergence() throws {
        let x = illConditioned(rows: 257, condition: 2000, seed: 11)
        for backend in [Backend.blas, .naive] {
            // Few iterations: converging, and the output is whitened roughly.
            var few = try DecorrelatedBatchNorm<Float>(featureCount: 2, groupSize: 2, method: .newtonSchulz(iterations: 5),
                                                       backend: backend)
            let (y, cache) = try few.forward(x, mode: .training)
            #expect(y.scalars.allSatisfy { $0.isFinite && abs($0) < 10 })
            _ = try few.backward(y, cache: cache)
            // Many: round-off grows geometrically; the layer says so and changes nothing.
            var many = try DecorrelatedBatchNorm<Float>(featureCount: 2, groupSize: 2,
                                                        method: .newtonSchulz(iterations: 40), backend: backend)
            let before = many
            #expect {
                try many.forward(x, mode: .training)
            } throws: { error in
                guard case .whiteningDiverged(group: 0, _)? = error as? NormError else { return false }
                return true
            }
            #expect(many == before)
        }
    }

    @Test("inference refuses a NaN, zero, indefinite or malformed running whitening, state unchanged")
    func runningWhiteningState() throws {
        let x = correlatedInput(rows: 9, columns: 4, seed: 1)
        let cases: [(WhiteningMethod, [Double], NormError)] = [
            (.eigen, [.nan, 0, 0, 1], .nonFiniteStatistics(index: 0)),
            (.eigen, [.infinity, 0, 0, 1], .nonFiniteStatistics(index: 0)),
            (.eigen, [0, 0, 0, 0], .notPositiveDefinite(group: 0, minor: 1)),
            (.eigen, [1, 0, 0, -1], .notPositiveDefinite(group: 0, minor: 2)),
            (.newtonSchulz(iterations: 5), [1, 2, 2, 1], .notPositiveDefinite(group: 0, minor: 2)),
            (.cholesky, [0, 0, 0, 0], .notPositiveDefinite(group: 0, minor: 1)),
            (.cholesky, [1, 0.5, 0.5, 1],
             .unsupportedParameter(name: "runningWhitening", expected: "upper triangular blocks (L⁻ᵀ, .cholesky)")),
        ]
        for (method, block, error) in cases {
            for backend in [Backend.blas, .naive] {
                var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2, method: method, backend: backend)
                dbn.runningWhitening.replaceSubrange(4..<8, with: block)   // the second group
                let before = dbn
                #expect(throws: shifted(error, by: 1)) { try dbn.forward(x, mode: .inference) }
                #expect(dbn == before)
            }
        }
        // What training leaves is accepted, for every method.
        for method in [WhiteningMethod.eigen, .cholesky, .newtonSchulz(iterations: 5)] {
            var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2, method: method)
            for seed in 1...3 { _ = try dbn.forward(correlatedInput(rows: 50, columns: 4, seed: UInt64(seed)), mode: .training) }
            #expect(try dbn.forward(x, mode: .inference).output.scalars.allSatisfy { $0.isFinite })
        }
    }

    /// `error` as group 1 (features 2 and 3) reports it.
    private func shifted(_ error: NormError, by group: Int) -> NormError {
        switch error {
        case .nonFiniteStatistics(let index): .nonFiniteStatistics(index: index + 2 * group)
        case let .notPositiveDefinite(_, minor): .notPositiveDefinite(group: group, minor: minor)
        default: error
        }
    }

    @Test("an overflowing covariance and a singular group with a tiny epsilon throw alike on both backends")
    func extremes() throws {
        // Float values of 1e20: their squares overflow the covariance.
        let big = try Tensor<Float>(randomNormal: [33, 4], standardDeviation: 1e20, seed: 5)
        for method in [WhiteningMethod.eigen, .cholesky, .newtonSchulz(iterations: 5)] {
            for backend in [Backend.blas, .naive] {
                var dbn = try DecorrelatedBatchNorm<Float>(featureCount: 4, groupSize: 2, method: method, backend: backend)
                let before = dbn
                #expect(throws: NormError.nonFiniteStatistics(index: 0), "\(method) \(backend)") {
                    try dbn.forward(big, mode: .training)
                }
                #expect(dbn == before)
            }
        }
        // An exactly singular group (a duplicated feature) with epsilon 1e-300:
        // below the eigensolver's accuracy on both backends.
        var duplicated = correlatedInput(rows: 8, columns: 4, seed: 3).scalars
        for i in 0..<8 { duplicated[i * 4 + 1] = duplicated[i * 4] }
        for backend in [Backend.blas, .naive] {
            var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2, method: .eigen,
                                                        epsilon: 1e-300, backend: backend)
            let before = dbn
            #expect(throws: NormError.nonFiniteStatistics(index: 0), "\(backend)") {
                try dbn.forward(Tensor(duplicated, shape: [8, 4]), mode: .training)
            }
            #expect(dbn == before)
        }
    }
}

/// Subnormal inputs: IEEE results by default, zeros inside
/// `Subnormals.flushingToZero`, and the caller's mode restored.
@Suite("Subnormals")
struct SubnormalTests {
    /// Keeps the optimizer from folding a division at compile time.
    @inline(never) func opaque<T>(_ value: T) -> T { value }

    @Test("flushingToZero treats subnormal inputs as zero on every worker; outside it, IEEE")
    func flushToZero() throws {
        let threads = Threading.threadCount
        defer { Threading.threadCount = threads }
        for count in [1, 2] {
            Threading.threadCount = count
            let normal: Tensor<Float> = randomInput([4096, 33], scale: 1, shift: 3, seed: 4)
            let tiny = try Tensor(normal.scalars.map { $0 * 1e-39 }, shape: normal.shape)
            #expect(tiny.scalars.allSatisfy { $0 != 0 && $0.isSubnormal })
            var bn = try BatchNorm<Float>(featureCount: 33)
            // IEEE: the squares underflow, so the variance is 0 and the output is
            // (x - mean) / sqrt(epsilon): about 1e-36, but not zero.
            let (y, _) = try bn.forward(tiny, mode: .training)
            #expect(y.scalars.filter { $0 != 0 }.count > 4096 * 33 / 2)
            // Flushed: every column is constant zero, so the output is beta (0),
            // on the rows of every worker.
            let (flushed, cache) = try Subnormals.flushingToZero { try bn.forward(tiny, mode: .training) }
            #expect(flushed.scalars.allSatisfy { $0 == 0 })
            let grads = try Subnormals.flushingToZero { try bn.backward(tiny, cache: cache) }
            #expect(grads.input.scalars.allSatisfy { $0 == 0 })
            var ln = try LayerNorm<Float>(featureCount: 33)
            #expect(try ln.forward(tiny, mode: .training).output.scalars.contains { $0 != 0 })
            let (rows, _) = try Subnormals.flushingToZero { try ln.forward(tiny, mode: .training) }
            #expect(rows.scalars.allSatisfy { $0 == 0 })
            // The calling thread's mode is restored, also after a throw.
            #expect(!Subnormals.isFlushingToZero)
            #expect(Float.leastNormalMagnitude / opaque(Float(2)) != 0)
            #expect(throws: NormError.self) {
                try Subnormals.flushingToZero { try bn.forward(Tensor(zeros: [4, 2]), mode: .training) }
            }
            #expect(!Subnormals.isFlushingToZero)
        }
    }
}

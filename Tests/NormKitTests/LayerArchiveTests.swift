import NormKit
import Testing

/// Writes `layer`'s archive to `.npz` bytes and reads it back as `Layer`.
private func roundTrip<Layer: ArchivableLayer>(_ layer: Layer) throws -> Layer {
    try Layer(archive: NumPyArchive(npz: layer.archive().npz()))
}

/// The archive with `name` replaced by `array` (or removed).
private func editing(_ archive: NumPyArchive, _ name: String, _ array: NumPyArray?) -> NumPyArchive {
    var copy = archive
    copy[name] = array
    return copy
}

/// The error `make` throws, or `nil`.
private func error<T>(_ make: () throws(NormError) -> T) -> NormError? {
    do { _ = try make(); return nil } catch { return error }
}

@Suite("archive() and init(archive:) (DESIGN §2.5)")
struct LayerArchiveTests {
    @Test("every layer round-trips through .npz bytes with every setting, trained state included (==)")
    func everyLayerRoundTrips() throws {
        let x: Tensor<Double> = randomInput([7, 6], shift: 10000.1, seed: 3)
        let channelsLast: Tensor<Double> = randomInput([3, 2, 5, 4], shift: 10000.1, seed: 5)

        var bn = try BatchNorm<Double>(featureCount: 6, epsilon: 1e-3, momentum: 0.7, varianceEstimator: .unbiased,
                                       activation: .relu, runningStatistics: .cumulative, backend: .naive)
        bn.gamma = [1.5, 0.1, -2, 3.3, 0.7, 1e-7]
        _ = try bn.forward(x, mode: .training)
        _ = try bn.forward(x, mode: .training)
        #expect(try roundTrip(bn) == bn)
        #expect(try roundTrip(bn).batchesTracked == 2)

        var sbn = try SpatialBatchNorm<Double>(channelCount: 4, momentum: 0.3, layout: .nhwc,
                                               runningStatistics: .none)
        _ = try sbn.forward(channelsLast, mode: .training)
        sbn.beta = [0.1, -0.2, 0.3, 10000.1]
        #expect(try roundTrip(sbn) == sbn)

        var ln = try LayerNorm<Double>(normalizedShape: [2, 3], epsilon: 3e-6, backend: .naive)
        ln.gamma = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
        #expect(try roundTrip(ln) == ln)
        #expect(try roundTrip(ln).normalizedShape == [2, 3])

        var rms = try RMSNorm<Double>(featureCount: 6, epsilon: 1e-6)
        rms.gamma = [2, 2, 2, 0.1, 0.1, 0.1]
        #expect(try roundTrip(rms) == rms)

        var gn = try GroupNorm<Double>(channelCount: 4, groupCount: 2, epsilon: 2e-5, activation: .relu)
        gn.beta = [1, 2, 3, 4]
        #expect(try roundTrip(gn) == gn)

        var inorm = try InstanceNorm<Double>(channelCount: 4, epsilon: 1e-4, backend: .naive)
        inorm.gamma = [9, 8, 7, 6]
        #expect(try roundTrip(inorm) == inorm)
        var tracked = try InstanceNorm<Double>(channelCount: 4, momentum: 0.6, varianceEstimator: .unbiased,
                                               runningStatistics: .cumulative)
        _ = try tracked.forward(randomInput([2, 4, 3, 3], shift: 10000.1, seed: 6), mode: .training)
        #expect(try roundTrip(tracked) == tracked)

        for method in [WhiteningMethod.eigen, .cholesky, .newtonSchulz(iterations: 7)] {
            var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 6, groupSize: 3, method: method,
                                                        epsilon: 1e-3, momentum: 0.6)
            _ = try dbn.forward(x, mode: .training)
            #expect(try roundTrip(dbn) == dbn, "\(method)")
        }

        // Float layers store '<f4' and come back bit for bit.
        var bnf = try BatchNorm<Float>(featureCount: 6, momentum: 0.8)
        _ = try bnf.forward(randomInput([9, 6], shift: 10000.1, seed: 8), mode: .training)
        #expect(try roundTrip(bnf) == bnf)
    }

    @Test("entries are named after the layer's properties, in NumPy types that numpy.load reads")
    func entriesAreNamed() throws {
        var bn = try BatchNorm<Float>(featureCount: 3, momentum: 0.8, runningStatistics: .cumulative)
        bn.batchesTracked = 12
        let archive = bn.archive()
        #expect(archive["layer"] == NumPyArray(text: "BatchNorm"))
        #expect(archive["gamma"]?.descriptor == "<f4")
        #expect(archive["gamma"]?.shape == [3])
        #expect(archive["epsilon"]?.shape == [])
        #expect(try archive.tensor("momentum", as: Float.self).scalars == [0.8])
        #expect(try archive["batchesTracked"]?.integers() == [12])
        #expect(archive["runningStatistics"] == NumPyArray(text: "cumulative"))
        #expect(archive["varianceEstimator"] == NumPyArray(text: "biased"))

        let dbn = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2, method: .newtonSchulz(iterations: 5))
        #expect(try dbn.archive()["method.newtonSchulz.iterations"]?.integers() == [5])
        let eigen = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2).archive()
        #expect(eigen["method.eigen"]?.shape == [0])
        #expect(eigen["method"] == nil)
        #expect(eigen["runningWhitening"]?.descriptor == "<f8")
    }

    @Test("a float32 archive widens exactly into a Double layer; a float64 one narrows to Float by rounding")
    func widensAndNarrows() throws {
        var bnf = try BatchNorm<Float>(featureCount: 3, epsilon: 1e-3, momentum: 0.85)
        bnf.gamma = [0.1, 10000.1, -3.7]
        let wide = try BatchNorm<Double>(archive: bnf.archive())
        #expect(wide.gamma == bnf.gamma.map(Double.init))
        #expect(wide.epsilon == Double(Float(1e-3)))
        #expect(wide.momentum == Double(Float(0.85)))

        var bnd = try BatchNorm<Double>(featureCount: 3, momentum: 0.85)
        bnd.gamma = [0.1, 10000.1, -3.7]
        let narrow = try BatchNorm<Float>(archive: bnd.archive())
        #expect(narrow.gamma == [Float(0.1), Float(10000.1), Float(-3.7)])
        #expect(narrow.momentum == Float(0.85))

        // A finite value beyond Float's range is refused, naming the entry.
        bnd.gamma[1] = 1e300
        let refused = error { () throws(NormError) in try BatchNorm<Float>(archive: bnd.archive()) }
        #expect(refused?.description.contains("'gamma'") == true)
    }

    @Test("bad archives: each error names the entry; settings are checked as the initializer checks them")
    func badArchives() throws {
        var bn = try BatchNorm<Double>(featureCount: 3)
        _ = try bn.forward(randomInput([5, 3], seed: 2), mode: .training)
        let good = bn.archive()

        let missing = error { () throws(NormError) in try BatchNorm<Double>(archive: editing(good, "momentum", nil)) }
        #expect(missing?.description.contains("'momentum'") == true)

        let other = error { () throws(NormError) in try BatchNorm<Double>(archive: try LayerNorm<Double>(featureCount: 3).archive()) }
        #expect(other?.description.contains("BatchNorm") == true)
        #expect(other?.description.contains("LayerNorm") == true)

        let integerEpsilon = error { () throws(NormError) in
            try BatchNorm<Double>(archive: editing(good, "epsilon", NumPyArray(integer: 1)))
        }
        #expect(integerEpsilon?.description.contains("'epsilon'") == true)

        let vectorEpsilon = error { () throws(NormError) in
            try BatchNorm<Double>(archive: editing(good, "epsilon", NumPyArray([1e-5, 1e-5])))
        }
        #expect(vectorEpsilon?.description.contains("'epsilon'") == true)

        let negative = error { () throws(NormError) in
            try BatchNorm<Double>(archive: editing(good, "epsilon", NumPyArray(try Tensor<Double>(shape: [], scalars: [-1]))))
        }
        #expect(negative == .invalidEpsilon(-1))

        let shortGamma = error { () throws(NormError) in
            try BatchNorm<Double>(archive: editing(good, "gamma", NumPyArray([1.0, 2.0])))
        }
        #expect(shortGamma == .parameterCountMismatch(name: "gamma", expected: 3, actual: 2))

        let policy = error { () throws(NormError) in
            try BatchNorm<Double>(archive: editing(good, "runningStatistics", NumPyArray(text: "sometimes")))
        }
        #expect(policy?.description.contains("runningStatistics") == true)

        let negativeVariance = error { () throws(NormError) in
            try BatchNorm<Double>(archive: editing(good, "runningVariance", NumPyArray([1.0, -2.0, 3.0])))
        }
        #expect(negativeVariance?.description.contains("runningVariance") == true)

        let count = error { () throws(NormError) in
            try BatchNorm<Double>(archive: editing(good, "batchesTracked", NumPyArray(integer: -4)))
        }
        #expect(count != nil)

        // Hostile settings: a `layer` entry that is not text, two whitening
        // methods at once, a count far beyond the arrays: named errors, no trap.
        let notText = error { () throws(NormError) in
            try BatchNorm<Double>(archive: editing(good, "layer", NumPyArray(integer: 7)))
        }
        #expect(notText?.description.contains("'layer'") == true)
        var twoMethods = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2).archive()
        twoMethods["method.cholesky"] = twoMethods["method.eigen"]
        #expect(error { () throws(NormError) in try DecorrelatedBatchNorm<Double>(archive: twoMethods) } != nil)
        let huge = error { () throws(NormError) in
            try BatchNorm<Double>(archive: editing(good, "featureCount", NumPyArray(integer: 1 << 60)))
        }
        #expect(huge == .sizeTooLarge(1 << 60))   // refused before anything is allocated

        // Without a `layer` entry (an archive made by hand), the entries decide.
        #expect(try BatchNorm<Double>(archive: editing(good, "layer", nil)) == bn)
    }
}

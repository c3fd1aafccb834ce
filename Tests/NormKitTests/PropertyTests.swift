import NormKit
import PropertyBased
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// How the property tests draw their inputs. By default (`make test`, CI)
/// iteration `i` draws from a generator seeded with `i`, so every run checks
/// the same cases; `NORMKIT_PROPERTY_COUNT` sets the number of iterations
/// (`make test-long`: 2000), and `NORMKIT_PROPERTY_RANDOM=1` draws from fresh
/// random seeds through `propertyCheck`, which shrinks a failing input.
enum PropertyRun {
    static let count: Int = environment("NORMKIT_PROPERTY_COUNT").flatMap { Int($0) } ?? 40
    static let randomSeeds = environment("NORMKIT_PROPERTY_RANDOM") == "1"

    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }

    /// Checks `body` on `count` inputs from `generator`.
    static func check<Value, Shrinks>(
        _ generator: Generator<Value, Shrinks>,
        sourceLocation: SourceLocation = #_sourceLocation,
        _ body: (Value) throws -> Void
    ) async {
        if randomSeeds {
            await propertyCheck(count: count, input: generator, perform: { try body($0) },
                                sourceLocation: sourceLocation)
            return
        }
        for i in 0..<count {
            // Xoshiro's state from SplitMix64, as its authors advise: nearby
            // states would give nearby first draws.
            var mix = SplitMix64(seed: UInt64(i))
            var rng = Xoshiro(seed: (mix.next(), mix.next(), mix.next(), mix.next()))
            let value = generator.run(using: &rng)
            do {
                try body(value)
            } catch {
                Issue.record("seed \(i), input \(value): \(error)", sourceLocation: sourceLocation)
            }
        }
    }
}

/// A drawn case: a layer family, a shape, a seed for values and parameters.
struct DrawnCase: CustomStringConvertible, Sendable {
    let layer: CentredLayer
    let length: Int
    let seed: UInt64
    let offset: Double
    let scale: Double

    var description: String {
        "\(layer), length \(length), seed \(seed), offset \(offset), scale \(scale)"
    }

    static let generator = zip(
        Gen.int(in: 0..<CentredLayer.allCases.count), Gen.int(in: 2...300),
        Gen.uint64(in: 0...UInt64(1 << 40)), Gen.double(in: -4...4), Gen.double(in: -2...2)
    ).map { layer, length, seed, offset, scale in
        DrawnCase(layer: CentredLayer.allCases[layer], length: length, seed: seed,
                  offset: offset < -3 ? 0 : offset * 10, scale: pow(10, scale))
    }
}

@Suite("Properties")
struct PropertyTests {
    @Test("a constant input gives beta bit for bit, for any layer, shape and value")
    func constantGivesBeta() async {
        let generator = zip(DrawnCase.generator, Gen.double(in: -30...30), Gen.bool)
        await PropertyRun.check(generator) { drawn, exponent, naive in
            let value = (drawn.seed.isMultiple(of: 2) ? 1 : -1) * pow(10, exponent) * 1.1
            for float in [true, false] {
                if float {
                    try constant(Float.self, drawn, value: value, backend: naive ? .naive : .blas)
                } else {
                    try constant(Double.self, drawn, value: value, backend: naive ? .naive : .blas)
                }
            }
        }
    }

    func constant<S: BLASScalar>(_: S.Type, _ drawn: DrawnCase, value: Double, backend: Backend) throws {
        let shape = drawn.layer.shape(length: drawn.length)
        let count = shape.reduce(1, *)
        let x = try Tensor<S>(shape: shape, scalars: Array(repeating: S(value), count: count))
        let layer = try drawn.layer.make(S.self, shape: shape, backend: backend, seed: drawn.seed)
        let (y, _) = try layer.forward(x)
        let expected = (0..<count).map { layer.beta[drawn.layer.parameter(of: $0, shape: shape)] }
        #expect(bits(y.scalars) == bits(expected), "\(drawn) \(S.self) \(backend) value \(value)")
    }

    @Test(".blas equals .naive within the README's tolerance, forward and backward")
    func backendsAgree() async {
        await PropertyRun.check(DrawnCase.generator) { drawn in
            try agree(Double.self, drawn, tolerance: 1e-12)
            try agree(Float.self, drawn, tolerance: 1e-5)
        }
    }

    func agree<S: BLASScalar>(_: S.Type, _ drawn: DrawnCase, tolerance: Double) throws {
        let shape = drawn.layer.shape(length: drawn.length)
        let x: Tensor<S> = randomInput(shape, scale: drawn.scale, shift: drawn.offset * drawn.scale,
                                       seed: drawn.seed)
        let dy: Tensor<S> = randomInput(shape, scale: 1, shift: 0, seed: drawn.seed + 1)
        let blas = try drawn.layer.make(S.self, shape: shape, backend: .blas, seed: drawn.seed)
        let naive = try drawn.layer.make(S.self, shape: shape, backend: .naive, seed: drawn.seed)
        let (yb, cb) = try blas.forward(x), (yn, cn) = try naive.forward(x)
        #expect(normwiseError(yb.scalars, yn.scalars) <= tolerance, "\(drawn) \(S.self) y")
        let gb = try blas.backward(dy, cb), gn = try naive.backward(dy, cn)
        // dx is a difference of terms of size gamma·invstd·dy (see normwiseError);
        // dgamma and dbeta are sums, compared relative to the sums of the
        // absolute values of their terms, Σ|dy·xhat| and Σ|dy| per parameter.
        var dxScale = 0.0
        var betaTerms = [Double](repeating: 0, count: gb.beta.count), gammaTerms = betaTerms
        for k in 0..<x.count {
            let p = drawn.layer.parameter(of: k, shape: shape), s = drawn.layer.statistic(of: k, shape: shape)
            let invstd = Double(cb.inverseStandardDeviation[s]), g = Double(dy.scalars[k])
            let xhat = (Double(x.scalars[k]) - Double(cb.mean[s])) * invstd
            dxScale = max(dxScale, abs(Double(cb.gamma[p]) * invstd * g))
            betaTerms[p] += abs(g)
            gammaTerms[p] += abs(g * xhat)
        }
        #expect(normwiseError(gb.input.scalars, gn.input.scalars, scale: dxScale) <= tolerance,
                "\(drawn) \(S.self) dx")
        #expect(normwiseError(gb.gamma, gn.gamma, scale: gammaTerms.max()!) <= tolerance,
                "\(drawn) \(S.self) dgamma")
        #expect(normwiseError(gb.beta, gn.beta, scale: betaTerms.max()!) <= tolerance,
                "\(drawn) \(S.self) dbeta")
    }

    /// Small shapes and parameters for the structural properties.
    static let small = zip(Gen.int(in: 1...4), Gen.int(in: 1...5), Gen.int(in: 1...5),
                           Gen.int(in: 1...4), Gen.uint64(in: 0...UInt64(1 << 40)))

    @Test("BatchNorm is invariant to a positive per-feature affine change of its input")
    func batchNormAffineInvariance() async {
        await PropertyRun.check(zip(Gen.int(in: 2...40), Gen.int(in: 1...9),
                                    Gen.uint64(in: 0...UInt64(1 << 40)), Gen.bool)) { n, d, seed, naive in
            var bn = try BatchNorm<Double>(featureCount: d, epsilon: 1e-300, backend: naive ? .naive : .blas)
            let x: Tensor<Double> = randomInput([n, d], seed: seed)
            let a = (0..<d).map { j in
                0.25 + Double((seed >> UInt64(j % 32)) & 7)
            }
            let b: [Double] = randomVector(d, scale: 100, seed: seed + 1)
            let moved = try Tensor(shape: [n, d], scalars: x.scalars.indices.map {
                a[$0 % d] * x.scalars[$0] + b[$0 % d]
            })
            let y = try bn.forward(x, mode: .training).output
            let z = try bn.forward(moved, mode: .training).output
            #expect(normwiseError(z.scalars, y.scalars, scale: 1) <= 1e-9, "n \(n) d \(d) seed \(seed)")
        }
    }

    @Test("LayerNorm and RMSNorm are invariant to a positive per-row scale of their input")
    func rowScaleInvariance() async {
        await PropertyRun.check(zip(Gen.int(in: 1...9), Gen.int(in: 2...40),
                                    Gen.uint64(in: 0...UInt64(1 << 40)), Gen.bool)) { n, d, seed, naive in
            let backend: Backend = naive ? .naive : .blas
            let x: Tensor<Double> = randomInput([n, d], seed: seed)
            let scales = (0..<n).map { i in 0.125 * Double(1 + (seed >> UInt64(i % 40)) & 63) }
            let scaled = try Tensor(shape: [n, d], scalars: x.scalars.indices.map {
                scales[$0 / d] * x.scalars[$0]
            })
            let ln = try LayerNorm<Double>(featureCount: d, epsilon: 1e-300, backend: backend)
            let rms = try RMSNorm<Double>(featureCount: d, epsilon: 1e-300, backend: backend)
            for layer in [AnyLayer(ln), AnyLayer(rms)] {
                let l = layer
                let y = try l.forward(x).0, z = try l.forward(scaled).0
                #expect(normwiseError(z.scalars, y.scalars, scale: 1) <= 1e-12, "n \(n) d \(d) seed \(seed)")
            }
        }
    }

    @Test("SpatialBatchNorm in NHWC is BatchNorm on the (N·H·W, C) matrix, bit for bit")
    func channelsLastIsBatchNorm() async {
        await PropertyRun.check(Self.small) { n, h, w, c, seed in
            guard n * h * w >= 2 else { return }
            for backend in [Backend.blas, .naive] {
                var spatial = try SpatialBatchNorm<Float>(channelCount: c, layout: .nhwc, backend: backend)
                var bn = try BatchNorm<Float>(featureCount: c, backend: backend)
                spatial.gamma = randomVector(c, shift: 1, seed: seed)
                bn.gamma = spatial.gamma
                let x: Tensor<Float> = randomInput([n, h, w, c], seed: seed)
                let matrix = try Tensor(shape: [n * h * w, c], scalars: x.scalars)
                let (ys, cs) = try spatial.forward(x, mode: .training)
                let (yb, cb) = try bn.forward(matrix, mode: .training)
                #expect(bits(ys.scalars) == bits(yb.scalars), "\([n, h, w, c]) \(backend)")
                #expect(bits(spatial.runningVariance) == bits(bn.runningVariance))
                let dy: Tensor<Float> = randomInput([n, h, w, c], scale: 1, shift: 0, seed: seed + 1)
                let gs = try spatial.backward(dy, cache: cs)
                let gb = try bn.backward(try Tensor(shape: [n * h * w, c], scalars: dy.scalars), cache: cb)
                #expect(bits(gs.input.scalars) == bits(gb.input.scalars) && bits(gs.gamma) == bits(gb.gamma))
            }
        }
    }

    @Test("GroupNorm with G = C is InstanceNorm, bit for bit; with G = 1 it is LayerNorm over C·H·W")
    func groupNormLimits() async {
        await PropertyRun.check(Self.small) { n, h, w, c, seed in
            guard h * w >= 2 else { return }   // InstanceNorm's statistics need two values
            for backend in [Backend.blas, .naive] {
                let x: Tensor<Double> = randomInput([n, c, h, w], seed: seed)
                let dy: Tensor<Double> = randomInput([n, c, h, w], scale: 1, shift: 0, seed: seed + 1)
                var gn = try GroupNorm<Double>(channelCount: c, groupCount: c, backend: backend)
                var instance = try InstanceNorm<Double>(channelCount: c, backend: backend)
                let (yg, cg) = try gn.forward(x, mode: .training)
                let (yi, ci) = try instance.forward(x, mode: .training)
                #expect(bits(yg.scalars) == bits(yi.scalars), "\([n, c, h, w]) \(backend)")
                #expect(bits(try gn.backward(dy, cache: cg).input.scalars)
                        == bits(try instance.backward(dy, cache: ci).input.scalars))

                var one = try GroupNorm<Double>(channelCount: c, groupCount: 1, backend: backend)
                var ln = try LayerNorm<Double>(featureCount: c * h * w, backend: backend)
                let matrix = try Tensor(shape: [n, c * h * w], scalars: x.scalars)
                let (y1, c1) = try one.forward(x, mode: .training)
                let (yl, cl) = try ln.forward(matrix, mode: .training)
                #expect(normwiseError(y1.scalars, yl.scalars) <= 1e-12, "\([n, c, h, w]) \(backend)")
                let g1 = try one.backward(dy, cache: c1)
                let gl = try ln.backward(try Tensor(shape: [n, c * h * w], scalars: dy.scalars), cache: cl)
                #expect(normwiseError(g1.input.scalars, gl.input.scalars, scale: 1) <= 1e-12)
            }
        }
    }

    @Test("backward matches centred differences on small random shapes (Double)")
    func gradientCheck() async {
        // At 2 values per statistic the output barely depends on x (xhat = ±1)
        // and dx is round-off-sized; from 3 on it is a real check.
        await PropertyRun.check(zip(DrawnCase.generator, Gen.int(in: 3...6))) { drawn, length in
            let shape = drawn.layer.shape(length: length)
            let x: Tensor<Double> = randomInput(shape, seed: drawn.seed)
            let dy: Tensor<Double> = randomInput(shape, scale: 1, shift: 0, seed: drawn.seed + 2)
            let layer = try drawn.layer.make(Double.self, shape: shape, backend: .blas, seed: drawn.seed)
            let forward = layer
            let (_, cache) = try forward.forward(x)
            let analytic = try layer.backward(dy, cache).input.scalars
            let probe = layer
            // A step well below the spread of a 2-value statistic, where the
            // layer is far from linear; Double round-off stays near 1e-12.
            let numeric = try referenceGradient(at: x, outputGradient: dy, step: 1e-4) {
                try probe.forward($0).0
            }
            #expect(GradientCheck.relativeError(analytic, numeric.scalars, floor: 1e-3) <= 1e-7,
                    "\(drawn.layer) \(shape) seed \(drawn.seed)")
        }
    }

    @Test("a throwing call throws a NormError and changes no state")
    func refusalsChangeNothing() async {
        let bad = zip(Gen.int(in: 0...5), Gen.int(in: -2...6), Gen.int(in: -1...6),
                      Gen.double(in: -1...2), Gen.int(in: 0...3))
        await PropertyRun.check(bad) { kind, rows, columns, parameter, poison in
            var bn = try BatchNorm<Float>(featureCount: 4)
            _ = try bn.forward(randomInput([6, 4], seed: 1), mode: .training)
            let before = (bits(bn.runningMean), bits(bn.runningVariance), bits(bn.gamma), bits(bn.beta))
            var values = (0..<(max(rows, 0) * max(columns, 0))).map { Float($0 % 7) + 0.1 }
            if poison == 1, !values.isEmpty { values[values.count / 2] = .nan }
            if poison == 2, !values.isEmpty { values[0] = .infinity }
            do throws(NormError) {
                switch kind {
                case 0: bn.epsilon = Float(parameter) - 0.5
                case 1: bn.momentum = Float(parameter) * 2 - 1
                case 2: bn.gamma = Array(repeating: 1, count: max(0, columns))
                case 3: bn.runningMean = Array(repeating: 0, count: max(0, columns))
                default: break
                }
                let input = try Tensor<Float>(shape: [rows, columns], scalars: values)
                _ = try bn.forward(input, mode: kind == 5 ? .inference : .training)
            } catch {
                // Typed throws make the error a NormError; the state is as it was.
                #expect(!error.description.isEmpty)
                #expect(bits(bn.runningVariance) == before.1, "kind \(kind) shape [\(rows), \(columns)]")
                if kind != 3 { #expect(bits(bn.runningMean) == before.0) }
                if kind != 2 { #expect(bits(bn.gamma) == before.2) }
                #expect(bits(bn.beta) == before.3)
            }
        }
    }
}

import NormKit
import Testing

/// Every layer with a mean, as one value: how to build it for a statistic of
/// `length` values and how its input is laid out, so one check covers all.
enum CentredLayer: CaseIterable, CustomStringConvertible, Sendable {
    case batch, spatialNCHW, spatialNHWC, layer, group, instance

    var description: String {
        switch self {
        case .batch: "BatchNorm"
        case .spatialNCHW: "SpatialBatchNorm(nchw)"
        case .spatialNHWC: "SpatialBatchNorm(nhwc)"
        case .layer: "LayerNorm"
        case .group: "GroupNorm"
        case .instance: "InstanceNorm"
        }
    }

    /// An input shape whose statistics each run over `length` values (for the
    /// spatial layers, `length` is split as `N·H·W` or `(C/G)·H·W` as it
    /// factors), with 3 statistics.
    func shape(length: Int) -> [Int] {
        switch self {
        case .batch: [length, 3]
        case .layer: [3, length]
        // N·H·W = length: N = 1 or 2 when even, a 1 x length/N image.
        case .spatialNCHW: length % 2 == 0 ? [2, 3, 1, length / 2] : [1, 3, length, 1]
        case .spatialNHWC: length % 2 == 0 ? [2, 1, length / 2, 3] : [1, length, 1, 3]
        // Two channels per group when length is even, one otherwise.
        case .group: length % 2 == 0 ? [3, 4, 1, length / 2] : [3, 2, length, 1]
        case .instance: [3, 1, 1, length]
        }
    }

    func make<S: BLASScalar>(_: S.Type, shape: [Int], backend: Backend, seed: UInt64) throws
        -> AnyLayer<S> {
        switch self {
        case .batch:
            var l = try BatchNorm<S>(featureCount: shape[1], backend: backend)
            l.gamma = randomVector(shape[1], shift: 1, seed: seed)
            l.beta = randomVector(shape[1], seed: seed + 1)
            return AnyLayer(l)
        case .layer:
            var l = try LayerNorm<S>(featureCount: shape[1], backend: backend)
            l.gamma = randomVector(shape[1], shift: 1, seed: seed)
            l.beta = randomVector(shape[1], seed: seed + 1)
            return AnyLayer(l)
        case .spatialNCHW, .spatialNHWC, .group, .instance:
            let layer: ConvolutionalLayer = switch self {
            case .spatialNCHW: .spatialNCHW
            case .spatialNHWC: .spatialNHWC
            case .group: .group
            default: .instance
            }
            return try layer.make(S.self, shape: shape, groups: self == .group ? 2 : 1,
                                  backend: backend, seed: seed)
        }
    }

    /// The index of the statistic element `k` of an input of `shape` belongs to.
    func statistic(of k: Int, shape: [Int]) -> Int {
        switch self {
        case .batch, .spatialNHWC: k % shape.last!
        case .layer: k / shape[1]
        case .spatialNCHW: (k / (shape[2] * shape[3])) % shape[1]
        case .group: k / (shape[1] / 2 * shape[2] * shape[3])
        case .instance: k / (shape[2] * shape[3])
        }
    }

    /// The parameter (`gamma`, `beta`) index of element `k`.
    func parameter(of k: Int, shape: [Int]) -> Int {
        switch self {
        case .batch, .spatialNHWC, .layer: k % shape.last!
        case .spatialNCHW, .group, .instance: (k / (shape[2] * shape[3])) % shape[1]
        }
    }
}

/// Statistics that are exact where exactness is possible (issue 9): a constant
/// statistic gives `beta` bit for bit, whatever its value and length, and data
/// with a large common offset keeps its spread.
@Suite("Exact statistics")
struct ExactStatisticsTests {
    /// Lengths of a statistic: tiny, odd, powers of two and their neighbours,
    /// past an L2 block, up to 4097.
    static let lengths = [2, 3, 5, 31, 64, 65, 127, 256, 1000, 1023, 4095, 4097]
    /// Values whose sums are not exact in binary, from 1e-30 to 1e30.
    static let constants: [Double] = [10000.1, -0.3, 3.7e7, -1e30, 1e30, 1e-30, 0.1, 299.9]

    /// A constant input gives `beta` exactly, and backward gives the exact
    /// gradient of the layer at a constant statistic:
    /// `dx = (g - mean(g)) / sqrt(epsilon)` with `g = gamma·dy`, over each statistic.
    func constantGivesBeta<S: BLASScalar>(_: S.Type, layer: CentredLayer, backend: Backend,
                                          tolerance: Double) throws {
        for (index, length) in Self.lengths.enumerated() {
            let value = Self.constants[index % Self.constants.count]
            let shape = layer.shape(length: length)
            let count = shape.reduce(1, *)
            let x = try Tensor<S>(shape: shape, scalars: Array(repeating: S(value), count: count))
            let l = try layer.make(S.self, shape: shape, backend: backend, seed: UInt64(length))
            let (y, cache) = try l.forward(x)
            let expected = (0..<count).map { l.beta[layer.parameter(of: $0, shape: shape)] }
            #expect(bits(y.scalars) == bits(expected),
                    "\(layer) \(backend) \(S.self) length \(length) value \(value)")
            // The statistics themselves: the mean is the value, the variance 0.
            #expect(cache.mean.allSatisfy { $0 == S(value) }, "\(layer) mean, length \(length)")
            let invstd = 1 / (Double(S(1e-5))).squareRoot()
            #expect(cache.inverseStandardDeviation.allSatisfy {
                abs(Double($0) - invstd) <= 1e-6 * invstd
            }, "\(layer) invstd, length \(length)")

            let dy: Tensor<S> = randomInput(shape, scale: 1, shift: 0, seed: UInt64(length) + 9)
            let dx = try l.backward(dy, cache).input.scalars
            // Reference in Double: per statistic, (g - mean(g)) / sqrt(eps).
            var sums = [Int: Double](), counts = [Int: Double]()
            var g = [Double](repeating: 0, count: count)
            for k in 0..<count {
                g[k] = Double(l.gamma[layer.parameter(of: k, shape: shape)]) * Double(dy.scalars[k])
                let s = layer.statistic(of: k, shape: shape)
                sums[s, default: 0] += g[k]
                counts[s, default: 0] += 1
            }
            let reference = (0..<count).map { k -> S in
                let s = layer.statistic(of: k, shape: shape)
                return S((g[k] - sums[s]! / counts[s]!) * invstd)
            }
            #expect(normwiseError(dx, reference) <= tolerance,
                    "\(layer) \(backend) \(S.self) dx, length \(length): \(normwiseError(dx, reference))")
        }
    }

    @Test("a constant statistic gives beta bit for bit and the exact gradient",
          arguments: CentredLayer.allCases, [Backend.blas, .naive])
    func constant(layer: CentredLayer, backend: Backend) throws {
        try constantGivesBeta(Float.self, layer: layer, backend: backend, tolerance: 1e-5)
        try constantGivesBeta(Double.self, layer: layer, backend: backend, tolerance: 1e-12)
    }

    /// An epsilon near Float's smallest (1e-45, which PyTorch accepts too) on a
    /// constant column: `invstd` is 2.7e22 and its square overflows Float, yet
    /// that column's gradient is `gamma·invstd·(dy - mean(dy))`, finite (the
    /// fuzzer found NaN there). Both backward forms, both backends, each
    /// column within 1e-5 (normwise) of the float64 reference.
    @Test("a tiny epsilon on a constant column gives finite, exact gradients",
          arguments: [Backend.blas, .naive])
    func tinyEpsilonConstantColumn(backend: Backend) throws {
        let rows = 7, columns = 3
        var scalars = [Float]()
        for i in 0..<rows { scalars += [10000.1, Float(i) * 0.37 - 1.1, Float(i * i) * 0.013 + 2.9] }
        let x = try Tensor<Float>(shape: [rows, columns], scalars: scalars)
        let dy: Tensor<Float> = randomInput([rows, columns], scale: 1, shift: 0.3, seed: 41)
        var layer = try BatchNorm<Float>(featureCount: columns, epsilon: 1e-45, backend: backend)
        layer.gamma = [1.3, -0.7, 0.45]
        let (_, cache) = try layer.forward(x, mode: .training)
        #expect(cache.inverseStandardDeviation[0] > 1e22)
        let epsilon = Double(Float(1e-45))
        for (form, g) in [("closed", try layer.backward(dy, cache: cache)),
                          ("graph", try layer.backwardThroughGraph(dy, cache: cache))] {
            let finite = g.input.scalars.allSatisfy { $0.isFinite }
            #expect(finite, "\(form) \(backend)")
            for j in 0..<columns {
                let xs = (0..<rows).map { Double(x.scalars[$0 * columns + j]) }
                let gs = (0..<rows).map { Double(dy.scalars[$0 * columns + j]) }
                let n = Double(rows), mean = xs.reduce(0, +) / n
                let variance = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / n
                let invstd = 1 / (variance + epsilon).squareRoot()
                let xhat = xs.map { ($0 - mean) * invstd }
                let dxhat = gs.map { $0 * Double(layer.gamma[j]) }
                let meanDxhat = dxhat.reduce(0, +) / n
                let meanDxhatXhat = zip(dxhat, xhat).map(*).reduce(0, +) / n
                let reference = (0..<rows).map { i in
                    Float(invstd * (dxhat[i] - meanDxhat - xhat[i] * meanDxhatXhat))
                }
                let dx = (0..<rows).map { g.input.scalars[$0 * columns + j] }
                #expect(normwiseError(dx, reference) <= 1e-5,
                        "\(form) \(backend) column \(j): \(normwiseError(dx, reference))")
                let dgamma = zip(gs, xhat).map(*).reduce(0, +), dbeta = gs.reduce(0, +)
                #expect(abs(Double(g.gamma[j]) - dgamma) <= 1e-5 * max(1, abs(dgamma)),
                        "\(form) \(backend) dgamma \(j)")
                #expect(abs(Double(g.beta[j]) - dbeta) <= 1e-5 * max(1, abs(dbeta)),
                        "\(form) \(backend) dbeta \(j)")
            }
        }
    }

    /// Float data `offset + randn` normalizes to standard deviation 1 within
    /// 1e-3 per statistic, and its mean to 0 within what Float can represent
    /// of the offset (half a unit in the last place of the mean, over the
    /// standard deviation).
    @Test("Float data with a large offset keeps its spread",
          arguments: CentredLayer.allCases, [Backend.blas, .naive])
    func largeOffset(layer: CentredLayer, backend: Backend) throws {
        for offset in [1e4, 1e5, 1e6] {
            let shape = layer.shape(length: 1001)
            let x: Tensor<Float> = randomInput(shape, scale: 1, shift: offset, seed: 21)
            var l = try layer.make(Float.self, shape: shape, backend: backend, seed: 5)
            l = l.with(Array(repeating: 1, count: l.gamma.count), Array(repeating: 0, count: l.beta.count))
            let (y, _) = try l.forward(x)
            var groups = [Int: [Double]](), inputs = [Int: [Double]]()
            for k in 0..<y.count {
                groups[layer.statistic(of: k, shape: shape), default: []].append(Double(y.scalars[k]))
                inputs[layer.statistic(of: k, shape: shape), default: []].append(Double(x.scalars[k]))
            }
            let ulp = Double(Float(offset).ulp)
            for (s, values) in groups {
                // The spread of the stored (rounded) inputs, in Double.
                let reference = standardDeviation(inputs[s]!)
                let scale = (reference * reference + 1e-5).squareRoot() / reference
                #expect(abs(standardDeviation(values) * scale - 1) <= 1e-3,
                        "\(layer) \(backend) offset \(offset) statistic \(s): std \(standardDeviation(values))")
                #expect(abs(mean(values)) <= ulp / reference + 1e-3,
                        "\(layer) \(backend) offset \(offset) statistic \(s): mean \(mean(values))")
            }
        }
    }

    /// A statistic whose first value lies far from its mean (an outlier
    /// feature first in a row, say) makes the shifted sums cancel; the BLAS
    /// kernels then take the second pass, and the variance stays within 1e-5
    /// of the Double reference in Float (1e-12 in Double), as the naive one.
    func outlierFirst<S: BLASScalar>(_: S.Type, layer: CentredLayer, backend: Backend,
                                     tolerance: Double) throws {
        let shape = layer.shape(length: 1001)
        var scalars: [S] = try Tensor<S>(randomNormal: shape, mean: 100, standardDeviation: 1,
                                         seed: 31).scalars
        var seen = Set<Int>()
        for k in scalars.indices where seen.insert(layer.statistic(of: k, shape: shape)).inserted {
            scalars[k] = 100 + 500   // 500 standard deviations: Σt²/M2 ≈ 250 000
        }
        let x = try Tensor<S>(shape: shape, scalars: scalars)
        let l = try layer.make(S.self, shape: shape, backend: backend, seed: 2)
        let (_, cache) = try l.forward(x)
        var groups = [Int: [Double]]()
        for k in scalars.indices {
            groups[layer.statistic(of: k, shape: shape), default: []].append(Double(scalars[k]))
        }
        for (s, values) in groups {
            let sd = standardDeviation(values)
            let reference = 1 / (sd * sd + Double(S(1e-5))).squareRoot()
            let invstd = Double(cache.inverseStandardDeviation[s])
            #expect(abs(invstd - reference) <= tolerance * reference,
                    "\(layer) \(backend) \(S.self) statistic \(s): \(invstd) vs \(reference)")
            // The mean to the tolerance relative to the largest value summed.
            #expect(abs(Double(cache.mean[s]) - mean(values)) <= tolerance * 600,
                    "\(layer) \(backend) \(S.self) mean of statistic \(s)")
        }
    }

    @Test("a first value far from the mean keeps the variance accurate",
          arguments: CentredLayer.allCases, [Backend.blas, .naive])
    func outlier(layer: CentredLayer, backend: Backend) throws {
        try outlierFirst(Float.self, layer: layer, backend: backend, tolerance: 1e-5)
        try outlierFirst(Double.self, layer: layer, backend: backend, tolerance: 1e-12)
    }
}

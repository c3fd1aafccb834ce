import Foundation
import NormKit
import Testing

/// The methods every whitening test runs over.
let whiteningMethods: [WhiteningMethod] = [.eigen, .cholesky, .newtonSchulz(iterations: 5)]

/// Correlated features: `randn · mixing + offsets`, `(rows, columns)`.
func correlatedInput(rows: Int, columns: Int, seed: UInt64, offset: Double = 0.7) -> Tensor<Double> {
    let z: Tensor<Double> = randomInput([rows, columns], scale: 1, shift: 0, seed: seed)
    let mixing: [Double] = randomVector(columns * columns, scale: 0.6, shift: 0, seed: seed + 100)
    var x = [Double](repeating: 0, count: rows * columns)
    for i in 0..<rows {
        for j in 0..<columns {
            var sum = offset + Double(j) * 0.3
            for k in 0..<columns { sum += z.scalars[i * columns + k] * (mixing[k * columns + j] + (k == j ? 1 : 0)) }
            x[i * columns + j] = sum
        }
    }
    return try! Tensor(x, shape: [rows, columns])
}

/// The biased covariance of columns `first ..< first + count` of an `(N, D)` tensor.
func covariance(_ t: Tensor<Double>, first: Int, count: Int) -> [Double] {
    let n = t.shape[0]
    let columns = (first..<(first + count)).map { column(t, $0) }
    let means = columns.map(mean)
    var c = [Double](repeating: 0, count: count * count)
    for a in 0..<count {
        for b in 0..<count {
            var s = 0.0
            for i in 0..<n { s += (columns[a][i] - means[a]) * (columns[b][i] - means[b]) }
            c[a * count + b] = s / Double(n)
        }
    }
    return c
}

@Suite("Whitening")
struct WhiteningTests {
    // MARK: DecorrelatedBatchNorm

    @Test("training output of .eigen and .cholesky has identity covariance per group",
          arguments: [WhiteningMethod.eigen, .cholesky], [1, 4, 12])
    func identityCovariance(method: WhiteningMethod, groupSize: Int) throws {
        for backend in [Backend.blas, .naive] {
            var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 12, groupSize: groupSize, method: method,
                                                        epsilon: 1e-12, backend: backend)
            let (y, _) = try dbn.forward(correlatedInput(rows: 203, columns: 12, seed: 3, offset: 10000.1),
                                         mode: .training)
            for g in 0..<(12 / groupSize) {
                let c = covariance(y, first: g * groupSize, count: groupSize)
                for a in 0..<groupSize {
                    for b in 0..<groupSize {
                        #expect(abs(c[a * groupSize + b] - (a == b ? 1 : 0)) < 1e-6, "\(method) \(backend) group \(g)")
                    }
                }
            }
        }
    }

    /// dx, dgamma and dbeta against centred differences (Richardson-extrapolated).
    func gradientCheck(_ dbn: DecorrelatedBatchNorm<Double>, x: Tensor<Double>, mode: Mode = .training,
                       tolerance: Double = 1e-7) throws {
        var layer = dbn
        let d = dbn.featureCount
        layer.gamma = randomVector(d, scale: 0.5, shift: 1, seed: 11)
        layer.beta = randomVector(d, scale: 0.5, shift: 0, seed: 12)
        if mode == .inference { _ = try layer.forward(x, mode: .training) }
        let dout: Tensor<Double> = randomInput(x.shape, scale: 1, shift: 0, seed: 13)
        var probe = layer
        let (_, cache) = try probe.forward(x, mode: mode)
        let grads = try layer.backward(dout, cache: cache)
        let dx = try referenceGradient(at: x, outputGradient: dout) { (t: Tensor<Double>) throws -> Tensor<Double> in
            var l = layer
            return try l.forward(t, mode: mode).output
        }
        let dgamma = try referenceGradient(at: Tensor(layer.gamma), outputGradient: dout) { g in
            var l = layer
            l.gamma = g.scalars
            return try l.forward(x, mode: mode).output
        }
        let dbeta = try referenceGradient(at: Tensor(layer.beta), outputGradient: dout) { b in
            var l = layer
            l.beta = b.scalars
            return try l.forward(x, mode: mode).output
        }
        let label = "\(dbn.method) groupSize \(dbn.groupSize) \(dbn.backend) \(mode) \(x.shape)"
        #expect(GradientCheck.relativeError(grads.input.scalars, dx.scalars, floor: 1e-3) <= tolerance, "dx \(label)")
        #expect(GradientCheck.relativeError(grads.gamma, dgamma.scalars, floor: 1e-3) <= tolerance, "dgamma \(label)")
        #expect(GradientCheck.relativeError(grads.beta, dbeta.scalars, floor: 1e-3) <= tolerance, "dbeta \(label)")
    }

    @Test("backward is the exact derivative for every method, groups of 1, 4 and D, both modes",
          arguments: whiteningMethods, [1, 4, 8])
    func gradients(method: WhiteningMethod, groupSize: Int) throws {
        let x = correlatedInput(rows: 23, columns: 8, seed: 5)
        for backend in [Backend.blas, .naive] {
            let dbn = try DecorrelatedBatchNorm<Double>(featureCount: 8, groupSize: groupSize, method: method,
                                                        epsilon: 1e-3, backend: backend)
            try gradientCheck(dbn, x: x)
            try gradientCheck(dbn, x: x, mode: .inference)
        }
    }

    @Test("gradients stay exact at the edges: N < groupSize, a constant feature, equal eigenvalues",
          arguments: whiteningMethods)
    func edgeGradients(method: WhiteningMethod) throws {
        // Singular covariance (3 samples, 4 features), which epsilon rescues.
        let few = correlatedInput(rows: 3, columns: 4, seed: 7)
        try gradientCheck(try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 4, method: method,
                                                             epsilon: 0.1), x: few)
        // A constant feature.
        var constant = correlatedInput(rows: 9, columns: 4, seed: 8).scalars
        for i in 0..<9 { constant[i * 4 + 2] = 10000.1 }
        try gradientCheck(try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 4, method: method,
                                                             epsilon: 0.01), x: Tensor(constant, shape: [9, 4]))
        // Two features with exactly equal variance and no correlation: a
        // repeated eigenvalue.
        let (c, e) = (1.3, 0.7)
        let equal = try Tensor<Double>([c, 0, -c, 0, 0, c, 0, -c, e, 0, -e, 0, 0, e, 0, -e], shape: [8, 2])
        let sigma = covariance(equal, first: 0, count: 2)
        #expect(sigma[0] == sigma[3] && sigma[1] == 0)
        try gradientCheck(try DecorrelatedBatchNorm<Double>(featureCount: 2, groupSize: 2, method: method,
                                                             epsilon: 1e-3), x: equal)
    }

    @Test("the BLAS/LAPACK and naive backends agree to 1e-10", arguments: whiteningMethods)
    func backendsAgree(method: WhiteningMethod) throws {
        let x = correlatedInput(rows: 57, columns: 12, seed: 9, offset: 10000.1)
        let dout: Tensor<Double> = randomInput([57, 12], scale: 1, shift: 0, seed: 10)
        var results: [[Double]] = []
        for backend in [Backend.blas, .naive] {
            var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 12, groupSize: 4, method: method,
                                                        backend: backend)
            let (y, cache) = try dbn.forward(x, mode: .training)
            let grads = try dbn.backward(dout, cache: cache)
            let (yInference, _) = try dbn.forward(x, mode: .inference)
            results.append(y.scalars + grads.input.scalars + grads.gamma + grads.beta + yInference.scalars
                           + dbn.runningMean + dbn.runningWhitening)
        }
        #expect(normwiseError(results[0], results[1]) < 1e-10, "\(method)")
    }

    @Test("Newton–Schulz approaches .eigen as the iterations grow")
    func newtonSchulzConverges() throws {
        let x: Tensor<Double> = randomInput([80, 6], scale: 1.3, shift: 0.7, seed: 12)
        var eigen = try DecorrelatedBatchNorm<Double>(featureCount: 6, groupSize: 6, method: .eigen)
        let target = try eigen.forward(x, mode: .training).output.scalars
        var errors: [Double] = []
        for iterations in [1, 2, 3, 4, 6, 8] {
            var ns = try DecorrelatedBatchNorm<Double>(featureCount: 6, groupSize: 6,
                                                       method: .newtonSchulz(iterations: iterations))
            errors.append(normwiseError(try ns.forward(x, mode: .training).output.scalars, target))
        }
        // Measured when written: 0.49, 0.30, 0.13, 3.2e-2, 1.4e-5, 8.1e-16 (normwise).
        #expect(zip(errors, errors.dropFirst()).allSatisfy { $1 < $0 }, "\(errors)")
        #expect(errors.last! < 1e-12, "\(errors)")
    }

    @Test("groupSize 1 with .eigen is BatchNorm, forward and backward")
    func groupSizeOneIsBatchNorm() throws {
        let x: Tensor<Double> = randomInput([13, 5], scale: 3, shift: 10000.1, seed: 14)
        let dout: Tensor<Double> = randomInput([13, 5], scale: 1, shift: 0, seed: 15)
        var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 5, groupSize: 1)
        var bn = try BatchNorm<Double>(featureCount: 5)
        let (y1, c1) = try dbn.forward(x, mode: .training)
        let (y2, c2) = try bn.forward(x, mode: .training)
        let g1 = try dbn.backward(dout, cache: c1), g2 = try bn.backward(dout, cache: c2)
        #expect(normwiseError(y1.scalars, y2.scalars) < 1e-12)
        #expect(normwiseError(g1.input.scalars, g2.input.scalars) < 1e-12)
        #expect(normwiseError(g1.gamma, g2.gamma) < 1e-12 && normwiseError(g1.beta, g2.beta) < 1e-12)
        #expect(normwiseError(dbn.runningMean, bn.runningMean) < 1e-12)
    }

    @Test("bad input is a NormError and changes no state")
    func badInput() throws {
        #expect(throws: NormError.invalidGroupSize(groupSize: 4, featureCount: 10)) {
            try DecorrelatedBatchNorm<Float>(featureCount: 10, groupSize: 4)
        }
        #expect(throws: NormError.invalidGroupSize(groupSize: 0, featureCount: 10)) {
            try DecorrelatedBatchNorm<Float>(featureCount: 10, groupSize: 0)
        }
        #expect(throws: NormError.invalidIterationCount(0)) {
            try DecorrelatedBatchNorm<Float>(featureCount: 4, groupSize: 2, method: .newtonSchulz(iterations: 0))
        }
        var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2, method: .cholesky,
                                                    epsilon: 1e-300)
        _ = try dbn.forward(correlatedInput(rows: 9, columns: 4, seed: 1), mode: .training)
        let before = dbn
        #expect(throws: NormError.insufficientValues(valuesPerStatistic: 1)) {
            try dbn.forward(correlatedInput(rows: 1, columns: 4, seed: 2), mode: .training)
        }
        #expect(throws: NormError.invalidShape(expected: "(N >= 1, 4)", actual: [4, 3])) {
            try dbn.forward(Tensor(shape: [4, 3], repeating: 0.5), mode: .training)
        }
        // A duplicated feature of ±1 makes the covariance exactly singular
        // (its 2x2 block is all ones); epsilon 1e-300 vanishes next to 1, and
        // the Cholesky fails on either backend.
        var duplicated = correlatedInput(rows: 8, columns: 4, seed: 3).scalars
        for i in 0..<8 {
            duplicated[i * 4] = i % 2 == 0 ? 1 : -1
            duplicated[i * 4 + 1] = duplicated[i * 4]
        }
        for backend in [Backend.blas, .naive] {
            dbn.backend = backend
            #expect(throws: NormError.notPositiveDefinite(group: 0, minor: 2)) {
                try dbn.forward(Tensor(duplicated, shape: [8, 4]), mode: .training)
            }
        }
        var nan = duplicated
        nan[5] = .nan
        #expect(throws: NormError.nonFiniteStatistics(index: 1)) {
            try dbn.forward(Tensor(nan, shape: [8, 4]), mode: .training)
        }
        dbn.backend = before.backend
        #expect(dbn == before)
        var wrong = dbn
        wrong.runningWhitening.removeLast()
        #expect(throws: NormError.parameterCountMismatch(name: "runningWhitening", expected: 8, actual: 7)) {
            try wrong.forward(correlatedInput(rows: 9, columns: 4, seed: 1), mode: .inference)
        }
        // Backward refuses another layer's cache and a gradient of another shape.
        let (_, cache) = try dbn.forward(correlatedInput(rows: 9, columns: 4, seed: 1), mode: .training)
        let other = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 4)
        #expect(throws: NormError.self) { try other.backward(Tensor(shape: [9, 4], repeating: 1), cache: cache) }
        #expect(throws: NormError.gradientShapeMismatch(expected: [9, 4], actual: [4, 9])) {
            try dbn.backward(Tensor(shape: [4, 9], repeating: 1), cache: cache)
        }
    }

    // MARK: Whitening (PCA / ZCA)

    private func fixture() throws -> NumPyArchive {
        try NumPyArchive(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/sklearn-pca.npz").path)
    }

    @Test("PCA whitening with epsilon 0 equals scikit-learn's PCA(n_components: 3, whiten: true)")
    func pcaMatchesScikitLearn() throws {
        let sk = try fixture()
        let data: Tensor<Double> = try sk.tensor("data")
        let pca = try Whitening.fit(data, kind: .pca(components: 3))
        #expect(normwiseError(pca.mean, try sk.tensor("mean", as: Double.self).scalars) < 1e-12)
        #expect(normwiseError(Array(pca.eigenvalues.prefix(3)),
                              try sk.tensor("explained_variance", as: Double.self).scalars) < 1e-12)
        #expect(normwiseError(Array(pca.components.scalars.prefix(18)),
                              try sk.tensor("components", as: Double.self).scalars) < 1e-10)
        #expect(normwiseError(try pca.transform(data).scalars,
                              try sk.tensor("transformed", as: Double.self).scalars) < 1e-10)
        #expect(normwiseError(try pca.transform(sk.tensor("batch")).scalars,
                              try sk.tensor("batch_transformed", as: Double.self).scalars) < 1e-10)
    }

    @Test("ZCA's inverse transform gives the input back; its output has identity covariance")
    func zcaRoundTrip() throws {
        let x = correlatedInput(rows: 150, columns: 7, seed: 21, offset: 10000.1)
        let zca = try Whitening.fit(x, kind: .zca)
        let z = try zca.transform(x)
        #expect(normwiseError(try zca.inverseTransform(z).scalars, x.scalars) < 1e-12)
        let c = covariance(z, first: 0, count: 7)
        for a in 0..<7 { for b in 0..<7 { #expect(abs(c[a * 7 + b] * 150 / 149 - (a == b ? 1 : 0)) < 1e-9) } }
        // PCA's inverse is the projection: applying it twice changes nothing.
        let pca = try Whitening.fit(x, kind: .pca(components: 3))
        let projected = try pca.inverseTransform(pca.transform(x))
        #expect(normwiseError(try pca.inverseTransform(pca.transform(projected)).scalars, projected.scalars) < 1e-12)
    }

    @Test("Whitening refuses bad input")
    func whiteningBadInput() throws {
        let x = correlatedInput(rows: 20, columns: 4, seed: 2)
        #expect(throws: NormError.invalidComponentCount(components: 5, featureCount: 4)) {
            try Whitening.fit(x, kind: .pca(components: 5))
        }
        #expect(throws: NormError.invalidComponentCount(components: 0, featureCount: 4)) {
            try Whitening.fit(x, kind: .pca(components: 0))
        }
        #expect(throws: NormError.insufficientValues(valuesPerStatistic: 1)) {
            try Whitening.fit(Tensor(shape: [1, 4], repeating: 1), kind: .zca)
        }
        // Rank 1 data: zero eigenvalues, which epsilon 0 cannot invert.
        var rankOne = x.scalars
        for i in 0..<20 { for j in 1..<4 { rankOne[i * 4 + j] = rankOne[i * 4] * Double(j) } }
        #expect(throws: NormError.self) { try Whitening.fit(Tensor(rankOne, shape: [20, 4]), kind: .zca) }
        #expect(try Whitening.fit(Tensor(rankOne, shape: [20, 4]), kind: .zca, epsilon: 1e-3).eigenvalues.count == 4)
        let zca = try Whitening.fit(x, kind: .zca)
        #expect(throws: NormError.invalidShape(expected: "(N >= 1, 4)", actual: [3, 5])) {
            try zca.transform(Tensor(shape: [3, 5], repeating: 0))
        }
    }
}

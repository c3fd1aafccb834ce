import NormKit
import Testing

@Suite("LayerNorm")
struct LayerNormTests {
    func gradientCheck(rows: Int, columns: Int, backend: Backend, seed: UInt64) throws {
        var ln = try LayerNorm<Double>(featureCount: columns, backend: backend)
        ln.gamma = randomVector(columns, seed: seed + 1)
        ln.beta = randomVector(columns, seed: seed + 2)
        let x: Tensor<Double> = randomInput([rows, columns], seed: seed)
        let dout: Tensor<Double> = randomInput([rows, columns], scale: 1, shift: 0, seed: seed + 3)
        let (_, cache) = try ln.forward(x, mode: .training)
        let gradients = try ln.backward(dout, cache: cache)

        var probe = ln
        let dx = try referenceGradient(at: x, outputGradient: dout) {
            try probe.forward($0, mode: .training).output
        }
        let dgamma = try referenceGradient(
            at: Tensor(shape: [columns], scalars: ln.gamma), outputGradient: dout) { g in
            var layer = ln
            layer.gamma = g.scalars
            return try layer.forward(x, mode: .training).output
        }
        let dbeta = try referenceGradient(
            at: Tensor(shape: [columns], scalars: ln.beta), outputGradient: dout) { b in
            var layer = ln
            layer.beta = b.scalars
            return try layer.forward(x, mode: .training).output
        }
        #expect(GradientCheck.relativeError(gradients.input.scalars, dx.scalars, floor: 1e-3) <= 1e-8)
        #expect(GradientCheck.relativeError(gradients.gamma, dgamma.scalars, floor: 1e-3) <= 1e-8)
        #expect(GradientCheck.relativeError(gradients.beta, dbeta.scalars, floor: 1e-3) <= 1e-8)
    }

    @Test("gradient check, cs231n's 4x5 case", arguments: [Backend.blas, .naive])
    func gradientCheckSmall(backend: Backend) throws {
        try gradientCheck(rows: 4, columns: 5, backend: backend, seed: 231)
    }

    @Test("gradient check, 50x30", arguments: [Backend.blas, .naive])
    func gradientCheckLarge(backend: Backend) throws {
        try gradientCheck(rows: 50, columns: 30, backend: backend, seed: 50)
    }

    func backendsAgree<S: BLASScalar>(_: S.Type, tolerance: Double) throws {
        // LayerNorm needs D >= 2; its tall case is many rows, a wide one many columns.
        for shape in agreementShapes.filter({ $0[1] >= 2 }) + [[2, 2], [5, 3000]] {
            let x: Tensor<S> = randomInput(shape, seed: UInt64(shape[0] * 1000 + shape[1]))
            let dout: Tensor<S> = randomInput(shape, scale: 1, shift: 0, seed: 98)
            var results: [[[S]]] = []
            var scales: [Double] = []
            for backend in [Backend.blas, .naive] {
                var ln = try LayerNorm<S>(featureCount: shape[1], backend: backend)
                ln.gamma = randomVector(shape[1], shift: 1, seed: 5)
                ln.beta = randomVector(shape[1], seed: 6)
                let (y, cache) = try ln.forward(x, mode: .training)
                let gradients = try ln.backward(dout, cache: cache)
                results.append([y.scalars, cache.mean, cache.inverseStandardDeviation,
                                gradients.input.scalars, gradients.gamma, gradients.beta])
                scales.append(dxScale(dout, cache: cache, perColumn: false))
            }
            for (index, (blas, naive)) in zip(results[0], results[1]).enumerated() {
                #expect(normwiseError(blas, naive, scale: index == 3 ? scales[1] : 0) <= tolerance,
                        "shape \(shape), quantity \(index)")
            }
        }
    }

    @Test("BLAS and naive agree: Double 1e-12, Float 1e-5")
    func backendsAgree() throws {
        try backendsAgree(Double.self, tolerance: 1e-12)
        try backendsAgree(Float.self, tolerance: 1e-5)
    }

    @Test("each row has mean beta and std gamma; both modes agree", arguments: [Backend.blas, .naive])
    func rowStatistics(backend: Backend) throws {
        let x: Tensor<Double> = randomInput([6, 300], seed: 12)
        var ln = try LayerNorm<Double>(featureCount: 300, backend: backend)
        let (y, _) = try ln.forward(x, mode: .training)
        for i in 0..<6 {
            #expect(abs(mean(row(y, i))) <= 1e-6)
            #expect(abs(standardDeviation(row(y, i)) - 1) <= 1e-6)
        }
        #expect(try ln.forward(x, mode: .inference).output == y)
    }

    @Test("Float rows with mean 1e4 and std 1 normalize to std 1; a constant row gives beta",
          arguments: [Backend.blas, .naive])
    func numerics(backend: Backend) throws {
        var scalars: [Float] = randomInput([4, 2048], scale: 1, shift: 1e4, seed: 3).scalars
        for j in 0..<2048 { scalars[2048 + j] = -7.5 }
        var ln = try LayerNorm<Float>(featureCount: 2048, backend: backend)
        ln.beta = Array(repeating: 0.25, count: 2048)
        let (y, _) = try ln.forward(try Tensor(shape: [4, 2048], scalars: scalars), mode: .training)
        for i in [0, 2, 3] { #expect(abs(standardDeviation(row(y, i)) - 1) <= 1e-3) }
        #expect(row(y, 1).allSatisfy { $0 == 0.25 })
    }

    @Test("the allocation-free entry point equals the value API")
    func callerOwnedBuffers() throws {
        var ln = try LayerNorm<Double>(featureCount: 40)
        var output = try Tensor<Double>(zeros: [0])
        var cache = NormCache<Double>()
        var workspace = Workspace<Double>()
        var gradients = NormGradients<Double>()
        for step in 0..<3 {
            let x: Tensor<Double> = randomInput([30 + step, 40], seed: UInt64(step))
            let (y, valueCache) = try ln.forward(x, mode: .training)
            try ln.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
            #expect(output == y)
            try ln.backward(x, cache: cache, into: &gradients, workspace: &workspace)
            #expect(gradients == (try ln.backward(x, cache: valueCache)))
        }
    }
}

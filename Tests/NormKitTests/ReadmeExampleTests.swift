import NormKit
import Testing

// The README's usage example, verbatim between the markers, so the build
// proves it compiles and this test proves it runs.
@Test("the README's usage example compiles and runs")
func readmeExample() throws {
    // README-EXAMPLE-BEGIN
    // A batch of 64 samples with 128 features, cs231n-style: 5 * randn + 12.
    let x = try Tensor<Float>(randomNormal: [64, 128], mean: 12, standardDeviation: 5, seed: 42)

    var bn = try BatchNorm<Float>(featureCount: 128)        // momentum 0.9, eps 1e-5, .blas
    let (y, cache) = try bn.forward(x, mode: .training)     // updates the running statistics
    let dy = try Tensor<Float>(randomNormal: y.shape, seed: 7)  // the upstream gradient
    let grads = try bn.backward(dy, cache: cache)           // grads.input, .gamma, .beta
    let (yTest, _) = try bn.forward(x, mode: .inference)    // uses the running statistics

    var ln = try LayerNorm<Float>(featureCount: 128)
    let (z, lnCache) = try ln.forward(x, mode: .training)
    let lnGrads = try ln.backward(dy, cache: lnCache)

    // Bad input is a NormError, never a crash, and changes nothing.
    do {
        _ = try bn.forward(Tensor(zeros: [64, 100]), mode: .training)
    } catch {
        print(error)   // expected an input of shape (N >= 1, 128), got [64, 100]
    }
    // README-EXAMPLE-END
    #expect(grads.input.shape == [64, 128] && grads.gamma.count == 128)
    #expect(yTest.shape == y.shape && z.shape == x.shape && lnGrads.beta.count == 128)
}

@Test("the README's one-line layer examples compile and run on their inputs")
func readmeLayerTable() throws {
    let matrix = try Tensor<Float>(randomNormal: [8, 128], seed: 1)
    let images = try Tensor<Float>(randomNormal: [2, 64, 4, 4], seed: 2)
    var bn = try BatchNorm<Float>(featureCount: 128)
    var ln = try LayerNorm<Float>(featureCount: 128)
    var rms = try RMSNorm<Float>(featureCount: 128)
    var sbn = try SpatialBatchNorm<Float>(channelCount: 64)
    var gn = try GroupNorm<Float>(channelCount: 64, groupCount: 32)
    var instance = try InstanceNorm<Float>(channelCount: 64)
    for output in [try bn.forward(matrix, mode: .training).output,
                   try ln.forward(matrix, mode: .training).output,
                   try rms.forward(matrix, mode: .training).output] {
        #expect(output.shape == [8, 128])
    }
    for output in [try sbn.forward(images, mode: .training).output,
                   try gn.forward(images, mode: .training).output,
                   try instance.forward(images, mode: .training).output] {
        #expect(output.shape == [2, 64, 4, 4])
    }
}

@Test("the README's whitening example compiles and runs")
func readmeWhiteningExample() throws {
    // README-WHITENING-BEGIN
    // Decorrelated batch norm: 64 features in groups of 16, each group whitened over the batch.
    var dbn = try DecorrelatedBatchNorm<Double>(featureCount: 64, groupSize: 16, method: .eigen)
    let batch = try Tensor<Double>(randomNormal: [256, 64], mean: 3, standardDeviation: 2, seed: 1)
    let (white, dbnCache) = try dbn.forward(batch, mode: .training)   // each group's covariance ≈ I
    let dbnGrads = try dbn.backward(white, cache: dbnCache)           // exact, through the eigendecomposition
    var iterNorm = try DecorrelatedBatchNorm<Double>(featureCount: 64, groupSize: 16,
                                                     method: .newtonSchulz(iterations: 5))   // GEMMs only
    _ = try iterNorm.forward(batch, mode: .training)

    // cs231n's PCA and ZCA preprocessing, fitted once on a data set.
    let pca = try Whitening.fit(batch, kind: .pca(components: 8))   // = scikit-learn's PCA(8, whiten=True)
    let scores = try pca.transform(batch)                              // (256, 8), unit variance each
    let zca = try Whitening.fit(batch, kind: .zca, epsilon: 1e-5)
    let restored = try zca.inverseTransform(zca.transform(batch))      // == batch, within rounding
    // README-WHITENING-END
    #expect(white.shape == [256, 64] && dbnGrads.input.shape == [256, 64] && scores.shape == [256, 8])
    #expect(normwiseError(restored.scalars, batch.scalars) < 1e-12)
}

@Test("the README's fused-pass example compiles and runs")
func readmeFusedExample() throws {
    // README-FUSED-BEGIN
    let x = try Tensor<Float>(randomNormal: [64, 128], seed: 1)
    let shortcut = try Tensor<Float>(randomNormal: [64, 128], seed: 2)
    let dy = try Tensor<Float>(randomNormal: [64, 128], seed: 3)

    // A transformer block's end: s = x + shortcut, y = LayerNorm(s), in one pass.
    var ln = try LayerNorm<Float>(featureCount: 128)
    let (y, s, lnCache) = try ln.forward(x, residual: shortcut, mode: .training)
    // dx (= d shortcut) = LayerNorm's gradient + the gradient reaching s from later blocks.
    let lnGrads = try ln.backward(dy, sumGradient: dy, cache: lnCache)

    // A CNN block's end: relu(bn(x) + shortcut), and its gradients.
    var bn = try BatchNorm<Float>(featureCount: 128, activation: .relu)
    let (out, bnCache) = try bn.forward(x, residual: shortcut, mode: .training)
    var grads = NormGradients<Float>(), shortcutGrad = try Tensor<Float>(zeros: [0])
    var workspace = Workspace<Float>()
    try bn.backward(dy, cache: bnCache, into: &grads, residualGradient: &shortcutGrad,
                    workspace: &workspace)

    // Inference that keeps nothing for backward (no cache, `let` layer).
    let frozen = bn
    let served = try frozen.infer(x)    // = relu(bn(x)) with the running statistics
    // README-FUSED-END
    #expect(y.shape == x.shape && s.shape == x.shape && lnGrads.input.shape == x.shape)
    #expect(out.scalars.allSatisfy { $0 >= 0 } && served.scalars.allSatisfy { $0 >= 0 })
    #expect(shortcutGrad.shape == x.shape && grads.gamma.count == 128)
}

@Test("the README's 16-bit storage example compiles and runs")
func readmeReducedExample() throws {
    // README-REDUCED-BEGIN
    // Activations in bfloat16 (or Float16); the layer, its statistics and its
    // parameter gradients in Float.
    var ln = try LayerNorm<Float>(featureCount: 128)
    let x = (0..<64 * 128).map { BFloat16(10000.1 + Float($0 % 97) * 0.37) }
    let dy = (0..<64 * 128).map { BFloat16(Float($0 % 13) * 0.1 - 0.6) }
    var y = [BFloat16](repeating: BFloat16(0), count: x.count), dx = y
    var dgamma = [Float](repeating: 0, count: 128), dbeta = dgamma
    var cache = NormCache<Float>(), workspace = Workspace<Float>()
    try x.withUnsafeBufferPointer { input in
        try y.withUnsafeMutableBufferPointer { output in
            try ln.forward(input, shape: [64, 128], mode: .training, into: output,
                           cache: &cache, workspace: &workspace)
        }
    }
    try dy.withUnsafeBufferPointer { g in
        try dx.withUnsafeMutableBufferPointer { d in
            try dgamma.withUnsafeMutableBufferPointer { dg in
                try dbeta.withUnsafeMutableBufferPointer { db in
                    try ln.backward(g, cache: cache, inputGradient: d, gammaGradient: dg,
                                    betaGradient: db, workspace: &workspace)
                }
            }
        }
    }
    // README-REDUCED-END
    #expect(y.allSatisfy { abs(Float($0)) < 3 } && dx.allSatisfy { Float($0).isFinite })
    #expect(cache.mean.count == 64 && dbeta.allSatisfy { $0.isFinite })
}

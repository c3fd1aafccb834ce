import NormKit
import Testing

extension ProcessWideTests.AllocationTests {
    /// Ten 16-bit training forwards, inference forwards and backwards of
    /// `layer`, and ten steps of a ``NormalizationStep`` around it, after a
    /// first call of each: no allocation.
    func checkReduced<L: ReducedPrecisionLayer>(_ layer: L, shape: [Int]) throws {
        var layer = layer
        let count = shape.reduce(1, *)
        let x = (0..<count).map { BFloat16(Float($0 % 37) * 0.31 - 4.1) }
        let dy = (0..<count).map { BFloat16(Float($0 % 11) * 0.2 - 1) }
        var y = x, dx = x
        var dgamma = [Float](repeating: 0, count: layer.gamma.count),
            dbeta = [Float](repeating: 0, count: layer.beta.count)
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        try x.withUnsafeBufferPointer { xb in
            try y.withUnsafeMutableBufferPointer { yb in
                let forward = try allocations {
                    try layer.forward(xb, shape: shape, mode: .training, into: yb, cache: &cache,
                                      workspace: &workspace)
                }
                let inference = try allocations {
                    try layer.infer(xb, shape: shape, into: yb, workspace: &workspace)
                }
                #expect(forward == 0, "\(L.self) 16-bit forward allocated \(forward) times in 10 calls")
                #expect(inference == 0, "\(L.self) 16-bit infer allocated \(inference) times in 10 calls")
            }
        }
        try dy.withUnsafeBufferPointer { g in
            try dx.withUnsafeMutableBufferPointer { d in
                try dgamma.withUnsafeMutableBufferPointer { dg in
                    try dbeta.withUnsafeMutableBufferPointer { db in
                        let backward = try allocations {
                            try layer.backward(g, cache: cache, inputGradient: d, gammaGradient: dg,
                                               betaGradient: db, workspace: &workspace)
                        }
                        #expect(backward == 0, "\(L.self) 16-bit backward allocated \(backward) times in 10 calls")
                    }
                }
            }
        }
        var step = NormalizationStep(layer)
        try x.withUnsafeBufferPointer { xb in
            try dy.withUnsafeBufferPointer { g in
                try y.withUnsafeMutableBufferPointer { yb in
                    try dx.withUnsafeMutableBufferPointer { d in
                        let steps = try allocations {
                            try step.forward(xb, shape: shape, into: yb)
                            try step.backward(g, into: d)
                        }
                        #expect(steps == 0, "\(L.self) 16-bit step allocated \(steps) times in 10 steps")
                    }
                }
            }
        }
    }

    @Test("the 16-bit entry points and a 16-bit NormalizationStep allocate nothing")
    func reducedNoAllocation() throws {
        try checkReduced(BatchNorm<Float>(featureCount: 33), shape: [70, 33])
        try checkReduced(LayerNorm<Float>(featureCount: 33), shape: [70, 33])
        try checkReduced(RMSNorm<Float>(featureCount: 80), shape: [7, 80])
        try checkReduced(SpatialBatchNorm<Float>(channelCount: 6), shape: [3, 6, 5, 7])
        try checkReduced(SpatialBatchNorm<Float>(channelCount: 6, layout: .nhwc), shape: [3, 5, 7, 6])
        try checkReduced(GroupNorm<Float>(channelCount: 6, groupCount: 3, activation: .relu),
                         shape: [3, 6, 5, 7])
        try checkReduced(InstanceNorm<Float>(channelCount: 6), shape: [3, 6, 5, 7])
        try checkReduced(SyncBatchNorm<Float>(featureCount: 33, communicator: SingleProcess()),
                         shape: [70, 33])
        try checkReduced(SyncSpatialBatchNorm<Float>(channelCount: 6, layout: .nhwc,
                                                     communicator: SingleProcess()),
                         shape: [3, 5, 7, 6])
    }
}

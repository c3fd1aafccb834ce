import NormKit

/// A 16-bit storage type normbench times (`--dtypes bfloat16,float16`).
protocol BenchStorage: ReducedPrecision {
    init(_ value: Float)
}
extension BFloat16: BenchStorage {}
extension Float16: BenchStorage {}

/// Every layer's passes over `Storage` buffers (16-bit input, output and
/// gradients; Float statistics and parameters), through the allocation-free
/// entry points, named as the Float cases: BatchNorm (with its ReLU cases),
/// LayerNorm and RMSNorm (with their residual cases) on (N, D) shapes;
/// SpatialBatchNorm, GroupNorm (G = 32 when it divides C, with its ReLU
/// cases) and InstanceNorm on (N, C, H, W) shapes. The traffic counts are the
/// Float passes' (8 bytes per element forward, 12 backward, 8 infer, scaled to
/// 2-byte elements by the caller), plus the ReLU's mask byte; the training
/// forward also writes the cache's copy of the input (2 bytes more per
/// element, which the Float `Tensor` forward shares instead of copying).
func reducedCases<Storage: BenchStorage>(
    _: Storage.Type, shape: [Int], backend: Backend, ops: Set<String>
) throws -> [Case] {
    guard shape.count == 2 || shape.count == 4 else { return [] }
    let count = shape.reduce(1, *), features = shape[1]
    let xf = try Tensor<Float>(randomNormal: shape, mean: 12, standardDeviation: 5, seed: 1)
    let dyf = try Tensor<Float>(randomNormal: shape, seed: 2)
    let x = UnsafeMutableBufferPointer<Storage>.allocate(capacity: count)
    let dy = UnsafeMutableBufferPointer<Storage>.allocate(capacity: count)
    xf.withUnsafeBufferPointer { for k in 0..<count { x[k] = Storage($0[k]) } }
    dyf.withUnsafeBufferPointer { for k in 0..<count { dy[k] = Storage($0[k]) } }
    var all: [Case] = []
    guard shape.count == 2 else {
        if ops.contains("spatialbatchnorm") {
            all += try reducedPasses("spatialbatchnorm",
                                     SpatialBatchNorm<Float>(channelCount: features, backend: backend),
                                     x: x, dy: dy, shape: shape, runningStatistics: true)
        }
        if ops.contains("groupnorm") {
            var layer = try GroupNorm<Float>(channelCount: features, groupCount: features % 32 == 0 ? 32 : 1,
                                             backend: backend)
            all += try reducedPasses("groupnorm", layer, x: x, dy: dy, shape: shape)
            layer.activation = .relu
            // Named and counted as the Float ReLU cases (both forwards).
            all += try reducedPasses("groupnorm", layer, x: x, dy: dy, shape: shape, runningStatistics: true,
                                     relu: true)
        }
        if ops.contains("instancenorm") {
            all += try reducedPasses("instancenorm", InstanceNorm<Float>(channelCount: features, backend: backend),
                                     x: x, dy: dy, shape: shape)
        }
        // Channels-last: the same values as an (N, H, W, C) tensor.
        let last = [shape[0], shape[2], shape[3], features]
        if ops.contains("spatialbatchnorm-nhwc") {
            all += try reducedPasses("spatialbatchnorm-nhwc",
                                     SpatialBatchNorm<Float>(channelCount: features, layout: .nhwc, backend: backend),
                                     x: x, dy: dy, shape: last, runningStatistics: true)
        }
        if ops.contains("groupnorm-nhwc") {
            all += try reducedPasses("groupnorm-nhwc",
                                     GroupNorm<Float>(channelCount: features, groupCount: features % 32 == 0 ? 32 : 1,
                                                      layout: .nhwc, backend: backend),
                                     x: x, dy: dy, shape: last)
        }
        if ops.contains("instancenorm-nhwc") {
            all += try reducedPasses("instancenorm-nhwc",
                                     InstanceNorm<Float>(channelCount: features, layout: .nhwc, backend: backend),
                                     x: x, dy: dy, shape: last)
        }
        return all
    }
    if ops.contains("batchnorm") {
        var layer = try BatchNorm<Float>(featureCount: features, backend: backend)
        all += try reducedPasses("batchnorm", layer, x: x, dy: dy, shape: shape, runningStatistics: true)
        layer.activation = .relu
        all += try reducedPasses("batchnorm", layer, x: x, dy: dy, shape: shape, runningStatistics: true,
                                 relu: true)
    }
    if ops.contains("layernorm") {
        let layer = try LayerNorm<Float>(featureCount: features, backend: backend)
        all += try reducedPasses("layernorm", layer, x: x, dy: dy, shape: shape)
        all += try reducedResidualPasses("layernorm", layer, x: x, dy: dy, shape: shape)
    }
    if ops.contains("rmsnorm") {
        let layer = try RMSNorm<Float>(featureCount: features, backend: backend)
        all += try reducedPasses("rmsnorm", layer, x: x, dy: dy, shape: shape)
        all += try reducedResidualPasses("rmsnorm", layer, x: x, dy: dy, shape: shape)
    }
    return all
}

/// One layer's 16-bit forward, backward and infer over buffers allocated
/// once (for the process: normbench measures and exits); a layer with
/// running statistics also its inference forward, named as the Float cases.
/// With `relu` (a layer whose `activation` is `.relu`), the passes are named
/// `…-relu` and count the mask: a byte written by the training forward, read
/// twice by the backward (`bytesPerFloatElement` is scaled by 2/4, so a mask
/// byte counts 2 there).
func reducedPasses<L: ReducedPrecisionLayer, Storage: BenchStorage>(
    _ op: String, _ layer: L, x: UnsafeMutableBufferPointer<Storage>,
    dy: UnsafeMutableBufferPointer<Storage>, shape: [Int], runningStatistics: Bool = false,
    relu: Bool = false
) throws -> [Case] {
    let suffix = relu ? "-relu" : "", forwardMask = relu ? 2 : 0, backwardMask = relu ? 4 : 0
    var layer = layer
    let count = x.count
    let y = UnsafeMutableBufferPointer<Storage>.allocate(capacity: count)
    let dx = UnsafeMutableBufferPointer<Storage>.allocate(capacity: count)
    let inferred = UnsafeMutableBufferPointer<Storage>.allocate(capacity: count)
    var dgamma = [Float](repeating: 0, count: layer.gamma.count)
    var dbeta = [Float](repeating: 0, count: layer.beta.count)
    var cache = NormCache<Float>(), workspace = Workspace<Float>()
    var inferWorkspace = Workspace<Float>()
    try layer.forward(UnsafeBufferPointer(x), shape: shape, mode: .training, into: y,
                      cache: &cache, workspace: &workspace)
    let trained = cache
    var inferenceCache = NormCache<Float>()
    let inference = !runningStatistics ? [] : [
        Case(op: op, pass: "forward-inference\(suffix)", bytesPerFloatElement: 8, run: {
            try layer.forward(UnsafeBufferPointer(x), shape: shape, mode: .inference, into: y,
                              cache: &inferenceCache, workspace: &workspace)
        }, runValue: nil),
    ]
    return [
        Case(op: op, pass: (runningStatistics ? "forward-training" : "forward") + suffix,
             bytesPerFloatElement: (runningStatistics ? 12 : 8) + forwardMask, run: {
            try layer.forward(UnsafeBufferPointer(x), shape: shape, mode: .training, into: y,
                              cache: &cache, workspace: &workspace)
        }, runValue: nil),
    ] + inference + [
        Case(op: op, pass: "backward" + suffix, bytesPerFloatElement: (runningStatistics ? 20 : 12) + backwardMask,
             run: { [layer] in
            try dgamma.withUnsafeMutableBufferPointer { dg in
                try dbeta.withUnsafeMutableBufferPointer { db in
                    try layer.backward(UnsafeBufferPointer(dy), cache: trained, inputGradient: dx,
                                       gammaGradient: dg, betaGradient: db, workspace: &workspace)
                }
            }
        }, runValue: nil),
        Case(op: op, pass: "infer" + suffix, bytesPerFloatElement: 8, run: { [layer] in
            try layer.infer(UnsafeBufferPointer(x), shape: shape, into: inferred,
                            workspace: &inferWorkspace)
        }, runValue: nil),
    ]
}

/// LayerNorm's or RMSNorm's residual form over 16-bit buffers, named as the
/// Float cases: the forward reads x and r and writes the sum and y (and the
/// cache's copy of the sum); the backward with a sum gradient reads dy, the
/// cached sum and ds and writes dx.
func reducedResidualPasses<L: ReducedPrecisionResidualLayer, Storage: BenchStorage>(
    _ op: String, _ layer: L, x: UnsafeMutableBufferPointer<Storage>,
    dy: UnsafeMutableBufferPointer<Storage>, shape: [Int]
) throws -> [Case] {
    var layer = layer
    let count = x.count
    let rf = try Tensor<Float>(randomNormal: shape, seed: 3)
    let r = UnsafeMutableBufferPointer<Storage>.allocate(capacity: count)
    rf.withUnsafeBufferPointer { for k in 0..<count { r[k] = Storage($0[k]) } }
    let y = UnsafeMutableBufferPointer<Storage>.allocate(capacity: count)
    let sum = UnsafeMutableBufferPointer<Storage>.allocate(capacity: count)
    let dx = UnsafeMutableBufferPointer<Storage>.allocate(capacity: count)
    var dgamma = [Float](repeating: 0, count: layer.gamma.count)
    var dbeta = [Float](repeating: 0, count: layer.beta.count)
    var cache = NormCache<Float>(), workspace = Workspace<Float>()
    try layer.forward(UnsafeBufferPointer(x), residual: UnsafeBufferPointer(r), shape: shape,
                      mode: .training, into: y, sum: sum, cache: &cache, workspace: &workspace)
    let trained = cache
    return [
        Case(op: op, pass: "forward-residual", bytesPerFloatElement: 16, run: {
            try layer.forward(UnsafeBufferPointer(x), residual: UnsafeBufferPointer(r), shape: shape,
                              mode: .training, into: y, sum: sum, cache: &cache, workspace: &workspace)
        }, runValue: nil),
        Case(op: op, pass: "backward-residual", bytesPerFloatElement: 16, run: { [layer] in
            try dgamma.withUnsafeMutableBufferPointer { dg in
                try dbeta.withUnsafeMutableBufferPointer { db in
                    try layer.backward(UnsafeBufferPointer(dy), sumGradient: UnsafeBufferPointer(r),
                                       cache: trained, inputGradient: dx, gammaGradient: dg,
                                       betaGradient: db, workspace: &workspace)
                }
            }
        }, runValue: nil),
    ]
}

import NormKit

/// One benchmarked pass of one layer, over buffers allocated once.
struct Case {
    var op: String
    var pass: String
    /// The memory traffic per Float element of this pass, as NormKit's
    /// Architecture article (Sources/NormKit/NormKit.docc) counts it (scaled by
    /// the scalar size for Double): the least the pass must move.
    var bytesPerFloatElement: Int
    /// The pass through the allocation-free entry points, into buffers sized once.
    var run: () throws -> Void
    /// The same pass through the value API (`forward(_:mode:)`,
    /// `backward(_:cache:)`), which allocates its results on every call; `nil`
    /// for a layer that has only the value API (then `run` is it).
    var runValue: (() throws -> Void)?
    /// A `Float`/`Double` forward through the entry point over borrowed
    /// memory (`UnsafeBufferPointer`s), whose cache copies the input where
    /// `run`'s `Tensor` form shares it: the 16-bit cases' entry point
    /// (`--apis borrowed`); `nil` for the other passes.
    var runBorrowed: (() throws -> Void)? = nil
}

/// The layers normbench knows, by the name `--ops` takes.
let matrixOps = ["batchnorm", "layernorm", "rmsnorm"]
let imageOps = ["spatialbatchnorm", "groupnorm", "instancenorm"]
/// Whitening, on (N, D) shapes, opt-in (not in the default `--ops`): the
/// decorrelated batch norm's passes for each `--methods` and `--group-sizes`,
/// and `Whitening.fit` (ZCA).
let whiteningOps = ["decorrelated", "whitening-fit"]
/// The (N, D) layers without affine parameters (`Affine.none`), opt-in: the
/// time the absent gamma and beta save, next to the default layers'.
let noAffineOps = ["batchnorm-noaffine", "layernorm-noaffine", "rmsnorm-noaffine"]
/// The image layers over channels-last input, opt-in: an `NxCxHxW` shape is
/// timed as the `(N, H, W, C)` tensor of the same values (`layout: .nhwc`),
/// with the ReLU passes.
let channelsLastOps = ["spatialbatchnorm-nhwc", "groupnorm-nhwc", "instancenorm-nhwc"]

/// `DecorrelatedBatchNorm`'s passes (``passes(_:_:x:dy:runningStatistics:)``:
/// buffered and value API, training and inference forwards, backward, infer)
/// for each method and group size that divides `D`.
func decorrelatedCases<S: BLASScalar>(
    x: Tensor<S>, dy: Tensor<S>, backend: Backend, methods: [WhiteningMethod], groupSizes: [Int]
) throws -> [Case] {
    // Traffic: x read, Xc, xhat and y written (forwards, infer); dy, Xc,
    // xhat read and dx written, plus dXhat and dy·xhat (backward).
    let traffic = ["forward-training": 16, "forward-inference": 16, "infer": 16, "backward": 24]
    var all: [Case] = []
    for method in methods {
        for groupSize in groupSizes where x.shape[1] % groupSize == 0 {
            let layer = try DecorrelatedBatchNorm<S>(featureCount: x.shape[1], groupSize: groupSize,
                                                     method: method, backend: backend)
            let name: String
            switch method {
            case .eigen: name = "dbn-eigen"
            case .cholesky: name = "dbn-chol"
            case .newtonSchulz(let t): name = "dbn-ns\(t)"
            }
            let (cases, _) = try passes("\(name)-g\(groupSize)", layer, x: x, dy: dy, runningStatistics: true)
            all += cases.map { c in
                var c = c
                c.bytesPerFloatElement = traffic[c.pass] ?? c.bytesPerFloatElement
                return c
            }
        }
    }
    return all
}

/// The forward and backward passes of `layer` over preallocated buffers, through
/// the allocation-free entry points. Layers with running statistics get a
/// training and an inference forward; the others one forward.
func passes<L: BufferedNormalizationLayer>(
    _ op: String, _ layer: L, x: Tensor<L.Scalar>, dy: Tensor<L.Scalar>,
    runningStatistics: Bool
) throws -> (cases: [Case], trainedCache: NormCache<L.Scalar>) {
    var layer = layer
    var output = try Tensor<L.Scalar>(zeros: [0]), cache = NormCache<L.Scalar>()
    var inferenceCache = NormCache<L.Scalar>(), workspace = Workspace<L.Scalar>()
    var gradients = NormGradients<L.Scalar>()
    try layer.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
    let trained = cache
    var cases: [Case] = []
    var valueLayer = layer, borrowedLayer = layer
    // The borrowed forwards: the caller's arrays, a cache of their own.
    let input = x.scalars
    var borrowedOutput = [L.Scalar](repeating: 0, count: x.count), borrowedCache = NormCache<L.Scalar>()
    var borrowedWorkspace = Workspace<L.Scalar>()
    let borrowed = { (mode: Mode) in
        try input.withUnsafeBufferPointer { xb in
            try borrowedOutput.withUnsafeMutableBufferPointer { yb in
                try borrowedLayer.forward(xb, shape: x.shape, mode: mode, into: yb, cache: &borrowedCache,
                                          workspace: &borrowedWorkspace)
            }
        }
    }
    cases.append(Case(op: op, pass: runningStatistics ? "forward-training" : "forward",
                      bytesPerFloatElement: runningStatistics ? 12 : 8, run: {
        try layer.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
    }, runValue: { _ = try valueLayer.forward(x, mode: .training) },
       runBorrowed: { try borrowed(.training) }))
    if runningStatistics {
        cases.append(Case(op: op, pass: "forward-inference", bytesPerFloatElement: 8, run: {
            try layer.forward(x, mode: .inference, into: &output, cache: &inferenceCache,
                              workspace: &workspace)
        }, runValue: { _ = try valueLayer.forward(x, mode: .inference) },
           runBorrowed: { try borrowed(.inference) }))
    }
    cases.append(Case(op: op, pass: "backward", bytesPerFloatElement: runningStatistics ? 20 : 12, run: {
        try layer.backward(dy, cache: trained, into: &gradients, workspace: &workspace)
    }, runValue: { [layer] in _ = try layer.backward(dy, cache: trained) }))
    // Inference that keeps nothing (no cache): reads x, writes y.
    var inferred = try Tensor<L.Scalar>(zeros: [0]), inferWorkspace = Workspace<L.Scalar>()
    cases.append(Case(op: op, pass: "infer", bytesPerFloatElement: 8, run: { [layer] in
        try layer.infer(x, into: &inferred, workspace: &inferWorkspace)
    }, runValue: { [layer] in _ = try layer.infer(x) }))
    return (cases, trained)
}

/// LayerNorm's or RMSNorm's residual form (a transformer block's
/// `norm(x + r)`): the forward reads x and r and writes the sum and y; the
/// backward with a sum gradient reads dy, x (the sum) and ds and writes dx.
func residualPasses<L: ResidualNormalizationLayer>(
    _ op: String, _ layer: L, x: Tensor<L.Scalar>, dy: Tensor<L.Scalar>
) throws -> [Case] {
    var layer = layer
    let r = try Tensor<L.Scalar>(randomNormal: x.shape, seed: 3)
    var output = try Tensor<L.Scalar>(zeros: [0]), sum = try Tensor<L.Scalar>(zeros: [0])
    var cache = NormCache<L.Scalar>(), workspace = Workspace<L.Scalar>()
    var gradients = NormGradients<L.Scalar>()
    // The backward's cache is its own (sharing the timed forward's would
    // make each forward copy the sum, copy-on-write).
    var trained = NormCache<L.Scalar>(), trainedSum = try Tensor<L.Scalar>(zeros: [0])
    try layer.forward(x, residual: r, mode: .training, into: &output, sum: &trainedSum,
                      cache: &trained, workspace: &workspace)
    var valueLayer = layer
    return [
        Case(op: op, pass: "forward-residual", bytesPerFloatElement: 16, run: {
            try layer.forward(x, residual: r, mode: .training, into: &output, sum: &sum, cache: &cache,
                              workspace: &workspace)
        }, runValue: { _ = try valueLayer.forward(x, residual: r, mode: .training) }),
        Case(op: op, pass: "backward-residual", bytesPerFloatElement: 16, run: { [layer, trained] in
            try layer.backward(dy, sumGradient: r, cache: trained, into: &gradients, workspace: &workspace)
        }, runValue: { [layer, trained] in _ = try layer.backward(dy, sumGradient: r, cache: trained) }),
    ]
}

/// A per-channel layer with its fused ReLU (a CNN block's `relu(bn(x))`):
/// training and inference forwards (which also write the ReLU's mask, a
/// byte per element), the backward through the mask, and `infer`.
func reluPasses<L: ActivatedNormalizationLayer>(
    _ op: String, _ layer: L, x: Tensor<L.Scalar>, dy: Tensor<L.Scalar>
) throws -> [Case] {
    var layer = layer
    layer.activation = .relu
    var output = try Tensor<L.Scalar>(zeros: [0]), cache = NormCache<L.Scalar>()
    var inferenceCache = NormCache<L.Scalar>(), workspace = Workspace<L.Scalar>()
    var gradients = NormGradients<L.Scalar>()
    // The backward's cache is its own: the timed forward's cache, shared
    // with it, would copy its mask on every call (copy-on-write).
    var trained = NormCache<L.Scalar>()
    try layer.forward(x, mode: .training, into: &output, cache: &trained, workspace: &workspace)
    var valueLayer = layer
    var inferred = try Tensor<L.Scalar>(zeros: [0]), inferWorkspace = Workspace<L.Scalar>()
    return [
        Case(op: op, pass: "forward-training-relu", bytesPerFloatElement: 13, run: {
            try layer.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
        }, runValue: { _ = try valueLayer.forward(x, mode: .training) }),
        Case(op: op, pass: "forward-inference-relu", bytesPerFloatElement: 8, run: {
            try layer.forward(x, mode: .inference, into: &output, cache: &inferenceCache,
                              workspace: &workspace)
        }, runValue: { _ = try valueLayer.forward(x, mode: .inference) }),
        Case(op: op, pass: "infer-relu", bytesPerFloatElement: 8, run: { [layer] in
            try layer.infer(x, into: &inferred, workspace: &inferWorkspace)
        }, runValue: { [layer] in _ = try layer.infer(x) }),
        Case(op: op, pass: "backward-relu", bytesPerFloatElement: 22, run: { [layer, trained] in
            try layer.backward(dy, cache: trained, into: &gradients, workspace: &workspace)
        }, runValue: { [layer, trained] in _ = try layer.backward(dy, cache: trained) }),
    ]
}

/// Every requested layer's passes at one shape, for one dtype and backend.
func cases<S: BLASScalar>(
    _: S.Type, shape: [Int], backend: Backend, ops: Set<String>,
    methods: [WhiteningMethod] = [], groupSizes: [Int] = []
) throws -> [Case] {
    let x = try Tensor<S>(randomNormal: shape, mean: 12, standardDeviation: 5, seed: 1)
    let dy = try Tensor<S>(randomNormal: shape, seed: 2)
    var all: [Case] = []
    if shape.count == 2 {
        let features = shape[1]
        if ops.contains("batchnorm") {
            let bn = try BatchNorm<S>(featureCount: features, backend: backend)
            let (found, trained) = try passes("batchnorm", bn, x: x, dy: dy, runningStatistics: true)
            var gradients = NormGradients<S>(), workspace = Workspace<S>()
            all += found
            all += try reluPasses("batchnorm", bn, x: x, dy: dy)
            all.append(Case(op: "batchnorm", pass: "backward-graph", bytesPerFloatElement: 20, run: {
                try bn.backwardThroughGraph(dy, cache: trained, into: &gradients, workspace: &workspace)
            }, runValue: { _ = try bn.backwardThroughGraph(dy, cache: trained) }))
        }
        if ops.contains("layernorm") {
            let ln = try LayerNorm<S>(featureCount: features, backend: backend)
            all += try passes("layernorm", ln, x: x, dy: dy, runningStatistics: false).cases
            all += try residualPasses("layernorm", ln, x: x, dy: dy)
        }
        if ops.contains("rmsnorm") {
            let rms = try RMSNorm<S>(featureCount: features, backend: backend)
            all += try passes("rmsnorm", rms, x: x, dy: dy, runningStatistics: false).cases
            all += try residualPasses("rmsnorm", rms, x: x, dy: dy)
        }
        if ops.contains("batchnorm-noaffine") {
            let bn = try BatchNorm<S>(featureCount: features, affine: .none, backend: backend)
            all += try passes("batchnorm-noaffine", bn, x: x, dy: dy, runningStatistics: true).cases
        }
        if ops.contains("layernorm-noaffine") {
            let ln = try LayerNorm<S>(featureCount: features, affine: .none, backend: backend)
            all += try passes("layernorm-noaffine", ln, x: x, dy: dy, runningStatistics: false).cases
        }
        if ops.contains("rmsnorm-noaffine") {
            let rms = try RMSNorm<S>(featureCount: features, affine: .none, backend: backend)
            all += try passes("rmsnorm-noaffine", rms, x: x, dy: dy, runningStatistics: false).cases
        }
        if ops.contains("decorrelated") {
            all += try decorrelatedCases(x: x, dy: dy, backend: backend, methods: methods,
                                         groupSizes: groupSizes)
        }
        if ops.contains("whitening-fit") {
            // Reads the data twice (mean, covariance) and writes Xc: 12 bytes.
            all.append(Case(op: "whitening-fit", pass: "zca", bytesPerFloatElement: 12, run: {
                _ = try Whitening.fit(x, kind: .zca, epsilon: 1e-5, backend: backend)
            }, runValue: nil))
        }
    } else {
        let channels = shape[1]
        if ops.contains("spatialbatchnorm") {
            let sbn = try SpatialBatchNorm<S>(channelCount: channels, backend: backend)
            all += try passes("spatialbatchnorm", sbn, x: x, dy: dy, runningStatistics: true).cases
            all += try reluPasses("spatialbatchnorm", sbn, x: x, dy: dy)
        }
        if ops.contains("groupnorm") {
            let groups = channels % 32 == 0 ? 32 : 1
            let gn = try GroupNorm<S>(channelCount: channels, groupCount: groups, backend: backend)
            all += try passes("groupnorm", gn, x: x, dy: dy, runningStatistics: false).cases
            all += try reluPasses("groupnorm", gn, x: x, dy: dy)
        }
        if ops.contains("instancenorm") {
            all += try passes("instancenorm", InstanceNorm<S>(channelCount: channels, backend: backend),
                              x: x, dy: dy, runningStatistics: false).cases
        }
        if !ops.isDisjoint(with: channelsLastOps) {
            // The same values as an (N, H, W, C) tensor.
            let last = [shape[0], shape[2], shape[3], channels]
            let xl = try Tensor<S>(shape: last, scalars: x.scalars)
            let dyl = try Tensor<S>(shape: last, scalars: dy.scalars)
            if ops.contains("spatialbatchnorm-nhwc") {
                let sbn = try SpatialBatchNorm<S>(channelCount: channels, layout: .nhwc, backend: backend)
                all += try passes("spatialbatchnorm-nhwc", sbn, x: xl, dy: dyl, runningStatistics: true).cases
                all += try reluPasses("spatialbatchnorm-nhwc", sbn, x: xl, dy: dyl)
            }
            if ops.contains("groupnorm-nhwc") {
                let gn = try GroupNorm<S>(channelCount: channels, groupCount: channels % 32 == 0 ? 32 : 1,
                                          layout: .nhwc, backend: backend)
                all += try passes("groupnorm-nhwc", gn, x: xl, dy: dyl, runningStatistics: false).cases
                all += try reluPasses("groupnorm-nhwc", gn, x: xl, dy: dyl)
            }
            if ops.contains("instancenorm-nhwc") {
                let inn = try InstanceNorm<S>(channelCount: channels, layout: .nhwc, backend: backend)
                all += try passes("instancenorm-nhwc", inn, x: xl, dy: dyl, runningStatistics: false).cases
                all += try reluPasses("instancenorm-nhwc", inn, x: xl, dy: dyl)
            }
        }
    }
    return all
}

import NormKit

/// The normalization between a hidden layer's affine map and its ReLU.
public enum Normalization: String, Sendable, CaseIterable {
    /// None: `affine - relu`.
    case none
    /// ``NormKit/BatchNorm``: `affine - batch norm - relu`.
    case batch
    /// ``NormKit/LayerNorm``: `affine - layer norm - relu`.
    case layer
    /// ``NormKit/DecorrelatedBatchNorm`` with ``NormKit/WhiteningMethod/eigen``
    /// (ZCA) on groups of ``FullyConnectedNet/whiteningGroupSize`` features.
    case decorrelated
    /// ``NormKit/DecorrelatedBatchNorm`` with five Newton–Schulz iterations
    /// (IterNorm) on groups of ``FullyConnectedNet/whiteningGroupSize`` features.
    case iterative

    /// The decorrelated normalizations' whitening method, `nil` for the others.
    var whiteningMethod: WhiteningMethod? {
        switch self {
        case .decorrelated: .eigen
        case .iterative: .newtonSchulz(iterations: 5)
        case .none, .batch, .layer: nil
        }
    }
}

/// cs231n's `FullyConnectedNet`:
/// `{affine - [batch norm | layer norm | decorrelated batch norm | none] - relu} x (L - 1) - affine - softmax`.
///
/// Parameters are named as in cs231n: `W1`, `b1`, `gamma1`, `beta1`, ..., `WL`, `bL`.
/// Weights start as `weightScale * randn`, biases and betas at zeros, gammas at
/// ones. The loss adds `0.5 * regularization * Σ W²` over the weights only (not
/// biases, gammas or betas). Affine layers are GEMM through `BLASScalar`.
public struct FullyConnectedNet<Scalar: BLASScalar>: Sendable {
    /// `[D, H1, ..., H(L-1), C]`: the widths from input to class scores.
    public let dimensions: [Int]
    /// The normalization of every hidden layer.
    public let normalization: Normalization
    /// The L2 regularization strength on the weights.
    public var regularization: Scalar
    /// The learnable parameters by name (`W1` is `D x H1`, row-major).
    public var parameters: [String: [Scalar]]
    /// The hidden layers' batch norms (with their running statistics), when `.batch`.
    public var batchNorms: [BatchNorm<Scalar>]
    /// When set, the batch norms run as ``NormKit/SyncBatchNorm`` over these
    /// ranks (data-parallel training with synchronized statistics); when
    /// `nil`, as ``NormKit/BatchNorm`` on this process's rows alone.
    public var batchNormCommunicator: (any Communicator)?
    /// The hidden layers' layer norms, when `.layer`.
    public var layerNorms: [LayerNorm<Scalar>]
    /// The hidden layers' decorrelated batch norms, when `.decorrelated` or `.iterative`.
    public var decorrelatedNorms: [DecorrelatedBatchNorm<Scalar>]
    /// The whitening groups' size for `.decorrelated` and `.iterative`; it
    /// divides every hidden width.
    public let whiteningGroupSize: Int

    /// The number of affine layers, `L`.
    public var layerCount: Int { dimensions.count - 1 }

    /// Creates a net with seeded random weights.
    ///
    /// - Throws: a `NormError` for a non-positive width, or a hidden width
    ///   that `whiteningGroupSize` does not divide (decorrelated normalizations).
    public init(inputDimension: Int, hiddenDimensions: [Int], classCount: Int,
                normalization: Normalization = .none, weightScale: Scalar = 1e-2,
                regularization: Scalar = 0, whiteningGroupSize: Int = 16, seed: UInt64 = 0) throws {
        dimensions = [inputDimension] + hiddenDimensions + [classCount]
        for width in dimensions where width <= 0 { throw NormError.invalidFeatureCount(width) }
        self.normalization = normalization
        self.regularization = regularization
        parameters = [:]
        batchNorms = []
        batchNormCommunicator = nil
        layerNorms = []
        decorrelatedNorms = []
        self.whiteningGroupSize = whiteningGroupSize
        for layer in 1...(dimensions.count - 1) {
            let (rows, columns) = (dimensions[layer - 1], dimensions[layer])
            parameters["W\(layer)"] = try Tensor<Scalar>(
                randomNormal: [rows, columns], standardDeviation: weightScale,
                seed: seed &+ UInt64(layer)).scalars
            parameters["b\(layer)"] = Array(repeating: 0, count: columns)
            guard layer < dimensions.count - 1, normalization != .none else { continue }
            parameters["gamma\(layer)"] = Array(repeating: 1, count: columns)
            parameters["beta\(layer)"] = Array(repeating: 0, count: columns)
            switch normalization {
            case .batch: batchNorms.append(try BatchNorm(featureCount: columns))
            case .layer: layerNorms.append(try LayerNorm(featureCount: columns))
            case .decorrelated, .iterative:
                decorrelatedNorms.append(try DecorrelatedBatchNorm(
                    featureCount: columns, groupSize: whiteningGroupSize,
                    method: normalization.whiteningMethod!))
            case .none: break
            }
        }
    }

    /// The weight matrix of affine layer `layer` (1-based).
    public func weights(_ layer: Int) -> Matrix<Scalar> {
        Matrix(rows: dimensions[layer - 1], columns: dimensions[layer],
               values: parameters["W\(layer)"]!)
    }

    /// Class scores for a batch; hidden normalizations run in `mode`.
    public mutating func scores(_ x: Matrix<Scalar>, mode: Mode) throws -> Matrix<Scalar> {
        try forward(x, mode: mode).scores
    }

    /// What the backward pass needs of each hidden layer.
    struct HiddenCache {
        var input: Matrix<Scalar>
        var affine: Matrix<Scalar>
        var normCache: NormCache<Scalar>?
        var decorrelatedCache: DecorrelatedCache<Scalar>?
        var normalized: Matrix<Scalar>
    }

    mutating func forward(_ x: Matrix<Scalar>, mode: Mode) throws
        -> (scores: Matrix<Scalar>, caches: [HiddenCache]) {
        var h = x
        var caches: [HiddenCache] = []
        for layer in 1..<layerCount {
            let a = Affine.forward(h, weights: weights(layer), bias: parameters["b\(layer)"]!)
            var normalized = a
            var normCache: NormCache<Scalar>?
            var decorrelatedCache: DecorrelatedCache<Scalar>?
            let gamma = parameters["gamma\(layer)"] ?? [], beta = parameters["beta\(layer)"] ?? []
            switch normalization {
            case .batch:
                if let communicator = batchNormCommunicator {
                    var synchronized = SyncBatchNorm(batchNorms[layer - 1], communicator: communicator)
                    (normalized, normCache) = try Self.normalize(a, with: &synchronized, gamma: gamma,
                                                                beta: beta, mode: mode)
                    batchNorms[layer - 1] = synchronized.batchNorm
                } else {
                    (normalized, normCache) = try Self.normalize(a, with: &batchNorms[layer - 1], gamma: gamma,
                                                                beta: beta, mode: mode)
                }
            case .layer:
                (normalized, normCache) = try Self.normalize(a, with: &layerNorms[layer - 1], gamma: gamma,
                                                            beta: beta, mode: mode)
            case .decorrelated, .iterative:
                decorrelatedNorms[layer - 1].gamma = gamma
                decorrelatedNorms[layer - 1].beta = beta
                let (y, cache) = try decorrelatedNorms[layer - 1].forward(a.tensor, mode: mode)
                (normalized, decorrelatedCache) = (Matrix(y), cache)
            case .none:
                break
            }
            caches.append(HiddenCache(input: h, affine: a, normCache: normCache,
                                      decorrelatedCache: decorrelatedCache, normalized: normalized))
            h = ReLU.forward(normalized)
        }
        let scores = Affine.forward(h, weights: weights(layerCount), bias: parameters["b\(layerCount)"]!)
        caches.append(HiddenCache(input: h, affine: scores, normCache: nil, decorrelatedCache: nil,
                                  normalized: scores))
        return (scores, caches)
    }

    /// Runs a hidden layer's normalization with the net's current `gamma` and `beta`.
    static func normalize<Layer: NormalizationLayer<Scalar>>(
        _ a: Matrix<Scalar>, with norm: inout Layer, gamma: [Scalar], beta: [Scalar], mode: Mode
    ) throws -> (Matrix<Scalar>, NormCache<Scalar>?) where Layer.Cache == NormCache<Scalar> {
        norm.gamma = gamma
        norm.beta = beta
        let (y, cache) = try norm.forward(a.tensor, mode: mode)
        return (Matrix(y), cache)
    }

    /// The regularized softmax loss of a batch in training mode, and the
    /// gradient of every parameter (cs231n's `loss(X, y)`).
    ///
    /// For one process's share of a batch split across processes, pass the
    /// whole batch's `batchCount` and a `regularizationShare` of 1 on one
    /// process and 0 on the others: the shares' losses and gradients then sum
    /// to the batch's.
    public mutating func loss(_ x: Matrix<Scalar>, labels: [Int], batchCount: Int? = nil,
                              regularizationShare: Scalar = 1) throws
        -> (loss: Scalar, gradients: [String: [Scalar]]) {
        let (scores, caches) = try forward(x, mode: .training)
        var (loss, dout) = SoftmaxLoss.evaluate(scores: scores, labels: labels, batchCount: batchCount)
        var gradients: [String: [Scalar]] = [:]
        for layer in stride(from: layerCount, through: 1, by: -1) {
            let cache = caches[layer - 1]
            if layer < layerCount {
                dout = ReLU.backward(dout, input: cache.normalized)
                if normalization != .none {
                    let g: NormGradients<Scalar>
                    switch normalization {
                    case .batch:
                        if let communicator = batchNormCommunicator {
                            g = try SyncBatchNorm(batchNorms[layer - 1], communicator: communicator)
                                .backward(dout.tensor, cache: cache.normCache!)
                        } else {
                            g = try batchNorms[layer - 1].backward(dout.tensor, cache: cache.normCache!)
                        }
                    case .layer: g = try layerNorms[layer - 1].backward(dout.tensor, cache: cache.normCache!)
                    case .decorrelated, .iterative:
                        g = try decorrelatedNorms[layer - 1].backward(dout.tensor, cache: cache.decorrelatedCache!)
                    case .none: fatalError("unreachable: no normalization")
                    }
                    gradients["gamma\(layer)"] = g.gamma
                    gradients["beta\(layer)"] = g.beta
                    dout = Matrix(g.input)
                }
            }
            let w = weights(layer)
            let (dx, dw, db) = Affine.backward(dout, input: cache.input, weights: w)
            var dW = dw.values
            let reg = regularization * regularizationShare
            var squares: Scalar = 0
            for k in dW.indices {
                dW[k] += reg * w.values[k]
                squares += w.values[k] * w.values[k]
            }
            loss += 0.5 * reg * squares
            gradients["W\(layer)"] = dW
            gradients["b\(layer)"] = db
            dout = dx
        }
        return (loss, gradients)
    }
}

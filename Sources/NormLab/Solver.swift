import Foundation
import NormKit

/// How the solver turns a gradient into a step (cs231n's `optim.py`).
public enum UpdateRule: Sendable {
    /// `w -= learningRate * dw`.
    case sgd
    /// `v = momentum * v - learningRate * dw; w += v`.
    case sgdMomentum(momentum: Double = 0.9)
    /// Adam with bias correction.
    case adam(beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8)
}

/// What a ``Solver`` is told to do.
public struct SolverConfiguration: Sendable {
    /// The update rule.
    public var updateRule: UpdateRule
    /// The initial learning rate.
    public var learningRate: Double
    /// The factor the learning rate is multiplied by after every epoch.
    public var learningRateDecay: Double
    /// Samples per minibatch.
    public var batchSize: Int
    /// Passes over the training data.
    public var epochs: Int
    /// Training samples drawn for each train-accuracy check (cs231n: 1000).
    public var trainAccuracySamples: Int
    /// Seeds the minibatch draws and the accuracy subsamples.
    public var seed: UInt64

    /// A configuration; the defaults are cs231n's `Solver` defaults.
    public init(updateRule: UpdateRule = .sgd, learningRate: Double = 1e-2,
                learningRateDecay: Double = 1, batchSize: Int = 100, epochs: Int = 10,
                trainAccuracySamples: Int = 1000, seed: UInt64 = 0) {
        self.updateRule = updateRule
        self.learningRate = learningRate
        self.learningRateDecay = learningRateDecay
        self.batchSize = batchSize
        self.epochs = epochs
        self.trainAccuracySamples = trainAccuracySamples
        self.seed = seed
    }
}

/// What a training run recorded.
public struct TrainingHistory: Sendable {
    /// The minibatch loss of every iteration.
    public var loss: [Double] = []
    /// Train accuracy before training and after every epoch.
    public var trainAccuracy: [Double] = []
    /// Validation accuracy before training and after every epoch.
    public var validationAccuracy: [Double] = []
    /// The best validation accuracy seen; its parameters are the model's at the end.
    public var bestValidationAccuracy: Double = 0
    /// Whether the loss became NaN or infinite (or a batch statistic did), which
    /// stopped the run.
    public var diverged = false
}

/// cs231n's `Solver`: minibatch training of a ``FullyConnectedNet`` with an
/// update rule, learning-rate decay per epoch, loss and accuracy history, and
/// the best parameters (by validation accuracy) kept.
///
/// Normalization layers run in training mode for the training steps and in
/// inference mode for the accuracy checks.
///
/// Data-parallel training: with a ``communicator``, every rank draws the same
/// minibatch, computes the loss and gradients of its share of the rows (rank
/// `r` of `K` takes rows `B·r/K ..< B·(r+1)/K`), and one all-reduce per step
/// sums every gradient and the loss over the ranks, flattened into one buffer
/// in parameter-name order; every rank then takes the same step. The model's
/// ``FullyConnectedNet/batchNormCommunicator`` decides whether its batch norms
/// see the whole batch (`SyncBatchNorm`) or each rank's rows (ghost batch norm).
public struct Solver<Scalar: BLASScalar> {
    /// The model; after ``train(progress:)`` it holds the best parameters.
    public var model: FullyConnectedNet<Scalar>
    /// The ranks that share every minibatch (data-parallel training), or `nil`
    /// for one process. Every rank must hold the same model, data and configuration.
    public var communicator: (any Communicator)?
    /// The training data.
    public let training: Dataset<Scalar>
    /// The validation data.
    public let validation: Dataset<Scalar>
    /// The configuration.
    public var configuration: SolverConfiguration

    /// A solver over `model` and its data.
    public init(model: FullyConnectedNet<Scalar>, training: Dataset<Scalar>,
                validation: Dataset<Scalar>, configuration: SolverConfiguration) {
        self.model = model
        self.training = training
        self.validation = validation
        self.configuration = configuration
        self.communicator = nil
    }

    /// Trains for the configured epochs and returns what happened.
    ///
    /// - Parameter progress: called after every epoch with a one-line summary.
    public mutating func train(progress: ((String) -> Void)? = nil) -> TrainingHistory {
        var history = TrainingHistory()
        var generator = SplitMix64(seed: configuration.seed)
        let count = training.count
        let batch = min(configuration.batchSize, count)
        let iterationsPerEpoch = max(count / batch, 1)
        var learningRate = configuration.learningRate
        var state: [String: [Scalar]] = [:]       // velocity, or Adam's first moment
        var secondMoment: [String: [Scalar]] = [:]
        var step = 0
        var bestParameters = model.parameters

        func checkAccuracy(_ generator: inout SplitMix64) -> (Double, Double) {
            let train = accuracy(on: training, samples: configuration.trainAccuracySamples,
                                 generator: &generator)
            let validationAccuracy = accuracy(on: validation, samples: nil, generator: &generator)
            return (train, validationAccuracy)
        }
        var (trainAccuracy, validationAccuracy) = checkAccuracy(&generator)
        history.trainAccuracy.append(trainAccuracy)
        history.validationAccuracy.append(validationAccuracy)
        history.bestValidationAccuracy = validationAccuracy

        epochs: for epoch in 1...max(configuration.epochs, 1) {
            for _ in 0..<iterationsPerEpoch {
                let indices = (0..<batch).map { _ in Int.random(in: 0..<count, using: &generator) }
                let loss: Scalar, gradients: [String: [Scalar]]
                do {
                    if let communicator {
                        (loss, gradients) = try dataParallelLoss(indices, communicator: communicator)
                    } else {
                        (loss, gradients) = try model.loss(training.inputs.rows(indices),
                                                           labels: indices.map { training.labels[$0] })
                    }
                } catch {
                    history.diverged = true   // a batch statistic came out non-finite
                    break epochs
                }
                guard loss.isFinite else {
                    history.loss.append(Double(loss))
                    history.diverged = true
                    break epochs
                }
                history.loss.append(Double(loss))
                step += 1
                update(gradients: gradients, learningRate: learningRate, step: step,
                       state: &state, secondMoment: &secondMoment)
            }
            learningRate *= configuration.learningRateDecay
            (trainAccuracy, validationAccuracy) = checkAccuracy(&generator)
            history.trainAccuracy.append(trainAccuracy)
            history.validationAccuracy.append(validationAccuracy)
            if validationAccuracy > history.bestValidationAccuracy {
                history.bestValidationAccuracy = validationAccuracy
                bestParameters = model.parameters
            }
            progress?(String(format: "epoch %d/%d: loss %.4f, train acc %.3f, val acc %.3f",
                             epoch, configuration.epochs, history.loss.last ?? .nan,
                             trainAccuracy, validationAccuracy))
        }
        model.parameters = bestParameters
        return history
    }

    /// This rank's share of the minibatch `indices`, its loss and gradients
    /// (as fractions of the whole batch's), summed over the ranks by one
    /// all-reduce of a flat buffer: the gradients in parameter-name order, then
    /// the loss. A rank whose share throws (a non-finite batch statistic)
    /// contributes NaN, so every rank sees a NaN loss and stops together.
    mutating func dataParallelLoss(_ indices: [Int], communicator: any Communicator) throws
        -> (loss: Scalar, gradients: [String: [Scalar]]) {
        let (rank, size, batch) = (communicator.rank, communicator.size, indices.count)
        let mine = Array(indices[(batch * rank / size)..<(batch * (rank + 1) / size)])
        let names = model.parameters.keys.sorted()
        let total = names.reduce(1) { $0 + model.parameters[$1]!.count }
        var flat: [Scalar] = []
        flat.reserveCapacity(total)
        if let (loss, gradients) = try? model.loss(training.inputs.rows(mine),
                                                  labels: mine.map { training.labels[$0] },
                                                  batchCount: batch, regularizationShare: rank == 0 ? 1 : 0) {
            for name in names { flat += gradients[name]! }
            flat.append(loss)
        } else {
            flat = Array(repeating: .nan, count: total)
        }
        try communicator.allReduceSum(&flat)
        var gradients: [String: [Scalar]] = [:], offset = 0
        for name in names {
            let length = model.parameters[name]!.count
            gradients[name] = Array(flat[offset..<(offset + length)])
            offset += length
        }
        return (flat[offset], gradients)
    }

    /// Applies one update to every parameter.
    mutating func update(gradients: [String: [Scalar]], learningRate: Double, step: Int,
                         state: inout [String: [Scalar]], secondMoment: inout [String: [Scalar]]) {
        let lr = Scalar(learningRate)
        for (name, gradient) in gradients {
            var w = model.parameters[name]!
            switch configuration.updateRule {
            case .sgd:
                for k in w.indices { w[k] -= lr * gradient[k] }
            case let .sgdMomentum(momentum):
                var v = state[name] ?? Array(repeating: 0, count: w.count)
                let mu = Scalar(momentum)
                for k in w.indices {
                    v[k] = mu * v[k] - lr * gradient[k]
                    w[k] += v[k]
                }
                state[name] = v
            case let .adam(beta1, beta2, epsilon):
                var m = state[name] ?? Array(repeating: 0, count: w.count)
                var v = secondMoment[name] ?? Array(repeating: 0, count: w.count)
                let b1 = Scalar(beta1), b2 = Scalar(beta2), eps = Scalar(epsilon)
                let correction1 = 1 - Scalar(pow(beta1, Double(step)))
                let correction2 = 1 - Scalar(pow(beta2, Double(step)))
                for k in w.indices {
                    m[k] = b1 * m[k] + (1 - b1) * gradient[k]
                    v[k] = b2 * v[k] + (1 - b2) * gradient[k] * gradient[k]
                    let mHat = m[k] / correction1, vHat = v[k] / correction2
                    w[k] -= lr * mHat / (vHat.squareRoot() + eps)
                }
                state[name] = m
                secondMoment[name] = v
            }
            model.parameters[name] = w
        }
    }

    /// The fraction of `samples` randomly drawn examples (all when `nil`)
    /// classified correctly, with normalization in inference mode, in batches of
    /// the configured size. A model that fails (non-finite statistics) scores 0.
    public mutating func accuracy(on data: Dataset<Scalar>, samples: Int?,
                                  generator: inout SplitMix64) -> Double {
        var indices = Array(0..<data.count)
        if let samples, samples < data.count {
            indices = (0..<samples).map { _ in Int.random(in: 0..<data.count, using: &generator) }
        }
        var correct = 0
        var start = 0
        while start < indices.count {
            let chunk = Array(indices[start..<min(start + max(configuration.batchSize, 100), indices.count)])
            guard let scores = try? model.scores(data.inputs.rows(chunk), mode: .inference) else {
                return 0
            }
            for (row, index) in chunk.enumerated() {
                let values = scores.values[(row * scores.columns)..<((row + 1) * scores.columns)]
                let predicted = values.indices.max { values[$0] < values[$1] }! - row * scores.columns
                if predicted == data.labels[index] { correct += 1 }
            }
            start += chunk.count
        }
        return Double(correct) / Double(max(indices.count, 1))
    }
}

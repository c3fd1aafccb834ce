import NormKit

/// NormKit's fuzz target, shared by the libFuzzer binary (`make fuzz`) and the
/// test that replays the committed corpus (`FuzzCorpusTests`).
///
/// One input decodes into a layer (any of the seven), Float or Double (and,
/// for LayerNorm and RMSNorm in Float, a 16-bit storage type), a
/// backend, a mode, a thread count, a shape (which may be negative, empty,
/// overflowing, or not the layer's), parameters (which may be NaN, negative or
/// of the wrong length), running statistics, input values (finite, special or
/// raw bit patterns) and an output gradient. It then runs forward and backward
/// through the value API and through the allocation-free API, with buffers that
/// a previous call of another shape (which may have thrown) left behind, and
/// checks what a user relies on:
///
/// - no crash, trap or sanitizer report (the fuzzer's own check);
/// - both APIs give the same bits, or the same error;
/// - a call that throws leaves the layer's parameters and running statistics
///   unchanged, bit for bit, and its error's description is printable;
/// - a cache from a forward pass that threw is refused by backward with
///   ``NormError/cacheMismatch(expected:actual:)``;
/// - a shape whose product overflows or is negative is refused by `Tensor`;
/// - tame input (finite, at most 1e3 in magnitude, default epsilon) gives a
///   finite output and finite gradients.
///
/// Violations come back as messages; the fuzzer aborts on the first.
public enum FuzzHarness {
    /// The most scalars one case allocates, so a case runs in milliseconds.
    public static let maximumScalars = 1 << 18

    /// Runs one case and returns the violations found (empty when none).
    public static func run(_ data: UnsafeRawBufferPointer) -> [String] {
        var reader = ByteReader(data)
        let header = Header(kind: reader.byte(), flags: reader.byte(), options: reader.byte())
        let previousThreads = Threading.threadCount, previousGrain = Threading.minimumBytesPerWorker
        Threading.threadCount = header.threadCount
        // Every chunk may get a worker of its own, so that the small inputs a
        // fuzzer makes reach the threaded paths too.
        Threading.minimumBytesPerWorker = 0
        defer {
            Threading.threadCount = previousThreads
            Threading.minimumBytesPerWorker = previousGrain
        }
        var report = Report()
        if header.isDouble {
            var fuzzCase = FuzzCase<Double>(header: header)
            fuzzCase.run(&reader, &report)
        } else {
            var fuzzCase = FuzzCase<Float>(header: header)
            fuzzCase.run(&reader, &report)
        }
        return report.violations
    }

    /// What an input decodes to, coarsely: "layer scalar backend mode".
    public static func summary(_ data: UnsafeRawBufferPointer) -> String {
        var reader = ByteReader(data)
        return Header(kind: reader.byte(), flags: reader.byte(), options: reader.byte()).summary
    }

    /// Every ``summary(_:)`` there is: the combinations a corpus should cover.
    public static var allSummaries: Set<String> {
        var all = Set<String>()
        for kind in 0..<UInt8(Header.Kind.allCases.count) {
            for flags: UInt8 in 0..<8 {
                all.insert(Header(kind: kind, flags: flags, options: 0).summary)
            }
        }
        return all
    }
}

/// The first three bytes: what to run and how.
struct Header {
    enum Kind: Int, CaseIterable {
        case batchNorm, layerNorm, rmsNorm, spatialNCHW, spatialNHWC, groupNorm, instanceNorm
    }

    let kind: Kind
    let flags: UInt8
    let options: UInt8

    init(kind: UInt8, flags: UInt8, options: UInt8) {
        self.kind = Kind(rawValue: Int(kind) % Kind.allCases.count)!
        self.flags = flags
        self.options = options
    }

    var isDouble: Bool { flags & 1 != 0 }
    var backend: Backend { flags & 2 != 0 ? .naive : .blas }
    var mode: Mode { flags & 4 != 0 ? .inference : .training }
    var estimator: VarianceEstimator { flags & 8 != 0 ? .unbiased : .biased }
    var throughGraph: Bool { flags & 16 != 0 }
    var threadCount: Int { 1 + Int(flags >> 5) }

    var wrongParameterLength: Bool { options & 1 != 0 }
    var oddEpsilon: Bool { options & 2 != 0 }
    var oddMomentum: Bool { options & 4 != 0 }
    var mismatchedGradient: Bool { options & 8 != 0 }
    var pattern: Int { Int(options >> 4 & 3) }
    var freeFeatureCount: Bool { options & 64 != 0 }
    var oddRunningStatistics: Bool { options & 128 != 0 }

    var summary: String { "\(kind) \(isDouble ? "Double" : "Float") \(backend) \(mode)" }

    var rank: Int {
        switch kind {
        case .batchNorm, .layerNorm, .rmsNorm: 2
        default: 4
        }
    }
}

/// What a case found wrong.
struct Report {
    var violations: [String] = []
    mutating func fail(_ message: String) { violations.append(message) }
}

/// One decoded case in one scalar type.
struct FuzzCase<Scalar: BLASScalar> {
    let header: Header

    /// Whether every value a case uses is finite and at most 1e3 in magnitude.
    var tame = true

    /// Whether the results must be finite: tame values, and the default
    /// epsilon, momentum and running statistics (an epsilon of 1e-45 gives
    /// `invstd` 2.7e22, whose powers overflow `Float`).
    var tameRun: Bool {
        tame && !header.oddEpsilon && !header.oddMomentum && !header.oddRunningStatistics
    }

    init(header: Header) { self.header = header }

    mutating func run(_ reader: inout ByteReader, _ report: inout Report) {
        // The shape: the layer's rank, or (rarely) another one; sometimes
        // enlarged so that the BLAS kernels split it across threads.
        let rankByte = reader.byte()
        let rank = rankByte < 224 ? header.rank : Int(rankByte % 6)
        var shape = (0..<rank).map { _ in reader.dimension() }
        if (200..<224).contains(rankByte), rank > 0 { enlarge(&shape) }
        let features = featureCount(of: shape, &reader)
        let groupByte = reader.byte()
        let epsilonByte = reader.byte()
        let momentumByte = reader.byte()

        // Values: a pool of decoded scalars laid out by the pattern.
        let parameterPool = pool(&reader, count: 16)
        let pool = self.pool(&reader, count: 64)
        tame = tame && (parameterPool + pool).allSatisfy { $0.isFinite && abs($0) <= 1000 }

        checkTensorInitializers(shape, &report)
        guard let input = tensor(shape, from: pool, pattern: header.pattern, &report) else { return }
        var gradientShape = shape
        if header.mismatchedGradient, !gradientShape.isEmpty { gradientShape[gradientShape.count - 1] &+= 1 }
        let gradient = tensor(gradientShape, from: pool.reversed(), pattern: 3 - header.pattern, &report)
        var smallShape = shape
        if !smallShape.isEmpty { smallShape[0] = (abs(smallShape[0] % 3)) + 1 }
        let small = tensor(smallShape, from: pool, pattern: 2, &report)
        let smallGradient = tensor(smallShape, from: pool, pattern: 1, &report)

        let epsilon = header.oddEpsilon ? oddEpsilon(epsilonByte) : 1e-5
        let momentum = header.oddMomentum ? oddMomentum(momentumByte) : 0.9
        // With the default momentum, its byte picks the running-statistics
        // policy, and the group byte (unused by the batch norms) the count
        // of batches tracked so far.
        let policy: RunningStatistics = header.oddMomentum
            ? .exponential : [.exponential, .cumulative, .none][Int(momentumByte % 3)]
        let batchesTracked = Int(groupByte)
        let backend = header.backend
        // GroupNorm and InstanceNorm (which leave the momentum byte unused
        // otherwise): its bit 2 puts the channels last, moving the input's
        // dimension 1 to the end; InstanceNorm takes the policy above
        // (.none for a third of the bytes, its default).
        let layout: ChannelLayout = momentumByte & 4 != 0 && shape.count >= 3 ? .nhwc : .nchw
        let instancePolicy: RunningStatistics = header.oddMomentum ? .none : policy
        // With the default epsilon, its byte picks the affine map.
        let affine: Affine = header.oddEpsilon ? .scaleAndShift : [.scaleAndShift, .scaleOnly, .none][Int(epsilonByte % 3)]
        func channelsLast(_ t: Tensor<Scalar>?) -> Tensor<Scalar>? {
            guard layout == .nhwc, let t, t.shape.count >= 3 else { return t }
            let rank = t.shape.count
            return (try? t.permuted([0] + Array(2..<rank) + [1])) ?? t
        }
        let (lastInput, lastGradient) = (channelsLast(input) ?? input, channelsLast(gradient))
        let (lastSmall, lastSmallGradient) = (channelsLast(small), channelsLast(smallGradient))

        do {
            switch header.kind {
            case .batchNorm:
                var layer = try BatchNorm<Scalar>(featureCount: features, varianceEstimator: header.estimator,
                                                  runningStatistics: policy, affine: affine, backend: backend)
                layer.epsilon = epsilon
                layer.momentum = momentum
                layer.batchesTracked = batchesTracked
                setParameters(&layer.gamma, &layer.beta, from: parameterPool)
                setRunning(&layer.runningMean, &layer.runningVariance, from: parameterPool)
                if header.throughGraph {
                    exercise(layer, state: { [$0.gamma, $0.beta, $0.runningMean, $0.runningVariance, [Scalar($0.batchesTracked)]] },
                             input: input, gradient: gradient, small: small, smallGradient: smallGradient,
                             valueBackward: { layer, dy, cache throws(NormError) in
                                 try layer.backwardThroughGraph(dy, cache: cache)
                             },
                             bufferedBackward: { layer, dy, cache, gradients, workspace throws(NormError) in
                                 try layer.backwardThroughGraph(dy, cache: cache, into: &gradients,
                                                                workspace: &workspace)
                             }, &report)
                } else {
                    exercise(layer, state: { [$0.gamma, $0.beta, $0.runningMean, $0.runningVariance, [Scalar($0.batchesTracked)]] },
                             input: input, gradient: gradient, small: small, smallGradient: smallGradient,
                             &report)
                    checkSynchronizedTwin(layer, SyncBatchNorm(layer, communicator: SingleProcess()),
                                          plainState: { [$0.runningMean, $0.runningVariance, [Scalar($0.batchesTracked)]] },
                                          twinState: { [$0.runningMean, $0.runningVariance, [Scalar($0.batchesTracked)]] },
                                          input: input, gradient: gradient, &report)
                    let running: (BatchNorm<Scalar>) -> [[Scalar]] = { [$0.runningMean, $0.runningVariance] }
                    checkInfer(layer, state: running, input: input, &report)
                    checkFused(layer, state: running, input: input, residual: gradient, &report)
                }
                checkReduced(layer, input: input, gradient: gradient,
                             sameArithmetic: backend == .blas,
                             float16: header.estimator == .unbiased, &report)
            case .spatialNCHW, .spatialNHWC:
                var layer = try SpatialBatchNorm<Scalar>(
                    channelCount: features, varianceEstimator: header.estimator,
                    layout: header.kind == .spatialNCHW ? .nchw : .nhwc, runningStatistics: policy,
                    affine: affine, backend: backend)
                layer.epsilon = epsilon
                layer.momentum = momentum
                layer.batchesTracked = batchesTracked
                setParameters(&layer.gamma, &layer.beta, from: parameterPool)
                setRunning(&layer.runningMean, &layer.runningVariance, from: parameterPool)
                exercise(layer, state: { [$0.gamma, $0.beta, $0.runningMean, $0.runningVariance, [Scalar($0.batchesTracked)]] },
                         input: input, gradient: gradient, small: small, smallGradient: smallGradient,
                         &report)
                checkSynchronizedTwin(layer, SyncSpatialBatchNorm(layer, communicator: SingleProcess()),
                                      plainState: { [$0.runningMean, $0.runningVariance, [Scalar($0.batchesTracked)]] },
                                      twinState: { [$0.runningMean, $0.runningVariance, [Scalar($0.batchesTracked)]] },
                                      input: input, gradient: gradient, &report)
                let running: (SpatialBatchNorm<Scalar>) -> [[Scalar]] = { [$0.runningMean, $0.runningVariance] }
                checkInfer(layer, state: running, input: input, &report)
                checkFused(layer, state: running, input: input, residual: gradient, &report)
                checkReduced(layer, input: input, gradient: gradient,
                             sameArithmetic: backend == .blas,
                             float16: header.estimator == .unbiased, &report)
            case .layerNorm:
                var layer = try LayerNorm<Scalar>(featureCount: features, affine: affine, backend: backend)
                layer.epsilon = epsilon
                exerciseWithoutRunningStatistics(layer, parameters: parameterPool, input: input,
                                                 gradient: gradient, small: small,
                                                 smallGradient: smallGradient, &report)
                checkInfer(layer, state: { [$0.gamma] }, input: input, &report)
                checkResidual(layer, input: input, residual: gradient, &report)
                checkReduced(layer, input: input, gradient: gradient, &report)
            case .rmsNorm:
                var layer = try RMSNorm<Scalar>(featureCount: features, affine: affine, backend: backend)
                layer.epsilon = epsilon
                exerciseWithoutRunningStatistics(layer, parameters: parameterPool, input: input,
                                                 gradient: gradient, small: small,
                                                 smallGradient: smallGradient, &report)
                checkInfer(layer, state: { [$0.gamma] }, input: input, &report)
                checkResidual(layer, input: input, residual: gradient, &report)
                checkReduced(layer, input: input, gradient: gradient, &report)
            case .groupNorm:
                var layer = try GroupNorm<Scalar>(channelCount: features,
                                                  groupCount: groupCount(groupByte, features, &reader),
                                                  layout: layout, affine: affine, backend: backend)
                layer.epsilon = epsilon
                exerciseWithoutRunningStatistics(layer, parameters: parameterPool, input: lastInput,
                                                 gradient: lastGradient, small: lastSmall,
                                                 smallGradient: lastSmallGradient, &report)
                checkInfer(layer, state: { [$0.gamma] }, input: lastInput, &report)
                checkFused(layer, state: { [$0.gamma] }, input: lastInput, residual: lastGradient, &report)
                // Channels last, a 16-bit sample runs the Float column kernels.
                checkReduced(layer, input: lastInput, gradient: lastGradient,
                             sameArithmetic: backend == .blas
                                 && (layout == .nhwc
                                     || groupRowLength(input.shape, channels: layer.channelCount,
                                                       groups: layer.groupCount) >= 64),
                             &report)
            case .instanceNorm:
                var layer = try InstanceNorm<Scalar>(channelCount: features, varianceEstimator: header.estimator,
                                                     layout: layout, runningStatistics: instancePolicy,
                                                     affine: affine, backend: backend)
                layer.epsilon = epsilon
                exerciseWithoutRunningStatistics(layer, parameters: parameterPool, input: lastInput,
                                                 gradient: lastGradient, small: lastSmall,
                                                 smallGradient: lastSmallGradient, &report)
                checkInfer(layer, state: { [$0.gamma, $0.runningMean, $0.runningVariance] }, input: lastInput, &report)
                checkFused(layer, state: { [$0.gamma, $0.runningMean, $0.runningVariance] }, input: lastInput,
                           residual: lastGradient, &report)
                checkReduced(layer, input: lastInput, gradient: lastGradient,
                             sameArithmetic: backend == .blas
                                 && (layout == .nhwc
                                     || groupRowLength(input.shape, channels: layer.channelCount,
                                                       groups: layer.channelCount) >= 64),
                             &report)
            }
        } catch {
            // An initializer refused its arguments; its description must print.
            _ = error.description
        }
    }

    // MARK: The checks

    /// ``exercise`` for a layer whose state is its `gamma` and `beta`, which
    /// it first sets from `parameters`.
    func exerciseWithoutRunningStatistics<Layer: BufferedNormalizationLayer>(
        _ layer: Layer, parameters: [Scalar], input: Tensor<Scalar>, gradient: Tensor<Scalar>?,
        small: Tensor<Scalar>?, smallGradient: Tensor<Scalar>?, _ report: inout Report
    ) where Layer.Scalar == Scalar {
        var layer = layer, gamma = layer.gamma, beta = layer.beta
        setParameters(&gamma, &beta, from: parameters)
        layer.gamma = gamma
        layer.beta = beta
        exercise(layer, state: { [$0.gamma, $0.beta] }, input: input, gradient: gradient,
                 small: small, smallGradient: smallGradient, &report)
    }

    /// Forward and backward through both APIs, compared bit for bit.
    func exercise<Layer: BufferedNormalizationLayer>(
        _ layer: Layer, state: (Layer) -> [[Scalar]], input: Tensor<Scalar>,
        gradient: Tensor<Scalar>?, small: Tensor<Scalar>?, smallGradient: Tensor<Scalar>?,
        valueBackward: (Layer, Tensor<Scalar>, NormCache<Scalar>) throws(NormError)
            -> NormGradients<Scalar> = { layer, dy, cache throws(NormError) in
                try layer.backward(dy, cache: cache)
            },
        bufferedBackward: (Layer, Tensor<Scalar>, NormCache<Scalar>, inout NormGradients<Scalar>,
                           inout Workspace<Scalar>) throws(NormError) -> Void = {
            layer, dy, cache, gradients, workspace throws(NormError) in
            try layer.backward(dy, cache: cache, into: &gradients, workspace: &workspace)
        },
        _ report: inout Report
    ) where Layer.Scalar == Scalar {
        let mode = header.mode
        let before = state(layer)
        let tameRun = self.tameRun && !header.wrongParameterLength

        // The value API.
        var valueLayer = layer
        var valueForward: (output: Tensor<Scalar>, cache: NormCache<Scalar>)?
        var valueError: NormError?
        do {
            valueForward = try valueLayer.forward(input, mode: mode)
        } catch {
            valueError = error
            _ = error.description
            if !sameState(state(valueLayer), before) {
                report.fail("value forward threw \(error) and changed the layer's state")
            }
        }

        // The allocation-free API, with buffers a call of another shape used first.
        guard var output = try? Tensor<Scalar>(shape: [0], scalars: []) else {
            report.fail("Tensor(shape: [0], scalars: []) threw")
            return
        }
        var cache = NormCache<Scalar>()
        var workspace = Workspace<Scalar>()
        var gradients = NormGradients<Scalar>()
        if let small {
            var scratch = layer
            do {
                try scratch.forward(small, mode: mode, into: &output, cache: &cache, workspace: &workspace)
                if let smallGradient {
                    try? bufferedBackward(scratch, smallGradient, cache, &gradients, &workspace)
                }
            } catch {
                _ = error.description
                if let smallGradient {
                    do {
                        try bufferedBackward(layer, smallGradient, cache, &gradients, &workspace)
                        report.fail("backward accepted the cache of a forward pass that threw \(error)")
                    } catch {
                        if case .cacheMismatch = error {} else {
                            report.fail("backward with the cache of a failed forward threw \(error), "
                                        + "not cacheMismatch")
                        }
                    }
                }
            }
        }
        // Buffers of the right size left full of NaNs: an element a kernel fails
        // to write then differs from the value API's.
        if output.count != input.count, let poisoned = try? Tensor<Scalar>(
            shape: input.shape, scalars: Array(repeating: .nan, count: input.count)) {
            output = poisoned
        }
        if gradients.input.count != input.count, let poisoned = try? Tensor<Scalar>(
            shape: input.shape, scalars: Array(repeating: .nan, count: input.count)) {
            gradients = NormGradients(input: poisoned, gamma: Array(repeating: .nan, count: layer.gamma.count),
                                      beta: Array(repeating: .nan, count: layer.beta.count))
        }
        var bufferedLayer = layer
        var bufferedError: NormError?
        do {
            try bufferedLayer.forward(input, mode: mode, into: &output, cache: &cache, workspace: &workspace)
        } catch {
            bufferedError = error
            if !sameState(state(bufferedLayer), before) {
                report.fail("buffered forward threw \(error) and changed the layer's state")
            }
        }

        switch (valueForward, bufferedError) {
        case (nil, nil):
            report.fail("value forward threw \(valueError!) but the buffered forward succeeded")
            return
        case (.some, .some(let error)):
            report.fail("buffered forward threw \(error) but the value forward succeeded")
            return
        case (nil, .some(let error)):
            if error.description != valueError!.description {
                report.fail("the two forwards threw different errors: \(valueError!) and \(error)")
            }
            return
        case (.some(let value), nil):
            if value.output.shape != output.shape || !sameBits(value.output.scalars, output.scalars) {
                report.fail("the two forwards' outputs differ")
            }
            if !sameBits(value.cache.mean, cache.mean)
                || !sameBits(value.cache.inverseStandardDeviation, cache.inverseStandardDeviation) {
                report.fail("the two forwards' cached statistics differ")
            }
            if !sameState(state(valueLayer), state(bufferedLayer)) {
                report.fail("the two forwards left different running statistics")
            }
            if tameRun, !value.output.scalars.allSatisfy(\.isFinite) {
                report.fail("tame input gave a non-finite output")
            }
        }
        exerciseStep(layer, state: state, input: input, gradient: gradient, small: small,
                     smallGradient: smallGradient, valueLayer: valueLayer, valueForward: valueForward,
                     valueError: valueError, &report)
        guard let gradient, let (_, valueCache) = valueForward else { return }

        let stateBeforeBackward = state(bufferedLayer)
        var valueGradients: NormGradients<Scalar>?
        var valueBackwardError: NormError?
        do {
            valueGradients = try valueBackward(valueLayer, gradient, valueCache)
        } catch {
            valueBackwardError = error
            _ = error.description
        }
        var bufferedBackwardError: NormError?
        do {
            try bufferedBackward(bufferedLayer, gradient, cache, &gradients, &workspace)
        } catch {
            bufferedBackwardError = error
        }
        if !sameState(state(bufferedLayer), stateBeforeBackward) {
            report.fail("backward changed the layer's state")
        }
        switch (valueGradients, bufferedBackwardError) {
        case (nil, nil):
            report.fail("value backward threw \(valueBackwardError!) but the buffered backward succeeded")
        case (.some, .some(let error)):
            report.fail("buffered backward threw \(error) but the value backward succeeded")
        case (nil, .some(let error)):
            if error.description != valueBackwardError!.description {
                report.fail("the two backwards threw different errors: \(valueBackwardError!) and \(error)")
            }
        case (.some(let value), nil):
            if value.input.shape != gradients.input.shape
                || !sameBits(value.input.scalars, gradients.input.scalars)
                || !sameBits(value.gamma, gradients.gamma) || !sameBits(value.beta, gradients.beta) {
                report.fail("the two backwards' gradients differ")
            }
            if tameRun, !(value.input.scalars + value.gamma + value.beta).allSatisfy(\.isFinite) {
                report.fail("tame input gave non-finite gradients")
            }
        }
    }

    /// The entry points over borrowed memory, through a ``NormalizationStep``
    /// (whose cache copies the input) that a pass of another shape used first:
    /// the value API's bits or error, and the closed-form backward's gradients.
    func exerciseStep<Layer: BufferedNormalizationLayer>(
        _ layer: Layer, state: (Layer) -> [[Scalar]], input: Tensor<Scalar>,
        gradient: Tensor<Scalar>?, small: Tensor<Scalar>?, smallGradient: Tensor<Scalar>?,
        valueLayer: Layer, valueForward: (output: Tensor<Scalar>, cache: NormCache<Scalar>)?,
        valueError: NormError?, _ report: inout Report
    ) where Layer.Scalar == Scalar {
        let before = state(layer)
        var step = NormalizationStep(layer)
        if let small {
            try? step.forward(small, mode: header.mode)
            if let smallGradient { try? step.backward(smallGradient) }
            step.layer = layer
        }
        do {
            try input.withUnsafeBufferPointer { (x) throws(NormError) in
                try step.forward(x, shape: input.shape, mode: header.mode)
            }
        } catch {
            if !sameState(state(step.layer), before) {
                report.fail("borrowed-memory forward threw \(error) and changed the layer's state")
            }
            if valueError?.description != error.description {
                report.fail("borrowed-memory forward threw \(error), the value forward "
                            + "\(valueError.map(String.init(describing:)) ?? "nothing")")
            }
            return
        }
        guard let value = valueForward else {
            report.fail("borrowed-memory forward succeeded but the value forward threw \(valueError!)")
            return
        }
        if value.output.shape != step.output.shape || !sameBits(value.output.scalars, step.output.scalars)
            || !sameState(state(step.layer), state(valueLayer)) {
            report.fail("the borrowed-memory forward's output or running statistics differ")
        }
        guard let gradient else { return }
        let expected: Result<NormGradients<Scalar>, NormError> = Result { () throws(NormError) in
            try valueLayer.backward(gradient, cache: value.cache)
        }
        let stepResult: Result<NormGradients<Scalar>, NormError> = Result { () throws(NormError) in
            try step.backward(gradient)   // checks the shape, then the buffer form
            return step.gradients
        }
        switch (expected, stepResult) {
        case let (.success(a), .success(b)):
            if !sameBits(a.input.scalars, b.input.scalars) || !sameBits(a.gamma, b.gamma)
                || !sameBits(a.beta, b.beta) {
                report.fail("the borrowed-memory backward's gradients differ")
            }
        case let (.failure(a), .failure(b)):
            if a.description != b.description {
                report.fail("the backwards threw different errors: \(a) and \(b)")
            }
        default:
            report.fail("one backward threw and the other did not: \(expected) and \(stepResult)")
        }
    }

    func sameState(_ a: [[Scalar]], _ b: [[Scalar]]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { sameBits($0, $1) }
    }

    /// A shape whose product overflows or is negative must be refused, never trap.
    func checkTensorInitializers(_ shape: [Int], _ report: inout Report) {
        let negative = shape.contains { $0 < 0 }
        let product = checkedProduct(shape)
        guard negative || product == nil else { return }
        do {
            _ = try Tensor<Scalar>(zeros: shape)
            report.fail("Tensor(zeros: \(shape)) did not throw")
        } catch { _ = error.description }
        do {
            _ = try Tensor<Scalar>(randomNormal: shape, seed: 1)
            report.fail("Tensor(randomNormal: \(shape)) did not throw")
        } catch { _ = error.description }
    }

    // MARK: Decoding

    /// The feature or channel count: the shape's, or (with the option) a free one.
    func featureCount(of shape: [Int], _ reader: inout ByteReader) -> Int {
        if header.freeFeatureCount { return reader.dimension() }
        switch header.kind {
        case .batchNorm, .layerNorm, .rmsNorm: return shape.last ?? 1
        case .spatialNHWC: return shape.count == 4 ? shape[3] : (shape.last ?? 1)
        default: return shape.count > 1 ? shape[1] : (shape.first ?? 1)
        }
    }

    /// A group count: usually one of the channel count's divisors.
    func groupCount(_ byte: UInt8, _ channels: Int, _ reader: inout ByteReader) -> Int {
        guard byte < 200, channels > 0, channels <= 1 << 20 else { return reader.dimension() }
        let divisors = (1...channels).filter { channels % $0 == 0 }
        return divisors[Int(byte) % divisors.count]
    }

    /// Makes a valid shape big enough that the BLAS kernels split it into chunks.
    func enlarge(_ shape: inout [Int]) {
        guard let product = checkedProduct(shape), product > 0, shape.allSatisfy({ $0 >= 0 }) else { return }
        let factor = max(1, min(140_000 / product, FuzzHarness.maximumScalars / product))
        shape[0] *= factor
    }

    /// The shape's product, `nil` on overflow; 0 when any extent is 0, as
    /// `Tensor` counts it (an empty tensor is valid whatever its other extents).
    func checkedProduct(_ shape: [Int]) -> Int? {
        if shape.contains(0) { return 0 }
        var product = 1
        for dimension in shape {
            let (next, overflow) = product.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            product = next
        }
        return product
    }

    func pool(_ reader: inout ByteReader, count: Int) -> [Scalar] {
        var values: [Scalar] = []
        while values.count < count, !reader.isAtEnd { values.append(reader.scalar(Scalar.self)) }
        return values.isEmpty ? [Scalar(0.37)] : values
    }

    /// A tensor of `shape` from `pool`: periodic, constant, a ramp, or both;
    /// `nil` (after checking that `Tensor` refuses it) when the shape is not
    /// valid or too large.
    func tensor<C: Collection>(_ shape: [Int], from pool: C, pattern: Int,
                               _ report: inout Report) -> Tensor<Scalar>?
    where C.Element == Scalar {
        let pool = Array(pool)
        guard let count = checkedProduct(shape), count >= 0, shape.allSatisfy({ $0 >= 0 }),
              count <= FuzzHarness.maximumScalars else {
            do {
                _ = try Tensor<Scalar>(shape: shape, scalars: pool)
                if checkedProduct(shape) != pool.count || shape.contains(where: { $0 < 0 }) {
                    report.fail("Tensor(shape: \(shape), scalars: \(pool.count) values) did not throw")
                }
            } catch { _ = error.description }
            return nil
        }
        let scalars: [Scalar] = (0..<count).map { i in
            switch pattern {
            case 0: pool[i % pool.count]
            case 1: pool[0]
            case 2: Scalar(i % 97) * Scalar(0.013) - 0.5
            default: pool[i % pool.count] + Scalar(i % 89) * Scalar(0.011)
            }
        }
        do {
            return try Tensor(shape: shape, scalars: scalars)
        } catch {
            report.fail("Tensor(shape: \(shape), scalars: \(count) values) threw \(error)")
            return nil
        }
    }

    func oddEpsilon(_ byte: UInt8) -> Scalar {
        let values: [Scalar] = [0, -1, .nan, .infinity, .leastNonzeroMagnitude, 1e30, -0.0, 1e-30]
        return values[Int(byte) % values.count]
    }

    func oddMomentum(_ byte: UInt8) -> Scalar {
        let values: [Scalar] = [0, 1, -0.5, 1.5, .nan, .infinity, 0.999, .leastNonzeroMagnitude]
        return values[Int(byte) % values.count]
    }

    /// Gamma and beta from the pool; of the wrong length with the option.
    func setParameters(_ gamma: inout [Scalar], _ beta: inout [Scalar], from pool: [Scalar]) {
        // Each as long as the layer's (empty for a parameter it has not, `Affine`).
        let (scales, shifts) = (gamma.count, beta.count)
        guard max(scales, shifts) <= FuzzHarness.maximumScalars else { return }
        gamma = (0..<scales).map { pool[$0 % pool.count] }
        beta = (0..<shifts).map { pool[($0 + 1) % pool.count] }
        if header.wrongParameterLength {
            if pool[0].isFinite, pool[0] > 0 { gamma.append(1) } else { beta.removeLast(min(1, beta.count)) }
        }
    }

    /// Running statistics: zeros and ones, or (with the option) from the pool,
    /// negative variances and NaNs included.
    func setRunning(_ mean: inout [Scalar], _ variance: inout [Scalar], from pool: [Scalar]) {
        guard header.oddRunningStatistics, mean.count <= FuzzHarness.maximumScalars else { return }
        mean = (0..<mean.count).map { pool[($0 + 2) % pool.count] }
        variance = (0..<variance.count).map { pool[($0 + 3) % pool.count] }
    }
}

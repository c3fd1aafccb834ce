/// Every way a NormKit call can refuse its input.
///
/// Each case's ``description`` names what was expected and what came. A call
/// that throws has changed no state: running statistics, parameters and
/// caller-owned outputs of the layer are as they were (outputs may be
/// resized, never half-written with a result that looks valid).
public enum NormError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A tensor's scalar count differs from the product of its shape.
    case scalarCountMismatch(shape: [Int], scalarCount: Int)
    /// A shape has a negative dimension.
    case negativeDimension(shape: [Int])
    /// The product of a shape's dimensions does not fit in `Int`.
    case shapeOverflow(shape: [Int])
    /// An input has the wrong rank or shape for the layer.
    case invalidShape(expected: String, actual: [Int])
    /// A caller's buffer (`input`, `output`, `outputGradient`, `inputGradient`,
    /// `gammaGradient`, `betaGradient`) of the entry points over borrowed memory
    /// holds another number of scalars than the shape or the cache calls for.
    case bufferCountMismatch(name: String, expected: Int, actual: Int)
    /// A gradient's shape differs from the shape the cache recorded.
    case gradientShapeMismatch(expected: [Int], actual: [Int])
    /// A parameter or statistics vector (`gamma`, `beta`, `runningMean`, ...)
    /// has a length other than the layer's feature or channel count.
    case parameterCountMismatch(name: String, expected: Int, actual: Int)
    /// A feature or channel count that is not positive.
    case invalidFeatureCount(Int)
    /// A group count that is not positive or does not divide the channel count.
    case invalidGroupCount(groupCount: Int, channelCount: Int)
    /// `epsilon` must be finite and greater than zero.
    case invalidEpsilon(Double)
    /// `momentum` must lie in `[0, 1]`.
    case invalidMomentum(Double)
    /// Training mode needs at least two values per statistic (as PyTorch
    /// refuses a batch of one).
    case insufficientValues(valuesPerStatistic: Int)
    /// A batch statistic (mean or variance) came out NaN or infinite: the input
    /// holds a NaN or an infinity, or overflows. `index` is the feature,
    /// channel or sample (for per-sample statistics) where it happened. In
    /// whitening, also an eigenvalue that `epsilon` 0 cannot invert (zero
    /// within rounding: data of lower rank); `index` is the eigenvalue's.
    case nonFiniteStatistics(index: Int)
    /// Backward was given a cache that another layer's forward pass filled (or
    /// a layer of another size, layout or group count, or a forward pass that
    /// threw). `expected` and `actual` name the layers, as ``CacheOrigin`` does.
    case cacheMismatch(expected: String, actual: String)
    /// A size does not fit OpenBLAS's 32-bit integers.
    case sizeTooLarge(Int)
    /// A parameter holds a value the layer does not support (``RMSNorm``'s
    /// `beta`, which must stay zeros).
    case unsupportedParameter(name: String, expected: String)
    /// A whitening group size that is below 1 or does not divide the feature count.
    case invalidGroupSize(groupSize: Int, featureCount: Int)
    /// A Newton–Schulz iteration count below 1.
    case invalidIterationCount(Int)
    /// A PCA component count outside `1...featureCount`.
    case invalidComponentCount(components: Int, featureCount: Int)
    /// A Cholesky factorization met a leading minor of order `minor` that is
    /// not positive definite, in the whitening group `group` (possible with
    /// `epsilon` 0 or nearly singular covariance).
    case notPositiveDefinite(group: Int, minor: Int)
    /// A LAPACK routine returned `info != 0` for another reason.
    case lapackFailure(routine: String, info: Int)
    /// Bytes that are not what a NumPy `.npy` or `.npz` reader accepts:
    /// `expected` names what was, `found` what came.
    case invalidNumPyData(expected: String, found: String)
    /// A file could not be opened, read or written; `reason` is the C
    /// library's message (`strerror`).
    case fileError(path: String, reason: String)
    /// A collective call of a layer synchronized across processes
    /// (``SyncBatchNorm``, ``SyncSpatialBatchNorm``) was refused on another
    /// rank (the lowest such `rank` is named; it threw its own error), so every
    /// rank throws and none waits for it. This rank's state is unchanged.
    case rankFailed(rank: Int)
    /// Two counts of values (``Moments``' `count`) add up to more than `Int.max`.
    case countOverflow(Int, Int)
    /// A whitening layer whose matrices would hold more than `maximum`
    /// scalars (`featureCount · groupSize`), refused before anything is allocated.
    case whiteningTooLarge(featureCount: Int, groupSize: Int, maximum: Int)
    /// Newton–Schulz iteration diverged in whitening group `group`: the
    /// residual `‖P Sₙ P − I‖` of iteration `iteration` grew past its start
    /// (round-off amplified by an ill-conditioned covariance, or more
    /// iterations than convergence needs). Fewer iterations, a larger
    /// `epsilon`, or `.eigen` avoid it.
    case whiteningDiverged(group: Int, iteration: Int)
    /// The ranks of a synchronized call were not all in the same call: rank
    /// `rank` (the lowest such) made `actual` (`"backward #12"`: the pass and
    /// its number, the layer's count of training forwards) while this rank
    /// made `expected`: a rank skipped a call, called another pass, or
    /// backpropagated another step's cache. Every rank throws; no state
    /// changes.
    case callMismatch(rank: Int, expected: String, actual: String)
    /// A collective operation of a ``Communicator`` failed: `operation` names
    /// it (e.g. `MPI_Allgather`), `reason` is the transport's message.
    case communicationFailure(operation: String, reason: String)

    /// A sentence naming what was expected and what came.
    public var description: String {
        switch self {
        case let .scalarCountMismatch(shape, count):
            let held = shape.allSatisfy { $0 >= 0 }
                ? Validation.checkedProduct(shape).map { "\($0)" } ?? "more than Int.max"
                : "no"
            return "shape \(shape) holds \(held) scalars, but \(count) were given"
        case let .negativeDimension(shape):
            return "shape \(shape) has a negative dimension"
        case let .shapeOverflow(shape):
            return "shape \(shape) holds more than Int.max scalars"
        case let .invalidShape(expected, actual):
            return "expected an input of shape \(expected), got \(actual)"
        case let .gradientShapeMismatch(expected, actual):
            return "expected an output gradient of shape \(expected) (the forward pass's), got \(actual)"
        case let .parameterCountMismatch(name, expected, actual):
            return "expected \(name) to have \(expected) elements, got \(actual)"
        case let .invalidFeatureCount(count):
            return "expected a feature or channel count greater than 0, got \(count)"
        case let .invalidGroupCount(groups, channels):
            return "expected a group count that divides the channel count \(channels), got \(groups)"
        case let .invalidEpsilon(value):
            return "expected a finite epsilon greater than 0, got \(value)"
        case let .invalidMomentum(value):
            return "expected a momentum in [0, 1], got \(value)"
        case let .insufficientValues(count):
            return "training mode needs at least 2 values per statistic, got \(count)"
        case let .nonFiniteStatistics(index):
            return "the batch statistics at index \(index) are not finite (the input holds NaN or infinity, or overflows; in whitening with epsilon 0, an eigenvalue is zero: data of lower rank)"
        case let .cacheMismatch(expected, actual):
            return "expected a cache filled by the forward pass of \(expected), got one from \(actual)"
        case let .sizeTooLarge(size):
            return "size \(size) exceeds OpenBLAS's limit of \(maximumBLASSize)"
        case let .unsupportedParameter(name, expected):
            return "expected \(name) to be \(expected)"
        case let .bufferCountMismatch(name, expected, actual):
            return "expected \(name) to hold \(expected) scalars, got \(actual)"
        case let .invalidGroupSize(groupSize, featureCount):
            return "expected a group size of at least 1 that divides the feature count \(featureCount), got \(groupSize)"
        case let .invalidIterationCount(count):
            return "expected at least 1 Newton–Schulz iteration, got \(count)"
        case let .invalidComponentCount(components, featureCount):
            return "expected between 1 and \(featureCount) components, got \(components)"
        case let .notPositiveDefinite(group, minor):
            return "expected a positive definite covariance (plus epsilon) in group \(group), "
                + "but its leading minor of order \(minor) is not"
        case let .lapackFailure(routine, info):
            return "expected LAPACK's \(routine) to succeed, got info \(info)"
        case let .invalidNumPyData(expected, found):
            return "expected \(expected), found \(found)"
        case let .fileError(path, reason):
            return "could not access \(path): \(reason)"
        case let .rankFailed(rank):
            return "expected every rank to take part in the synchronized call, but rank \(rank) refused its input or state"
        case let .countOverflow(a, b):
            return "expected counts whose sum fits Int, got \(a) and \(b)"
        case let .whiteningTooLarge(featureCount, groupSize, maximum):
            return "expected featureCount · groupSize of at most \(maximum) scalars, got \(featureCount) · \(groupSize)"
        case let .whiteningDiverged(group, iteration):
            return "expected Newton–Schulz iteration to converge in group \(group), but its residual grew at "
                + "iteration \(iteration) (use fewer iterations, a larger epsilon, or .eigen)"
        case let .callMismatch(rank, expected, actual):
            return "expected every rank in this rank's synchronized \(expected), but rank \(rank) made \(actual)"
        case let .communicationFailure(operation, reason):
            return "expected \(operation) to succeed, got: \(reason)"
        }
    }
}

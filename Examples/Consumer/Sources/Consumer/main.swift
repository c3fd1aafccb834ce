// A numeric app's use of NormKit, end to end. Exits nonzero when a check fails.
import Foundation
import NormKit

var failures = 0
@MainActor func check(_ condition: Bool, _ message: String) {
    print(condition ? "ok    \(message)" : "FAIL  \(message)")
    if !condition { failures += 1 }
}

// 1. The README's loop over memory the app owns, in top-level code (where an
// earlier form of the entry points crashed a release build of the compiler).
var step = NormalizationStep(try BatchNorm<Float>(featureCount: 128))
let shape = [64, 128]
var x = [Float](repeating: 0, count: 64 * 128)
var dy = [Float](repeating: 0, count: 64 * 128)
for iteration in 1...100 {
    for i in x.indices { x[i] = Float((i * 7 + iteration) % 13) * 0.3 }
    try x.withUnsafeBufferPointer { try step.forward($0, shape: shape) }
    step.output.withUnsafeBufferPointer { y in
        for i in dy.indices { dy[i] = y[i] }
    }
    try dy.withUnsafeBufferPointer { try step.backward($0) }
    for j in 0..<128 { step.layer.gamma[j] -= 0.01 * step.gradients.gamma[j] }
}
check(step.layer.gamma.allSatisfy(\.isFinite), "100 training steps give finite parameters")

/// The same loop in a function (local variables, as an app's training code
/// has them), timed: the median step of 200.
func medianStep() throws -> Duration {
    var step = NormalizationStep(try BatchNorm<Float>(featureCount: 128))
    let shape = [64, 128]
    var x = [Float](repeating: 0, count: 64 * 128)
    var dy = [Float](repeating: 0, count: 64 * 128)
    let clock = ContinuousClock()
    var times: [Duration] = []
    for iteration in 1...200 {
        let start = clock.now
        for i in x.indices { x[i] = Float((i * 7 + iteration) % 13) * 0.3 }
        try x.withUnsafeBufferPointer { try step.forward($0, shape: shape) }
        step.output.withUnsafeBufferPointer { y in
            for i in dy.indices { dy[i] = y[i] }
        }
        try dy.withUnsafeBufferPointer { try step.backward($0) }
        for j in 0..<128 { step.layer.gamma[j] -= 0.01 * step.gradients.gamma[j] }
        times.append(clock.now - start)
    }
    return times.sorted()[times.count / 2]
}
#if DEBUG
let build = "debug"
#else
let build = "release"
#endif
print("median step of the README loop (\(build) build, \(Threading.threadCount) threads): \(try medianStep())")

// 2. A constant column normalizes to beta.
var constant = NormalizationStep(try BatchNorm<Double>(featureCount: 3))
constant.layer.beta = [0.25, -1.5, 2]
var batch = (0..<21).map { 0.1 * Double($0 % 7) + 3 }
for row in 0..<7 { batch[row * 3 + 1] = 10000.1 }
try constant.forward(Tensor(batch, shape: [7, 3]))
check((0..<7).allSatisfy { constant.output[$0, 1] == -1.5 }, "a constant column of 10000.1 gives beta exactly")

// 3. A wrong shape is a NormError, and the layer is unchanged.
let before = constant.layer
do {
    try constant.forward(Tensor(shape: [3, 7], repeating: 1))
    check(false, "a wrong shape throws")
} catch {
    check(constant.layer == before, "a wrong shape throws (\(error)) and changes nothing")
}

// 4. State through .npz and JSON.
let path = FileManager.default.temporaryDirectory.appendingPathComponent("consumer-bn.npz").path
var archive = NumPyArchive()
archive["weight"] = NumPyArray(constant.layer.gamma)
archive["bias"] = NumPyArray(constant.layer.beta)
archive["running_mean"] = NumPyArray(constant.layer.runningMean)
archive["running_var"] = NumPyArray(constant.layer.runningVariance)
try archive.write(to: path)
let reloaded = try BatchNorm<Double>(pytorch: NumPyArchive(contentsOf: path))
check(reloaded.runningMean == constant.layer.runningMean, "running statistics round-trip through .npz")
let json = try JSONEncoder().encode(constant.layer)
check(try JSONDecoder().decode(BatchNorm<Double>.self, from: json) == constant.layer, "a layer round-trips through JSON")

// 5. The PyTorch fixture of NormKit's tests, when run from the repository.
let fixture = "../../Tests/NormKitTests/Fixtures/pytorch-batchnorm.npz"
if FileManager.default.fileExists(atPath: fixture) {
    let state = try NumPyArchive(contentsOf: fixture)
    var torchBN = try BatchNorm<Double>(pytorch: state, prefix: "bn1d.")
    let y = try torchBN.forward(state.tensor("bn1d_eval_input"), mode: .inference).output
    let expected: Tensor<Double> = try state.tensor("bn1d_eval_output")
    let error = zip(y.scalars, expected.scalars).map { abs($0 - $1) }.max() ?? .infinity
    check(error < 1e-9, "a BatchNorm1d from PyTorch computes PyTorch's output (max error \(error))")
}

// 6. The Tensor and Span entry points, at top level too: inlined into
// top-level code, a release build of an earlier form of them crashed the
// compiler, so this file stays top-level code.
var ln = try LayerNorm<Float>(featureCount: 16)
var lnOutput = try Tensor<Float>(zeros: [0]), lnCache = NormCache<Float>()
var workspace = Workspace<Float>(), lnGradients = NormGradients<Float>()
let t = try Tensor<Float>(randomNormal: [4, 16], mean: 10000.1, seed: 3)
try ln.forward(t, mode: .training, into: &lnOutput, cache: &lnCache, workspace: &workspace)
try ln.backward(lnOutput, cache: lnCache, into: &lnGradients, workspace: &workspace)
let scalars = t.scalars
var spanned = [Float](repeating: .nan, count: 64)
do {   // spans are local: they may not outlive the arrays they view
    var outputSpan = spanned.mutableSpan
    try ln.forward(scalars.span, shape: [4, 16], mode: .training, into: &outputSpan, cache: &lnCache,
                   workspace: &workspace)
}
check(spanned == lnOutput.scalars, "the Span entry point gives the Tensor entry point's output")
var short = [Float](repeating: 0, count: 63)
do throws(NormError) {
    var wrong = short.mutableSpan
    try ln.forward(scalars.span, shape: [4, 16], mode: .training, into: &wrong, cache: &lnCache,
                   workspace: &workspace)
    check(false, "a short output span throws")
} catch {
    check(error == .bufferCountMismatch(name: "output", expected: 64, actual: 63),
          "a short output span throws (\(error))")
}

exit(failures == 0 ? 0 : 1)

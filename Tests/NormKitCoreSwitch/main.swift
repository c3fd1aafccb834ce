// BLASRuntime.useAdvisedCore() in a process of its own (it changes OpenBLAS's
// kernels for the whole process, so the test suite runs it here, not in its
// own process): the same layers' outputs before and after, through OpenBLAS on
// two threads. Prints one line per step; exit status 0 when every check passed.
import Glibc
import NormKit

var failures = 0
@MainActor func check(_ condition: Bool, _ message: String) {
    if !condition {
        failures += 1
        print("FAILED: \(message)")
    }
}

/// A BatchNorm and a LayerNorm training forward and a whitening forward
/// (`?syevd` and `?gemm`), on inputs whose sums are not exact in binary.
func outputs() throws -> [[Double]] {
    let shape = [37, 1029]
    var x = try Tensor<Float>(randomNormal: shape, mean: 0, standardDeviation: 2, seed: 7)
    x.withUnsafeMutableBufferPointer { for i in $0.indices { $0[i] += 10000.1 } }
    var batch = try BatchNorm<Float>(featureCount: 1029)
    var rows = try LayerNorm<Float>(featureCount: 1029)
    let w = try Tensor<Double>(randomNormal: [64, 24], mean: 1.5, standardDeviation: 3, seed: 8)
    var whitening = try DecorrelatedBatchNorm<Double>(featureCount: 24, groupSize: 12)
    return [try batch.forward(x, mode: .training).output.scalars.map(Double.init),
            try rows.forward(x, mode: .training).output.scalars.map(Double.init),
            try whitening.forward(w, mode: .training).output.scalars]
}

BLASRuntime.threadCount = 2
let preset = getenv("OPENBLAS_CORETYPE") != nil
let advice = BLASRuntime.coreAdvice
print("before: OpenBLAS \(BLASRuntime.coreName); CPU \(BLASRuntime.cpuVectorLevel); advice: "
      + (advice.map { "\($0.recommended)" } ?? "none"))
do {
    let before = try outputs()
    let selection = BLASRuntime.useAdvisedCore()
    print("selection: \(selection)")
    let after = try outputs()
    print("after: OpenBLAS \(BLASRuntime.coreName)")
    switch selection {
    case .switched(let from, let to):
        check(advice != nil && from == advice?.chosen, "switched without advice, or from another core")
        check(to == BLASRuntime.coreName, "the selection names \(to), OpenBLAS \(BLASRuntime.coreName)")
        check(BLASRuntime.coreAdvice == nil, "advice remains after the switch")
        check(BLASRuntime.useAdvisedCore() == .unchanged(core: to), "a second call changed something")
    case .unchanged(let core):
        check(advice == nil && core == BLASRuntime.coreName, "unchanged despite advice")
    case .declined(let reason):
        check(advice != nil, "declined without advice")
        // Declining is right only where whoever started the process chose the
        // kernels, or for a library without run-time selection (not where
        // OpenBLAS, asked again, chose the same kernels: the advice is for
        // kernels this CPU runs).
        check(preset ? reason.contains("OPENBLAS_CORETYPE is set")
                     : reason.contains("DYNAMIC_ARCH") && !BLASRuntime.configuration.contains("DYNAMIC_ARCH"),
              "declined (\(reason)) with \(BLASRuntime.configuration)")
    }
    check(preset || getenv("OPENBLAS_CORETYPE") == nil, "OPENBLAS_CORETYPE left set")
    check(BLASRuntime.threadCount == 2, "OpenBLAS's thread count changed")
    for (name, (old, new)) in zip(["BatchNorm", "LayerNorm", "DecorrelatedBatchNorm"], zip(before, after)) {
        let worst = zip(old, new).map { abs($0 - $1) }.max() ?? .nan
        // Sums in another order move a mean of 10000.1 by a few units in its
        // last place (Float: 2^-10), and every output by that over the
        // standard deviation, 2; whitening's Double outputs by a few roundings.
        let bound = name == "DecorrelatedBatchNorm" ? 1e-9 : 8 * Double(Float(10000.1).ulp) / 2
        check(old.count == new.count && new.allSatisfy(\.isFinite) && worst <= bound,
              "\(name): outputs moved by \(worst) (bound \(bound))")
        print("\(name): largest change \(worst)")
    }
} catch {
    check(false, "threw \(error)")
}
print(failures == 0 ? "all passed" : "\(failures) failed")
exit(failures == 0 ? 0 : 1)

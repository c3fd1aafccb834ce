import NormKit

/// One benchmarked pass of one layer, over buffers allocated once.
struct Case {
    var op: String
    var pass: String
    /// DESIGN.md §4's memory traffic per Float element for this pass (scaled by
    /// the scalar size for Double): the least the pass must move.
    var bytesPerFloatElement: Int
    var run: () throws -> Void
}

/// The passes of every (N, D) layer at one shape, for one dtype and backend.
/// Every closure calls the allocation-free entry point on preallocated buffers.
func matrixCases<S: BLASScalar>(
    _: S.Type, rows: Int, columns: Int, backend: Backend, ops: Set<String>
) throws -> [Case] {
    let shape = [rows, columns]
    let x = Tensor<S>(randomNormal: shape, mean: 12, standardDeviation: 5, seed: 1)
    let dy = Tensor<S>(randomNormal: shape, seed: 2)
    var cases: [Case] = []

    if ops.contains("batchnorm") {
        var bn = try BatchNorm<S>(featureCount: columns, backend: backend)
        var output = Tensor<S>(zeros: [0]), cache = NormCache<S>(), workspace = Workspace<S>()
        var inferenceCache = NormCache<S>()
        var gradients = NormGradients<S>()
        try bn.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
        let trained = cache
        cases.append(Case(op: "batchnorm", pass: "forward-training", bytesPerFloatElement: 12) {
            try bn.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
        })
        cases.append(Case(op: "batchnorm", pass: "forward-inference", bytesPerFloatElement: 8) {
            try bn.forward(x, mode: .inference, into: &output, cache: &inferenceCache,
                           workspace: &workspace)
        })
        cases.append(Case(op: "batchnorm", pass: "backward", bytesPerFloatElement: 20) {
            try bn.backward(dy, cache: trained, into: &gradients, workspace: &workspace)
        })
        cases.append(Case(op: "batchnorm", pass: "backward-graph", bytesPerFloatElement: 20) {
            try bn.backwardThroughGraph(dy, cache: trained, into: &gradients, workspace: &workspace)
        })
    }
    if ops.contains("layernorm") {
        var ln = try LayerNorm<S>(featureCount: columns, backend: backend)
        var output = Tensor<S>(zeros: [0]), cache = NormCache<S>(), workspace = Workspace<S>()
        var gradients = NormGradients<S>()
        try ln.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
        let trained = cache
        cases.append(Case(op: "layernorm", pass: "forward", bytesPerFloatElement: 8) {
            try ln.forward(x, mode: .training, into: &output, cache: &cache, workspace: &workspace)
        })
        cases.append(Case(op: "layernorm", pass: "backward", bytesPerFloatElement: 12) {
            try ln.backward(dy, cache: trained, into: &gradients, workspace: &workspace)
        })
    }
    return cases
}

import NormKit
import Testing

/// Caches that know their layer (issue 9): backward with a cache from any other
/// layer, size, layout or group count throws `cacheMismatch`, never a gradient.
@Suite("Cache origin")
struct CacheOriginTests {
    /// A layer with the input it takes, behind closures.
    struct Case: CustomStringConvertible {
        let description: String
        let origin: CacheOrigin
        let input: [Int]
        let layer: AnyLayer<Double>
    }

    static func cases() throws -> [Case] {
        let matrix = [5, 5], nchw = [2, 4, 3, 5], nhwc = [2, 3, 5, 4]
        return [
            Case(description: "BatchNorm(5)", origin: .batchNorm(featureCount: 5), input: matrix,
                 layer: AnyLayer(try BatchNorm<Double>(featureCount: 5))),
            Case(description: "BatchNorm(6)", origin: .batchNorm(featureCount: 6), input: [5, 6],
                 layer: AnyLayer(try BatchNorm<Double>(featureCount: 6))),
            Case(description: "LayerNorm(5)", origin: .layerNorm(featureCount: 5), input: matrix,
                 layer: AnyLayer(try LayerNorm<Double>(featureCount: 5))),
            Case(description: "RMSNorm(5)", origin: .rmsNorm(featureCount: 5), input: matrix,
                 layer: AnyLayer(try RMSNorm<Double>(featureCount: 5))),
            Case(description: "SpatialBatchNorm(4, nchw)",
                 origin: .spatialBatchNorm(channelCount: 4, layout: .nchw), input: nchw,
                 layer: AnyLayer(try SpatialBatchNorm<Double>(channelCount: 4))),
            Case(description: "SpatialBatchNorm(4, nhwc)",
                 origin: .spatialBatchNorm(channelCount: 4, layout: .nhwc), input: nhwc,
                 layer: AnyLayer(try SpatialBatchNorm<Double>(channelCount: 4, layout: .nhwc))),
            Case(description: "GroupNorm(4, 2)", origin: .groupNorm(channelCount: 4, groupCount: 2),
                 input: nchw, layer: AnyLayer(try GroupNorm<Double>(channelCount: 4, groupCount: 2))),
            Case(description: "GroupNorm(4, 4)", origin: .groupNorm(channelCount: 4, groupCount: 4),
                 input: nchw, layer: AnyLayer(try GroupNorm<Double>(channelCount: 4, groupCount: 4))),
            Case(description: "InstanceNorm(4)", origin: .instanceNorm(channelCount: 4), input: nchw,
                 layer: AnyLayer(try InstanceNorm<Double>(channelCount: 4))),
        ]
    }

    /// Runs `body` and returns the `NormError` it threw, or `nil`.
    func thrown(_ body: () throws -> Void) -> NormError? {
        do { try body() } catch let error as NormError { return error } catch { return nil }
        return nil
    }

    @Test("every layer refuses every other layer's cache, and accepts its own")
    func everyPair() throws {
        let cases = try Self.cases()
        for source in cases {
            let x: Tensor<Double> = randomInput(source.input, seed: 3)
            let (_, cache) = try source.layer.forward(x)
            #expect(cache.origin == source.origin, "\(source)")
            let dy: Tensor<Double> = randomInput(source.input, scale: 1, shift: 0, seed: 4)
            for target in cases {
                if target.origin == source.origin {
                    #expect(throws: Never.self) { _ = try target.layer.backward(dy, cache) }
                    continue
                }
                let error = thrown { _ = try target.layer.backward(dy, cache) }
                #expect(error == .cacheMismatch(expected: target.origin.description,
                                                actual: source.origin.description),
                        "\(target) with a cache of \(source): \(String(describing: error))")
            }
        }
    }

    @Test("SpatialBatchNorm switched from nchw to nhwc refuses its own nchw cache")
    func layoutSwitch() throws {
        var layer = try SpatialBatchNorm<Double>(channelCount: 3)
        let x: Tensor<Double> = randomInput([2, 3, 3, 3], seed: 8)
        let (_, cache) = try layer.forward(x, mode: .training)
        layer.layout = .nhwc
        let dy: Tensor<Double> = randomInput([2, 3, 3, 3], scale: 1, shift: 0, seed: 9)
        let error = thrown { _ = try layer.backward(dy, cache: cache) }
        #expect(error == .cacheMismatch(
            expected: "SpatialBatchNorm(channelCount: 3, layout: .nhwc)",
            actual: "SpatialBatchNorm(channelCount: 3, layout: .nchw)"))
        #expect(error?.description.contains("layout: .nhwc") == true)
    }

    @Test("an empty cache, and one whose forward pass threw, are refused")
    func emptyAndFailed() throws {
        var layer = try LayerNorm<Double>(featureCount: 4)
        let dy = try Tensor<Double>(shape: [2, 4], scalars: Array(repeating: 0.5, count: 8))
        var gradients = NormGradients<Double>()
        var workspace = Workspace<Double>()
        var cache = NormCache<Double>()
        #expect(thrown { try layer.backward(dy, cache: cache, into: &gradients, workspace: &workspace) }
                == .cacheMismatch(expected: "LayerNorm(featureCount: 4)", actual: CacheOrigin.none.description))
        var output = try Tensor<Double>(shape: [2, 4], scalars: Array(repeating: 0, count: 8))
        let good: Tensor<Double> = randomInput([2, 4], seed: 1)
        try layer.forward(good, mode: .training, into: &output, cache: &cache, workspace: &workspace)
        #expect(cache.origin == .layerNorm(featureCount: 4))
        var bad = good.scalars
        bad[5] = .infinity
        #expect(thrown {
            try layer.forward(try Tensor(shape: [2, 4], scalars: bad), mode: .training,
                              into: &output, cache: &cache, workspace: &workspace)
        } == .nonFiniteStatistics(index: 1))
        #expect(cache.origin == CacheOrigin.none)
        #expect(thrown { try layer.backward(dy, cache: cache, into: &gradients, workspace: &workspace) }
                == .cacheMismatch(expected: "LayerNorm(featureCount: 4)", actual: CacheOrigin.none.description))
    }
}

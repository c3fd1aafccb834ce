import Foundation
import NormKit
import Testing

/// Encodes `layer` as JSON and decodes it back.
private func roundTrip<L: Codable>(_ layer: L) throws -> L {
    try JSONDecoder().decode(L.self, from: JSONEncoder().encode(layer))
}

/// `layer`'s JSON with `key` replaced by `value` (a JSON fragment).
private func json<L: Encodable>(_ layer: L, replacing key: String, with value: Any) throws -> Data {
    var object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(layer)) as! [String: Any]
    object[key] = value
    return try JSONSerialization.data(withJSONObject: object)
}

@Suite("Layer state")
struct LayerStateTests {
    func trained<S: BLASScalar>(_: S.Type) throws -> (BatchNorm<S>, SpatialBatchNorm<S>) {
        var bn = try BatchNorm<S>(featureCount: 5, momentum: 0.7, varianceEstimator: .unbiased, backend: .naive)
        var sbn = try SpatialBatchNorm<S>(channelCount: 3, epsilon: 1e-3, layout: .nhwc)
        _ = try bn.forward(randomInput([9, 5], scale: 3, shift: 10000.1, seed: 1), mode: .training)
        _ = try sbn.forward(randomInput([2, 3, 5, 3], scale: 2, shift: 0.1, seed: 2), mode: .training)
        bn.gamma = randomVector(5, seed: 3)
        sbn.beta = randomVector(3, seed: 4)
        return (bn, sbn)
    }

    func roundTripsEveryLayer<S: BLASScalar>(_ type: S.Type) throws {
        let (bn, sbn) = try trained(type)
        let bnBack = try roundTrip(bn)
        #expect(bnBack == bn && bits(bnBack.runningVariance) == bits(bn.runningVariance))
        #expect(try roundTrip(sbn) == sbn)
        var ln = try LayerNorm<S>(featureCount: 7, epsilon: 1e-4)
        ln.gamma = randomVector(7, seed: 5)
        #expect(try roundTrip(ln) == ln)
        var rms = try RMSNorm<S>(featureCount: 4, backend: .naive)
        rms.gamma = randomVector(4, seed: 6)
        #expect(try roundTrip(rms) == rms)
        var gn = try GroupNorm<S>(channelCount: 6, groupCount: 3)
        gn.beta = randomVector(6, seed: 7)
        #expect(try roundTrip(gn) == gn)
        let inorm = try InstanceNorm<S>(channelCount: 2, epsilon: 0.25)
        #expect(try roundTrip(inorm) == inorm)
        var dbn = try DecorrelatedBatchNorm<S>(featureCount: 6, groupSize: 3, method: .newtonSchulz(iterations: 4))
        _ = try dbn.forward(randomInput([9, 6], scale: 2, shift: 0.3, seed: 9), mode: .training)
        #expect(try roundTrip(dbn) == dbn)
        // A decoded layer computes what the original does.
        var a = bn, b = bnBack
        let x: Tensor<S> = randomInput([4, 5], seed: 8)
        #expect(try a.forward(x, mode: .inference).output == b.forward(x, mode: .inference).output)
    }

    @Test("every layer round-trips through Codable, bit for bit, and equals itself")
    func roundTrips() throws {
        try roundTripsEveryLayer(Float.self)
        try roundTripsEveryLayer(Double.self)
    }

    @Test("decoding refuses what init and forward would refuse")
    func decodingValidates() throws {
        let (bn, _) = try trained(Double.self)
        let decoder = JSONDecoder()
        for (key, value) in [("gamma", [1.0, 2.0] as Any), ("runningVariance", [1.0] as Any),
                             ("epsilon", -1.0 as Any), ("momentum", 1.5 as Any),
                             ("featureCount", 0 as Any), ("backend", "gpu" as Any)] {
            #expect(throws: DecodingError.self) {
                try decoder.decode(BatchNorm<Double>.self, from: json(bn, replacing: key, with: value))
            }
        }
        let gn = try GroupNorm<Float>(channelCount: 6, groupCount: 3)
        #expect(throws: DecodingError.self) {
            try decoder.decode(GroupNorm<Float>.self, from: json(gn, replacing: "groupCount", with: 4))
        }
        let ln = try LayerNorm<Float>(featureCount: 3)
        #expect(throws: DecodingError.self) {
            try decoder.decode(LayerNorm<Float>.self, from: json(ln, replacing: "beta", with: [0.5]))
        }
        let dbn = try DecorrelatedBatchNorm<Double>(featureCount: 4, groupSize: 2)
        for (key, value) in [("groupSize", 3 as Any), ("runningWhitening", [1.0, 0.0] as Any)] {
            #expect(throws: DecodingError.self) {
                try decoder.decode(DecorrelatedBatchNorm<Double>.self, from: json(dbn, replacing: key, with: value))
            }
        }
    }
}

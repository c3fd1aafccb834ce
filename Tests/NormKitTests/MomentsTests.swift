import Foundation
import NormKit
import Testing

@Suite("Moments")
struct MomentsTests {
    /// Rows `range` of an `(N, D)` tensor.
    func rows(_ t: Tensor<Double>, _ range: Range<Int>) throws -> Tensor<Double> {
        let d = t.shape[1]
        return try Tensor(Array(t.scalars[(range.lowerBound * d)..<(range.upperBound * d)]),
                          shape: [range.count, d])
    }

    @Test("merging uneven parts (5, 0 and 12 rows) gives the whole batch's moments, in any split")
    func mergeEqualsWhole() throws {
        let x: Tensor<Double> = randomInput([17, 7], scale: 3, shift: 10000.1, seed: 3)
        let whole = try Moments(columnsOf: x)
        var merged = try Moments<Double>(count: 0, mean: Array(repeating: 0, count: 7),
                                         m2: Array(repeating: 0, count: 7))
        for part in [0..<5, 5..<5, 5..<17] { try merged.merge(Moments(columnsOf: rows(x, part))) }
        #expect(merged.count == 17)
        #expect(normwiseError(merged.mean, whole.mean) < 1e-15)
        #expect(normwiseError(merged.m2, whole.m2) < 1e-12)
        // The variance is BatchNorm's batch variance.
        var bn = try BatchNorm<Double>(featureCount: 7, momentum: 0)
        _ = try bn.forward(x, mode: .training)
        #expect(normwiseError(merged.variance, bn.runningVariance) < 1e-12)
        #expect(normwiseError(merged.mean, bn.runningMean) < 1e-15)
    }

    @Test("count 0 is the identity, bit for bit, on either side")
    func identity() throws {
        let m = try Moments(columnsOf: randomInput([9, 4], scale: 2, shift: 0.3, seed: 4) as Tensor<Double>)
        var left = try Moments<Double>(count: 0, mean: [0.5, 1, 2, 3], m2: [0, 0, 0, 0])
        try left.merge(m)
        #expect(left == m)
        var right = m
        try right.merge(Moments(count: 0, mean: [7, 7, 7, 7], m2: [1, 1, 1, 1]))
        #expect(right == m)
        // A constant column: mean its value, M2 exactly 0.
        let constant = try Moments(columnsOf: Tensor<Float>(shape: [11, 2], repeating: 10000.1))
        #expect(constant.mean == [10000.1, 10000.1] && constant.m2 == [0, 0])
    }

    @Test("moments refuse mismatched sizes, and round-trip through Codable")
    func errorsAndCodable() throws {
        #expect(throws: NormError.invalidFeatureCount(-1)) { try Moments<Float>(count: -1, mean: [], m2: []) }
        #expect(throws: NormError.parameterCountMismatch(name: "m2", expected: 2, actual: 1)) {
            try Moments<Float>(count: 3, mean: [1, 2], m2: [1])
        }
        var a = try Moments<Float>(count: 3, mean: [1, 2], m2: [1, 1])
        let before = a
        #expect(throws: NormError.parameterCountMismatch(name: "mean", expected: 2, actual: 3)) {
            try a.merge(Moments(count: 1, mean: [1, 2, 3], m2: [0, 0, 0]))
        }
        #expect(a == before)
        let back = try JSONDecoder().decode(Moments<Float>.self, from: JSONEncoder().encode(a))
        #expect(back == a)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(Moments<Float>.self, from: Data(#"{"count":2,"mean":[1,2],"m2":[0]}"#.utf8))
        }
        #expect(throws: NormError.invalidShape(expected: "(N, D)", actual: [2, 2, 2])) {
            try Moments(columnsOf: Tensor<Float>(shape: [2, 2, 2], repeating: 1))
        }
    }

    @Test("SingleProcess is rank 0 of 1, and its collectives return their input")
    func singleProcess() throws {
        let world = SingleProcess()
        #expect(world.rank == 0 && world.size == 1)
        #expect(try world.allGather([1.5, 2.5]) == [1.5, 2.5])
        var values: [Float] = [3, 4]
        try world.allReduceSum(&values)
        #expect(values == [3, 4])
    }
}

import Foundation
import NormKit
import Testing

@Suite("Tensor")
struct TensorTests {
    @Test("multi-index subscripts read and write row-major positions in place")
    func subscripts() throws {
        var t = try Tensor<Double>((0..<24).map { 0.1 * Double($0) + 0.3 }, shape: [2, 3, 4])
        #expect(t[1, 2, 3] == t.scalars[1 * 12 + 2 * 4 + 3])
        #expect(t[0, 1, 0] == t.scalars[4])
        t[1, 0, 2] = 10000.1
        #expect(t.scalars[14] == 10000.1)
        #expect(t.shape == [2, 3, 4])
    }

    @Test("scalars are settable; another count makes the tensor one-dimensional")
    func settableScalars() throws {
        var t = try Tensor<Float>(shape: [3, 5], repeating: 0.1)
        t.scalars[7] = 2.5
        #expect(t.shape == [3, 5] && t.scalars[7] == 2.5)
        t.scalars = Array(repeating: 1.5, count: 15)
        #expect(t.shape == [3, 5])
        t.scalars.append(3)
        #expect(t.shape == [16] && t.count == 16)
        t.scalars = [1, 2, 3]
        #expect(t.shape == [3] && t.scalars == [1, 2, 3])
    }

    @Test("init(_:shape:) and init(shape:repeating:) check the shape and throw")
    func initializers() throws {
        #expect(throws: NormError.scalarCountMismatch(shape: [2, 3], scalarCount: 5)) {
            try Tensor<Float>([1, 2, 3, 4, 5], shape: [2, 3])
        }
        #expect(throws: NormError.negativeDimension(shape: [-1, 4])) {
            try Tensor<Float>(shape: [-1, 4], repeating: 1)
        }
        #expect(throws: NormError.shapeOverflow(shape: [Int.max, 3])) {
            try Tensor<Double>(shape: [Int.max, 3], repeating: 1)
        }
        let line = Tensor<Double>([0.1, 0.2, 0.3])
        #expect(line.shape == [3])
        let filled = try Tensor<Double>(shape: [2, 0, 7], repeating: 0.3)
        #expect(filled.count == 0)
    }

    @Test("reshaped keeps the scalars, infers one -1 and refuses other counts")
    func reshape() throws {
        let t = try Tensor<Double>((0..<12).map { Double($0) + 0.1 }, shape: [3, 4])
        let r = try t.reshaped([2, -1, 3])
        #expect(r.shape == [2, 2, 3] && r.scalars == t.scalars)
        #expect(try t.reshaped([12]).shape == [12])
        #expect(throws: NormError.scalarCountMismatch(shape: [5, 2], scalarCount: 12)) {
            try t.reshaped([5, 2])
        }
        #expect(throws: NormError.scalarCountMismatch(shape: [5, -1], scalarCount: 12)) {
            try t.reshaped([5, -1])
        }
        #expect(throws: NormError.negativeDimension(shape: [-1, -1])) { try t.reshaped([-1, -1]) }
        #expect(throws: NormError.scalarCountMismatch(shape: [0, -1], scalarCount: 12)) {
            try t.reshaped([0, -1])
        }
    }

    @Test("description prints the values nested by dimension, elided past 1,000")
    func description() throws {
        let small = try Tensor<Double>([1.5, 2, 3, 4.25], shape: [2, 2])
        #expect(small.description == "Tensor<Double>([[1.5, 2.0], [3.0, 4.25]], shape: [2, 2])")
        let large = try Tensor<Float>((0..<2000).map { Float($0) }, shape: [2, 1000])
        #expect(large.description
                == "Tensor<Float>([[0.0, 1.0, 2.0, ..., 997.0, 998.0, 999.0], "
                + "[1000.0, 1001.0, 1002.0, ..., 1997.0, 1998.0, 1999.0]], shape: [2, 1000])")
        #expect(Tensor<Float>([]).description == "Tensor<Float>([], shape: [0])")
    }

    @Test("Codable round-trips and refuses data that is not a tensor; Hashable agrees with ==")
    func codable() throws {
        let t: Tensor<Double> = try Tensor(randomNormal: [3, 7], mean: 10000.1, seed: 4)
        let data = try JSONEncoder().encode(t)
        let back = try JSONDecoder().decode(Tensor<Double>.self, from: data)
        #expect(back == t && back.hashValue == t.hashValue)
        let bad = Data(#"{"shape":[2,3],"scalars":[1,2,3]}"#.utf8)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Tensor<Float>.self, from: bad) }
        #expect(Set([t, back]).count == 1)
    }
}

@Suite("Tensor axes and scalar types")
struct TensorPermutationTests {
    /// The row-major offset of `index` in `shape`.
    func offset(_ index: [Int], _ shape: [Int]) -> Int {
        zip(index, shape).reduce(0) { $0 * $1.1 + $1.0 }
    }

    @Test("permuted moves every element to its permuted index, for ranks 0-5 and empty extents")
    func permutedMatchesIndexFormula() throws {
        let cases: [([Int], [Int])] = [([], []), ([7], [0]), ([3, 5], [1, 0]), ([2, 3, 4], [2, 0, 1]),
                                      ([2, 3, 5, 7], [0, 2, 3, 1]), ([2, 3, 5, 7], [0, 3, 1, 2]),
                                      ([3, 1, 4, 2, 5], [4, 2, 0, 3, 1]), ([2, 0, 3], [2, 1, 0])]
        for (shape, axes) in cases {
            let t = try Tensor<Double>(randomNormal: shape, mean: 10000.1, seed: 5)
            let p = try t.permuted(axes)
            #expect(p.shape == axes.map { shape[$0] })
            // Walk every index of the result.
            var index = [Int](repeating: 0, count: shape.count)
            for position in 0..<p.count {
                var source = [Int](repeating: 0, count: shape.count)
                for k in axes.indices { source[axes[k]] = index[k] }
                #expect(p.scalars[position] == t.scalars[offset(source, shape)])
                var axis = index.count - 1
                while axis >= 0 { index[axis] += 1; if index[axis] < p.shape[axis] { break }; index[axis] = 0; axis -= 1 }
            }
            // The inverse permutation restores the tensor.
            var inverse = axes
            for k in axes.indices { inverse[axes[k]] = k }
            #expect(try p.permuted(inverse) == t)
        }
        // NCHW to NHWC, as SpatialBatchNorm's two layouts see the same batch.
        let nchw = try Tensor<Float>(randomNormal: [2, 3, 4, 5], seed: 1)
        var bnFirst = try SpatialBatchNorm<Float>(channelCount: 3)
        var bnLast = try SpatialBatchNorm<Float>(channelCount: 3, layout: .nhwc)
        let yFirst = try bnFirst.forward(nchw, mode: .training).output
        let yLast = try bnLast.forward(nchw.permuted([0, 2, 3, 1]), mode: .training).output
        let back = try yLast.permuted([0, 3, 1, 2])
        #expect(zip(back.scalars, yFirst.scalars).allSatisfy { abs($0 - $1) <= 1e-5 })
    }

    @Test("permuted refuses axes that are not a permutation, naming them")
    func permutedRefusesBadAxes() throws {
        let t = try Tensor<Float>(randomNormal: [2, 3, 4], seed: 1)
        for axes in [[0, 1], [0, 1, 1], [0, 1, 3], [-1, 0, 1], [0, 1, 2, 3]] {
            #expect(throws: NormError.invalidShape(expected: "a permutation of the 3 axes 0..<3", actual: axes)) {
                try t.permuted(axes)
            }
        }
    }

    @Test("Tensor<Double>(Tensor<Float>) widens exactly; Tensor<Float>(Tensor<Double>) rounds to nearest")
    func convertsScalarType() throws {
        let f = try Tensor<Float>([10000.1, -0.3, .infinity, .leastNonzeroMagnitude], shape: [2, 2])
        let d = Tensor<Double>(f)
        #expect(d.shape == [2, 2] && d.scalars == f.scalars.map(Double.init))
        #expect(Tensor<Float>(d) == f)
        let fine = try Tensor<Double>([10000.1, 1e300, 0.1 + 0.2], shape: [3])
        let rounded = Tensor<Float>(fine)
        #expect(rounded.scalars == [Float(10000.1), .infinity, Float(0.1 + 0.2)])
        #expect(Double(rounded.scalars[0]) != 10000.1)
    }
}

import CNormKitPasses
import Foundation
import NormKit
import Testing

/// The two storage types under test, with what the tests need of them.
protocol TestStorage: ReducedPrecision, Equatable {
    init(_ value: Float)
    var float: Float { get }
    var bits: UInt16 { get }
    static var name: String { get }
    static func from(bits: UInt16) -> Self
}

extension Float16: TestStorage {
    var float: Float { Float(self) }
    var bits: UInt16 { bitPattern }
    static var name: String { "Float16" }
    static func from(bits: UInt16) -> Float16 { Float16(bitPattern: bits) }
}

extension BFloat16: TestStorage {
    var float: Float { Float(self) }
    var bits: UInt16 { bitPattern }
    static var name: String { "BFloat16" }
    static func from(bits: UInt16) -> BFloat16 { BFloat16(bitPattern: bits) }
}

/// The distance in units in the last place between two 16-bit values of one
/// sign-magnitude format (0 between +0 and -0); `Int.max` if either is NaN.
func ulpDistance<S: TestStorage>(_ a: S, _ b: S) -> Int {
    if a.float.isNaN || b.float.isNaN { return a.float.isNaN && b.float.isNaN ? 0 : .max }
    func key(_ bits: UInt16) -> Int {
        let magnitude = Int(bits & 0x7fff)
        return bits & 0x8000 != 0 ? -magnitude : magnitude
    }
    return abs(key(a.bits) - key(b.bits))
}

/// Inputs as 16-bit values: `scale * randn + shift`, each rounded to `S`.
func reducedInput<S: TestStorage>(_ count: Int, scale: Double, shift: Double, seed: UInt64) -> [S] {
    let values: [Float] = randomVector(count, scale: scale, shift: shift, seed: seed)
    return values.map { S($0) }
}

/// LayerNorm's (`centred`) or RMSNorm's forward and backward in `Double` on
/// the widened 16-bit values: `y`, `dx`, `dgamma`, `dbeta`, and for each
/// element the size of the terms it is a difference of (`y`: `x·s·g`, `m·s·g`
/// and `beta`, of which Float's statistics err by a few rounding errors).
func rowReference<S: TestStorage>(
    x: [S], dy: [S], rows: Int, columns: Int, gamma: [Float], beta: [Float], epsilon: Double,
    centred: Bool
) -> (y: [Double], yScale: [Double], dx: [Double], dxScale: [Double], dgamma: [Double], dbeta: [Double],
      dgammaScale: [Double], dbetaScale: [Double]) {
    var y = [Double](repeating: 0, count: rows * columns), yScale = y, dx = y, dxScale = y
    var dgamma = [Double](repeating: 0, count: columns), dbeta = dgamma
    var dgammaScale = dgamma, dbetaScale = dgamma
    let d = Double(columns)
    for i in 0..<rows {
        let xi = (0..<columns).map { Double(x[i * columns + $0].float) }
        let gi = (0..<columns).map { Double(dy[i * columns + $0].float) }
        let m = centred ? xi.reduce(0, +) / d : 0
        let v = xi.map { ($0 - m) * ($0 - m) }.reduce(0, +) / d
        let s = 1 / (v + epsilon).squareRoot()
        let xhat = xi.map { ($0 - m) * s }
        let dxhat = (0..<columns).map { gi[$0] * Double(gamma[$0]) }
        let meanDxhat = centred ? dxhat.reduce(0, +) / d : 0
        let meanDxhatXhat = zip(dxhat, xhat).map(*).reduce(0, +) / d
        let rowScale = s * (dxhat.map(abs).max() ?? 0)
        for j in 0..<columns {
            y[i * columns + j] = xhat[j] * Double(gamma[j]) + Double(beta[j])
            yScale[i * columns + j] = (abs(xi[j]) + abs(m)) * s * abs(Double(gamma[j]))
                + abs(Double(beta[j]))
            dx[i * columns + j] = s * (dxhat[j] - meanDxhat - xhat[j] * meanDxhatXhat)
            dxScale[i * columns + j] = rowScale
            dgamma[j] += gi[j] * xhat[j]
            dgammaScale[j] += abs(gi[j] * xhat[j])
            dbeta[j] += centred ? gi[j] : 0
            dbetaScale[j] += abs(gi[j])
        }
    }
    return (y, yScale, dx, dxScale, dgamma, dbeta, dgammaScale, dbetaScale)
}

/// How many outputs are 0 and 1 ulp from the rounded reference, and the
/// elements beyond: more than 1 ulp and, where the reference is within
/// `absolute` of zero, further than `absolute` from it.
struct UlpCount: CustomStringConvertible {
    var zero = 0, one = 0, nearZero = 0
    var failures: [String] = []

    mutating func add<S: TestStorage>(_ got: S, reference: Double, absolute: Double, at index: Int) {
        let rounded = S(Float(reference))
        let distance = ulpDistance(got, rounded)
        if distance == 0 {
            zero += 1
        } else if distance == 1 {
            one += 1
        } else if abs(Double(got.float) - reference) <= absolute {
            nearZero += 1
        } else if failures.count < 5 {
            failures.append("[\(index)] \(got.float) vs \(reference) (\(distance) ulp)")
        }
    }

    var description: String { "\(zero) at 0 ulp, \(one) at 1 ulp, \(nearZero) near zero" }
}

/// A 16-bit backward over arrays.
func reducedBackward<L: ReducedPrecisionLayer, S: ReducedPrecision>(
    _ layer: L, _ dy: [S], _ cache: NormCache<Float>, _ dx: inout [S], _ dgamma: inout [Float],
    _ dbeta: inout [Float], _ workspace: inout Workspace<Float>
) throws {
    try dy.withUnsafeBufferPointer { g in
        try dx.withUnsafeMutableBufferPointer { d in
            try dgamma.withUnsafeMutableBufferPointer { dg in
                try dbeta.withUnsafeMutableBufferPointer { db in
                    try layer.backward(g, cache: cache, inputGradient: d, gammaGradient: dg,
                                       betaGradient: db, workspace: &workspace)
                }
            }
        }
    }
}

/// A 16-bit training forward over arrays.
func reducedForward<L: ReducedPrecisionLayer, S: ReducedPrecision>(
    _ layer: inout L, _ x: [S], shape: [Int], _ y: inout [S], _ cache: inout NormCache<Float>,
    _ workspace: inout Workspace<Float>, mode: Mode = .training
) throws {
    try x.withUnsafeBufferPointer { xb in
        try y.withUnsafeMutableBufferPointer { yb in
            try layer.forward(xb, shape: shape, mode: mode, into: yb, cache: &cache,
                              workspace: &workspace)
        }
    }
}

@Suite("16-bit storage")
struct ReducedPrecisionTests {
    // MARK: The types

    @Test("BFloat16 rounds to nearest even, keeps NaN and overflows to infinity")
    func bfloat16Rounding() {
        #expect(Float(BFloat16(1.00390625)) == 1)                 // tie, to even
        #expect(Float(BFloat16(1.01171875)) == 1.015625)          // tie, to even (up)
        #expect(Float(BFloat16(Float(bitPattern: 0x3f80_8001))) == 1.0078125)  // just above the tie
        #expect(BFloat16(-0.0).bitPattern == 0x8000)
        #expect(Float(BFloat16(Float.greatestFiniteMagnitude)) == .infinity)
        #expect(Float(BFloat16(3.3895314e38)) == 3.3895314e38)    // the largest finite
        let nan = BFloat16(Float(bitPattern: 0xffa0_1234))        // a signalling NaN
        #expect(nan.bitPattern == 0xffe0)                         // quiet, sign and top payload kept
        #expect(Float(BFloat16(bitPattern: 0x3f80)) == 1)
        #expect(BFloat16(0.1).description == "0.100097656")
    }

    /// The C narrowing (F16C, and AVX2 or AVX-512 BF16, where the CPU has
    /// them) against Swift's own `Float16(Float)` and `BFloat16(Float)` on a
    /// sweep of Float patterns (every 251st: all exponents, odd significands,
    /// ties among them), and the portable loops bit for bit, NaNs included;
    /// then subnormals scattered among normal values, zeros, infinities and
    /// NaNs (AVX-512 BF16 reads subnormals as zero: a group of sixteen with
    /// one takes the integer rounding).
    @Test("the C passes narrow as Swift does, and widen every Float16 exactly")
    func conversionPasses() {
        let stride = 251
        let count = Int(UInt32.max / UInt32(stride)) + 1
        var floats = [Float](repeating: 0, count: 1 << 16)
        var f16 = [UInt16](repeating: 0, count: 1 << 16), base16 = f16, bf16 = f16, basebf = f16
        var mismatches = 0, checked = 0
        var start = 0
        while start < count {
            let n = min(floats.count, count - start)
            for k in 0..<n { floats[k] = Float(bitPattern: UInt32(truncatingIfNeeded: (start + k) * stride)) }
            normkit_narrow_f16(floats, &f16, n, 0)
            normkit_narrow_f16_baseline(floats, &base16, n)
            normkit_narrow_bf16(floats, &bf16, n, 1)
            normkit_narrow_bf16_baseline(floats, &basebf, n)
            for k in 0..<n {
                checked += 1
                let f = floats[k]
                if f16[k] != base16[k] || bf16[k] != basebf[k] { mismatches += 1 }
                if bf16[k] != BFloat16(f).bitPattern { mismatches += 1 }
                if !f.isNaN && f16[k] != Float16(f).bitPattern { mismatches += 1 }
            }
            start += n
        }
        #expect(mismatches == 0, "\(mismatches) of \(checked) patterns differ")
        var rng = SplitMix64(seed: 251)
        let special: [UInt32] = [0, 0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_0001, 0xff80_0001,
                                 0x0000_8000, 0x0000_7fff, 0x007f_ffff, 0x8000_0001, 0x0080_0000,
                                 0x3f80_8000, 0x3f81_8000, 0x7f7f_ffff]
        let mixed = (0..<4099).map { k -> Float in
            let r = UInt32(truncatingIfNeeded: rng.next())
            if k < 2048 ? k % 7 == 3 : k % 97 == 3 {   // dense, then sparse: most groups have none
                return Float(bitPattern: (r & 0x8000_0000) | (r & 0x007f_ffff))
            }
            if k % 11 == 5 { return Float(bitPattern: special[Int(r % UInt32(special.count))]) }
            return Float(bitPattern: r)
        }
        var narrowed = [UInt16](repeating: 0, count: mixed.count)
        for streaming: Int32 in [0, 1] {
            normkit_narrow_bf16(mixed, &narrowed, mixed.count, streaming)
            #expect(narrowed == mixed.map { BFloat16($0).bitPattern })
        }
        let all = (0...UInt16.max).map { $0 }
        var widened = [Float](repeating: 0, count: all.count), baseline = widened
        var copied = [UInt16](repeating: 0, count: all.count)
        normkit_widen_f16(all, &widened, &copied, all.count, 1)
        normkit_widen_f16_baseline(all, &baseline, all.count)
        #expect(copied == all)
        var wrong = 0
        for (k, h) in all.enumerated() {
            let swift = Float(Float16(bitPattern: h))
            if widened[k].bitPattern != baseline[k].bitPattern { wrong += 1 }
            if !swift.isNaN && widened[k].bitPattern != swift.bitPattern { wrong += 1 }
            if swift.isNaN && !widened[k].isNaN { wrong += 1 }
        }
        #expect(wrong == 0)
    }

    @Test("the centred squares of four rows in row order give the bits of one row at a time, with and without the copy")
    func centredSquaresInOrder() {
        // 7 rows (a group of four, then three) of 37 values with full
        // mantissas, whose residual sums round: in row order they must equal
        // seven one-row passes.
        let rows = 7, n = 37
        let x = (0..<rows * n).map { Float(sin(Double($0) * 1.3) * 3.7) }
        let mean = (0..<n).map { Float(cos(Double($0)) * 0.5) }
        let start = (0..<n).map { Float($0) * 0.3331 }
        var squares = [Float](repeating: 0, count: rows * n), residual = start
        var copy = [Float](repeating: 0, count: rows * n)
        normkit_centred_squares_f(x, &squares, &residual, rows, n, mean, &copy, 1)
        var expectedSquares = squares, expected = start
        x.withUnsafeBufferPointer { xp in
            expectedSquares.withUnsafeMutableBufferPointer { sp in
                for i in 0..<rows {
                    normkit_centred_squares_f(xp.baseAddress! + i * n, sp.baseAddress! + i * n, &expected, 1, n,
                                              mean, nil, 0)
                }
            }
        }
        #expect(residual.map(\.bitPattern) == expected.map(\.bitPattern))
        #expect(squares.map(\.bitPattern) == expectedSquares.map(\.bitPattern))
        #expect(copy == x)
        var paired = start
        normkit_centred_squares_f(x, &squares, &paired, rows, n, mean, nil, 0)
        #expect(paired.map(\.bitPattern) != expected.map(\.bitPattern),
                "the inputs are chosen so that pairing the four rows rounds differently")
        // Double, without the copy.
        let xd = x.map { Double($0) * 1.000000001 }, md = mean.map(Double.init)
        var sd = [Double](repeating: 0, count: rows * n), rd = [Double](repeating: 0.25, count: n)
        var ed = sd, red = rd
        normkit_centred_squares_d(xd, &sd, &rd, rows, n, md, nil, 1)
        xd.withUnsafeBufferPointer { xp in
            ed.withUnsafeMutableBufferPointer { sp in
                for i in 0..<rows {
                    normkit_centred_squares_d(xp.baseAddress! + i * n, sp.baseAddress! + i * n, &red, 1, n, md,
                                              nil, 0)
                }
            }
        }
        #expect(rd.map(\.bitPattern) == red.map(\.bitPattern))
        #expect(sd.map(\.bitPattern) == ed.map(\.bitPattern))
    }

    @Test("the 16-bit centred squares widen in registers as widening first does, every pattern")
    func centredSquaresRow() {
        // Every 16-bit pattern but the last (an odd count leaves a tail),
        // against the Float pass on the widened row: the same bits (NaN for NaN).
        let all = (0..<UInt16.max).map { $0 }
        let mean = (0..<all.count).map { Float($0 % 977) * 0.37 - 100.1 }
        let start = (0..<all.count).map { Float($0 % 13) * 0.1 }
        for bfloat in [false, true] {
            var widened = [Float](repeating: 0, count: all.count)
            if bfloat {
                normkit_widen_bf16(all, &widened, nil, all.count, 0)
            } else {
                normkit_widen_f16(all, &widened, nil, all.count, 0)
            }
            var squares = widened, residual = start, expectedSquares = widened, expected = start
            normkit_centred_squares_f(widened, &expectedSquares, &expected, 1, all.count, mean, nil, 0)
            if bfloat {
                normkit_centred_squares_row_bf16(all, &squares, &residual, all.count, mean)
            } else {
                normkit_centred_squares_row_f16(all, &squares, &residual, all.count, mean)
            }
            let same = { (a: Float, b: Float) in a.bitPattern == b.bitPattern || (a.isNaN && b.isNaN) }
            let wrong = (0..<all.count).filter {
                !same(squares[$0], expectedSquares[$0]) || !same(residual[$0], expected[$0])
            }
            #expect(wrong.isEmpty, "\(bfloat ? "bfloat16" : "Float16"): \(wrong.count) differ")
            #expect(residual.contains { $0.isNaN } && squares.contains { $0 == .infinity },
                    "the patterns include NaN and infinity")
        }
    }

    /// `count` values for the C passes' tests: about ±137, one in 31 scaled
    /// by 3000.1 (beyond float16's range), one in 29 by 1e-6 (float16's
    /// subnormals), one in 97 NaN.
    func passInput(_ count: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { k -> Float in
            if k % 97 == 5 { return .nan }
            let r = Float(Int(truncatingIfNeeded: rng.next() % 20001) - 10000) * 0.0137
            return k % 31 == 7 ? r * 3000.1 : (k % 29 == 3 ? r * 1e-6 : r)
        }
    }

    @Test("the 16-bit scale-and-shift pass rounds c·s·gamma + beta as Swift does, stored and streamed, at every offset")
    func scaleShiftPass() {
        // Stored, float16 on AVX-512 and bfloat16 on AVX-512 BF16 take
        // sixteen values in one register and the streamed forms eight or two
        // of eight: all against Swift's rounding of the Float
        // expression, on 998-1029 values starting at each of the 32 2-byte
        // offsets in a line, over values that overflow float16, underflow
        // it and are NaN; one in 37 has gamma 0 and a subnormal beta, so the
        // result is subnormal (bfloat16's 512-bit rounding takes the integer
        // form for those sixteen).
        let n = 1029
        let c = passInput(n + 40, seed: 97)
        let gamma = (0..<n + 40).map { (k: Int) -> Float in
            k % 37 == 11 ? 0 : Float(k % 17) * 0.31 - 2.1
        }
        let beta = (0..<n + 40).map { (k: Int) -> Float in
            if k % 37 == 11 { return Float(bitPattern: 0x000A_BC00 &+ UInt32(k * 37)) }
            return Float(k % 23) * 0.7 - 7.3
        }
        let s: Float = 1.0 / 3.1
        var wrong = 0
        for offset in 0..<32 {
            let count = n - offset
            for streaming: Int32 in [0, 1] {
                var f16 = [UInt16](repeating: 0, count: n + 40), bf16 = f16
                c.withUnsafeBufferPointer { c in
                    gamma.withUnsafeBufferPointer { g in
                        beta.withUnsafeBufferPointer { b in
                            f16.withUnsafeMutableBufferPointer { y in
                                normkit_scale_shift_f16(c.baseAddress! + offset, y.baseAddress! + offset, count,
                                                        s, g.baseAddress! + offset, b.baseAddress! + offset,
                                                        streaming)
                            }
                            bf16.withUnsafeMutableBufferPointer { y in
                                normkit_scale_shift_bf16(c.baseAddress! + offset, y.baseAddress! + offset, count,
                                                         s, g.baseAddress! + offset, b.baseAddress! + offset,
                                                         streaming)
                            }
                        }
                    }
                }
                for k in offset..<n {
                    let v = c[k] * s * gamma[k] + beta[k]
                    let h = Float16(v).bitPattern
                    if v.isNaN ? !Float16(bitPattern: f16[k]).isNaN : f16[k] != h { wrong += 1 }
                    if bf16[k] != BFloat16(v).bitPattern { wrong += 1 }
                }
                if f16[..<offset].contains(where: { $0 != 0 }) || f16[n...].contains(where: { $0 != 0 }) {
                    wrong += 1
                }
            }
        }
        #expect(wrong == 0, "\(wrong) values differ")
    }

    @Test("BatchNorm's 16-bit normalize pass rounds (x - mean)·scale + shift as Swift does, with and without the copy, stored and streamed, at every offset")
    func normalizeColumnsPass() {
        // Without a residual or ReLU, bfloat16 on AVX-512 BF16 takes sixteen
        // values a step in every form and float16 only stored without a
        // copy: each against Swift's rounding of the Float expression, on
        // 998-1029 values starting at each of the 32 2-byte offsets in a
        // line, over inputs that overflow float16, underflow it and are NaN,
        // and (scale 0, a subnormal shift) results that are subnormal; the
        // copy equals the input, and nothing outside the row is written.
        let n = 1029
        let x = passInput(n + 40, seed: 101)
        let x16 = x.map { Float16($0).bitPattern }, xb = x.map { BFloat16($0).bitPattern }
        let mean = (0..<n + 40).map { Float($0 % 13) * 0.29 - 1.7 }
        let scale = (0..<n + 40).map { (k: Int) -> Float in
            k % 37 == 11 ? 0 : Float(k % 17) * 0.31 - 2.1
        }
        let shift = (0..<n + 40).map { (k: Int) -> Float in
            if k % 37 == 11 { return Float(bitPattern: 0x000A_BC00 &+ UInt32(k * 37)) }
            return Float(k % 23) * 0.7 - 7.3
        }
        var wrong = 0
        for offset in 0..<32 {
            let count = n - offset
            for streaming: Int32 in [0, 1] {
                for copying in [false, true] {
                    var f16 = [UInt16](repeating: 0, count: n + 40), bf16 = f16, c16 = f16, cb = f16
                    typealias Pass = (UnsafePointer<UInt16>?, UnsafeMutablePointer<UInt16>?, Int,
                                      UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                      UnsafePointer<UInt16>?, UnsafeMutablePointer<UInt8>?, Int32,
                                      UnsafeMutablePointer<UInt16>?, Int32) -> Void
                    func run(_ pass: Pass, _ x: [UInt16], _ y: inout [UInt16], _ copy: inout [UInt16]) {
                        let at = { (p: UnsafeBufferPointer<Float>) in p.baseAddress! + offset }
                        mean.withUnsafeBufferPointer { m in
                            scale.withUnsafeBufferPointer { s in
                                shift.withUnsafeBufferPointer { b in
                                    x.withUnsafeBufferPointer { x in
                                        y.withUnsafeMutableBufferPointer { y in
                                            copy.withUnsafeMutableBufferPointer { c in
                                                pass(x.baseAddress! + offset, y.baseAddress! + offset, count,
                                                     at(m), at(s), at(b), nil, nil, 0,
                                                     copying ? c.baseAddress! + offset : nil, streaming)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    run(normkit_normalize_columns_f16, x16, &f16, &c16)
                    run(normkit_normalize_columns_bf16, xb, &bf16, &cb)
                    for k in offset..<n {
                        let v16 = (Float(Float16(bitPattern: x16[k])) - mean[k]) * scale[k] + shift[k]
                        let vb = (Float(BFloat16(bitPattern: xb[k])) - mean[k]) * scale[k] + shift[k]
                        if v16.isNaN ? !Float16(bitPattern: f16[k]).isNaN : f16[k] != Float16(v16).bitPattern {
                            wrong += 1
                        }
                        if bf16[k] != BFloat16(vb).bitPattern { wrong += 1 }
                        if copying && (c16[k] != x16[k] || cb[k] != xb[k]) { wrong += 1 }
                    }
                    for a in [f16, bf16] + (copying ? [c16, cb] : [])
                    where a[..<offset].contains(where: { $0 != 0 }) || a[n...].contains(where: { $0 != 0 }) {
                        wrong += 1
                    }
                    if !copying && (c16 + cb).contains(where: { $0 != 0 }) { wrong += 1 }
                }
            }
        }
        #expect(wrong == 0, "\(wrong) values differ")
    }

    @Test("LayerNorm's 16-bit dx row pass rounds s·(gamma·dy - a - (x - m)·s·b) (+ sum) as Swift does, stored and streamed, at every offset")
    func combineRowPass() {
        // Stored, float16 on AVX-512 and bfloat16 on AVX-512 BF16 take
        // sixteen values in one register, the streamed forms eight or two of
        // eight: all against Swift's rounding of the Float expression, with
        // and without the sum gradient, on 998-1029 values starting at each
        // of the 32 2-byte offsets in a line, over values that overflow
        // float16, underflow it and are NaN. One in 37 has gamma 1, a
        // subnormal dy and x = m, so with a = 0 the result (and with a sum,
        // its subnormal sum) is subnormal: bfloat16's 512-bit rounding takes
        // the integer form for those sixteen.
        let n = 1029, m: Float = 0.73, s: Float = 1.0 / 3.1, b: Float = -0.61
        let sub = { (k: Int) in Float(bitPattern: 0x000A_BC00 &+ UInt32(k * 37)) }
        let dy = passInput(n + 40, seed: 103).enumerated().map { (k, v) -> Float in k % 37 == 11 ? sub(k) : v }
        let x = passInput(n + 40, seed: 107).enumerated().map { (k, v) -> Float in k % 37 == 11 ? m : v }
        let gamma = (0..<n + 40).map { (k: Int) -> Float in k % 37 == 11 ? 1 : Float(k % 17) * 0.31 - 2.1 }
        let sums = (0..<n + 40).map { (k: Int) -> Float in k % 37 == 11 ? sub(k + 5) : Float(k % 23) * 0.7 - 7.3 }
        var wrong = 0
        for offset in 0..<32 {
            let count = n - offset
            for streaming: Int32 in [0, 1] {
                for a: Float in [0, 0.37] {
                    for withSum in [false, true] {
                        var f16 = [UInt16](repeating: 0, count: n + 40), bf16 = f16
                        dy.withUnsafeBufferPointer { dy in
                            x.withUnsafeBufferPointer { x in
                                gamma.withUnsafeBufferPointer { g in
                                    sums.withUnsafeBufferPointer { sums in
                                        let sum = withSum ? sums.baseAddress! + offset : nil
                                        f16.withUnsafeMutableBufferPointer { out in
                                            normkit_combine_row_f16(
                                                dy.baseAddress! + offset, x.baseAddress! + offset, sum,
                                                out.baseAddress! + offset, count, m, s, a, b,
                                                g.baseAddress! + offset, streaming)
                                        }
                                        bf16.withUnsafeMutableBufferPointer { out in
                                            normkit_combine_row_bf16(
                                                dy.baseAddress! + offset, x.baseAddress! + offset, sum,
                                                out.baseAddress! + offset, count, m, s, a, b,
                                                g.baseAddress! + offset, streaming)
                                        }
                                    }
                                }
                            }
                        }
                        for k in offset..<n {
                            let centred: Float = (x[k] - m) * s * b
                            let t: Float = s * (gamma[k] * dy[k] - a - centred)
                            let v = withSum ? t + sums[k] : t
                            if v.isNaN ? !Float16(bitPattern: f16[k]).isNaN : f16[k] != Float16(v).bitPattern {
                                wrong += 1
                            }
                            if bf16[k] != BFloat16(v).bitPattern { wrong += 1 }
                        }
                        for out in [f16, bf16]
                        where out[..<offset].contains(where: { $0 != 0 }) || out[n...].contains(where: { $0 != 0 }) {
                            wrong += 1
                        }
                    }
                }
            }
        }
        #expect(wrong == 0, "\(wrong) values differ")
    }

    // MARK: Accuracy

    /// LayerNorm/RMSNorm in `S` against the Double reference: outputs and
    /// input gradients within 1 ulp of it rounded (or within a few Float
    /// errors of the terms where it is near zero), parameter gradients
    /// within 1e-5 of the terms' size.
    func checkRows<S: TestStorage>(_: S.Type, rows: Int, columns: Int, centred: Bool,
                                   backend: Backend, shift: Double) throws -> (UlpCount, UlpCount) {
        let x: [S] = reducedInput(rows * columns, scale: 3, shift: shift, seed: 7)
        let dy: [S] = reducedInput(rows * columns, scale: 1, shift: 0.1, seed: 8)
        let gamma: [Float] = randomVector(columns, scale: 0.5, shift: 1, seed: 9)
        // RMSNorm has no shift (Affine.scaleOnly): its beta and dbeta are empty.
        let beta: [Float] = centred ? randomVector(columns, scale: 0.3, shift: 0.1, seed: 10) : []
        var y = [S](repeating: S(0), count: x.count), dx = y, inferred = y
        var dgamma = [Float](repeating: 0, count: columns), dbeta = [Float](repeating: 0, count: beta.count)
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        if centred {
            var layer = try LayerNorm<Float>(featureCount: columns, backend: backend)
            layer.gamma = gamma; layer.beta = beta
            try forwardAndBack(&layer, x, dy, [rows, columns], &y, &inferred, &dx, &dgamma, &dbeta,
                               &cache, &workspace)
        } else {
            var layer = try RMSNorm<Float>(featureCount: columns, backend: backend)
            layer.gamma = gamma
            try forwardAndBack(&layer, x, dy, [rows, columns], &y, &inferred, &dx, &dgamma, &dbeta,
                               &cache, &workspace)
        }
        #expect(y.map(\.bits) == inferred.map(\.bits), "infer = forward bit for bit")
        let reference = rowReference(x: x, dy: dy, rows: rows, columns: columns, gamma: gamma,
                                     beta: centred ? beta : [Float](repeating: 0, count: columns),
                                     epsilon: 1e-5, centred: centred)
        #expect(dbeta.count == (centred ? columns : 0), "RMSNorm's dbeta is empty")
        var outputs = UlpCount(), gradients = UlpCount()
        for k in 0..<x.count {
            // Within a few Float errors of the terms' size of zero: 1e-6 of it
            // (8 Float ulps; the statistics are Float sums over D values).
            outputs.add(y[k], reference: reference.y[k], absolute: 1e-6 * reference.yScale[k], at: k)
            gradients.add(dx[k], reference: reference.dx[k], absolute: 1e-5 * reference.dxScale[k], at: k)
        }
        #expect(outputs.failures.isEmpty, "\(S.name) \(rows)x\(columns) y: \(outputs.failures)")
        #expect(gradients.failures.isEmpty, "\(S.name) \(rows)x\(columns) dx: \(gradients.failures)")
        for j in 0..<columns {
            #expect(abs(Double(dgamma[j]) - reference.dgamma[j]) <= 1e-5 * reference.dgammaScale[j],
                    "dgamma[\(j)] \(dgamma[j]) vs \(reference.dgamma[j])")
            if centred {
                #expect(abs(Double(dbeta[j]) - reference.dbeta[j]) <= 1e-5 * reference.dbetaScale[j],
                        "dbeta[\(j)] \(dbeta[j]) vs \(reference.dbeta[j])")
            }
        }
        return (outputs, gradients)
    }

    func forwardAndBack<L: ReducedPrecisionLayer, S: TestStorage>(
        _ layer: inout L, _ x: [S], _ dy: [S], _ shape: [Int], _ y: inout [S], _ inferred: inout [S],
        _ dx: inout [S], _ dgamma: inout [Float], _ dbeta: inout [Float],
        _ cache: inout NormCache<Float>, _ workspace: inout Workspace<Float>
    ) throws {
        try x.withUnsafeBufferPointer { xb in
            try y.withUnsafeMutableBufferPointer { yb in
                try layer.forward(xb, shape: shape, mode: .training, into: yb, cache: &cache,
                                  workspace: &workspace)
            }
            try inferred.withUnsafeMutableBufferPointer { yb in
                try layer.infer(xb, shape: shape, into: yb, workspace: &workspace)
            }
        }
        try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
    }

    @Test("LayerNorm and RMSNorm in 16 bits are within 1 ulp of the float64 reference",
          arguments: [Backend.blas, .naive])
    func rowAccuracy(backend: Backend) throws {
        // 7x13: the row blocks; 37x1029: one row at a time; shifts of 0.3
        // and 100.1 (a mean far from zero, whose cancellation Float absorbs).
        for (rows, columns) in [(7, 13), (37, 1029)] {
            for centred in [true, false] {
                for shift in [0.3, 100.1] {
                    let (y16, dx16) = try checkRows(Float16.self, rows: rows, columns: columns,
                                                    centred: centred, backend: backend, shift: shift)
                    let (yb, dxb) = try checkRows(BFloat16.self, rows: rows, columns: columns,
                                                  centred: centred, backend: backend, shift: shift)
                    print("16-bit \(centred ? "LayerNorm" : "RMSNorm") \(rows)x\(columns) shift \(shift) \(backend): Float16 y \(y16), dx \(dx16); BFloat16 y \(yb), dx \(dxb)")
                }
            }
        }
    }

    @Test("a constant row gives beta rounded, exactly; Float16 inputs near 6e4 and subnormal ones keep finite statistics")
    func edges() throws {
        var layer = try LayerNorm<Float>(featureCount: 9)
        layer.beta = (0..<9).map { Float($0) * 0.3 - 1.1 }
        layer.gamma = [Float](repeating: 1.7, count: 9)
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        let constant = [BFloat16](repeating: BFloat16(10000.1), count: 18)
        var y = [BFloat16](repeating: BFloat16(0), count: 18)
        try reducedForward(&layer, constant, shape: [2, 9], &y, &cache, &workspace)
        #expect(y.map(\.bitPattern) == (layer.beta + layer.beta).map { BFloat16($0).bitPattern })
        // Near Float16's range: squares of 6e4 overflow Float16, not Float.
        let big: [Float16] = (0..<18).map { Float16($0 % 2 == 0 ? 6e4 : -5.9e4) + Float16($0) }
        var y16 = [Float16](repeating: 0, count: 18)
        try reducedForward(&layer, big, shape: [2, 9], &y16, &cache, &workspace)
        #expect(cache.inverseStandardDeviation.allSatisfy { $0.isFinite && $0 > 0 })
        #expect(y16.allSatisfy { $0.isFinite })
        let tiny: [Float16] = (0..<18).map { Float16(bitPattern: UInt16(1 + $0 * 37)) }  // subnormals
        try reducedForward(&layer, tiny, shape: [2, 9], &y16, &cache, &workspace)
        #expect(cache.mean.allSatisfy { $0.isFinite && $0 > 0 })
        #expect(y16.allSatisfy { $0.isFinite })
        // An output beyond Float16's range is an infinity, as IEEE 754 says.
        layer.gamma = [Float](repeating: 1e5, count: 9)
        try reducedForward(&layer, big, shape: [2, 9], &y16, &cache, &workspace)
        #expect(y16.contains(.infinity) && y16.contains(-.infinity))
    }

    // MARK: PyTorch

    /// `Fixtures/pytorch-16bit.npz` (made once by `make_reduced_fixture.py`).
    static let torch = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/pytorch-16bit.npz").path

    @Test("BFloat16(Float) and the Float16 C pass give torch's bits on ties, extremes and 6000 values")
    func pytorchConversions() throws {
        let archive = try NumPyArchive(contentsOf: Self.torch)
        let values = try archive.tensor("conv_float32", as: Float.self).scalars
        let bf16 = try #require(archive["conv_bfloat16"]).integers().map { UInt16($0) }
        let f16 = try #require(archive["conv_float16"]).integers().map { UInt16($0) }
        #expect(values.count > 5000)
        #expect(values.map { BFloat16($0).bitPattern } == bf16)
        var narrowed = [UInt16](repeating: 0, count: values.count)
        normkit_narrow_f16(values, &narrowed, values.count, 0)
        #expect(narrowed == f16)
    }

    /// PyTorch's result `theirs` against NormKit's `ours`: at most `ulps`
    /// apart, or within `absolute[k]` of each other (near zero).
    func agree<S: TestStorage>(_ ours: [S], _ theirs: [UInt16], ulps: Int, absolute: [Double],
                               _ what: String) -> Int {
        var worst = 0
        for (k, bits) in theirs.enumerated() {
            let reference = S.from(bits: bits)
            let distance = ulpDistance(ours[k], reference)
            if distance > ulps && Double(abs(ours[k].float - reference.float)) > absolute[k] {
                Issue.record("\(what)[\(k)]: \(ours[k].float) vs PyTorch's \(reference.float)")
            }
            worst = max(worst, distance)
        }
        return worst
    }

    func pytorchRows<S: TestStorage>(_: S.Type, dtype: String) throws {
        let archive = try NumPyArchive(contentsOf: Self.torch)
        for (rows, columns) in [(5, 13), (6, 67)] {
            let key = "\(dtype)_\(rows)x\(columns)"
            func bits(_ name: String) throws -> [UInt16] {
                try #require(archive["\(key)_\(name)"]).integers().map { UInt16($0) }
            }
            func floats(_ name: String) throws -> [Float] {
                try archive.tensor("\(key)_\(name)", as: Float.self).scalars
            }
            let x = try bits("x").map(S.from(bits:)), dy = try bits("dy").map(S.from(bits:))
            for op in ["ln", "rms"] {
                var y = [S](repeating: S(0), count: x.count), inferred = y, dx = y
                var dgamma = [Float](repeating: 0, count: columns)
                var dbeta = [Float](repeating: 0, count: op == "ln" ? columns : 0)
                var cache = NormCache<Float>(), workspace = Workspace<Float>()
                if op == "ln" {
                    var layer = try LayerNorm<Float>(featureCount: columns)
                    layer.gamma = try floats("weight"); layer.beta = try floats("bias")
                    try forwardAndBack(&layer, x, dy, [rows, columns], &y, &inferred, &dx, &dgamma,
                                       &dbeta, &cache, &workspace)
                } else {
                    var layer = try RMSNorm<Float>(featureCount: columns)
                    layer.gamma = try floats("weight")
                    try forwardAndBack(&layer, x, dy, [rows, columns], &y, &inferred, &dx, &dgamma,
                                       &dbeta, &cache, &workspace)
                }
                let what = "\(key) \(op)"
                let reference = rowReference(
                    x: x, dy: dy, rows: rows, columns: columns, gamma: try floats("weight"),
                    beta: op == "ln" ? try floats("bias") : [Float](repeating: 0, count: columns),
                    epsilon: 1e-5, centred: op == "ln")
                // Both round a Float result once, each within 1 ulp of the
                // exact value: at most 2 apart, or near zero within twice the
                // reference test's allowance (both err by a few Float errors).
                let yWorst = agree(y, try bits("\(op)_y"), ulps: 2,
                                   absolute: reference.yScale.map { 2e-6 * $0 }, what + " y")
                let dxWorst = agree(dx, try bits("\(op)_dx"), ulps: 2,
                                    absolute: reference.dxScale.map { 2e-5 * $0 }, what + " dx")
                // Parameter gradients: NormKit's within 1e-5 of the float64
                // reference; PyTorch's mixed-type backward (16-bit input, Float
                // weight) returns them good to the 16-bit type's precision.
                let exact = (reference.dgamma + reference.dbeta).map { Float($0) }
                let theirs = try floats("\(op)_dweight")
                    + (op == "ln" ? try floats("ln_dbias") : [Float](repeating: 0, count: columns))
                let ours = normwiseError(dgamma + (op == "ln" ? dbeta : [Float](repeating: 0, count: columns)), exact)
                let pytorch = normwiseError(theirs, exact)
                let storageEpsilon = S.self == BFloat16.self ? 0x1p-8 : 0x1p-11
                #expect(ours < 1e-5, "\(what) parameter gradients: \(ours) from float64")
                #expect(pytorch < 2 * storageEpsilon, "\(what) PyTorch's: \(pytorch) from float64")
                print("PyTorch \(what): y within \(yWorst) ulp, dx within \(dxWorst) ulp; parameter gradients from float64: NormKit \(ours), PyTorch \(pytorch)")
            }
        }
    }

    @Test("PyTorch's layer_norm and rms_norm on bfloat16 and float16 tensors: outputs and gradients agree")
    func pytorchFixture() throws {
        try pytorchRows(BFloat16.self, dtype: "bfloat16")
        try pytorchRows(Float16.self, dtype: "float16")
    }

    // MARK: Bad input

    @Test("wrong counts, another precision's cache and non-finite input throw, state unchanged")
    func badInput() throws {
        var layer = try LayerNorm<Float>(featureCount: 5)
        layer.beta = [0.1, 0.2, 0.3, 0.4, 0.5]
        let before = layer
        var cache = NormCache<Float>(), workspace = Workspace<Float>()
        let x: [Float16] = reducedInput(15, scale: 2, shift: 1, seed: 3)
        var y = [Float16](repeating: 0, count: 15)
        var short = [Float16](repeating: 0, count: 14)
        #expect(throws: NormError.bufferCountMismatch(name: "output", expected: 15, actual: 14)) {
            try reducedForward(&layer, x, shape: [3, 5], &short, &cache, &workspace)
        }
        #expect(throws: NormError.invalidShape(expected: "(..., 5) with at least one row", actual: [5, 3])) {
            try reducedForward(&layer, x, shape: [5, 3], &y, &cache, &workspace)
        }
        var withInfinity = x
        withInfinity[7] = .infinity
        #expect(throws: NormError.nonFiniteStatistics(index: 1)) {
            try reducedForward(&layer, withInfinity, shape: [3, 5], &y, &cache, &workspace)
        }
        #expect(layer == before)
        // A Float16 cache: the Float and BFloat16 backwards refuse it.
        try reducedForward(&layer, x, shape: [3, 5], &y, &cache, &workspace)
        var dgamma = [Float](repeating: 0, count: 5), dbeta = dgamma
        let mismatch = NormError.cacheMismatch(expected: "a cache filled at BFloat16 storage",
                                               actual: "a cache filled at Float16 storage")
        #expect(throws: mismatch) {
            let dy = [BFloat16](repeating: BFloat16(1), count: 15)
            var dx = dy
            try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        }
        #expect(throws: NormError.cacheMismatch(expected: "a cache filled at Float storage",
                                                actual: "a cache filled at Float16 storage")) {
            _ = try layer.backward(try Tensor<Float>(shape: [3, 5], repeating: 1), cache: cache)
        }
        #expect(throws: NormError.bufferCountMismatch(name: "inputGradient", expected: 15, actual: 16)) {
            let dy = [Float16](repeating: 1, count: 15)
            var dx = [Float16](repeating: 1, count: 16)
            try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
        }
        // A Float forward's cache refuses the 16-bit backward.
        let xf = try Tensor<Float>(shape: [3, 5], scalars: x.map { Float($0) })
        let (_, floatCache) = try layer.forward(xf, mode: .training)
        #expect(throws: NormError.cacheMismatch(expected: "a cache filled at Float16 storage",
                                                actual: "a cache filled at Float storage")) {
            let dy = [Float16](repeating: 1, count: 15)
            var dx = dy
            try reducedBackward(layer, dy, floatCache, &dx, &dgamma, &dbeta, &workspace)
        }
        #expect(layer == before)
    }
}

extension ProcessWideTests {
    @Suite("16-bit storage over threads")
    struct ReducedPrecisionThreadTests {
        @Test("the same bits at every thread count")
        func threads() throws {
            let saved = Threading.threadCount
            defer { Threading.threadCount = saved }
            let shape = [301, 1029]
            let x: [BFloat16] = reducedInput(301 * 1029, scale: 3, shift: 10000.1, seed: 11)
            let dy: [BFloat16] = reducedInput(301 * 1029, scale: 1, shift: 0, seed: 12)
            var results: [[UInt16]] = []
            for threads in [1, 2, 3, 7] {
                Threading.threadCount = threads
                for centred in [true, false] {
                    var y = [BFloat16](repeating: BFloat16(0), count: x.count), dx = y
                    var dgamma = [Float](repeating: 0, count: 1029)
                    var dbeta = [Float](repeating: 0, count: centred ? 1029 : 0)
                    var cache = NormCache<Float>(), workspace = Workspace<Float>()
                    if centred {
                        var layer = try LayerNorm<Float>(featureCount: 1029)
                        try reducedForward(&layer, x, shape: shape, &y, &cache, &workspace)
                        try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
                    } else {
                        var layer = try RMSNorm<Float>(featureCount: 1029)
                        try reducedForward(&layer, x, shape: shape, &y, &cache, &workspace)
                        try reducedBackward(layer, dy, cache, &dx, &dgamma, &dbeta, &workspace)
                    }
                    results.append(y.map(\.bitPattern) + dx.map(\.bitPattern)
                                   + (dgamma + dbeta).flatMap {
                                       [UInt16($0.bitPattern >> 16), UInt16($0.bitPattern & 0xffff)]
                                   })
                }
            }
            for k in 2..<results.count { #expect(results[k] == results[k % 2], "threads run \(k / 2)") }
        }
    }
}

import NormKit

/// Reads a fuzzer's bytes as the choices of one case: small integers, shapes,
/// flags and scalars. Past the end every read returns zero, so any byte string,
/// the empty one included, decodes to a case.
struct ByteReader {
    let bytes: [UInt8]
    var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = Array(bytes) }

    var isAtEnd: Bool { position >= bytes.count }

    mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func uint64() -> UInt64 {
        var value: UInt64 = 0
        for _ in 0..<8 { value = value << 8 | UInt64(byte()) }
        return value
    }

    /// A dimension: mostly 0...12, sometimes negative or huge, so shape
    /// validation and overflow checks are reached.
    mutating func dimension() -> Int {
        let b = byte()
        switch b {
        case 0..<208: return Int(b % 13)
        case 208..<224: return Int(b) - 190  // 18...33
        case 224..<240: return -Int(b - 223)  // -1...-16
        case 240: return Int.max
        case 241: return Int.min
        case 242: return 1 << 31
        case 243: return 1 << 62
        case 244: return Int.max / 2 + 1
        case 245: return 65_537
        default: return Int(b) * 3  // 738...765
        }
    }

    /// A scalar: a small value whose sums are not exact in binary, a special
    /// value (zeros, infinities, NaN, extremes, subnormals, large offsets), or
    /// a raw bit pattern.
    mutating func scalar<Scalar: BLASScalar>(_: Scalar.Type) -> Scalar {
        let b = byte()
        switch b {
        case 0..<176:
            return Scalar(Double(Int(b) - 88) * 0.37)
        case 176..<208:
            let specials: [Double] = [
                0, -0.0, .infinity, -.infinity, .nan, 1e30, -1e30, 1e-30,
                10000.1, -10000.1, 1e6 + 0.1, 1e-45, .leastNonzeroMagnitude, 1, -1, 0.5,
                3.4e38, -3.4e38, 1.7e308, -1.7e308, Double.leastNormalMagnitude / 4, 2.2250738585072014e-308,
                1.1754944e-38, 65504, 1e15, 123456.789, -0.001, 1e-7,
                .ulpOfOne, Double(Float.ulpOfOne), 0.1, 1e10,
            ]
            return Scalar(specials[Int(b) - 176])
        default:
            let bits = uint64()
            if Scalar.self == Float.self {
                return Scalar(Float(bitPattern: UInt32(truncatingIfNeeded: bits)))
            }
            return Scalar(Double(bitPattern: bits))
        }
    }
}

/// Bitwise equality of two scalars, NaNs included.
@inline(__always)
func sameBits<Scalar: BLASScalar>(_ a: Scalar, _ b: Scalar) -> Bool {
    a.sign == b.sign && a.exponentBitPattern == b.exponentBitPattern
        && a.significandBitPattern == b.significandBitPattern
}

func sameBits<Scalar: BLASScalar>(_ a: [Scalar], _ b: [Scalar]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { sameBits($0, $1) }
}

/// Bitwise equality where either value is a number, and NaN where the other
/// is NaN, whatever its sign and payload: what two different kernels of one
/// formula owe each other. IEEE 754 leaves open which operand's payload an
/// operation on two NaNs returns, and the compiler may order a commutative
/// operation's operands either way, so a fused pass and the unfused sequence
/// (both C loops, or a C loop and Swift) may return different NaNs when, say,
/// both gamma and beta are NaN (Conventions, "NaN").
func sameValues<Scalar: BLASScalar>(_ a: [Scalar], _ b: [Scalar]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { x, y in x.isNaN ? y.isNaN : sameBits(x, y) }
}

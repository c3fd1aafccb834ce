#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SplitMix64 (Steele, Lea, Flood 2014): a small, fast, well-mixed 64-bit
/// generator, the same sequence for the same seed on every platform.
///
/// It feeds ``Tensor/init(randomNormal:mean:standardDeviation:seed:)``, and as a
/// `RandomNumberGenerator` it serves anything that must be reproducible from a
/// seed (shuffles, minibatch draws). Not for cryptography.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    @usableFromInline var state: UInt64

    /// A generator whose sequence is determined by `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform double in (0, 1]: 53 random bits, never zero.
    public mutating func nextUnitInterval() -> Double {
        Double((next() >> 11) + 1) * 0x1p-53
    }

    /// Two independent standard normal samples (Box–Muller).
    public mutating func nextGaussianPair() -> (Double, Double) {
        let u1 = nextUnitInterval(), u2 = nextUnitInterval()
        let radius = (-2 * log(u1)).squareRoot()
        let angle = 2 * Double.pi * u2
        return (radius * cos(angle), radius * sin(angle))
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The cache sizes that row blocks are sized against.
///
/// Sizes come from Linux's description of the cache that CPU 0 sees
/// (`/sys/devices/system/cpu/cpu0/cache/index*/size`), then from the C library
/// (`sysconf`). The order matters in virtual machines: there the C library may
/// report the host's whole L3 (384 MiB on the development machine's host) where
/// Linux reports the slice the guest's cores share (32 MiB).
public enum CacheGeometry {
    /// The per-core L2 cache in bytes, or 512 KiB when nothing reports one.
    public static let level2Bytes: Int = reportedBytes(level: 2) ?? 512 * 1024

    /// The last-level (L3) cache in bytes, or ``level2Bytes`` when nothing
    /// reports one. An output larger than a quarter of it is written with
    /// streaming stores (see `StreamingStores`).
    public static let lastLevelBytes: Int = reportedBytes(level: 3) ?? level2Bytes

    /// The size of the data (or unified) cache of `level`, from sysfs, else
    /// from `sysconf`; `nil` when neither reports one.
    static func reportedBytes(level: Int) -> Int? {
        #if canImport(Glibc)
        for index in 0..<8 {
            let directory = "/sys/devices/system/cpu/cpu0/cache/index\(index)/"
            guard let levelText = firstLine(directory + "level"), Int(levelText) == level,
                  firstLine(directory + "type") != "Instruction",
                  let sizeText = firstLine(directory + "size") else { continue }
            let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
            if let unit = sizeText.last, let scale = units[unit], let value = Int(sizeText.dropLast()) {
                return value * scale
            }
            if let bytes = Int(sizeText) { return bytes }
        }
        let name = level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE
        let reported = sysconf(Int32(name))
        if reported > 0 { return reported }
        #endif
        return nil
    }

    #if canImport(Glibc)
    /// The first line of a small text file, without its newline.
    static func firstLine(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 64)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let bytes = buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }
    #endif

    /// The rows per block such that `buffers` blocks of `rows x columns`
    /// scalars of `bytesPerScalar` bytes fill at most half of L2 (the other
    /// half is left to parameters, vectors and the hardware's prefetching).
    /// At least 1 and at most `rows`.
    @inlinable
    static func blockRows(rows: Int, columns: Int, bytesPerScalar: Int, buffers: Int) -> Int {
        let budget = level2Bytes / 2
        let perRow = max(1, columns * bytesPerScalar * buffers)
        return max(1, min(rows, budget / perRow))
    }
}

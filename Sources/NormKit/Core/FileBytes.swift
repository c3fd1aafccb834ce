#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whole-file reads and writes with the C library, so that NormKit needs no
/// Foundation. Errors name the path and `strerror`'s message.
enum FileBytes {
    /// The bytes of the file at `path`.
    /// - Throws: ``NormError/fileError(path:reason:)``.
    static func read(_ path: String) throws(NormError) -> [UInt8] {
        guard let file = fopen(path, "rb") else { throw error(path) }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let got = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            bytes.append(contentsOf: chunk[0..<got])
            if got < chunk.count { break }
        }
        guard ferror(file) == 0 else { throw error(path) }
        return bytes
    }

    /// Replaces the file at `path` with `bytes`.
    /// - Throws: ``NormError/fileError(path:reason:)``.
    static func write(_ bytes: [UInt8], to path: String) throws(NormError) {
        guard let file = fopen(path, "wb") else { throw error(path) }
        let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        let closed = fclose(file)
        guard written == bytes.count, closed == 0 else { throw error(path) }
    }

    /// The error for the last failed C call on `path`.
    private static func error(_ path: String) -> NormError {
        .fileError(path: path, reason: String(cString: strerror(errno)))
    }
}

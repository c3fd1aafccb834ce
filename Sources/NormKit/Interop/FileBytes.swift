#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// File reads and writes with the C library, so that NormKit needs no
/// Foundation. Errors name the path and `strerror`'s message.
///
/// A file is hostile until its header says otherwise: readers open it with
/// ``open(_:)``, read its magic and header first, and then read only what the
/// header declares (never more than the file holds), so that `/dev/zero` or a
/// huge file costs a few bytes, not its size.
enum FileBytes {
    /// An open file read from its start.
    final class Reader {
        let path: String
        private let file: UnsafeMutablePointer<FILE>
        /// The file's size in bytes when it is a regular file (`fstat`), `nil`
        /// for a device, pipe or socket, whose size is not known in advance.
        let size: Int?
        /// The bytes read so far.
        private(set) var offset = 0

        fileprivate init(path: String, file: UnsafeMutablePointer<FILE>) {
            self.path = path
            self.file = file
            var status = stat()
            if fstat(fileno(file), &status) == 0, (status.st_mode & S_IFMT) == S_IFREG {
                size = Int(status.st_size)
            } else {
                size = nil
            }
        }

        deinit { fclose(file) }

        /// The bytes not yet read, when the file's size is known.
        var remaining: Int? { size.map { max(0, $0 - offset) } }

        /// Up to `count` further bytes: fewer only at the end of the file. Reads
        /// in 64 KiB pieces, so that a count larger than the file allocates no
        /// more than the file holds.
        /// - Throws: ``NormError/fileError(path:reason:)`` when the read fails.
        func read(upTo count: Int) throws(NormError) -> [UInt8] {
            var bytes: [UInt8] = []
            if let remaining { bytes.reserveCapacity(min(count, remaining)) }
            var chunk = [UInt8](repeating: 0, count: min(max(count, 0), 1 << 16))
            while bytes.count < count {
                let want = min(chunk.count, count - bytes.count)
                let got = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, want, file) }
                bytes.append(contentsOf: chunk[0..<got])
                if got < want { break }
            }
            guard ferror(file) == 0 else { throw FileBytes.error(path) }
            offset += bytes.count
            return bytes
        }
    }

    /// Opens the file at `path` for reading.
    /// - Throws: ``NormError/fileError(path:reason:)``.
    static func open(_ path: String) throws(NormError) -> Reader {
        guard let file = fopen(path, "rb") else { throw error(path) }
        return Reader(path: path, file: file)
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
    fileprivate static func error(_ path: String) -> NormError {
        .fileError(path: path, reason: String(cString: strerror(errno)))
    }
}

/// A NumPy `.npz` archive: named arrays, each a `.npy` file in a zip archive,
/// as `numpy.savez` writes and `numpy.load` reads them.
///
/// ```swift
/// let bn = try BatchNorm<Float>(featureCount: 4)
/// var archive = NumPyArchive()
/// archive["weight"] = NumPyArray(bn.gamma)   // any Tensor or [Scalar]
/// try archive.write(to: "bn.npz")
/// let gamma: Tensor<Float> = try NumPyArchive(contentsOf: "bn.npz").tensor("weight")
/// ```
///
/// Entries must be stored (`numpy.savez`), not deflated (`numpy.savez_compressed`):
/// NormKit has no inflater. Zip64 records, which `numpy.savez` writes, are read.
/// Each entry's CRC-32 is checked. The reader treats the file as hostile:
/// every offset and size is checked against the file's length, and entries
/// that share bytes are refused, so reading takes memory in proportion to the
/// file. The writer stores entries without compression, and refuses archives
/// of 4 GiB or more and names or entry counts a zip field cannot hold.
public struct NumPyArchive: Sendable, Hashable {
    /// The array names in the order they were added or stored.
    public private(set) var names: [String] = []
    private var arrays: [String: NumPyArray] = [:]

    /// An empty archive.
    public init() {}

    /// The array named `name` (its entry is `name.npy`), or `nil`. Setting a
    /// new name appends it to ``names``; setting `nil` removes it.
    public subscript(name: String) -> NumPyArray? {
        get { arrays[name] }
        set {
            if newValue == nil { names.removeAll { $0 == name } }
            else if arrays[name] == nil { names.append(name) }
            arrays[name] = newValue
        }
    }

    /// The tensor named `name`, widened or narrowed to `Scalar` from `<f2`,
    /// `<f4` or `<f8` as ``Tensor/init(_:)-(NumPyArray)`` does.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` when there is
    ///   no such array, or naming the array when it is not floating point or
    ///   holds a value that `Scalar` cannot.
    /// - Complexity: O(count of the array).
    public func tensor<Scalar: BLASScalar>(_ name: String, as _: Scalar.Type = Scalar.self)
        throws(NormError) -> Tensor<Scalar> {
        guard let array = arrays[name] else {
            throw .invalidNumPyData(expected: "an array named '\(name)'", found: "\(names)")
        }
        do throws(NormError) { return try Tensor(array) } catch { throw error.naming(entry: name) }
    }

    // MARK: Reading

    /// Parses the bytes of an `.npz` file.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` naming what
    ///   is wrong: no end-of-central-directory record, a compressed entry, a
    ///   CRC-32 that does not match, a truncated entry, or an entry that is not
    ///   a `.npy` file.
    /// - Complexity: O(bytes).
    public init(npz bytes: [UInt8]) throws(NormError) {
        let zip = ZipReader(bytes)
        for entry in try zip.entries() {
            let name = entry.name.hasSuffix(".npy") ? String(entry.name.dropLast(4)) : entry.name
            do throws(NormError) { self[name] = try NumPyArray(npy: zip.contents(of: entry)) }
            catch { throw error.naming(entry: entry.name) }
        }
    }

    /// Reads an `.npz` file.
    /// - Throws: ``NormError/fileError(path:reason:)``, and the errors of ``init(npz:)``.
    ///   The first four bytes are read first: a file that does not start as a
    ///   zip archive does (a local file header, or the end record of an empty
    ///   archive) is refused without reading the rest.
    public init(contentsOf path: String) throws(NormError) {
        let file = try FileBytes.open(path)
        let signature = try file.read(upTo: 4)
        guard signature == [0x50, 0x4B, 0x03, 0x04] || signature == [0x50, 0x4B, 0x05, 0x06] else {
            throw .invalidNumPyData(expected: "a zip archive (.npz) starting with PK\\x03\\x04",
                                    found: "\(signature)")
        }
        try self.init(npz: signature + file.read(upTo: file.remaining ?? Int.max))
    }

    // MARK: Writing

    /// The bytes of an `.npz` file holding the arrays, stored uncompressed.
    /// - Throws: ``NormError/sizeTooLarge(_:)`` for an archive of 4 GiB or
    ///   more (NormKit writes no zip64 records);
    ///   ``NormError/invalidNumPyData(expected:found:)`` for a name of more
    ///   than 65,531 bytes (65,535 with `.npy`) or more than 65,534 arrays,
    ///   which a zip archive without zip64 records cannot hold.
    /// - Complexity: O(bytes).
    public func npz() throws(NormError) -> [UInt8] {
        var zip = ZipWriter()
        for name in names { try zip.append(name: name + ".npy", contents: arrays[name]!.npy) }
        return try zip.finish()
    }

    /// Writes the archive to an `.npz` file, replacing any file at `path`.
    /// - Throws: ``NormError/fileError(path:reason:)``, ``NormError/sizeTooLarge(_:)``.
    public func write(to path: String) throws(NormError) {
        try FileBytes.write(npz(), to: path)
    }
}

extension NumPyArray {
    /// A one-dimensional array of scalars, `<f4` or `<f8`.
    /// - Complexity: O(count).
    public init<Scalar: BLASScalar>(_ scalars: [Scalar]) {
        self.init(Tensor(scalars))
    }
}

// MARK: - Zip, stored entries only

/// CRC-32 (ISO 3309, the zip and gzip checksum), table-driven.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for byte in bytes { crc = t[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        }
        return crc ^ 0xFFFF_FFFF
    }
}

/// Reads the central directory of a zip archive and the stored entries it names.
///
/// Every offset and size read from the archive is checked against its length
/// before any arithmetic, so no field can overflow; each entry's local header
/// and data must lie inside the archive, and no two entries may share bytes
/// (a directory whose records all point at one large entry would otherwise
/// copy it once per record). So the entries' bytes add up to at most the
/// archive's size.
struct ZipReader {
    struct Entry {
        var name: String
        var method: Int
        var crc: UInt32
        var size: Int
        var compressedSize: Int
        var localHeaderOffset: Int
        /// Where the data starts, after the local header (set by ``ZipReader/entries()``).
        var dataOffset = 0
    }

    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    private func bad(_ expected: String, _ found: String) -> NormError {
        .invalidNumPyData(expected: expected, found: found)
    }

    /// The little-endian integer of `width` bytes at `offset`, which must lie
    /// inside the archive.
    private func integer(_ offset: Int, _ width: Int) throws(NormError) -> Int {
        guard offset >= 0, width <= bytes.count, offset <= bytes.count - width else {
            throw bad("a zip record at byte \(offset)", "an archive of \(bytes.count) bytes")
        }
        var value: UInt64 = 0
        for k in 0..<width { value |= UInt64(bytes[offset + k]) << (8 * UInt64(k)) }
        guard value <= UInt64(Int.max) else { throw bad("a size that fits Int", "\(value)") }
        return Int(value)
    }

    /// An offset or size read from the archive, which must not exceed its length
    /// (so that adding a record's fixed fields to it cannot overflow).
    private func within(_ value: Int, _ what: String) throws(NormError) -> Int {
        guard value <= bytes.count else {
            throw bad("\(what) within the archive's \(bytes.count) bytes", "\(value)")
        }
        return value
    }

    func entries() throws(NormError) -> [Entry] {
        // The end-of-central-directory record: its signature, searched from
        // the end over at most a 65,535-byte comment.
        var eocd = -1
        if bytes.count >= 22 {
            for offset in stride(from: bytes.count - 22, through: max(0, bytes.count - 22 - 65535), by: -1)
            where try integer(offset, 4) == 0x0605_4B50 {
                eocd = offset
                break
            }
        }
        guard eocd >= 0 else { throw bad("a zip archive (.npz)", "no end-of-central-directory record") }
        var count = try integer(eocd + 10, 2)
        var directory = try integer(eocd + 16, 4)
        if count == 0xFFFF || directory == 0xFFFF_FFFF {
            // Zip64: the locator just before the record points at the zip64 record.
            guard eocd >= 20, try integer(eocd - 20, 4) == 0x0706_4B50 else {
                throw bad("a zip64 end-of-central-directory locator", "none")
            }
            let record = try within(integer(eocd - 20 + 8, 8), "the zip64 record's offset")
            guard try integer(record, 4) == 0x0606_4B50 else {
                throw bad("a zip64 end-of-central-directory record", "none at byte \(record)")
            }
            count = try integer(record + 32, 8)
            directory = try integer(record + 48, 8)
        }
        directory = try within(directory, "the central directory's offset")
        // Each directory record takes at least 46 bytes.
        guard count <= (bytes.count - directory) / 46 else {
            throw bad("at most \((bytes.count - directory) / 46) directory records in the archive", "\(count)")
        }
        var entries: [Entry] = []
        var offset = directory
        for _ in 0..<count {
            guard try integer(offset, 4) == 0x0201_4B50 else {
                throw bad("a central directory entry", "none at byte \(offset)")
            }
            let nameLength = try integer(offset + 28, 2), extraLength = try integer(offset + 30, 2)
            let commentLength = try integer(offset + 32, 2)
            guard offset + 46 + nameLength <= bytes.count else { throw bad("an entry name", "a truncated archive") }
            var entry = Entry(
                name: String(decoding: bytes[(offset + 46) ..< (offset + 46 + nameLength)], as: UTF8.self),
                method: try integer(offset + 10, 2), crc: UInt32(try integer(offset + 16, 4)),
                size: try integer(offset + 24, 4), compressedSize: try integer(offset + 20, 4),
                localHeaderOffset: try integer(offset + 42, 4))
            // The zip64 extra field holds, in this order, the values whose
            // 32-bit fields are saturated.
            var extra = offset + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = try integer(extra, 2), length = try integer(extra + 2, 2)
                if id == 0x0001 {
                    var field = extra + 4
                    if entry.size == 0xFFFF_FFFF { entry.size = try integer(field, 8); field += 8 }
                    if entry.compressedSize == 0xFFFF_FFFF { entry.compressedSize = try integer(field, 8); field += 8 }
                    if entry.localHeaderOffset == 0xFFFF_FFFF { entry.localHeaderOffset = try integer(field, 8) }
                }
                extra += 4 + length
            }
            entry.size = try within(entry.size, "the size of '\(entry.name)'")
            entry.compressedSize = try within(entry.compressedSize, "the stored size of '\(entry.name)'")
            let header = try within(entry.localHeaderOffset, "the local header of '\(entry.name)'")
            guard try integer(header, 4) == 0x0403_4B50 else {
                throw bad("a local file header for '\(entry.name)'", "none at byte \(header)")
            }
            entry.dataOffset = header + 30 + (try integer(header + 26, 2)) + (try integer(header + 28, 2))
            guard entry.dataOffset <= bytes.count, entry.compressedSize <= bytes.count - entry.dataOffset else {
                throw bad("\(entry.compressedSize) bytes of '\(entry.name)'", "a truncated archive")
            }
            entries.append(entry)
            offset = extraEnd + commentLength
        }
        // No two entries share bytes, and no name comes twice.
        let byOffset = entries.sorted { $0.localHeaderOffset < $1.localHeaderOffset }
        for (a, b) in zip(byOffset, byOffset.dropFirst()) where b.localHeaderOffset < a.dataOffset + a.compressedSize {
            throw bad("entries that do not overlap", "'\(b.name)' at byte \(b.localHeaderOffset) inside '\(a.name)'")
        }
        var names = Set<String>()
        for entry in entries where !names.insert(entry.name).inserted {
            throw bad("one entry named '\(entry.name)'", "two")
        }
        return entries
    }

    /// The bytes of a stored entry, checked against its CRC-32.
    func contents(of entry: Entry) throws(NormError) -> [UInt8] {
        guard entry.method == 0 else {
            throw bad("stored entries (numpy.savez)",
                      "'\(entry.name)' compressed with method \(entry.method) (numpy.savez_compressed)")
        }
        guard entry.size == entry.compressedSize else {
            throw bad("\(entry.size) bytes of '\(entry.name)'", "\(entry.compressedSize) stored")
        }
        let data = bytes[entry.dataOffset ..< entry.dataOffset + entry.size]
        let crc = CRC32.checksum(data)
        guard crc == entry.crc else {
            throw bad("CRC-32 \(entry.crc) for '\(entry.name)'", "\(crc)")
        }
        return Array(data)
    }
}

/// Writes a zip archive of stored entries (no compression, no zip64).
struct ZipWriter {
    private var bytes: [UInt8] = []
    private var directory: [UInt8] = []
    private var count = 0

    private static func append(_ value: Int, _ width: Int, to bytes: inout [UInt8]) {
        for k in 0..<width { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * k))) }
    }

    mutating func append(name: String, contents: [UInt8]) throws(NormError) {
        let nameBytes = Array(name.utf8)
        // The name's length and the entry count are 16-bit fields.
        guard nameBytes.count <= 0xFFFF else {
            throw .invalidNumPyData(expected: "an entry name of at most 65,535 bytes",
                                    found: "\(nameBytes.count) bytes")
        }
        guard count < 0xFFFE else {   // 0xFFFF in the end record means zip64
            throw .invalidNumPyData(expected: "at most 65,534 entries", found: "more")
        }
        let offset = bytes.count
        guard offset + 30 + nameBytes.count + contents.count < 0xFFFF_FFFF else {
            throw .sizeTooLarge(offset + contents.count)
        }
        let crc = Int(CRC32.checksum(contents[...]))
        // Version 2.0, no flags, stored, time 00:00, date 1980-01-01.
        let common: [(Int, Int)] = [(20, 2), (0, 2), (0, 2), (0, 2), (0x21, 2), (crc, 4),
                                    (contents.count, 4), (contents.count, 4), (nameBytes.count, 2), (0, 2)]
        Self.append(0x0403_4B50, 4, to: &bytes)
        for (value, width) in common { Self.append(value, width, to: &bytes) }
        bytes += nameBytes
        bytes += contents

        Self.append(0x0201_4B50, 4, to: &directory)
        Self.append(20, 2, to: &directory)                       // made by: version 2.0
        for (value, width) in common { Self.append(value, width, to: &directory) }
        for (value, width) in [(0, 2), (0, 2), (0, 2), (0, 4), (offset, 4)] {
            Self.append(value, width, to: &directory)            // comment, disk, attributes, offset
        }
        directory += nameBytes
        count += 1
    }

    func finish() throws(NormError) -> [UInt8] {
        guard bytes.count + directory.count < 0xFFFF_FFFF else {
            throw .sizeTooLarge(bytes.count + directory.count)
        }
        var out = bytes + directory
        Self.append(0x0605_4B50, 4, to: &out)
        for (value, width) in [(0, 2), (0, 2), (count, 2), (count, 2),
                               (directory.count, 4), (bytes.count, 4), (0, 2)] {
            Self.append(value, width, to: &out)
        }
        return out
    }
}

extension NormError {
    /// The error with the archive entry it concerns named in front of what was
    /// expected (for ``NormError/invalidNumPyData(expected:found:)``; other
    /// errors are returned unchanged).
    func naming(entry: String) -> NormError {
        guard case let .invalidNumPyData(expected, found) = self, !expected.hasPrefix("'\(entry)': ") else { return self }
        return .invalidNumPyData(expected: "'\(entry)': \(expected)", found: found)
    }
}

/// One array in NumPy's `.npy` format: a data-type descriptor, a shape and the
/// raw bytes in C order, so that arrays of any type (a PyTorch `state_dict`'s
/// `int64` counter next to its `float32` weights) pass through an `.npz`
/// archive; ``Tensor/init(_:)-(NumPyArray)`` reads the `<f2`, `<f4` and `<f8` ones.
///
/// Reads formats 1.0 and 2.0 (the header length in 2 or 4 bytes) and writes
/// 1.0, or 2.0 for a header longer than 65,535 bytes, as `numpy.save` does.
/// A Fortran-order array (scikit-learn's arrays often are) is read into C
/// order. Big-endian data and malformed headers are a
/// ``NormError/invalidNumPyData(expected:found:)``.
public struct NumPyArray: Sendable, Hashable {
    /// NumPy's type string: byte order (`<` little-endian, `|` not applicable),
    /// kind and item size, e.g. `<f4` (`float32`), `<f8`, `<i8` (`int64`).
    public let descriptor: String
    /// The extent of each dimension; `[]` for a NumPy scalar (one item).
    public let shape: [Int]
    /// The items in C order, `itemSize * product(shape)` bytes.
    public let data: [UInt8]

    /// The bytes per item, from ``descriptor``.
    public var itemSize: Int { Int(descriptor.dropFirst(2)) ?? 0 }

    /// An array from its parts.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` for a
    ///   descriptor that is not a little-endian (or byte-order-free) NumPy type
    ///   string, or a byte count other than `itemSize * product(shape)`;
    ///   ``NormError/negativeDimension(shape:)``, ``NormError/shapeOverflow(shape:)``.
    /// - Complexity: O(1); the bytes are not copied.
    public init(descriptor: String, shape: [Int], data: [UInt8]) throws(NormError) {
        let bytes = try NumPyArray.byteCount(descriptor: descriptor, shape: shape)
        guard bytes == data.count else {
            throw .invalidNumPyData(expected: "\(bytes) bytes of data for shape \(shape)", found: "\(data.count)")
        }
        self.descriptor = descriptor
        self.shape = shape
        self.data = data
    }

    /// The bytes of data that `descriptor` and `shape` call for.
    /// - Throws: as ``init(descriptor:shape:data:)``, for a descriptor that is
    ///   not a little-endian NumPy type string or a size that overflows `Int`.
    static func byteCount(descriptor: String, shape: [Int]) throws(NormError) -> Int {
        let characters = Array(descriptor)
        guard characters.count >= 3, characters[0] == "<" || characters[0] == "|",
              characters[1].isLetter, let size = Int(String(characters[2...])), size > 0 else {
            throw .invalidNumPyData(expected: "a little-endian type such as '<f4'",
                                    found: "'\(descriptor)'")
        }
        let count = try Tensor<Float>.elementCount(of: shape)
        let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow else {
            throw .invalidNumPyData(expected: "a data size that fits Int for shape \(shape)",
                                    found: "\(count) items of \(size) bytes")
        }
        return bytes
    }

    /// The array of a tensor: descriptor `<f4` or `<f8`, its shape and scalars.
    /// - Complexity: O(count).
    public init<Scalar: BLASScalar>(_ tensor: Tensor<Scalar>) {
        descriptor = NumPyArray.descriptor(of: Scalar.self)
        shape = tensor.shape
        data = tensor.scalars.withUnsafeBytes { Array($0) }
    }

    /// The descriptor of `Scalar`'s IEEE format, `<f4` or `<f8`.
    static func descriptor<Scalar: BLASScalar>(of _: Scalar.Type) -> String {
        "<f\(MemoryLayout<Scalar>.size)"
    }

    // MARK: .npy bytes

    /// Parses the bytes of a `.npy` file.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` naming what
    ///   is wrong: the magic string, the version, the header, the descriptor
    ///   or the data length. An array in Fortran order (`'fortran_order':
    ///   True`) is read into C order, the order of ``data``.
    /// - Complexity: O(bytes).
    public init(npy bytes: [UInt8]) throws(NormError) {
        var offset = 0
        try self.init(available: bytes.count) { (count: Int) throws(NormError) -> [UInt8] in
            let end = offset + min(count, bytes.count - offset)
            defer { offset = end }
            return Array(bytes[offset..<end])
        }
    }

    /// The longest header read, 1 MiB: `numpy.save` writes a few hundred
    /// bytes (and `numpy.load` refuses more than 10,000 by default).
    static let maximumHeaderLength = 1 << 20

    /// Reads a `.npy` file's parts from `read(count)` (which returns up to
    /// `count` further bytes): the magic string and preamble first, then the
    /// header, then exactly the data the header declares. `available` is the
    /// number of bytes the source holds, when known: a declared size larger
    /// than that is refused before anything is read, and so are bytes past
    /// the data.
    private init(
        available: Int?, read: (Int) throws(NormError) -> [UInt8]
    ) throws(NormError) {
        let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
        let preamble = try read(10)
        guard preamble.count == 10, Array(preamble[0..<6]) == magic else {
            throw .invalidNumPyData(expected: "the magic string \\x93NUMPY", found: "\(preamble.prefix(6))")
        }
        let major = preamble[6]
        let headerStart: Int, headerLength: Int
        switch major {
        case 1:
            headerStart = 10
            headerLength = Int(preamble[8]) | Int(preamble[9]) << 8
        case 2:
            let rest = try read(2)
            guard rest.count == 2 else {
                throw .invalidNumPyData(expected: "a 12-byte preamble", found: "\(10 + rest.count) bytes")
            }
            headerStart = 12
            let lengthBytes: [UInt8] = [preamble[8], preamble[9], rest[0], rest[1]]
            headerLength = (0..<4).reduce(0) { $0 | Int(lengthBytes[$1]) << (8 * $1) }
        default:
            throw .invalidNumPyData(expected: "format version 1.0 or 2.0", found: "\(major).\(preamble[7])")
        }
        guard headerLength <= NumPyArray.maximumHeaderLength else {
            throw .invalidNumPyData(expected: "a header of at most \(NumPyArray.maximumHeaderLength) bytes",
                                    found: "\(headerLength) bytes")
        }
        if let available, headerStart + headerLength > available {
            throw .invalidNumPyData(expected: "a header of \(headerLength) bytes", found: "\(available - headerStart)")
        }
        let headerBytes = try read(headerLength)
        guard headerBytes.count == headerLength else {
            throw .invalidNumPyData(expected: "a header of \(headerLength) bytes", found: "\(headerBytes.count)")
        }
        let parsed = try NumPyHeader(parsing: String(decoding: headerBytes, as: UTF8.self))
        // The data's size, from the descriptor and shape alone, before any of it is read.
        let declared = try NumPyArray.byteCount(descriptor: parsed.descriptor, shape: parsed.shape)
        if let available, available - headerStart - headerLength != declared {
            throw .invalidNumPyData(expected: "\(declared) bytes of data for shape \(parsed.shape)",
                                    found: "\(available - headerStart - headerLength)")
        }
        let data = try read(declared)
        let trailing = available == nil && data.count == declared ? try read(1) : []
        guard data.count == declared, trailing.isEmpty else {
            throw .invalidNumPyData(expected: "\(declared) bytes of data for shape \(parsed.shape)",
                                    found: data.count < declared ? "\(data.count)" : "more")
        }
        guard parsed.fortranOrder, parsed.shape.count > 1 else {
            try self.init(descriptor: parsed.descriptor, shape: parsed.shape, data: data)
            return
        }
        // Fortran order: the data is the C-order array of the reversed shape;
        // reversing its axes gives the C order of `shape`.
        let rank = parsed.shape.count
        let itemSize = Int(parsed.descriptor.dropFirst(2)) ?? 1
        try self.init(descriptor: parsed.descriptor, shape: parsed.shape,
                      data: AxisPermutation.copyBytes(data, shape: parsed.shape.reversed(),
                                                      axes: Array((0..<rank).reversed()), itemSize: itemSize))
    }

    /// The bytes of a `.npy` file holding this array, as `numpy.save` writes them.
    /// - Complexity: O(bytes).
    public var npy: [UInt8] {
        let dimensions = shape.map(String.init).joined(separator: ", ")
        let tuple = shape.count == 1 ? "(\(dimensions),)" : "(\(dimensions))"
        var header = Array("{'descr': '\(descriptor)', 'fortran_order': False, 'shape': \(tuple), }".utf8)
        let version: UInt8 = header.count + 11 > 65535 ? 2 : 1
        let preamble = version == 1 ? 10 : 12
        // Pad with spaces so that the data starts on a 64-byte boundary; end with a newline.
        let total = (preamble + header.count + 1 + 63) / 64 * 64
        header += Array(repeating: UInt8(ascii: " "), count: total - preamble - header.count - 1)
        header.append(UInt8(ascii: "\n"))
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version, 0]
        for k in 0..<(version == 1 ? 2 : 4) { bytes.append(UInt8(truncatingIfNeeded: header.count >> (8 * k))) }
        bytes.reserveCapacity(bytes.count + header.count + data.count)
        return bytes + header + data
    }

    // MARK: Files

    /// Reads a `.npy` file.
    /// - Throws: ``NormError/fileError(path:reason:)``, and the errors of ``init(npy:)``.
    ///   The magic string and header are read first, then only the data the
    ///   header declares: a file that is not a `.npy`, or declares more data
    ///   than it holds, is refused after a few bytes.
    public init(contentsOf path: String) throws(NormError) {
        let file = try FileBytes.open(path)
        try self.init(available: file.size) { (count: Int) throws(NormError) -> [UInt8] in
            try file.read(upTo: count)
        }
    }

    /// Writes this array to a `.npy` file, replacing any file at `path`.
    /// - Throws: ``NormError/fileError(path:reason:)``.
    public func write(to path: String) throws(NormError) {
        try FileBytes.write(npy, to: path)
    }

    // MARK: Integers

    /// The items of an integer array (`<i8`, `<i4`, `<i2`, `|i1`, `<u4`,
    /// `<u2`, `|u1`), such as a `state_dict`'s `num_batches_tracked`.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` for another
    ///   type, or a value outside `Int`.
    /// - Complexity: O(count).
    public func integers() throws(NormError) -> [Int] {
        let kind = Array(descriptor)[1], size = itemSize
        guard (kind == "i" && [1, 2, 4, 8].contains(size)) || (kind == "u" && [1, 2, 4].contains(size)) else {
            throw .invalidNumPyData(expected: "an integer array", found: "'\(descriptor)'")
        }
        return stride(from: 0, to: data.count, by: size).map { start in
            var value: UInt64 = 0
            for k in 0..<size { value |= UInt64(data[start + k]) << (8 * UInt64(k)) }
            if kind == "i" && size < 8 && value >> (8 * UInt64(size) - 1) & 1 == 1 {
                value |= ~0 << (8 * UInt64(size))   // sign-extend
            }
            return Int(Int64(bitPattern: value))
        }
    }

    /// A NumPy `int64` scalar (shape `()`), as PyTorch saves a counter such as
    /// `num_batches_tracked`.
    /// - Complexity: O(1).
    public init(integer value: Int) {
        descriptor = "<i8"
        shape = []
        data = withUnsafeBytes(of: Int64(value).littleEndian) { Array($0) }
    }
}

extension NumPyArray {
    // MARK: Float16

    /// The items of a `<f2` (`float16`) array, bit for bit, for the 16-bit
    /// entry points (``ReducedPrecisionLayer``). NumPy has no bfloat16; save
    /// its bit patterns as `<u2` and read them with ``integers()``.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` for another type.
    /// - Complexity: O(count).
    public func float16Values() throws(NormError) -> [Float16] {
        guard descriptor == "<f2" else {
            throw .invalidNumPyData(expected: "'<f2' for [Float16]", found: "'\(descriptor)'")
        }
        return stride(from: 0, to: data.count, by: 2).map {
            Float16(bitPattern: UInt16(data[$0]) | UInt16(data[$0 + 1]) << 8)
        }
    }

    /// A `<f2` (`float16`) array of `values` in `shape`, which `numpy.load`
    /// reads as `float16`.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` when the
    ///   product of `shape` is not `values.count`.
    /// - Complexity: O(count).
    public init(_ values: [Float16], shape: [Int]) throws(NormError) {
        let data = values.flatMap { [UInt8($0.bitPattern & 0xff), UInt8($0.bitPattern >> 8)] }
        try self.init(descriptor: "<f2", shape: shape, data: data)
    }
}

extension Tensor {
    /// The tensor of a NumPy floating-point array, with its shape (a NumPy
    /// scalar becomes shape `[]`): `<f2`, `<f4` or `<f8`, widened or narrowed
    /// to `Scalar` (PyTorch saves float32 by default; a `Tensor<Double>`
    /// takes it exactly). Narrowing `<f8` to `Float` rounds to the nearest,
    /// ties to even.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` for another
    ///   type (an integer array: convert in NumPy with `astype`), or for a
    ///   finite `<f8` value beyond `Float`'s range (naming its index), which
    ///   would become an infinity.
    /// - Complexity: O(count).
    public init(_ array: NumPyArray) throws(NormError) {
        let count = array.data.count / max(array.itemSize, 1)
        var scalars = [Scalar].unspecified(count: count)
        switch array.descriptor {
        case NumPyArray.descriptor(of: Scalar.self):
            scalars.withUnsafeMutableBytes { $0.copyBytes(from: array.data) }
        case "<f2":
            let values = try array.float16Values()
            for i in 0..<count { scalars[i] = Scalar(Float(values[i])) }
        case "<f4", "<f8":
            let overflow: (index: Int, value: Double)? = array.data.withUnsafeBytes { bytes in
                for i in 0..<count {
                    let value = array.descriptor == "<f4"
                        ? Double(bytes.loadUnaligned(fromByteOffset: 4 * i, as: Float.self))
                        : bytes.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)
                    scalars[i] = Scalar(value)
                    if value.isFinite, !scalars[i].isFinite { return (i, value) }
                }
                return nil
            }
            if let overflow {
                throw .invalidNumPyData(expected: "values that fit Tensor<\(Scalar.self)>",
                                        found: "\(overflow.value) at index \(overflow.index)")
            }
        default:
            throw .invalidNumPyData(expected: "a floating-point array ('<f2', '<f4' or '<f8') for Tensor<\(Scalar.self)>",
                                    found: "'\(array.descriptor)'")
        }
        self.init(validatedShape: array.shape, scalars: scalars)
    }

    /// Reads a `.npy` file of this scalar type.
    /// - Throws: ``NormError/fileError(path:reason:)``,
    ///   ``NormError/invalidNumPyData(expected:found:)``.
    public init(npyFile path: String) throws(NormError) {
        try self.init(NumPyArray(contentsOf: path))
    }

    /// Writes the tensor to a `.npy` file that `numpy.load` reads.
    /// - Throws: ``NormError/fileError(path:reason:)``.
    public func writeNPY(to path: String) throws(NormError) {
        try NumPyArray(self).write(to: path)
    }
}

/// The three keys of a `.npy` header, a Python dictionary literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
struct NumPyHeader {
    var descriptor: String
    var fortranOrder: Bool
    var shape: [Int]

    init(parsing header: String) throws(NormError) {
        let text = Array(header.unicodeScalars)
        func bad(_ what: String) -> NormError {
            .invalidNumPyData(expected: what, found: "the header \(header.debugDescription)")
        }
        /// The index just after `key` and its colon.
        func value(of key: String) throws(NormError) -> Int {
            for quote in ["'", "\""] {
                let needle = Array((quote + key + quote).unicodeScalars)
                guard needle.count <= text.count else { continue }
                for start in 0...(text.count - needle.count) where Array(text[start ..< start + needle.count]) == needle {
                    var i = start + needle.count
                    while i < text.count, text[i] == " " { i += 1 }
                    guard i < text.count, text[i] == ":" else { continue }
                    i += 1
                    while i < text.count, text[i] == " " { i += 1 }
                    return i
                }
            }
            throw bad("a '\(key)' entry")
        }
        var i = try value(of: "descr")
        guard i < text.count, text[i] == "'" || text[i] == "\"" else { throw bad("a quoted 'descr'") }
        let quote = text[i]
        i += 1
        var descriptor = ""
        while i < text.count, text[i] != quote { descriptor.unicodeScalars.append(text[i]); i += 1 }
        guard i < text.count else { throw bad("a quoted 'descr'") }
        self.descriptor = descriptor

        i = try value(of: "fortran_order")
        let rest = String(String.UnicodeScalarView(text[i...]))
        if rest.hasPrefix("False") { fortranOrder = false }
        else if rest.hasPrefix("True") { fortranOrder = true }
        else { throw bad("'fortran_order': True or False") }

        i = try value(of: "shape")
        guard i < text.count, text[i] == "(" else { throw bad("a 'shape' tuple") }
        i += 1
        var shape: [Int] = [], digits = ""
        while i < text.count, text[i] != ")" {
            let c = text[i]
            if c.properties.numericType != nil { digits.unicodeScalars.append(c) }
            else if c == "," || c == " " || c == "L" {
                if c == ",", !digits.isEmpty {
                    guard let n = Int(digits) else { throw bad("integer dimensions") }
                    shape.append(n)
                    digits = ""
                }
            } else { throw bad("integer dimensions") }
            i += 1
        }
        guard i < text.count else { throw bad("a closed 'shape' tuple") }
        if !digits.isEmpty {
            guard let n = Int(digits) else { throw bad("integer dimensions") }
            shape.append(n)
        }
        self.shape = shape
    }
}

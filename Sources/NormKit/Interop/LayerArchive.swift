// A layer's native archive: its Codable form written into a NumPy archive,
// one entry per value, so that `numpy.load` reads every setting by name.
//
//   value kind              entry
//   Float, Double           0-d '<f4', '<f8'
//   Int, Bool               0-d '<i8', '|b1'
//   String (enum raw value) 0-d '|S<n>' (UTF-8 bytes)
//   [Float], [Double], [Int] 1-d '<f4', '<f8', '<i8'
//   nested keyed value      its keys joined with '.', e.g. 'method.newtonSchulz.iterations';
//                           an empty one is a marker entry '|b1' of shape (0,)
//   other arrays            one entry per element, 'name.0', 'name.1', ...
//   nil                     no entry
//
// Decoding reads the same names, widens or narrows '<f4'/'<f8' to the layer's
// Scalar as `NumPyArchive.tensor(_:as:)` does, and goes through the layer's
// validating `init(from:)`; every error is a NormError that names the entry.

/// A layer that writes every setting and parameter to a NumPy archive and
/// reads it back: ``archive()`` and ``init(archive:)`` round-trip the layer
/// exactly (`==`).
///
/// The archive holds one entry per property of the layer's `Codable` form
/// (`gamma`, `epsilon`, `runningStatistics`, ...) and a `layer` entry naming
/// the type, so `numpy.load` shows each by name; floating-point values are in
/// the layer's `Scalar` (`<f4` or `<f8`), counts `<i8`, and settings their
/// raw value as bytes (`|S`). This is NormKit's own format; for PyTorch's key
/// names use each layer's `pytorchState(prefix:)`.
///
/// ```swift
/// import NormKit
///
/// var bn = try BatchNorm<Float>(featureCount: 3, momentum: 0.8, runningStatistics: .cumulative)
/// bn.gamma = [1.5, 0.25, -2]
/// try bn.archive().write(to: "bn.npz")
/// let again = try BatchNorm<Float>(archive: NumPyArchive(contentsOf: "bn.npz"))
/// assert(again == bn)
/// ```
public protocol ArchivableLayer: Codable {
    /// The type's name in the archive's `layer` entry, e.g. `BatchNorm`, checked on reading.
    static var archiveName: String { get }
}

extension ArchivableLayer {
    /// The type's name without its generic argument, e.g. `BatchNorm`: an
    /// archive of a `BatchNorm<Float>` reads into a `BatchNorm<Double>`.
    public static var archiveName: String { String(String(describing: Self.self).prefix { $0 != "<" }) }

    /// The layer as a NumPy archive: its `Codable` form, one entry per value,
    /// and `layer` naming the type.
    /// - Complexity: O(parameters).
    public func archive() -> NumPyArchive {
        let storage = ArchiveStorage()
        do {
            try encode(to: ArchiveEncoder(storage: storage, path: "", codingPath: []))
        } catch {
            // The encoder stores every value kind a Codable tree can hold.
            preconditionFailure("NumPy archive encoding cannot fail: \(error)")
        }
        storage.finish()
        storage.archive["layer"] = NumPyArray(text: Self.archiveName)
        return storage.archive
    }

    /// Reads a layer written by ``archive()``, widening or narrowing its
    /// floating-point entries to this layer's `Scalar`, and validates it as
    /// the layer's initializer and `forward` do.
    /// - Throws: ``NormError/invalidNumPyData(expected:found:)`` naming a
    ///   missing entry, one of the wrong type or rank, or a `layer` entry
    ///   naming another type; the initializer's errors for invalid settings
    ///   (a negative `epsilon`, a `gamma` of the wrong length, ...).
    /// - Complexity: O(parameters).
    public init(archive: NumPyArchive) throws(NormError) {
        if archive["layer"] != nil {
            let name = try ArchiveDecoder.primitive(String.self, at: "layer", in: archive) ?? ""
            guard name == Self.archiveName else {
                throw .invalidNumPyData(expected: "'layer': an archive of a \(Self.archiveName)",
                                        found: "an archive of a \(name)")
            }
        }
        do {
            self = try Self(from: ArchiveDecoder(archive: archive, path: "", codingPath: []))
        } catch let error as NormError {
            throw error
        } catch let DecodingError.dataCorrupted(context) {
            if let error = context.underlyingError as? NormError { throw error }
            let entry = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw .invalidNumPyData(expected: "'\(entry)': a valid \(Self.archiveName) setting",
                                    found: context.debugDescription)
        } catch {
            throw .invalidNumPyData(expected: "a valid \(Self.archiveName)", found: "\(error)")
        }
    }
}

// MARK: - Values

extension NumPyArray {
    /// A NumPy bytes scalar (`|S<n>`, shape `()`) of the UTF-8 of `text`, as
    /// `numpy.bytes_` holds it; ``ArchivableLayer/archive()`` stores settings so.
    /// NumPy drops trailing NUL bytes, and so does reading it back.
    /// - Complexity: O(`text.utf8.count`).
    public init(text: String) {
        var bytes = Array(text.utf8)
        if bytes.isEmpty { bytes = [0] }   // NumPy strips trailing NULs
        descriptor = "|S\(bytes.count)"
        shape = []
        data = bytes
    }

    /// The array of one encodable primitive or flat array, or `nil` for any other value.
    static func primitive(_ value: Any) -> NumPyArray? {
        switch value {
        case let v as Float: return NumPyArray(Tensor(validatedShape: [], scalars: [v]))
        case let v as Double: return NumPyArray(Tensor(validatedShape: [], scalars: [v]))
        case let v as [Float]: return NumPyArray(Tensor(validatedShape: [v.count], scalars: v))
        case let v as [Double]: return NumPyArray(Tensor(validatedShape: [v.count], scalars: v))
        case let v as Int: return NumPyArray(integer: v)
        case let v as [Int]:
            let bytes = v.flatMap { value in withUnsafeBytes(of: Int64(value).littleEndian) { Array($0) } }
            return try? NumPyArray(descriptor: "<i8", shape: [v.count], data: bytes)
        case let v as Bool: return try? NumPyArray(descriptor: "|b1", shape: [], data: [v ? 1 : 0])
        case let v as String: return NumPyArray(text: v)
        case let v as Float16: return try? NumPyArray([v], shape: [])
        case let v as any FixedWidthInteger:
            guard let wide = Int64(exactly: v) else { return nil }
            return NumPyArray(integer: Int(wide))
        default: return nil
        }
    }
}

/// The archive an encoder writes into, shared by its nested containers.
final class ArchiveStorage {
    var archive = NumPyArchive()
    /// The paths of nested keyed containers, so an empty one leaves a marker.
    var containers: [String] = []

    /// Writes a marker for each nested keyed container that holds no entry.
    func finish() {
        for path in containers.reversed() where !ArchiveDecoder.holds(path, in: archive) {   // children first
            archive[path] = try? NumPyArray(descriptor: "|b1", shape: [0], data: [])
        }
    }
}

/// The entry name of `key` under `path`.
private func join(_ path: String, _ key: String) -> String {
    path.isEmpty ? key : path + "." + key
}

/// An integer-keyed coding key, for the elements of unkeyed containers.
private struct IndexKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue; intValue = Int(stringValue) }
    init(intValue: Int) { stringValue = String(intValue); self.intValue = intValue }
}

// MARK: - Encoding

struct ArchiveEncoder: Encoder {
    let storage: ArchiveStorage
    let path: String
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    /// Stores `value` at `name`: a primitive as one entry, anything else
    /// through its own `encode(to:)` under `name`.
    static func store<T: Encodable>(_ value: T, at name: String, storage: ArchiveStorage,
                                    codingPath: [any CodingKey]) throws {
        if let array = NumPyArray.primitive(value) {
            storage.archive[name.isEmpty ? "value" : name] = array
        } else {
            try value.encode(to: ArchiveEncoder(storage: storage, path: name, codingPath: codingPath))
        }
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if !path.isEmpty { storage.containers.append(path) }
        return KeyedEncodingContainer(KeyedArchiveEncoding<Key>(storage: storage, path: path, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        UnkeyedArchiveEncoding(storage: storage, path: path, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleArchiveEncoding(storage: storage, path: path, codingPath: codingPath)
    }
}

private struct KeyedArchiveEncoding<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let storage: ArchiveStorage
    let path: String
    let codingPath: [any CodingKey]

    mutating func encodeNil(forKey key: Key) throws {}

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try ArchiveEncoder.store(value, at: join(path, key.stringValue), storage: storage,
                                 codingPath: codingPath + [key])
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        superEncoder(forKey: key).container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        superEncoder(forKey: key).unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        ArchiveEncoder(storage: storage, path: join(path, "super"), codingPath: codingPath)
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        ArchiveEncoder(storage: storage, path: join(path, key.stringValue), codingPath: codingPath + [key])
    }
}

private struct UnkeyedArchiveEncoding: UnkeyedEncodingContainer {
    let storage: ArchiveStorage
    let path: String
    let codingPath: [any CodingKey]
    var count = 0

    init(storage: ArchiveStorage, path: String, codingPath: [any CodingKey]) {
        (self.storage, self.path, self.codingPath) = (storage, path, codingPath)
    }

    /// The encoder of the next element, `path.count`.
    private mutating func next() -> (name: String, codingPath: [any CodingKey]) {
        defer { count += 1 }
        return (join(path, String(count)), codingPath + [IndexKey(intValue: count)])
    }

    mutating func encodeNil() throws { _ = next() }

    mutating func encode<T: Encodable>(_ value: T) throws {
        let (name, codingPath) = next()
        try ArchiveEncoder.store(value, at: name, storage: storage, codingPath: codingPath)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type)
        -> KeyedEncodingContainer<NestedKey> {
        superEncoder().container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        superEncoder().unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        let (name, codingPath) = next()
        return ArchiveEncoder(storage: storage, path: name, codingPath: codingPath)
    }
}

private struct SingleArchiveEncoding: SingleValueEncodingContainer {
    let storage: ArchiveStorage
    let path: String
    let codingPath: [any CodingKey]

    mutating func encodeNil() throws {}

    mutating func encode<T: Encodable>(_ value: T) throws {
        // A single value that is not a primitive would ask for this container again.
        guard let array = NumPyArray.primitive(value) else {
            throw EncodingError.invalidValue(value, .init(codingPath: codingPath,
                debugDescription: "a NumPy archive holds numbers, booleans, text and flat arrays"))
        }
        storage.archive[path.isEmpty ? "value" : path] = array
    }
}

// MARK: - Decoding

struct ArchiveDecoder: Decoder {
    let archive: NumPyArchive
    let path: String
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    /// Whether `archive` has an entry at `name` or below it.
    static func holds(_ name: String, in archive: NumPyArchive) -> Bool {
        archive[name] != nil || archive.names.contains { $0.hasPrefix(name + ".") }
    }

    /// The entry at `name`, or an error naming it.
    static func entry(_ name: String, in archive: NumPyArchive) throws(NormError) -> NumPyArray {
        guard let array = archive[name] else {
            throw .invalidNumPyData(expected: "an entry named '\(name)'", found: "\(archive.names)")
        }
        return array
    }

    /// A primitive or flat array read from the entry at `name`, or `nil`
    /// when `T` is not one of the primitive kinds.
    static func primitive<T>(_ type: T.Type, at name: String, in archive: NumPyArchive) throws(NormError) -> T? {
        func read() throws(NormError) -> Any? {
            if T.self == Float.self { return try scalars(Float.self, at: name, in: archive, rank: 0)[0] }
            if T.self == Double.self { return try scalars(Double.self, at: name, in: archive, rank: 0)[0] }
            if T.self == [Float].self { return try scalars(Float.self, at: name, in: archive, rank: 1) }
            if T.self == [Double].self { return try scalars(Double.self, at: name, in: archive, rank: 1) }
            if T.self == Int.self { return try integers(at: name, in: archive, rank: 0)[0] }
            if T.self == [Int].self { return try integers(at: name, in: archive, rank: 1) }
            if T.self == Float16.self {
                let array = try entry(name, in: archive)
                do throws(NormError) {
                    let values = try array.float16Values()
                    try checkRank(array, 0, name, "float16")
                    return values[0]
                } catch { throw error.naming(entry: name) }
            }
            if let integer = T.self as? any FixedWidthInteger.Type {
                let value = try integers(at: name, in: archive, rank: 0)[0]
                guard let exact = integer.init(exactly: value) else {
                    throw .invalidNumPyData(expected: "'\(name)': a value that fits \(T.self)", found: "\(value)")
                }
                return exact
            }
            if T.self == Bool.self {
                let array = try entry(name, in: archive)
                guard array.descriptor == "|b1", array.shape == [], array.data[0] <= 1 else {
                    throw .invalidNumPyData(expected: "'\(name)': a boolean scalar ('|b1', shape ())",
                                            found: "'\(array.descriptor)' of shape \(array.shape)")
                }
                return array.data[0] == 1
            }
            if T.self == String.self {
                let array = try entry(name, in: archive)
                guard array.descriptor.hasPrefix("|S"), array.shape == [] else {
                    throw .invalidNumPyData(expected: "'\(name)': a bytes scalar ('|S', shape ())",
                                            found: "'\(array.descriptor)' of shape \(array.shape)")
                }
                let bytes = array.data.prefix { $0 != 0 }
                guard let text = String(validating: bytes, as: UTF8.self) else {
                    throw .invalidNumPyData(expected: "'\(name)': UTF-8 text", found: "\(Array(bytes))")
                }
                return text
            }
            return nil
        }
        return try read().map { $0 as! T }
    }

    private static func checkRank(_ array: NumPyArray, _ rank: Int, _ name: String, _ kind: String) throws(NormError) {
        guard array.shape.count == rank else {
            throw .invalidNumPyData(expected: "'\(name)': \(rank == 0 ? "a \(kind) scalar, shape ()" : "a 1-d \(kind) array")",
                                    found: "shape \(array.shape)")
        }
    }

    private static func scalars<Scalar: BLASScalar>(
        _ type: Scalar.Type, at name: String, in archive: NumPyArchive, rank: Int
    ) throws(NormError) -> [Scalar] {
        let tensor = try archive.tensor(name, as: Scalar.self)
        try checkRank(try entry(name, in: archive), rank, name, "floating-point")
        return tensor.scalars
    }

    private static func integers(at name: String, in archive: NumPyArchive, rank: Int) throws(NormError) -> [Int] {
        let array = try entry(name, in: archive)
        do throws(NormError) {
            let values = try array.integers()
            try checkRank(array, rank, name, "integer")
            return values
        } catch { throw error.naming(entry: name) }
    }

    /// The value at `name`: a primitive from its entry, anything else through
    /// its own `init(from:)` under `name`.
    static func value<T: Decodable>(_ type: T.Type, at name: String, in archive: NumPyArchive,
                                    codingPath: [any CodingKey] = []) throws -> T {
        if let value = try primitive(type, at: name.isEmpty ? "value" : name, in: archive) { return value }
        return try T(from: ArchiveDecoder(archive: archive, path: name, codingPath: codingPath))
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(KeyedArchiveDecoding<Key>(archive: archive, path: path, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        UnkeyedArchiveDecoding(archive: archive, path: path, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleArchiveDecoding(archive: archive, path: path, codingPath: codingPath)
    }
}

private struct KeyedArchiveDecoding<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let archive: NumPyArchive
    let path: String
    let codingPath: [any CodingKey]

    var allKeys: [Key] {
        var seen: Set<String> = []
        return archive.names.compactMap { name -> Key? in
            let rest: Substring
            if path.isEmpty { rest = Substring(name) }
            else if name.hasPrefix(path + ".") { rest = name.dropFirst(path.count + 1) }
            else { return nil }
            let first = String(rest.prefix { $0 != "." })
            guard seen.insert(first).inserted else { return nil }
            return Key(stringValue: first)
        }
    }

    func contains(_ key: Key) -> Bool { ArchiveDecoder.holds(join(path, key.stringValue), in: archive) }

    func decodeNil(forKey key: Key) throws -> Bool { !contains(key) }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try ArchiveDecoder.value(type, at: join(path, key.stringValue), in: archive, codingPath: codingPath + [key])
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
        -> KeyedDecodingContainer<NestedKey> {
        try superDecoder(forKey: key).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try superDecoder(forKey: key).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        ArchiveDecoder(archive: archive, path: join(path, "super"), codingPath: codingPath)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        ArchiveDecoder(archive: archive, path: join(path, key.stringValue), codingPath: codingPath + [key])
    }
}

private struct UnkeyedArchiveDecoding: UnkeyedDecodingContainer {
    let archive: NumPyArchive
    let path: String
    let codingPath: [any CodingKey]
    var currentIndex = 0

    init(archive: NumPyArchive, path: String, codingPath: [any CodingKey]) {
        (self.archive, self.path, self.codingPath) = (archive, path, codingPath)
    }

    /// The elements are the consecutive entries `path.0`, `path.1`, ...
    var count: Int? {
        var n = 0
        while ArchiveDecoder.holds(join(path, String(n)), in: archive) { n += 1 }
        return n
    }

    var isAtEnd: Bool { currentIndex >= count! }

    private mutating func next() -> (name: String, codingPath: [any CodingKey]) {
        defer { currentIndex += 1 }
        return (join(path, String(currentIndex)), codingPath + [IndexKey(intValue: currentIndex)])
    }

    mutating func decodeNil() throws -> Bool {
        guard !ArchiveDecoder.holds(join(path, String(currentIndex)), in: archive) else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let (name, codingPath) = next()
        return try ArchiveDecoder.value(type, at: name, in: archive, codingPath: codingPath)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws
        -> KeyedDecodingContainer<NestedKey> {
        try superDecoder().container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try superDecoder().unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let (name, codingPath) = next()
        return ArchiveDecoder(archive: archive, path: name, codingPath: codingPath)
    }
}

private struct SingleArchiveDecoding: SingleValueDecodingContainer {
    let archive: NumPyArchive
    let path: String
    let codingPath: [any CodingKey]

    func decodeNil() -> Bool { !ArchiveDecoder.holds(path.isEmpty ? "value" : path, in: archive) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        // A single value that is not a primitive would ask for this container again.
        guard let value = try ArchiveDecoder.primitive(type, at: path.isEmpty ? "value" : path, in: archive) else {
            throw DecodingError.typeMismatch(type, .init(codingPath: codingPath,
                debugDescription: "a NumPy archive holds numbers, booleans, text and flat arrays"))
        }
        return value
    }
}

import NormKit

/// The fuzz target for NormKit's file readers: the fuzzer's bytes straight
/// into `NumPyArray(npy:)` and `NumPyArchive(npz:)` (`make fuzz-numpy`;
/// `FuzzCorpusTests` replays `Fuzz/CorpusNumPy`). Every file is hostile, so it
/// checks what a reader of untrusted files relies on:
///
/// - no crash, trap or sanitizer report, and no hang (the fuzzer's checks);
/// - what an accepted archive holds adds up to at most the bytes it came
///   from (no entry is copied twice: memory stays O(file size));
/// - an accepted array or archive writes back to bytes that read as the same
///   array or archive;
/// - an accepted `<f4`/`<f8` array converts to a tensor of its shape;
/// - a refusal's description is printable.
public enum NumPyFuzz {
    /// Runs one input and returns the violations found (empty when none).
    public static func run(_ data: UnsafeRawBufferPointer) -> [String] {
        let bytes = Array(data)
        var violations: [String] = []
        do {
            let array = try NumPyArray(npy: bytes)
            if array.data.count > bytes.count {
                violations.append(".npy: \(array.data.count) data bytes from \(bytes.count)")
            }
            if (try? NumPyArray(npy: array.npy)) != array {
                violations.append(".npy: \(array.descriptor) \(array.shape) does not read back as itself")
            }
            switch array.descriptor {
            case "<f4": check(try Tensor<Float>(array), array, &violations)
            case "<f8": check(try Tensor<Double>(array), array, &violations)
            default: break
            }
        } catch {
            _ = error.description
        }
        do {
            let archive = try NumPyArchive(npz: bytes)
            let held = archive.names.reduce(0) { $0 + (archive[$1]?.data.count ?? 0) }
            if held > bytes.count {
                violations.append(".npz: \(held) data bytes from an archive of \(bytes.count)")
            }
            if let written = try? archive.npz(), (try? NumPyArchive(npz: written)) != archive {
                violations.append(".npz: \(archive.names) does not read back as itself")
            }
        } catch {
            _ = error.description
        }
        return violations
    }

    private static func check<S: BLASScalar>(_ tensor: Tensor<S>, _ array: NumPyArray, _ violations: inout [String]) {
        if tensor.shape != array.shape { violations.append(".npy: tensor shape \(tensor.shape) for \(array.shape)") }
    }
}

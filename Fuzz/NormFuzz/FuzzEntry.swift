import NormFuzzHarness
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Whether this run fuzzes the file readers (``NumPyFuzz``, `make fuzz-numpy`
/// sets `NORMFUZZ_TARGET=numpy`) rather than the layers (``FuzzHarness``).
let fuzzingNumPy = getenv("NORMFUZZ_TARGET").map { String(cString: $0) == "numpy" } ?? false

/// libFuzzer's entry point: runs one input through ``FuzzHarness`` (or
/// ``NumPyFuzz``) and aborts
/// (which libFuzzer records as a crash, with the input saved) on a violation.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    let violations = fuzzingNumPy ? NumPyFuzz.run(bytes) : FuzzHarness.run(bytes)
    if !violations.isEmpty {
        for violation in violations { fputs("normfuzz: \(violation)\n", stderr) }
        abort()
    }
    return 0
}

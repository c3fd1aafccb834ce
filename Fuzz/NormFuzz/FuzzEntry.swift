import NormFuzzHarness
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// libFuzzer's entry point: runs one input through ``FuzzHarness`` and aborts
/// (which libFuzzer records as a crash, with the input saved) on a violation.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    let violations = FuzzHarness.run(bytes)
    if !violations.isEmpty {
        for violation in violations { fputs("normfuzz: \(violation)\n", stderr) }
        abort()
    }
    return 0
}

#if !NORMKIT_FUZZ
import NormFuzzHarness
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Without libFuzzer (an ordinary build), `normfuzz FILE...` replays inputs
/// (a crash file the fuzzer saved, or the corpus) through the same harness and
/// prints each violation; its exit status is 1 when there was one.
@main
struct Replay {
    static func main() {
        var failed = false
        for path in CommandLine.arguments.dropFirst() {
            guard let file = fopen(path, "rb") else {
                fputs("normfuzz: cannot open \(path)\n", stderr)
                failed = true
                continue
            }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let read = fread(&buffer, 1, buffer.count, file)
                if read <= 0 { break }
                bytes += buffer[0..<read]
            }
            fclose(file)
            let numPy = getenv("NORMFUZZ_TARGET").map { String(cString: $0) == "numpy" } ?? false
            let violations = bytes.withUnsafeBytes { numPy ? NumPyFuzz.run($0) : FuzzHarness.run($0) }
            for violation in violations { print("\(path): \(violation)") }
            failed = failed || !violations.isEmpty
        }
        exit(failed ? 1 : 0)
    }
}
#endif

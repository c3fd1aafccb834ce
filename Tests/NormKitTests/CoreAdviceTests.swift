import ChildProcess
import Foundation
import NormKit
import Testing

/// OpenBLAS's kernel choice against the CPU's vector level.
@Suite("OpenBLAS core advice")
struct CoreAdviceTests {
    @Test("advice only when OpenBLAS's kernels are older than the CPU allows")
    func advice() {
        let cases: [(BLASRuntime.VectorLevel, String, String?)] = [
            (.avx512, "Prescott", "SkylakeX"),   // 0.3.21 on a Sapphire Rapids Xeon
            (.avx512, "Haswell", "SkylakeX"),
            (.avx2, "Prescott", "Haswell"),
            (.avx2, "Sandybridge", "Haswell"),
            (.avx, "Core2", "Sandybridge"),
            (.avx512, "SkylakeX", nil),
            (.avx512, "Cooperlake", nil),
            (.avx2, "Haswell", nil),
            (.avx2, "Zen", nil),
            (.avx2, "SkylakeX", nil),            // newer than the CPU: not ours to judge
            (.sse, "Prescott", nil),
            (.avx512, "ARMV8", nil),             // a core this table does not know
        ]
        for (cpu, core, expected) in cases {
            let advice = BLASRuntime.coreAdvice(cpu: cpu, openBLASCore: core)
            #expect(advice?.recommended == expected, "\(cpu) with OpenBLAS \(core)")
            if let advice {
                #expect(advice.chosen == core)
                #expect(advice.description.contains("OPENBLAS_CORETYPE=\(expected ?? "")"))
            }
        }
    }

    @Test("the CPU's vector level agrees with /proc/cpuinfo's flags")
    func cpuLevel() throws {
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let line = try #require(cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") })
        let flags = Set(line.split(separator: ":")[1].split(separator: " ").map(String.init))
        let expected: BLASRuntime.VectorLevel =
            ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
            ? .avx512
            : flags.contains("avx2") && flags.contains("fma") ? .avx2
            : flags.contains("avx") ? .avx : .sse
        #expect(BLASRuntime.cpuVectorLevel == expected)
    }

    @Test("the process's advice is the advice for its CPU and OpenBLAS core")
    func processAdvice() {
        #expect(BLASRuntime.coreAdvice
                == BLASRuntime.coreAdvice(cpu: BLASRuntime.cpuVectorLevel,
                                          openBLASCore: BLASRuntime.coreName))
    }

    /// `BLASRuntime.useAdvisedCore()` in a process of its own
    /// (Tests/NormKitCoreSwitch, built beside this test bundle): on a CPU where
    /// OpenBLAS chose older kernels than it allows, a DYNAMIC_ARCH OpenBLAS
    /// switches to the advised ones; the layers' outputs stay within a few
    /// roundings, OPENBLAS_CORETYPE and OpenBLAS's thread count are as before,
    /// and a second call changes nothing. Elsewhere (no advice, a preset
    /// `OPENBLAS_CORETYPE`, a build for one CPU) it must say why it did not.
    @Test("useAdvisedCore switches OpenBLAS's kernels in a running process")
    func switchInProcess() throws {
        let (status, output) = try ChildProcess.run(seconds: 120, [ChildProcess.built("NormKitCoreSwitch")])
        #expect(status == 0 && output.contains("all passed"), "\(output)")
        if BLASRuntime.coreAdvice != nil, BLASRuntime.configuration.contains("DYNAMIC_ARCH"),
           ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil {
            #expect(output.contains("switched from its \(BLASRuntime.coreName) kernels"), "\(output)")
        } else {
            #expect(output.contains("keeps its") || output.contains("unchanged:"), "\(output)")
        }
    }
}

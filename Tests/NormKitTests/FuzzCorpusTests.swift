import Foundation
import NormFuzzHarness
import NormKit
import Testing

/// Replays the fuzzer's committed corpus (`Fuzz/Corpus`, grown by `make fuzz`
/// and `make fuzz-merge`) through the same harness, in an ordinary build, so a
/// case the fuzzer once found keeps being checked by `make test`: both APIs
/// agree bit for bit, a throw changes no state, and so on (``FuzzHarness``).
extension ProcessWideTests {
/// (In the process-wide suite: the harness sets `Threading.threadCount`.)
@Suite("Fuzz corpus")
struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/Corpus")

    @Test("every corpus input runs without a violation")
    func replay() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path).sorted()
        // The corpus is committed; an empty one would make this test vacuous.
        #expect(files.count >= 100, "Fuzz/Corpus holds \(files.count) inputs")
        // Every input in optimized builds (make test); every 16th in the
        // sanitizers' debug builds (each sanitizer run spent about 450 s on
        // every 8th on a slow day; make sanitize runs this test under ASan
        // as a process of its own, beside the two suites).
        let stride = optimizedBuild ? 1 : 16
        for (index, name) in files.enumerated() where index % stride == 0 {
            let data = try Data(contentsOf: Self.corpus.appendingPathComponent(name))
            let violations = data.withUnsafeBytes { FuzzHarness.run($0) }
            #expect(violations.isEmpty, "Fuzz/Corpus/\(name): \(violations)")
        }
    }

    static let numPyCorpus = corpus.deletingLastPathComponent().appendingPathComponent("CorpusNumPy")

    @Test("every input of the file readers' corpus runs without a violation")
    func replayNumPy() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.numPyCorpus.path).sorted()
        #expect(files.count >= 12, "Fuzz/CorpusNumPy holds \(files.count) inputs")
        var accepted = 0
        for name in files {
            let data = try Data(contentsOf: Self.numPyCorpus.appendingPathComponent(name))
            let violations = data.withUnsafeBytes { NumPyFuzz.run($0) }
            #expect(violations.isEmpty, "Fuzz/CorpusNumPy/\(name): \(violations)")
            if (try? NumPyArray(npy: Array(data))) != nil || (try? NumPyArchive(npz: Array(data))) != nil {
                accepted += 1
            }
        }
        // The seeds hold readable files as well as hostile ones.
        #expect(accepted >= 6)
    }

    @Test("the corpus covers every layer, scalar type, backend and mode")
    func coverage() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path)
        var seen = Set<String>()
        for name in files {
            let data = try Data(contentsOf: Self.corpus.appendingPathComponent(name))
            seen.insert(data.withUnsafeBytes { FuzzHarness.summary($0) })
        }
        let expected = FuzzHarness.allSummaries
        #expect(expected.count == 7 * 2 * 2 * 2)
        #expect(expected.subtracting(seen).isEmpty,
                "not in Fuzz/Corpus: \(expected.subtracting(seen).sorted())")
    }
}
}

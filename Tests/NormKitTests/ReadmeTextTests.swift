import Foundation
import Testing

/// The code between `// NAME-BEGIN` and `// NAME-END` in a test file, without
/// the markers and with the common indentation removed.
private func marked(_ name: String, in file: String) throws -> String {
    let text = try String(contentsOfFile: file, encoding: .utf8)
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    guard let begin = lines.firstIndex(where: { $0.contains("// \(name)-BEGIN") }),
          let end = lines.firstIndex(where: { $0.contains("// \(name)-END") }) else { return "" }
    let body = lines[(begin + 1)..<end]
    let indent = body.filter { !$0.allSatisfy(\.isWhitespace) }
        .map { $0.prefix { $0 == " " }.count }.min() ?? 0
    return body.map { String($0.dropFirst(min(indent, $0.count))) }.joined(separator: "\n")
}

private let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
private let readme = tests.deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("README.md").path

/// The README's examples are the tests' code, character for character, so
/// that "it compiles and runs" and "it allocates nothing" are about the text
/// a reader copies.
@Test("the README's examples are the code the tests compile and run",
      arguments: [("README-EXAMPLE", "ReadmeExampleTests.swift"), ("README-LOOP", "AllocationTests.swift"),
                  ("README-WHITENING", "ReadmeExampleTests.swift"),
                  ("README-FUSED", "ReadmeExampleTests.swift"),
                  ("README-REDUCED", "ReadmeExampleTests.swift"),
                  ("README-MPI", "../NormKitMPIChecks/Checks.swift")])
func readmeExamplesMatchTests(marker: String, file: String) throws {
    let code = try marked(marker, in: tests.appendingPathComponent(file).path)
    let text = try String(contentsOfFile: readme, encoding: .utf8)
    #expect(!code.isEmpty)
    #expect(text.contains("\n" + code + "\n```"), "README.md lacks the \(marker) code of \(file)")
}

import Foundation

/// What the tests that run a program of this package in a process of its own
/// share: where the program was built, and running it under a time limit.
public enum ChildProcess {
    /// The path of the executable product `name`, built beside the running
    /// test bundle (`swift build --build-tests` puts them in one folder).
    public static func built(_ name: String) -> String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// Runs `arguments` under `timeout --kill-after=10 seconds` (a child that
    /// outlives its limit is ended, so a test cannot hang) and returns its exit
    /// status (124 or 137 after the limit) and its standard output and error,
    /// interleaved as written.
    public static func run(seconds: Int, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["--kill-after=10", "\(seconds)"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }
}

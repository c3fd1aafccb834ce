// swift-tools-version: 6.2
import PackageDescription

let package = Package(
    name: "NormKit",
    products: [
        // MARK: Products
        .library(name: "NormKit", targets: ["NormKit"]),
        // Data-parallel training over MPI (Open MPI); NormKit alone needs no MPI.
        .library(name: "NormKitMPI", targets: ["NormKitMPI"]),
        .executable(name: "normbench", targets: ["NormBench"]),
        .executable(name: "normbench-mpi", targets: ["NormBenchMPI"]),
        .library(name: "NormLab", targets: ["NormLab"]),
        .executable(name: "normlab", targets: ["NormLabCLI"]),
        .executable(name: "normfuzz", targets: ["NormFuzz"]),
    ],
    // The command-line tools (normbench, normbench-mpi, normlab) need
    // swift-argument-parser. The trait is on by default, so this package's
    // own builds have them; an app that depends on NormKit with `traits: []`
    // resolves and builds no package NormKit does not link.
    traits: [
        .trait(name: "Tools", description: "The command-line tools' dependency, swift-argument-parser"),
        .default(enabledTraits: ["Tools"]),
    ],
    dependencies: [
        // MARK: Dependencies (served from the local mirror)
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        // `make docs` (swift package generate-documentation); not linked into any product.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // MARK: System libraries
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(
            name: "CLAPACKE",
            pkgConfig: "lapacke",
            providers: [.apt(["liblapacke-dev"])]
        ),
        // Open MPI, for NormKitMPI only (static inline wrappers of its handle macros).
        .systemLibrary(
            name: "CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev"])]
        ),
        // Header only: streaming stores, inlined into NormKit's output passes.
        .systemLibrary(name: "CStreamingStore"),

        // Operating-system queries Swift's Glibc module lacks (CPU affinity).
        .target(name: "CNormKitSupport"),

        // The elementwise passes of the row and column kernels, multiversioned
        // for AVX2 (x86-64-v3) and baseline x86-64 (target_clones), and the
        // 16-bit widen/narrow passes (F16C, AVX2 and AVX-512 BF16 where the CPU
        // has them, chosen at run time).
        .target(name: "CNormKitPasses"),

        // MARK: Library
        .target(
            name: "NormKit",
            dependencies: ["CBLAS", "CLAPACKE", "CStreamingStore", "CNormKitSupport", "CNormKitPasses"]
        ),

        .target(
            name: "NormKitMPI",
            dependencies: ["NormKit", "CMPI"]
        ),

        // MARK: Training application
        .target(
            name: "NormLab",
            dependencies: ["NormKit"],
            exclude: ["Resources/digits-ATTRIBUTION.md"],
            resources: [.copy("Resources/digits.bin")]
        ),
        .executableTarget(
            name: "NormLabCLI",
            dependencies: [
                "NormLab", "NormKitMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser", condition: .when(traits: ["Tools"])),
            ]
        ),

        // MARK: Benchmark
        .executableTarget(
            name: "NormBench",
            dependencies: [
                "NormKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser", condition: .when(traits: ["Tools"])),
            ],
            path: "Benchmarks/NormBench"
        ),
        // SyncBatchNorm's cost, under mpirun -np K.
        .executableTarget(
            name: "NormBenchMPI",
            dependencies: [
                "NormKit", "NormKitMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser", condition: .when(traits: ["Tools"])),
            ],
            path: "Benchmarks/NormBenchMPI"
        ),

        // MARK: Fuzzing (make fuzz; FuzzCorpusTests replays the corpus)
        .target(
            name: "NormFuzzHarness",
            dependencies: ["NormKit"],
            path: "Fuzz/Harness"
        ),
        .executableTarget(
            name: "NormFuzz",
            dependencies: ["NormFuzzHarness"],
            path: "Fuzz/NormFuzz"
        ),

        // MARK: Tests
        .target(
            name: "MallocCounter",
            path: "Tests/MallocCounter"
        ),
        // Running a program of this package in a process of its own, under a
        // time limit (the core-switch, mpirun and data-parallel tests).
        .target(
            name: "ChildProcess",
            path: "Tests/ChildProcess"
        ),
        .testTarget(
            name: "NormKitTests",
            dependencies: [
                "NormKit", "MallocCounter", "NormFuzzHarness", "NormKitCoreSwitch", "ChildProcess",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            // Read from the source tree (#filePath); made by make_pytorch_fixture.py.
            exclude: ["Fixtures"]
        ),
        // BLASRuntime.useAdvisedCore() changes OpenBLAS's kernels for the whole
        // process: CoreAdviceTests runs it in this executable of its own.
        .executableTarget(
            name: "NormKitCoreSwitch",
            dependencies: ["NormKit"],
            path: "Tests/NormKitCoreSwitch"
        ),
        // The synchronized layers under mpirun: NormKitMPITests starts this
        // executable with 1, 2 and 3 ranks.
        .executableTarget(
            name: "NormKitMPIChecks",
            dependencies: ["NormKit", "NormKitMPI"],
            path: "Tests/NormKitMPIChecks"
        ),
        .testTarget(
            name: "NormKitMPITests",
            dependencies: ["NormKitMPIChecks", "ChildProcess"]
        ),
        .testTarget(
            name: "NormLabTests",
            // NormLabCLI: the data-parallel test runs normlab under mpirun.
            dependencies: ["NormLab", "NormKit", "NormLabCLI", "ChildProcess"]
        ),
    ]
)

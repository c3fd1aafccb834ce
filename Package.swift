// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "NormKit",
    products: [
        // MARK: Products
        .library(name: "NormKit", targets: ["NormKit"]),
        .executable(name: "normbench", targets: ["NormBench"]),
    ],
    dependencies: [
        // MARK: Dependencies (served from the local mirror)
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
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

        // MARK: Library
        .target(
            name: "NormKit",
            dependencies: ["CBLAS", "CLAPACKE"]
        ),

        // MARK: Benchmark
        .executableTarget(
            name: "NormBench",
            dependencies: [
                "NormKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/NormBench"
        ),

        // MARK: Tests
        .target(
            name: "MallocCounter",
            path: "Tests/MallocCounter"
        ),
        .testTarget(
            name: "NormKitTests",
            dependencies: ["NormKit", "MallocCounter"]
        ),
    ]
)

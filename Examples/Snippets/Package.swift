// swift-tools-version: 6.2
// Every Swift snippet of the README, the DocC catalog and the doc comments,
// extracted by extract.py into Sources/Snippets (not committed) and built as an
// app would build them: `make snippets` compiles and runs them all.
import PackageDescription

let package = Package(
    name: "Snippets",
    dependencies: [
        .package(name: "NormKit", path: "../..", traits: []),
    ],
    targets: [
        .executableTarget(
            name: "Snippets",
            dependencies: [
                .product(name: "NormKit", package: "NormKit"),
                .product(name: "NormKitMPI", package: "NormKit"),
            ]
        ),
    ]
)

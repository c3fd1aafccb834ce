// swift-tools-version: 6.2
// A separate package that depends on NormKit as an app would (CI builds and
// runs it): the README's training loop over memory the app owns, layer state
// through .npz, a PyTorch state_dict, and bad input.
import PackageDescription

let package = Package(
    name: "Consumer",
    dependencies: [
        // traits: [] leaves out the command-line tools' dependency
        // (swift-argument-parser): nothing but NormKit is resolved or built.
        .package(name: "NormKit", path: "../..", traits: []),
    ],
    targets: [
        .executableTarget(
            name: "Consumer",
            dependencies: [.product(name: "NormKit", package: "NormKit")]
        ),
    ]
)

// swift-tools-version:6.2
import PackageDescription

// The C libraries come from Debian's -dev packages (see `make deps`); each is a
// system-library target holding only a module map and a shim header, so that
// every unsafe call lives in one Swift file per library under FedBatch/Native.
// Every target above the native one is compiled with strict memory-safety
// checking: an unsafe construct there must be marked `unsafe` where it
// stands, and DESIGN.md ("Unsafe code") says why each remaining one is there.
let checked: [SwiftSetting] = [.strictMemorySafety()]

let package = Package(
    name: "fedbatch",
    products: [
        .executable(name: "fedbatch", targets: ["fedbatch"]),
        .library(name: "FedBatch", targets: ["FedBatch"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ],
    targets: [
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CGPGME", pkgConfig: "gpgme", providers: [.apt(["libgpgme-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        // Every call into C lives here: the C modules are imported
        // `internal`, so nothing outside this target can reach them.
        .target(
            name: "FedBatchNative", dependencies: ["CArchive", "CGPGME", "CZstd", "CCrypto", "CBLAS", "CZlib", "CCurl"]),
        // The library, in layers; a target imports only targets below it
        // (DESIGN.md). Formats: tensors, model specs, the container, names.
        .target(
            name: "FedBatchFormats",
            dependencies: ["FedBatchNative", .product(name: "TOMLKit", package: "TOMLKit")], swiftSettings: checked),
        // Trust: signatures, pinned keys, rotations.
        .target(name: "FedBatchTrust", dependencies: ["FedBatchNative", "FedBatchFormats"], swiftSettings: checked),
        // Learning: local training, aggregation strategies, central DP.
        .target(
            name: "FedBatchLearning",
            dependencies: ["FedBatchNative", "FedBatchFormats", .product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: checked),
        // Store: state.db and the remotes.
        .target(
            name: "FedBatchStore",
            dependencies: [
                "FedBatchNative", "FedBatchFormats", "FedBatchTrust",
                .product(name: "TOMLKit", package: "TOMLKit"), .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: checked
        ),
        // Workflows: homes, merge, the site's train and pack, upkeep, metrics, report.
        .target(
            name: "FedBatch",
            dependencies: [
                "FedBatchNative", "FedBatchFormats", "FedBatchTrust", "FedBatchLearning", "FedBatchStore",
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: checked
        ),
        .target(
            name: "FedBatchCLI",
            dependencies: [
                "FedBatch", "FedBatchNative", "FedBatchFormats", "FedBatchTrust", "FedBatchLearning", "FedBatchStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: checked
        ),
        .executableTarget(name: "fedbatch", dependencies: ["FedBatchCLI"]),
        // libFuzzer targets for the parsers of untrusted bytes (`make fuzz`);
        // built normally it replays a corpus, which the tests do.
        .executableTarget(
            name: "fedbatch-fuzz",
            dependencies: [
                "FedBatch", "FedBatchNative", "FedBatchFormats", "FedBatchTrust", "FedBatchLearning", "FedBatchStore",
            ],
            path: "Sources/FedBatchFuzz"),
        // Helpers shared by both test targets: temp dirs, subprocesses, fixtures.
        .target(
            name: "FedBatchTestSupport",
            dependencies: [
                "FedBatch", "FedBatchNative", "FedBatchFormats", "FedBatchTrust", "FedBatchLearning", "FedBatchStore",
            ], path: "Tests/FedBatchTestSupport"),
        .testTarget(
            name: "FedBatchTests",
            dependencies: [
                "FedBatch", "FedBatchTestSupport", "FedBatchNative", "FedBatchFormats", "FedBatchTrust",
                "FedBatchLearning", "FedBatchStore",
            ]),
        .testTarget(
            name: "FedBatchCLITests",
            dependencies: [
                "FedBatch", "FedBatchTestSupport", "FedBatchNative", "FedBatchFormats", "FedBatchTrust",
                "FedBatchLearning", "FedBatchStore",
            ]),
    ]
)

import ArgumentParser
import Foundation
import NormKit
import NormKitMPI
import NormLab

@main
struct NormLabCommand: ParsableCommand {
    /// Restarts once with a better `OPENBLAS_CORETYPE` when OpenBLAS chose
    /// kernels older than the CPU supports, then parses and runs.
    static func main() {
        BLASRuntime.restartWithAdvisedCoreIfNeeded(tool: "normlab")
        main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "normlab",
        abstract: "Reproduces cs231n's batch-normalization experiments with NormKit, with CSV and SVG plots.",
        subcommands: [Compare.self, WeightScale.self, BatchSize.self, WhiteningExperiment.self, All.self],
        defaultSubcommand: All.self)
}

/// The options every experiment takes.
struct CommonOptions: ParsableArguments {
    @Option(help: "Where CSV files and SVG figures go.")
    var output = "normlab-output"

    @Option(help: "A directory with CIFAR-10's binary batches; without it, the embedded UCI digits.")
    var cifar10: String?

    @Option(help: "Training samples (cs231n's small_data: 1000).")
    var trainingSamples = 1000

    @Option(help: "Epochs per run.")
    var epochs = 10

    @Option(help: "Seeds weights, data order and minibatches.")
    var seed: UInt64 = 0

    /// The data and the output directory, ready.
    func prepare() throws -> DataSplits<Double> {
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        var data: DataSplits<Double>
        if let directory = cifar10 {
            data = try CIFAR10.load(Double.self, directory: directory)
        } else {
            data = try Digits.load(Double.self, trainingCount: min(trainingSamples, 1000), seed: seed)
        }
        data.training = data.training.prefix(trainingSamples)
        note("data: \(data.name), \(data.training.count) training, \(data.validation.count) validation samples")
        return data
    }

    func path(_ name: String) -> String { (output as NSString).appendingPathComponent(name) }
}

/// Whether this process prints and writes: not the ranks other than 0 of a
/// data-parallel run (set once, before any experiment runs).
nonisolated(unsafe) var isReportingProcess = true

/// A line on standard error (progress), so standard output keeps the tables.
func note(_ text: String) {
    guard isReportingProcess else { return }
    FileHandle.standardError.write((text + "\n").data(using: .utf8)!)
}

/// How a data-parallel run's batch norms see the batch.
enum BatchNormScope: String, ExpressibleByArgument, CaseIterable {
    /// SyncBatchNorm: the statistics of the whole batch, across the ranks.
    case synchronized
    /// BatchNorm on each rank's rows alone ("ghost" batch norm).
    case local
}

/// One training run; with `communicator`, data-parallel across its ranks, the
/// batch norms `scope`d as asked.
func train(_ data: DataSplits<Double>, hidden: [Int], normalization: Normalization,
           weightScale: Double, batchSize: Int, epochs: Int, seed: UInt64,
           label: String, communicator: (any Communicator)? = nil,
           scope: BatchNormScope = .synchronized) throws -> TrainingHistory {
    var model = try FullyConnectedNet<Double>(
        inputDimension: data.training.inputs.columns, hiddenDimensions: hidden,
        classCount: data.classCount, normalization: normalization, weightScale: weightScale,
        seed: seed)
    if scope == .synchronized { model.batchNormCommunicator = communicator }
    var solver = Solver(model: model, training: data.training, validation: data.validation,
                        configuration: SolverConfiguration(
                            updateRule: .adam(), learningRate: 1e-3, batchSize: batchSize,
                            epochs: epochs, seed: seed &+ 1))
    solver.communicator = communicator
    let history = solver.train { note("  \(label): \($0)") }
    if history.diverged { note("  \(label): diverged") }
    return history
}

/// The mean of each window of `size` consecutive values, at the window's end.
func smoothed(_ values: [Double], window size: Int) -> [(x: Double, y: Double)] {
    guard !values.isEmpty else { return [] }
    var points: [(x: Double, y: Double)] = []
    var sum = 0.0
    for (i, v) in values.enumerated() {
        sum += v
        if i >= size { sum -= values[i - size] }
        points.append((x: Double(i + 1), y: sum / Double(min(i + 1, size))))
    }
    return points
}

/// Writes `rows` under `header` as CSV.
func writeCSV(_ path: String, header: [String], rows: [[String]]) throws {
    let text = ([header] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
}

func percent(_ value: Double) -> String { String(format: "%.1f%%", 100 * value) }

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The 6-layer net ([100]*5) without normalization, with batch norm and with layer norm.",
        discussion: """
            With --data-parallel, run under `mpirun -np K`: every batch of 50 is split across \
            the K ranks, the gradients are summed with one MPI_Allreduce per step, and the batch \
            norms are SyncBatchNorm (--bn synchronized) or each rank's own BatchNorm (--bn local). \
            It also trains the batch-norm net on one process and with the other --bn choice, and \
            plots the three loss curves together (compare-data-parallel-loss.svg and .csv).
            """)
    @OptionGroup var options: CommonOptions

    @Flag(help: "Split every batch across the MPI ranks (run under mpirun -np K).")
    var dataParallel = false

    @Option(help: "With --data-parallel: batch statistics of the whole batch (synchronized) or of each rank's rows (local).")
    var bn: BatchNormScope = .synchronized

    func run() throws {
        guard dataParallel else { return try Compare.run(options, data: try options.prepare()) }
        let world = try MPICommunicator.world()
        isReportingProcess = world.rank == 0
        try Compare.run(options, data: try options.prepare(), dataParallel: (world, bn))
    }

    static func run(_ options: CommonOptions, data: DataSplits<Double>,
                    dataParallel: (communicator: any Communicator, scope: BatchNormScope)? = nil) throws {
        let batch = 50
        if let ranks = dataParallel?.communicator.size, ranks > batch {
            throw ValidationError("--data-parallel needs at most \(batch) ranks (one row each), got \(ranks)")
        }
        let how = dataParallel.map { " on \($0.communicator.size) ranks, batch norm \($0.scope.rawValue)" } ?? ""
        note("compare: Adam lr 1e-3, weight scale 2e-2, batch \(batch), \(options.epochs) epochs\(how)")
        var histories: [(Normalization, TrainingHistory)] = []
        for normalization in [Normalization.none, .batch, .layer] {
            histories.append((normalization, try train(
                data, hidden: Array(repeating: 100, count: 5), normalization: normalization,
                weightScale: 2e-2, batchSize: batch, epochs: options.epochs, seed: options.seed,
                label: "compare \(normalization.rawValue)", communicator: dataParallel?.communicator,
                scope: dataParallel?.scope ?? .synchronized)))
        }
        if let dataParallel {
            try compareDataParallel(options, data: data, batch: batch, dataParallel: dataParallel,
                                    batchNorm: histories[1].1)
        }
        guard isReportingProcess else { return }
        func name(_ n: Normalization) -> String {
            switch n {
            case .none: "no normalization"; case .batch: "batch norm"; case .layer: "layer norm"
            case .decorrelated: "decorrelated (eigen)"; case .iterative: "decorrelated (Newton–Schulz)"
            }
        }
        try LinePlot(title: "Training loss (mean of 10 iterations), \(data.name)", xLabel: "iteration",
                     yLabel: "loss",
                     series: histories.map { .init(name: name($0.0), points: smoothed($0.1.loss, window: 10)) })
            .write(to: options.path("compare-loss.svg"))
        try LinePlot(title: "Training accuracy, \(data.name)", xLabel: "epoch", yLabel: "accuracy",
                     series: histories.map { h in
                         .init(name: name(h.0), points: h.1.trainAccuracy.enumerated().map { (Double($0), $1) },
                               markers: true) })
            .write(to: options.path("compare-train-accuracy.svg"))
        try LinePlot(title: "Validation accuracy, \(data.name)", xLabel: "epoch", yLabel: "accuracy",
                     series: histories.map { h in
                         .init(name: name(h.0), points: h.1.validationAccuracy.enumerated().map { (Double($0), $1) },
                               markers: true) })
            .write(to: options.path("compare-validation-accuracy.svg"))
        try writeCSV(options.path("compare-epochs.csv"),
                     header: ["normalization", "epoch", "train_accuracy", "validation_accuracy"],
                     rows: histories.flatMap { h in h.1.trainAccuracy.indices.map {
                         [h.0.rawValue, "\($0)", "\(h.1.trainAccuracy[$0])", "\(h.1.validationAccuracy[$0])"] } })
        try writeCSV(options.path("compare-loss.csv"), header: ["normalization", "iteration", "loss"],
                     rows: histories.flatMap { h in h.1.loss.enumerated().map { [h.0.rawValue, "\($0 + 1)", "\($1)"] } })
        print("\ncompare (\(data.name)): 6-layer net, Adam 1e-3, weight scale 2e-2, batch \(batch)\(how)")
        print("normalization     final loss (last 20)  train acc  best val acc  diverged")
        for (n, h) in histories {
            let tail = h.loss.suffix(20)
            let finalLoss = tail.reduce(0, +) / Double(max(tail.count, 1))
            print(name(n).padding(toLength: 18, withPad: " ", startingAt: 0)
                  + String(format: "%20.4f", finalLoss)
                  + percent(h.trainAccuracy.last ?? 0).leftPadded(11)
                  + percent(h.bestValidationAccuracy).leftPadded(14)
                  + (h.diverged ? "yes" : "no").leftPadded(10))
        }
    }
}

extension Compare {
    /// The batch-norm net three ways with the same global batches and seed:
    /// on one process (every rank computes it alone), data-parallel with
    /// SyncBatchNorm, and data-parallel with each rank's own BatchNorm; one
    /// of the two data-parallel runs is `batchNorm`, already trained. Writes
    /// their loss curves (CSV and SVG) and prints how far each is from the
    /// single-process curve.
    static func compareDataParallel(
        _ options: CommonOptions, data: DataSplits<Double>, batch: Int,
        dataParallel: (communicator: any Communicator, scope: BatchNormScope), batchNorm: TrainingHistory
    ) throws {
        let ranks = dataParallel.communicator.size
        func run(_ label: String, _ communicator: (any Communicator)?, _ scope: BatchNormScope) throws -> TrainingHistory {
            try train(data, hidden: Array(repeating: 100, count: 5), normalization: .batch,
                      weightScale: 2e-2, batchSize: batch, epochs: options.epochs, seed: options.seed,
                      label: label, communicator: communicator, scope: scope)
        }
        let single = try run("batch norm, one process", nil, .synchronized)
        let other: BatchNormScope = dataParallel.scope == .synchronized ? .local : .synchronized
        let otherHistory = try run("batch norm \(other.rawValue), \(ranks) ranks", dataParallel.communicator, other)
        let (synchronized, local) = dataParallel.scope == .synchronized
            ? (batchNorm, otherHistory) : (otherHistory, batchNorm)
        guard isReportingProcess else { return }
        func largestRelativeDifference(_ a: [Double], _ b: [Double]) -> Double {
            guard a.count == b.count else { return .infinity }
            return zip(a, b).map { abs($0 - $1) / max(abs($1), 1e-300) }.max() ?? 0
        }
        let syncDifference = largestRelativeDifference(synchronized.loss, single.loss)
        let localDifference = largestRelativeDifference(local.loss, single.loss)
        try writeCSV(options.path("compare-data-parallel-loss.csv"),
                     header: ["iteration", "single_process", "synchronized", "local"],
                     rows: single.loss.indices.map { i in
                         ["\(i + 1)", "\(single.loss[i])",
                          i < synchronized.loss.count ? "\(synchronized.loss[i])" : "",
                          i < local.loss.count ? "\(local.loss[i])" : ""] })
        try LinePlot(title: "Batch-norm net, batch \(batch) split over \(ranks) ranks, \(data.name)",
                     xLabel: "iteration", yLabel: "loss (mean of 10 iterations)",
                     series: [
                        .init(name: "one process", points: smoothed(single.loss, window: 10)),
                        .init(name: "\(ranks) ranks, SyncBatchNorm", points: smoothed(synchronized.loss, window: 10)),
                        .init(name: "\(ranks) ranks, local BatchNorm", points: smoothed(local.loss, window: 10)),
                     ])
            .write(to: options.path("compare-data-parallel-loss.svg"))
        print("\ndata-parallel batch norm (\(data.name)): batch \(batch) over \(ranks) ranks, \(single.loss.count) iterations")
        print("run                       final loss (last 20)  best val acc  largest relative loss difference from one process")
        for (name, h, difference) in [("one process", single, 0.0), ("SyncBatchNorm", synchronized, syncDifference),
                                      ("local BatchNorm", local, localDifference)] {
            let tail = h.loss.suffix(20)
            print(name.padding(toLength: 26, withPad: " ", startingAt: 0)
                  + String(format: "%20.4f", tail.reduce(0, +) / Double(max(tail.count, 1)))
                  + percent(h.bestValidationAccuracy).leftPadded(14)
                  + String(format: "%14.2e", difference))
        }
    }
}

struct WeightScale: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "weight-scale",
        abstract: "The 8-layer net ([50]*7) at 20 weight scales from 1e-4 to 1, with and without batch norm.")
    @OptionGroup var options: CommonOptions

    func run() throws { try WeightScale.run(options, data: try options.prepare()) }

    static func run(_ options: CommonOptions, data: DataSplits<Double>) throws {
        let scales = (0..<20).map { pow(10, -4 + 4 * Double($0) / 19) }
        note("weight-scale: 20 scales x {baseline, batch norm}, Adam lr 1e-3, batch 50, \(options.epochs) epochs")
        var results: [Normalization: [TrainingHistory]] = [:]
        for normalization in [Normalization.none, .batch] {
            for (index, scale) in scales.enumerated() {
                results[normalization, default: []].append(try train(
                    data, hidden: Array(repeating: 50, count: 7), normalization: normalization,
                    weightScale: scale, batchSize: 50, epochs: options.epochs, seed: options.seed,
                    label: String(format: "%@ %d/20 (scale %.1e)", normalization.rawValue, index + 1, scale)))
            }
        }
        let names: [Normalization: String] = [.none: "baseline", .batch: "batch norm"]
        func figure(_ file: String, _ title: String, _ yLabel: String,
                    _ value: (TrainingHistory) -> Double) throws {
            var crosses: [(x: Double, y: Double)] = []
            var series: [LinePlot.Series] = []
            for normalization in [Normalization.none, .batch] {
                let runs = results[normalization]!
                series.append(.init(name: names[normalization]!, points: zip(scales, runs).map { ($0, value($1)) },
                                    dashed: normalization == .none, markers: true))
                crosses += zip(scales, runs).filter { $1.diverged }.map { ($0, value($1)) }
            }
            // A diverged run's value may be NaN: mark it at the top of the axis.
            let finiteMax = series.flatMap(\.points).map(\.y).filter(\.isFinite).max() ?? 1
            crosses = crosses.map { ($0.x, $0.y.isFinite ? $0.y : finiteMax) }
            try LinePlot(title: title, xLabel: "weight initialization scale", yLabel: yLabel,
                         series: series, logarithmicX: true, crosses: crosses)
                .write(to: options.path(file))
        }
        try figure("weight-scale-validation-accuracy.svg", "Best validation accuracy vs weight scale, \(data.name)",
                   "best validation accuracy") { $0.bestValidationAccuracy }
        try figure("weight-scale-train-accuracy.svg", "Best train accuracy vs weight scale, \(data.name)",
                   "best train accuracy") { $0.trainAccuracy.max() ?? 0 }
        try figure("weight-scale-final-loss.svg", "Final training loss vs weight scale, \(data.name)",
                   "final training loss") { $0.loss.last ?? .nan }
        var rows: [[String]] = []
        print("\nweight-scale (\(data.name)): 8-layer net, Adam 1e-3, batch 50")
        print("scale      baseline val  batch norm val  baseline loss  batch norm loss")
        for (index, scale) in scales.enumerated() {
            let base = results[.none]![index], bn = results[.batch]![index]
            for (n, h) in [(Normalization.none, base), (.batch, bn)] {
                rows.append([n.rawValue, "\(scale)", "\(h.bestValidationAccuracy)", "\(h.trainAccuracy.max() ?? 0)",
                             "\(h.loss.last ?? .nan)", h.diverged ? "true" : "false"])
            }
            func lossText(_ h: TrainingHistory) -> String {
                h.diverged ? "diverged" : String(format: "%.4f", h.loss.last ?? .nan)
            }
            print(String(format: "%.2e", scale) + percent(base.bestValidationAccuracy).leftPadded(14)
                  + percent(bn.bestValidationAccuracy).leftPadded(16)
                  + lossText(base).leftPadded(15) + lossText(bn).leftPadded(17))
        }
        try writeCSV(options.path("weight-scale.csv"),
                     header: ["normalization", "weight_scale", "best_validation_accuracy", "best_train_accuracy",
                              "final_loss", "diverged"], rows: rows)
    }
}

struct BatchSize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batch-size",
        abstract: "Batch norm and layer norm at batch sizes 5, 10 and 50 against a baseline at batch 5.")
    @OptionGroup var options: CommonOptions

    func run() throws { try BatchSize.run(options, data: try options.prepare()) }

    static func run(_ options: CommonOptions, data: DataSplits<Double>) throws {
        note("batch-size: 6-layer net, Adam lr 1e-3, weight scale 2e-2, \(options.epochs) epochs")
        let hidden = Array(repeating: 100, count: 5)
        let baseline = try train(data, hidden: hidden, normalization: .none, weightScale: 2e-2,
                                 batchSize: 5, epochs: options.epochs, seed: options.seed,
                                 label: "baseline batch 5")
        var rows: [[String]] = []
        print("\nbatch-size (\(data.name)): 6-layer net, Adam 1e-3, weight scale 2e-2")
        print("normalization   batch  final train acc  best val acc")
        func report(_ name: String, _ batch: Int, _ h: TrainingHistory) {
            print(name.padding(toLength: 16, withPad: " ", startingAt: 0) + "\(batch)".leftPadded(5)
                  + percent(h.trainAccuracy.last ?? 0).leftPadded(17) + percent(h.bestValidationAccuracy).leftPadded(14))
            for epoch in h.trainAccuracy.indices {
                rows.append([name, "\(batch)", "\(epoch)", "\(h.trainAccuracy[epoch])", "\(h.validationAccuracy[epoch])"])
            }
        }
        report("baseline", 5, baseline)
        for normalization in [Normalization.batch, .layer] {
            let title = normalization == .batch ? "batch norm" : "layer norm"
            var train: [LinePlot.Series] = [.init(name: "baseline, batch 5",
                                                 points: baseline.trainAccuracy.enumerated().map { (Double($0), $1) },
                                                 dashed: true)]
            var validation: [LinePlot.Series] = [.init(name: "baseline, batch 5",
                                                      points: baseline.validationAccuracy.enumerated().map { (Double($0), $1) },
                                                      dashed: true)]
            for batch in [5, 10, 50] {
                let h = try NormLabCLI.train(data, hidden: hidden, normalization: normalization, weightScale: 2e-2,
                                             batchSize: batch, epochs: options.epochs, seed: options.seed,
                                             label: "\(title) batch \(batch)")
                report(title, batch, h)
                train.append(.init(name: "\(title), batch \(batch)",
                                   points: h.trainAccuracy.enumerated().map { (Double($0), $1) }, markers: true))
                validation.append(.init(name: "\(title), batch \(batch)",
                                        points: h.validationAccuracy.enumerated().map { (Double($0), $1) }, markers: true))
            }
            let slug = normalization == .batch ? "batchnorm" : "layernorm"
            try LinePlot(title: "Training accuracy by batch size: \(title), \(data.name)", xLabel: "epoch",
                         yLabel: "training accuracy", series: train)
                .write(to: options.path("batch-size-\(slug)-train-accuracy.svg"))
            try LinePlot(title: "Validation accuracy by batch size: \(title), \(data.name)", xLabel: "epoch",
                         yLabel: "validation accuracy", series: validation)
                .write(to: options.path("batch-size-\(slug)-validation-accuracy.svg"))
        }
        try writeCSV(options.path("batch-size.csv"),
                     header: ["normalization", "batch_size", "epoch", "train_accuracy", "validation_accuracy"],
                     rows: rows)
    }
}

struct WhiteningExperiment: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whitening",
        abstract: "The 6-layer net ([96]*5) without normalization, with batch norm, with decorrelated batch norm (eigen and Newton–Schulz, groups of 16), and without normalization on ZCA-whitened inputs.")
    @OptionGroup var options: CommonOptions

    func run() throws { try WhiteningExperiment.run(options, data: try options.prepare()) }

    /// ZCA's epsilon for the inputs: the digits' pixels are in [0, 1] minus the
    /// mean image, and some are constant (zero variance).
    static let zcaEpsilon = 1e-2

    static func run(_ options: CommonOptions, data: DataSplits<Double>) throws {
        note("whitening: 6-layer net [96]*5, Adam lr 1e-3, weight scale 2e-2, batch 50, \(options.epochs) epochs")
        let hidden = Array(repeating: 96, count: 5)   // a multiple of the groups of 16
        let zca = try Whitening.fit(data.training.inputs.tensor, kind: .zca, epsilon: zcaEpsilon)
        var whitened = data
        whitened.training.inputs = Matrix(try zca.transform(data.training.inputs.tensor))
        whitened.validation.inputs = Matrix(try zca.transform(data.validation.inputs.tensor))
        let runs: [(slug: String, name: String, data: DataSplits<Double>, normalization: Normalization)] = [
            ("none", "no normalization", data, .none),
            ("batch", "batch norm", data, .batch),
            ("decorrelated-eigen", "decorrelated BN, eigen, groups of 16", data, .decorrelated),
            ("decorrelated-ns5", "decorrelated BN, Newton–Schulz 5, groups of 16", data, .iterative),
            ("zca-inputs", "no normalization, ZCA-whitened inputs", whitened, .none),
        ]
        var histories: [(String, String, TrainingHistory)] = []
        let start = Date()
        for run in runs {
            let began = Date()
            let h = try train(run.data, hidden: hidden, normalization: run.normalization, weightScale: 2e-2,
                              batchSize: 50, epochs: options.epochs, seed: options.seed,
                              label: "whitening \(run.slug)")
            note(String(format: "  whitening %@: %.1f s", run.slug, Date().timeIntervalSince(began)))
            histories.append((run.slug, run.name, h))
        }
        try LinePlot(title: "Training loss (mean of 10 iterations), \(data.name)", xLabel: "iteration",
                     yLabel: "loss",
                     series: histories.map { .init(name: $0.1, points: smoothed($0.2.loss, window: 10)) })
            .write(to: options.path("whitening-loss.svg"))
        try LinePlot(title: "Validation accuracy, \(data.name)", xLabel: "epoch", yLabel: "accuracy",
                     series: histories.map { h in
                         .init(name: h.1, points: h.2.validationAccuracy.enumerated().map { (Double($0), $1) },
                               markers: true) })
            .write(to: options.path("whitening-validation-accuracy.svg"))
        try LinePlot(title: "Training accuracy, \(data.name)", xLabel: "epoch", yLabel: "accuracy",
                     series: histories.map { h in
                         .init(name: h.1, points: h.2.trainAccuracy.enumerated().map { (Double($0), $1) },
                               markers: true) })
            .write(to: options.path("whitening-train-accuracy.svg"))
        try writeCSV(options.path("whitening-epochs.csv"),
                     header: ["run", "epoch", "train_accuracy", "validation_accuracy"],
                     rows: histories.flatMap { h in h.2.trainAccuracy.indices.map {
                         [h.0, "\($0)", "\(h.2.trainAccuracy[$0])", "\(h.2.validationAccuracy[$0])"] } })
        try writeCSV(options.path("whitening-loss.csv"), header: ["run", "iteration", "loss"],
                     rows: histories.flatMap { h in h.2.loss.enumerated().map { [h.0, "\($0 + 1)", "\($1)"] } })
        print("\nwhitening (\(data.name)): 6-layer net [96]*5, Adam 1e-3, weight scale 2e-2, batch 50"
              + String(format: " (%.0f s)", Date().timeIntervalSince(start)))
        print("run                                               final loss (last 20)  train acc  best val acc  diverged")
        for (_, name, h) in histories {
            let tail = h.loss.suffix(20)
            let finalLoss = tail.reduce(0, +) / Double(max(tail.count, 1))
            print(name.padding(toLength: 50, withPad: " ", startingAt: 0)
                  + String(format: "%20.4f", finalLoss)
                  + percent(h.trainAccuracy.last ?? 0).leftPadded(11)
                  + percent(h.bestValidationAccuracy).leftPadded(14)
                  + (h.diverged ? "yes" : "no").leftPadded(10))
        }
    }
}

struct All: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "compare, weight-scale, batch-size and whitening.")
    @OptionGroup var options: CommonOptions

    func run() throws {
        let data = try options.prepare()
        let start = Date()
        try Compare.run(options, data: data)
        try WeightScale.run(options, data: data)
        try BatchSize.run(options, data: data)
        try WhiteningExperiment.run(options, data: data)
        print(String(format: "\nall experiments took %.0f s; CSV and SVG files are in %@",
                     Date().timeIntervalSince(start), options.output))
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? " " + self : String(repeating: " ", count: width - count) + self
    }
}

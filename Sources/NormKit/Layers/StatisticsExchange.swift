/// How the per-process sums of a batch-statistics layer become the whole
/// batch's: ``LocalStatistics`` for one process (``BatchNorm``,
/// ``SpatialBatchNorm``), ``RankStatistics`` across the ranks of a
/// ``Communicator`` (``SyncBatchNorm``, ``SyncSpatialBatchNorm``).
/// `BatchStatistics` calls it between its local reductions and everything
/// that uses their results, so both families share every other line.
@usableFromInline
protocol StatisticsExchange {
    /// The values per statistic over the whole batch, given this process's.
    func totalCount(local: Int) -> Int
    /// The workspace scalars ``mergeMoments(local:mean:m2:channels:scratch:)``
    /// needs for `channels` statistics.
    func scratchCount(channels: Int) -> Int
    /// Replaces this process's moments (`local` values per statistic, `mean`
    /// and `m2` over `channels`) with the whole batch's.
    /// - Returns: the error of a failed transport, or `nil`.
    func mergeMoments<Scalar: BLASScalar>(
        local: Int, mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        channels: Int, scratch: UnsafeMutablePointer<Scalar>
    ) -> NormError?
    /// Sums the closed-form backward's `2·channels` per-channel sums
    /// (`Σ dy·(x - mean)`, then `Σ dy`) over the processes, in place.
    /// - Returns: the error of a failed transport, or `nil`.
    func sumGradients<Scalar: BLASScalar>(_ sums: UnsafeMutablePointer<Scalar>, channels: Int) -> NormError?
}

/// One process's statistics are the batch's: every step is the identity.
@usableFromInline
struct LocalStatistics: StatisticsExchange {
    @inlinable init() {}
    @inlinable func totalCount(local: Int) -> Int { local }
    @inlinable func scratchCount(channels: Int) -> Int { 0 }
    @inlinable func mergeMoments<Scalar: BLASScalar>(
        local: Int, mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        channels: Int, scratch: UnsafeMutablePointer<Scalar>
    ) -> NormError? { nil }
    @inlinable func sumGradients<Scalar: BLASScalar>(
        _ sums: UnsafeMutablePointer<Scalar>, channels: Int
    ) -> NormError? { nil }
}

/// The ranks of a ``Communicator`` after their status words were exchanged
/// (``exchangeStatus(_:shard:channels:header:)``): each rank's count is
/// known, every rank's call is going ahead, and the moments and gradient sums
/// cross the ranks in one collective each.
///
/// Forward all-gathers each rank's `(mean, M2)` (`2·D` scalars) and merges them
/// with ``Moments``' merge in rank order from count 0, so every rank computes
/// the same bits, and a single process's merge is `0 + local`, which is the
/// local moments exactly. Backward all-reduces the `2·D` sums.
@usableFromInline
struct RankStatistics: StatisticsExchange {
    @usableFromInline let communicator: any Communicator
    /// The exchanged header: per rank, `headerStride` Doubles.
    @usableFromInline let header: UnsafeBufferPointer<Double>
    @usableFromInline let total: Int

    @inlinable
    init(communicator: any Communicator, header: UnsafeBufferPointer<Double>, total: Int) {
        self.communicator = communicator
        self.header = header
        self.total = total
    }

    /// Doubles per rank in the status header: status, channel count, count.
    @inlinable static var headerStride: Int { 3 }

    /// Every rank's status word, channel count and count, exchanged before any
    /// other collective of a synchronized call (so a rank that refuses its
    /// input still takes part, and every rank learns of it).
    ///
    /// - Parameters:
    ///   - shard: this rank's validated geometry, or the error its validation threw.
    ///   - header: `headerStride · size` Doubles to fill.
    /// - Returns: the shard's geometry and the batch's values per statistic,
    ///   or the error this rank throws: its own, ``NormError/rankFailed(rank:)``
    ///   naming the lowest rank that refused,
    ///   ``NormError/parameterCountMismatch(name:expected:actual:)`` for a rank
    ///   with another channel count, or a transport error.
    @inlinable
    static func exchangeStatus(
        _ communicator: any Communicator, shard: Result<ChannelGeometry, NormError>, channels: Int,
        header: UnsafeMutableBufferPointer<Double>
    ) -> Result<(geometry: ChannelGeometry, total: Int), NormError> {
        let (status, count): (NormError?, Int)
        switch shard {
        case let .success(g): (status, count) = (nil, g.valuesPerStatistic)
        case let .failure(error): (status, count) = (error, 0)
        }
        return exchange(communicator, status: status, channels: channels, count: count, header: header)
            .flatMap { total in shard.map { ($0, total) } }
    }

    /// The all-gather of the status header and its reading: the batch's
    /// values per statistic, or the error this rank throws (`status` itself
    /// when it is not `nil`).
    @inlinable
    static func exchange(
        _ communicator: any Communicator, status: NormError?, channels: Int, count: Int,
        header: UnsafeMutableBufferPointer<Double>
    ) -> Result<Int, NormError> {
        let local: (Double, Double, Double) = (status == nil ? 0 : 1, Double(channels), Double(count))
        let exchanged: NormError? = withUnsafeBytes(of: local) { raw in
            do throws(NormError) {
                try communicator.allGather(raw.bindMemory(to: Double.self), into: header)
                return nil
            } catch { return error }
        }
        if let exchanged { return .failure(exchanged) }
        if let status { return .failure(status) }
        var total = 0
        for rank in 0..<communicator.size {
            let entry = rank * headerStride
            guard header[entry] == 0 else { return .failure(.rankFailed(rank: rank)) }
            guard header[entry + 1] == Double(channels) else {
                return .failure(.parameterCountMismatch(
                    name: "the channel count of rank \(rank)", expected: channels,
                    actual: Int(exactly: header[entry + 1]) ?? -1))
            }
            total += Int(header[entry + 2])
        }
        return .success(total)
    }

    @inlinable func totalCount(local: Int) -> Int { total }

    @inlinable func scratchCount(channels: Int) -> Int { (communicator.size + 1) * 2 * channels }

    @inlinable
    func mergeMoments<Scalar: BLASScalar>(
        local: Int, mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        channels: Int, scratch: UnsafeMutablePointer<Scalar>
    ) -> NormError? {
        let size = communicator.size, part = 2 * channels
        scratch.update(from: mean, count: channels)
        (scratch + channels).update(from: m2, count: channels)
        let gathered = scratch + part
        do throws(NormError) {
            try communicator.allGather(UnsafeBufferPointer(start: scratch, count: part),
                                       into: UnsafeMutableBufferPointer(start: gathered, count: size * part))
        } catch { return error }
        mean.update(repeating: 0, count: channels)
        m2.update(repeating: 0, count: channels)
        var count = 0
        for rank in 0..<size {
            let rankCount = Int(header[rank * RankStatistics.headerStride + 2])
            guard rankCount > 0 else { continue }    // count 0: the identity
            let own = gathered + rank * part
            count = Moments.merge(count: count, mean: mean, m2: m2, blockCount: rankCount,
                                  blockMean: own, blockM2: own + channels, length: channels)
        }
        return nil
    }

    @inlinable
    func sumGradients<Scalar: BLASScalar>(_ sums: UnsafeMutablePointer<Scalar>, channels: Int) -> NormError? {
        do throws(NormError) {
            try communicator.allReduceSum(UnsafeMutableBufferPointer(start: sums, count: 2 * channels))
            return nil
        } catch { return error }
    }
}

// MARK: The synchronized passes

extension RankStatistics {
    /// Exchanges the status header (in stack memory for up to 42 ranks), then,
    /// when every rank's call goes ahead, runs `body` with this rank's
    /// geometry and the exchange over the ranks.
    /// - Returns: the error this rank throws (see
    ///   ``exchangeStatus(_:shard:channels:header:)``), or `body`'s.
    @inlinable
    static func synchronized(
        _ communicator: any Communicator, shard: Result<ChannelGeometry, NormError>, channels: Int,
        _ body: (ChannelGeometry, RankStatistics) -> NormError?
    ) -> NormError? {
        withUnsafeTemporaryAllocation(of: Double.self, capacity: communicator.size * headerStride) { header in
            switch exchangeStatus(communicator, shard: shard, channels: channels, header: header) {
            case let .failure(error):
                return error
            case let .success((g, total)):
                return body(g, RankStatistics(communicator: communicator, header: UnsafeBufferPointer(header),
                                              total: total))
            }
        }
    }

    /// The forward pass of ``SyncBatchNorm`` and ``SyncSpatialBatchNorm``
    /// over this rank's `prepared` shard (its geometry, or the error its
    /// validation threw). Inference is this rank's alone, as in
    /// ``BatchStatistics``; training exchanges the status words, then merges
    /// the ranks' moments, then normalizes and updates the running statistics
    /// with the batch's.
    /// - Throws: this rank's error; ``NormError/rankFailed(rank:)``;
    ///   ``NormError/insufficientValues(valuesPerStatistic:)`` when the batch
    ///   holds fewer than 2 values per statistic; the errors of
    ///   ``BatchStatistics``. Every rank throws when one does.
    @inlinable
    static func forward<Scalar: BLASScalar>(
        communicator: any Communicator, prepared: Result<ChannelGeometry, NormError>,
        channels: Int, mode: Mode, origin: CacheOrigin, gamma: [Scalar], beta: [Scalar],
        runningMean: inout [Scalar], runningVariance: inout [Scalar],
        epsilon: Scalar, momentum: Scalar, estimator: VarianceEstimator, backend: Backend,
        output: UnsafeMutableBufferPointer<Scalar>, cache: inout NormCache<Scalar>,
        workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        func pass(_ g: ChannelGeometry, _ exchange: some StatisticsExchange) -> NormError? {
            do throws(NormError) {
                try BatchStatistics.forward(
                    exchange: exchange, geometry: g, mode: mode, origin: origin, gamma: gamma, beta: beta,
                    runningMean: &runningMean, runningVariance: &runningVariance,
                    epsilon: epsilon, momentum: momentum, estimator: estimator, backend: backend,
                    output: output, cache: &cache, workspace: &workspace)
                return nil
            } catch { return error }
        }
        let failure: NormError?
        if mode == .training {
            failure = synchronized(communicator, shard: prepared, channels: channels) { g, ranks in
                ranks.total >= 2 ? pass(g, ranks) : .insufficientValues(valuesPerStatistic: ranks.total)
            }
        } else {
            failure = pass(try prepared.get(), LocalStatistics())
        }
        if let failure {
            cache.invalidate()
            throw failure
        }
    }

    /// The closed-form backward of the synchronized layers over this rank's
    /// `checked` shard (its geometry, or the error its validation threw).
    /// After an inference forward (frozen statistics) it is this rank's alone;
    /// otherwise the ranks exchange status words, then all-reduce the `2·D`
    /// per-channel sums, and `dx` uses the batch's count.
    /// - Throws: this rank's error; ``NormError/rankFailed(rank:)``; a
    ///   transport error. Every rank throws when one does.
    @inlinable
    static func backward<Scalar: BLASScalar>(
        communicator: any Communicator, checked: Result<ChannelGeometry, NormError>,
        channels: Int, origin: CacheOrigin, _ buffers: GradientBuffers<Scalar>,
        cache: NormCache<Scalar>, backend: Backend, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        func pass(_ g: ChannelGeometry, _ exchange: some StatisticsExchange) -> NormError? {
            BatchStatistics.backward(buffers, cache: cache, geometry: g, backend: backend, graph: false,
                                     exchange: exchange, workspace: &workspace)
        }
        let failure: NormError?
        if cache.origin == origin, cache.mode == .inference {
            failure = pass(try checked.get(), LocalStatistics())
        } else {
            failure = synchronized(communicator, shard: checked, channels: channels, pass)
        }
        if let failure { throw failure }
    }

    /// Takes part, for a call refused before its pass, in the status exchange
    /// that pass would have made (a training forward, or a backward that is
    /// not after an inference forward), and returns `error` (or a transport
    /// error).
    @inlinable
    static func refusing(
        _ error: NormError, communicator: any Communicator, channels: Int, collective: Bool
    ) -> NormError {
        guard collective else { return error }
        return synchronized(communicator, shard: .failure(error), channels: channels) { _, _ in nil } ?? error
    }
}

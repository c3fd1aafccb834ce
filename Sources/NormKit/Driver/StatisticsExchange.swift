/// How the per-process sums of a batch-statistics layer become the whole
/// batch's: ``LocalStatistics`` for one process (``BatchNorm``,
/// ``SpatialBatchNorm``), ``RankStatistics`` across the ranks of a
/// ``Communicator`` (``SyncBatchNorm``, ``SyncSpatialBatchNorm``).
/// `BatchStatistics` calls it between its local reductions and everything
/// that uses their results, so both families share every other line.
@usableFromInline
protocol StatisticsExchange {
    /// The workspace scalars the exchange needs for `channels` statistics.
    func scratchCount(channels: Int) -> Int
    /// Replaces this process's moments (`local` values per statistic, `mean`
    /// and `m2` over `channels`) with the whole batch's.
    /// - Returns: the batch's values per statistic, or the error every rank throws.
    func mergeMoments<Scalar: BLASScalar>(
        local: Int, mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        channels: Int, scratch: UnsafeMutablePointer<Scalar>
    ) -> Result<Int, NormError>
    /// Sums the closed-form backward's `2·channels` per-channel sums
    /// (`Σ dy·(x - mean)`, then `Σ dy`) over the processes, in place.
    /// - Returns: the batch's values per statistic, or the error every rank throws.
    func sumGradients<Scalar: BLASScalar>(
        _ sums: UnsafeMutablePointer<Scalar>, channels: Int, local: Int, scratch: UnsafeMutablePointer<Scalar>
    ) -> Result<Int, NormError>
}

/// One process's statistics are the batch's: every step is the identity.
@usableFromInline
struct LocalStatistics: StatisticsExchange {
    @inlinable init() {}
    @inlinable func scratchCount(channels: Int) -> Int { 0 }
    @inlinable func mergeMoments<Scalar: BLASScalar>(
        local: Int, mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        channels: Int, scratch: UnsafeMutablePointer<Scalar>
    ) -> Result<Int, NormError> { .success(local) }
    @inlinable func sumGradients<Scalar: BLASScalar>(
        _ sums: UnsafeMutablePointer<Scalar>, channels: Int, local: Int, scratch: UnsafeMutablePointer<Scalar>
    ) -> Result<Int, NormError> { .success(local) }
}

/// The ranks of a ``Communicator``, one collective per pass: each rank's
/// message is its status word and its sums, all-gathered once.
///
/// A message is ``headerCount`` scalars, then `2·channels`:
/// - the status (0: going ahead; 1: this rank refused its input, its sums are zeros);
/// - the call: ``Call`` (forward or backward) and its number: the layer's
///   count of its synchronized training forwards, which a backward takes
///   from its cache;
/// - the channel count and this rank's values per statistic;
/// - `(mean, M2)` in forward, `(Σ dy·(x - mean), Σ dy)` in backward.
///
/// Integers travel as three 16-bit pieces, exact in Float and Double. Every
/// rank reads the same gathered messages, so every rank reaches the same
/// verdict: a rank in another call (forward against backward, which is what
/// a rank that skipped a call pairs with, or another number: a backward of
/// another step's forward) is
/// ``NormError/callMismatch(rank:expected:actual:)`` on every rank, a rank
/// that refused is ``NormError/rankFailed(rank:)``. Forward merges the moments
/// with ``Moments``' merge in rank order from count 0 and backward adds the
/// sums in rank order, so every rank computes the same bits, and one process's
/// result is its local one exactly.
@usableFromInline
struct RankStatistics: StatisticsExchange {
    /// What a synchronized call is: the pass its message belongs to.
    @usableFromInline
    enum Call: Int, Sendable {
        case forward = 1
        case backward = 2

        @usableFromInline var name: String { self == .forward ? "forward" : "backward" }
    }

    @usableFromInline let communicator: any Communicator
    @usableFromInline let call: Call
    @usableFromInline let number: Int

    @inlinable
    init(communicator: any Communicator, call: Call, number: Int) {
        self.communicator = communicator
        self.call = call
        self.number = number
    }

    /// Scalars before the sums: status, call, number (3), channels (3), count (3).
    @inlinable static var headerCount: Int { 11 }

    @inlinable func scratchCount(channels: Int) -> Int {
        (communicator.size + 1) * (Self.headerCount + 2 * channels)
    }

    /// One rank's message where it lies in the exchange's scratch: the
    /// header's fields by name (the layout of ``RankStatistics``), then the
    /// `2·channels` payload.
    @usableFromInline
    struct Message<Scalar: BLASScalar> {
        @usableFromInline let base: UnsafeMutablePointer<Scalar>

        /// Rank `rank`'s message among messages of `channels` channels from `first`.
        @inlinable
        init(_ first: UnsafeMutablePointer<Scalar>, rank: Int = 0, channels: Int) {
            base = first + rank * Self.length(channels: channels)
        }

        /// The scalars of one message.
        @inlinable
        static func length(channels: Int) -> Int { RankStatistics.headerCount + 2 * channels }

        /// 0: going ahead; 1: this rank refused its input.
        @inlinable var refused: Bool {
            get { base[0] != 0 }
            nonmutating set { base[0] = newValue ? 1 : 0 }
        }
        /// The call, or `nil` for a value that names none.
        @inlinable var call: Call? {
            get { Call(rawValue: Int(exactly: base[1]) ?? 0) }
            nonmutating set { base[1] = Scalar(newValue?.rawValue ?? 0) }
        }
        /// The call's number (-1 for pieces that are not 16-bit integers).
        @inlinable var number: Int {
            get { RankStatistics.read(base + 2) }
            nonmutating set { RankStatistics.write(newValue, to: base + 2) }
        }
        /// The layer's channel count.
        @inlinable var channels: Int {
            get { RankStatistics.read(base + 5) }
            nonmutating set { RankStatistics.write(newValue, to: base + 5) }
        }
        /// The rank's values per statistic.
        @inlinable var count: Int {
            get { RankStatistics.read(base + 8) }
            nonmutating set { RankStatistics.write(newValue, to: base + 8) }
        }
        /// The `2·channels` sums after the header.
        @inlinable var payload: UnsafeMutablePointer<Scalar> { base + RankStatistics.headerCount }
    }

    /// Writes `value` (0 ..< 2⁴⁸) as three 16-bit pieces.
    @inlinable
    static func write<Scalar: BLASScalar>(_ value: Int, to p: UnsafeMutablePointer<Scalar>) {
        for k in 0..<3 { p[k] = Scalar((value >> (16 * k)) & 0xFFFF) }
    }

    /// Reads what ``write(_:to:)`` wrote, or -1 for pieces that are not 16-bit integers.
    @inlinable
    static func read<Scalar: BLASScalar>(_ p: UnsafePointer<Scalar>) -> Int {
        var value = 0
        for k in 0..<3 {
            guard let piece = Int(exactly: p[k]), (0...0xFFFF).contains(piece) else { return -1 }
            value |= piece << (16 * k)
        }
        return value
    }

    /// The one collective of a synchronized call: writes this rank's header
    /// (`status`, `call`, `number`, `channels`, `count`) at `scratch`, before
    /// the `2·channels` scalars the caller wrote at `scratch + headerCount`,
    /// all-gathers the ranks' messages after it, and reads their headers.
    /// - Returns: the gathered messages (rank `r`'s at `r · (headerCount + 2·channels)`)
    ///   and the batch's values per statistic; or the error this rank throws:
    ///   its own `status`, a transport error, ``NormError/callMismatch(rank:expected:actual:)``,
    ///   ``NormError/rankFailed(rank:)``, or
    ///   ``NormError/parameterCountMismatch(name:expected:actual:)`` for a rank
    ///   whose header names another channel count (a message of this length
    ///   from a layer of another size cannot arrive: the transport refuses
    ///   messages of another size).
    @inlinable
    static func exchange<Scalar: BLASScalar>(
        _ communicator: any Communicator, status: NormError?, call: Call, number: Int, channels: Int,
        count: Int, scratch: UnsafeMutablePointer<Scalar>
    ) -> Result<(gathered: UnsafePointer<Scalar>, total: Int), NormError> {
        let length = Message<Scalar>.length(channels: channels), size = communicator.size
        let own = Message(scratch, channels: channels)
        own.refused = status != nil
        own.call = call
        own.number = number
        own.channels = channels
        own.count = count
        // After this rank's message, every rank's as gathered
        // (``scratchCount(channels:)`` sizes both).
        let gathered = scratch + length
        do throws(NormError) {
            try communicator.allGather(UnsafeBufferPointer(start: scratch, count: length),
                                       into: UnsafeMutableBufferPointer(start: gathered, count: size * length))
        } catch { return .failure(error) }
        if let status { return .failure(status) }
        // Every rank reads the same messages in the same order.
        for rank in 0..<size {
            let message = Message(gathered, rank: rank, channels: channels)
            let theirs = message.call, theirNumber = message.number
            guard theirs == call, theirNumber == number else {
                return .failure(.callMismatch(
                    rank: rank, expected: "\(call.name) #\(number)",
                    actual: "\(theirs?.name ?? "another call") #\(theirNumber)"))
            }
        }
        var total = 0
        for rank in 0..<size {
            let message = Message(gathered, rank: rank, channels: channels)
            guard !message.refused else { return .failure(.rankFailed(rank: rank)) }
            guard message.channels == channels else {
                return .failure(.parameterCountMismatch(
                    name: "the channel count of rank \(rank)", expected: channels, actual: message.channels))
            }
            total += message.count
        }
        return .success((UnsafePointer(gathered), total))
    }

    @inlinable
    func mergeMoments<Scalar: BLASScalar>(
        local: Int, mean: UnsafeMutablePointer<Scalar>, m2: UnsafeMutablePointer<Scalar>,
        channels: Int, scratch: UnsafeMutablePointer<Scalar>
    ) -> Result<Int, NormError> {
        // This rank's message: (mean, M2) after the header.
        let payload = Message(scratch, channels: channels).payload
        payload.update(from: mean, count: channels)
        (payload + channels).update(from: m2, count: channels)
        let exchanged = Self.exchange(communicator, status: nil, call: call, number: number, channels: channels,
                                      count: local, scratch: scratch)
        guard case let .success((gathered, total)) = exchanged else { return exchanged.map { $0.total } }
        guard total >= 2 else { return .failure(.insufficientValues(valuesPerStatistic: total)) }
        mean.update(repeating: 0, count: channels)
        m2.update(repeating: 0, count: channels)
        var count = 0
        for rank in 0..<communicator.size {
            let message = Message(UnsafeMutablePointer(mutating: gathered), rank: rank, channels: channels)
            let rankCount = message.count
            guard rankCount > 0 else { continue }    // count 0: the identity
            // Chan's merge overwrites the block's mean with δ: a copy, where
            // this rank's message was before the gather.
            payload.update(from: message.payload, count: 2 * channels)
            count = Moments.merge(count: count, mean: mean, m2: m2, blockCount: rankCount,
                                  blockMean: payload, blockM2: payload + channels, length: channels)
        }
        return .success(total)
    }

    @inlinable
    func sumGradients<Scalar: BLASScalar>(
        _ sums: UnsafeMutablePointer<Scalar>, channels: Int, local: Int, scratch: UnsafeMutablePointer<Scalar>
    ) -> Result<Int, NormError> {
        Message(scratch, channels: channels).payload.update(from: sums, count: 2 * channels)
        let exchanged = Self.exchange(communicator, status: nil, call: call, number: number, channels: channels,
                                      count: local, scratch: scratch)
        guard case let .success((gathered, total)) = exchanged else { return exchanged.map { $0.total } }
        let messages = UnsafeMutablePointer(mutating: gathered)
        sums.update(from: Message(messages, channels: channels).payload, count: 2 * channels)
        for rank in 1..<max(1, communicator.size) {
            Scalar.axpy(count: 2 * channels, alpha: 1, x: Message(messages, rank: rank, channels: channels).payload,
                        y: sums)
        }
        return .success(total)
    }
}

// MARK: The synchronized passes

extension RankStatistics {
    /// The forward pass of ``SyncBatchNorm`` and ``SyncSpatialBatchNorm``
    /// over this rank's `prepared` shard (its geometry, or the error its
    /// validation threw). Inference is this rank's alone, as in
    /// ``BatchStatistics``; training (the layer's `number`th) computes this
    /// rank's moments, exchanges them with the status word in one all-gather,
    /// merges them, then normalizes and updates the running statistics with
    /// the batch's. The cache records `number` for backward. `source`, when
    /// given, is this rank's input, which the pass that first reads it copies
    /// into the cache (as in ``BatchStatistics``).
    /// - Throws: this rank's error; ``NormError/rankFailed(rank:)``;
    ///   ``NormError/callMismatch(rank:expected:actual:)``;
    ///   ``NormError/insufficientValues(valuesPerStatistic:)`` when the batch
    ///   holds fewer than 2 values per statistic; the errors of
    ///   ``BatchStatistics``. Every rank throws when one does.
    @inlinable
    static func forward<Scalar: BLASScalar>(
        communicator: any Communicator, prepared: Result<ChannelGeometry, NormError>,
        channels: Int, mode: Mode, number: Int, origin: CacheOrigin, gamma: [Scalar], beta: [Scalar],
        runningMean: inout [Scalar], runningVariance: inout [Scalar],
        epsilon: Scalar, update: RunningUpdate<Scalar>?, estimator: VarianceEstimator, backend: Backend,
        output: UnsafeMutableBufferPointer<Scalar>, residual: UnsafePointer<Scalar>?,
        activation: FusedActivation, cache: inout NormCache<Scalar>,
        workspace: inout Workspace<Scalar>, reduced: ReducedStreams? = nil,
        source: UnsafePointer<Scalar>? = nil
    ) throws(NormError) {
        let exchange: RankStatistics? = mode == .training
            ? RankStatistics(communicator: communicator, call: .forward, number: number)
            : nil
        let g: ChannelGeometry
        switch prepared {
        case let .success(geometry): g = geometry
        case let .failure(error):
            cache.invalidate()
            guard let exchange else { throw error }
            throw exchange.refusing(error, channels: channels, of: Scalar.self)
        }
        do throws(NormError) {
            if let exchange {
                try BatchStatistics.forward(
                    exchange: exchange, geometry: g, mode: mode, origin: origin, gamma: gamma, beta: beta,
                    runningMean: &runningMean, runningVariance: &runningVariance, epsilon: epsilon,
                    update: update, estimator: estimator, backend: backend, output: output,
                    residual: residual, activation: activation, cache: &cache, workspace: &workspace,
                    reduced: reduced, source: source)
            } else {
                try BatchStatistics.forward(
                    exchange: LocalStatistics(), geometry: g, mode: mode, origin: origin, gamma: gamma,
                    beta: beta, runningMean: &runningMean, runningVariance: &runningVariance,
                    epsilon: epsilon, update: update, estimator: estimator, backend: backend,
                    output: output, residual: residual, activation: activation, cache: &cache,
                    workspace: &workspace, reduced: reduced, source: source)
            }
        } catch {
            cache.invalidate()
            throw error
        }
        cache.call = exchange == nil ? 0 : number
    }

    /// The closed-form backward of the synchronized layers over this rank's
    /// `checked` shard (its geometry, or the error its validation threw).
    /// After an inference forward (frozen statistics) it is this rank's alone;
    /// otherwise the ranks exchange their status words (with `number`, the
    /// forward's) and `2·D` per-channel sums in one all-gather; `dx` uses the
    /// batch's count.
    /// - Throws: this rank's error; ``NormError/rankFailed(rank:)``;
    ///   ``NormError/callMismatch(rank:expected:actual:)``; a transport error.
    ///   Every rank throws when one does.
    @inlinable
    static func backward<Scalar: BLASScalar>(
        communicator: any Communicator, checked: Result<ChannelGeometry, NormError>,
        channels: Int, number: Int, origin: CacheOrigin, _ buffers: GradientBuffers<Scalar>,
        residualGradient: UnsafeMutableBufferPointer<Scalar>?,
        cache: NormCache<Scalar>, backend: Backend, workspace: inout Workspace<Scalar>
    ) throws(NormError) {
        // A residual gradient of another count is this rank's refusal, told
        // to the others; a checked call goes through the ReLU's mask first.
        var checked = checked
        if case .success = checked, let residualGradient,
           residualGradient.count != cache.input.count {
            checked = .failure(.bufferCountMismatch(name: "residualGradient",
                                                    expected: cache.input.count,
                                                    actual: residualGradient.count))
        }
        guard case .success = checked else {
            try backward(communicator: communicator, checked: checked, channels: channels,
                         number: number, origin: origin, buffers, cache: cache, backend: backend,
                         workspace: &workspace)
            return
        }
        try cache.backwardThroughActivation(
            buffers, residualGradient: residualGradient,
            masksInside: (try? checked.get())?.inner == 1, workspace: &workspace
        ) { buffers, mask, workspace throws(NormError) in
            try backward(communicator: communicator, checked: checked, channels: channels,
                         number: number, origin: origin, buffers, mask: mask, cache: cache,
                         backend: backend, workspace: &workspace)
        }
    }

    /// ``backward(communicator:checked:channels:number:origin:_:residualGradient:cache:backend:workspace:)``
    /// once the gradient reaches the affine map (or with the ReLU's `mask`
    /// still to apply).
    @inlinable
    static func backward<Scalar: BLASScalar>(
        communicator: any Communicator, checked: Result<ChannelGeometry, NormError>,
        channels: Int, number: Int, origin: CacheOrigin, _ buffers: GradientBuffers<Scalar>,
        mask: UnsafePointer<UInt8>? = nil,
        cache: NormCache<Scalar>, backend: Backend, workspace: inout Workspace<Scalar>,
        reduced: ReducedStreams? = nil
    ) throws(NormError) {
        let failure: NormError?
        if cache.origin == origin, cache.mode == .inference {
            failure = BatchStatistics.backward(buffers, mask: mask, cache: cache,
                                               geometry: try checked.get(),
                                               backend: backend, form: .closedForm, exchange: LocalStatistics(),
                                               workspace: &workspace, reduced: reduced)
        } else {
            let exchange = RankStatistics(communicator: communicator, call: .backward, number: number)
            switch checked {
            case let .success(g):
                failure = BatchStatistics.backward(buffers, mask: mask, cache: cache, geometry: g,
                                                   backend: backend, form: .closedForm, exchange: exchange,
                                                   workspace: &workspace, reduced: reduced)
            case let .failure(error):
                failure = exchange.refusing(error, channels: channels, of: Scalar.self)
            }
        }
        if let failure { throw failure }
    }

    /// Takes part, for a call this rank refused, in the one exchange of the
    /// call (with status 1 and zero sums), and returns `error` (or a transport
    /// error). The message lives in memory allocated here: a refused call
    /// may allocate.
    @inlinable
    func refusing<Scalar: BLASScalar>(_ error: NormError, channels: Int, of _: Scalar.Type) -> NormError {
        withUnsafeTemporaryAllocation(of: Scalar.self, capacity: scratchCount(channels: channels)) { scratch in
            scratch.initialize(repeating: 0)
            let exchanged = Self.exchange(communicator, status: error, call: call, number: number,
                                          channels: channels, count: 0, scratch: scratch.baseAddress!)
            if case let .failure(failure) = exchanged { return failure }
            return error
        }
    }

    /// What a call refused before its pass throws (``BufferedNormalizationLayer/refusingForward(_:mode:)``
    /// and `refusingBackward`): `error`, after taking part in the call's
    /// exchange when the call is collective (a training forward, or a
    /// backward that does not follow an inference forward).
    @inlinable
    static func refusing<Scalar: BLASScalar>(
        _ error: NormError, communicator: any Communicator, channels: Int, of type: Scalar.Type,
        collective call: Call?, number: Int
    ) -> NormError {
        guard let call else { return error }
        return RankStatistics(communicator: communicator, call: call, number: number)
            .refusing(error, channels: channels, of: type)
    }

    /// The number a backward sends: its cache's forward's when the cache is
    /// this layer's, else the layer's last training forward's.
    @inlinable
    static func number<Scalar: BLASScalar>(of cache: NormCache<Scalar>, origin: CacheOrigin, last: Int) -> Int {
        cache.origin == origin && cache.call > 0 ? cache.call : last
    }
}

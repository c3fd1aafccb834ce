/// Which layer's forward pass filled a ``NormCache``: its family and what
/// fixes the meaning of the cached statistics (size, layout, groups).
///
/// Backward checks it before anything else, so a cache from another layer, a
/// layer of another size, layout or group count, or a forward pass that threw
/// is refused with ``NormError/cacheMismatch(expected:actual:)`` instead of
/// giving silently wrong gradients.
public enum CacheOrigin: Sendable, Hashable, CustomStringConvertible {
    /// No forward pass filled the cache, or the last one threw.
    case none
    /// ``BatchNorm`` with `featureCount` features.
    case batchNorm(featureCount: Int)
    /// ``SpatialBatchNorm`` with `channelCount` channels in `layout`.
    case spatialBatchNorm(channelCount: Int, layout: ChannelLayout)
    /// ``SyncBatchNorm`` with `featureCount` features.
    case syncBatchNorm(featureCount: Int)
    /// ``SyncSpatialBatchNorm`` with `channelCount` channels in `layout`.
    case syncSpatialBatchNorm(channelCount: Int, layout: ChannelLayout)
    /// ``LayerNorm`` with `featureCount` features.
    case layerNorm(featureCount: Int)
    /// ``RMSNorm`` with `featureCount` features.
    case rmsNorm(featureCount: Int)
    /// ``GroupNorm`` with `channelCount` channels in `groupCount` groups.
    case groupNorm(channelCount: Int, groupCount: Int, layout: ChannelLayout = .nchw)
    /// ``InstanceNorm`` with `channelCount` channels.
    case instanceNorm(channelCount: Int, layout: ChannelLayout = .nchw)
    /// ``DecorrelatedBatchNorm`` with `featureCount` features in groups of
    /// `groupSize`, whitened by `method`.
    case decorrelatedBatchNorm(featureCount: Int, groupSize: Int, method: WhiteningMethod)

    /// The layer as its initializer would be written, e.g. `LayerNorm(featureCount: 5)`.
    public var description: String {
        switch self {
        case .none: "no forward pass (an empty cache, or one whose forward pass threw)"
        case let .batchNorm(d): "BatchNorm(featureCount: \(d))"
        case let .spatialBatchNorm(c, layout): "SpatialBatchNorm(channelCount: \(c), layout: .\(layout))"
        case let .syncBatchNorm(d): "SyncBatchNorm(featureCount: \(d))"
        case let .syncSpatialBatchNorm(c, layout): "SyncSpatialBatchNorm(channelCount: \(c), layout: .\(layout))"
        case let .layerNorm(d): "LayerNorm(featureCount: \(d))"
        case let .rmsNorm(d): "RMSNorm(featureCount: \(d))"
        case let .groupNorm(c, g, layout):
            "GroupNorm(channelCount: \(c), groupCount: \(g)\(layout == .nhwc ? ", layout: .nhwc" : ""))"
        case let .instanceNorm(c, layout):
            "InstanceNorm(channelCount: \(c)\(layout == .nhwc ? ", layout: .nhwc" : ""))"
        case let .decorrelatedBatchNorm(d, m, method):
            "DecorrelatedBatchNorm(featureCount: \(d), groupSize: \(m), method: \(method))"
        }
    }
}

import Foundation

/// A line chart written as a standalone SVG file: axes with ticks and labels,
/// a title, a legend, linear or logarithmic x axis, and markers for points
/// that should stand out (runs that diverged).
public struct LinePlot: Sendable {
    /// One line of the chart.
    public struct Series: Sendable {
        /// The legend entry.
        public var name: String
        /// The points, in drawing order. Non-finite y values break the line.
        public var points: [(x: Double, y: Double)]
        /// Draw a dashed line.
        public var dashed: Bool
        /// Draw a marker at every point.
        public var markers: Bool

        /// A series.
        public init(name: String, points: [(x: Double, y: Double)], dashed: Bool = false,
                    markers: Bool = false) {
            self.name = name
            self.points = points
            self.dashed = dashed
            self.markers = markers
        }
    }

    /// The title above the chart.
    public var title: String
    /// The x axis label.
    public var xLabel: String
    /// The y axis label.
    public var yLabel: String
    /// The lines.
    public var series: [Series]
    /// A logarithmic x axis (positive x only).
    public var logarithmicX: Bool
    /// Points drawn as red crosses with the legend entry `crossLabel`.
    public var crosses: [(x: Double, y: Double)]
    /// The legend entry for ``crosses``.
    public var crossLabel: String
    /// Pixel size of the whole image, less the legend's width past 190
    /// pixels (a legend of long names widens the image; the plot keeps its size).
    public var width = 760.0, height = 460.0

    /// A chart.
    public init(title: String, xLabel: String, yLabel: String, series: [Series],
                logarithmicX: Bool = false, crosses: [(x: Double, y: Double)] = [],
                crossLabel: String = "diverged") {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.logarithmicX = logarithmicX
        self.crosses = crosses
        self.crossLabel = crossLabel
    }

    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]

    /// Tick values at 1, 2 or 5 times a power of ten, covering `low...high`.
    static func niceTicks(_ low: Double, _ high: Double, count: Int = 6) -> [Double] {
        guard high > low else { return [low] }
        let raw = (high - low) / Double(count)
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        var ticks: [Double] = []
        var t = (low / step).rounded(.down) * step
        while t <= high + step * 1e-9 {
            if t >= low - step * 1e-9 { ticks.append(abs(t) < step * 1e-9 ? 0 : t) }
            t += step
        }
        return ticks
    }

    static func label(_ value: Double) -> String {
        if value == 0 { return "0" }
        let magnitude = abs(value)
        if magnitude >= 1e4 || magnitude < 1e-3 { return String(format: "%.0e", value) }
        var text = String(format: "%.3f", value)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// The legend's width for its longest entry: a 24-pixel line sample, a
    /// gap, and the text at 12 pixels (7 pixels a character, the width of
    /// Helvetica's widest lowercase and digits on average, rounded up).
    func legendWidth() -> Double {
        let names = series.map(\.name) + (crosses.isEmpty ? [] : [crossLabel])
        let longest = names.map(\.count).max() ?? 0
        return 16 + 30 + 7 * Double(longest) + 12
    }

    /// For each series, whether it runs within a pixel of an earlier one at
    /// every point (same x values), so that drawn alike it would vanish under
    /// it: such a series is drawn dashed (and with markers if already dashed).
    func coincidingSeries(_ px: (Double) -> Double, _ py: (Double) -> Double) -> [Bool] {
        series.indices.map { i in
            let mine = series[i].points.filter { $0.x.isFinite && $0.y.isFinite }
            guard !mine.isEmpty else { return false }
            return (0..<i).contains { j in
                let theirs = series[j].points.filter { $0.x.isFinite && $0.y.isFinite }
                return theirs.count == mine.count && zip(mine, theirs).allSatisfy { a, b in
                    a.x == b.x && abs(py(a.y) - py(b.y)) < 1.5
                }
            }
        }
    }

    /// The chart as SVG text.
    public func svg() -> String {
        let left = 78.0, right = max(190.0, legendWidth()), top = 44.0, bottom = 62.0
        let width = self.width - 190 + right
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let all = series.flatMap(\.points) + crosses
        let finite = all.filter { $0.x.isFinite && $0.y.isFinite && (!logarithmicX || $0.x > 0) }
        var xs = finite.map { logarithmicX ? log10($0.x) : $0.x }
        var ys = finite.map(\.y)
        if xs.isEmpty { xs = [0, 1] }
        if ys.isEmpty { ys = [0, 1] }
        var (xLow, xHigh) = (xs.min()!, xs.max()!)
        var (yLow, yHigh) = (ys.min()!, ys.max()!)
        if xHigh == xLow { xLow -= 1; xHigh += 1 }
        if yHigh == yLow { yLow -= 0.5; yHigh += 0.5 }
        let yPad = (yHigh - yLow) * 0.05
        yLow -= yPad
        yHigh += yPad
        let xTicks: [Double]
        if logarithmicX {
            xLow = floor(xLow)
            xHigh = ceil(xHigh)
            xTicks = stride(from: xLow, through: xHigh, by: 1).map { $0 }
        } else {
            xTicks = Self.niceTicks(xLow, xHigh)
        }
        let yTicks = Self.niceTicks(yLow, yHigh)
        func px(_ x: Double) -> Double {
            left + ((logarithmicX ? log10(x) : x) - xLow) / (xHigh - xLow) * plotWidth
        }
        func py(_ y: Double) -> Double { top + (yHigh - y) / (yHigh - yLow) * plotHeight }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }

        var out = """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif">
        <rect x="0" y="0" width="\(Int(width))" height="\(Int(height))" fill="white"/>
        <text x="\(f(left + plotWidth / 2))" y="26" text-anchor="middle" font-size="16" font-weight="bold">\(Self.escape(title))</text>

        """
        // Grid, ticks and tick labels.
        for tick in xTicks {
            let x = left + (tick - xLow) / (xHigh - xLow) * plotWidth
            let text = logarithmicX ? "1e\(Int(tick))" : Self.label(tick)
            out += "<line x1=\"\(f(x))\" y1=\"\(f(top))\" x2=\"\(f(x))\" y2=\"\(f(top + plotHeight))\" stroke=\"#e5e5e5\"/>\n"
            out += "<line x1=\"\(f(x))\" y1=\"\(f(top + plotHeight))\" x2=\"\(f(x))\" y2=\"\(f(top + plotHeight + 5))\" stroke=\"black\"/>\n"
            out += "<text x=\"\(f(x))\" y=\"\(f(top + plotHeight + 20))\" text-anchor=\"middle\" font-size=\"12\">\(text)</text>\n"
        }
        for tick in yTicks {
            let y = py(tick)
            out += "<line x1=\"\(f(left))\" y1=\"\(f(y))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(y))\" stroke=\"#e5e5e5\"/>\n"
            out += "<line x1=\"\(f(left - 5))\" y1=\"\(f(y))\" x2=\"\(f(left))\" y2=\"\(f(y))\" stroke=\"black\"/>\n"
            out += "<text x=\"\(f(left - 8))\" y=\"\(f(y + 4))\" text-anchor=\"end\" font-size=\"12\">\(Self.label(tick))</text>\n"
        }
        out += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotWidth))\" height=\"\(f(plotHeight))\" fill=\"none\" stroke=\"black\"/>\n"
        out += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(height - 16))\" text-anchor=\"middle\" font-size=\"13\">\(Self.escape(xLabel))</text>\n"
        out += "<text x=\"18\" y=\"\(f(top + plotHeight / 2))\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 18 \(f(top + plotHeight / 2)))\">\(Self.escape(yLabel))</text>\n"
        // Lines, clipped to the plot area.
        out += "<clipPath id=\"plot\"><rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotWidth))\" height=\"\(f(plotHeight))\"/></clipPath>\n"
        out += "<g clip-path=\"url(#plot)\">\n"
        let hidden = coincidingSeries(px, py)
        let drawn = series.indices.map { i in
            var s = series[i]
            if hidden[i] { if s.dashed { s.markers = true } else { s.dashed = true } }
            return s
        }
        for (index, s) in drawn.enumerated() {
            let color = Self.palette[index % Self.palette.count]
            var segments: [[String]] = [[]]
            for p in s.points {
                if p.y.isFinite && p.x.isFinite && (!logarithmicX || p.x > 0) {
                    segments[segments.count - 1].append("\(f(px(p.x))),\(f(py(p.y)))")
                } else if !segments[segments.count - 1].isEmpty {
                    segments.append([])
                }
            }
            let dash = s.dashed ? " stroke-dasharray=\"6 4\"" : ""
            for segment in segments where segment.count > 1 {
                out += "<polyline points=\"\(segment.joined(separator: " "))\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\"\(dash)/>\n"
            }
            // A point cut off by gaps on both sides would vanish as a line: mark it.
            for segment in segments where segment.count == 1 && !s.markers {
                let xy = segment[0].split(separator: ",")
                out += "<circle cx=\"\(xy[0])\" cy=\"\(xy[1])\" r=\"3\" fill=\"\(color)\"/>\n"
            }
            if s.markers || s.points.count == 1 {
                for p in s.points where p.y.isFinite && (!logarithmicX || p.x > 0) {
                    out += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"3\" fill=\"\(color)\"/>\n"
                }
            }
        }
        for p in crosses where p.y.isFinite && (!logarithmicX || p.x > 0) {
            let (x, y) = (px(p.x), py(p.y))
            out += "<path d=\"M\(f(x - 5)),\(f(y - 5)) L\(f(x + 5)),\(f(y + 5)) M\(f(x - 5)),\(f(y + 5)) L\(f(x + 5)),\(f(y - 5))\" stroke=\"#d62728\" stroke-width=\"2\"/>\n"
        }
        out += "</g>\n"
        // Legend.
        var legendY = top + 8
        let legendX = left + plotWidth + 16
        for (index, s) in drawn.enumerated() {
            let color = Self.palette[index % Self.palette.count]
            let dash = s.dashed ? " stroke-dasharray=\"6 4\"" : ""
            out += "<line x1=\"\(f(legendX))\" y1=\"\(f(legendY))\" x2=\"\(f(legendX + 24))\" y2=\"\(f(legendY))\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>\n"
            out += "<text x=\"\(f(legendX + 30))\" y=\"\(f(legendY + 4))\" font-size=\"12\">\(Self.escape(s.name))</text>\n"
            legendY += 20
        }
        if !crosses.isEmpty {
            out += "<path d=\"M\(f(legendX + 7)),\(f(legendY - 5)) L\(f(legendX + 17)),\(f(legendY + 5)) M\(f(legendX + 7)),\(f(legendY + 5)) L\(f(legendX + 17)),\(f(legendY - 5))\" stroke=\"#d62728\" stroke-width=\"2\"/>\n"
            out += "<text x=\"\(f(legendX + 30))\" y=\"\(f(legendY + 4))\" font-size=\"12\">\(Self.escape(crossLabel))</text>\n"
        }
        out += "</svg>\n"
        return out
    }

    /// Writes ``svg()`` to `path`.
    public func write(to path: String) throws {
        try svg().write(toFile: path, atomically: true, encoding: .utf8)
    }
}

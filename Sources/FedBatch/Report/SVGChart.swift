import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// Small inline-SVG charts for the report: a plot area with axes, ticks and
/// gridlines, in a fixed-size viewBox so that the HTML layout is fixed too.
/// Everything is drawn here, with no script and no external resource, so
/// the report opens the same on an air-gapped machine.
struct SVGChart {
    static let width = 760.0, height = 280.0
    /// The plot area inside the chart.
    static let left = 80.0, right = 64.0, top = 16.0, bottom = 40.0
    static var plotWidth: Double { width - left - right }
    static var plotHeight: Double { height - top - bottom }

    private(set) var body = ""

    /// Maps a data range onto the plot area.
    struct Scale {
        let lower: Double, upper: Double, from: Double, to: Double
        func callAsFunction(_ v: Double) -> Double {
            upper == lower ? (from + to) / 2 : from + (v - lower) / (upper - lower) * (to - from)
        }
    }

    mutating func add(_ element: String) { body += element + "\n" }

    func svg(label: String) -> String {
        "<svg role=\"img\" aria-label=\"\(escapeXML(label))\" width=\"\(Int(Self.width))\" "
            + "height=\"\(Int(Self.height))\" "
            + "viewBox=\"0 0 \(Int(Self.width)) \(Int(Self.height))\">\n\(body)</svg>"
    }

    // MARK: Axes

    /// A horizontal axis along the bottom of the plot with its ticks.
    mutating func xAxis(_ scale: Scale, ticks: [Double], label: String, format: (Double) -> String = { tickLabel($0) })
    {
        let y = Self.top + Self.plotHeight
        add(line(Self.left, y, Self.left + Self.plotWidth, y, stroke: "#444"))
        for t in ticks {
            let x = scale(t)
            add(line(x, y, x, y + 4, stroke: "#444"))
            add(text(x, y + 16, format(t), anchor: "middle"))
        }
        add(text(Self.left + Self.plotWidth / 2, Self.height - 6, label, anchor: "middle", weight: "bold"))
    }

    /// A vertical axis at the left (or right) with gridlines across the plot.
    mutating func yAxis(
        _ scale: Scale, ticks: [Double], label: String, onRight: Bool = false, grid: Bool = true,
        color: String = "#444", format: (Double) -> String = { tickLabel($0) }
    ) {
        let x = onRight ? Self.left + Self.plotWidth : Self.left
        add(line(x, Self.top, x, Self.top + Self.plotHeight, stroke: color))
        for t in ticks {
            let y = scale(t)
            if grid { add(line(Self.left, y, Self.left + Self.plotWidth, y, stroke: "#e4e4e4")) }
            add(text(onRight ? x + 6 : x - 6, y + 4, format(t), anchor: onRight ? "start" : "end", fill: color))
        }
        let lx = onRight ? Self.width - 12 : 12
        add(
            "<text x=\"\(f(lx))\" y=\"\(f(Self.top + Self.plotHeight / 2))\" "
                + "transform=\"rotate(-90 \(f(lx)) \(f(Self.top + Self.plotHeight / 2)))\" "
                + "text-anchor=\"middle\" font-size=\"12\" font-weight=\"bold\" "
                + "fill=\"\(color)\">\(escapeXML(label))</text>"
        )
    }

    // MARK: Marks

    mutating func polyline(_ points: [(Double, Double)], stroke: String) {
        guard points.count > 1 else { return }
        add(
            "<polyline fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"2.5\" "
                + "points=\"\(points.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " "))\"/>"
        )
    }

    mutating func dots(_ points: [(Double, Double)], fill: String, radius: Double = 3.5, titles: [String]? = nil) {
        for (i, p) in points.enumerated() {
            let title = titles.map { "<title>\(escapeXML($0[i]))</title>" } ?? ""
            add("<circle cx=\"\(f(p.0))\" cy=\"\(f(p.1))\" r=\"\(f(radius))\" fill=\"\(fill)\">\(title)</circle>")
        }
    }

    mutating func rect(_ x: Double, _ y: Double, _ w: Double, _ h: Double, fill: String, title: String? = nil) {
        let t = title.map { "<title>\(escapeXML($0))</title>" } ?? ""
        add(
            "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(max(w, 0)))\" height=\"\(f(max(h, 0)))\" "
                + "fill=\"\(fill)\">\(t)</rect>"
        )
    }

    mutating func legend(_ entries: [(String, String)]) {
        // Top right, clear of the left axis's labels.
        var x = Self.left + Self.plotWidth - entries.reduce(0) { $0 + 24 + Double($1.0.count) * 7 }
        for (name, color) in entries {
            rect(x, Self.top + 6, 12, 12, fill: color)
            add(text(x + 16, Self.top + 16, name, anchor: "start"))
            x += 24 + Double(name.count) * 7
        }
    }

    func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String) -> String {
        "<line x1=\"\(f(x1))\" y1=\"\(f(y1))\" x2=\"\(f(x2))\" y2=\"\(f(y2))\" stroke=\"\(stroke)\" "
            + "stroke-width=\"1\"/>"
    }

    func text(
        _ x: Double, _ y: Double, _ s: String, anchor: String, fill: String = "#333", weight: String = "normal"
    ) -> String {
        "<text x=\"\(f(x))\" y=\"\(f(y))\" text-anchor=\"\(anchor)\" font-size=\"12\" font-weight=\"\(weight)\" "
            + "fill=\"\(fill)\">\(escapeXML(s))</text>"
    }
}

/// Two decimals are plenty at 760 pixels, and keep the file small.
func f(_ v: Double) -> String { String(format: "%.2f", v) }

/// "Nice" tick values covering [lower, upper]: steps of 1, 2 or 5 × 10^k.
func niceTicks(_ lower: Double, _ upper: Double, count: Int = 5) -> [Double] {
    guard upper > lower, lower.isFinite, upper.isFinite else { return [lower] }
    let raw = (upper - lower) / Double(max(1, count))
    let magnitude = pow(10, floor(log10(raw)))
    let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
    var ticks: [Double] = []
    var t = ceil(lower / step - 1e-9) * step
    while t <= upper + step * 1e-9 {
        ticks.append(abs(t) < step * 1e-9 ? 0 : t)
        t += step
    }
    return ticks
}

func tickLabel(_ v: Double) -> String {
    if v == v.rounded(), abs(v) < 1e9 { return String(Int(v)) }
    return String(format: abs(v) < 1 ? "%.2f" : "%.1f", v)
}

/// Bytes in binary units, for axis ticks and tooltips.
func byteLabel(_ v: Double) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = v, unit = 0
    while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
    return value == value.rounded() ? "\(Int(value)) \(units[unit])" : String(format: "%.1f %@", value, units[unit])
}

func escapeXML(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}

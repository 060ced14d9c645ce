import FedBatchFormats
import FedBatchLearning
import FedBatchNative
import FedBatchStore
import FedBatchTrust
import Foundation

/// `fedbatch report`: one self-contained HTML file with inline SVG charts.
/// No script, no stylesheet or font from elsewhere, no link out: it is
/// meant to be mailed, archived, or opened on an air-gapped machine.
///
/// The layout has fixed heights (a header, then one 340-pixel section per
/// chart, in the order of `HTMLReport.charts`), so that a chart is always
/// in the same place on the page; the tests rely on it.
public enum HTMLReport {
    /// The chart sections, in page order: id and title.
    public static let charts = [
        ("accuracy", "Accuracy and loss per generation"),
        ("evaluations", "Each site's evaluation of each generation, on its own held-out data"),
        ("participation", "Participation: which site's bundle each generation included"),
        ("rejections", "Refused files by reason"),
        ("sizes", "Size of each included bundle"),
        ("staleness", "Staleness: how many generations behind each included bundle was"),
    ]
    public static let headerHeight = 120, sectionHeight = 340

    static let accuracyColor = "#1f77b4", lossColor = "#ff7f0e", includedColor = "#2ca02c", absentColor = "#e8e8e8",
        rejectedColor = "#d62728", sizeColor = "#9467bd", stalenessColor = "#8c564b", federatedColor = "#e377c2",
        collectorColor = "#555555"
    /// Site lines: light colours none of the charts' data colours uses.
    static let sitePalette = ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#dbdb8d", "#9edae5"]

    public static func render(_ data: ReportData, now: Date = Date()) -> String {
        let newest = data.generations.last
        var html = """
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <title>fedbatch report: \(escapeXML(data.modelID))</title>
            <style>
            body { margin: 0; font: 14px/1.4 sans-serif; color: #222; background: #fff; }
            header { height: \(headerHeight)px; box-sizing: border-box; padding: 16px 24px; border-bottom: 1px solid \
            #ddd; overflow: hidden; }
            header h1 { margin: 0 0 6px; font-size: 20px; }
            header p { margin: 2px 0; color: #555; }
            section.chart { height: \(sectionHeight)px; box-sizing: border-box; padding: 8px 24px; overflow: hidden; }
            section.chart h2 { height: 24px; margin: 0 0 4px; font-size: 15px; }
            section.chart p.note { margin: 0; color: #777; font-size: 12px; height: 16px; overflow: hidden; }
            svg { display: block; }
            table { border-collapse: collapse; margin: 8px 24px 32px; font-size: 13px; }
            th, td { border-bottom: 1px solid #eee; padding: 3px 10px; text-align: right; }
            th:first-child, td:first-child { text-align: left; }
            code { font-size: 12px; }
            </style>
            </head>
            <body>
            <header>
            <h1>fedbatch: \(escapeXML(data.modelID))</h1>
            <p>\(escapeXML(data.arch)) · \(data.generations.count) generations · \(data.sites.count) sites \
            · \(data.participation.count) bundles included · \(data.rejections.reduce(0) { $0 + $1.count }) files \
            refused</p>
            <p>newest: generation \(newest.map { "\($0.number), \(escapeXML($0.created)), " +
                "<code>\($0.digest.prefix(16))…</code>" } ?? "none")</p>
            <p>report written \(rfc3339(now)) from state.db; it does not verify signatures (use <code>fedbatch \
            log</code>)</p>
            </header>

            """
        html += section("accuracy", note: accuracyNote(data), svg: accuracyChart(data))
        html += section("evaluations", note: siteEvaluationNote(data), svg: siteEvaluationChart(data))
        html += section(
            "participation",
            // Generation 0 includes no bundle, and the grid leaves it out.
            note: "\(data.sites.count) sites × \(data.generations.filter { $0.number > 0 }.count) generations; "
                + "green: included",
            svg: participationChart(data))
        html += section(
            "rejections",
            note: data.rejections.isEmpty
                ? "no file has been refused" : "every refused file since the home was created, by reason code",
            svg: rejectionChart(data))
        html += section("sizes", note: sizesNote(data), svg: sizeChart(data))
        html += section("staleness", note: stalenessNote(data), svg: stalenessChart(data))
        html += table(data)
        html += "</body>\n</html>\n"
        return html
    }

    static func section(_ id: String, note: String, svg: String) -> String {
        let title = charts.first { $0.0 == id }!.1
        return
            "<section class=\"chart\" id=\"\(id)\">\n<h2>\(escapeXML(title))</h2>\n<p "
            + "class=\"note\">\(escapeXML(note))</p>\n\(svg)\n</section>\n"
    }

    // MARK: Charts

    static func accuracyNote(_ d: ReportData) -> String {
        guard let last = d.evaluations.last else {
            return
                "no evaluations: set data in the [eval] table of fedbatch.toml, and each merge evaluates its generation"
        }
        return String(
            format: "on %@ (%d examples); newest: generation %d, accuracy %.4f, loss %.4f",
            (last.data as NSString).lastPathComponent, last.examples, last.generation, last.accuracy, last.loss)
    }

    static func accuracyChart(_ d: ReportData) -> String {
        if d.evaluations.isEmpty {
            return emptyChart(
                "No evaluations: set data in the [eval] table, and each merge evaluates its generation",
                label: "accuracy and loss per generation")
        }
        var c = SVGChart()
        let gens = d.evaluations.map { Double($0.generation) }
        let xLower = gens.min() ?? 0, xUpper = max(gens.max() ?? 1, xLower + 1)
        let x = SVGChart.Scale(
            lower: xLower, upper: xUpper, from: SVGChart.left, to: SVGChart.left + SVGChart.plotWidth)
        let acc = SVGChart.Scale(lower: 0, upper: 1, from: SVGChart.top + SVGChart.plotHeight, to: SVGChart.top)
        let lossMax = max(d.evaluations.map(\.loss).max() ?? 1, 1e-6)
        // Ticks that reach above the largest loss, so that no point is drawn
        // outside the plot.
        var lossTicks = niceTicks(0, lossMax * 1.05)
        if let last = lossTicks.last, last < lossMax {
            lossTicks.append(last + (lossTicks.count > 1 ? lossTicks[1] - lossTicks[0] : max(last, 1)))
        }
        let loss = SVGChart.Scale(
            lower: 0, upper: lossTicks.last ?? lossMax, from: SVGChart.top + SVGChart.plotHeight, to: SVGChart.top)
        c.yAxis(acc, ticks: niceTicks(0, 1), label: "accuracy", color: accuracyColor)
        c.yAxis(loss, ticks: lossTicks, label: "loss", onRight: true, grid: false, color: lossColor)
        c.xAxis(x, ticks: integerTicks(xLower, xUpper), label: "generation")
        let accPoints = d.evaluations.map { (x(Double($0.generation)), acc($0.accuracy)) }
        let lossPoints = d.evaluations.map { (x(Double($0.generation)), loss($0.loss)) }
        c.polyline(lossPoints, stroke: lossColor)
        c.polyline(accPoints, stroke: accuracyColor)
        c.dots(
            lossPoints, fill: lossColor,
            titles: d.evaluations.map { String(format: "generation %d: loss %.4f", $0.generation, $0.loss) })
        c.dots(
            accPoints, fill: accuracyColor,
            titles: d.evaluations.map { String(format: "generation %d: accuracy %.4f", $0.generation, $0.accuracy) })
        c.legend([("accuracy", accuracyColor), ("loss", lossColor)])
        return c.svg(label: "accuracy and loss per generation")
    }

    /// The metric the site-evaluation chart plots: accuracy when any site
    /// reports it, else the first name any site reports.
    static func siteMetric(_ d: ReportData) -> String? {
        let names = Set(d.siteEvaluations.flatMap(\.metrics.keys))
        return names.contains("accuracy") ? "accuracy" : names.sorted().first
    }

    /// Per evaluated generation: the example-weighted mean of `metric` over
    /// the sites that reported it (the federated figure).
    static func federated(_ d: ReportData, metric: String) -> [(generation: Int, value: Double, sites: Int)] {
        Dictionary(grouping: d.siteEvaluations.filter { $0.metrics[metric] != nil }, by: \.generation)
            .sorted { $0.key < $1.key }
            .map { g, rows in
                let n = rows.reduce(0.0) { $0 + Double($1.examples) }
                return (g, rows.reduce(0.0) { $0 + Double($1.examples) * $1.metrics[metric]! } / n, rows.count)
            }
    }

    static func siteEvaluationNote(_ d: ReportData) -> String {
        guard let metric = siteMetric(d), let last = federated(d, metric: metric).last else {
            return "no site has reported an evaluation: set eval_data or eval_fraction in [training] at the sites "
                + "(fedbatch-train(1), EVALUATION)"
        }
        return String(
            format: "%@ as each site claims it (signed in its bundle, not measured here); generation %d: %.4f over "
                + "%d site%@, weighted by examples",
            metric, last.generation, last.value, last.sites, last.sites == 1 ? "" : "s")
    }

    static func siteEvaluationChart(_ d: ReportData) -> String {
        var c = SVGChart()
        guard let metric = siteMetric(d) else {
            return emptyChart(
                "No site has reported an evaluation yet (eval_data or eval_fraction in [training])",
                label: "no site evaluations")
        }
        let rows = d.siteEvaluations.filter { $0.metrics[metric] != nil }
        let fed = federated(d, metric: metric)
        let own = metric == "accuracy" ? d.evaluations.map { (Double($0.generation), $0.accuracy) } : []
        let gens = rows.map { Double($0.generation) } + own.map(\.0)
        let xLower = gens.min() ?? 0, xUpper = max(gens.max() ?? 1, xLower + 1)
        let x = SVGChart.Scale(
            lower: xLower, upper: xUpper, from: SVGChart.left, to: SVGChart.left + SVGChart.plotWidth)
        let values = rows.map { $0.metrics[metric]! }
        var ticks = metric == "accuracy" ? niceTicks(0, 1) : niceTicks(min(0, values.min() ?? 0), values.max() ?? 1)
        if let top = ticks.last, top < (values.max() ?? 0) {
            ticks.append(top + (ticks.count > 1 ? ticks[1] - ticks[0] : 1))
        }
        let y = SVGChart.Scale(
            lower: ticks.first ?? 0, upper: ticks.last ?? 1, from: SVGChart.top + SVGChart.plotHeight, to: SVGChart.top)
        c.yAxis(y, ticks: ticks, label: metric)
        c.xAxis(x, ticks: integerTicks(xLower, xUpper), label: "generation evaluated")
        for (i, site) in d.sites.enumerated() {
            let mine = rows.filter { $0.site == site }
            let colour = sitePalette[i % sitePalette.count]
            let points = mine.map { (x(Double($0.generation)), y($0.metrics[metric]!)) }
            c.polyline(points, stroke: colour)
            c.dots(
                points, fill: colour, radius: 2.5,
                titles: mine.map {
                    String(
                        format: "%@, generation %d: %@ %.4f on %d examples", site, $0.generation, metric,
                        $0.metrics[metric]!, Int($0.examples))
                })
        }
        let ownPoints = own.map { (x($0.0), y($0.1)) }
        c.polyline(ownPoints, stroke: collectorColor)
        let fedPoints = fed.map { (x(Double($0.generation)), y($0.value)) }
        c.polyline(fedPoints, stroke: federatedColor)
        c.dots(
            fedPoints, fill: federatedColor,
            titles: fed.map {
                String(
                    format: "generation %d: %@ %.4f, weighted over %d sites", $0.generation, metric, $0.value, $0.sites)
            })
        c.legend(
            [("federated", federatedColor)] + (own.isEmpty ? [] : [("collector's [eval]", collectorColor)])
                + [("each site", sitePalette[0])])
        return c.svg(label: "each site's \(metric) per generation, the federated mean and the collector's own")
    }

    static func participationChart(_ d: ReportData) -> String {
        var c = SVGChart()
        let gens = d.generations.map(\.number).filter { $0 > 0 }
        let first = gens.first ?? 1, last = max(gens.last ?? 1, first)
        let columns = Double(last - first + 1), rows = Double(max(d.sites.count, 1))
        // Room on the left for site names.
        let left = 120.0, width = SVGChart.width - left - 16, height = SVGChart.plotHeight
        // Rows fill the plot up to a comfortable height, so that a few sites
        // do not leave a blank band under the grid.
        let cellW = width / columns, cellH = min(height / rows, 60)
        let included = Set(d.participation.map { "\($0.generation)\u{0}\($0.site)" })
        let gap = cellW > 4 ? 1.0 : 0
        for (row, site) in d.sites.enumerated() {
            let y = SVGChart.top + Double(row) * cellH
            if cellH >= 9 { c.add(c.text(left - 6, y + cellH / 2 + 4, site, anchor: "end")) }
            for g in first...last {
                let hit = included.contains("\(g)\u{0}\(site)")
                c.rect(
                    left + Double(g - first) * cellW, y, cellW - gap, cellH - (cellH > 4 ? 1 : 0),
                    fill: hit ? includedColor : absentColor,
                    title: "\(site), generation \(g): \(hit ? "included" : "no bundle")")
            }
        }
        let x = SVGChart.Scale(lower: Double(first) - 0.5, upper: Double(last) + 0.5, from: left, to: left + width)
        let axisY = SVGChart.top + rows * cellH + 4
        for t in integerTicks(Double(first), Double(last)) {
            c.add(c.text(x(t), axisY + 12, tickLabel(t), anchor: "middle"))
        }
        c.add(
            c.text(
                left + width / 2, min(axisY + 30, SVGChart.height - 4), "generation", anchor: "middle", weight: "bold"))
        return c.svg(label: "participation of each site in each generation")
    }

    /// A chart with nothing to draw says so in its own space, in a few large
    /// words, rather than leaving a blank band in the page.
    static func emptyChart(_ message: String, label: String) -> String {
        var c = SVGChart()
        c.rect(
            SVGChart.left, SVGChart.top, SVGChart.plotWidth, SVGChart.plotHeight, fill: "#f7f7f7", title: message)
        let x = SVGChart.left + SVGChart.plotWidth / 2, y = SVGChart.top + SVGChart.plotHeight / 2
        c.add(
            "<text x=\"\(f(x))\" y=\"\(f(y))\" text-anchor=\"middle\" font-size=\"16\" "
                + "fill=\"#777\">\(escapeXML(message))</text>")
        return c.svg(label: label)
    }

    static func rejectionChart(_ d: ReportData) -> String {
        if d.rejections.isEmpty {
            return emptyChart("No file has been refused since this home was created", label: "refused files by reason")
        }
        var c = SVGChart()
        let shown = Array(d.rejections.prefix(8))
        let left = 220.0, width = SVGChart.width - left - 60
        let maxCount = Double(shown.map(\.count).max() ?? 1)
        let x = SVGChart.Scale(lower: 0, upper: niceTicks(0, maxCount).last ?? maxCount, from: left, to: left + width)
        let barH = min(SVGChart.plotHeight / Double(max(shown.count, 1)), 48)
        for (i, r) in shown.enumerated() {
            let y = SVGChart.top + Double(i) * barH
            c.add(c.text(left - 8, y + barH / 2 + 4, r.reason, anchor: "end"))
            c.rect(
                left, y + 3, x(Double(r.count)) - left, barH - 6, fill: rejectedColor, title: "\(r.reason): \(r.count)")
            c.add(c.text(x(Double(r.count)) + 6, y + barH / 2 + 4, "\(r.count)", anchor: "start"))
        }
        if d.rejections.count > shown.count {
            c.add(
                c.text(
                    left, SVGChart.height - 8,
                    "and \(d.rejections.count - shown.count) more reasons (see the table of quarantine/)",
                    anchor: "start"))
        }
        if !shown.isEmpty {
            c.add(c.line(left, SVGChart.top, left, SVGChart.top + Double(shown.count) * barH, stroke: "#444"))
        }
        return c.svg(label: "refused files by reason")
    }

    static func sizesNote(_ d: ReportData) -> String {
        var note = "\(d.bundleSizes.count) bundles in accepted/"
        if d.bundlesWithoutSize > 0 { note += "; \(d.bundlesWithoutSize) more no longer there (pruned), so not shown" }
        return note
    }

    static func sizeChart(_ d: ReportData) -> String {
        if d.bundleSizes.isEmpty {
            return emptyChart(
                "No included bundle is left in accepted/ to measure", label: "size of each included bundle")
        }
        var c = SVGChart()
        let gens = d.bundleSizes.map { Double($0.generation) }
        let xLower = (gens.min() ?? 1) - 0.5, xUpper = max(gens.max() ?? 1, xLower + 1) + 0.5
        let x = SVGChart.Scale(
            lower: xLower, upper: xUpper, from: SVGChart.left, to: SVGChart.left + SVGChart.plotWidth)
        let maxBytes = Double(d.bundleSizes.map(\.bytes).max() ?? 1)
        let step = byteStep(maxBytes)
        let yTicks = stride(from: 0.0, through: ceil(maxBytes * 1.05 / step) * step, by: step).map { $0 }
        let y = SVGChart.Scale(
            lower: 0, upper: yTicks.last ?? maxBytes, from: SVGChart.top + SVGChart.plotHeight, to: SVGChart.top)
        c.yAxis(y, ticks: yTicks, label: "bytes", format: byteLabel)
        c.xAxis(x, ticks: integerTicks(xLower + 0.5, xUpper - 0.5), label: "generation")
        c.dots(
            d.bundleSizes.map { (x(Double($0.generation)), y(Double($0.bytes))) }, fill: sizeColor, radius: 4,
            titles: d.bundleSizes.map { "\($0.site), generation \($0.generation): \(byteLabel(Double($0.bytes)))" })
        return c.svg(label: "size of each included bundle")
    }

    static func stalenessNote(_ d: ReportData) -> String {
        guard !d.staleness.isEmpty else { return "no staleness recorded yet" }
        let stale = d.staleness.filter { $0.staleness > 0 }.count
        return
            "\(stale) of \(d.staleness.count) included bundles were trained on an older generation "
            + "(merge.max_staleness)"
    }

    /// Each generation's bundles by staleness: a dot per (generation,
    /// staleness) pair, sized by how many bundles share it.
    static func stalenessChart(_ d: ReportData) -> String {
        if d.staleness.isEmpty {
            return emptyChart("No bundle has been included yet", label: "staleness of each included bundle")
        }
        var c = SVGChart()
        var counts: [[Int]: Int] = [:]
        for p in d.staleness { counts[[p.generation, p.staleness], default: 0] += 1 }
        let gens = d.staleness.map { Double($0.generation) }
        let xLower = (gens.min() ?? 1) - 0.5, xUpper = max(gens.max() ?? 1, xLower + 1) + 0.5
        let x = SVGChart.Scale(
            lower: xLower, upper: xUpper, from: SVGChart.left, to: SVGChart.left + SVGChart.plotWidth)
        let top = Double(max(d.staleness.map(\.staleness).max() ?? 1, 1))
        let y = SVGChart.Scale(
            lower: -0.5, upper: top + 0.5, from: SVGChart.top + SVGChart.plotHeight, to: SVGChart.top)
        c.yAxis(y, ticks: integerTicks(0, top), label: "generations behind")
        c.xAxis(x, ticks: integerTicks(xLower + 0.5, xUpper - 0.5), label: "generation")
        let points = counts.sorted { ($0.key[0], $0.key[1]) < ($1.key[0], $1.key[1]) }
        for (key, n) in points {
            c.dots(
                [(x(Double(key[0])), y(Double(key[1])))], fill: stalenessColor, radius: 3 + min(Double(n), 9),
                titles: ["generation \(key[0]): \(n) bundle\(n == 1 ? "" : "s") \(key[1]) behind"])
        }
        return c.svg(label: "staleness of the included bundles")
    }

    // MARK: Table

    static func table(_ d: ReportData) -> String {
        let evaluations = Dictionary(d.evaluations.map { ($0.generation, $0) }, uniquingKeysWith: { a, _ in a })
        let headings = ["generation", "created", "bundles", "refused", "examples", "accuracy", "loss", "digest"]
        var rows = "<table>\n<tr>" + headings.map { "<th>\($0)</th>" }.joined() + "</tr>\n"
        for g in d.generations.reversed() {
            let e = evaluations[g.number]
            let cells = [
                "\(g.number)", escapeXML(g.created), "\(g.accepted)", "\(g.rejected)", "\(g.examples)",
                e.map { String(format: "%.4f", $0.accuracy) } ?? "", e.map { String(format: "%.4f", $0.loss) } ?? "",
                "<code>\(g.digest.prefix(16))…</code>",
            ]
            rows += "<tr>" + cells.map { "<td>\($0)</td>" }.joined() + "</tr>\n"
        }
        return rows + "</table>\n"
    }

    /// Whole-number ticks, at most about ten of them.
    static func integerTicks(_ lower: Double, _ upper: Double) -> [Double] {
        let ticks = niceTicks(lower, max(upper, lower + 1), count: 8).filter {
            $0 == $0.rounded() && $0 >= lower && $0 <= upper
        }
        return ticks.isEmpty ? [lower] : ticks
    }

    /// A step of 1, 2 or 5 × 1024^k × 10^j bytes giving about five ticks.
    static func byteStep(_ maxBytes: Double) -> Double {
        let raw = max(maxBytes / 5, 1)
        var unit = 1.0
        while raw >= unit * 1024 { unit *= 1024 }
        let scaled = raw / unit
        let magnitude = pow(10, floor(log10(scaled)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= scaled } ?? 10 * magnitude
        return step * unit
    }
}

//! Charts: the chart the model asked for, checked against the result's columns, as an Apache
//! ECharts option (for the console) and drawn server-side as SVG (for the CLI and API).

use crate::exec::Rows;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Kinds of chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartType {
    /// A line over an ordered x (months, years).
    Line,
    /// Bars per category.
    Bar,
    /// Shares of a whole.
    Pie,
    /// Just the rows.
    Table,
    /// One number.
    Number,
}

impl ChartType {
    /// Every kind, in the order the reply's schema lists them.
    pub const ALL: [ChartType; 5] = [ChartType::Line, ChartType::Bar, ChartType::Pie, ChartType::Table, ChartType::Number];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChartType::Line => "line",
            ChartType::Bar => "bar",
            ChartType::Pie => "pie",
            ChartType::Table => "table",
            ChartType::Number => "number",
        }
    }
}

/// The chart part of the model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChartSpec {
    /// Kind.
    #[serde(rename = "type")]
    pub kind: ChartType,
    /// Column on the x axis (or the pie's labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Column with the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Column whose values split the data into several lines or bar groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// Title (the pipeline uses the question when the model gives none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
}

impl ChartSpec {
    /// The spec made to fit `rows`: a named column that is not in the result is replaced by the
    /// first text column (x) or the last numeric one (y); a one-cell result is a number; a
    /// result with no numeric column is a table.
    pub fn fit(mut self, rows: &Rows) -> ChartSpec {
        let has = |c: &Option<String>| c.as_ref().is_some_and(|c| rows.columns.contains(c));
        let numeric = |i: usize| rows.rows.iter().all(|r| r[i].is_number() || r[i].is_null()) && !rows.rows.is_empty();
        let first_text = (0..rows.columns.len()).find(|&i| !numeric(i)).map(|i| rows.columns[i].clone());
        let last_num = (0..rows.columns.len()).rev().find(|&i| numeric(i)).map(|i| rows.columns[i].clone());
        if rows.columns.len() == 1 && rows.rows.len() == 1 {
            self.kind = ChartType::Number;
        } else if self.kind == ChartType::Number && rows.rows.len() != 1 {
            // One figure drawn, several rows answered (the pipeline regrouped the model's one
            // total): the rows as they are.
            self.kind = ChartType::Table;
        }
        if !has(&self.x) {
            self.x = first_text.or_else(|| rows.columns.first().cloned());
        }
        if !has(&self.y) {
            self.y = last_num;
        }
        if !has(&self.series) {
            self.series = None;
        }
        // A pie shows one whole split one way; rows split two ways ("2020年各大区线上线下分别卖了
        // 多少": region by channel, drawn as a pie by the model) are bars with a series. No gold
        // pie across the shipped sets has two text columns.
        let texts: Vec<&String> = (0..rows.columns.len()).filter(|&i| !numeric(i)).map(|i| &rows.columns[i]).collect();
        if self.kind == ChartType::Pie && texts.len() >= 2 {
            self.kind = ChartType::Bar;
            if self.series.is_none() {
                self.series = texts.into_iter().find(|c| Some(*c) != self.x.as_ref()).cloned();
            }
        }
        if self.y.is_none() && self.kind != ChartType::Number {
            self.kind = ChartType::Table;
        }
        self
    }
}

fn col(rows: &Rows, name: &Option<String>) -> Option<usize> {
    name.as_ref().and_then(|n| rows.columns.iter().position(|c| c == n))
}

fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Series of a line or bar chart: x labels in first-seen order (a line's in ascending order),
/// and per series name its value at each x.
fn series(spec: &ChartSpec, rows: &Rows) -> (Vec<String>, Vec<(String, Vec<f64>)>) {
    let (Some(xi), Some(yi)) = (col(rows, &spec.x), col(rows, &spec.y)) else { return (vec![], vec![]) };
    let si = col(rows, &spec.series);
    let mut xs: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    // A line joins its points along the x axis, whatever order the query sorted its rows in
    // ("ORDER BY amount DESC" drew March to May backwards): numbers in order, and labels that
    // all carry a number (2019-03, 2019-Q1, 3月, 2019) in natural order, 2019-10 after 2019-9;
    // other labels (month names) as the query gave them. Nulls last.
    let mut line_rows: Vec<&Vec<Value>> = rows.rows.iter().collect();
    if spec.kind == ChartType::Line {
        let known: Vec<&Value> = line_rows.iter().map(|r| &r[xi]).filter(|v| !v.is_null()).collect();
        if known.iter().all(|v| v.is_number()) {
            line_rows.sort_by(|a, b| a[xi].is_null().cmp(&b[xi].is_null()).then(num(&a[xi]).total_cmp(&num(&b[xi]))));
        } else if known.iter().all(|v| label(v).chars().any(|c| c.is_ascii_digit())) {
            line_rows.sort_by_cached_key(|r| (r[xi].is_null(), natural(&label(&r[xi]))));
        }
    }
    for r in line_rows {
        let x = label(&r[xi]);
        if !xs.contains(&x) {
            xs.push(x.clone());
        }
        let s = si.map(|i| label(&r[i])).unwrap_or_else(|| spec.y.clone().unwrap_or_default());
        if !order.contains(&s) {
            order.push(s.clone());
        }
        *by.entry(s).or_default().entry(x).or_default() += num(&r[yi]);
    }
    let out = order.into_iter().map(|s| (s.clone(), xs.iter().map(|x| by[&s].get(x).copied().unwrap_or(0.0)).collect())).collect();
    (xs, out)
}

/// A label's sort key: its runs of digits as numbers, the rest as text.
fn natural(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            key.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
            rest = &rest[digits..];
        } else {
            let text = rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
            key.push((0, rest[..text].to_string()));
            rest = &rest[text..];
        }
    }
    key
}

/// The Apache ECharts option for the result.
pub fn echarts(spec: &ChartSpec, rows: &Rows) -> Value {
    let title = json!({"text": spec.title, "left": "center"});
    match spec.kind {
        ChartType::Line | ChartType::Bar => {
            let (xs, ss) = series(spec, rows);
            let kind = spec.kind.as_str();
            let series: Vec<Value> = ss.iter().map(|(name, data)| json!({"name": name, "type": kind, "data": data})).collect();
            json!({"title": title, "tooltip": {"trigger": "axis"}, "legend": {"top": "bottom"}, "xAxis": {"type": "category", "data": xs, "name": spec.x}, "yAxis": {"type": "value", "name": spec.y}, "series": series})
        }
        ChartType::Pie => {
            let (xs, ss) = series(spec, rows);
            let data: Vec<Value> = ss.first().map(|(_, d)| xs.iter().zip(d).map(|(x, v)| json!({"name": x, "value": v})).collect()).unwrap_or_default();
            json!({"title": title, "tooltip": {"trigger": "item"}, "legend": {"top": "bottom"}, "series": [{"type": "pie", "radius": "60%", "data": data}]})
        }
        ChartType::Table | ChartType::Number => json!({"title": title, "dataset": {"dimensions": rows.columns, "source": rows.rows}}),
    }
}

const W: f64 = 800.0;
const H: f64 = 450.0;
const PALETTE: [&str; 8] = ["#5470c6", "#91cc75", "#fac858", "#ee6666", "#73c0de", "#3ba272", "#fc8452", "#9a60b4"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A number as a short axis or value label (1.2万 style is left to the console; here 12.3k).
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A "nice" axis top and step for values up to `max`.
fn nice(max: f64) -> (f64, f64) {
    if max <= 0.0 {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// The chart drawn as a standalone SVG document.
pub fn svg(spec: &ChartSpec, rows: &Rows) -> String {
    let mut s = String::new();
    let _ = write!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Noto Sans CJK SC, WenQuanYi Micro Hei, sans-serif">"#);
    let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/><text x="{}" y="28" font-size="18" text-anchor="middle">{}</text>"#, W / 2.0, esc(&spec.title));
    match spec.kind {
        ChartType::Line | ChartType::Bar => axes_chart(&mut s, spec, rows),
        ChartType::Pie => pie(&mut s, spec, rows),
        ChartType::Number => {
            let v = rows.rows.first().and_then(|r| r.first()).map(label).unwrap_or_default();
            let name = rows.columns.first().cloned().unwrap_or_default();
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" font-size="64" text-anchor="middle">{}</text><text x="{}" y="{}" font-size="18" text-anchor="middle" fill="#666">{}</text>"##,
                W / 2.0,
                H / 2.0 + 10.0,
                esc(&v),
                W / 2.0,
                H / 2.0 + 50.0,
                esc(&name)
            );
        }
        ChartType::Table => table(&mut s, rows),
    }
    s.push_str("</svg>\n");
    s
}

fn axes_chart(s: &mut String, spec: &ChartSpec, rows: &Rows) {
    let (xs, ss) = series(spec, rows);
    let (l, r, t, b) = (80.0, W - 30.0, 60.0, H - 80.0);
    let max = ss.iter().flat_map(|(_, d)| d.iter().copied()).fold(0.0f64, f64::max);
    let min = ss.iter().flat_map(|(_, d)| d.iter().copied()).fold(0.0f64, f64::min);
    let (top, step) = nice(max.max(-min));
    let bottom = if min < 0.0 { -((-min / step).ceil() * step) } else { 0.0 };
    let y_of = |v: f64| b - (v - bottom) / (top - bottom) * (b - t);
    let mut v = bottom;
    while v <= top + step * 0.01 {
        let y = y_of(v);
        let _ = write!(s, r##"<line x1="{l}" x2="{r}" y1="{y:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"##, l - 6.0, y + 4.0, short(v));
        v += step;
    }
    let n = xs.len().max(1) as f64;
    let band = (r - l) / n;
    let rotate = xs.len() > 12;
    for (i, x) in xs.iter().enumerate() {
        let cx = l + band * (i as f64 + 0.5);
        if rotate {
            let _ = write!(s, r#"<text x="{cx:.1}" y="{}" font-size="11" text-anchor="end" transform="rotate(-45 {cx:.1} {})">{}</text>"#, b + 14.0, b + 14.0, esc(x));
        } else {
            let _ = write!(s, r#"<text x="{cx:.1}" y="{}" font-size="12" text-anchor="middle">{}</text>"#, b + 18.0, esc(x));
        }
    }
    let _ = write!(s, r##"<line x1="{l}" x2="{r}" y1="{y:.1}" y2="{y:.1}" stroke="#333"/>"##, y = y_of(0.0));
    let k = ss.len().max(1) as f64;
    for (si, (name, data)) in ss.iter().enumerate() {
        let color = PALETTE[si % PALETTE.len()];
        if spec.kind == ChartType::Line {
            let pts: Vec<String> = data.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", l + band * (i as f64 + 0.5), y_of(*v))).collect();
            let _ = write!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, pts.join(" "));
            for p in &pts {
                let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(s, r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#);
            }
        } else {
            let w = band * 0.7 / k;
            for (i, v) in data.iter().enumerate() {
                let x = l + band * i as f64 + band * 0.15 + w * si as f64;
                let (y0, y1) = (y_of(0.0), y_of(*v));
                let _ = write!(s, r#"<rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{color}"/>"#, y0.min(y1), (y0 - y1).abs());
            }
        }
        // Legend along the bottom.
        let lx = l + 140.0 * si as f64;
        let _ = write!(s, r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}" font-size="12">{}</text>"#, H - 22.0, lx + 16.0, H - 12.0, esc(name));
    }
}

fn pie(s: &mut String, spec: &ChartSpec, rows: &Rows) {
    let (xs, ss) = series(spec, rows);
    let data: Vec<f64> = ss.first().map(|(_, d)| d.iter().map(|v| v.max(0.0)).collect()).unwrap_or_default();
    let total: f64 = data.iter().sum();
    let (cx, cy, rad) = (W / 2.0, H / 2.0 + 15.0, 150.0);
    let mut a0 = -std::f64::consts::FRAC_PI_2;
    for (i, (x, v)) in xs.iter().zip(&data).enumerate() {
        if total <= 0.0 {
            break;
        }
        let frac = v / total;
        let a1 = a0 + frac * std::f64::consts::TAU;
        let color = PALETTE[i % PALETTE.len()];
        let (x0, y0, x1, y1) = (cx + rad * a0.cos(), cy + rad * a0.sin(), cx + rad * a1.cos(), cy + rad * a1.sin());
        let large = if a1 - a0 > std::f64::consts::PI { 1 } else { 0 };
        if frac >= 0.9999 {
            let _ = write!(s, r#"<circle cx="{cx}" cy="{cy}" r="{rad}" fill="{color}"/>"#);
        } else {
            let _ = write!(s, r#"<path d="M{cx},{cy} L{x0:.1},{y0:.1} A{rad},{rad} 0 {large} 1 {x1:.1},{y1:.1} Z" fill="{color}" stroke="white"/>"#);
        }
        let am = (a0 + a1) / 2.0;
        let (lx, ly) = (cx + (rad + 24.0) * am.cos(), cy + (rad + 24.0) * am.sin());
        let anchor = if am.cos() >= 0.0 { "start" } else { "end" };
        let _ = write!(s, r#"<text x="{lx:.1}" y="{ly:.1}" font-size="13" text-anchor="{anchor}">{} {:.1}%</text>"#, esc(x), frac * 100.0);
        a0 = a1;
    }
}

fn table(s: &mut String, rows: &Rows) {
    let n = rows.columns.len().max(1) as f64;
    let cw = (W - 40.0) / n;
    let mut y = 60.0;
    for (i, c) in rows.columns.iter().enumerate() {
        let _ = write!(s, r#"<text x="{:.1}" y="{y}" font-size="13" font-weight="bold">{}</text>"#, 20.0 + cw * i as f64, esc(c));
    }
    for r in rows.rows.iter().take(16) {
        y += 22.0;
        for (i, v) in r.iter().enumerate() {
            let _ = write!(s, r#"<text x="{:.1}" y="{y}" font-size="13">{}</text>"#, 20.0 + cw * i as f64, esc(&label(v)));
        }
    }
    if rows.rows.len() > 16 {
        let _ = write!(s, r##"<text x="20" y="{}" font-size="12" fill="#666">… {} more rows</text>"##, y + 22.0, rows.rows.len() - 16);
    }
}

/// Rasterises an SVG from [`svg`] to PNG with resvg, using the system's fonts (Chinese labels
/// need a CJK font such as WenQuanYi or Noto CJK installed; without one they are left blank).
pub fn png(svg: &str) -> Result<Vec<u8>, String> {
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_str(svg, &opt).map_err(|e| e.to_string())?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).ok_or("the chart has no size")?;
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monthly() -> Rows {
        Rows { columns: vec!["month".into(), "amount".into()], rows: vec![vec![json!("2019-03"), json!(120.5)], vec![json!("2019-04"), json!(300.0)], vec![json!("2019-05"), json!(250.25)]] }
    }

    #[test]
    fn a_line_chart_has_one_point_per_row_in_echarts_and_svg() {
        let spec = ChartSpec { kind: ChartType::Line, x: Some("month".into()), y: Some("amount".into()), series: None, title: "华北 2019年3-5月销售额".into() };
        let o = echarts(&spec, &monthly());
        assert_eq!(o["xAxis"]["data"], json!(["2019-03", "2019-04", "2019-05"]));
        assert_eq!(o["series"][0]["data"], json!([120.5, 300.0, 250.25]));
        assert_eq!(o["series"][0]["type"], "line");
        let svg = svg(&spec, &monthly());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("华北 2019年3-5月销售额") && svg.contains("2019-04"));
        // Rows sorted by value still draw the line from the first month to the last, and
        // numbers as numbers (10 after 9); bars keep the query's order.
        let mut by_value = monthly();
        by_value.rows.sort_by(|a, b| num(&b[1]).total_cmp(&num(&a[1])));
        assert_eq!(echarts(&spec, &by_value)["xAxis"]["data"], json!(["2019-03", "2019-04", "2019-05"]));
        assert_eq!(echarts(&spec, &by_value)["series"][0]["data"], json!([120.5, 300.0, 250.25]));
        let months = Rows { columns: vec!["month".into(), "amount".into()], rows: vec![vec![json!(10), json!(1.0)], vec![json!(9), json!(2.0)], vec![json!(11), json!(3.0)]] };
        assert_eq!(echarts(&spec, &months)["xAxis"]["data"], json!(["9", "10", "11"]));
        let cn = Rows { columns: vec!["month".into(), "amount".into()], rows: ["10月", "9月", "11月"].iter().map(|m| vec![json!(m), json!(1.0)]).collect() };
        assert_eq!(echarts(&spec, &cn)["xAxis"]["data"], json!(["9月", "10月", "11月"]));
        let names = Rows { columns: vec!["month".into(), "amount".into()], rows: ["Mar", "Apr", "May"].iter().map(|m| vec![json!(m), json!(1.0)]).collect() };
        assert_eq!(echarts(&spec, &names)["xAxis"]["data"], json!(["Mar", "Apr", "May"]));
        let gaps = Rows { columns: vec!["month".into(), "amount".into()], rows: vec![vec![json!(null), json!(1.0)], vec![json!(10), json!(2.0)], vec![json!(9), json!(3.0)]] };
        assert_eq!(echarts(&spec, &gaps)["xAxis"]["data"], json!(["9", "10", "—"]));
        let bars = ChartSpec { kind: ChartType::Bar, ..spec.clone() };
        assert_eq!(echarts(&bars, &by_value)["xAxis"]["data"], json!(["2019-04", "2019-05", "2019-03"]));
    }

    #[test]
    fn series_split_lines_and_fit_repairs_wrong_columns() {
        let rows = Rows {
            columns: vec!["month".into(), "channel".into(), "amount".into()],
            rows: vec![vec![json!("01"), json!("线上"), json!(1)], vec![json!("01"), json!("线下"), json!(2)], vec![json!("02"), json!("线上"), json!(3)]],
        };
        let spec = ChartSpec { kind: ChartType::Bar, x: Some("month".into()), y: Some("sales".into()), series: Some("channel".into()), title: String::new() }.fit(&rows);
        assert_eq!(spec.y.as_deref(), Some("amount"));
        let o = echarts(&spec, &rows);
        assert_eq!(o["series"].as_array().unwrap().len(), 2);
        assert_eq!(o["series"][1]["data"], json!([2.0, 0.0]));
        let one = Rows { columns: vec!["total".into()], rows: vec![vec![json!(5.5)]] };
        assert_eq!(spec.clone().fit(&one).kind, ChartType::Number);
        let text = Rows { columns: vec!["city".into()], rows: vec![vec![json!("北京")], vec![json!("上海")]] };
        assert_eq!(spec.clone().fit(&text).kind, ChartType::Table);
        // Rows split two ways drawn as a pie: bars, split into a series by the other text column.
        let pie = ChartSpec { kind: ChartType::Pie, x: Some("month".into()), y: Some("amount".into()), series: None, title: String::new() }.fit(&rows);
        assert_eq!((pie.kind, pie.series.as_deref()), (ChartType::Bar, Some("channel")));
        let one_way = Rows { columns: vec!["channel".into(), "amount".into()], rows: vec![vec![json!("线上"), json!(1)], vec![json!("线下"), json!(2)]] };
        assert_eq!(ChartSpec { kind: ChartType::Pie, x: None, y: None, series: None, title: String::new() }.fit(&one_way).kind, ChartType::Pie);
    }

    #[test]
    fn pies_and_tables_render() {
        let spec = ChartSpec { kind: ChartType::Pie, x: Some("month".into()), y: Some("amount".into()), series: None, title: "t".into() };
        let s = svg(&spec, &monthly());
        assert_eq!(s.matches("<path").count(), 3);
        assert!(s.contains("%</text>"));
        let o = echarts(&spec, &monthly());
        assert_eq!(o["series"][0]["data"][1], json!({"name": "2019-04", "value": 300.0}));
        let t = ChartSpec { kind: ChartType::Table, ..spec };
        assert!(svg(&t, &monthly()).contains("250.25"));
        assert_eq!(nice(93.0), (100.0, 20.0));
    }

    #[test]
    fn png_rendering_gives_an_image_of_the_svg_size() {
        let spec = ChartSpec { kind: ChartType::Bar, x: Some("month".into()), y: Some("amount".into()), series: None, title: "t".into() };
        let png = png(&svg(&spec, &monthly())).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, at bytes 16..24.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 800);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 450);
    }
}

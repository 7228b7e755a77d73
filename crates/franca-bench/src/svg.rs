//! A small SVG line-plot writer (no dependency): linear or log10 x axis, linear y axis, one
//! coloured polyline per series, ticks, labels and a legend.

use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 440.0;
const L: f64 = 70.0;
const R: f64 = 20.0;
const T: f64 = 40.0;
const B: f64 = 60.0;
const COLOURS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

#[derive(Debug, Clone)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(mag * 10.0);
    let mut v = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 {
        v.push(t);
        t += step;
    }
    v
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{}", (v * 100.0).round() / 100.0)
    } else {
        format!("{}", (v * 10000.0).round() / 10000.0)
    }
}

impl Plot {
    pub fn render(&self) -> String {
        let pts = self.series.iter().flat_map(|(_, p)| p.iter());
        let fx = |x: f64| if self.x_log { x.max(1e-3).log10() } else { x };
        let (mut x0, mut x1, mut y0, mut y1) =
            (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, f64::NEG_INFINITY);
        for &(x, y) in pts {
            x0 = x0.min(fx(x));
            x1 = x1.max(fx(x));
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if !x0.is_finite() {
            (x0, x1, y1) = (0.0, 1.0, 1.0);
        }
        if self.x_log {
            x0 = x0.floor();
            x1 = x1.ceil().max(x0 + 1.0);
        } else if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let px = |x: f64| L + (fx(x) - x0) / (x1 - x0) * (W - L - R);
        let py = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' viewBox='0 0 {W} {H}' \
             font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n\
             <text x='{}' y='22' text-anchor='middle' font-size='15'>{}</text>\n",
            W / 2.0,
            esc(&self.title)
        );
        // Axes and grid.
        let _ = writeln!(
            s,
            "<line x1='{L}' y1='{}' x2='{}' y2='{}' stroke='black'/><line x1='{L}' y1='{T}' x2='{L}' y2='{}' stroke='black'/>",
            H - B,
            W - R,
            H - B,
            H - B
        );
        let xt: Vec<f64> = if self.x_log {
            (x0 as i32..=x1 as i32).map(|e| 10f64.powi(e)).collect()
        } else {
            nice_ticks(x0, x1)
        };
        for t in xt {
            let x = px(t);
            let _ = writeln!(
                s,
                "<line x1='{x:.1}' y1='{T}' x2='{x:.1}' y2='{}' stroke='#ddd'/><text x='{x:.1}' y='{}' text-anchor='middle'>{}</text>",
                H - B,
                H - B + 16.0,
                label(t)
            );
        }
        for t in nice_ticks(y0, y1) {
            let y = py(t);
            let _ = writeln!(
                s,
                "<line x1='{L}' y1='{y:.1}' x2='{}' y2='{y:.1}' stroke='#ddd'/><text x='{}' y='{:.1}' text-anchor='end'>{}</text>",
                W - R,
                L - 6.0,
                y + 4.0,
                label(t)
            );
        }
        let _ = writeln!(
            s,
            "<text x='{}' y='{}' text-anchor='middle'>{}</text>\n<text x='16' y='{}' text-anchor='middle' transform='rotate(-90 16 {})'>{}</text>",
            (L + W - R) / 2.0,
            H - 18.0,
            esc(&self.x_label),
            (T + H - B) / 2.0,
            (T + H - B) / 2.0,
            esc(&self.y_label)
        );
        for (i, (name, points)) in self.series.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                "<polyline fill='none' stroke='{c}' stroke-width='2' points='{}'/>",
                path.join(" ")
            );
            for &(x, y) in points.iter().filter(|_| points.len() <= 12) {
                let _ = writeln!(
                    s,
                    "<circle cx='{:.1}' cy='{:.1}' r='3' fill='{c}'/>",
                    px(x),
                    py(y)
                );
            }
            let ly = T + 8.0 + i as f64 * 18.0;
            let _ = writeln!(
                s,
                "<line x1='{}' y1='{ly}' x2='{}' y2='{ly}' stroke='{c}' stroke-width='3'/><text x='{}' y='{}'>{}</text>",
                L + 12.0,
                L + 36.0,
                L + 42.0,
                ly + 4.0,
                esc(name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_series() {
        let p = Plot {
            title: "t & <x>".into(),
            x_label: "ms".into(),
            y_label: "fraction".into(),
            x_log: true,
            series: vec![("a".into(), vec![(0.1, 0.0), (1.0, 0.5), (10.0, 1.0)])],
        };
        let svg = p.render();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("polyline"));
        assert!(svg.contains("t &amp; &lt;x&gt;"));
    }
}

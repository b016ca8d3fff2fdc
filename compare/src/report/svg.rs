//! The SVG chart of a report: warm medians as grouped bars.

use super::{ms, Report, Row};
use std::fmt::Write as _;

impl Report {
    /// Grouped horizontal bars, one group per workload, one bar per method
    /// (warm median, p10–p90 whisker), log-scaled time axis.
    pub fn to_svg(&self) -> String {
        let warm: Vec<&Row> = self
            .results
            .iter()
            .filter(|r| r.cache == "warm" && r.median_ms.is_some())
            .collect();
        let mut workloads: Vec<&str> = warm.iter().map(|r| r.workload.as_str()).collect();
        workloads.dedup();
        let methods = [
            "cold",
            "thaw",
            "cryo-eager",
            "cryo-lazy",
            "cryo-lazy-prefetch",
            "cryo-map",
            "cryo-pack",
            "criu",
        ];
        let colours = [
            "#888888", "#d9822b", "#1f77b4", "#2ca02c", "#17becf", "#9467bd", "#8c564b", "#d62728",
        ];
        let (bar, gap, left, right, top) = (9.0, 14.0, 170.0, 40.0, 40.0);
        let width = 860.0;
        let rows_h: f64 = workloads
            .iter()
            .map(|w| warm.iter().filter(|r| r.workload == *w).count() as f64 * bar + gap)
            .sum();
        let height = top + rows_h + 50.0;
        let lo = warm
            .iter()
            .filter_map(|r| r.p10_ms.or(r.median_ms))
            .fold(f64::INFINITY, f64::min);
        let hi = warm
            .iter()
            .filter_map(|r| r.p90_ms.or(r.median_ms))
            .fold(0.0_f64, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > 0.0 {
            (
                10f64.powf(lo.max(1e-3).log10().floor()),
                10f64.powf(hi.log10().ceil()),
            )
        } else {
            (0.1, 1000.0)
        };
        let x = |v: f64| {
            left + (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10())
                * (width - left - right)
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{left}" y="18" font-size="13">Spawn to first answer, ms (log scale; warm page cache; median, p10–p90)</text>"#
        );
        let mut d = lo;
        while d <= hi * 1.0001 {
            let xv = x(d);
            let _ = writeln!(
                s,
                r##"<line x1="{xv:.1}" y1="{top}" x2="{xv:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xv:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                top + rows_h,
                top + rows_h + 14.0,
                if d < 1.0 {
                    format!("{d}")
                } else {
                    format!("{d:.0}")
                }
            );
            d *= 10.0;
        }
        let mut y = top;
        for w in &workloads {
            let _ = writeln!(
                s,
                r#"<text x="6" y="{:.1}" font-weight="bold">{w}</text>"#,
                y + bar
            );
            for (m, c) in methods.iter().zip(colours) {
                let Some(r) = warm.iter().find(|r| r.workload == *w && r.method == *m) else {
                    continue;
                };
                let med = r.median_ms.unwrap_or(lo);
                let _ = writeln!(
                    s,
                    r#"<rect x="{left}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{c}"><title>{w} {m}: {} ms</title></rect>"#,
                    (x(med) - left).max(0.5),
                    bar - 1.5,
                    ms(Some(med))
                );
                if let (Some(a), Some(b)) = (r.p10_ms, r.p90_ms) {
                    let ym = y + (bar - 1.5) / 2.0;
                    let _ = writeln!(
                        s,
                        r#"<line x1="{:.1}" y1="{ym:.1}" x2="{:.1}" y2="{ym:.1}" stroke="black"/>"#,
                        x(a),
                        x(b)
                    );
                }
                y += bar;
            }
            y += gap;
        }
        let mut lx = left;
        for (m, c) in methods.iter().zip(colours) {
            let _ = writeln!(
                s,
                r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{c}"/><text x="{:.1}" y="{:.1}">{m}</text>"#,
                height - 22.0,
                lx + 14.0,
                height - 13.0
            );
            lx += 14.0 + 7.0 * m.len() as f64 + 18.0;
        }
        s.push_str("</svg>\n");
        s
    }
}

//! `--chart FILE`: throughput and latency over the run, as an SVG of two
//! panels sharing the time axis. Drawn by hand: two polylines and their
//! axes need no plotting library.

use std::fmt::Write;

use super::Sample;

const WIDTH: f64 = 720.0;
const PANEL: f64 = 200.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;

/// The chart of `samples` (every ~10 ms of the run), titled `title`.
pub(super) fn svg(title: &str, samples: &[Sample]) -> String {
    let points = series(samples);
    let end = samples.last().map_or(1.0, |s| s.at.as_secs_f64()).max(1e-3);
    let mut out = String::new();
    let height = TOP + 2.0 * PANEL + GAP + 40.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    let throughput: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1 / 1e6)).collect();
    let latency: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.2)).collect();
    panel(
        &mut out,
        TOP,
        "acknowledged, M records/s",
        &throughput,
        end,
        "#1f77b4",
    );
    panel(
        &mut out,
        TOP + PANEL + GAP,
        "latency, ms",
        &latency,
        end,
        "#d62728",
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds</text>"#,
        LEFT + (WIDTH - LEFT - 20.0) / 2.0,
        height - 8.0
    );
    out.push_str("</svg>\n");
    out
}

/// (seconds, acknowledged records/s, latency ms) per window of ~100 ms.
fn series(samples: &[Sample]) -> Vec<(f64, f64, f64)> {
    let written_at = |index: u64| {
        let at = samples.partition_point(|s| s.written <= index);
        samples.get(at).map_or(0.0, |s| s.at.as_secs_f64())
    };
    let mut points = Vec::new();
    let mut last = match samples.first() {
        Some(first) => *first,
        None => return points,
    };
    for sample in samples.iter().skip(1) {
        let span = (sample.at - last.at).as_secs_f64();
        if span < 0.1 && sample.acknowledged < samples.last().map_or(0, |s| s.acknowledged) {
            continue;
        }
        let rate = (sample.acknowledged - last.acknowledged) as f64 / span.max(1e-9);
        let latency = if sample.acknowledged == 0 {
            0.0
        } else {
            (sample.at.as_secs_f64() - written_at(sample.acknowledged - 1)).max(0.0) * 1e3
        };
        points.push((sample.at.as_secs_f64(), rate, latency));
        last = *sample;
    }
    points
}

/// One panel at `top`: axes, a few gridlines with labels, the line.
fn panel(out: &mut String, top: f64, label: &str, points: &[(f64, f64)], end: f64, color: &str) {
    let right = WIDTH - 20.0;
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let x = |t: f64| LEFT + t / end * (right - LEFT);
    let y = |v: f64| top + PANEL - v / max * PANEL;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}">{}</text>"#,
        top - 6.0,
        escape(label)
    );
    for step in 0..=4 {
        let value = max * f64::from(step) / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{right}" y1="{0:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"##,
            y(value),
            LEFT - 6.0,
            y(value) + 4.0,
            short(value)
        );
    }
    for step in 0..=4 {
        let t = end * f64::from(step) / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(t),
            top + PANEL + 16.0,
            short(t)
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#888"/>"##,
        right - LEFT
    );
    let line: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
        line.join(" ")
    );
}

/// A compact axis label.
fn short(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

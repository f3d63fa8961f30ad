//! `shipper inspect <DATA_DIR>`: a read-only report on a data directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use shipper_core::log::{InspectReport, SegmentState};

use super::units;
use crate::Outcome;

/// Arguments of `shipper inspect`.
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// The data directory to inspect (it is never modified and may be in
    /// use by a running shipper).
    data_dir: PathBuf,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Exit with code 1 when any corruption is found (after printing).
    #[arg(long)]
    verify: bool,
}

pub(crate) fn run(args: InspectArgs) -> anyhow::Result<Outcome> {
    let dir = &args.data_dir;
    if !dir.exists() {
        bail!("data dir {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("data dir {} is not a directory", dir.display());
    }
    let report = shipper_core::log::inspect(dir)
        .with_context(|| format!("inspecting data dir {}", dir.display()))?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&report).context("encoding report as JSON")?;
        json.push('\n');
        json
    } else {
        render(&report)
    };
    print!("{text}");
    if args.verify && report.has_corruption() {
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Success)
}

/// A path inside the data directory, shown relative to it.
fn relative<'a>(dir: &Path, path: &'a Path) -> std::borrow::Cow<'a, str> {
    path.strip_prefix(dir).unwrap_or(path).to_string_lossy()
}

fn render(report: &InspectReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let w = &mut out;
    let _ = writeln!(w, "data dir     {}", report.dir.display());
    let _ = writeln!(
        w,
        "producer id  {}",
        report.producer_id.as_deref().unwrap_or("(none)")
    );
    let _ = match &report.locked_by {
        Some(pid) => writeln!(
            w,
            "lock         held by pid {pid} (a shipper is running; its newest segment may still grow)"
        ),
        None => writeln!(w, "lock         free"),
    };
    let _ = writeln!(
        w,
        "records      {} readable, offsets {}..{} (next offset {})",
        report.records, report.start_offset, report.next_offset, report.next_offset
    );
    let _ = writeln!(
        w,
        "disk         {} in {} segment file(s) ({} bytes); {} quarantined file(s)",
        units::bytes(report.disk_bytes),
        report.segments.len(),
        report.disk_bytes,
        report.quarantined_files
    );
    let min_ts = report.segments.iter().filter_map(|s| s.min_ts).min();
    let max_ts = report.segments.iter().filter_map(|s| s.max_ts).max();
    if let (Some(min), Some(max)) = (min_ts, max_ts) {
        let _ = writeln!(
            w,
            "time range   {} .. {}",
            units::rfc3339_nanos(min),
            units::rfc3339_nanos(max)
        );
    }

    let _ = writeln!(w);
    if report.segments.is_empty() {
        let _ = writeln!(w, "segments: none");
    } else {
        let _ = writeln!(w, "segments:");
        let mut rows = vec![[
            "file".to_owned(),
            "base offset".into(),
            "end offset".into(),
            "records".into(),
            "chunks".into(),
            "bytes".into(),
            "used".into(),
            "state".into(),
        ]];
        for s in &report.segments {
            rows.push([
                s.file.clone(),
                s.base_offset.to_string(),
                s.end_offset.to_string(),
                s.records.to_string(),
                s.chunks.to_string(),
                s.bytes.to_string(),
                s.used_bytes.to_string(),
                match s.state {
                    SegmentState::Sealed => "sealed".into(),
                    SegmentState::Active => "active".into(),
                },
            ]);
        }
        table(w, &rows);
    }

    let _ = writeln!(w);
    if report.cursors.is_empty() {
        let _ = writeln!(
            w,
            "cursors: none (nothing is deleted until a consumer commits one)"
        );
    } else {
        let _ = writeln!(w, "cursors:");
        let mut rows = vec![["name".to_owned(), "offset".into(), "lag (records)".into()]];
        for c in &report.cursors {
            let unreadable = || "unreadable".to_owned();
            rows.push([
                c.name.clone(),
                c.offset.map_or_else(unreadable, |o| o.to_string()),
                c.lag_records.map_or_else(unreadable, |l| l.to_string()),
            ]);
        }
        table(w, &rows);
    }

    let _ = writeln!(w);
    if report.findings.is_empty() {
        let _ = writeln!(w, "findings: none");
    } else {
        let damaged = report.findings.iter().filter(|f| f.corruption).count();
        let _ = writeln!(
            w,
            "findings: {} ({damaged} corruption, {} note)",
            report.findings.len(),
            report.findings.len() - damaged
        );
        for f in &report.findings {
            let position = match (f.position, f.length) {
                (Some(at), Some(len)) => format!("at byte {at} ({len} bytes)"),
                (Some(at), None) => format!("at byte {at}"),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                w,
                "  {:<5} {:<16} {}  {}  {}",
                if f.corruption { "ERROR" } else { "note" },
                f.kind,
                relative(&report.dir, &f.path),
                position,
                f.detail
            );
        }
    }
    out
}

/// Appends `rows` as a left-aligned table, indented by two spaces.
fn table<const N: usize>(out: &mut String, rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in rows {
        let mut line = String::from(" ");
        for (width, cell) in widths.iter().zip(row) {
            let _ = write!(line, " {cell:<width$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

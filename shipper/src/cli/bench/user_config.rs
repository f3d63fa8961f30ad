//! `--scenario config --config FILE`: a user's own pipeline. The bench
//! runs a copy of the config with its own data directory and admin port
//! (the user's data and ports are never touched), feeds one of its sources
//! — a `file` source (a new file matching its first `include` pattern,
//! removed afterwards), a TCP `socket` source or an `http` source — and
//! follows its metrics: the
//! source's records in, and every sink's lag; a record counts as
//! acknowledged once every sink's cursor has passed it. The sinks deliver
//! for real: a file sink writes its file, a database sink its table.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use shipper::config::SourceConfig;
use shipper_components::sources::file::FileSourceConfig;
use shipper_components::sources::http::HttpSourceConfig;
use shipper_components::sources::socket::{SocketMode, SocketSourceConfig};

use super::{free_port, sample_of, scrape, ChildPlan, Feed};

/// The copy of the config to run, what to feed, and what to watch.
pub(super) struct Prepared {
    pub plan: ChildPlan,
    pub feed: Feed,
    pub source: String,
    pub sinks: Vec<String>,
}

/// Reads the config at `path`, makes the bench's copy under `dir`, and
/// picks the source to feed (`source`, or the first one the bench can feed).
pub(super) fn prepare(path: &Path, dir: &Path, source: Option<&str>) -> anyhow::Result<Prepared> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    table.insert(
        "data_dir".into(),
        toml::Value::String(dir.join("data").display().to_string()),
    );
    let admin = free_port()?;
    let section = table
        .entry("admin")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(section) = section.as_table_mut() else {
        bail!("{}: `admin` is not a table", path.display());
    };
    section.insert(
        "address".into(),
        toml::Value::String(format!("127.0.0.1:{admin}")),
    );
    let copy = toml::to_string(&table).context("writing the bench's copy of the config")?;
    let loaded = shipper::config::parse(&copy, &shipper::config::process_env)
        .map_err(|invalid| anyhow!("{}: {invalid}", path.display()))?;
    let config = loaded.config;
    if config.sinks.is_empty() {
        bail!(
            "{}: no sinks: nothing would acknowledge the records",
            path.display()
        );
    }
    let (name, feed) = match source {
        Some(name) => {
            let source = config
                .sources
                .get(name)
                .ok_or_else(|| anyhow!("{}: no source named {name}", path.display()))?;
            (name.to_owned(), feed_for(name, source)?)
        }
        None => config
            .sources
            .iter()
            .find_map(|(name, source)| Some((name.clone(), feed_for(name, source).ok()?)))
            .ok_or_else(|| {
                anyhow!(
                    "{}: no source the bench can feed (a `file` source, a TCP `socket` source or an `http` source)",
                    path.display()
                )
            })?,
    };
    Ok(Prepared {
        plan: ChildPlan {
            name: "shipper",
            config: copy,
            admin,
        },
        feed,
        source: name,
        sinks: config.sinks.keys().cloned().collect(),
    })
}

/// How the bench feeds source `name`.
fn feed_for(name: &str, source: &SourceConfig) -> anyhow::Result<Feed> {
    if let Some(file) = source.get::<FileSourceConfig>() {
        {
            let pattern = file
                .include
                .first()
                .ok_or_else(|| anyhow!("source {name} has no include pattern"))?;
            let candidate = file_matching(pattern)?;
            let excluded = file.exclude.iter().any(|exclude| {
                glob::Pattern::new(exclude).is_ok_and(|p| p.matches_path(&candidate))
            });
            if excluded {
                bail!("source {name}: {} is excluded", candidate.display());
            }
            if let Some(parent) = candidate.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            return Ok(Feed::File(candidate));
        }
    }
    if let Some(socket) = source
        .get::<SocketSourceConfig>()
        .filter(|socket| socket.mode == SocketMode::Tcp)
    {
        let address = socket
            .address
            .ok_or_else(|| anyhow!("source {name} has no address"))?;
        return Ok(Feed::Tcp(address));
    }
    if let Some(http) = source.get::<HttpSourceConfig>() {
        return Ok(Feed::Http(http.address, http.path.clone()));
    }
    bail!(
        "source {name}: the bench cannot feed a source of type {:?} (file, TCP socket and http sources it can)",
        source.type_name()
    )
}

/// A file name that `pattern` matches, in its (wildcard-free) directory.
fn file_matching(pattern: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(pattern);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
    else {
        bail!("{pattern}: not a file pattern");
    };
    if parent.to_string_lossy().contains(['*', '?', '[']) {
        bail!(
            "{pattern}: the bench writes into the pattern's directory, which must hold no wildcard"
        );
    }
    if !name.contains('*') {
        bail!("{pattern}: the bench writes a file of its own, which needs a `*` in the pattern's file name (it never appends to an existing file)");
    }
    // A name of this run's own, removed at the end.
    let own = format!("shipper-bench-{}", std::process::id());
    let candidate = parent.join(name.replacen('*', &own, 1).replace(['*', '?'], "b"));
    if candidate.exists() {
        bail!("{}: exists already", candidate.display());
    }
    let matches = glob::Pattern::new(pattern)
        .map(|p| p.matches_path(&candidate))
        .unwrap_or(false);
    if !matches {
        bail!("{pattern}: the bench found no file name it matches");
    }
    Ok(candidate)
}

/// Records acknowledged and stored bytes delivered so far: the source's
/// records in, less the largest lag of any sink (in log records).
pub(super) fn observe(prepared: &Prepared) -> anyhow::Result<(u64, u64)> {
    let text = scrape(prepared.plan.admin)?;
    let records_in = sample_of(
        &text,
        "shipper_component_received_records_total",
        &prepared.source,
    )
    .unwrap_or(0);
    let mut lag = 0;
    let mut stored = 0;
    for sink in &prepared.sinks {
        lag = lag.max(sample_of(&text, "shipper_component_lag_records", sink).unwrap_or(u64::MAX));
        stored += sample_of(&text, "shipper_component_sent_bytes_total", sink).unwrap_or(0);
    }
    Ok((records_in.saturating_sub(lag), stored))
}

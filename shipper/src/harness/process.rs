//! A `shipper run` child process, followed through its admin endpoint.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procstat::Usage;

/// How often a starting process is polled.
const POLL_READY: Duration = Duration::from_millis(20);
/// Completion polls of `/metrics` ([`Process::wait_for`]): every
/// `POLL_START` until the counter moves, then at half the predicted time
/// left, within these bounds. A scrape costs the polled process CPU (each
/// sink's lag is read from the log), so it is polled rarely while far from
/// the end and often near it.
const POLL_START: Duration = Duration::from_millis(20);
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);

/// A free TCP port on 127.0.0.1 (free when asked; a listener that binds it
/// later may still lose a race, which the harness reports as a failed start).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The body of `GET /metrics` on the admin endpoint at 127.0.0.1:`port`.
pub fn scrape(port: u16) -> io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("a truncated answer to GET /metrics"))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(io::Error::other(format!("GET /metrics answered {status}")));
    }
    Ok(body.to_owned())
}

/// The value of `family{component_id="component"}` in a `/metrics` text
/// (`component` empty: the sample without labels).
pub fn sample(text: &str, family: &str, component: &str) -> Option<f64> {
    if component.is_empty() {
        crate::metrics::sample(text, family, &[])
    } else {
        crate::metrics::sample(text, family, &[("component_id", component)])
    }
}

/// A `shipper run` child: its config and stderr in the harness's
/// directory, its admin endpoint on a port of its own. Killed when dropped
/// unless [`Process::stop`] stopped it.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    stderr: PathBuf,
    admin: u16,
    scrapes: u32,
}

impl Process {
    /// Writes `DIR/NAME.toml` and runs `EXE run -c` on it in `dir`, its
    /// stderr in `DIR/NAME.stderr`. `config` binds its admin endpoint to
    /// 127.0.0.1:`admin` ([`Process::admin_section`] writes that table).
    pub fn start(exe: &Path, dir: &Path, name: &str, config: &str, admin: u16) -> io::Result<Self> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config)?;
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(exe)
            .args(["run", "-c"])
            .arg(&path)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {}: {e}", exe.display())))?;
        Ok(Process {
            name: name.to_owned(),
            child: Some(child),
            stderr,
            admin,
            scrapes: 0,
        })
    }

    /// The `[admin]` table that binds the admin endpoint to 127.0.0.1:`port`.
    pub fn admin_section(port: u16) -> String {
        format!("[admin]\naddress = \"127.0.0.1:{port}\"\n")
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin port.
    pub fn admin(&self) -> u16 {
        self.admin
    }

    /// The process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// CPU and memory so far.
    pub fn usage(&self) -> Usage {
        crate::procstat::usage(&self.pid().to_string())
    }

    /// An error, with its log, if the process has exited.
    pub fn check_running(&mut self) -> io::Result<()> {
        let Some(child) = &mut self.child else {
            return Err(io::Error::other(format!("{} was stopped", self.name)));
        };
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                Err(io::Error::other(format!(
                    "`shipper run` ({}) exited ({status}):\n{}",
                    self.name,
                    self.log()
                )))
            }
        }
    }

    /// Waits until the admin endpoint serves `/metrics` (the process has
    /// loaded its config, opened its log and started its components).
    pub fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        while scrape(self.admin).is_err() {
            self.check_running()?;
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "`shipper run` ({}) did not serve its metrics within {timeout:?}:\n{}",
                        self.name,
                        self.log()
                    ),
                ));
            }
            std::thread::sleep(POLL_READY);
        }
        Ok(())
    }

    /// The text of `/metrics`, counted in [`Process::scrapes`].
    pub fn metrics(&mut self) -> io::Result<String> {
        self.scrapes += 1;
        scrape(self.admin)
    }

    /// `/metrics` requests made through [`Process::metrics`].
    pub fn scrapes(&self) -> u32 {
        self.scrapes
    }

    /// Polls `/metrics` until `family{component_id="component"}` reaches
    /// `target`, more often as it nears it; the instant it was seen. An
    /// error if the process exits or `timeout` passes first.
    pub fn wait_for(
        &mut self,
        family: &str,
        component: &str,
        target: u64,
        timeout: Duration,
    ) -> io::Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut first: Option<(Instant, u64)> = None;
        loop {
            let seen = self
                .metrics()
                .ok()
                .and_then(|text| sample(&text, family, component))
                .unwrap_or(0.0) as u64;
            let now = Instant::now();
            if seen >= target {
                return Ok(now);
            }
            self.check_running()?;
            if now > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{}: {family}{{component_id=\"{component}\"}} at {seen} of {target} after {timeout:?}:\n{}",
                        self.name,
                        self.log()
                    ),
                ));
            }
            let pause = match first {
                Some((then, before)) if seen > before => {
                    let rate = (seen - before) as f64 / (now - then).as_secs_f64();
                    let left = (target - seen) as f64 / rate;
                    Duration::from_secs_f64(left / 2.0).clamp(POLL_MIN, POLL_MAX)
                }
                _ => POLL_START,
            };
            if first.is_none() && seen > 0 {
                first = Some((now, seen));
            }
            std::thread::sleep(pause);
        }
    }

    /// CPU seconds one `/metrics` scrape costs the process now: the mean of
    /// `times`, not counted in [`Process::scrapes`].
    pub fn scrape_cost(&self, times: u32) -> f64 {
        let before = self.usage().cpu_seconds;
        for _ in 0..times {
            let _ = scrape(self.admin);
        }
        (self.usage().cpu_seconds - before) / f64::from(times.max(1))
    }

    /// SIGTERM, then waits for the drain to end; an error, with the log,
    /// unless the process exits 0. Returns its log.
    pub fn stop(mut self) -> io::Result<String> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other(format!("{} was stopped", self.name)));
        };
        let signal = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !signal.success() {
            let _ = child.kill();
        }
        let status = child.wait()?;
        let log = self.log();
        if !status.success() {
            return Err(io::Error::other(format!(
                "`shipper run` ({}) exited {status}:\n{log}",
                self.name
            )));
        }
        Ok(log)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! CPU time and memory of a process, read from Linux `/proc`: what
//! `shipper bench` and the end-to-end benchmark report per process.

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 per second on
/// Linux whatever the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU and memory of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds so far.
    pub cpu_seconds: f64,
    /// Peak resident set (`VmHWM`), bytes.
    pub vm_hwm: u64,
    /// Resident set now (`VmRSS`), bytes.
    pub vm_rss: u64,
    /// Of it, anonymous memory and file-backed pages (the log's mapped
    /// segments), bytes.
    pub rss_anon: u64,
    pub rss_file: u64,
}

/// The usage of process `pid` (a process id, or `self`); zeros for a
/// process that is gone.
pub fn usage(pid: &str) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after ')'.
    let cpu_seconds = (ticks(11) + ticks(12)) / TICKS_PER_SECOND;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Usage {
        cpu_seconds,
        vm_hwm: kib("VmHWM:"),
        vm_rss: kib("VmRSS:"),
        rss_anon: kib("RssAnon:"),
        rss_file: kib("RssFile:"),
    }
}

/// Resets this process's peak resident set to its current one (Linux
/// `clear_refs`), so a later `vm_hwm` measures from now.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let busy: u64 = (0..5_000_000u64).map(std::hint::black_box).sum();
        assert!(busy > 0);
        let usage = usage("self");
        assert!(
            usage.vm_rss > 0 && usage.vm_hwm >= usage.vm_rss,
            "{usage:?}"
        );
        assert!(usage.rss_anon > 0, "{usage:?}");
        assert_eq!(super::usage("999999999"), Usage::default());
    }
}

//! Deterministic, realistic JSON access-log lines for the demo.
//!
//! Line `seq` is a pure function of `seq` and the target length, so a
//! reader can regenerate the line it expects from the `seq` field it reads
//! and compare bytes.

/// Timestamp of record 0: 2024-05-01T00:00:00Z, unix nanoseconds.
const BASE_NS: u64 = 1_714_521_600_000_000_000;
/// Records are 250 µs apart (4,000 requests per second).
const STEP_NS: u64 = 250_000;

const METHODS: [&str; 8] = ["GET", "GET", "GET", "GET", "GET", "POST", "PUT", "DELETE"];
const PATHS: [&str; 8] = [
    "/orders/",
    "/users/",
    "/cart/",
    "/search?p=",
    "/app.js?v=",
    "/login?n=",
    "/health?x=",
    "/invoices/",
];
const STATUS: [u16; 16] = [
    200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 201, 204, 304, 404, 404, 500,
];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Safari/604.1",
    "curl/8.5.0",
    "okhttp/4.12.0",
];
const WORDS: [&str; 16] = [
    "request",
    "served",
    "from",
    "cache",
    "user",
    "session",
    "upstream",
    "latency",
    "ok",
    "retry",
    "token",
    "refreshed",
    "backend",
    "pool",
    "connection",
    "reused",
];

/// The generator: lines of about `target_len` bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessLog {
    target_len: usize,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let start = out.len();
    push_u64(out, value);
    while out.len() - start < width {
        out.insert(start, b'0');
    }
}

/// Writes unix milliseconds as RFC 3339 (`2024-05-01T00:00:00.000Z`).
/// Like `units::rfc3339_millis`, without allocating (this runs per record).
fn push_rfc3339(out: &mut Vec<u8>, unix_ms: u64) {
    fn digits<const N: usize>(value: u64) -> [u8; N] {
        let mut buf = [b'0'; N];
        let mut value = value;
        for slot in buf.iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
        buf
    }
    let seconds = unix_ms / 1000;
    let (year, month, day) = shipper_core::time::civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    out.extend_from_slice(&digits::<4>(year.max(0) as u64));
    out.push(b'-');
    out.extend_from_slice(&digits::<2>(u64::from(month)));
    out.push(b'-');
    out.extend_from_slice(&digits::<2>(u64::from(day)));
    out.push(b'T');
    out.extend_from_slice(&digits::<2>(of_day / 3600));
    out.push(b':');
    out.extend_from_slice(&digits::<2>(of_day / 60 % 60));
    out.push(b':');
    out.extend_from_slice(&digits::<2>(of_day % 60));
    out.push(b'.');
    out.extend_from_slice(&digits::<3>(unix_ms % 1000));
    out.push(b'Z');
}

impl AccessLog {
    /// A generator of lines of `target_len` bytes; lines never drop their
    /// fixed fields (seq, ts, req, status, ms: 75 to 100 bytes), so short
    /// targets give lines of the fixed fields only.
    pub(crate) fn new(target_len: usize) -> Self {
        AccessLog { target_len }
    }

    /// The timestamp of line `seq`, unix nanoseconds.
    pub(crate) fn timestamp_ns(seq: u64) -> u64 {
        BASE_NS + seq * STEP_NS
    }

    /// Replaces `out` with line `seq` (no trailing newline).
    pub(crate) fn line(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        let r1 = splitmix64(seq);
        let r2 = splitmix64(r1);
        out.extend_from_slice(b"{\"seq\":");
        push_u64(out, seq);
        out.extend_from_slice(b",\"ts\":\"");
        push_rfc3339(out, Self::timestamp_ns(seq) / 1_000_000);
        out.extend_from_slice(b"\",\"req\":\"");
        out.extend_from_slice(METHODS[(r1 & 7) as usize].as_bytes());
        out.push(b' ');
        out.extend_from_slice(PATHS[(r1 >> 3 & 7) as usize].as_bytes());
        push_u64(out, (r1 >> 6 & 0xffff) % 10_000);
        out.extend_from_slice(b"\",\"status\":");
        push_u64(out, u64::from(STATUS[(r1 >> 22 & 15) as usize]));
        out.extend_from_slice(b",\"ms\":");
        push_u64(out, (r1 >> 26 & 0xff) % 240 + 1);

        let host = r1 >> 34 & 7;
        // Five digits, so the field has a fixed length (JSON forbids leading zeros).
        let bytes = (r2 & 0xffff) % 90_000 + 10_000;
        let agent = AGENTS[(r2 >> 14 & 3) as usize];
        let close = 1; // the final '}'
        let host_len = ",\"host\":\"web-00\"".len();
        if out.len() + host_len + close <= self.target_len {
            out.extend_from_slice(b",\"host\":\"web-");
            push_padded(out, host + 1, 2);
            out.push(b'"');
        }
        if out.len() + ",\"bytes\":00000".len() + close <= self.target_len {
            out.extend_from_slice(b",\"bytes\":");
            push_u64(out, bytes);
        }
        if out.len() + ",\"ua\":\"\"".len() + agent.len() + close <= self.target_len {
            out.extend_from_slice(b",\"ua\":\"");
            out.extend_from_slice(agent.as_bytes());
            out.push(b'"');
        }
        let msg_overhead = ",\"msg\":\"\"".len() + close;
        if out.len() + msg_overhead < self.target_len {
            out.extend_from_slice(b",\"msg\":\"");
            let end = self.target_len - 2;
            let mut bits = r2 >> 16;
            let mut first = true;
            while out.len() < end {
                if bits < 16 {
                    bits = splitmix64(bits ^ seq) | 1 << 63;
                }
                if !first {
                    out.push(b' ');
                }
                first = false;
                let word = WORDS[(bits & 15) as usize].as_bytes();
                bits >>= 4;
                let room = end.saturating_sub(out.len());
                out.extend_from_slice(&word[..word.len().min(room)]);
            }
            out.truncate(end);
            out.push(b'"');
        }
        out.push(b'}');
    }

    /// The `seq` field at the start of a line, if it has one.
    pub(crate) fn seq_of(line: &[u8]) -> Option<u64> {
        let rest = line.strip_prefix(b"{\"seq\":")?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 19 {
            return None;
        }
        std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_deterministic_json_of_the_target_length() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for target in [100, 230, 1024] {
            let generator = AccessLog::new(target);
            for seq in [0, 1, 17, 99_999, 123_456_789] {
                generator.line(seq, &mut a);
                generator.line(seq, &mut b);
                assert_eq!(a, b);
                let text = String::from_utf8_lossy(&a);
                if target == 100 {
                    assert!((70..=100).contains(&a.len()), "{} bytes: {text}", a.len());
                } else {
                    assert_eq!(a.len(), target, "{text}");
                }
                assert!(!a.contains(&b'\n'));
                let value: serde_json::Value = serde_json::from_slice(&a).unwrap();
                assert_eq!(value["seq"], seq);
                assert_eq!(AccessLog::seq_of(&a), Some(seq));
            }
        }
        for ms in [0, 1_709_210_096_789, 1_714_521_600_000] {
            let mut out = Vec::new();
            push_rfc3339(&mut out, ms);
            assert_eq!(out, crate::cli::units::rfc3339_millis(ms).as_bytes());
        }
        let short = AccessLog::new(10);
        short.line(5, &mut a);
        serde_json::from_slice::<serde_json::Value>(&a).unwrap();
        assert_eq!(AccessLog::seq_of(b"{\"seq\":x}"), None);
    }
}

//! Seeded, deterministic corpora of JSON records: the one synthetic
//! record generator, behind the `generator` source, `shipper demo`,
//! `shipper bench`, the criterion benchmarks and the tests.
//!
//! Four kinds ([`CorpusKind`]):
//!
//! * `access_log`: web access-log lines (request, status, latency, bytes,
//!   host, client address, user agent), about 140-250 bytes;
//! * `events`: application events with nested objects (user, trace, and a
//!   payload whose shape depends on the event type), about 320-440 bytes;
//! * `iot`: sensor readings (device, site, firmware, temperature following
//!   the time of day, humidity, pressure, CO₂, a draining battery, signal
//!   strength), about 215-240 bytes;
//! * `random`: a `data` string of random printable ASCII (no quote, no
//!   backslash), 0-1500 characters: the worst case for compression (zstd
//!   gains about 1.2×), about 30-1530 bytes.
//!
//! Every record is one JSON object on one line and starts with
//! `{"seq":N,`. Record `seq` is a pure function of the seed, `seq`, its
//! timestamp and the size knob, so a reader can regenerate the record it
//! expects from the `seq` it reads ([`Corpus::seq_of`]). Writing a record
//! appends to the caller's buffer and allocates nothing else.
//!
//! The size knob ([`Corpus::with_record_bytes`]) makes every record exactly
//! that many bytes when its kept fields fit (`seq`, `ts` and the request
//! and status, the event name or the device): trailing fields that do not
//! fit are left out, and a `msg` field of words pads the rest (the last
//! few bytes, too few for a field, as spaces before the closing brace).
//! A record never loses its kept fields, so below their size (55-100
//! bytes, by kind) it is as short as they allow.
//!
//! ```
//! use shipper_core::corpus::{Corpus, CorpusKind};
//!
//! let mut corpus = Corpus::new(CorpusKind::Iot, 7).with_record_bytes(256);
//! let mut record = Vec::new();
//! let timestamp = corpus.next_into(&mut record);
//! assert_eq!(record.len(), 256);
//! assert_eq!(Corpus::seq_of(&record), Some(0));
//!
//! // The same seed gives the same record, at any time later.
//! let mut again = Vec::new();
//! Corpus::new(CorpusKind::Iot, 7)
//!     .with_record_bytes(256)
//!     .record_at(0, timestamp, &mut again);
//! assert_eq!(record, again);
//! ```

use std::fmt;
use std::str::FromStr;

/// Timestamp of record 0 by default: 2024-05-01T00:00:00Z, unix nanoseconds.
pub const DEFAULT_START_NS: u64 = 1_714_521_600_000_000_000;
/// Time between records by default: 250 µs (4,000 records per second).
pub const DEFAULT_STEP_NS: u64 = 250_000;

/// The shape of a corpus's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorpusKind {
    /// JSON web access-log lines.
    #[default]
    AccessLog,
    /// JSON application events with nested fields.
    Events,
    /// JSON sensor readings.
    Iot,
    /// Random printable text in a JSON string: incompressible.
    Random,
}

impl CorpusKind {
    /// Every kind.
    pub const ALL: [CorpusKind; 4] = [
        CorpusKind::AccessLog,
        CorpusKind::Events,
        CorpusKind::Iot,
        CorpusKind::Random,
    ];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            CorpusKind::AccessLog => "access_log",
            CorpusKind::Events => "events",
            CorpusKind::Iot => "iot",
            CorpusKind::Random => "random",
        }
    }

    /// How many leading fields a record keeps however small the size knob.
    fn kept_fields(self) -> usize {
        match self {
            // seq, ts, req, status
            CorpusKind::AccessLog => 4,
            // seq, ts, event / device / data
            CorpusKind::Events | CorpusKind::Iot | CorpusKind::Random => 3,
        }
    }
}

impl fmt::Display for CorpusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A corpus name that is none of [`CorpusKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown corpus `{0}`, expected access_log, events, iot or random")]
pub struct UnknownCorpus(pub String);

impl FromStr for CorpusKind {
    type Err = UnknownCorpus;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        CorpusKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| UnknownCorpus(name.to_owned()))
    }
}

/// A generator of one kind of record; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    kind: CorpusKind,
    seed: u64,
    record_bytes: Option<usize>,
    start_ns: u64,
    step_ns: u64,
    next_seq: u64,
}

impl Corpus {
    /// Records of `kind` from `seed`, of their natural size, timed from
    /// [`DEFAULT_START_NS`] every [`DEFAULT_STEP_NS`].
    pub fn new(kind: CorpusKind, seed: u64) -> Self {
        Corpus {
            kind,
            seed,
            record_bytes: None,
            start_ns: DEFAULT_START_NS,
            step_ns: DEFAULT_STEP_NS,
            next_seq: 0,
        }
    }

    /// Records of exactly `bytes` bytes when the kept fields fit (see the
    /// module docs).
    pub fn with_record_bytes(mut self, bytes: usize) -> Self {
        self.record_bytes = Some(bytes);
        self
    }

    /// Record `seq` is timed `start_ns + seq * step_ns` (unix nanoseconds).
    pub fn with_clock(mut self, start_ns: u64, step_ns: u64) -> Self {
        self.start_ns = start_ns;
        self.step_ns = step_ns;
        self
    }

    /// The kind of record.
    pub fn kind(&self) -> CorpusKind {
        self.kind
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The size knob, if set.
    pub fn record_bytes(&self) -> Option<usize> {
        self.record_bytes
    }

    /// The `seq` of the record [`Corpus::next_into`] writes next.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Makes `seq` the next record.
    pub fn seek(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    /// The timestamp of record `seq` on this corpus's clock.
    pub fn timestamp_ns(&self, seq: u64) -> u64 {
        self.start_ns.wrapping_add(seq.wrapping_mul(self.step_ns))
    }

    /// Appends the next record to `buf` (no newline) and returns its
    /// timestamp.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> u64 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.record_into(seq, buf)
    }

    /// Appends record `seq` at its time on this corpus's clock to `buf`
    /// and returns that time.
    pub fn record_into(&self, seq: u64, buf: &mut Vec<u8>) -> u64 {
        let timestamp_ns = self.timestamp_ns(seq);
        self.record_at(seq, timestamp_ns, buf);
        timestamp_ns
    }

    /// Appends record `seq`, stamped `timestamp_ns` (unix nanoseconds), to
    /// `buf`. A live source passes the wall-clock time.
    pub fn record_at(&self, seq: u64, timestamp_ns: u64, buf: &mut Vec<u8>) {
        let mut rng = Rng::for_record(self.seed, seq);
        let mut record = Fields::open(buf);
        record.u64("seq", seq);
        match self.kind {
            CorpusKind::AccessLog => access_log(&mut record, &mut rng, self.seed, timestamp_ns),
            CorpusKind::Events => event(&mut record, &mut rng, self.seed, timestamp_ns),
            CorpusKind::Iot => iot(&mut record, &mut rng, self.seed, seq, timestamp_ns),
            CorpusKind::Random => random(&mut record, &mut rng, timestamp_ns, self.record_bytes),
        }
        record.close(self.kind.kept_fields(), self.record_bytes, &mut rng);
    }

    /// The `seq` at the start of a record of any corpus, if it has one.
    pub fn seq_of(record: &[u8]) -> Option<u64> {
        let rest = record.strip_prefix(b"{\"seq\":")?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 20 {
            return None;
        }
        std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
    }
}

// ---------------------------------------------------------------------------
// access_log

const METHODS: [(&str, u32); 5] = [
    ("GET", 80),
    ("POST", 12),
    ("PUT", 4),
    ("DELETE", 2),
    ("PATCH", 2),
];

/// What follows a route's prefix in the request path.
#[derive(Clone, Copy)]
enum Tail {
    Nothing,
    Id,
    Query,
    Asset,
}

const ROUTES: [(&str, Tail, u32); 12] = [
    ("/api/v1/orders/", Tail::Id, 14),
    ("/api/v1/users/", Tail::Id, 10),
    ("/api/v1/products/", Tail::Id, 18),
    ("/api/v1/cart", Tail::Nothing, 8),
    ("/api/v1/invoices/", Tail::Id, 4),
    ("/search?q=", Tail::Query, 8),
    ("/static/js/app.", Tail::Asset, 10),
    ("/static/css/site.", Tail::Asset, 6),
    ("/login", Tail::Nothing, 4),
    ("/health", Tail::Nothing, 10),
    ("/", Tail::Nothing, 6),
    ("/favicon.ico", Tail::Nothing, 2),
];

const STATUSES: [(u64, u32); 11] = [
    (200, 780),
    (201, 40),
    (204, 20),
    (301, 10),
    (304, 60),
    (400, 15),
    (401, 10),
    (403, 5),
    (404, 40),
    (429, 8),
    (500, 12),
];

const AGENTS: [&str; 8] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) Safari/605.1.15",
    "okhttp/4.12.0",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "kube-probe/1.29",
];

const FIRST_OCTETS: [u64; 10] = [10, 10, 10, 81, 93, 104, 172, 185, 203, 212];

const QUERY_WORDS: [&str; 16] = [
    "shoes", "jacket", "red", "wool", "lamp", "desk", "chair", "usb", "cable", "coffee", "mug",
    "linen", "oak", "blue", "kids", "sale",
];

/// Clients making the requests: each has one address and one user agent.
const CLIENTS: u64 = 20_000;

fn access_log(record: &mut Fields<'_>, rng: &mut Rng, seed: u64, timestamp_ns: u64) {
    record.field("ts", |out| push_rfc3339_quoted(out, timestamp_ns));
    let &(route, tail, _) = rng.weighted_by(&ROUTES, |r| r.2);
    let method = if route.starts_with("/api/") {
        rng.weighted(&METHODS)
    } else if route == "/login" && rng.below(2) == 0 {
        "POST"
    } else {
        "GET"
    };
    let asset = matches!(tail, Tail::Asset);
    record.field("req", |out| {
        out.push(b'"');
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(route.as_bytes());
        match tail {
            Tail::Nothing => {}
            Tail::Id => push_u64(out, 1 + rng.below(999_999)),
            Tail::Query => {
                out.extend_from_slice(rng.pick(&QUERY_WORDS).as_bytes());
                out.push(b'+');
                out.extend_from_slice(rng.pick(&QUERY_WORDS).as_bytes());
            }
            Tail::Asset => {
                push_hex(out, rng.next(), 8);
                out.extend_from_slice(if route.contains("/js/") {
                    b".js"
                } else {
                    b".css"
                });
            }
        }
        out.push(b'"');
    });
    let status = if route == "/health" {
        200
    } else {
        rng.weighted(&STATUSES)
    };
    record.u64("status", status);
    let ms = match rng.below(256) {
        0 => 1_000 + rng.below(9_000),
        1..=15 => 30 + rng.below(970),
        _ => 1 + rng.below(30),
    };
    record.u64("ms", ms);
    let bytes = match status {
        204 | 304 => 0,
        _ if asset => 20_000 + rng.below(380_000),
        _ => 120 + rng.below(48_000),
    };
    record.u64("bytes", bytes);
    record.field("host", |out| {
        out.extend_from_slice(b"\"web-0");
        push_u64(out, 1 + rng.below(8));
        out.push(b'"');
    });
    let client = mix(seed ^ 0x00c1_1e47 ^ rng.below(CLIENTS));
    record.field("ip", |out| {
        out.push(b'"');
        push_u64(out, FIRST_OCTETS[(client % 10) as usize]);
        for shift in [8, 16] {
            out.push(b'.');
            push_u64(out, client >> shift & 0xff);
        }
        out.push(b'.');
        push_u64(out, 1 + (client >> 24 & 0xff) % 254);
        out.push(b'"');
    });
    record.str("ua", AGENTS[(client >> 32) as usize % AGENTS.len()]);
}

// ---------------------------------------------------------------------------
// events

/// Event types: name, emitting service, weight.
const EVENTS: [(&str, &str, u32); 9] = [
    ("page.view", "web", 40),
    ("search.performed", "search", 12),
    ("cart.updated", "cart", 14),
    ("order.created", "checkout", 8),
    ("payment.succeeded", "payments", 6),
    ("payment.failed", "payments", 2),
    ("user.login", "auth", 10),
    ("user.logout", "auth", 4),
    ("email.sent", "notifications", 4),
];

const COUNTRIES: [(&str, &str); 10] = [
    ("DE", "EUR"),
    ("FR", "EUR"),
    ("NL", "EUR"),
    ("ES", "EUR"),
    ("IT", "EUR"),
    ("GB", "GBP"),
    ("US", "USD"),
    ("US", "USD"),
    ("CA", "CAD"),
    ("CH", "CHF"),
];

const PLANS: [(&str, u32); 3] = [("free", 70), ("pro", 25), ("enterprise", 5)];

const VERSIONS: [&str; 4] = ["3.14.2", "3.14.3", "3.15.0", "3.15.1"];

const PAGES: [&str; 8] = [
    "/",
    "/products/",
    "/products/",
    "/category/",
    "/cart",
    "/checkout",
    "/account",
    "/help/",
];

const REFERRERS: [&str; 5] = [
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://t.co/",
    "",
];

const VIEWPORTS: [&str; 5] = ["1920x1080", "1536x864", "1440x900", "390x844", "412x915"];

const DECLINES: [&str; 4] = [
    "card_declined",
    "insufficient_funds",
    "expired_card",
    "provider_timeout",
];

const PROVIDERS: [&str; 3] = ["stripe", "adyen", "paypal"];

const LOGINS: [(&str, u32); 3] = [("password", 60), ("sso", 30), ("passkey", 10)];

const TEMPLATES: [&str; 4] = [
    "order_confirmation",
    "shipping_update",
    "password_reset",
    "newsletter",
];

/// Users behind the events: each has one country and one plan.
const USERS: u64 = 100_000;
/// How long a user's session lasts: 30 minutes.
const SESSION_NS: u64 = 1_800_000_000_000;

fn event(record: &mut Fields<'_>, rng: &mut Rng, seed: u64, timestamp_ns: u64) {
    record.field("ts", |out| push_rfc3339_quoted(out, timestamp_ns));
    let &(name, service, _) = rng.weighted_by(&EVENTS, |e| e.2);
    record.str("event", name);
    record.str("service", service);
    let failed = name == "payment.failed";
    record.str(
        "level",
        if failed || rng.below(100) == 0 {
            "warn"
        } else {
            "info"
        },
    );
    let user = rng.below(USERS);
    let traits = mix(seed ^ 0x05e7 ^ user);
    let (country, currency) = COUNTRIES[(traits % 10) as usize];
    record.field("user", |out| {
        out.extend_from_slice(b"{\"id\":\"u-");
        push_fixed(out, user, 6);
        out.extend_from_slice(b"\",\"country\":\"");
        out.extend_from_slice(country.as_bytes());
        out.extend_from_slice(b"\",\"plan\":\"");
        let plan = Rng(traits >> 8).weighted(&PLANS);
        out.extend_from_slice(plan.as_bytes());
        out.extend_from_slice(b"\"}");
    });
    let session = mix(traits ^ (timestamp_ns / SESSION_NS));
    record.field("session", |out| {
        out.push(b'"');
        push_hex(out, session, 16);
        out.push(b'"');
    });
    record.field("trace", |out| {
        out.extend_from_slice(b"{\"trace_id\":\"");
        push_hex(out, rng.next(), 16);
        push_hex(out, rng.next(), 16);
        out.extend_from_slice(b"\",\"span_id\":\"");
        push_hex(out, rng.next(), 16);
        out.extend_from_slice(b"\"}");
    });
    record.field("data", |out| {
        out.push(b'{');
        match name {
            "page.view" => {
                out.extend_from_slice(b"\"path\":\"");
                let page = rng.pick(&PAGES);
                out.extend_from_slice(page.as_bytes());
                if page.ends_with('/') && page.len() > 1 {
                    push_u64(out, 1 + rng.below(20_000));
                }
                out.extend_from_slice(b"\",\"referrer\":\"");
                out.extend_from_slice(rng.pick(&REFERRERS).as_bytes());
                out.extend_from_slice(b"\",\"duration_ms\":");
                push_u64(out, 200 + rng.below(60_000));
                out.extend_from_slice(b",\"viewport\":\"");
                out.extend_from_slice(rng.pick(&VIEWPORTS).as_bytes());
                out.push(b'"');
            }
            "search.performed" => {
                out.extend_from_slice(b"\"query\":\"");
                out.extend_from_slice(rng.pick(&QUERY_WORDS).as_bytes());
                out.push(b' ');
                out.extend_from_slice(rng.pick(&QUERY_WORDS).as_bytes());
                out.extend_from_slice(b"\",\"results\":");
                push_u64(out, rng.below(500));
                out.extend_from_slice(b",\"page\":");
                push_u64(out, 1 + rng.below(3));
            }
            "cart.updated" => {
                out.extend_from_slice(b"\"cart_id\":\"c-");
                push_hex(out, session, 8);
                out.extend_from_slice(b"\",\"sku\":\"SKU-");
                push_fixed(out, rng.below(100_000), 5);
                out.extend_from_slice(b"\",\"quantity\":");
                push_u64(out, 1 + rng.below(4));
                out.extend_from_slice(b",\"action\":\"");
                let action = if rng.below(4) == 0 { "remove" } else { "add" };
                out.extend_from_slice(action.as_bytes());
                out.push(b'"');
            }
            "order.created" => {
                out.extend_from_slice(b"\"order_id\":\"o-");
                push_fixed(out, rng.below(10_000_000), 7);
                out.extend_from_slice(b"\",\"items\":");
                push_u64(out, 1 + rng.below(8));
                out.extend_from_slice(b",\"total\":{\"amount\":");
                push_u64(out, 500 + rng.below(50_000));
                out.extend_from_slice(b",\"currency\":\"");
                out.extend_from_slice(currency.as_bytes());
                out.extend_from_slice(b"\"},\"shipping\":\"");
                let shipping = if rng.below(5) == 0 {
                    "express"
                } else {
                    "standard"
                };
                out.extend_from_slice(shipping.as_bytes());
                out.push(b'"');
            }
            "payment.succeeded" | "payment.failed" => {
                out.extend_from_slice(b"\"order_id\":\"o-");
                push_fixed(out, rng.below(10_000_000), 7);
                out.extend_from_slice(b"\",\"amount\":");
                push_u64(out, 500 + rng.below(50_000));
                out.extend_from_slice(b",\"currency\":\"");
                out.extend_from_slice(currency.as_bytes());
                out.extend_from_slice(b"\",\"provider\":\"");
                out.extend_from_slice(rng.pick(&PROVIDERS).as_bytes());
                out.extend_from_slice(b"\",\"attempt\":");
                push_u64(out, 1 + u64::from(failed) * rng.below(3));
                if failed {
                    out.extend_from_slice(b",\"reason\":\"");
                    out.extend_from_slice(rng.pick(&DECLINES).as_bytes());
                    out.push(b'"');
                }
            }
            "user.login" => {
                out.extend_from_slice(b"\"method\":\"");
                out.extend_from_slice(rng.weighted(&LOGINS).as_bytes());
                out.extend_from_slice(b"\",\"mfa\":");
                push_bool(out, traits >> 20 & 1 == 1);
                out.extend_from_slice(b",\"success\":");
                push_bool(out, rng.below(20) != 0);
            }
            "user.logout" => {
                out.extend_from_slice(b"\"reason\":\"");
                let reason = if rng.below(3) == 0 { "timeout" } else { "user" };
                out.extend_from_slice(reason.as_bytes());
                out.push(b'"');
            }
            _ => {
                out.extend_from_slice(b"\"template\":\"");
                out.extend_from_slice(rng.pick(&TEMPLATES).as_bytes());
                out.extend_from_slice(b"\",\"provider\":\"ses\",\"queued_ms\":");
                push_u64(out, 2 + rng.below(400));
            }
        }
        out.push(b'}');
    });
    record.str("env", "prod");
    // One version per service.
    let service_id = service.bytes().fold(0u64, |hash, b| {
        hash.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    record.str("version", VERSIONS[(mix(seed ^ service_id) % 4) as usize]);
}

// ---------------------------------------------------------------------------
// iot

/// Devices reporting in turn: record `seq` is device `seq % DEVICES`.
const DEVICES: u64 = 1_000;
const FIRMWARE: [&str; 4] = ["2.3.9", "2.4.0", "2.4.1", "2.5.0-rc1"];

fn iot(record: &mut Fields<'_>, rng: &mut Rng, seed: u64, seq: u64, timestamp_ns: u64) {
    let device = seq % DEVICES;
    let reading = seq / DEVICES;
    let traits = mix(seed ^ 0xde71ce ^ device);
    record.u64("ts", timestamp_ns / 1_000_000);
    record.field("device", |out| {
        out.extend_from_slice(b"\"th-sensor-");
        push_fixed(out, device, 5);
        out.push(b'"');
    });
    record.field("site", |out| {
        out.extend_from_slice(b"\"plant-");
        push_fixed(out, 1 + traits % 12, 2);
        out.push(b'"');
    });
    record.str("fw", FIRMWARE[(traits >> 8) as usize % FIRMWARE.len()]);

    // Warmest at 15:00 UTC, coolest at 03:00: ±3 °C around the device's base.
    let second_of_day = timestamp_ns / 1_000_000_000 % 86_400;
    let from_peak = (second_of_day + 86_400 - 15 * 3_600) % 86_400;
    let from_peak = from_peak.min(86_400 - from_peak) as i64; // 0..=43_200
    let diurnal = 300 - from_peak * 600 / 43_200; // hundredths of °C
    let noise = |rng: &mut Rng, spread: u64| rng.below(2 * spread + 1) as i64 - spread as i64;
    let temperature = 1_800 + (traits >> 16 & 0x3ff) as i64 % 800 + diurnal + noise(rng, 30);
    record.field("temp_c", |out| push_decimal(out, temperature, 2));
    let humidity =
        (350 + (traits >> 26 & 0xff) as i64 + -diurnal / 2 + noise(rng, 10)).clamp(50, 1_000);
    record.field("humidity_pct", |out| push_decimal(out, humidity, 1));
    let pressure = 100_325 + (traits >> 34 & 0x7ff) as i64 + noise(rng, 20);
    record.field("pressure_hpa", |out| push_decimal(out, pressure, 2));
    let working_hours = (8 * 3_600..18 * 3_600).contains(&second_of_day);
    let co2 = 420 + (traits >> 45 & 0xff) + 250 * u64::from(working_hours) + rng.below(40);
    record.u64("co2_ppm", co2);
    // Drains a percent every 200 readings; replaced when empty.
    let battery = 100 - ((traits >> 53) % 100 + reading / 200) % 100;
    record.field("battery", |out| {
        out.extend_from_slice(b"{\"pct\":");
        push_u64(out, battery);
        out.extend_from_slice(b",\"mv\":");
        push_u64(out, 3_000 + battery * 12 + rng.below(20));
        out.push(b'}');
    });
    record.field("rssi_dbm", |out| {
        out.push(b'-');
        push_u64(out, 45 + (traits >> 58) % 20 * 2 + rng.below(6));
    });
    let status = if battery < 10 {
        "low_battery"
    } else if rng.below(1_000) == 0 {
        "sensor_fault"
    } else {
        "ok"
    };
    record.str("status", status);
}

// ---------------------------------------------------------------------------
// random

/// The longest `data` of a record of natural size.
const RANDOM_MAX: u64 = 1_500;
/// What a `random` record adds around its text: `,"data":"` and `"}`.
const RANDOM_FRAME: usize = 11;

fn random(record: &mut Fields<'_>, rng: &mut Rng, timestamp_ns: u64, record_bytes: Option<usize>) {
    record.u64("ts", timestamp_ns / 1_000_000);
    let len = match record_bytes {
        Some(target) => target.saturating_sub(record.len() + RANDOM_FRAME),
        None => rng.below(RANDOM_MAX + 1) as usize,
    };
    record.field("data", |out| {
        out.push(b'"');
        let end = out.len() + len;
        while out.len() < end {
            // Eight characters per draw, each one of the 92 printable
            // ASCII characters JSON needs no escape for.
            let mut bits = rng.next();
            for _ in 0..(end - out.len()).min(8) {
                let c = b'!' + (((bits & 0xff) * 92) >> 8) as u8;
                out.push(match c {
                    b'"' => b'}',
                    b'\\' => b'~',
                    c => c,
                });
                bits >>= 8;
            }
        }
        out.push(b'"');
    });
}

// ---------------------------------------------------------------------------
// building a record

/// The most top-level fields a record has.
const MAX_FIELDS: usize = 16;
/// The padding field with empty text: `,"msg":""`.
const PAD_FIELD: &[u8] = b",\"msg\":\"\"";
/// Sixteen, so four random bits pick one.
const PAD_WORDS: [&str; 16] = [
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

/// One JSON object being written into a buffer, with the end of each
/// top-level field remembered, so the size knob can cut at a field
/// boundary and the object stays valid.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    ends: [usize; MAX_FIELDS],
    count: usize,
}

impl<'a> Fields<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        out.push(b'{');
        Fields {
            out,
            start,
            ends: [0; MAX_FIELDS],
            count: 0,
        }
    }

    /// Writes `"name":` and the value `write` writes.
    ///
    /// # Panics
    ///
    /// If a generator writes more than [`MAX_FIELDS`] fields (a bug).
    fn field(&mut self, name: &str, write: impl FnOnce(&mut Vec<u8>)) {
        if self.count > 0 {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        write(self.out);
        self.ends[self.count] = self.out.len();
        self.count += 1;
    }

    /// A string field; `value` needs no escaping.
    fn str(&mut self, name: &str, value: &str) {
        self.field(name, |out| {
            out.push(b'"');
            out.extend_from_slice(value.as_bytes());
            out.push(b'"');
        });
    }

    fn u64(&mut self, name: &str, value: u64) {
        self.field(name, |out| push_u64(out, value));
    }

    /// Bytes of the record so far.
    fn len(&self) -> usize {
        self.out.len() - self.start
    }

    /// Closes the object, first fitting it to `record_bytes` if given:
    /// fields after the first `kept` that do not fit are cut, and the rest
    /// is padded.
    fn close(self, kept: usize, record_bytes: Option<usize>, rng: &mut Rng) {
        let Fields {
            out,
            start,
            ends,
            count,
        } = self;
        let Some(target) = record_bytes else {
            out.push(b'}');
            return;
        };
        // Where the closing brace goes.
        let limit = start + target.saturating_sub(1);
        if out.len() > limit {
            let mut keep = count;
            while keep > kept.max(1) && ends[keep - 1] > limit {
                keep -= 1;
            }
            out.truncate(ends[keep - 1]);
        }
        let room = limit.saturating_sub(out.len());
        if room > PAD_FIELD.len() {
            out.extend_from_slice(&PAD_FIELD[..PAD_FIELD.len() - 1]);
            let text_end = limit - 1;
            let mut first = true;
            // Four bits pick a word: one draw gives sixteen words.
            let mut bits = 0;
            let mut left = 0;
            while out.len() < text_end {
                if !first {
                    out.push(b' ');
                }
                first = false;
                if left == 0 {
                    bits = rng.next();
                    left = 16;
                }
                let word = PAD_WORDS[(bits & 15) as usize].as_bytes();
                bits >>= 4;
                left -= 1;
                let take = word.len().min(text_end - out.len());
                out.extend_from_slice(&word[..take]);
            }
            out.push(b'"');
        } else {
            // Whitespace before the brace keeps the object valid.
            out.resize(out.len() + room, b' ');
        }
        out.push(b'}');
    }
}

// ---------------------------------------------------------------------------
// randomness and formatting

/// SplitMix64's finalizer: a good 64-bit mix, for per-entity traits
/// (and for tests that need a number from a number).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// SplitMix64, seeded per record so record `seq` needs no other record.
struct Rng(u64);

impl Rng {
    fn for_record(seed: u64, seq: u64) -> Self {
        Rng(mix(seed) ^ mix(seq ^ 0x5eed))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; `n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn weighted<T: Copy>(&mut self, items: &[(T, u32)]) -> T {
        self.weighted_by(items, |item| item.1).0
    }

    fn weighted_by<'t, T>(&mut self, items: &'t [T], weight: impl Fn(&T) -> u32) -> &'t T {
        let total: u64 = items.iter().map(|item| u64::from(weight(item))).sum();
        let mut at = self.below(total);
        for item in items {
            let weight = u64::from(weight(item));
            if at < weight {
                return item;
            }
            at -= weight;
        }
        &items[items.len() - 1]
    }
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

/// `value` in exactly `width` digits, zero-padded (for use inside strings:
/// JSON numbers have no leading zeros). `width` is at most 20.
fn push_fixed(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// `value / 10^decimals` as a JSON number: `push_decimal(2137, 2)` is `21.37`.
fn push_decimal(out: &mut Vec<u8>, value: i64, decimals: u32) {
    if value < 0 {
        out.push(b'-');
    }
    let magnitude = value.unsigned_abs();
    let scale = 10u64.pow(decimals);
    push_u64(out, magnitude / scale);
    if decimals > 0 {
        out.push(b'.');
        push_fixed(out, magnitude % scale, decimals as usize);
    }
}

fn push_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { "true" } else { "false" }.as_bytes());
}

/// The low `digits * 4` bits of `value` in lower-case hex.
fn push_hex(out: &mut Vec<u8>, value: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for index in (0..digits).rev() {
        out.push(HEX[(value >> (index * 4) & 0xf) as usize]);
    }
}

/// Unix nanoseconds as a quoted RFC 3339 string with milliseconds
/// (`"2024-05-01T00:00:00.000Z"`), without allocating.
fn push_rfc3339_quoted(out: &mut Vec<u8>, unix_ns: u64) {
    let unix_ms = unix_ns / 1_000_000;
    let seconds = unix_ms / 1000;
    let (year, month, day) = crate::time::civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    out.push(b'"');
    push_fixed(out, year.max(0) as u64, 4);
    out.push(b'-');
    push_fixed(out, u64::from(month), 2);
    out.push(b'-');
    push_fixed(out, u64::from(day), 2);
    out.push(b'T');
    push_fixed(out, of_day / 3600, 2);
    out.push(b':');
    push_fixed(out, of_day / 60 % 60, 2);
    out.push(b':');
    push_fixed(out, of_day % 60, 2);
    out.push(b'.');
    push_fixed(out, unix_ms % 1000, 3);
    out.extend_from_slice(b"Z\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(record: &[u8]) -> serde_json::Value {
        serde_json::from_slice(record).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {}", String::from_utf8_lossy(record));
        })
    }

    #[test]
    fn records_are_deterministic_for_a_seed_and_differ_across_seeds() {
        for kind in CorpusKind::ALL {
            for size in [None, Some(100), Some(300)] {
                let make = |seed| {
                    let corpus = Corpus::new(kind, seed);
                    match size {
                        Some(bytes) => corpus.with_record_bytes(bytes),
                        None => corpus,
                    }
                };
                let (mut a, mut b, mut other) = (make(7), make(7), make(8));
                let (mut x, mut y, mut z) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..500 {
                    a.next_into(&mut x);
                    b.next_into(&mut y);
                    other.next_into(&mut z);
                }
                assert_eq!(x, y, "{kind} {size:?}");
                assert_ne!(x, z, "{kind} {size:?}: the seed changes nothing");
                // Random access gives the same record as the sequence.
                let mut one = Vec::new();
                make(7).record_into(321, &mut one);
                let mut sequence = make(7);
                sequence.seek(321);
                let mut from_seek = Vec::new();
                sequence.next_into(&mut from_seek);
                assert_eq!(one, from_seek);
            }
        }
    }

    #[test]
    fn every_record_is_one_line_of_valid_json_starting_with_its_seq() {
        for kind in CorpusKind::ALL {
            let mut corpus = Corpus::new(kind, 42);
            let mut record = Vec::new();
            let mut total = 0;
            // 20,000 records over one day: every hour of the diurnal curve.
            corpus = corpus.with_clock(DEFAULT_START_NS, 86_400_000_000_000 / 20_000);
            for seq in 0..20_000 {
                record.clear();
                corpus.next_into(&mut record);
                assert!(!record.contains(&b'\n'), "{kind}");
                let value = parse(&record);
                assert!(value.is_object(), "{kind}");
                assert_eq!(value["seq"], seq, "{kind}");
                assert_eq!(Corpus::seq_of(&record), Some(seq));
                total += record.len();
            }
            let mean = total / 20_000;
            let expected = match kind {
                CorpusKind::AccessLog => 140..=240,
                CorpusKind::Events => 280..=430,
                CorpusKind::Iot => 190..=250,
                CorpusKind::Random => 700..=880,
            };
            assert!(expected.contains(&mean), "{kind}: mean {mean} bytes");
        }
    }

    #[test]
    fn fields_look_like_what_they_claim_to_be() {
        let mut record = Vec::new();
        Corpus::new(CorpusKind::AccessLog, 1).record_at(
            5,
            DEFAULT_START_NS + 1_234_000_000,
            &mut record,
        );
        let access = parse(&record);
        assert_eq!(access["ts"], "2024-05-01T00:00:01.234Z");
        assert!(access["status"]
            .as_u64()
            .is_some_and(|s| (200..600).contains(&s)));
        assert!(access["req"].as_str().unwrap().contains(" /"));

        record.clear();
        Corpus::new(CorpusKind::Events, 1).record_into(9, &mut record);
        let event = parse(&record);
        assert!(event["user"]["id"].as_str().unwrap().starts_with("u-"));
        assert_eq!(event["trace"]["trace_id"].as_str().unwrap().len(), 32);
        assert!(event["data"].is_object());

        // Readings of one device at 15:00 are warmer than at 03:00.
        let corpus = Corpus::new(CorpusKind::Iot, 1);
        let at = |hour: u64, seq: u64| {
            let mut record = Vec::new();
            corpus.record_at(
                seq,
                DEFAULT_START_NS + hour * 3_600_000_000_000,
                &mut record,
            );
            parse(&record)
        };
        let (afternoon, night) = (at(15, 3 * DEVICES), at(3, 3 * DEVICES));
        assert_eq!(afternoon["device"], night["device"]);
        assert_eq!(
            afternoon["ts"],
            DEFAULT_START_NS / 1_000_000 + 15 * 3_600_000
        );
        let temp = |v: &serde_json::Value| v["temp_c"].as_f64().unwrap();
        assert!(temp(&afternoon) > temp(&night) + 4.0, "{afternoon} {night}");
        assert!(afternoon["battery"]["pct"].as_u64().unwrap() <= 100);

        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_709_210_096_789, "2024-02-29T12:34:56.789Z"),
        ] {
            let mut out = Vec::new();
            push_rfc3339_quoted(&mut out, ms * 1_000_000);
            assert_eq!(out, format!("\"{text}\"").into_bytes());
        }
        for (value, decimals, text) in [
            (2137, 2, "21.37"),
            (-5, 2, "-0.05"),
            (7, 0, "7"),
            (1013, 1, "101.3"),
        ] {
            let mut out = Vec::new();
            push_decimal(&mut out, value, decimals);
            assert_eq!(out, text.as_bytes());
        }
    }

    #[test]
    fn the_size_knob_gives_exact_sizes_and_keeps_the_fixed_fields() {
        for kind in CorpusKind::ALL {
            for target in [1, 60, 96, 100, 101, 110, 128, 230, 256, 1000, 4096] {
                let mut corpus = Corpus::new(kind, 3).with_record_bytes(target);
                let mut record = Vec::new();
                for seq in 0..300 {
                    record.clear();
                    corpus.next_into(&mut record);
                    let value = parse(&record);
                    assert_eq!(value["seq"], seq);
                    assert!(value.get("ts").is_some());
                    let kept = match kind {
                        CorpusKind::AccessLog => "status",
                        CorpusKind::Events => "event",
                        CorpusKind::Iot => "device",
                        CorpusKind::Random => "data",
                    };
                    assert!(value.get(kept).is_some(), "{kind} {target}: no {kept}");
                    // Exact once the kept fields fit (under 100 bytes).
                    if target >= 100 {
                        assert_eq!(
                            record.len(),
                            target,
                            "{kind}: {}",
                            String::from_utf8_lossy(&record)
                        );
                    } else {
                        assert!(record.len() <= target.max(100), "{kind} {target}");
                    }
                }
            }
        }
    }

    #[test]
    fn random_records_do_not_compress() {
        let mut corpus = Corpus::new(CorpusKind::Random, 5);
        let mut records = Vec::new();
        for _ in 0..2_000 {
            corpus.next_into(&mut records);
            records.push(b'\n');
        }
        let compressed = zstd::bulk::compress(&records, 3).expect("compresses");
        let ratio = records.len() as f64 / compressed.len() as f64;
        assert!(ratio < 1.4, "random records compressed {ratio:.2}×");
        let access: Vec<u8> = (0..2_000)
            .flat_map(|seq| {
                let mut record = Vec::new();
                Corpus::new(CorpusKind::AccessLog, 5).record_into(seq, &mut record);
                record
            })
            .collect();
        let access_ratio = access.len() as f64
            / zstd::bulk::compress(&access, 3).expect("compresses").len() as f64;
        assert!(access_ratio > 3.0 * ratio, "access_log {access_ratio:.2}×");
    }

    #[test]
    fn records_append_to_the_buffer() {
        let corpus = Corpus::new(CorpusKind::AccessLog, 0);
        let mut both = b"prefix".to_vec();
        corpus.record_into(0, &mut both);
        let mut alone = Vec::new();
        corpus.record_into(0, &mut alone);
        assert_eq!(&both[6..], alone.as_slice());
        assert_eq!(Corpus::seq_of(&alone), Some(0));
        assert_eq!(Corpus::seq_of(b"{\"seq\":x}"), None);
        assert_eq!("iot".parse::<CorpusKind>(), Ok(CorpusKind::Iot));
        assert!("csv".parse::<CorpusKind>().is_err());
    }
}

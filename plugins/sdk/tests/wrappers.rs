//! The SDK's exported wrappers called the way the host calls them, through
//! the descriptor's function pointers: outcomes, errors, panics caught at
//! the boundary, ownership of the replacement, the source's host table.
//! `.ci/run` also runs these under valgrind.

use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

use shipper_plugin::abi::{self, Descriptor, Record as RawRecord, Slice};
use shipper_plugin::{
    export_plugin, Action, Error, ErrorSlot, Record, SinkContext, SinkPlugin, SourceHost,
    SourcePlugin, TransformPlugin,
};

/// Keeps records with "keep", drops "drop", uppercases "up", fails on
/// "retry" and "fatal", panics on "panic".
struct Tester {
    prefix: String,
}

impl TransformPlugin for Tester {
    const NAME: &'static str = "tester";
    const VERSION: &'static str = "0.0.1";

    fn new(config: &str) -> Result<Self, Error> {
        if config.contains("refuse") {
            return Err(Error::fatal("refused: bad config"));
        }
        Ok(Tester {
            prefix: config.to_owned(),
        })
    }

    fn transform(&mut self, record: &Record<'_>, out: &mut Vec<u8>) -> Result<Action, Error> {
        match record.payload {
            b"keep" => Ok(Action::Keep),
            b"drop" => Ok(Action::Drop),
            b"up" => {
                out.extend_from_slice(self.prefix.as_bytes());
                out.extend_from_slice(record.stream.to_uppercase().as_bytes());
                Ok(Action::Replace)
            }
            b"retry" => Err(Error::retryable("try later")),
            b"fatal" => Err(Error::fatal("never")),
            _ => panic!("unexpected record {:?}", record.payload),
        }
    }
}

export_plugin!(transform Tester);

/// Calls `f` with an `ErrorOut`; returns its status and message.
fn with_error(f: impl FnOnce(*const abi::ErrorOut) -> i32) -> (i32, Option<String>) {
    let mut slot = ErrorSlot::default();
    let out = slot.out();
    let status = f(&out);
    (status, slot.take())
}

fn create(descriptor: &Descriptor, config: &str) -> (*mut c_void, Option<String>) {
    let mut slot = ErrorSlot::default();
    let out = slot.out();
    // SAFETY: a config borrowed for the call and a live error out.
    let instance = unsafe { (descriptor.create.unwrap())(Slice::of(config.as_bytes()), &out) };
    (instance, slot.take())
}

fn record<'a>(payload: &'a [u8], stream: &'a str) -> RawRecord {
    RawRecord {
        payload: Slice::of(payload),
        stream: Slice::of(stream.as_bytes()),
        timestamp_ns: 7,
        offset: 0,
    }
}

#[test]
fn the_exported_entry_describes_the_transform() {
    let descriptor = shipper_plugin_entry();
    // SAFETY: the macro's descriptor is a static.
    let descriptor = unsafe { &*descriptor };
    assert_eq!(descriptor.abi_version, abi::ABI_VERSION);
    assert_eq!(descriptor.size as usize, std::mem::size_of::<Descriptor>());
    assert_eq!(descriptor.kind, abi::KIND_TRANSFORM);
    // SAFETY: NUL-terminated statics.
    let (name, version) = unsafe {
        (
            CStr::from_ptr(descriptor.name),
            CStr::from_ptr(descriptor.version),
        )
    };
    assert_eq!(
        (name.to_str(), version.to_str()),
        (Ok("tester"), Ok("0.0.1"))
    );
    assert!(descriptor.transform.is_some());
    assert!(descriptor.sink_deliver.is_none() && descriptor.source_run.is_none());
}

#[test]
fn transform_outcomes_errors_and_a_caught_panic() {
    // SAFETY: the macro's descriptor is a static.
    let descriptor = unsafe { &*shipper_plugin_entry() };
    let (refused, message) = create(descriptor, "refuse");
    assert!(refused.is_null());
    assert_eq!(message.as_deref(), Some("refused: bad config"));

    let (instance, _) = create(descriptor, ">");
    assert!(!instance.is_null());
    let transform = descriptor.transform.unwrap();
    let call = |payload: &[u8]| {
        let mut action = u32::MAX;
        let mut replacement = Slice::EMPTY;
        let input = record(payload, "events");
        let (status, message) = with_error(|error| {
            // SAFETY: our instance, a record and out-pointers valid for the call.
            unsafe { transform(instance, &input, &mut action, &mut replacement, error) }
        });
        // SAFETY: valid until the next call on the instance (read right away).
        let replaced = unsafe { replacement.as_bytes() }.to_vec();
        (status, message, action, replaced)
    };
    assert_eq!(
        call(b"keep"),
        (abi::STATUS_OK, None, abi::ACTION_KEEP, vec![])
    );
    assert_eq!(
        call(b"drop"),
        (abi::STATUS_OK, None, abi::ACTION_DROP, vec![])
    );
    assert_eq!(
        call(b"up"),
        (
            abi::STATUS_OK,
            None,
            abi::ACTION_REPLACE,
            b">EVENTS".to_vec()
        )
    );
    assert_eq!(call(b"retry").0, abi::STATUS_RETRY);
    assert_eq!(call(b"retry").1.as_deref(), Some("try later"));
    assert_eq!(call(b"fatal").0, abi::STATUS_FATAL);
    let (status, message, _, _) = call(b"boom");
    assert_eq!(status, abi::STATUS_PANICKED);
    assert_eq!(
        message.as_deref(),
        Some("the plugin panicked: unexpected record [98, 111, 111, 109]")
    );
    // The instance still answers (the host would replace it; the SDK does
    // not make that necessary for memory safety).
    assert_eq!(call(b"up").3, b">EVENTS");
    // SAFETY: the instance came from `create` and is not used again.
    unsafe { (descriptor.destroy.unwrap())(instance) };
}

/// Records what it is given; fails the first delivery.
struct Collect {
    opened: Option<SinkContext>,
    seen: Vec<(u64, String, Vec<u8>)>,
    deliveries: usize,
}

impl SinkPlugin for Collect {
    const NAME: &'static str = "collect";
    const VERSION: &'static str = "1";

    fn new(_config: &str) -> Result<Self, Error> {
        Ok(Collect {
            opened: None,
            seen: Vec::new(),
            deliveries: 0,
        })
    }

    fn open(&mut self, context: &SinkContext) -> Result<(), Error> {
        self.opened = Some(context.clone());
        Ok(())
    }

    fn deliver(&mut self, records: &[Record<'_>]) -> Result<(), Error> {
        self.deliveries += 1;
        if self.deliveries == 1 {
            return Err(Error::retryable("backend down"));
        }
        self.seen.extend(
            records
                .iter()
                .map(|r| (r.offset, r.stream.to_owned(), r.payload.to_vec())),
        );
        Ok(())
    }
}

#[test]
fn a_sink_is_opened_given_records_and_its_errors_reported() {
    static NAME: [u8; 8] = *b"collect\0";
    let descriptor = shipper_plugin::export::sink_descriptor::<Collect>(
        NAME.as_ptr().cast(),
        NAME.as_ptr().cast(),
    );
    let (instance, _) = create(&descriptor, "{}");
    let context = abi::SinkContext {
        name: Slice::of(b"archive"),
        producer_id: Slice::of(b"p-1"),
        data_dir: Slice::of(b"/tmp/data"),
        committed: 41,
    };
    let (status, _) = with_error(|error| {
        // SAFETY: our instance and a context valid for the call.
        unsafe { (descriptor.sink_open.unwrap())(instance, &context, error) }
    });
    assert_eq!(status, abi::STATUS_OK);
    let payloads: [&[u8]; 3] = [b"a", b"bb", b""];
    let records: Vec<RawRecord> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawRecord {
            offset: 41 + i as u64,
            ..record(p, "s")
        })
        .collect();
    let deliver = |error| {
        // SAFETY: our instance and records valid for the call.
        unsafe {
            (descriptor.sink_deliver.unwrap())(instance, records.as_ptr(), records.len(), error)
        }
    };
    assert_eq!(
        with_error(deliver),
        (abi::STATUS_RETRY, Some("backend down".to_owned()))
    );
    assert_eq!(with_error(deliver), (abi::STATUS_OK, None));
    // SAFETY: the instance is a `Collect` (this test made it).
    let sink = unsafe { &*instance.cast::<Collect>() };
    assert_eq!(
        sink.opened,
        Some(SinkContext {
            name: "archive".into(),
            producer_id: "p-1".into(),
            data_dir: "/tmp/data".into(),
            committed: 41
        })
    );
    assert_eq!(
        sink.seen,
        [
            (41, "s".to_owned(), b"a".to_vec()),
            (42, "s".to_owned(), b"bb".to_vec()),
            (43, "s".to_owned(), vec![])
        ]
    );
    // SAFETY: the instance came from `create` and is not used again.
    unsafe { (descriptor.destroy.unwrap())(instance) };
}

/// Emits three records, waits for durability, and stops when asked.
struct Three;

impl SourcePlugin for Three {
    const NAME: &'static str = "three";
    const VERSION: &'static str = "1";

    fn new(_config: &str) -> Result<Self, Error> {
        Ok(Three)
    }

    fn run(&mut self, host: &SourceHost<'_>) -> Result<(), Error> {
        for n in 0..3 {
            host.emit("numbers", format!("{n}").as_bytes(), 100 + n)?;
        }
        host.wait_durable()?;
        if host.should_stop() {
            return Ok(());
        }
        // The fake host refuses a fourth record.
        host.emit("numbers", b"3", 103)
    }
}

/// What the fake host saw.
#[derive(Default)]
struct FakeHost {
    emitted: Vec<(String, Vec<u8>, u64)>,
    durable_calls: AtomicUsize,
}

unsafe extern "C" fn fake_emit(
    host: *mut c_void,
    stream: Slice,
    payload: Slice,
    timestamp_ns: u64,
    error: *const abi::ErrorOut,
) -> i32 {
    // SAFETY: the test passes a `FakeHost`; the slices are valid for the call.
    let (host, stream, payload) = unsafe {
        (
            &mut *host.cast::<FakeHost>(),
            stream.as_bytes(),
            payload.as_bytes(),
        )
    };
    if host.emitted.len() == 3 {
        // SAFETY: the SDK passes a live error out.
        unsafe { shipper_plugin::export::report(error, "the log is closed") };
        return abi::STATUS_FATAL;
    }
    host.emitted.push((
        String::from_utf8(stream.to_vec()).unwrap(),
        payload.to_vec(),
        timestamp_ns,
    ));
    abi::STATUS_OK
}

unsafe extern "C" fn fake_wait_durable(host: *mut c_void, _error: *const abi::ErrorOut) -> i32 {
    // SAFETY: the test passes a `FakeHost`.
    let host = unsafe { &*host.cast::<FakeHost>() };
    host.durable_calls.fetch_add(1, Ordering::Relaxed);
    abi::STATUS_OK
}

unsafe extern "C" fn fake_wait_stop(_host: *mut c_void, _timeout_ms: u64) -> i32 {
    0
}

#[test]
fn a_source_emits_through_the_host_and_returns_the_hosts_refusal() {
    static NAME: [u8; 6] = *b"three\0";
    let descriptor = shipper_plugin::export::source_descriptor::<Three>(
        NAME.as_ptr().cast(),
        NAME.as_ptr().cast(),
    );
    let (instance, _) = create(&descriptor, "{}");
    let mut fake = FakeHost::default();
    let host = abi::SourceHost {
        host: (&mut fake as *mut FakeHost).cast(),
        emit: fake_emit,
        wait_durable: fake_wait_durable,
        wait_stop: fake_wait_stop,
    };
    let (status, message) = with_error(|error| {
        // SAFETY: our instance and a host table alive for the call.
        unsafe { (descriptor.source_run.unwrap())(instance, &host, error) }
    });
    assert_eq!(
        (status, message.as_deref()),
        (abi::STATUS_FATAL, Some("the log is closed"))
    );
    assert_eq!(
        fake.emitted,
        [
            ("numbers".to_owned(), b"0".to_vec(), 100),
            ("numbers".to_owned(), b"1".to_vec(), 101),
            ("numbers".to_owned(), b"2".to_vec(), 102)
        ]
    );
    assert_eq!(fake.durable_calls.load(Ordering::Relaxed), 1);
    // SAFETY: the instance came from `create` and is not used again.
    unsafe { (descriptor.destroy.unwrap())(instance) };
}

//! shipper's embedded ingest API ([`shipper::ingest`]) as a C library:
//! `libshipper.so` with `include/shipper.h`, which documents every
//! function, the ownership of every pointer and the thread-safety.
//!
//! The unsafe code is the C boundary alone: turning the caller's pointers
//! into references for the length of a call, and the handle into a `Box`
//! and back. Every exported function catches panics (a panic unwinding
//! into C would abort the process) and reports them as
//! `SHIPPER_ERR_INTERNAL`.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use shipper::ingest::{Ingestor, InsertError};

/// `SHIPPER_ABI_VERSION` of `shipper.h`.
pub const ABI_VERSION: u32 = 1;

/// `shipper_status` of `shipper.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `SHIPPER_OK`.
    Ok = 0,
    /// `SHIPPER_ERR_ARGUMENT`.
    Argument = 1,
    /// `SHIPPER_ERR_CONFIG`.
    Config = 2,
    /// `SHIPPER_ERR_FULL`.
    Full = 3,
    /// `SHIPPER_ERR_STORAGE`.
    Storage = 4,
    /// `SHIPPER_ERR_TIMEOUT`.
    Timeout = 5,
    /// `SHIPPER_ERR_INTERNAL`.
    Internal = 6,
}

/// The handle C holds: `shipper_ingestor *`.
#[derive(Debug)]
pub struct ShipperIngestor {
    ingestor: Ingestor,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error and returns `status`.
fn fail(status: Status, message: impl std::fmt::Display) -> Status {
    let text = message.to_string().replace('\0', " ");
    LAST_ERROR.with(|last| *last.borrow_mut() = CString::new(text).unwrap_or_default());
    status
}

/// Runs `call`, clearing the last error first and turning a panic into
/// `SHIPPER_ERR_INTERNAL`.
fn guarded(call: impl FnOnce() -> Status) -> Status {
    LAST_ERROR.with(|last| *last.borrow_mut() = CString::default());
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(status) => status,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            fail(Status::Internal, format!("shipper panicked: {what}"))
        }
    }
}

/// Blocks on `future` on a runtime of this call's own (the C caller has
/// none; the ingestor's sinks run on the ingestor's).
fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, Status> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(Status::Internal, format!("starting a runtime: {e}")))?;
    Ok(runtime.block_on(future))
}

fn insert_error(error: &InsertError) -> Status {
    let status = match error {
        InsertError::Full => Status::Full,
        InsertError::Closed => Status::Argument,
        InsertError::Serialize(_) => Status::Argument,
        InsertError::Log(_) => Status::Storage,
    };
    fail(status, error)
}

/// Borrows a NUL-terminated UTF-8 string from C.
///
/// # Safety
/// `text` is NULL or points to a NUL-terminated string that stays valid
/// and unchanged for the call.
unsafe fn text<'a>(text: *const c_char, what: &str) -> Result<&'a str, Status> {
    if text.is_null() {
        return Err(fail(Status::Argument, format!("{what} is NULL")));
    }
    // SAFETY: not NULL (checked), and NUL-terminated and valid for the
    // call by the caller's contract (shipper.h).
    let text = unsafe { CStr::from_ptr(text) };
    text.to_str()
        .map_err(|e| fail(Status::Argument, format!("{what} is not UTF-8: {e}")))
}

/// Borrows the ingestor behind a handle.
///
/// # Safety
/// `handle` is NULL or a handle from `shipper_open` not yet closed.
unsafe fn ingestor<'a>(handle: *mut ShipperIngestor) -> Result<&'a Ingestor, Status> {
    if handle.is_null() {
        return Err(fail(Status::Argument, "the ingestor is NULL"));
    }
    // SAFETY: a live handle from `shipper_open` (the caller's contract):
    // a `Box` leaked there and only freed by `shipper_close`. Shared
    // references only: `Ingestor` is `Sync`, so concurrent calls are fine.
    Ok(unsafe { &(*handle).ingestor })
}

/// `shipper_abi_version`.
#[no_mangle]
pub extern "C" fn shipper_abi_version() -> u32 {
    ABI_VERSION
}

/// `shipper_open`; see `shipper.h`.
///
/// # Safety
/// `config_toml` is a NUL-terminated string; `out` points to writable
/// room for one pointer.
#[no_mangle]
pub unsafe extern "C" fn shipper_open(
    config_toml: *const c_char,
    out: *mut *mut ShipperIngestor,
) -> Status {
    guarded(|| {
        if out.is_null() {
            return fail(Status::Argument, "out is NULL");
        }
        // SAFETY: the caller's contract for `config_toml` (shipper.h).
        let config = match unsafe { text(config_toml, "config_toml") } {
            Ok(config) => config,
            Err(status) => return status,
        };
        match Ingestor::open_toml(config) {
            Ok(ingestor) => {
                let handle = Box::into_raw(Box::new(ShipperIngestor { ingestor }));
                // SAFETY: `out` is not NULL (checked) and writable by the
                // caller's contract.
                unsafe { out.write(handle) };
                Status::Ok
            }
            Err(error) => fail(Status::Config, format!("{error:#}")),
        }
    })
}

/// `shipper_insert`; see `shipper.h`.
///
/// # Safety
/// `ingestor` is a live handle, `stream` a NUL-terminated string, and
/// `record` points to `len` readable bytes (or is NULL with `len` 0).
#[no_mangle]
pub unsafe extern "C" fn shipper_insert(
    ingestor: *mut ShipperIngestor,
    stream: *const c_char,
    record: *const u8,
    len: usize,
) -> Status {
    guarded(|| {
        // SAFETY: the caller's contract for the handle and the string.
        let (ingestor, stream) = match unsafe { (self::ingestor(ingestor), text(stream, "stream")) }
        {
            (Ok(ingestor), Ok(stream)) => (ingestor, stream),
            (Err(status), _) | (_, Err(status)) => return status,
        };
        let record: &[u8] = if len == 0 {
            &[]
        } else if record.is_null() {
            return fail(Status::Argument, "record is NULL");
        } else {
            // SAFETY: not NULL (checked); `len` readable bytes that stay
            // unchanged for the call by the caller's contract. Copied
            // before the call returns.
            unsafe { std::slice::from_raw_parts(record, len) }
        };
        match ingestor.insert_bytes(stream, record) {
            Ok(()) => Status::Ok,
            Err(error) => insert_error(&error),
        }
    })
}

/// `shipper_flush`; see `shipper.h`.
///
/// # Safety
/// `ingestor` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn shipper_flush(ingestor: *mut ShipperIngestor) -> Status {
    guarded(|| {
        // SAFETY: the caller's contract for the handle.
        let ingestor = match unsafe { self::ingestor(ingestor) } {
            Ok(ingestor) => ingestor,
            Err(status) => return status,
        };
        match block_on(ingestor.flush()) {
            Ok(Ok(())) => Status::Ok,
            Ok(Err(error)) => insert_error(&error),
            Err(status) => status,
        }
    })
}

/// `shipper_wait_for_upload`; see `shipper.h`.
///
/// # Safety
/// `ingestor` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn shipper_wait_for_upload(
    ingestor: *mut ShipperIngestor,
    timeout_ms: u64,
) -> Status {
    guarded(|| {
        // SAFETY: the caller's contract for the handle.
        let ingestor = match unsafe { self::ingestor(ingestor) } {
            Ok(ingestor) => ingestor,
            Err(status) => return status,
        };
        match block_on(ingestor.wait_for_upload(Duration::from_millis(timeout_ms))) {
            Ok(Ok(true)) => Status::Ok,
            Ok(Ok(false)) => fail(
                Status::Timeout,
                format!("not every record was acknowledged within {timeout_ms} ms"),
            ),
            Ok(Err(error)) => insert_error(&error),
            Err(status) => status,
        }
    })
}

/// `shipper_close`; see `shipper.h`.
///
/// # Safety
/// `ingestor` is NULL or a live handle, which this call takes back: it
/// must not be used again.
#[no_mangle]
pub unsafe extern "C" fn shipper_close(ingestor: *mut ShipperIngestor) -> Status {
    guarded(|| {
        if ingestor.is_null() {
            return Status::Ok;
        }
        // SAFETY: a handle `shipper_open` leaked from a `Box`, given back
        // exactly once by the caller's contract.
        let handle = unsafe { Box::from_raw(ingestor) };
        match block_on(handle.ingestor.close()) {
            Ok(Ok(())) => Status::Ok,
            Ok(Err(error)) => fail(Status::Storage, format!("{error:#}")),
            Err(status) => status,
        }
    })
}

/// `shipper_last_error`; see `shipper.h`.
#[no_mangle]
pub extern "C" fn shipper_last_error() -> *const c_char {
    // The pointer stays valid until this thread's next call replaces the
    // string (shipper.h says so).
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

//! Request bodies: read with deadlines, admitted against a memory budget,
//! and held where their memory goes back to the system when they are done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ListenerLimits;

/// The budget is counted in units of this many bytes.
const UNIT: u64 = 1024;
/// Bodies at least this large get an anonymous memory map of their own.
const MAPPED_FROM: usize = 64 * 1024;
/// A body of unknown length takes budget in steps of this size.
const STEP: usize = 1 << 20;

/// Bytes that request bodies may hold at once, shared by the requests of
/// one listener.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total: u64,
}

/// A share of a [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl Reservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds `other` to this reservation.
    pub fn merge(&mut self, other: Reservation) {
        self.bytes += other.bytes;
        match (&mut self.permit, other.permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let units = units(bytes).clamp(1, Semaphore::MAX_PERMITS as u32);
        BodyBudget {
            units: Arc::new(Semaphore::new(units as usize)),
            total: u64::from(units) * UNIT,
        }
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> u64 {
        self.units.available_permits() as u64 * UNIT
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Reserves `bytes` at once, or `None` when the budget has not that
    /// much free now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        if bytes == 0 {
            return Some(Reservation {
                permit: None,
                bytes,
            });
        }
        let permit = self
            .units
            .clone()
            .try_acquire_many_owned(units(bytes))
            .ok()?;
        Some(Reservation {
            permit: Some(permit),
            bytes,
        })
    }

    /// Reserves `bytes`, waiting up to `patience` for room; `None` when
    /// there is none by then (or never can be: more than the budget).
    pub async fn reserve(&self, bytes: u64, patience: Duration) -> Option<Reservation> {
        if bytes > self.total {
            return None;
        }
        if let Some(reservation) = self.try_reserve(bytes) {
            return Some(reservation);
        }
        let wanted = units(bytes);
        let permit = tokio::time::timeout(patience, self.units.clone().acquire_many_owned(wanted))
            .await
            .ok()?
            .ok()?;
        Some(Reservation {
            permit: Some(permit),
            bytes,
        })
    }
}

/// Why a body was not taken: the status to answer and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `408`, `413` or `503` (with `Retry-After`), or `400`.
    pub status: StatusCode,
    /// Says what to do.
    pub message: String,
}

impl Refused {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refused {
            status,
            message: message.into(),
        }
    }
}

/// A growable byte buffer: on the heap while small, in an anonymous
/// memory map of its own when large, whose memory the system gets back
/// the moment it is dropped (the heap's allocator may keep freed memory
/// for ever, which after a burst of large requests looks like a leak).
#[derive(Debug)]
pub struct BodyBuffer {
    storage: Storage,
    len: usize,
}

#[derive(Debug)]
enum Storage {
    Heap(Vec<u8>),
    Mapped(memmap2::MmapMut),
}

impl BodyBuffer {
    /// A buffer for at most `capacity` bytes. A large capacity only
    /// reserves address space; memory is used as bytes are written.
    pub fn with_capacity(capacity: usize) -> std::io::Result<Self> {
        let storage = if capacity >= MAPPED_FROM {
            Storage::Mapped(memmap2::MmapMut::map_anon(capacity)?)
        } else {
            Storage::Heap(Vec::with_capacity(capacity))
        };
        Ok(BodyBuffer { storage, len: 0 })
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        match &self.storage {
            Storage::Heap(vec) => vec.capacity() - vec.len(),
            Storage::Mapped(map) => map.len() - self.len,
        }
    }

    /// Appends `bytes`; false (and nothing written) when they do not fit.
    pub fn extend(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.remaining() {
            return false;
        }
        match &mut self.storage {
            Storage::Heap(vec) => vec.extend_from_slice(bytes),
            Storage::Mapped(map) => map[self.len..self.len + bytes.len()].copy_from_slice(bytes),
        }
        self.len += bytes.len();
        true
    }

    /// The bytes, sharing the buffer (no copy), with `reservation` held
    /// until the last reference goes.
    pub fn freeze(self, reservation: Reservation) -> Bytes {
        Bytes::from_owner(Frozen {
            buffer: self,
            _reservation: reservation,
        })
    }
}

impl AsRef<[u8]> for BodyBuffer {
    fn as_ref(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(vec) => vec,
            Storage::Mapped(map) => &map[..self.len],
        }
    }
}

impl std::io::Write for BodyBuffer {
    /// Writes what fits; an error once full, so a decoder writing into it
    /// stops at its capacity.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(self.remaining());
        if n == 0 && !bytes.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "body buffer full",
            ));
        }
        self.extend(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Frozen {
    buffer: BodyBuffer,
    _reservation: Reservation,
}

impl AsRef<[u8]> for Frozen {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The declared `Content-Length`, if any. A value that is not a number is
/// refused by the HTTP layer before a handler runs.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn budget_spent(budget: &BodyBudget) -> Refused {
    Refused::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the receiver holds as many request bodies as it may ({} bytes); send it again shortly",
            budget.total()
        ),
    )
}

/// How long a refused request's body is read and thrown away, so that its
/// client, still sending it, gets to read the answer instead of a reset.
const DISCARD_FOR: Duration = Duration::from_secs(2);

/// Reads and throws away what is left of a refused request's body, for at
/// most two seconds and `most` bytes: a client that is still sending then
/// finishes and reads the answer (closing with unread bytes would reset
/// the connection under it). Costs no memory.
pub async fn discard(body: &mut axum::body::Body, most: usize) {
    let mut left = most;
    let _ = tokio::time::timeout(DISCARD_FOR, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if data.len() >= left {
                    return;
                }
                left -= data.len();
            }
        }
    })
    .await;
}

/// Reads a request body of at most `max` bytes within the listener's
/// deadlines and memory budget (see the module docs of `listen`). On a
/// refusal the rest of the body is left unread in `body` (see
/// [`discard`]).
pub async fn read_body(
    body: &mut axum::body::Body,
    headers: &HeaderMap,
    max: usize,
    limits: &ListenerLimits,
    budget: &BodyBudget,
) -> Result<Bytes, Refused> {
    let declared = content_length(headers);
    if let Some(declared) = declared {
        if declared > max as u64 {
            return Err(Refused::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body ({declared} bytes) is larger than {max} bytes"),
            ));
        }
    }
    let (mut reservation, capacity) = match declared {
        Some(declared) => (
            budget
                .reserve(declared, limits.budget_wait)
                .await
                .ok_or_else(|| budget_spent(budget))?,
            declared as usize,
        ),
        None => (
            budget
                .reserve(STEP.min(max) as u64, limits.budget_wait)
                .await
                .ok_or_else(|| budget_spent(budget))?,
            max,
        ),
    };
    let mut buffer = BodyBuffer::with_capacity(capacity).map_err(|e| {
        Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no memory for the body: {e}"),
        )
    })?;
    let started = Instant::now();
    loop {
        let frame = match tokio::time::timeout(limits.body_timeout, body.frame()).await {
            Err(_) => {
                return Err(Refused::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("no part of the body arrived for {:?}", limits.body_timeout),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body: {error}"),
                ))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = buffer.len() + data.len();
        if total > max {
            return Err(Refused::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {max} bytes"),
            ));
        }
        if declared.is_some_and(|declared| total as u64 > declared) {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                "the body is longer than its Content-Length",
            ));
        }
        while (total as u64) > reservation.bytes() {
            let more = budget
                .try_reserve(STEP as u64)
                .ok_or_else(|| budget_spent(budget))?;
            reservation.merge(more);
        }
        if !buffer.extend(&data) {
            return Err(Refused::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {max} bytes"),
            ));
        }
        let elapsed = started.elapsed();
        if elapsed > limits.body_timeout
            && (buffer.len() as f64) < limits.min_body_rate as f64 * elapsed.as_secs_f64()
        {
            return Err(Refused::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body arrives slower than {} bytes per second",
                    limits.min_body_rate
                ),
            ));
        }
    }
    Ok(buffer.freeze(reservation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_gives_back_what_a_dropped_body_held() {
        let budget = BodyBudget::new(1 << 20);
        let reservation = budget.try_reserve(700 << 10).unwrap();
        assert!(budget.try_reserve(700 << 10).is_none(), "over the budget");
        let mut buffer = BodyBuffer::with_capacity(700 << 10).unwrap();
        assert!(buffer.extend(&[7; 700 << 10]));
        assert!(!buffer.extend(&[7]), "full");
        let bytes = buffer.freeze(reservation);
        let shared = bytes.slice(10..20);
        drop(bytes);
        assert!(
            budget.try_reserve(700 << 10).is_none(),
            "a slice still holds it"
        );
        assert_eq!(&shared[..], &[7; 10]);
        drop(shared);
        assert_eq!(budget.available(), budget.total());
    }

    #[test]
    fn small_bodies_stay_on_the_heap_and_large_ones_in_maps() {
        for size in [0, 100, MAPPED_FROM - 1, MAPPED_FROM, 1 << 20] {
            let mut buffer = BodyBuffer::with_capacity(size).unwrap();
            let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
            assert!(buffer.extend(&data));
            assert_eq!(buffer.as_ref(), &data[..], "{size}");
            assert_eq!(
                matches!(buffer.storage, Storage::Mapped(_)),
                size >= MAPPED_FROM,
                "{size}"
            );
        }
    }
}

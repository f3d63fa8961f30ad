//! What every listener of shipper shares: the `http` and `shipper`
//! sources, the stream side of the `socket` source and the admin endpoint.
//!
//! * **Connections are capped** twice: per listener (`max_connections`)
//!   and for the whole process, below its open-files limit
//!   ([`process_connection_slots`]), so no number of clients can take the
//!   descriptors the log needs.
//! * **Every connection has deadlines**: an HTTP request's head must arrive
//!   within `header_timeout` (which also closes a keep-alive connection
//!   that sends nothing for that long), its body must keep coming
//!   (`body_timeout` between two pieces, and on average at least
//!   `min_body_rate` once `body_timeout` has passed); a stream socket that
//!   sends nothing for `idle_timeout` is closed.
//! * **Request bodies are admitted against a memory budget**
//!   (`max_buffered_bytes`, [`body::BodyBudget`]): a request whose body
//!   does not fit waits briefly for room and is otherwise answered `503`
//!   with `Retry-After`. Large bodies live in anonymous memory maps of
//!   their own, so their memory goes back to the system as soon as the
//!   request ends, whatever the allocator would keep.
//!
//! Worst case memory of one HTTP listener: `max_buffered_bytes` for bodies
//! (decompressed bodies included), plus about 100 KiB per connection for
//! its read buffer and headers (`max_connections` of them).

pub mod auth;
pub mod body;
pub mod config;
pub mod http;
mod slots;

use std::time::Duration;

pub use slots::{process_connection_slots, ConnectionSlot, ConnectionSlots, RESERVED_FDS};

/// The limits of one listener; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// HTTP: the longest a request's head may take to arrive, counted
    /// from the start of the request (or, on a keep-alive connection, from
    /// the end of the previous answer).
    pub header_timeout: Duration,
    /// HTTP: the longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// HTTP: once `body_timeout` has passed, a body must have arrived at
    /// least this fast on average (bytes per second).
    pub min_body_rate: u64,
    /// Stream sockets: a connection that sends nothing for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// HTTP: request bodies held in memory at once, in bytes.
    pub max_buffered_bytes: u64,
    /// HTTP: how long a request waits for room in `max_buffered_bytes`
    /// before it is answered `503`.
    pub budget_wait: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            min_body_rate: 16 * 1024,
            idle_timeout: Duration::from_secs(300),
            max_buffered_bytes: 256 << 20,
            budget_wait: Duration::from_secs(1),
        }
    }
}

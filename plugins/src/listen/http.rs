//! Serving an axum router over HTTP/1.1 with the listener's limits: a
//! connection cap (a connection over it gets `503` and is closed), TLS
//! when the listener has a `tls` table (the handshake within the header
//! deadline), a deadline for each request's head that also closes idle
//! keep-alive connections, and a graceful stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use shipper_core::component::Shutdown;
use shipper_core::metrics::{counters_of, ComponentMetric};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{ConnectionSlots, ListenerLimits};
use crate::throttle::Throttle;
use crate::tls::ServerTls;

/// How long open requests get to finish once the listener stops.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Connections over the cap being answered `503` at once; more are closed
/// without an answer (each answer holds a descriptor for up to a second).
const MAX_REFUSING: usize = 64;
/// A connection's read buffer at most: a request head must fit (64 KiB,
/// where the usual one is a few hundred bytes); bodies stream through it.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// What a listener counts.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections refused at the connection cap (answered `503`).
    pub refused: AtomicU64,
    /// Connections closed for a deadline: a request head or body too slow.
    pub timed_out: AtomicU64,
    /// Connections whose TLS handshake failed (a plaintext client, an
    /// unknown or missing client certificate, no common version).
    pub tls_failed: AtomicU64,
}

impl ListenerStats {
    /// The listener's metrics, for a component's `metrics()`.
    pub fn metrics(self: &Arc<Self>) -> Vec<ComponentMetric> {
        counters_of(
            self,
            &[
                (
                    "shipper_source_connections_total",
                    "Connections accepted.",
                    &[],
                    |c| &c.accepted,
                ),
                (
                    "shipper_source_connections_refused_total",
                    "Connections refused at the connection cap.",
                    &[],
                    |c| &c.refused,
                ),
                (
                    "shipper_source_connections_closed_total",
                    "Connections the source closed: a request head not complete within header_timeout (also an idle keep-alive connection).",
                    &[("reason", "timeout")],
                    |c| &c.timed_out,
                ),
                (
                    "shipper_source_connections_closed_total",
                    "Connections the source closed: a request head not complete within header_timeout (also an idle keep-alive connection).",
                    &[("reason", "tls_handshake")],
                    |c| &c.tls_failed,
                ),
            ],
        )
    }
}

/// Requests an HTTP listener answered, by outcome.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// Answered 2xx.
    pub accepted: AtomicU64,
    /// Refused for want of credentials (401, 403).
    pub unauthorized: AtomicU64,
    /// Refused for what they hold: headers, body, frames (400, 415, 422...).
    pub invalid: AtomicU64,
    /// Refused for their size (413).
    pub too_large: AtomicU64,
    /// Refused because their body came too slowly (408).
    pub too_slow: AtomicU64,
    /// Refused because they contradict the receiver's state (409).
    pub conflict: AtomicU64,
    /// Refused for want of room or because the receiver is stopping (429,
    /// 503).
    pub unavailable: AtomicU64,
}

impl RequestStats {
    /// Counts one request answered with `status`.
    pub fn count(&self, status: axum::http::StatusCode) {
        let counter = match status.as_u16() {
            200..=299 => &self.accepted,
            401 | 403 => &self.unauthorized,
            408 => &self.too_slow,
            409 => &self.conflict,
            413 => &self.too_large,
            429 | 503 => &self.unavailable,
            _ => &self.invalid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as `shipper_source_requests_total{outcome=...}`.
    pub fn metrics(self: &Arc<Self>) -> Vec<ComponentMetric> {
        const NAME: &str = "shipper_source_requests_total";
        const HELP: &str = "Requests answered, by outcome.";
        counters_of(
            self,
            &[
                (NAME, HELP, &[("outcome", "accepted")], |c| &c.accepted),
                (NAME, HELP, &[("outcome", "unauthorized")], |c| {
                    &c.unauthorized
                }),
                (NAME, HELP, &[("outcome", "invalid")], |c| &c.invalid),
                (NAME, HELP, &[("outcome", "too_large")], |c| &c.too_large),
                (NAME, HELP, &[("outcome", "too_slow")], |c| &c.too_slow),
                (NAME, HELP, &[("outcome", "conflict")], |c| &c.conflict),
                (NAME, HELP, &[("outcome", "unavailable")], |c| {
                    &c.unavailable
                }),
            ],
        )
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop`, then
/// lets open requests finish for a while. `name` names the listener in
/// log lines.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ListenerLimits,
    counters: Arc<ListenerStats>,
    name: String,
    tls: Option<Arc<ServerTls>>,
    stop: Shutdown,
) {
    let handshake_failures = Arc::new(Throttle::default());
    let slots = ConnectionSlots::new(limits.max_connections);
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let refusals = Arc::new(Throttle::default());
    let accept_errors = Throttle::default();
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most likely: the connection
                    // waits in the backlog until one is free.
                    if let Some(suppressed) = accept_errors.allow() {
                        tracing::warn!(listener = %name, %error, suppressed, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.wait() => break,
        };
        while connections.try_join_next().is_some() {}
        let Some(slot) = slots.try_acquire() else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = refusals.allow() {
                tracing::warn!(
                    listener = %name,
                    %peer,
                    max_connections = limits.max_connections,
                    suppressed,
                    "connection refused: max_connections reached (or the process's open-files limit)"
                );
            }
            if let Ok(answering) = refusing.clone().try_acquire_owned() {
                connections.spawn(async move {
                    refuse(stream).await;
                    drop(answering);
                });
            }
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let service = TowerToHyperService::new(router.clone());
        let (stop, counters, header_timeout) =
            (stop.clone(), counters.clone(), limits.header_timeout);
        let (tls, handshake_failures, name) =
            (tls.clone(), handshake_failures.clone(), name.clone());
        connections.spawn(async move {
            match tls {
                None => serve_connection(stream, service, header_timeout, &counters, &stop).await,
                Some(tls) => {
                    let handshake = tokio::time::timeout(header_timeout, tls.acceptor().accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, service, header_timeout, &counters, &stop).await;
                        }
                        Ok(Err(error)) => {
                            counters.tls_failed.fetch_add(1, Ordering::Relaxed);
                            if let Some(suppressed) = handshake_failures.allow() {
                                tracing::warn!(
                                    listener = %name,
                                    %peer,
                                    %error,
                                    suppressed,
                                    "TLS handshake failed; connection closed (a plaintext client, or a client certificate that is missing, expired or not from tls.ca_file)"
                                );
                            }
                        }
                        Err(_) => {
                            counters.timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            drop(slot);
        });
    }
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// Serves HTTP/1.1 on one accepted connection until it closes, or
/// gracefully after `stop`.
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<axum::Router>,
    header_timeout: Duration,
    counters: &ListenerStats,
    stop: &Shutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_READ_BUFFER)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        () = stop.wait() => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(STOP_GRACE, connection.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(error) = outcome {
        if error.is_timeout() {
            counters.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Answers `503` on a connection over the cap and closes it, without
/// reading the request (a client that does not read gets a reset).
async fn refuse(mut stream: TcpStream) {
    const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
        Retry-After: 1\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Length: 44\r\n\
        Connection: close\r\n\r\n\
        too many connections; try again in a moment\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(ANSWER).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The address a listener bound, for log lines.
pub fn describe(listener: &TcpListener) -> String {
    listener.local_addr().map_or_else(
        |_| "?".to_owned(),
        |address: SocketAddr| address.to_string(),
    )
}

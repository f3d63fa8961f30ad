//! The admin endpoint, on loopback by default: `/health` (200 when ready,
//! 503 with the reason when not), Prometheus `/metrics` (the process's
//! metrics [`Registry`], rendered; it knows no component) and `POST
//! /reload` (re-read the config file; see `runtime::ReloadOutcome` for the
//! answers).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use shipper_components::listen::ListenerLimits;
use shipper_core::component::Shutdown;
use shipper_core::log::Log;
use shipper_core::metrics::Registry;

use crate::runtime::reload::{ReloadHandle, ReloadTrigger};

/// What the endpoint reports on, and where it sends reloads.
#[derive(Debug)]
pub struct AdminState {
    /// The log.
    pub log: Log,
    /// Every metric of the process.
    pub registry: Registry,
    reload: ReloadHandle,
}

impl AdminState {
    /// A state reporting `registry`'s metrics and `log`'s health.
    pub fn new(log: Log, registry: Registry, reload: ReloadHandle) -> Self {
        AdminState {
            log,
            registry,
            reload,
        }
    }
}

/// Serves the endpoint on `listener` until `stop` is triggered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    tls: Option<Arc<shipper_components::tls::ServerTls>>,
    stop: Shutdown,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .with_state(state);
    // Monitoring scrapes and a reload now and then: a few connections,
    // short deadlines, no request bodies to speak of.
    let limits = ListenerLimits {
        max_connections: 64,
        header_timeout: std::time::Duration::from_secs(10),
        body_timeout: std::time::Duration::from_secs(10),
        max_buffered_bytes: 1 << 20,
        ..ListenerLimits::default()
    };
    shipper_components::listen::http::serve(
        listener,
        router,
        limits,
        Arc::default(),
        "admin endpoint".to_owned(),
        tls,
        stop,
    )
    .await;
    Ok(())
}

async fn health(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let (status, body) = if let Some(reason) = state.log.poisoned() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{{\"status\":\"not ready\",\"reason\":{}}}",
                json_string(&format!("log writer stopped: {reason}"))
            ),
        )
    } else if state.log.disk_full() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"not ready\",\"reason\":\"disk full: no room for a new segment; appends wait until space is freed\"}".to_owned(),
        )
    } else if state.log.is_full() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"not ready\",\"reason\":\"disk budget reached: appends wait until sinks catch up\"}".to_owned(),
        )
    } else {
        (StatusCode::OK, "{\"status\":\"ready\"}".to_owned())
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// `POST /reload`: the pipeline re-reads its config file; the answer is
/// the reload's outcome, as text, with its status.
async fn reload(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let (status, body) = match state.reload.reload(ReloadTrigger::Api).await {
        Some(outcome) => (
            StatusCode::from_u16(outcome.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("{outcome}\n"),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not reloading: shipper is shutting down\n".to_owned(),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let state = state.clone();
    // Lag needs a read of the log: keep it off the async workers' queue.
    let body = tokio::task::spawn_blocking(move || state.registry.render())
        .await
        .unwrap_or_else(|e| format!("# metrics failed: {e}\n"));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

//! The admin endpoint, on loopback by default: `/health` (200 when ready,
//! 503 with the reason when not), Prometheus `/metrics` (the process's
//! metrics [`Registry`], rendered; it knows no component) and `POST
//! /reload` (re-read the config file; see `runtime::ReloadOutcome` for the
//! answers).
//!
//! Who may ask ([`Access`]): `/health` anyone. With an `auth` table,
//! `POST /reload` needs its token, and so does `/metrics` when the
//! endpoint listens beyond loopback. Beyond loopback without `auth`,
//! `POST /reload` is refused (403) unless the endpoint verifies client
//! certificates (`tls.verify_client`): a connection that got in is
//! authenticated.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use shipper_components::listen::auth::Authenticator;
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
    access: Access,
}

/// Who may use the endpoints that read metrics or change something.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The tokens of `[admin] auth`.
    pub auth: Option<Arc<Authenticator>>,
    /// The endpoint listens on a loopback address only.
    pub loopback: bool,
    /// Every connection presented a client certificate of `tls.ca_file`.
    pub mutual_tls: bool,
}

impl Access {
    /// `None` when a request with `headers` may read `/metrics`, else
    /// the refusal.
    fn read(&self, headers: &HeaderMap) -> Option<(StatusCode, &'static str)> {
        match &self.auth {
            Some(auth)
                if !self.loopback && auth.check(headers.get(header::AUTHORIZATION)).is_none() =>
            {
                Some((
                    StatusCode::UNAUTHORIZED,
                    "a valid bearer token is required\n",
                ))
            }
            _ => None,
        }
    }

    /// `None` when a request with `headers` may change something (`POST
    /// /reload`), else the refusal.
    fn change(&self, headers: &HeaderMap) -> Option<(StatusCode, &'static str)> {
        match &self.auth {
            Some(auth) => auth
                .check(headers.get(header::AUTHORIZATION))
                .is_none()
                .then_some((StatusCode::UNAUTHORIZED, "a valid bearer token is required\n")),
            None if !self.loopback && !self.mutual_tls => Some((
                StatusCode::FORBIDDEN,
                "the admin endpoint listens beyond loopback: POST /reload needs [admin] auth (a token) or tls.verify_client\n",
            )),
            None => None,
        }
    }
}

fn refusal(status: StatusCode, message: &'static str) -> axum::response::Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

impl AdminState {
    /// A state reporting `registry`'s metrics and `log`'s health.
    pub fn new(log: Log, registry: Registry, reload: ReloadHandle, access: Access) -> Self {
        AdminState {
            log,
            registry,
            reload,
            access,
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
async fn reload(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> axum::response::Response {
    if let Some((status, message)) = state.access.change(&headers) {
        return refusal(status, message);
    }
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
        .into_response()
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

async fn metrics(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> axum::response::Response {
    if let Some((status, message)) = state.access.read(&headers) {
        return refusal(status, message);
    }
    let state = state.clone();
    // Lag needs a read of the log: keep it off the async workers' queue.
    let body = tokio::task::spawn_blocking(move || state.registry.render())
        .await
        .unwrap_or_else(|e| format!("# metrics failed: {e}\n"));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipper_components::listen::auth::InboundAuth;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn who_may_read_metrics_and_reload() {
        let token = Some(Arc::new(
            Authenticator::new(&InboundAuth::bearer("adm1n")).unwrap(),
        ));
        let (none, right, wrong) = (
            headers(None),
            headers(Some("Bearer adm1n")),
            headers(Some("Bearer nope")),
        );
        let access = |auth: &Option<Arc<Authenticator>>, loopback, mutual_tls| Access {
            auth: auth.clone(),
            loopback,
            mutual_tls,
        };
        let status =
            |refusal: Option<(StatusCode, &str)>| refusal.map(|(status, _)| status.as_u16());

        // Loopback, no auth: everything open, as before.
        let local = access(&None, true, false);
        assert_eq!(status(local.read(&none)), None);
        assert_eq!(status(local.change(&none)), None);
        // Loopback with auth: metrics open, reload needs the token.
        let local = access(&token, true, false);
        assert_eq!(status(local.read(&none)), None);
        assert_eq!(status(local.change(&none)), Some(401));
        assert_eq!(status(local.change(&wrong)), Some(401));
        assert_eq!(status(local.change(&right)), None);
        // Beyond loopback with auth: both need the token.
        let remote = access(&token, false, false);
        assert_eq!(status(remote.read(&none)), Some(401));
        assert_eq!(status(remote.read(&right)), None);
        assert_eq!(status(remote.change(&right)), None);
        // Beyond loopback without auth: no reload, unless mutual TLS.
        let remote = access(&None, false, false);
        assert_eq!(status(remote.read(&none)), None);
        assert_eq!(status(remote.change(&none)), Some(403));
        assert_eq!(status(access(&None, false, true).change(&none)), None);
    }
}

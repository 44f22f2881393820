//! The admin HTTP API (JSON on `[admin] listen`) and the client the CLI uses to call it.
//!
//! Each module that has something to show or control builds its own `axum::Router` and
//! the server merges them with [`router`] before calling [`serve`]:
//! ```ignore
//! let routes = admin::router(state.clone()).merge(registrar::admin_routes(registrar));
//! let server = admin::serve(config.admin.listen, routes, shutdown).await?;
//! ```
//! Conventions for every endpoint: paths under `/api/`, JSON bodies, errors as
//! `{"error": "..."}` (use [`ApiError`]) so the CLI can print them. A path nobody serves
//! answers 404 with a "not available yet" message, which the CLI shows as it is.

pub mod client;

use crate::config::{Config, Listen};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Serialize, Serializer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::task::JoinHandle;

/// A monotonically increasing count, cheap enough to bump on every packet: one relaxed
/// atomic add, no lock.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get())
    }
}

/// Server-wide counters, shared by `Arc` with the transports and the SIP core. A new
/// counter is one new field: it shows up in `/api/status` by itself.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// SIP messages received (datagrams or framed stream messages).
    pub messages_in: Counter,
    /// SIP messages sent, retransmissions included.
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Received messages that failed to parse (answered 400 or dropped).
    pub parse_errors: Counter,
    /// Packets dropped without an answer: malformed responses, banned sources, scanners.
    pub dropped: Counter,
}

/// What `/api/status` reports, fixed at start-up except for the counters and uptime.
#[derive(Debug)]
pub struct AdminState {
    pub stats: Arc<Stats>,
    started: Instant,
    config: String,
    listeners: Vec<Listen>,
    extensions: usize,
    secrets_file: PathBuf,
}

impl AdminState {
    /// `listeners` are the addresses actually bound (with real ports when the config
    /// asked for port 0), so tests and admins see where the server is reachable.
    pub fn new(config: &Config, listeners: Vec<Listen>) -> AdminState {
        AdminState {
            stats: Arc::default(),
            started: Instant::now(),
            config: config.origin.to_string(),
            listeners,
            extensions: config.extensions.len(),
            secrets_file: config.secrets_path(),
        }
    }

    pub fn status(&self) -> Status<'_> {
        Status {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            config: &self.config,
            listeners: &self.listeners,
            extensions: self.extensions,
            secrets_file: &self.secrets_file,
            tasks: tokio::runtime::Handle::try_current()
                .ok()
                .map(|h| h.metrics().num_alive_tasks()),
            counters: &self.stats,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Status<'a> {
    pub version: &'static str,
    pub pid: u32,
    pub uptime_secs: u64,
    pub config: &'a str,
    pub listeners: &'a [Listen],
    pub extensions: usize,
    /// Where generated extension passwords are; `switchboard secrets` prints them.
    pub secrets_file: &'a std::path::Path,
    /// Live tokio tasks (listeners, shards, one relay per bridged call, admin
    /// connections): equal before and after a run of calls, or something leaked.
    pub tasks: Option<usize>,
    pub counters: &'a Stats,
}

/// The core admin routes; merge other modules' routers into the result.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .with_state(state)
}

async fn status(State(state): State<Arc<AdminState>>) -> Response {
    Json(state.status()).into_response()
}

/// An error answer in the shape the CLI expects: `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

async fn not_available(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "{method} {} is not available yet in switchboard {}",
            uri.path(),
            env!("CARGO_PKG_VERSION")
        ),
    }
}

/// A running admin API server.
#[derive(Debug)]
pub struct AdminServer {
    /// The bound address (the real port when `admin.listen` asked for port 0).
    pub local_addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    /// Waits until the server has stopped after the shutdown signal and finished the
    /// requests in flight.
    pub async fn finished(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Binds `listen` and serves `routes` until `shutdown` completes. Binding happens before
/// this returns, so a busy port is a start-up error naming the address.
pub async fn serve(
    listen: SocketAddr,
    routes: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<AdminServer> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("admin.listen {listen}: {e}")))?;
    let local_addr = listener.local_addr()?;
    if !local_addr.ip().is_loopback() {
        tracing::warn!(%local_addr, "the admin API has no authentication and listens beyond loopback");
    }
    let app = routes.fallback(not_available);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    tracing::info!(%local_addr, "admin API listening");
    Ok(AdminServer { local_addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    #[test]
    fn status_reports_listeners_and_live_counters() {
        let config =
            Config::parse("[extensions.1000]\n[extensions.1001]\n", Origin::Embedded).unwrap();
        let state = AdminState::new(&config, config.sip.listen.clone());
        state.stats.messages_in.inc();
        state.stats.bytes_in.add(512);
        let json = serde_json::to_value(state.status()).unwrap();
        assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            json["listeners"],
            serde_json::json!(["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"])
        );
        assert_eq!(json["extensions"], 2);
        assert_eq!(json["config"], "embedded default config");
        assert_eq!(json["counters"]["messages_in"], 1);
        assert_eq!(json["counters"]["bytes_in"], 512);
        assert_eq!(json["counters"]["parse_errors"], 0);
        assert!(json["uptime_secs"].is_u64());
    }
}

//! The admin endpoint on `admin.listen`: `GET /healthz` (503 once a source or sink task died),
//! `GET /readyz` (503 with the sources not open yet), `GET /metrics` (Prometheus text 0.0.4, or
//! OpenMetrics when the `Accept` header asks for it), `GET /status.json` (a
//! [`snapshot::Snapshot`]) and `GET /` (the same as a page). Bound once at start and kept across reloads (a changed `admin.listen` needs a restart). What
//! describes files (dead letters waiting, lag, journal sizes) is computed when asked, so it is
//! never stale and costs nothing between requests.

mod chart;
mod page;
pub mod snapshot;

use crate::checkpoint::CheckpointBook;
use crate::health::Health;
use crate::journal::Journal;
use crate::listen;
use crate::metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What the endpoint reports on: the running config's state directory, sources and sinks, and
/// the positions acknowledged so far.
#[derive(Clone, Default)]
pub struct View {
    pub state_dir: PathBuf,
    pub sources: Vec<SourceView>,
    pub sinks: Vec<SinkView>,
    pub book: Option<Arc<CheckpointBook>>,
}

#[derive(Clone)]
pub struct SourceView {
    pub name: String,
    /// `file`, `socket` or `http`.
    pub kind: &'static str,
    /// The file, socket path or listening address.
    pub address: String,
    pub follows: Follows,
}

/// What a source reads lines from.
#[derive(Clone)]
pub enum Follows {
    File(PathBuf),
    Journal(Journal),
}

#[derive(Clone)]
pub struct SinkView {
    pub name: String,
    /// `webhook`, `file` or `stdout`.
    pub kind: &'static str,
    /// Where it delivers, safe to show.
    pub target: String,
}

/// The view, replaced on every reload.
pub type Shared = Arc<RwLock<View>>;

/// Pages and scrapes (which read files) served at once; more wait. Probes take no slot.
const SNAPSHOTS: usize = 16;

/// Serves the endpoint until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    view: Shared,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%address, "admin endpoint: / /status.json /metrics /healthz /readyz");
    let slots = Arc::new(Semaphore::new(SNAPSHOTS));
    let service = service_fn(move |req| {
        let (view, health, slots) = (view.clone(), health.clone(), slots.clone());
        async move { Ok::<_, Infallible>(answer(req, &view, &health, &slots).await) }
    });
    let limits = listen::Limits {
        connections: listen::CONNECTIONS,
        grace: Duration::ZERO,
        // Probes first: a connection is never kept waiting for a scrape to end.
        cut_busy: true,
    };
    listen::serve(&listener, "admin".into(), (limits, None), service, stop).await;
}

async fn answer(
    req: Request<Incoming>,
    view: &Shared,
    health: &Arc<Health>,
    slots: &Semaphore,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
        r
    };
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => match health.liveness() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(dead) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                serde_json::json!({"dead": dead}).to_string() + "\n",
            ),
        },
        "/readyz" => match health.readiness() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(waiting) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                serde_json::json!({"waiting_for_sources": waiting}).to_string() + "\n",
            ),
        },
        "/metrics" => {
            let accept = req.headers().get(header::ACCEPT);
            let format = metrics::Format::negotiate(accept.and_then(|v| v.to_str().ok()));
            // The computed gauges are set from a snapshot.
            if snapshot_of(view, health, slots).await.is_none() {
                return unavailable();
            }
            reply(
                StatusCode::OK,
                format.content_type(),
                metrics::get().encode(format),
            )
        }
        "/status.json" => {
            let Some(taken) = snapshot_of(view, health, slots).await else {
                return unavailable();
            };
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&taken).unwrap_or_default() + "\n",
            )
        }
        "/" => {
            let Some(taken) = snapshot_of(view, health, slots).await else {
                return unavailable();
            };
            reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::render(&taken),
            )
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /, /status.json, /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// The answer when no snapshot could be taken (the runtime is shutting down).
fn unavailable() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(
        b"busy or shutting down; try again\n",
    )));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r
}

/// A snapshot, taken on a blocking thread (it reads files) once a slot is free.
async fn snapshot_of(
    view: &Shared,
    health: &Arc<Health>,
    slots: &Semaphore,
) -> Option<snapshot::Snapshot> {
    // A scrape that cannot have a slot soon is answered 503, not kept waiting.
    let _slot = tokio::time::timeout(Duration::from_secs(1), slots.acquire())
        .await
        .ok()?
        .ok()?;
    let view = view.read().map(|v| v.clone()).unwrap_or_default();
    let health = health.clone();
    tokio::task::spawn_blocking(move || snapshot::take(&view, &health))
        .await
        .ok()
}

//! The admin endpoint on `admin.listen`: `GET /healthz` (503 once a source or sink task died),
//! `GET /readyz` (503 with the sources not open yet), `GET /metrics` (Prometheus, OpenMetrics
//! text), `GET /status.json` (a [`snapshot::Snapshot`]) and `GET /` (the same as a page). Bound
//! once at start and kept across reloads (a changed `admin.listen` needs a restart). What
//! describes files (dead letters waiting, lag, journal sizes) is computed when asked, so it is
//! never stale and costs nothing between requests.

mod page;
pub mod snapshot;

use crate::checkpoint::CheckpointBook;
use crate::health::Health;
use crate::journal::Journal;
use crate::metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
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

/// Scrapers and probes served at once; more wait to be accepted.
const CONNECTIONS: usize = 16;

/// Serves the endpoint until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    view: Shared,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS));
    let mut conns = JoinSet::new();
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%address, "admin endpoint: / /status.json /metrics /healthz /readyz");
    let accept = || async { listener.accept().await.map(|(s, _)| s) };
    while let Some((permit, stream)) =
        crate::source::next_connection("admin", &permits, &stop, accept).await
    {
        let (view, health, stop) = (view.clone(), health.clone(), stop.clone());
        conns.spawn(async move {
            let service = service_fn(move |req| {
                let (view, health) = (view.clone(), health.clone());
                async move { Ok::<_, Infallible>(answer(req, &view, &health).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {}
            }
            drop(permit);
        });
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

async fn answer(
    req: Request<Incoming>,
    view: &Shared,
    health: &Arc<Health>,
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
            // The computed gauges are set from a snapshot.
            if snapshot_of(view, health).await.is_none() {
                return unavailable();
            }
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics::get().encode(),
            )
        }
        "/status.json" => {
            let Some(taken) = snapshot_of(view, health).await else {
                return unavailable();
            };
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&taken).unwrap_or_default() + "\n",
            )
        }
        "/" => {
            let Some(taken) = snapshot_of(view, health).await else {
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
    let mut r = Response::new(Full::new(Bytes::from_static(b"shutting down\n")));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r
}

/// A snapshot, taken on a blocking thread (it reads files).
async fn snapshot_of(view: &Shared, health: &Arc<Health>) -> Option<snapshot::Snapshot> {
    let view = view.read().map(|v| v.clone()).unwrap_or_default();
    let health = health.clone();
    tokio::task::spawn_blocking(move || snapshot::take(&view, &health))
        .await
        .ok()
}

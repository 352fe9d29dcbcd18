//! The admin endpoint on `admin.listen`: `GET /healthz` (503 once a source or sink task died),
//! `GET /readyz` (503 with the sources not open yet), `GET /metrics` (Prometheus, OpenMetrics
//! text). Bound once at start and kept across reloads (a changed `admin.listen` needs a restart).
//! Gauges that describe files (`flagtail_dead_letters{sink}`) are computed when scraped, so they
//! are never stale and cost nothing between scrapes.

use crate::checkpoint::CheckpointBook;
use crate::health::Health;
use crate::metrics::{self, SinkLabel, SourceLabel};
use crate::position::Position;
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

/// What the endpoint reports on: the running config's state directory, file sources and sinks,
/// and the positions acknowledged so far.
#[derive(Clone, Default)]
pub struct View {
    pub state_dir: PathBuf,
    pub sinks: Vec<String>,
    /// File sources by name, with the path they follow.
    pub files: Vec<(String, PathBuf)>,
    pub book: Option<Arc<CheckpointBook>>,
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
    tracing::info!(%address, "admin endpoint: /healthz /readyz /metrics");
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

async fn answer(req: Request<Incoming>, view: &Shared, health: &Health) -> Response<Full<Bytes>> {
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
            let view = view.read().map(|v| v.clone()).unwrap_or_default();
            // File reads off the async threads.
            let _ = tokio::task::spawn_blocking(move || {
                count_dead_letters(&view);
                measure_lag(&view);
            })
            .await;
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics::get().encode(),
            )
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Sets `flagtail_dead_letters{sink}` to the letters waiting in each sink's dead-letter file
/// (including those a replay has taken and not finished).
fn count_dead_letters(view: &View) {
    let gauge = &metrics::get().dead_letters;
    for sink in &view.sinks {
        let log = crate::delivery::dead_letter::log(&view.state_dir, sink);
        let lines = |path: &std::path::Path| {
            std::fs::read(path).map_or(0, |b| {
                b.split(|c| *c == b'\n')
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                    .count()
            })
        };
        let n = lines(log.path()) + lines(&log.replaying());
        gauge
            .get_or_create(&SinkLabel { sink: sink.clone() })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Sets `flagtail_source_lag_bytes{source}` of each file source: the size of the file at its path
/// minus the position every sink is done with (the whole file when that position is in another
/// file, as after a rotation, or there is none yet).
fn measure_lag(view: &View) {
    use std::os::unix::fs::MetadataExt;
    let gauge = &metrics::get().source_lag_bytes;
    for (name, path) in &view.files {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let done = view
            .book
            .as_ref()
            .and_then(|b| b.get(name))
            .and_then(|p| match p {
                Position::File { file, offset }
                    if file.dev == meta.dev() && file.inode == meta.ino() =>
                {
                    Some(offset)
                }
                _ => None,
            });
        let lag = meta.len().saturating_sub(done.unwrap_or(0));
        gauge
            .get_or_create(&SourceLabel {
                source: name.clone(),
            })
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }
}

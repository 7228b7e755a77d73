//! The operations HTTP listener (`listen.http`, port 5280 by default): `GET /health` for load
//! balancers and supervisors, and `GET /metrics` in the Prometheus text exposition format
//! (version 0.0.4) for scraping (DESIGN §1, §4 "Operations"). Plain HTTP/1.1 (RFC 9112) on axum;
//! it carries no user data, so it is meant for a private interface.
//!
//! XMPP over WebSocket (RFC 7395) is served here too, at `/xmpp-websocket`, and XMPP over
//! BOSH (XEP-0206) at `/http-bind`, and XEP-0363 uploads at `/upload/` ([`crate::upload`]).
//!
//! The same [`router`] is served over TLS by the `https` listener and the multiplexed port
//! ([`crate::https`], [`crate::multiplex`]); handlers learn which through [`HttpPeer`].

use crate::c2s::C2sContext;
use axum::Router;
use axum::extract::State;
use axum::extract::connect_info::Connected;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use franca_core::Server;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histogram samples are folded into their summaries when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide Prometheus recorder for the `metrics` macros and return a handle
/// that renders it. Idempotent: later calls return the same handle. If another recorder was
/// installed first (not by this function), a warning is logged and the handle renders a
/// recorder that receives nothing.
pub fn install_metrics() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let handle = match PrometheusBuilder::new().install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!("cannot install the Prometheus recorder: {e}");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            // Histograms buffer raw samples until upkeep drains them; without scrapes that would
            // grow without bound, so drain them periodically on a small thread of our own
            // (independent of any tokio runtime).
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start the metrics upkeep thread: {e}");
            }
            handle
        })
        .clone()
}

/// The connection a request came on (axum `ConnectInfo`): the peer's address, and whether the
/// transport is TLS (the `https` listener or the multiplexed port) rather than plain HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpPeer {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for HttpPeer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        HttpPeer {
            addr: *stream.remote_addr(),
            tls: false,
        }
    }
}

#[derive(Clone)]
struct AppState {
    server: Arc<Server>,
    metrics: PrometheusHandle,
}

/// The router (exposed for embedding in other listeners and for tests). With `c2s`, XMPP
/// over WebSocket is served at `/xmpp-websocket` (RFC 7395) and over BOSH at `/http-bind`
/// (XEP-0206), both announced by XEP-0156 at
/// `/.well-known/host-meta` and `/.well-known/host-meta.json`.
pub fn router(
    server: Arc<Server>,
    metrics: PrometheusHandle,
    c2s: Option<Arc<C2sContext>>,
) -> Router {
    // XEP-0363 uploads (`crate::upload`) are served wherever this router is.
    let uploads = server
        .config
        .upload
        .enabled
        .then(|| crate::upload::routes(server.clone()));
    let ops = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(AppState { server, metrics });
    let ops = match uploads {
        Some(u) => ops.merge(u),
        None => ops,
    };
    match c2s {
        Some(ctx) => {
            let cors = crate::cors::Cors::new(&ctx.server.config.http.cors_origins);
            // Every route above the layer gets the configured CORS headers.
            let xmpp = Router::new()
                .route("/xmpp-websocket", get(crate::websocket::upgrade))
                .route("/http-bind", crate::bosh::routes(ctx.clone()))
                .route("/.well-known/host-meta", get(crate::discovery::host_meta))
                .route(
                    "/.well-known/host-meta.json",
                    get(crate::discovery::host_meta_json),
                )
                .with_state(ctx);
            let xmpp = match cors {
                Some(cors) => xmpp.layer(axum::middleware::from_fn_with_state(
                    cors,
                    crate::cors::layer,
                )),
                None => xmpp,
            };
            xmpp.merge(ops)
        }
        None => ops,
    }
}

/// Serve the operations endpoints on `listener` until `shutdown` completes, then finish the
/// requests in flight and return.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    metrics: PrometheusHandle,
    c2s: Option<Arc<C2sContext>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The caller logs the address with the other listeners. The peer address is kept for
    // the WebSocket streams (login limits, loopback check).
    let app = router(server, metrics, c2s).into_make_service_with_connect_info::<HttpPeer>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health(State(state): State<AppState>) -> Response {
    let body = format!(
        r#"{{"status":"ok","sessions":{},"uptime_seconds":{}}}"#,
        state.server.sessions.count(),
        state.server.started.elapsed().as_secs()
    );
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let body = state.metrics.render();
    (
        [
            (header::CONTENT_TYPE, METRICS_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "404 Not Found: {}\nThis is Franca's operations endpoint; try /health or /metrics.\n",
            uri.path()
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::test_support::test_server;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 request over a fresh connection; returns (status line, headers, body).
    async fn request(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
    ) -> (String, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.expect("read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (
            status.to_owned(),
            headers.to_ascii_lowercase(),
            body.to_owned(),
        )
    }

    #[tokio::test]
    async fn health_metrics_404_and_shutdown() {
        let handle = install_metrics();
        assert!(install_metrics().render() == handle.render(), "idempotent");
        metrics::counter!("franca_http_test_total").increment(3);

        let server = test_server().await;
        let _bound = server
            .sessions
            .bind("alice@localhost/phone".parse().expect("jid"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, server, handle, None, async {
            let _ = stop_rx.await;
        }));

        let (status, headers, body) = request(addr, "GET", "/health").await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(
            headers.contains("content-type: application/json"),
            "{headers}"
        );
        assert!(
            body.starts_with(r#"{"status":"ok","sessions":1,"uptime_seconds":"#),
            "{body}"
        );

        let (status, headers, body) = request(addr, "GET", "/metrics").await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(
            headers.contains("content-type: text/plain; version=0.0.4"),
            "{headers}"
        );
        assert!(body.contains("franca_http_test_total 3"), "{body}");

        let (status, _, body) = request(addr, "GET", "/nope").await;
        assert!(status.contains(" 404 "), "{status}");
        assert!(body.contains("/nope") && body.contains("/health"), "{body}");

        let (status, _, _) = request(addr, "POST", "/health").await;
        assert!(status.contains(" 405 "), "{status}");

        stop_tx.send(()).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("shut down in time")
            .expect("task")
            .expect("serve");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "closed"
        );
    }
}

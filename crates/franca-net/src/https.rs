//! The HTTPS listener (`listen.https`, port 5443 by default): the HTTP [`router`] of
//! [`crate::http`] over TLS with the c2s certificate, so browsers reach XMPP over WebSocket as
//! `wss://` (RFC 7395 §3) without a reverse proxy. Only HTTP/1.1 is offered by ALPN: axum is
//! built without HTTP/2 here, and WebSocket upgrades are HTTP/1.1 anyway.
//!
//! TLS handshakes run in tasks of their own, so a slow or silent client never holds up the
//! accept loop. At most [`MAX_HANDSHAKES`] run at once per listener, and no more from one
//! address than the c2s per-address connection limit (more connections are closed at once);
//! each has [`HANDSHAKE_TIMEOUT`]. Finished connections reach axum's
//! connection machinery through [`HttpsConnections`], an `axum::serve::Listener` fed by a
//! bounded channel; the multiplexed port ([`crate::multiplex`]) hands its HTTP connections
//! over the same way. hyper has no timer here, so [`Idle`] closes a TLS connection on which
//! nothing moved for longer than the XMPP idle timeout (a live WebSocket is pinged before).
//!
//! [`router`]: crate::http::router

use crate::c2s::C2sContext;
use crate::http::HttpPeer;
use crate::limits::{ConnectionGuard, ConnectionLimiter};
use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;

/// ALPN protocol id of HTTP/1.1 (RFC 7301 §6).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// TLS handshakes in progress at once, per listener.
pub const MAX_HANDSHAKES: usize = 1024;
/// Time for the TCP connection to become a TLS connection (and, on the multiplexed port, to
/// show what it carries).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the HTTP server to take them.
const BACKLOG: usize = 64;
/// Silence beyond the XMPP idle ping cycle (ping, then up to a minute for the answer).
const IDLE_GRACE: Duration = Duration::from_secs(120);

/// A TLS connection as the HTTP server sees it.
pub type HttpsStream = Idle<TlsStream<TcpStream>>;

/// Serve the HTTP `app` over TLS on `listener` until the server shuts down.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<C2sContext>,
    app: Router,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let acceptor = ctx.tls.acceptor_with_alpn(&[ALPN_HTTP1]);
    let (handoff, connections) = channel(local, &ctx);
    let handshakes = Handshakes::new(ctx.connections.clone());
    let accept = tokio::spawn(accept_loop(
        listener,
        ctx.shutdown.clone(),
        move |tcp, peer| {
            let Some(slot) = handshakes.try_start(peer) else {
                return;
            };
            let acceptor = acceptor.clone();
            let handoff = handoff.clone();
            tokio::spawn(async move {
                let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                match tls {
                    Ok(Ok(tls)) => handoff.hand(tls, peer).await,
                    Ok(Err(e)) => tracing::debug!(%peer, "HTTPS: TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "HTTPS: TLS handshake timed out"),
                }
                drop(slot);
            });
        },
    ));
    let result = serve_connections(connections, app, ctx.shutdown.clone()).await;
    accept.abort();
    result
}

/// Accept TCP connections until shutdown and give each, with TCP_NODELAY set, to `each`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    mut each: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        each(tcp, peer);
    }
}

/// The bounds on handshakes in progress: per listener, and per address (shared with c2s).
pub(crate) struct Handshakes {
    slots: Arc<Semaphore>,
    per_address: Arc<ConnectionLimiter>,
}

/// One handshake's slot, held until the connection is handed on.
pub(crate) struct HandshakeSlot {
    _slot: OwnedSemaphorePermit,
    /// The per-address count; an XMPP connection keeps it for its whole life.
    pub(crate) address: ConnectionGuard,
}

impl Handshakes {
    pub(crate) fn new(per_address: Arc<ConnectionLimiter>) -> Handshakes {
        Handshakes {
            slots: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            per_address,
        }
    }

    /// A slot for one handshake, or `None` (and the connection is to be dropped) when full.
    pub(crate) fn try_start(&self, peer: SocketAddr) -> Option<HandshakeSlot> {
        let Some(address) = self.per_address.try_acquire(peer.ip()) else {
            metrics::counter!("franca_tls_handshakes_refused_total").increment(1);
            tracing::warn!(%peer, "too many connections from this address; closed before TLS");
            return None;
        };
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            metrics::counter!("franca_tls_handshakes_refused_total").increment(1);
            tracing::warn!("too many TLS handshakes in progress; connection closed");
            return None;
        };
        Some(HandshakeSlot {
            _slot: slot,
            address,
        })
    }
}

/// Where handshake tasks put finished connections for the HTTP server.
#[derive(Clone)]
pub(crate) struct Handoff {
    tx: mpsc::Sender<(HttpsStream, HttpPeer)>,
    idle: Duration,
}

impl Handoff {
    pub(crate) async fn hand(&self, tls: TlsStream<TcpStream>, addr: SocketAddr) {
        let peer = HttpPeer { addr, tls: true };
        // Fails only once the HTTP server has stopped; the connection is then just closed.
        let _ = self.tx.send((Idle::new(tls, self.idle), peer)).await;
    }
}

/// A handoff and the listener the HTTP server takes its connections from.
pub(crate) fn channel(local: SocketAddr, ctx: &C2sContext) -> (Handoff, HttpsConnections) {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let idle = Duration::from_secs(ctx.server.config.limits.idle_timeout_seconds) + IDLE_GRACE;
    (Handoff { tx, idle }, HttpsConnections { rx, local })
}

/// Serve `app` on the connections handed over until `shutdown`, then let requests in flight
/// finish.
pub(crate) async fn serve_connections(
    connections: HttpsConnections,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = app.into_make_service_with_connect_info::<HttpPeer>();
    axum::serve(connections, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}

/// TLS connections whose handshake is done, as an `axum::serve::Listener`.
pub struct HttpsConnections {
    rx: mpsc::Receiver<(HttpsStream, HttpPeer)>,
    local: SocketAddr,
}

impl Listener for HttpsConnections {
    type Io = HttpsStream;
    type Addr = HttpPeer;

    async fn accept(&mut self) -> (HttpsStream, HttpPeer) {
        match self.rx.recv().await {
            Some(connection) => connection,
            // The accept loop has stopped (shutdown); graceful shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<HttpPeer> {
        Ok(HttpPeer {
            addr: self.local,
            tls: true,
        })
    }
}

impl Connected<IncomingStream<'_, HttpsConnections>> for HttpPeer {
    fn connect_info(stream: IncomingStream<'_, HttpsConnections>) -> Self {
        *stream.remote_addr()
    }
}

/// A stream that fails with `TimedOut` once no byte has moved either way for `limit`.
///
/// One timer serves both directions, and it keeps only the last waker; hyper polls a
/// connection's reads and writes from one task, so that waker is always the right one.
pub struct Idle<S> {
    io: S,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<S> Idle<S> {
    pub fn new(io: S, limit: Duration) -> Idle<S> {
        Idle {
            io,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    fn progress(&mut self) {
        let at = Instant::now() + self.limit;
        self.timer.as_mut().reset(at);
    }

    /// On `Pending`, whether the silence has lasted too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "idle HTTPS connection")
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.progress();
                }
                Poll::Ready(result)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.progress();
                }
                Poll::Ready(result)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_streams_time_out_and_traffic_keeps_them_open() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut idle = Idle::new(a, Duration::from_millis(800));
        let mut buf = [0u8; 8];

        tokio::time::sleep(Duration::from_millis(500)).await;
        b.write_all(b"hi").await.expect("write");
        assert_eq!(idle.read(&mut buf).await.expect("read"), 2);
        // Traffic restarted the clock: as long again is still within the limit.
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.write_all(b"yo").await.expect("write");
        assert_eq!(idle.read(&mut buf).await.expect("read"), 2);

        let started = Instant::now();
        let err = idle.read(&mut buf).await.expect_err("silence");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

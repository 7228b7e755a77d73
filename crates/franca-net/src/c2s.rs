//! The c2s transport task: one per TCP connection. It owns the socket, feeds bytes to the
//! sans-IO [`C2sStream`], performs what the stream asks for (TLS upgrade, credential lookups,
//! resource binding), hands stanzas to the router and drains the session's outbound queue.
//!
//! Memory per idle session is the scale limit (DESIGN §6), so the read buffer is allocated only
//! while bytes are being processed and released when the stream holds no partial stanza: an
//! idle connection waits on socket readiness with no buffer at all. For the same reason the
//! work done on each wake-up (reading, routing, writing) runs in a boxed future: the task's
//! own state while it waits stays small, instead of reserving room for the deepest await.

use crate::limits::{ConnectionGuard, ConnectionLimiter, LoginLimiter, ReadRate};
use crate::stream::{Clock, Out, Step, XmppStream, recv};
use crate::tls::{Tls, channel_binding};
use franca_core::session::Serialised;
use franca_core::{Outbound, Server};
use franca_proto::c2s::{C2sConfig, C2sStream};
use franca_proto::errors::StreamError;
use franca_xml::Element;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

/// Answers IQs sent before authentication (XEP-0077 registration lives in a module crate that
/// this transport must not depend on).
pub type PreAuthHandler =
    Arc<dyn Fn(Arc<Server>, IpAddr, Element) -> BoxFuture<'static, Element> + Send + Sync>;

/// What every c2s connection shares.
pub struct C2sContext {
    pub server: Arc<Server>,
    pub stream: Arc<C2sConfig>,
    pub tls: Arc<Tls>,
    pub logins: Arc<LoginLimiter>,
    /// Connections per address, shared by every c2s transport (TCP and WebSocket).
    pub connections: Arc<ConnectionLimiter>,
    pub preauth: PreAuthHandler,
    pub shutdown: watch::Receiver<bool>,
}

/// Bytes read per system call; the buffer exists only while data is flowing.
const READ_CHUNK: usize = 4096;
/// Write-buffer capacity kept between flushes (a typical chat message fits).
const OUT_KEEP: usize = 512;
/// Most bytes written per batch drained from the outbound queue.
const WRITE_BATCH: usize = 64 * 1024;

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// The socket was moved out for the TLS handshake, which failed.
    Gone,
}

impl Transport {
    /// Wait until the socket has bytes (or an error) without holding a buffer.
    async fn readable(&self) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.readable().await,
            Transport::Tls(s) => s.get_ref().0.readable().await,
            Transport::Gone => Err(gone()),
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "socket handed to TLS")
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// Why the connection loop ended.
enum End {
    /// The stream was closed by either side (stream close already written where due).
    Closed,
    /// An I/O error or EOF: nothing more can be written.
    Broken,
}

struct Connection {
    x: XmppStream,
    io: Transport,
    out: String,
    rate: ReadRate,
    /// Set by the STARTTLS upgrade: the client's next bytes may already sit in the TLS layer.
    upgraded: bool,
    _guard: ConnectionGuard,
}

/// Serve one accepted TCP connection. `direct_tls` is XEP-0368 (TLS from the first byte).
pub async fn serve(
    ctx: Arc<C2sContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    guard: ConnectionGuard,
) {
    let _ = tcp.set_nodelay(true);
    let limits = &ctx.server.config.limits;
    let negotiation = Duration::from_secs(limits.negotiation_timeout_seconds);
    let (io, cb) = if direct_tls {
        // Boxed: the handshake state is large and must not size the task for its whole life.
        match Box::pin(tokio::time::timeout(
            negotiation,
            ctx.tls.acceptor.accept(tcp),
        ))
        .await
        {
            Ok(Ok(tls)) => {
                let cb = channel_binding(tls.get_ref().1, &ctx.tls);
                (Transport::Tls(Box::new(tls)), Some(cb))
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => return,
        }
    } else {
        (Transport::Plain(tcp), None)
    };
    run_connection(ctx, io, cb, peer, guard).await;
}

/// Serve an XMPP stream whose TLS handshake another listener did: the multiplexed port, after
/// ALPN `xmpp-client` or a sniffed stream header. It is direct TLS (XEP-0368) from here on;
/// decrypted bytes read ahead stay in the TLS layer and are read first.
pub async fn serve_tls(
    ctx: Arc<C2sContext>,
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    guard: ConnectionGuard,
) {
    let cb = channel_binding(tls.get_ref().1, &ctx.tls);
    run_connection(ctx, Transport::Tls(Box::new(tls)), Some(cb), peer, guard).await;
}

async fn run_connection(
    ctx: Arc<C2sContext>,
    io: Transport,
    cb: Option<franca_proto::sasl::ChannelBinding>,
    peer: SocketAddr,
    guard: ConnectionGuard,
) {
    let limits = &ctx.server.config.limits;
    let rate = ReadRate::new(limits.read_rate_bytes, limits.read_burst_bytes);
    let stream = C2sStream::new(ctx.stream.clone(), cb);
    let mut conn = Connection {
        x: XmppStream::new(ctx, peer, stream),
        io,
        out: String::new(),
        rate,
        upgraded: false,
        _guard: guard,
    };
    conn.run().await;
    conn.x.finish().await;
}

impl Connection {
    async fn run(&mut self) {
        let mut clock = Clock::new(&self.x.ctx.server.config.limits);
        let mut shutdown = self.x.ctx.shutdown.clone();
        let mut paused_until: Option<Instant> = None;
        // The TLS layer can hold decrypted bytes the socket no longer signals (read along with
        // the handshake, or left after a burst was cut short), so after those moments the
        // stream is drained before waiting on socket readiness again.
        let mut drain = matches!(self.io, Transport::Tls(_));
        loop {
            let deadline = clock.next(&self.x);
            let end = tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.x.stream.fail(StreamError::SystemShutdown, Some("the server is shutting down"));
                    Box::pin(self.pump(&mut &[][..])).await
                }
                msg = recv(&mut self.x.rx) => Box::pin(self.outbound(msg)).await,
                _ = sleep_until(paused_until) => {
                    paused_until = None;
                    drain = true;
                    None
                }
                ready = readable(&self.io, drain), if paused_until.is_none() => match ready {
                    Ok(()) => match Box::pin(self.read_available()).await {
                        Ok((0, Read::Eof)) => Some(End::Broken),
                        Ok((n, read)) => {
                            drain = matches!(read, Read::More) || self.upgraded;
                            self.upgraded = false;
                            if n > 0 {
                                clock.heard();
                            }
                            if let Some(pause) = self.rate.consume(n) {
                                paused_until = Some(Instant::now() + pause);
                            }
                            None
                        }
                        Err(end) => Some(end),
                    },
                    Err(_) => Some(End::Broken),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    clock.expired(&mut self.x);
                    Box::pin(self.pump(&mut &[][..])).await
                }
            };
            if let Some(end) = end {
                if matches!(end, End::Closed) {
                    let _ = self.io.shutdown().await;
                }
                return;
            }
        }
    }

    /// Read everything the socket (and TLS layer) has ready, feeding the stream as it comes.
    /// Returns the bytes read and how the burst ended.
    async fn read_available(&mut self) -> Result<(usize, Read), End> {
        let mut total = 0;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            buf.clear();
            buf.reserve(READ_CHUNK);
            // A read that would block ends the burst: readiness is awaited without a buffer.
            let read = match self.io.read_buf(&mut buf).now_or_never() {
                None => return Ok((total, Read::Drained)),
                Some(Ok(0)) => return Ok((total, Read::Eof)),
                Some(Ok(n)) => n,
                Some(Err(_)) => return Err(End::Broken),
            };
            total += read;
            let mut input = &buf[..read];
            if let Some(end) = self.pump(&mut input).await {
                return Err(end);
            }
            if total >= READ_CHUNK * 16 {
                // Let the rate limiter and the outbound queue have a turn.
                return Ok((total, Read::More));
            }
        }
    }

    /// Run the stream's actions over `input` until it needs more bytes.
    async fn pump(&mut self, input: &mut &[u8]) -> Option<End> {
        while let Some(step) = self.x.next_step(input).await {
            match step {
                Step::Write(s) => self.out.push_str(&s),
                Step::StartTls => {
                    if let Some(end) = self.flush().await {
                        return Some(end);
                    }
                    // RFC 6120 §5.3.3 (and the STARTTLS injection class of bugs): anything the
                    // client sent after <starttls/> in plaintext is discarded.
                    *input = &[];
                    if let Err(end) = self.upgrade().await {
                        return Some(end);
                    }
                }
                Step::Close => {
                    let _ = self.flush().await;
                    return Some(End::Closed);
                }
            }
        }
        self.flush().await
    }

    async fn upgrade(&mut self) -> Result<(), End> {
        // Move the socket out to hand it to the TLS acceptor.
        let Transport::Plain(tcp) = std::mem::replace(&mut self.io, Transport::Gone) else {
            return Err(End::Broken);
        };
        let ctx = &self.x.ctx;
        let timeout = Duration::from_secs(ctx.server.config.limits.negotiation_timeout_seconds);
        match tokio::time::timeout(timeout, ctx.tls.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                let cb = channel_binding(tls.get_ref().1, &ctx.tls);
                self.io = Transport::Tls(Box::new(tls));
                self.x.stream.tls_established(cb);
                self.upgraded = true;
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.x.peer, "STARTTLS handshake failed: {e}");
                Err(End::Broken)
            }
            Err(_) => Err(End::Broken),
        }
    }

    async fn outbound(&mut self, first: Outbound) -> Option<End> {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            let item = match msg {
                Outbound::Xml(xml) => Serialised::Xml(xml),
                Outbound::Fanout(f) => Serialised::Fanout(f),
                Outbound::Close(error, text) => {
                    self.x.stream.fail(error, text.as_deref());
                    return self.pump(&mut &[][..]).await;
                }
            };
            // Straight into the write buffer: a fan-out stanza's shared bytes with this
            // session's `to` in between, no copy of its own.
            match self.x.outbound_stanza(item) {
                Out::One(item) => self.x.write_stanza(&item, &mut self.out),
                Out::Held => {}
                Out::Many(list) => {
                    for item in &list {
                        self.x.write_stanza(item, &mut self.out);
                    }
                }
            }
            // A stream that ended (XEP-0198 limit) leaves the rest queued for the session's end.
            if self.out.len() < WRITE_BATCH && !self.x.stream.is_closed() {
                next = self.x.rx.as_mut().and_then(|rx| rx.try_recv());
            }
        }
        if self.x.stream.has_pending() {
            // What the stream queued after the stanzas (a XEP-0198 <r/>); pump flushes too.
            return self.pump(&mut &[][..]).await;
        }
        self.flush().await
    }

    async fn flush(&mut self) -> Option<End> {
        if self.out.is_empty() {
            return None;
        }
        let result = async {
            self.io.write_all(self.out.as_bytes()).await?;
            self.io.flush().await
        }
        .await;
        // Keep no write buffer while idle: one roster result would otherwise stay allocated
        // for the life of the session. Small writes reuse a small buffer.
        if self.out.capacity() > OUT_KEEP {
            self.out = String::new();
        } else {
            self.out.clear();
        }
        result.err().map(|_| End::Broken)
    }
}

/// How a read burst ended.
enum Read {
    /// The socket would block: wait for readiness.
    Drained,
    /// Stopped early with bytes possibly left: read again before waiting.
    More,
    /// The peer closed the connection.
    Eof,
}

async fn readable(io: &Transport, now: bool) -> std::io::Result<()> {
    if now { Ok(()) } else { io.readable().await }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

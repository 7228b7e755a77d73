//! Franca's listeners and transports: c2s over TCP with STARTTLS or direct TLS (XEP-0368), XMPP
//! over WebSocket (RFC 7395) and BOSH (XEP-0206), the HTTP endpoints (health, Prometheus metrics) over plain HTTP
//! and HTTPS, one TLS port that carries both XMPP and HTTPS (ALPN), the local control socket for
//! the CLI, the XEP-0114 component listener, and the connection and login limits that guard them. Transports only move bytes and
//! stanzas: all IM semantics are in `franca-core` and the module crates (DESIGN §2, "the router
//! is the only road").

pub mod bosh;
pub mod c2s;
pub mod component;
pub mod control;
pub mod cors;
pub mod discovery;
pub mod http;
pub mod https;
pub mod limits;
pub mod multiplex;
mod stream;
pub mod tls;
pub mod upload;
pub mod websocket;

use c2s::C2sContext;
use limits::ConnectionLimiter;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Bind every address of one listener kind. `[::]` falls back to `0.0.0.0` on hosts without
/// IPv6, so the zero-config defaults work everywhere.
pub async fn bind_all(kind: &str, addrs: &[String]) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for addr in addrs {
        let listener = match TcpListener::bind(addr.as_str()).await {
            Ok(l) => l,
            Err(e) if addr.starts_with("[::]:") => {
                let v4 = addr.replacen("[::]", "0.0.0.0", 1);
                TcpListener::bind(v4.as_str()).await.map_err(|_| e)?
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen for {kind} on {addr}: {e}"),
                ));
            }
        };
        out.push(listener);
    }
    Ok(out)
}

/// Accept c2s connections forever on `listener`.
pub async fn accept_c2s(
    listener: TcpListener,
    ctx: Arc<C2sContext>,
    limiter: Arc<ConnectionLimiter>,
    direct_tls: bool,
) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        metrics::counter!("franca_c2s_connections_total").increment(1);
        let Some(guard) = limiter.try_acquire(peer.ip()) else {
            metrics::counter!("franca_c2s_connections_refused_total").increment(1);
            tracing::warn!(%peer, "too many connections from this address");
            if !direct_tls {
                tokio::spawn(refuse(tcp, ctx.clone(), peer));
            }
            continue;
        };
        tokio::spawn(c2s::serve(ctx.clone(), tcp, peer, direct_tls, guard));
    }
}

/// RFC 6120 §4.9.3.14: refuse an over-limit connection with `<policy-violation/>`.
async fn refuse(mut tcp: TcpStream, ctx: Arc<C2sContext>, peer: SocketAddr) {
    let domain = ctx
        .server
        .config
        .server
        .domains
        .first()
        .cloned()
        .unwrap_or_default();
    let header = franca_xml::stream_header(franca_proto::ns::NS_CLIENT, &domain, None, "refused");
    let error = franca_proto::errors::StreamError::PolicyViolation
        .to_element(Some("too many connections from your address"))
        .to_xml_in(franca_proto::ns::NS_CLIENT);
    let bytes = format!("{header}{error}</stream:stream>");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = tcp.write_all(bytes.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
    tracing::debug!(%peer, "refused connection");
}

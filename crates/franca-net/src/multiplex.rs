//! One TLS port for everything (`listen.multiplex`, typically `[::]:443`): for users behind
//! firewalls that open only HTTPS. Each connection is TLS with the c2s certificate, and what it
//! carries is chosen per connection:
//!
//! * ALPN `xmpp-client` (XEP-0368) → XMPP with direct TLS, the same c2s stream as `c2s_tls`
//!   (channel binding included);
//! * ALPN `http/1.1` → the HTTPS router (WebSocket, discovery, BOSH, health), as on `https`;
//! * no ALPN → the first decrypted bytes decide: an XML declaration or a stream header is
//!   XMPP, an HTTP method is HTTP, anything else is closed.
//!
//! `h2` is not offered: axum is built without HTTP/2 here (browsers fall back to HTTP/1.1).
//!
//! Hostile input is bounded before anything is allocated for it: the first byte must open a
//! TLS handshake record (peeked, not read), the handshake and the sniff share
//! [`HANDSHAKE_TIMEOUT`], at most [`https::MAX_HANDSHAKES`] are in progress, and the sniff looks only
//! at what one TLS record decrypted to (rustls bounds that buffer). Every connection counts
//! against the per-address c2s connection limit from accept on; an XMPP connection keeps
//! counting for its whole life, an HTTP one is handed on to axum (where only WebSocket streams
//! count).

use crate::c2s::{self, C2sContext};
use crate::https::{self, ALPN_HTTP1, HANDSHAKE_TIMEOUT, Handoff, HandshakeSlot, Handshakes};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// ALPN protocol id of XMPP client streams (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";
/// The content type of a TLS handshake record (RFC 8446 §5.1): every TLS connection opens
/// with one (the ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What an XMPP client may send first (RFC 6120 §4.2; the declaration is optional).
const XMPP_STARTS: [&[u8]; 2] = [b"<?xml", b"<stream:stream"];
/// HTTP/1.1 request lines start with a method and a space (RFC 9110 §9).
const HTTP_STARTS: [&[u8]; 8] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"OPTIONS ",
    b"PUT ",
    b"DELETE ",
    b"PATCH ",
    b"TRACE ",
];

/// What a connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    Xmpp,
    Http,
}

/// Serve the multiplexed port on `listener` until the server shuts down; `app` is the HTTP
/// router (the one the `http` and `https` listeners serve).
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<C2sContext>,
    app: Router,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let acceptor = ctx.tls.acceptor_with_alpn(&[ALPN_XMPP_CLIENT, ALPN_HTTP1]);
    let (handoff, connections) = https::channel(local, &ctx);
    let handshakes = Handshakes::new(ctx.connections.clone());
    let accept = tokio::spawn(https::accept_loop(listener, ctx.shutdown.clone(), {
        let ctx = ctx.clone();
        move |tcp, peer| {
            let Some(slot) = handshakes.try_start(peer) else {
                return;
            };
            tokio::spawn(connection(
                ctx.clone(),
                acceptor.clone(),
                handoff.clone(),
                tcp,
                peer,
                slot,
            ));
        }
    }));
    let result = https::serve_connections(connections, app, ctx.shutdown.clone()).await;
    accept.abort();
    result
}

async fn connection(
    ctx: Arc<C2sContext>,
    acceptor: TlsAcceptor,
    handoff: Handoff,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: HandshakeSlot,
) {
    // Boxed: the handshake state is large and must not size an XMPP connection's task.
    let opened = Box::pin(tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        open(acceptor, tcp, peer),
    ))
    .await;
    let (tls, carries) = match opened {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            metrics::counter!("franca_multiplex_refused_total").increment(1);
            return;
        }
        Err(_) => {
            metrics::counter!("franca_multiplex_refused_total").increment(1);
            tracing::debug!(%peer, "multiplex: no TLS connection within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    match carries {
        Carries::Http => {
            handoff.hand(tls, peer).await;
            drop(slot);
        }
        Carries::Xmpp => {
            metrics::counter!("franca_c2s_connections_total").increment(1);
            let HandshakeSlot { address, .. } = slot;
            c2s::serve_tls(ctx, tls, peer, address).await;
        }
    }
}

/// TLS handshake, then what the connection carries; `None` closes it.
async fn open(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Carries)> {
    // Peeked, so the TLS layer still reads the ClientHello from its first byte.
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(_) | Err(_) => {
            tracing::debug!(%peer, "multiplex: not a TLS connection; closed");
            return None;
        }
    }
    let mut tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            tracing::debug!(%peer, "multiplex: TLS handshake failed: {e}");
            return None;
        }
    };
    let carries = match tls.get_ref().1.alpn_protocol() {
        Some(ALPN_XMPP_CLIENT) => Carries::Xmpp,
        Some(ALPN_HTTP1) => Carries::Http,
        // rustls agrees only on protocols offered above.
        Some(_) => return None,
        None => {
            // Looked at, not consumed: the c2s stream or hyper reads these bytes again.
            let first = tls.fill_buf().await.ok()?;
            let carries = sniff(first);
            if carries.is_none() {
                tracing::debug!(%peer, "multiplex: neither XMPP nor HTTP inside TLS; closed");
            }
            carries?
        }
    };
    Some((tls, carries))
}

/// What the first decrypted bytes are the start of. A short first record (`<?x`, `GE`) is
/// judged by what it can still become.
pub fn sniff(first: &[u8]) -> Option<Carries> {
    if first.is_empty() {
        return None;
    }
    let could_be = |start: &[u8]| first.starts_with(start) || start.starts_with(first);
    if XMPP_STARTS.iter().any(|s| could_be(s)) {
        Some(Carries::Xmpp)
    } else if HTTP_STARTS.iter().any(|s| could_be(s)) {
        Some(Carries::Http)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_xmpp_from_http_and_refuses_the_rest() {
        assert_eq!(
            sniff(b"<?xml version='1.0'?><stream:stream"),
            Some(Carries::Xmpp)
        );
        assert_eq!(
            sniff(b"<stream:stream xmlns='jabber:client'"),
            Some(Carries::Xmpp)
        );
        assert_eq!(sniff(b"<?x"), Some(Carries::Xmpp));
        assert_eq!(sniff(b"GET /health HTTP/1.1\r\n"), Some(Carries::Http));
        assert_eq!(sniff(b"OPTIONS * HTTP/1.1\r\n"), Some(Carries::Http));
        assert_eq!(sniff(b"PO"), Some(Carries::Http));
        for garbage in [
            &b""[..],
            b"\x00\x01\x02",
            b"<html>",
            b"GETX / HTTP/1.1",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"get / HTTP/1.1",
        ] {
            assert_eq!(sniff(garbage), None, "{garbage:?}");
        }
    }
}

//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` on the HTTP listener.
//!
//! The upgrade requires the `xmpp` subprotocol (§3.1). After it, each WebSocket text message
//! is one XML document that the sans-IO [`C2sStream`] reads in its WebSocket framing, and each
//! element it writes goes out as one message. Login, binding and routing are the same
//! [`XmppStream`] TCP streams use; stanzas from the session queue, serialised once for a
//! `jabber:client` stream, get their namespace spliced in
//! ([`with_client_ns`](franca_proto::c2s::with_client_ns); a shared fan-out stanza gets it
//! with its `to`, in the one copy each message needs).
//!
//! A WebSocket stream is treated as secure (SASL allowed without STARTTLS, which RFC 7395
//! §3.9 rules out) when it came over TLS (`wss://` on the `https` listener or the multiplexed
//! port), or when the peer is on loopback: the reverse proxy that terminates TLS in front of
//! the plain `http` listener. Elsewhere authentication is refused.

use crate::c2s::C2sContext;
use crate::http::HttpPeer;
use crate::stream::{Clock, Out, Step, XmppStream, recv};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use franca_core::Outbound;
use franca_core::session::Serialised;
use franca_proto::c2s::{C2sOptions, C2sStream, Framing};
use franca_proto::errors::StreamError;
use std::net::SocketAddr;
use std::sync::Arc;

/// The subprotocol of RFC 7395 §3.1.
const SUBPROTOCOL: &str = "xmpp";
/// tungstenite's buffers default to 128 KiB each; a chat connection needs far less.
const BUFFER: usize = 4096;

/// The upgrade handler.
pub async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(http): ConnectInfo<HttpPeer>,
    State(ctx): State<Arc<C2sContext>>,
) -> Response {
    let peer = http.addr;
    let secure = http.tls || peer.ip().is_loopback();
    let ws = ws.protocols([SUBPROTOCOL]);
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "RFC 7395: the WebSocket subprotocol \"xmpp\" is required\n",
        )
            .into_response();
    }
    // The same per-address budget as TCP streams: a WebSocket is a c2s stream too.
    let Some(guard) = ctx.connections.try_acquire(peer.ip()) else {
        metrics::counter!("franca_c2s_connections_refused_total").increment(1);
        tracing::warn!(%peer, "too many connections from this address (WebSocket)");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from your address\n",
        )
            .into_response();
    };
    // A message is one stanza, so the stanza limit bounds messages and frames alike.
    let max = ctx.server.config.limits.max_stanza_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            serve(ctx, socket, peer, secure).await;
            drop(guard);
        })
}

/// Why the loop ended.
enum End {
    /// The stream was closed (`<close/>` written where due).
    Closed,
    /// The WebSocket is gone.
    Broken,
}

async fn serve(ctx: Arc<C2sContext>, mut socket: WebSocket, peer: SocketAddr, secure: bool) {
    let options = C2sOptions {
        framing: Framing::WebSocket,
        secure,
        channel_binding: None,
    };
    let stream = C2sStream::with_options(ctx.stream.clone(), options);
    let mut x = XmppStream::new(ctx, peer, stream);
    if let End::Closed = run(&mut x, &mut socket).await {
        let _ = socket.send(Message::Close(None)).await;
    }
    x.finish().await;
}

async fn run(x: &mut XmppStream, socket: &mut WebSocket) -> End {
    let mut clock = Clock::new(&x.ctx.server.config.limits);
    let mut shutdown = x.ctx.shutdown.clone();
    loop {
        let deadline = clock.next(x);
        let end = tokio::select! {
            biased;
            _ = shutdown.changed() => {
                x.stream.fail(StreamError::SystemShutdown, Some("the server is shutting down"));
                Box::pin(pump(x, socket, &[])).await
            }
            msg = recv(&mut x.rx) => Box::pin(outbound(x, socket, msg)).await,
            frame = socket.recv() => {
                clock.heard();
                match frame {
                    Some(Ok(Message::Text(text))) => Box::pin(pump(x, socket, text.as_bytes())).await,
                    Some(Ok(Message::Binary(_))) => {
                        x.stream.fail(StreamError::BadFormat, Some("RFC 7395 frames are text"));
                        Box::pin(pump(x, socket, &[])).await
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Some(End::Broken),
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                clock.expired(x);
                Box::pin(pump(x, socket, &[])).await
            }
        };
        if let Some(end) = end {
            return end;
        }
    }
}

/// Feed one message (or nothing, to collect what the stream queued) and write what it says.
async fn pump(x: &mut XmppStream, socket: &mut WebSocket, frame: &[u8]) -> Option<End> {
    let mut input = frame;
    while let Some(step) = x.next_step(&mut input).await {
        match step {
            Step::Write(s) => {
                if socket.send(Message::Text(s.into())).await.is_err() {
                    return Some(End::Broken);
                }
            }
            // Never offered over WebSocket (RFC 7395 §3.9); the stream refuses it itself.
            Step::StartTls => return Some(End::Broken),
            Step::Close => return Some(End::Closed),
        }
    }
    None
}

async fn outbound(x: &mut XmppStream, socket: &mut WebSocket, first: Outbound) -> Option<End> {
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        let item = match msg {
            Outbound::Xml(xml) => Serialised::Xml(xml),
            Outbound::Fanout(f) => Serialised::Fanout(f),
            Outbound::Close(error, text) => {
                x.stream.fail(error, text.as_deref());
                return pump(x, socket, &[]).await;
            }
        };
        match x.outbound_stanza(item) {
            Out::One(item) => {
                if send_stanza(socket, x.framed(&item)).await.is_err() {
                    return Some(End::Broken);
                }
            }
            Out::Held => {}
            Out::Many(list) => {
                for item in &list {
                    if send_stanza(socket, x.framed(item)).await.is_err() {
                        return Some(End::Broken);
                    }
                }
            }
        }
        if !x.stream.is_closed() {
            next = x.rx.as_mut().and_then(|rx| rx.try_recv());
        }
    }
    if x.stream.has_pending() {
        // What the stream queued after the stanzas (a XEP-0198 <r/>).
        return pump(x, socket, &[]).await;
    }
    None
}

/// One stanza from the session queue, as its own message with the namespace declared
/// ([`XmppStream::framed`]).
async fn send_stanza(socket: &mut WebSocket, text: String) -> Result<(), axum::Error> {
    socket.send(Message::Text(text.into())).await
}

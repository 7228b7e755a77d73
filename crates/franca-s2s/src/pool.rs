//! Outbound links: one per (local domain, remote domain) pair, each its own task with a
//! bounded queue (`max_queued_stanzas`). Stanzas queue while the link connects; if connecting
//! fails they bounce with `remote-server-not-found` or, when it took too long,
//! `remote-server-timeout` (RFC 6120 §8.3.3). A link with no traffic for
//! `idle_timeout_seconds` closes its stream. A slow or flooded link only fills its own queue:
//! others have their own tasks and queues. An inbound stream made bidirectional (XEP-0288) can
//! stand in for a pair's link ([`attach`]); a link that asked for one also reads the remote's
//! stanzas.

use crate::federation::{Ctx, bounce};
use crate::outbound;
use crate::stream::ReadError;
use franca_core::Server;
use franca_proto::errors::{StanzaErrorCondition as Cond, StreamError};
use franca_proto::ns::NS_STREAMS;
use franca_proto::s2s::to_server_ns;
use franca_xml::{Element, Event};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Stanzas written per wake-up before the link reads again.
const WRITE_BATCH: usize = 64;

type Pair = (String, String);

struct Link {
    id: u64,
    tx: mpsc::Sender<Element>,
}

/// The outbound links, by (local, remote) domain pair.
#[derive(Default)]
pub struct Links {
    map: Mutex<HashMap<Pair, Link>>,
    next_id: AtomicU64,
}

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Pair, Link>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget the link `id` of `pair`, if it is still the registered one.
    fn remove(&self, pair: &Pair, id: u64) {
        let mut map = self.lock();
        if map.get(pair).is_some_and(|l| l.id == id) {
            map.remove(pair);
        }
    }

    /// The number of links (connecting or connected).
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

/// The queue of the link for `pair`, starting the link if there is none.
fn queue(ctx: &Arc<Ctx>, server: &Arc<Server>, pair: &Pair) -> mpsc::Sender<Element> {
    let mut map = ctx.links.lock();
    if let Some(link) = map.get(pair)
        && !link.tx.is_closed()
    {
        return link.tx.clone();
    }
    let id = ctx.links.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(ctx.cfg.max_queued_stanzas.max(1));
    map.insert(pair.clone(), Link { id, tx: tx.clone() });
    tokio::spawn(run(ctx.clone(), server.clone(), pair.clone(), id, rx));
    tx
}

/// XEP-0288: let an inbound stream from `remote`, authenticated and bidirectional, carry our
/// stanzas from `local` too. `None` when a link for the pair exists already (it stays the one).
/// The caller writes what arrives on the receiver and [`detach`]es when its stream ends.
pub(crate) fn attach(
    ctx: &Ctx,
    local: &str,
    remote: &str,
) -> Option<(u64, mpsc::Receiver<Element>)> {
    let pair = (local.to_owned(), remote.to_owned());
    let mut map = ctx.links.lock();
    if map.get(&pair).is_some_and(|l| !l.tx.is_closed()) {
        return None;
    }
    let id = ctx.links.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(ctx.cfg.max_queued_stanzas.max(1));
    map.insert(pair, Link { id, tx });
    Some((id, rx))
}

/// The stream of an [`attach`]ed link ended: forget it, and send what it still held on a new
/// link (or bounce it while the server stops).
pub(crate) async fn detach(
    ctx: &Ctx,
    server: &Arc<Server>,
    local: &str,
    remote: &str,
    id: u64,
    mut rx: mpsc::Receiver<Element>,
) {
    ctx.links.remove(&(local.to_owned(), remote.to_owned()), id);
    rx.close();
    let stopping = *ctx.shutdown.borrow();
    while let Ok(stanza) = rx.try_recv() {
        if stopping {
            let text = "the server is shutting down";
            bounce(server, &stanza, Cond::RemoteServerTimeout, text).await;
        } else {
            server.route(stanza).await;
        }
    }
}

/// Queue `stanza` on the link from `local` to `remote`.
pub async fn send(
    ctx: &Arc<Ctx>,
    server: &Arc<Server>,
    local: String,
    remote: String,
    stanza: Element,
) {
    let pair = (local, remote);
    let mut stanza = stanza;
    // Twice: the link found may end between the lookup and the send.
    for _ in 0..2 {
        match queue(ctx, server, &pair).try_send(stanza) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(s)) => {
                let text = format!(
                    "too many stanzas are waiting for the connection to {}",
                    pair.1
                );
                return bounce(server, &s, Cond::ResourceConstraint, &text).await;
            }
            Err(mpsc::error::TrySendError::Closed(s)) => stanza = s,
        }
    }
    let text = format!("the connection to {} keeps closing", pair.1);
    bounce(server, &stanza, Cond::RemoteServerTimeout, &text).await;
}

/// One link's life: connect, carry stanzas, close when idle; bounce what cannot go.
async fn run(
    ctx: Arc<Ctx>,
    server: Arc<Server>,
    pair: Pair,
    id: u64,
    mut rx: mpsc::Receiver<Element>,
) {
    let (local, remote) = (&pair.0, &pair.1);
    metrics::counter!("franca_s2s_connections_total", "direction" => "out").increment(1);
    let connected = tokio::time::timeout(
        ctx.connect_timeout(),
        outbound::connect(&ctx, local, remote),
    )
    .await;
    let failure = match connected {
        Ok(Ok(mut connected)) => {
            metrics::gauge!("franca_s2s_links").increment(1.0);
            let end = carry(&ctx, &server, &mut connected, &mut rx, remote).await;
            metrics::gauge!("franca_s2s_links").decrement(1.0);
            ctx.links.remove(&pair, id);
            rx.close();
            while let Ok(stanza) = rx.try_recv() {
                match end {
                    // Queued after the link decided to end: they go out on a new link.
                    End::Closed => server.route(stanza).await,
                    // No new links while stopping: the sender learns it did not go out.
                    End::Shutdown => {
                        let text = "the server is shutting down";
                        bounce(&server, &stanza, Cond::RemoteServerTimeout, text).await;
                    }
                }
            }
            return;
        }
        Ok(Err(e)) => e,
        Err(_) => outbound::ConnectError {
            condition: Cond::RemoteServerTimeout,
            text: format!(
                "no connection to {remote} within {} s",
                ctx.cfg.connect_timeout_seconds
            ),
        },
    };
    metrics::counter!("franca_s2s_connections_failed_total").increment(1);
    tracing::info!(local, remote, "s2s connection failed: {failure}");
    ctx.links.remove(&pair, id);
    rx.close();
    while let Ok(stanza) = rx.try_recv() {
        bounce(&server, &stanza, failure.condition.clone(), &failure.text).await;
    }
}

/// Wait until the server shuts down (forever if it never signals).
pub async fn stopping(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Why a link stopped carrying stanzas.
enum End {
    /// Idle, closed by the remote or broken.
    Closed,
    /// The server is shutting down.
    Shutdown,
}

/// Write queued stanzas to an authenticated stream until it is idle, broken or shut down.
async fn carry(
    ctx: &Ctx,
    server: &Arc<Server>,
    connected: &mut outbound::Connected,
    rx: &mut mpsc::Receiver<Element>,
    remote: &str,
) -> End {
    let bidi = connected.bidi;
    let stream = &mut connected.stream;
    let mut shutdown = ctx.shutdown.clone();
    let idle = ctx.idle_timeout();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = stopping(&mut shutdown) => {
                stream.fail(None, StreamError::SystemShutdown, Some("the server is shutting down")).await;
                return End::Shutdown;
            }
            msg = rx.recv() => {
                let Some(first) = msg else { return End::Closed };
                let mut n = 0;
                let mut next = Some(first);
                while let Some(stanza) = next.take() {
                    stream.push(&to_server_ns(stanza));
                    n += 1;
                    if n < WRITE_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if stream.flush().await.is_err() {
                    tracing::debug!(remote, "s2s link broke while writing");
                    return End::Closed;
                }
                metrics::counter!("franca_s2s_stanzas_out_total").increment(n as u64);
                last = Instant::now();
            }
            ev = stream.next() => match ev {
                Ok(Event::Stanza(el)) if el.is("error", NS_STREAMS) => {
                    let (err, text) = StreamError::from_element(&el)
                        .unwrap_or((StreamError::UndefinedCondition, None));
                    tracing::info!(remote, "s2s link closed by the remote: {} {}", err.name(), text.unwrap_or_default());
                    stream.close().await;
                    return End::Closed;
                }
                // XEP-0288: the remote's stanzas for us, on the stream we opened.
                Ok(Event::Stanza(el)) if bidi && franca_proto::s2s::is_stanza(&el) => {
                    last = Instant::now();
                    if let Err((err, text)) =
                        crate::inbound::receive(ctx, server, |d| d == remote, el).await
                    {
                        stream.fail(None, err, Some(&text)).await;
                        return End::Closed;
                    }
                }
                // Otherwise the remote sends nothing else of interest here.
                Ok(Event::Stanza(_)) => last = Instant::now(),
                Ok(Event::StreamEnd) => {
                    stream.close().await;
                    return End::Closed;
                }
                Ok(Event::StreamStart(_)) => {
                    stream.fail(None, StreamError::BadFormat, Some("a second stream header")).await;
                    return End::Closed;
                }
                Err(e) => {
                    if let ReadError::Xml(x) = &e {
                        let text = x.to_string();
                        stream.fail(None, StreamError::from_xml_error(x), Some(&text)).await;
                    }
                    return End::Closed;
                }
            },
            _ = tokio::time::sleep_until(last + idle) => {
                tracing::info!(remote, "closing idle s2s link");
                stream.close().await;
                return End::Closed;
            }
        }
    }
}

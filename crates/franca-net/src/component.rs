//! The XEP-0114 component listener: one task per connection. It feeds bytes to the sans-IO
//! [`ComponentStream`], registers the component's domain in `Server::components` once the
//! handshake is right, hands every stanza the component sends to `Server::route` (so local
//! accounts see it through the same inbound hooks as any other stanza), and writes what the
//! router queues for the component.
//!
//! The outbound side is a bounded queue of elements ([`QUEUE`]). A component is one shared
//! gateway for many users, so a full queue refuses the one stanza (the router bounces it with
//! `service-unavailable`) instead of closing the gateway for everyone. When the connection
//! ends, the domain is unregistered first (new stanzas bounce in the router), then whatever is
//! still queued is bounced with `service-unavailable` too: nothing is dropped silently.

use franca_core::Server;
use franca_core::external::ComponentLink;
use franca_proto::component::{Action, ComponentConfig, ComponentStream, to_component_xml};
use franca_proto::errors::{StanzaError, StanzaErrorCondition, StreamError};
use franca_xml::Element;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// Stanzas queued for one component before the router has to bounce.
pub const QUEUE: usize = 4096;
/// Connections open at once on the component listeners, authenticated or not. Components are
/// few; this only keeps a flood of unauthenticated sockets bounded.
const MAX_CONNECTIONS: usize = 256;
/// Bytes read per system call.
const READ_CHUNK: usize = 8192;
/// Most bytes written per batch drained from the queue.
const WRITE_BATCH: usize = 64 * 1024;

/// What every component connection shares.
pub struct ComponentContext {
    pub server: Arc<Server>,
    pub config: Arc<ComponentConfig>,
    pub shutdown: watch::Receiver<bool>,
    connections: Arc<Semaphore>,
}

impl ComponentContext {
    pub fn new(
        server: Arc<Server>,
        config: ComponentConfig,
        shutdown: watch::Receiver<bool>,
    ) -> ComponentContext {
        ComponentContext {
            server,
            config: Arc::new(config),
            shutdown,
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

/// Accept component connections forever on `listener`.
pub async fn accept(listener: TcpListener, ctx: Arc<ComponentContext>) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("component accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many component connections; refused");
            continue;
        };
        tokio::spawn(serve(ctx.clone(), tcp, peer, permit));
    }
}

/// The outbound queue of one connected component, as the router sees it.
pub struct Link {
    state: Mutex<LinkState>,
    ready: Notify,
}

#[derive(Default)]
struct LinkState {
    queue: VecDeque<Element>,
    /// The connection is ending: nothing more is taken.
    closed: bool,
}

impl Link {
    fn new() -> Arc<Link> {
        Arc::new(Link {
            state: Mutex::default(),
            ready: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // Held only for a push or a pop; nothing panics under it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next queued stanza.
    async fn recv(&self) -> Element {
        loop {
            if let Some(el) = self.lock().queue.pop_front() {
                return el;
            }
            self.ready.notified().await;
        }
    }

    fn try_recv(&self) -> Option<Element> {
        self.lock().queue.pop_front()
    }

    /// Stop taking stanzas; what was queued is returned for bouncing.
    fn close(&self) -> VecDeque<Element> {
        let mut s = self.lock();
        s.closed = true;
        std::mem::take(&mut s.queue)
    }
}

impl ComponentLink for Link {
    fn send(&self, stanza: &Element) -> bool {
        let mut s = self.lock();
        if s.closed || s.queue.len() >= QUEUE {
            return false;
        }
        s.queue.push_back(stanza.clone());
        drop(s);
        self.ready.notify_one();
        true
    }
}

/// Why the connection loop ended.
enum End {
    /// Our stream end was written (where it could be).
    Closed,
    /// EOF or an I/O error: nothing more can be written.
    Broken,
}

struct Connection {
    ctx: Arc<ComponentContext>,
    tcp: TcpStream,
    stream: ComponentStream,
    peer: SocketAddr,
    out: String,
    /// Set once the domain is registered.
    link: Option<(String, Arc<Link>)>,
}

/// Serve one accepted component connection.
pub async fn serve(
    ctx: Arc<ComponentContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    tracing::debug!(%peer, "component connection");
    let stream = ComponentStream::with_random_id(ctx.config.clone());
    let mut conn = Connection {
        ctx,
        tcp,
        stream,
        peer,
        out: String::new(),
        link: None,
    };
    conn.run().await;
    conn.finish().await;
}

impl Connection {
    async fn run(&mut self) {
        let limits = &self.ctx.server.config.limits;
        let negotiation = Duration::from_secs(limits.negotiation_timeout_seconds);
        let deadline = tokio::time::Instant::now() + negotiation;
        let mut shutdown = self.ctx.shutdown.clone();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let link = self.link.as_ref().map(|(_, l)| l.clone());
            let established = self.stream.is_established();
            let end = tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.stream.fail(StreamError::SystemShutdown, Some("the server is shutting down"));
                    self.pump(&mut &[][..]).await
                }
                el = recv(link.as_deref()) => self.outbound(el).await,
                read = self.tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => Some(End::Broken),
                    Ok(n) => {
                        let mut input = &buf[..n];
                        self.pump(&mut input).await
                    }
                },
                _ = tokio::time::sleep_until(deadline), if !established => {
                    self.stream.fail(
                        StreamError::ConnectionTimeout,
                        Some("the handshake took too long"),
                    );
                    self.pump(&mut &[][..]).await
                }
            };
            if let Some(end) = end {
                if matches!(end, End::Closed) {
                    let _ = self.tcp.shutdown().await;
                }
                return;
            }
        }
    }

    /// Run the stream's actions over `input` until it needs more bytes.
    async fn pump(&mut self, input: &mut &[u8]) -> Option<End> {
        while let Some(action) = self.stream.next_action(input) {
            match action {
                Action::Write(s) => self.out.push_str(&s),
                Action::Authenticated { domain } => self.register(domain),
                Action::Stanza(el) => {
                    // Writes answered so far go first (the <handshake/> before any reply).
                    if let Some(end) = self.flush().await {
                        return Some(end);
                    }
                    self.ctx.server.route(el).await;
                }
                Action::Close => {
                    let _ = self.flush().await;
                    return Some(End::Closed);
                }
            }
        }
        self.flush().await
    }

    fn register(&mut self, domain: String) {
        let link = Link::new();
        let dyn_link: Arc<dyn ComponentLink> = link.clone();
        match self.ctx.server.components.connect(&domain, dyn_link) {
            Ok(()) => {
                tracing::info!(peer = %self.peer, %domain, "component connected");
                metrics::gauge!("franca_components_connected").increment(1.0);
                self.link = Some((domain, link));
                self.stream.accepted();
            }
            Err(_) => {
                tracing::warn!(peer = %self.peer, %domain, "component refused: already connected");
                self.stream.conflict();
            }
        }
    }

    async fn outbound(&mut self, first: Element) -> Option<End> {
        self.out.push_str(&to_component_xml(&first));
        while self.out.len() < WRITE_BATCH {
            let Some(next) = self.link.as_ref().and_then(|(_, l)| l.try_recv()) else {
                break;
            };
            self.out.push_str(&to_component_xml(&next));
        }
        self.flush().await
    }

    async fn flush(&mut self) -> Option<End> {
        if self.out.is_empty() {
            return None;
        }
        let result = self.tcp.write_all(self.out.as_bytes()).await;
        self.out = String::new();
        result.err().map(|_| End::Broken)
    }

    /// Unregister, then bounce what is still queued (the router no longer queues for us).
    async fn finish(&mut self) {
        let Some((domain, link)) = self.link.take() else {
            return;
        };
        let dyn_link: Arc<dyn ComponentLink> = link.clone();
        self.ctx.server.components.disconnect(&domain, &dyn_link);
        metrics::gauge!("franca_components_connected").decrement(1.0);
        tracing::info!(peer = %self.peer, %domain, "component disconnected");
        let left = link.close();
        if !left.is_empty() {
            tracing::debug!(%domain, count = left.len(), "bouncing stanzas queued for the component");
        }
        for stanza in left {
            let err = StanzaError::new(StanzaErrorCondition::ServiceUnavailable)
                .with_text("the component disconnected");
            self.ctx.server.reply_error(&stanza, err).await;
        }
    }
}

async fn recv(link: Option<&Link>) -> Element {
    match link {
        Some(l) => l.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn link_is_bounded_and_closing_hands_back_the_queue() {
        let link = Link::new();
        let el = Element::new("message", "jabber:client");
        for _ in 0..QUEUE {
            assert!(link.send(&el));
        }
        assert!(!link.send(&el), "a full queue refuses");
        assert_eq!(link.recv().await, el);
        assert!(link.send(&el), "room again after a pop");
        let left = link.close();
        assert_eq!(left.len(), QUEUE);
        assert!(!link.send(&el), "a closed link refuses");
        assert!(link.try_recv().is_none());
    }
}

//! What every c2s transport does with a [`C2sStream`] besides moving bytes: look up
//! credentials, apply the login limits, bind the resource, answer pre-authentication IQs, hand
//! stanzas to the router, and build the idle ping. TCP (`c2s.rs`) and WebSocket
//! (`websocket.rs`) drive the same [`XmppStream`], so login and routing behave the same on both;
//! only writing, TLS and framing differ.

use crate::c2s::C2sContext;
use franca_core::Session;
use franca_core::outbox::Receiver;
use franca_proto::c2s::{Action, C2sStream};
use franca_proto::errors::StreamError;
use franca_proto::sasl::{ScramHash, ScramKeys};
use franca_xml::Element;
use jid::BareJid;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// An action only the transport can carry out.
pub(crate) enum Step {
    /// Bytes for the peer (one framed element on WebSocket).
    Write(String),
    /// Upgrade to TLS now (TCP only), after writing what came before.
    StartTls,
    /// The stream is over: write what came before, then close.
    Close,
}

/// One client stream with its session, independent of the transport.
pub(crate) struct XmppStream {
    pub ctx: Arc<C2sContext>,
    pub peer: SocketAddr,
    pub stream: C2sStream,
    pub session: Option<Arc<Session>>,
    pub rx: Option<Receiver>,
}

impl XmppStream {
    pub fn new(ctx: Arc<C2sContext>, peer: SocketAddr, stream: C2sStream) -> XmppStream {
        XmppStream {
            ctx,
            peer,
            stream,
            session: None,
            rx: None,
        }
    }

    /// Run the stream's actions over `input` until one needs the transport, or until the
    /// stream needs more input (`None`).
    pub async fn next_step(&mut self, input: &mut &[u8]) -> Option<Step> {
        while let Some(action) = self.stream.next_action(input) {
            match action {
                Action::Write(s) => return Some(Step::Write(s)),
                Action::StartTls => return Some(Step::StartTls),
                Action::Close => return Some(Step::Close),
                Action::Credentials { account, hash } => self.credentials(account, hash).await,
                Action::AuthFailed { account } => {
                    self.ctx.logins.failed(self.peer.ip(), account.as_deref());
                    metrics::counter!("franca_c2s_auth_failures_total").increment(1);
                }
                Action::Authenticated { account } => {
                    self.ctx.logins.succeeded(self.peer.ip(), &account);
                    tracing::debug!(peer = %self.peer, %account, "authenticated");
                }
                Action::Bind { resource } => self.bind(resource).await,
                Action::PreAuthIq(iq) => {
                    let reply =
                        (self.ctx.preauth)(self.ctx.server.clone(), self.peer.ip(), iq).await;
                    self.stream.send_element(&reply);
                }
                Action::Stanza(stanza) => {
                    if let Some(session) = &self.session {
                        self.ctx.server.route_from_session(session, stanza).await;
                    }
                }
            }
        }
        None
    }

    async fn credentials(&mut self, account: String, hash: ScramHash) {
        if let Err(remaining) = self.ctx.logins.check(self.peer.ip(), &account) {
            let text = format!(
                "too many failed logins; try again in {} seconds",
                remaining.as_secs().max(1)
            );
            return self.stream.refuse_login(&text);
        }
        let keys = match self
            .ctx
            .server
            .store
            .credentials(&account, hash.name())
            .await
        {
            Ok(creds) => creds.map(|c| ScramKeys {
                hash,
                salt: c.salt,
                iterations: c.iterations,
                stored_key: c.stored_key,
                server_key: c.server_key,
            }),
            Err(e) => {
                tracing::error!(%account, "credential lookup failed: {e}");
                None
            }
        };
        self.stream.provide_credentials(&account, keys);
    }

    async fn bind(&mut self, resource: Option<String>) {
        let Some(account) = self.stream.account().map(str::to_owned) else {
            return self.stream.bound(Err("not-allowed"));
        };
        let Ok(bare) = BareJid::new(&account) else {
            return self.stream.bound(Err("internal-server-error"));
        };
        // The account may have been removed since it authenticated (`franca user remove`).
        if self.ctx.server.removed_during_login(&bare) {
            return self.stream.bound(Err("not-authorized"));
        }
        let resource = resource.unwrap_or_else(random_resource);
        let Ok(full) = bare.with_resource_str(&resource) else {
            return self.stream.bound(Err("bad-request"));
        };
        let bound = self.ctx.server.bind(full.clone()).await;
        tracing::debug!(peer = %self.peer, jid = %full, tls = self.stream.is_tls(), "session bound");
        self.session = Some(bound.session);
        self.rx = Some(bound.rx);
        self.stream.bound(Ok(full.as_str()));
    }

    /// XEP-0199 §4.2 server-to-client ping on an idle session; queued in the stream's output.
    fn ping(&mut self) {
        let Some(session) = &self.session else {
            return;
        };
        let ping = Element::new("iq", franca_proto::ns::NS_CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "franca-idle-ping")
            .with_attr("from", session.jid.domain().as_str())
            .with_attr("to", session.jid.as_str())
            .with_child(Element::new("ping", franca_proto::ns::NS_PING));
        self.stream.send_element(&ping);
    }

    /// The connection is gone: unbind the session and run the closing hooks.
    pub async fn finish(&mut self) {
        if let Some(session) = self.session.take() {
            Box::pin(self.ctx.server.session_closed(&session)).await;
        }
    }
}

/// Longest time a client has to answer the idle ping before the stream is closed (shorter when
/// the idle timeout itself is shorter).
const PING_GRACE: Duration = Duration::from_secs(60);

/// The clocks of one stream: negotiation must finish in time, and an established stream that
/// stays silent is pinged (XEP-0199 §4.2), then closed if the ping goes unanswered.
pub(crate) struct Clock {
    negotiation_deadline: Instant,
    idle: Duration,
    last_read: Instant,
    /// When the idle ping went out; any bytes from the client answer it.
    pinged: Option<Instant>,
}

impl Clock {
    pub fn new(limits: &franca_core::config::LimitsConfig) -> Clock {
        let now = Instant::now();
        Clock {
            negotiation_deadline: now + Duration::from_secs(limits.negotiation_timeout_seconds),
            idle: Duration::from_secs(limits.idle_timeout_seconds.max(1)),
            last_read: now,
            pinged: None,
        }
    }

    /// When [`Clock::expired`] is due.
    pub fn deadline(&self, established: bool) -> Instant {
        match (established, self.pinged) {
            (true, Some(sent)) => sent + self.idle.min(PING_GRACE),
            (true, None) => self.last_read + self.idle,
            (false, _) => self.negotiation_deadline,
        }
    }

    /// The client sent something.
    pub fn heard(&mut self) {
        self.last_read = Instant::now();
        self.pinged = None;
    }

    /// The deadline passed: queue the idle ping, or fail the stream with
    /// `<connection-timeout/>`. Either way the caller pumps the stream to write it.
    pub fn expired(&mut self, x: &mut XmppStream) {
        let established = x.stream.is_established();
        if established && self.pinged.is_none() {
            // Silent for `idle`: ask before hanging up, as a client behind a NAT may just be
            // quiet. An answer (any bytes) resets the clock.
            self.pinged = Some(Instant::now());
            x.ping();
            return;
        }
        let text = if established {
            "no answer to the idle ping"
        } else {
            "stream negotiation took too long"
        };
        x.stream.fail(StreamError::ConnectionTimeout, Some(text));
    }
}

/// Wait for the next outbound item; never resolves before the stream is bound.
pub(crate) async fn recv(rx: &mut Option<Receiver>) -> franca_core::Outbound {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn random_resource() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().r#gen();
    format!("franca-{n:016x}")
}

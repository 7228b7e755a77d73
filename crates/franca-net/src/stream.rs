//! What every c2s transport does with a [`C2sStream`] besides moving bytes: look up
//! credentials, apply the login limits, bind the resource, answer pre-authentication IQs, hand
//! stanzas to the router, and build the idle ping. TCP (`c2s.rs`) and WebSocket
//! (`websocket.rs`) drive the same [`XmppStream`], so login and routing behave the same on both;
//! only writing, TLS and framing differ.
//!
//! XEP-0198 stream management and XEP-0352 client state indication live here too, so every
//! transport gets them: the transport passes each queued stanza through
//! [`XmppStream::outbound_stanza`] (which counts it, or holds it for an inactive client) and
//! calls [`XmppStream::finish`] when the connection ends, which hibernates a resumable session
//! instead of ending it. Their state is allocated only when a client turns either on.

mod sasl2;

use crate::c2s::C2sContext;
use franca_core::detached::{Hibernated, Lookup, TAKEOVER, read_queued};
use franca_core::outbox::Receiver;
use franca_core::session::Serialised;
use franca_core::{Outbound, Session};
use franca_proto::c2s::{Action, C2sStream};
use franca_proto::csi::{ClientState, CsiQueue, Urgency};
use franca_proto::errors::StreamError;
use franca_proto::sasl::{ScramHash, ScramKeys};
use franca_proto::sm::{self, Nonza, Resumption, SmError, StreamManagement};
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

/// What a stanza from the session queue becomes on the wire ([`XmppStream::outbound_stanza`]).
/// A fan-out stanza stays shared here too; the transport writes it with
/// [`XmppStream::write_stanza`] or [`XmppStream::framed`].
pub(crate) enum Out {
    /// Write it (the common case, without allocating).
    One(Serialised),
    /// Held for an inactive client (XEP-0352).
    Held,
    /// Write these, in order: held stanzas released by an urgent one, then that one.
    Many(Vec<Serialised>),
}

/// Stanzas held at most for an inactive client; one more releases them all (`CsiQueue`).
const CSI_HOLD: usize = 256;
/// XEP-0198: ask for an acknowledgement after this many unacknowledged stanzas…
const REQUEST_EVERY: u32 = 5;
/// …or at once when a stanza follows this much quiet, so a lone message is confirmed soon.
const REQUEST_IDLE: Duration = Duration::from_secs(5);
/// How long a resuming stream waits for the old connection of its session to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// A session taken over by XEP-0198 resumption ([`XmppStream::take_over`]).
pub(crate) struct TakenOver {
    /// `<resumed/>`, to write first.
    pub element: Element,
    /// Stanzas to write after it ([`XmppStream::send_backlog`]).
    pub backlog: Vec<Outbound>,
}

/// XEP-0198 and XEP-0352 state of one stream; boxed and created only when the client enables
/// either, so an idle session without them pays one pointer.
struct Mobile {
    sm: StreamManagement<Serialised>,
    /// `Some` while the client is inactive.
    csi: Option<CsiQueue<Serialised>>,
    /// When the last stanza was written (for [`REQUEST_IDLE`]).
    last_sent: Instant,
    /// The resumption time granted.
    timeout: Duration,
}

impl Mobile {
    fn new(max_unacked: usize) -> Mobile {
        Mobile {
            sm: StreamManagement::new(max_unacked),
            csi: None,
            last_sent: Instant::now(),
            timeout: Duration::ZERO,
        }
    }
}

/// One client stream with its session, independent of the transport.
pub(crate) struct XmppStream {
    pub ctx: Arc<C2sContext>,
    pub peer: SocketAddr,
    pub stream: C2sStream,
    pub session: Option<Arc<Session>>,
    pub rx: Option<Receiver>,
    mobile: Option<Box<Mobile>>,
    /// The connection is to be treated as broken although the stream was closed (the idle
    /// ping went unanswered): a resumable session hibernates.
    lost: bool,
}

impl XmppStream {
    pub fn new(ctx: Arc<C2sContext>, peer: SocketAddr, stream: C2sStream) -> XmppStream {
        XmppStream {
            ctx,
            peer,
            stream,
            session: None,
            rx: None,
            mobile: None,
            lost: false,
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
                        // Counted before routing, which consumes it; the <a/> answering a
                        // later <r/> is written only after routing finished.
                        if let Some(m) = self.mobile.as_deref_mut() {
                            m.sm.handled(&stanza);
                        }
                        self.ctx.server.route_from_session(session, stanza).await;
                    }
                }
                Action::Nonza(el) => self.nonza(&el),
                Action::Resume { previd, h } => self.resume(&previd, h).await,
                Action::FastTokens { account, client_id } => {
                    self.fast_tokens(account, client_id).await;
                }
                Action::FastTokenUsed {
                    account,
                    client_id,
                    key,
                    count,
                    invalidate,
                } => {
                    self.fast_token_used(account, client_id, key, count, invalidate)
                        .await;
                }
                Action::IssueFastToken {
                    account,
                    client_id,
                    mechanism,
                } => self.issue_fast_token(account, client_id, mechanism).await,
                Action::Bind2Inline {
                    sm_enable,
                    inactive,
                    extensions,
                } => self.bind2_inline(sm_enable, inactive, extensions).await,
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
        // Through the session queue, so XEP-0198 counts it like every other stanza.
        session.send(&ping);
    }

    /// The full JID a queued fan-out stanza is addressed to: this stream's session.
    fn recipient(&self) -> &str {
        // Stanzas are queued only for a bound session, so there is always one.
        self.session.as_ref().map_or("", |s| s.jid.as_str())
    }

    /// Appends a stanza from the session queue to the transport's write buffer, as a
    /// `jabber:client` stream carries it (a fan-out stanza gets this session's `to` here).
    pub fn write_stanza(&self, item: &Serialised, out: &mut String) {
        item.write_to(self.recipient(), out);
    }

    /// A stanza from the session queue as one standalone document (WebSocket, BOSH).
    pub fn framed(&self, item: &Serialised) -> String {
        item.framed(self.recipient())
    }

    /// A stanza from the session queue is about to be written: with XEP-0352 inactive it may
    /// be held; with XEP-0198 every stanza written is kept until acknowledged, and an `<r/>`
    /// may follow (queued in the stream, so the transport must pump it afterwards).
    pub fn outbound_stanza(&mut self, item: Serialised) -> Out {
        let Some(m) = self.mobile.as_deref_mut() else {
            return Out::One(item);
        };
        let out = match &mut m.csi {
            None => Out::One(item),
            Some(queue) => {
                // The rules never look at `to`, so a fan-out stanza is read without it.
                let released = match read_queued(item.classifiable()) {
                    Some(stanza) => queue.push_stanza(&stanza, item),
                    // Ours, so it parses; if not, delaying it helps nobody.
                    None => queue.push(Urgency::Urgent, None, item),
                };
                if released.is_empty() {
                    return Out::Held;
                }
                Out::Many(released)
            }
        };
        if !m.sm.is_enabled() {
            return out;
        }
        let writable = match &out {
            Out::One(x) => self.record_sent(x.clone()),
            // Every one is recorded, even after one failed, so that none is lost.
            Out::Many(list) => {
                let mut ok = true;
                for x in list {
                    ok &= self.record_sent(x.clone());
                }
                ok
            }
            Out::Held => true,
        };
        if writable { out } else { Out::Held }
    }

    /// XEP-0198 bookkeeping for a stanza about to be written to the client. False when it
    /// must not be written: the stream is over (the unacknowledged limit was passed), and the
    /// stanza waits with the unacknowledged ones for the end of the session, so that it is
    /// neither lost nor, once stored offline, a duplicate of one the client did get.
    fn record_sent(&mut self, item: Serialised) -> bool {
        let Some(m) = self.mobile.as_deref_mut() else {
            return true;
        };
        let closed = self.stream.is_closed();
        if let Err(e) = m.sm.sent(item) {
            if !closed {
                tracing::debug!(peer = %self.peer, "{e}");
                self.stream.fail_with(&e.to_element());
            }
            return false;
        }
        if closed {
            return false;
        }
        let now = Instant::now();
        let idle = now.saturating_duration_since(m.last_sent);
        m.last_sent = now;
        if m.sm.should_request(idle, REQUEST_EVERY, REQUEST_IDLE) {
            let r = m.sm.request();
            self.stream.send_element(&r);
        }
        true
    }

    /// When an `<r/>` is due because stanzas were left unacknowledged on a quiet stream
    /// (XEP-0198 §4: the server may ask at any time); `None` while one is outstanding.
    pub fn request_due(&self) -> Option<Instant> {
        let m = self.mobile.as_deref()?;
        // With unlimited idleness this is true exactly when stanzas are unacknowledged and
        // no request is outstanding (or it would already have been sent with a stanza).
        m.sm.should_request(Duration::MAX, REQUEST_EVERY, REQUEST_IDLE)
            .then_some(m.last_sent + REQUEST_IDLE)
    }

    /// Sends the `<r/>` that [`request_due`](Self::request_due) announced.
    fn request_ack(&mut self) {
        if let Some(m) = self.mobile.as_deref_mut() {
            let r = m.sm.request();
            self.stream.send_element(&r);
        }
    }

    /// Writes a stanza through the stream (not the transport's fast path), counted.
    fn write_counted(&mut self, item: Serialised) {
        if self.record_sent(item.clone()) {
            let xml = item.to_xml(self.recipient());
            self.stream.send_stanza_xml(&xml);
        }
    }

    /// XEP-0198 and XEP-0352 elements on a bound stream.
    fn nonza(&mut self, el: &Element) {
        if let Some(state) = ClientState::parse(el) {
            return self.client_state(state);
        }
        let Some(parsed) = Nonza::parse(el) else {
            // Another element of urn:xmpp:csi:0: XEP-0352 defines none.
            return;
        };
        let nonza = match parsed {
            Ok(n) => n,
            Err(e) if e.closes_stream() => return self.stream.fail_with(&e.to_element()),
            Err(e) => return self.stream.send_element(&e.to_element()),
        };
        match nonza {
            Nonza::Enable { resume, max } => {
                let answer = self.sm_enable(resume, max);
                self.stream.send_element(&answer);
            }
            Nonza::Request => {
                if let Some(a) = self.mobile.as_ref().and_then(|m| m.sm.answer_request()) {
                    self.stream.send_element(&a);
                }
            }
            Nonza::Ack { h } => {
                if let Some(m) = self.mobile.as_deref_mut()
                    && let Err(e) = m.sm.ack(h)
                {
                    self.stream.fail_with(&e.to_element());
                }
            }
            // §5: resumption replaces binding; this stream is bound already.
            Nonza::Resume { .. } => self
                .stream
                .send_element(&SmError::UnexpectedRequest.to_element()),
            // Server-to-client elements mean nothing from a client.
            Nonza::Enabled { .. } | Nonza::Failed { .. } | Nonza::Resumed { .. } => {}
        }
    }

    fn mobile(&mut self) -> &mut Mobile {
        let max_unacked = self.ctx.server.config.stream_management.max_unacked;
        self.mobile
            .get_or_insert_with(|| Box::new(Mobile::new(max_unacked)))
    }

    /// XEP-0198 §3: enables stream management on the bound session; the answer
    /// (`<enabled/>` or `<failed/>`) is for the caller to write, top-level or inside a XEP-0386
    /// `<bound/>`.
    pub(crate) fn sm_enable(&mut self, resume: bool, max: Option<u32>) -> Element {
        let Some(session) = self.session.clone() else {
            return SmError::UnexpectedRequest.to_element();
        };
        let ctx = self.ctx.clone();
        let cfg = &ctx.server.config.stream_management;
        let resumption = (resume && cfg.resume_timeout_seconds > 0).then(|| Resumption {
            id: resumption_id(),
            max: Some(sm::negotiate_max(max, cfg.resume_timeout_seconds)),
            location: Some(cfg.location.clone()).filter(|l| !l.is_empty()),
        });
        let m = self.mobile();
        match m.sm.enable(true, resumption.clone()) {
            Ok(enabled) => {
                if let Some(r) = resumption {
                    m.timeout = Duration::from_secs(u64::from(r.max.unwrap_or(0)));
                    ctx.server.detached.register(&r.id, session);
                }
                enabled
            }
            Err(e) => e.to_element(),
        }
    }

    /// XEP-0352 §3. Going active releases everything held, in order.
    pub(crate) fn client_state(&mut self, state: ClientState) {
        match state {
            ClientState::Inactive => {
                let m = self.mobile();
                if m.csi.is_none() {
                    m.csi = Some(CsiQueue::new(CSI_HOLD));
                }
            }
            ClientState::Active => {
                let Some(mut queue) = self.mobile.as_deref_mut().and_then(|m| m.csi.take()) else {
                    return;
                };
                for item in queue.flush() {
                    self.write_counted(item);
                }
                // An active client without stream management needs no state at all.
                if self.mobile.as_ref().is_some_and(|m| !m.sm.is_enabled()) {
                    self.mobile = None;
                }
            }
        }
    }

    /// XEP-0198 §5 with `<resume/>` as a top-level element: `<resumed/>` or `<failed/>`,
    /// then the stanzas the client has not received.
    async fn resume(&mut self, previd: &str, h: u32) {
        match self.take_over(previd, h).await {
            Ok(resumed) => {
                // XEP-0388: a resumption inside SASL2 reports the session's full JID.
                if let Some(session) = &self.session {
                    self.stream.resumed_session(session.jid.as_str());
                }
                self.stream.resumed(Ok(resumed.element));
                self.send_backlog(resumed.backlog);
            }
            Err(failed) => self.stream.resumed(Err(failed)),
        }
    }

    /// XEP-0198 §5: takes over a hibernated session of the authenticated account in place of
    /// binding one. On success this stream owns the session; the caller writes the
    /// `<resumed/>` (top-level, or inside a XEP-0388 `<success/>`) and then
    /// [`send_backlog`](Self::send_backlog). `Err(<failed/>)` leaves the stream unbound.
    pub(crate) async fn take_over(&mut self, previd: &str, h: u32) -> Result<TakenOver, Element> {
        let not_found = || SmError::UnknownSession.to_element();
        let Some(account) = self.stream.account().and_then(|a| BareJid::new(a).ok()) else {
            return Err(not_found());
        };
        let server = self.ctx.server.clone();
        let deadline = Instant::now() + TAKEOVER_WAIT;
        let state = loop {
            match server.detached.resume(previd, &account) {
                Lookup::Found(state) => break Some(state),
                Lookup::NotFound => break None,
                // The old connection was asked to close; it hibernates the session when done.
                Lookup::Pending if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Lookup::Pending => break None,
            }
        };
        let Some(state) = state else {
            tracing::debug!(peer = %self.peer, %account, "resumption failed: no such session");
            return Err(not_found());
        };
        let Hibernated {
            session,
            mut rx,
            mut sm,
            timeout,
        } = *state;
        // Ended while it slept (account removed, or the resource bound again by a new login).
        let bound = server
            .sessions
            .get(&session.jid)
            .is_some_and(|s| s.id == session.id);
        if !bound {
            Box::pin(server.end_session(&session, Some(rx), sm.take_unacked())).await;
            return Err(not_found());
        }
        let resumed = match sm.resume(h) {
            Ok(r) => r,
            Err(e) => {
                // §5: an h beyond what was sent; the old session cannot go on either.
                self.stream.fail_with(&e.to_element());
                Box::pin(server.end_session(&session, Some(rx), sm.take_unacked())).await;
                return Err(not_found());
            }
        };
        if let Some(id) = sm.resumption_id() {
            server.detached.register(id, session.clone());
        }
        tracing::debug!(peer = %self.peer, jid = %session.jid, resent = resumed.retransmit.len(), "session resumed");
        metrics::counter!("franca_sm_resumed_total").increment(1);
        self.mobile = Some(Box::new(Mobile {
            sm,
            csi: None,
            last_sent: Instant::now(),
            timeout,
        }));
        // Unacknowledged first, then what queued while it slept, in order.
        let mut backlog: Vec<Outbound> =
            resumed.retransmit.into_iter().map(Outbound::from).collect();
        while let Some(item) = rx.try_recv() {
            backlog.push(item);
        }
        self.session = Some(session);
        self.rx = Some(rx);
        Ok(TakenOver {
            element: resumed.element,
            backlog,
        })
    }

    /// Writes what a resumed session owes its client ([`take_over`](Self::take_over)), counted.
    pub(crate) fn send_backlog(&mut self, backlog: Vec<Outbound>) {
        for item in backlog {
            match item {
                Outbound::Xml(xml) => self.write_counted(Serialised::Xml(xml)),
                Outbound::Fanout(f) => self.write_counted(Serialised::Fanout(f)),
                // The old connection's <conflict/>, when it broke before reading it, is not
                // for this one.
                Outbound::Close(StreamError::Conflict, Some(t)) if t == TAKEOVER => {}
                Outbound::Close(error, text) => {
                    // Anything after it stays counted as unacknowledged (XEP-0198 state), so
                    // the end of the session handles it.
                    self.stream.fail(error, text.as_deref());
                }
            }
        }
    }

    /// The connection is gone. A resumable session whose connection broke (or is being
    /// taken over) hibernates for its resumption time; any other session ends now: unbound,
    /// with the closing hooks, and what it was never confirmed to receive handled as
    /// undeliverable (XEP-0198 §5).
    pub async fn finish(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let server = self.ctx.server.clone();
        let rx = self.rx.take();
        let Some(m) = self.mobile.take() else {
            return Box::pin(server.end_session(&session, rx, Vec::new())).await;
        };
        let Mobile {
            mut sm,
            csi,
            timeout,
            ..
        } = *m;
        // Held stanzas were never written. With stream management they join the unacknowledged
        // ones, after them, so a resumption sends them and the counters stay in step.
        let mut held = csi.map(|mut q| q.flush()).unwrap_or_default();
        if sm.is_enabled() {
            for item in held.drain(..) {
                let _ = sm.sent(item);
            }
        }
        if let Some(id) = sm.resumption_id().map(str::to_owned) {
            let broken = !self.stream.is_closed() || self.lost;
            match rx {
                Some(rx) if broken || server.detached.takeover_requested(&id) => {
                    let state = Hibernated {
                        session,
                        rx,
                        sm,
                        timeout,
                    };
                    match server.detached.hibernate(&id, state) {
                        Ok(epoch) => {
                            tracing::debug!(peer = %self.peer, ?timeout, "session hibernated");
                            metrics::counter!("franca_sm_hibernated_total").increment(1);
                            return expire_later(self.ctx.clone(), id, epoch, timeout);
                        }
                        Err(state) => {
                            tracing::warn!("too many sessions waiting for resumption; ending one");
                            let Hibernated {
                                session,
                                rx,
                                mut sm,
                                ..
                            } = state;
                            let unacked = sm.take_unacked();
                            return Box::pin(server.end_session(&session, Some(rx), unacked)).await;
                        }
                    }
                }
                rx => {
                    server.detached.forget(&id);
                    let unacked = sm.take_unacked();
                    return Box::pin(server.end_session(&session, rx, unacked)).await;
                }
            }
        }
        let mut unacked = sm.take_unacked();
        unacked.append(&mut held);
        Box::pin(server.end_session(&session, rx, unacked)).await;
    }
}

/// Ends hibernation `epoch` of `id` when its resumption time is over, or at once when the
/// server shuts down (what it holds must reach storage before storage closes).
fn expire_later(ctx: Arc<C2sContext>, id: String, epoch: u64, timeout: Duration) {
    let mut shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        if !*shutdown.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = shutdown.changed() => {}
            }
        }
        if let Some(state) = ctx.server.detached.expire(&id, epoch) {
            let Hibernated {
                session,
                rx,
                mut sm,
                ..
            } = *state;
            tracing::debug!(jid = %session.jid, "resumption time over; ending the session");
            metrics::counter!("franca_sm_expired_total").increment(1);
            let unacked = sm.take_unacked();
            ctx.server.end_session(&session, Some(rx), unacked).await;
        }
    });
}

/// An unguessable XEP-0198 resumption id: 128 random bits in hex.
fn resumption_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().r#gen();
    format!("{n:032x}")
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

    /// When [`Clock::expired`] is due for `x`: its own deadline, or a XEP-0198 `<r/>`.
    pub fn next(&self, x: &XmppStream) -> Instant {
        let own = self.deadline(x.stream.is_established());
        x.request_due().map_or(own, |r| r.min(own))
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

    /// The deadline passed: send a due XEP-0198 `<r/>`, queue the idle ping, or fail the
    /// stream with `<connection-timeout/>`. The caller then pumps the stream to write it.
    pub fn expired(&mut self, x: &mut XmppStream) {
        if x.request_due().is_some_and(|at| at <= Instant::now()) {
            return x.request_ack();
        }
        let established = x.stream.is_established();
        if established && self.pinged.is_none() {
            // Silent for `idle`: ask before hanging up, as a client behind a NAT may just be
            // quiet. An answer (any bytes) resets the clock.
            self.pinged = Some(Instant::now());
            x.ping();
            return;
        }
        // A connection that stopped answering is a broken one: its session may be resumed.
        x.lost = established;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xep0198_resumption_ids_are_random_and_pass_the_previd_check() {
        let a = resumption_id();
        let b = resumption_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(sm::is_valid_previd(&a));
    }
}

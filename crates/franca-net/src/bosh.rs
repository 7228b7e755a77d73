//! XMPP over BOSH (XEP-0124 "Bidirectional-streams Over Synchronous HTTP", XEP-0206 "XMPP
//! Over BOSH") at `/http-bind` on the HTTP listeners.
//!
//! Each BOSH session is one task that owns an [`XmppStream`] (the same login, binding and
//! routing TCP and WebSocket streams use) and a sans-IO [`BoshSession`] (rid window, held
//! requests, replays, timers). HTTP requests reach the task through a small channel and wait
//! on a oneshot for their response, which may come at once, when data arrives for the client,
//! when a newer request pushes them out, or when their `wait` runs out: that is long polling.
//! A registry maps each `sid` to its task; it is capped (`bosh.max_sessions`), and every
//! session also holds one slot of the per-address connection limit that TCP and WebSocket
//! streams count against, for its whole life.
//!
//! Request bodies are read up to the stanza limit plus room for the `<body/>` wrapper; larger
//! ones get HTTP 413 before anything is parsed. `sid`s are 128 random bits from a CSPRNG: the
//! `sid` is the only thing that ties a request to a logged-in session.
//!
//! As over WebSocket, a session is secure (SASL without STARTTLS) when the request came over
//! TLS (the `https` listener or the multiplexed port) or from loopback (a TLS proxy in front
//! of the plain listener). Each listener serves its own registry; a BOSH client keeps one URL
//! for the life of its session.

use crate::c2s::C2sContext;
use crate::http::HttpPeer;
use crate::stream::{Out, Step, XmppStream, recv};
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use franca_core::Outbound;
use franca_core::session::Serialised;
use franca_proto::bosh::{
    self, Body, BoshSession, Condition, EndReason, Event, HttpResponse, RequestId, parse_body,
};
use franca_proto::c2s::{C2sOptions, C2sStream, Framing};
use franca_proto::errors::StreamError;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Room for the `<body/>` wrapper (a creation request has about fifteen attributes) around
/// the largest stanza.
const BODY_MARGIN: usize = 2048;
/// Requests queued for one session task while it is busy. A well-behaved client has at most
/// `requests` (2 by default) open; the session refuses more itself, this only bounds the queue.
const INBOX: usize = 8;
/// Most bytes of queued stanzas a client that stops polling may leave behind (at least four
/// of the largest stanzas).
const MAX_QUEUED_BYTES: usize = 1024 * 1024;

/// The `/http-bind` route: POST carries the protocol, GET and OPTIONS answer people and
/// tools. CORS preflights are answered by the CORS layer in front of it.
pub fn routes<S: Clone + Send + Sync + 'static>(ctx: Arc<C2sContext>) -> MethodRouter<S> {
    let service = Arc::new(Bosh::new(ctx));
    post(request).get(info).options(options).with_state(service)
}

/// One listener's BOSH endpoint.
struct Bosh {
    ctx: Arc<C2sContext>,
    config: Arc<bosh::BoshConfig>,
    sessions: Arc<Registry>,
}

/// An HTTP request handed to its session task.
struct Request {
    body: Body,
    reply: oneshot::Sender<HttpResponse>,
}

/// Live sessions by `sid`.
struct Registry {
    max: usize,
    map: Mutex<HashMap<String, mpsc::Sender<Request>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<Request>>> {
        // A poisoned lock means a panic elsewhere already; the map is still consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session; `false` when the registry is full (or, vanishingly unlikely, the sid
    /// is taken).
    fn insert(&self, sid: &str, tx: mpsc::Sender<Request>) -> bool {
        let mut map = self.lock();
        if map.len() >= self.max || map.contains_key(sid) {
            return false;
        }
        map.insert(sid.to_owned(), tx);
        true
    }

    fn get(&self, sid: &str) -> Option<mpsc::Sender<Request>> {
        self.lock().get(sid).cloned()
    }
}

/// Removes its session from the registry when the task ends, however it ends.
struct Entry {
    registry: Arc<Registry>,
    sid: String,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.sid);
    }
}

impl Bosh {
    fn new(ctx: Arc<C2sContext>) -> Bosh {
        let cfg = &ctx.server.config;
        let limits = ctx.stream.limits;
        let config = bosh::BoshConfig {
            domains: ctx.stream.domains.clone(),
            max_wait: cfg.bosh.max_wait_seconds.max(1),
            max_hold: cfg.bosh.max_hold.max(1),
            inactivity: cfg.bosh.inactivity_seconds.max(1),
            max_body_bytes: limits.max_stanza_bytes.saturating_add(BODY_MARGIN),
            max_queued_bytes: MAX_QUEUED_BYTES.max(limits.max_stanza_bytes.saturating_mul(4)),
            limits,
            ..bosh::BoshConfig::default()
        };
        let sessions = Arc::new(Registry {
            max: cfg.bosh.max_sessions,
            map: Mutex::new(HashMap::new()),
        });
        Bosh {
            ctx,
            config: Arc::new(config),
            sessions,
        }
    }

    /// A request without `sid` (XEP-0124 §7.1).
    async fn create(&self, body: Body, http: HttpPeer) -> Response {
        let legacy = body.ver.is_none();
        // The same per-address budget as TCP and WebSocket streams: a session is a stream.
        let Some(guard) = self.ctx.connections.try_acquire(http.addr.ip()) else {
            metrics::counter!("franca_c2s_connections_refused_total").increment(1);
            tracing::warn!(peer = %http.addr, "too many connections from this address (BOSH)");
            let refusal = Condition::PolicyViolation.response(legacy);
            return http_response(StatusCode::TOO_MANY_REQUESTS, refusal);
        };
        let sid = new_sid();
        let (session, first, events) =
            match BoshSession::new(self.config.clone(), sid.clone(), body, Instant::now()) {
                Ok(created) => created,
                Err(refusal) => return respond(refusal),
            };
        let (tx, inbox) = mpsc::channel(INBOX);
        if !self.sessions.insert(&sid, tx) {
            tracing::warn!(peer = %http.addr, "BOSH session limit reached");
            let refusal = Condition::UndefinedCondition.response(legacy);
            return http_response(StatusCode::SERVICE_UNAVAILABLE, refusal);
        }
        metrics::counter!("franca_bosh_sessions_total").increment(1);
        let entry = Entry {
            registry: self.sessions.clone(),
            sid,
        };
        let (reply, answer) = oneshot::channel();
        let secure = http.tls || http.addr.ip().is_loopback();
        let mut task = Task::new(self.ctx.clone(), session, http.addr, secure);
        task.open.insert(first, reply);
        tokio::spawn(async move {
            task.run(events, inbox).await;
            drop(entry);
            drop(guard);
        });
        wait(answer, legacy).await
    }

    /// A request of an existing session.
    async fn forward(&self, sid: &str, body: Body) -> Response {
        // §17.1: whether the client is legacy is only known from this body; a client that
        // sends `ver` only on creation gets the legacy 404, which it also understands.
        let legacy = body.ver.is_none();
        let Some(tx) = self.sessions.get(sid) else {
            return respond(Condition::ItemNotFound.response(legacy));
        };
        let (reply, answer) = oneshot::channel();
        match tx.try_send(Request { body, reply }) {
            Ok(()) => wait(answer, legacy).await,
            // Far more simultaneous requests than any `requests` window allows (§11).
            Err(mpsc::error::TrySendError::Full(_)) => {
                respond(Condition::PolicyViolation.response(legacy))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                respond(Condition::ItemNotFound.response(legacy))
            }
        }
    }
}

/// `POST /http-bind`.
async fn request(
    State(bosh): State<Arc<Bosh>>,
    ConnectInfo(http): ConnectInfo<HttpPeer>,
    body: axum::body::Body,
) -> Response {
    let bytes = match axum::body::to_bytes(body, bosh.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "BOSH request bodies are limited to the stanza size\n",
            )
                .into_response();
        }
    };
    let body = match parse_body(&bytes, &bosh.config) {
        Ok(body) => body,
        Err(e) => {
            tracing::debug!(peer = %http.addr, "BOSH request refused: {e}");
            return respond(e.response());
        }
    };
    match body.sid.clone() {
        None => bosh.create(body, http).await,
        Some(sid) => bosh.forward(&sid, body).await,
    }
}

/// `GET /http-bind`: a person or a health check, not a client.
async fn info() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Franca's XMPP over BOSH endpoint (XEP-0206): clients POST <body/> elements here.\n",
    )
        .into_response()
}

/// `OPTIONS /http-bind` outside a CORS preflight.
async fn options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::ALLOW, "POST, GET, OPTIONS")],
    )
        .into_response()
}

/// Waits for the session task's answer. A task that ended without answering took the
/// session with it.
async fn wait(answer: oneshot::Receiver<HttpResponse>, legacy: bool) -> Response {
    match answer.await {
        Ok(response) => respond(response),
        Err(_) => respond(Condition::ItemNotFound.response(legacy)),
    }
}

fn respond(r: HttpResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    http_response(status, r)
}

fn http_response(status: StatusCode, r: HttpResponse) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, bosh::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        r.body.to_string(),
    )
        .into_response()
}

/// 128 bits from the thread's CSPRNG (ChaCha, seeded by the OS).
fn new_sid() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().r#gen();
    format!("{n:032x}")
}

/// One session: the XMPP stream, the BOSH state, and the HTTP requests waiting for answers.
struct Task {
    x: XmppStream,
    session: BoshSession,
    /// The creation request's `to` and `xmpp:version`, which every restart repeats.
    to: String,
    version: Option<String>,
    /// HTTP requests waiting for their response, by the id the session gave them. Bounded
    /// by the session, which answers or refuses everything beyond its `requests` window.
    open: HashMap<RequestId, oneshot::Sender<HttpResponse>>,
    /// Session events produced while writing (a stream error ends the BOSH session too).
    backlog: VecDeque<Event>,
    shutting_down: bool,
    /// The XMPP side is over and its closing hooks ran.
    xmpp_done: bool,
}

impl Task {
    fn new(ctx: Arc<C2sContext>, session: BoshSession, peer: SocketAddr, secure: bool) -> Task {
        let options = C2sOptions {
            framing: Framing::Bosh,
            secure,
            channel_binding: None,
        };
        let stream = C2sStream::with_options(ctx.stream.clone(), options);
        Task {
            x: XmppStream::new(ctx, peer, stream),
            to: session.to().to_owned(),
            version: session.xmpp_version().map(str::to_owned),
            session,
            open: HashMap::new(),
            backlog: VecDeque::new(),
            shutting_down: false,
            xmpp_done: false,
        }
    }

    async fn run(&mut self, events: Vec<Event>, mut inbox: mpsc::Receiver<Request>) {
        // XEP-0206 §3: the creation request stands for the stream header; the features go
        // out in its response.
        self.x
            .stream
            .bosh_start(Some(&self.to), self.version.as_deref());
        Box::pin(self.pump()).await;
        Box::pin(self.handle(events)).await;
        Box::pin(self.flush()).await;
        let limits = &self.x.ctx.server.config.limits;
        let negotiation_deadline =
            Instant::now() + Duration::from_secs(limits.negotiation_timeout_seconds);
        let mut shutdown = self.x.ctx.shutdown.clone();
        while !self.over() {
            let negotiating = !self.x.stream.is_established() && !self.xmpp_done;
            let deadline = [
                self.session.next_deadline(),
                negotiating.then_some(negotiation_deadline),
            ]
            .into_iter()
            .flatten()
            .min()
            // Nothing to wait for: a day is as good as forever (a request or close comes first).
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                biased;
                // An error (the sender is gone) means shutdown just as well.
                _ = shutdown.changed(), if !self.shutting_down => {
                    self.shutting_down = true;
                    self.x.stream.fail(StreamError::SystemShutdown, Some("the server is shutting down"));
                    Box::pin(self.pump()).await;
                }
                msg = recv(&mut self.x.rx) => Box::pin(self.outbound(msg)).await,
                req = inbox.recv() => {
                    let Some(req) = req else { break };
                    let (id, events) = self.session.on_request(req.body, Instant::now());
                    self.open.insert(id, req.reply);
                    Box::pin(self.handle(events)).await;
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if negotiating && now >= negotiation_deadline {
                        let text = "stream negotiation took too long";
                        self.x.stream.fail(StreamError::ConnectionTimeout, Some(text));
                        Box::pin(self.pump()).await;
                    }
                    let events = self.session.on_timer(now);
                    Box::pin(self.handle(events)).await;
                }
            }
            Box::pin(self.flush()).await;
        }
        Box::pin(self.end_xmpp(false)).await;
    }

    /// No request will be answered any more, or the server is going down and the XMPP side
    /// has been closed (nobody waits for a last terminate body then).
    fn over(&self) -> bool {
        self.session.is_finished() || (self.shutting_down && self.xmpp_done)
    }

    /// Runs the stream until it needs more input; what it writes goes into the session's
    /// queue for the next response.
    async fn pump(&mut self) {
        let mut none: &[u8] = &[];
        while let Some(step) = self.x.next_step(&mut none).await {
            match step {
                Step::Write(xml) => self.session.push_xml(xml),
                // STARTTLS is refused by the stream itself over BOSH, so only the end of the
                // stream is left: its error (already queued) goes out in a terminate body
                // (XEP-0206 §7).
                Step::StartTls | Step::Close => {
                    let condition = if self.shutting_down {
                        Condition::SystemShutdown
                    } else {
                        Condition::RemoteStreamError
                    };
                    let events = self.session.close(condition, Instant::now());
                    self.backlog.extend(events);
                }
            }
        }
    }

    /// Carries out session events, and those they cause, in order.
    async fn handle(&mut self, events: Vec<Event>) {
        self.backlog.extend(events);
        while let Some(event) = self.backlog.pop_front() {
            match event {
                Event::Payload(elements) => {
                    for el in elements {
                        if self.x.stream.is_closed() {
                            break;
                        }
                        self.x.stream.bosh_element(el);
                        self.pump().await;
                    }
                }
                Event::Restart => {
                    if !self.x.stream.is_closed() {
                        self.x
                            .stream
                            .bosh_start(Some(&self.to), self.version.as_deref());
                        self.pump().await;
                    }
                }
                Event::Respond { request, response } => {
                    // The client may have given up on this connection; the session keeps the
                    // response for a replay either way.
                    if let Some(reply) = self.open.remove(&request) {
                        let _ = reply.send(response);
                    }
                }
                Event::Closed(reason) => {
                    tracing::debug!(peer = %self.x.peer, ?reason, "BOSH session ended");
                    // A client that stopped polling is a broken connection (a resumable
                    // session hibernates); anything else ends the stream.
                    self.end_xmpp(reason == EndReason::Inactivity).await;
                }
            }
        }
    }

    /// Stanzas from the session queue, as many as are ready.
    async fn outbound(&mut self, first: Outbound) {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            let item = match msg {
                Outbound::Xml(xml) => Serialised::Xml(xml),
                Outbound::Fanout(f) => Serialised::Fanout(f),
                Outbound::Close(error, text) => {
                    self.x.stream.fail(error, text.as_deref());
                    self.pump().await;
                    return self.handle(Vec::new()).await;
                }
            };
            // Through the stream's XEP-0352/XEP-0198 bookkeeping, like every transport.
            match self.x.outbound_stanza(item) {
                Out::One(item) => self.push_stanza(&item),
                Out::Held => {}
                Out::Many(list) => {
                    for item in &list {
                        self.push_stanza(item);
                    }
                }
            }
            // Stream management may have closed the stream (too many unacknowledged).
            if !self.x.stream.is_closed() {
                next = self.x.rx.as_mut().and_then(|rx| rx.try_recv());
            }
        }
        // An `<r/>` (or a stream error) the bookkeeping may have queued.
        self.pump().await;
        self.handle(Vec::new()).await;
    }

    /// A stanza serialised for a `jabber:client` stream; a body's default namespace is
    /// httpbind, so the stanza declares its own.
    fn push_stanza(&mut self, item: &Serialised) {
        let xml = self.x.framed(item);
        self.session.push_xml(xml);
    }

    /// Sends what is queued on the held requests.
    async fn flush(&mut self) {
        let events = self.session.flush(Instant::now());
        self.handle(events).await;
    }

    /// The XMPP side is over: unbind the session and run its closing hooks, once.
    async fn end_xmpp(&mut self, broken: bool) {
        if self.xmpp_done {
            return;
        }
        self.xmpp_done = true;
        if !broken && !self.x.stream.is_closed() {
            self.x.stream.close();
            self.pump().await;
        }
        self.x.finish().await;
        self.x.rx = None;
    }
}

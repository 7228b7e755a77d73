//! Streams other servers open to us (RFC 6120 §4-§6, §8.1.1.2, §13.7.1): TLS first (STARTTLS,
//! or XEP-0368 direct TLS on the same port, told apart by the first byte: 0x16 starts a TLS
//! ClientHello), then each remote domain authenticates with SASL EXTERNAL (XEP-0178, when its
//! certificate is valid for it) or a dialback key we verify with its authoritative server
//! (XEP-0220 §2.2; XEP-0344: skipped when the certificate already proves the domain). The same
//! stream answers `<db:verify/>` for keys we made (the authoritative role), and, when the peer
//! asked for XEP-0288, carries our stanzas for the authenticated domain back.
//!
//! Every stanza is checked before it is routed: none before authentication (`<not-authorized/>`),
//! its `from` domain must be one verified on this stream (`<invalid-from/>` otherwise), its `to`
//! domain one we serve or host (`<host-unknown/>`), and a local recipient barred from federating
//! gets a `policy-violation` bounce. A domain refused by policy is told so with `<policy-violation/>` and a text, at the
//! header when it names itself there, or in the dialback answer.

use crate::federation::Ctx;
use crate::outbound::{self, not_valid};
use crate::pool::stopping;
use crate::stream::{Io, ReadError, XmlStream, new_stream_id};
use crate::verify::{self, CertStatus};
use franca_core::Server;
use franca_proto::dialback::{self, DbElement};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond, StreamError, error_reply};
use franca_proto::ns::{NS_SASL, NS_SERVER, NS_STREAMS, NS_TLS};
use franca_proto::s2s::{self, Features};
use franca_xml::{Element, Event, StreamHeader};
use jid::Jid;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

/// Dialback verifications one stream may have running at once.
const MAX_PENDING_VERIFICATIONS: usize = 8;

/// Accept s2s connections forever on `listener`.
pub async fn accept(listener: TcpListener, ctx: Arc<Ctx>, server: Arc<Server>) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stopping(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("s2s accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        metrics::counter!("franca_s2s_connections_total", "direction" => "in").increment(1);
        match ctx.inbound.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(serve(ctx.clone(), server.clone(), tcp, peer, permit));
            }
            Err(_) => {
                metrics::counter!("franca_s2s_connections_refused_total").increment(1);
                tracing::warn!(%peer, "too many inbound s2s connections");
                tokio::spawn(refuse(tcp, server.clone()));
            }
        }
    }
}

/// RFC 6120 §4.9.3.14: over `max_inbound_connections`, refuse with `<policy-violation/>`.
async fn refuse(mut tcp: TcpStream, server: Arc<Server>) {
    let domain = server
        .config
        .server
        .domains
        .first()
        .cloned()
        .unwrap_or_default();
    let bytes = format!(
        "{}{}</stream:stream>",
        s2s::stream_header(&domain, None, Some(&new_stream_id())),
        StreamError::PolicyViolation
            .to_element(Some("too many server-to-server connections at once"))
            .to_xml_in(NS_SERVER)
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = tcp.write_all(bytes.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// Serve one inbound connection.
async fn serve(
    ctx: Arc<Ctx>,
    server: Arc<Server>,
    tcp: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    let direct_tls = match tokio::time::timeout(ctx.negotiation, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == 0x16,
        _ => return,
    };
    let io = if direct_tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(ctx.server_tls.clone());
        match tokio::time::timeout(ctx.negotiation, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Io::Server(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, "s2s direct TLS handshake failed: {e}");
                return;
            }
            Err(_) => return,
        }
    } else {
        Io::Plain(tcp)
    };
    let stream = XmlStream::new(io, ctx.limits, ctx.read_rate());
    let (tx, rx) = mpsc::channel(MAX_PENDING_VERIFICATIONS);
    let mut conn = Inbound {
        ctx,
        server,
        peer,
        stream,
        local: None,
        claimed: None,
        id: new_stream_id(),
        header_sent: false,
        sasl_done: false,
        verified: HashSet::new(),
        pending: 0,
        verdicts: tx,
        bidi: false,
        reverse: None,
        reverse_rx: None,
    };
    conn.run(rx).await;
}

/// The outcome of one dialback verification, back from its task.
struct Verdict {
    /// The originating domain and the local domain of the `<db:result/>`.
    from: String,
    to: String,
    result: Result<bool, outbound::ConnectError>,
}

enum Next {
    Continue,
    End,
}

struct Inbound {
    ctx: Arc<Ctx>,
    server: Arc<Server>,
    peer: SocketAddr,
    stream: XmlStream,
    /// Our domain the peer addressed in its header.
    local: Option<String>,
    /// The domain the peer named in its header `from`, if any.
    claimed: Option<String>,
    /// The id of the current stream (dialback keys are bound to it).
    id: String,
    header_sent: bool,
    sasl_done: bool,
    /// Remote domains authenticated on this stream: stanzas may come from these.
    verified: HashSet<String>,
    pending: usize,
    verdicts: mpsc::Sender<Verdict>,
    /// XEP-0288: the peer asked for a bidirectional stream.
    bidi: bool,
    /// The (local, remote) pair whose outbound stanzas this stream carries (XEP-0288), and the
    /// id of its entry in the link registry.
    reverse: Option<(String, String, u64)>,
    /// Its queue, until `run` takes it.
    reverse_rx: Option<mpsc::Receiver<Element>>,
}

impl Inbound {
    async fn run(&mut self, mut verdicts: mpsc::Receiver<Verdict>) {
        let mut shutdown = self.ctx.shutdown.clone();
        // Authenticating may include a dialback round trip to the peer's domain.
        let auth_deadline = Instant::now() + self.ctx.negotiation + self.ctx.connect_timeout();
        let idle = self.ctx.idle_timeout();
        let mut last = Instant::now();
        let mut reverse: Option<mpsc::Receiver<Element>> = None;
        loop {
            if reverse.is_none() {
                reverse = self.reverse_rx.take();
            }
            let authenticated = !self.verified.is_empty();
            let next = tokio::select! {
                _ = stopping(&mut shutdown) => {
                    self.fail(StreamError::SystemShutdown, "the server is shutting down").await
                }
                ev = self.stream.next() => {
                    last = Instant::now();
                    match ev {
                        Ok(ev) => Box::pin(self.on_event(ev)).await,
                        Err(ReadError::Broken) => Next::End,
                        Err(e) => match e.stream_error() {
                            Some((err, text)) => self.fail(err, &text).await,
                            None => Next::End,
                        },
                    }
                }
                Some(v) = verdicts.recv() => self.on_verdict(v).await,
                Some(stanza) = recv_reverse(&mut reverse) => {
                    last = Instant::now();
                    self.carry_reverse(stanza, &mut reverse).await
                }
                _ = tokio::time::sleep_until(auth_deadline), if !authenticated => {
                    self.fail(StreamError::ConnectionTimeout, "no domain was authenticated in time").await
                }
                // Not while a dialback callback is running: the peer is waiting, not idle.
                _ = tokio::time::sleep_until(last + idle), if self.pending == 0 => {
                    self.stream.close().await;
                    Next::End
                }
            };
            if let Next::End = next {
                break;
            }
        }
        if let (Some((local, remote, id)), Some(rx)) = (self.reverse.take(), reverse) {
            crate::pool::detach(&self.ctx, &self.server, &local, &remote, id, rx).await;
        }
    }

    /// XEP-0288: write our stanzas for the peer's domain on this stream (a batch at a time).
    async fn carry_reverse(
        &mut self,
        first: Element,
        rx: &mut Option<mpsc::Receiver<Element>>,
    ) -> Next {
        let mut next = Some(first);
        let mut n: u64 = 0;
        while let Some(stanza) = next.take() {
            self.stream.push(&s2s::to_server_ns(stanza));
            n += 1;
            if n < 64 {
                next = rx.as_mut().and_then(|rx| rx.try_recv().ok());
            }
        }
        metrics::counter!("franca_s2s_stanzas_out_total").increment(n);
        match self.stream.flush().await {
            Ok(()) => Next::Continue,
            Err(_) => Next::End,
        }
    }

    /// `domain` is authenticated on this stream for stanzas to `local`. On a bidirectional
    /// stream (XEP-0288) our stanzas from `local` to `domain` may now go back on it.
    fn authenticated(&mut self, local: &str, domain: String) {
        if self.bidi
            && self.reverse.is_none()
            && let Some((id, rx)) = crate::pool::attach(&self.ctx, local, &domain)
        {
            tracing::info!(peer = %self.peer, domain, "s2s inbound stream is bidirectional (XEP-0288)");
            self.reverse = Some((local.to_owned(), domain.clone(), id));
            self.reverse_rx = Some(rx);
        }
        self.verified.insert(domain);
    }

    /// The header to send before a stream error when ours is not out yet (RFC 6120 §4.9.1.1).
    fn pending_header(&self) -> Option<String> {
        if self.header_sent {
            return None;
        }
        let from = self
            .local
            .clone()
            .or_else(|| self.server.config.server.domains.first().cloned())
            .unwrap_or_default();
        Some(s2s::stream_header(&from, None, Some(&self.id)))
    }

    async fn fail(&mut self, err: StreamError, text: &str) -> Next {
        tracing::debug!(peer = %self.peer, "s2s inbound stream error {}: {text}", err.name());
        let header = self.pending_header();
        self.stream.fail(header.as_deref(), err, Some(text)).await;
        Next::End
    }

    fn ours(&self, domain: &str) -> bool {
        ours(&self.server, domain)
    }

    async fn on_event(&mut self, ev: Event) -> Next {
        match ev {
            Event::StreamStart(h) => self.on_header(h).await,
            Event::StreamEnd => {
                self.stream.close().await;
                Next::End
            }
            Event::Stanza(el) => self.on_element(el).await,
        }
    }

    async fn on_header(&mut self, h: StreamHeader) -> Next {
        let header = match s2s::check_header(&h) {
            Ok(header) => header,
            Err(e) => return self.fail(e, "not an XMPP server-to-server stream").await,
        };
        let Some(to) = header.to else {
            return self
                .fail(
                    StreamError::ImproperAddressing,
                    "the stream header has no 'to'",
                )
                .await;
        };
        let to = crate::policy::normalise_domain(&to);
        if !self.ours(&to) {
            let text = format!("this server does not serve {to}");
            return self.fail(StreamError::HostUnknown, &text).await;
        }
        let from = header.from.map(|f| crate::policy::normalise_domain(&f));
        if let Some(from) = &from
            && let Err(why) = self.ctx.policy.check(from)
        {
            self.local = Some(to);
            return self.fail(StreamError::PolicyViolation, &why).await;
        }
        self.id = new_stream_id();
        self.stream
            .push_raw(&s2s::stream_header(&to, from.as_deref(), Some(&self.id)));
        self.header_sent = true;
        self.local = Some(to);
        self.claimed = from;
        let tls = self.stream.io.is_tls();
        let external = tls
            && !self.sasl_done
            && self
                .claimed
                .as_deref()
                .is_some_and(|d| matches!(self.cert(d), CertStatus::Valid));
        let features = Features {
            starttls: !tls,
            external,
            dialback: tls && !self.ctx.policy.require_valid_certs(),
            dialback_errors: tls,
            bidi: tls,
        };
        self.stream.push(&features.to_element());
        match self.stream.flush().await {
            Ok(()) => Next::Continue,
            Err(_) => Next::End,
        }
    }

    fn cert(&self, domain: &str) -> CertStatus {
        verify::check_peer(&self.ctx.trust, &self.stream.io.peer_chain(), domain)
    }

    async fn on_element(&mut self, el: Element) -> Next {
        if !self.header_sent {
            return self
                .fail(StreamError::NotWellFormed, "no stream header")
                .await;
        }
        if el.is("error", NS_STREAMS) {
            let (err, text) =
                StreamError::from_element(&el).unwrap_or((StreamError::UndefinedCondition, None));
            tracing::info!(peer = %self.peer, "s2s peer closed with {}: {}", err.name(), text.unwrap_or_default());
            self.stream.close().await;
            return Next::End;
        }
        if !self.stream.io.is_tls() {
            if el.is("starttls", NS_TLS) {
                return self.starttls().await;
            }
            return self
                .fail(
                    StreamError::PolicyViolation,
                    "this server requires TLS (STARTTLS) before anything else",
                )
                .await;
        }
        if el.is("auth", NS_SASL) {
            return self.sasl_external(&el).await;
        }
        if el.is("bidi", s2s::NS_BIDI) {
            // XEP-0288 §2: sent before authenticating; takes effect once a domain is.
            self.bidi = true;
            return Next::Continue;
        }
        if el.ns == dialback::NS_DIALBACK {
            return self.dialback(&el).await;
        }
        if s2s::is_stanza(&el) {
            return self.stanza(el).await;
        }
        let text = format!("<{}/> is not allowed here", el.name);
        self.fail(StreamError::UnsupportedStanzaType, &text).await
    }

    async fn starttls(&mut self) -> Next {
        if self.stream.send(&s2s::proceed()).await.is_err() {
            return Next::End;
        }
        // RFC 6120 §5.3.3: nothing sent in plaintext after <starttls/> is kept.
        self.stream.discard_buffered();
        let Io::Plain(tcp) = std::mem::replace(&mut self.stream.io, Io::Gone) else {
            return Next::End;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(self.ctx.server_tls.clone());
        match tokio::time::timeout(self.ctx.negotiation, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.stream.io = Io::Server(Box::new(tls));
                self.header_sent = false;
                Next::Continue
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, "s2s STARTTLS handshake failed: {e}");
                Next::End
            }
            Err(_) => Next::End,
        }
    }

    /// SASL EXTERNAL (RFC 6120 §6.4, XEP-0178 §3): the certificate must be valid for the
    /// domain the header claimed.
    async fn sasl_external(&mut self, auth: &Element) -> Next {
        let refuse = |cond: &str, text: String| s2s::sasl_failure(cond, Some(&text));
        let answer = match (&self.claimed, self.sasl_done) {
            (_, true) => refuse("not-authorized", "already authenticated".into()),
            (None, _) => refuse(
                "not-authorized",
                "the stream header did not say which domain is authenticating".into(),
            ),
            (Some(domain), false) => match s2s::check_auth_external(auth, domain) {
                Err(r) => refuse(r.condition(), format!("SASL EXTERNAL refused for {domain}")),
                Ok(()) => match not_valid(&self.cert(domain)) {
                    Some(why) => refuse(
                        "not-authorized",
                        format!("the certificate is not valid for {domain}: {why}"),
                    ),
                    None => s2s::sasl_success(),
                },
            },
        };
        let success = answer.is("success", NS_SASL);
        if self.stream.send(&answer).await.is_err() {
            return Next::End;
        }
        if success && let Some(domain) = self.claimed.clone() {
            tracing::info!(peer = %self.peer, domain, "s2s inbound authenticated (SASL EXTERNAL)");
            let local = self.local.clone().unwrap_or_default();
            self.authenticated(&local, domain);
            self.sasl_done = true;
            self.header_sent = false;
            self.stream.restart();
        }
        Next::Continue
    }

    async fn dialback(&mut self, el: &Element) -> Next {
        let db = match dialback::parse(el) {
            Ok(db) => db,
            Err(e) => return self.fail(e.stream_error(), &e.to_string()).await,
        };
        match db {
            DbElement::Result {
                from,
                to,
                key: Some(key),
                ty: None,
                ..
            } => self.db_result(from, to, key).await,
            DbElement::Verify {
                from,
                to,
                id,
                key: Some(key),
                ty: None,
                ..
            } => {
                // The authoritative role: `from` received a key claiming to come from `to`.
                let answer = if !self.ours(&to) {
                    let text = format!("this server is not authoritative for {to}");
                    DbElement::verify_error(
                        &to,
                        &from,
                        &id,
                        StanzaError::new(Cond::ItemNotFound).with_text(text),
                    )
                } else {
                    let valid = dialback::key_matches(&self.ctx.secret, &from, &to, &id, &key);
                    DbElement::verify_answer(&to, &from, &id, valid)
                };
                self.send(&dialback::build(&answer, NS_SERVER)).await
            }
            // Answers belong on streams we opened; here they mean nothing.
            _ => Next::Continue,
        }
    }

    async fn send(&mut self, el: &Element) -> Next {
        match self.stream.send(el).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::End,
        }
    }

    /// The receiving role (XEP-0220 §2.1.2): `from` asks to send to `to` on this stream.
    async fn db_result(&mut self, from: String, to: String, key: String) -> Next {
        let refuse = |cond: Cond, text: String| {
            DbElement::result_error(&to, &from, StanzaError::new(cond).with_text(text))
        };
        let answer = if !self.ours(&to) {
            Some(refuse(
                Cond::ItemNotFound,
                format!("this server does not serve {to}"),
            ))
        } else if let Err(why) = self.ctx.policy.check(&from) {
            Some(refuse(Cond::PolicyViolation, why))
        } else if self.verified.contains(&from) {
            Some(DbElement::result_answer(&to, &from, true))
        } else if matches!(self.cert(&from), CertStatus::Valid) {
            // XEP-0344 §2.4: the certificate already proves the domain; no callback needed.
            self.authenticated(&to, from.clone());
            Some(DbElement::result_answer(&to, &from, true))
        } else if self.ctx.policy.require_valid_certs() {
            Some(refuse(
                Cond::PolicyViolation,
                crate::policy::Policy::dialback_refused_text(&from),
            ))
        } else if self.pending >= MAX_PENDING_VERIFICATIONS {
            Some(refuse(
                Cond::ResourceConstraint,
                "too many dialback requests at once on this stream".into(),
            ))
        } else {
            self.pending += 1;
            let ctx = self.ctx.clone();
            let tx = self.verdicts.clone();
            let id = self.id.clone();
            tokio::spawn(async move {
                let result = match tokio::time::timeout(
                    ctx.connect_timeout(),
                    outbound::verify_key(&ctx, &to, &from, &id, &key),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(outbound::ConnectError {
                        condition: Cond::RemoteServerTimeout,
                        text: format!("{from} did not answer the dialback check in time"),
                    }),
                };
                let _ = tx.send(Verdict { from, to, result }).await;
            });
            None
        };
        match answer {
            Some(a) => self.send(&dialback::build(&a, NS_SERVER)).await,
            None => Next::Continue,
        }
    }

    async fn on_verdict(&mut self, v: Verdict) -> Next {
        self.pending = self.pending.saturating_sub(1);
        let answer = match v.result {
            Ok(true) => {
                tracing::info!(peer = %self.peer, domain = v.from, "s2s inbound authenticated (dialback)");
                self.authenticated(&v.to, v.from.clone());
                DbElement::result_answer(&v.to, &v.from, true)
            }
            Ok(false) => {
                tracing::info!(peer = %self.peer, domain = v.from, "s2s dialback key refused by its authoritative server");
                DbElement::result_answer(&v.to, &v.from, false)
            }
            Err(e) => DbElement::result_error(
                &v.to,
                &v.from,
                StanzaError::new(e.condition.clone()).with_text(e.text),
            ),
        };
        self.send(&dialback::build(&answer, NS_SERVER)).await
    }

    /// RFC 6120 §8.1.1.2, §4.9.3.9, §4.9.3.6: check the addresses, then route.
    async fn stanza(&mut self, el: Element) -> Next {
        if self.verified.is_empty() {
            // RFC 6120 §4.9.3.12: data before the stream is authenticated at all.
            return self
                .fail(
                    StreamError::NotAuthorized,
                    "stanzas before any domain was authenticated on this stream",
                )
                .await;
        }
        let verified = &self.verified;
        match receive(&self.ctx, &self.server, |d| verified.contains(d), el).await {
            Ok(()) => Next::Continue,
            Err((err, text)) => self.fail(err, &text).await,
        }
    }
}

/// A stanza that arrived from another server, on an inbound stream or (XEP-0288) on one of
/// ours: RFC 6120 §8.1.1.2 checks, the per-user bar, then the router. `verified` says whether a
/// domain is authenticated on that stream. `Err` is the stream error to close with.
pub(crate) async fn receive(
    ctx: &Ctx,
    server: &Arc<Server>,
    verified: impl Fn(&str) -> bool,
    el: Element,
) -> Result<(), (StreamError, String)> {
    let Some(from) = el.attr("from") else {
        return Err((
            StreamError::ImproperAddressing,
            "a stanza without 'from'".into(),
        ));
    };
    let Ok(from) = Jid::new(from) else {
        return Err((
            StreamError::InvalidFrom,
            "a stanza with a malformed 'from'".into(),
        ));
    };
    if !verified(from.domain().as_str()) {
        let text = format!(
            "{} has not been authenticated on this stream",
            from.domain()
        );
        return Err((StreamError::InvalidFrom, text));
    }
    let Some(to) = el.attr("to").map(str::to_owned) else {
        return Err((
            StreamError::ImproperAddressing,
            "a stanza without 'to'".into(),
        ));
    };
    let stanza = s2s::from_server_ns(el);
    let Ok(to) = Jid::new(&to) else {
        if let Some(reply) = error_reply(&stanza, &StanzaError::new(Cond::JidMalformed)) {
            server.route(reply).await;
        }
        return Ok(());
    };
    if !ours(server, to.domain().as_str()) {
        let text = format!("this server does not serve {}", to.domain());
        return Err((StreamError::HostUnknown, text));
    }
    metrics::counter!("franca_s2s_stanzas_in_total").increment(1);
    if to.node().is_some()
        && server.serves(to.domain().as_str())
        && let Err(why) = ctx.permission.may_federate(&to.to_bare()).await
    {
        let err = StanzaError::new(Cond::PolicyViolation).with_text(why);
        if let Some(mut reply) = error_reply(&stanza, &err) {
            // From the server, not the barred account: the bar also stops stanzas from it.
            reply.set_attr("from", to.domain().as_str());
            server.route(reply).await;
        }
        return Ok(());
    }
    server.route(stanza).await;
    Ok(())
}

/// Whether `domain` is ours to receive stanzas for: served, hosted or a component.
pub(crate) fn ours(server: &Server, domain: &str) -> bool {
    server.serves(domain)
        || server.service(domain).is_some()
        || server.components.get(domain).is_some()
}

/// The next stanza of an optional queue; pending forever without one.
async fn recv_reverse(rx: &mut Option<mpsc::Receiver<Element>>) -> Option<Element> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

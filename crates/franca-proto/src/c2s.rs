//! The client-to-server stream negotiation of RFC 6120, as a sans-IO state machine.
//!
//! [`C2sStream`] is fed raw bytes and answers with [`Action`]s: bytes to write, and requests
//! that need the outside world (credentials from storage, a resource binding from the session
//! registry, the TLS upgrade). The transport task performs the request and reports back
//! (`provide_credentials`, `bound`, `tls_established`), then keeps pulling actions. Nothing in
//! here touches a socket, a clock or a database, so every transcript is tested in memory.
//!
//! Order of a stream (RFC 6120 §9): header → features → STARTTLS (§5) → restart → SASL (§6)
//! → restart → resource binding (§7) → stanzas.
//!
//! The same state machine serves XMPP over WebSocket (RFC 7395) when built with
//! [`Framing::WebSocket`]: the input is then one WebSocket message at a time, and every
//! [`Action::Write`] is one message (see `websocket.rs`). BOSH (XEP-0206) uses
//! [`Framing::Bosh`]: the transport reads request bodies itself and hands over stream
//! (re)starts and elements (see `bosh.rs`).

mod bosh;
mod sasl2;
mod websocket;

pub use websocket::{client_ns_insertion, with_client_ns};

use crate::errors::StreamError;
use crate::ns::{
    NS_BIND, NS_CLIENT, NS_CSI, NS_FRAMING, NS_SASL, NS_SASL2, NS_SESSION, NS_SM, NS_STANZAS,
    NS_STREAMS, NS_TLS,
};
use crate::sasl::{
    self, CB_TLS_EXPORTER, CB_TLS_SERVER_END_POINT, ChannelBinding, Mechanism, SaslError,
    ScramHash, ScramKeys, ScramServer,
};
use crate::sm::{Nonza, SmError};
use franca_xml::{Element, Event, Limits, StreamHeader, StreamReader, stream_header};
use std::collections::VecDeque;

/// What a c2s stream offers; shared by every connection of a listener.
#[derive(Debug, Clone)]
pub struct C2sConfig {
    /// The domains served; a stream to any other gets `<host-unknown/>`.
    pub domains: Vec<String>,
    /// Whether authentication without TLS is allowed (never by default).
    pub allow_plaintext: bool,
    pub limits: Limits,
    /// Offered before authentication when in-band registration is on (XEP-0077).
    pub register_feature: Option<Element>,
    /// Offered after authentication by modules (roster versioning, pre-approval).
    pub session_features: Vec<Element>,
    /// XEP-0484 FAST tokens are offered inside SASL2 (over TLS).
    pub fast: bool,
    /// XEP-0386: namespaces whose elements modules turn on inline in a Bind2 `<bind/>`
    /// (carbons…); stream management and client state are always offered.
    pub bind2_features: Vec<String>,
}

/// How the stream is delimited on the wire; fixed for the life of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// RFC 6120 over TCP: one XML document per direction, fed as a byte stream.
    #[default]
    Stream,
    /// RFC 7395 over WebSocket: every text message is one complete XML document (`<open/>`,
    /// `<close/>` or one stanza or nonza). [`C2sStream::next_action`] then takes whole
    /// messages, and every [`Action::Write`] is exactly one message.
    WebSocket,
    /// XEP-0206 BOSH: the transport reads each request `<body/>` and reports stream starts
    /// ([`C2sStream::bosh_start`]) and the body's children ([`C2sStream::bosh_element`]);
    /// every [`Action::Write`] is one element declaring its own namespaces, for a response
    /// body. No header or closing tag is ever written: the body attributes stand for them.
    Bosh,
}

/// What the transport knows about one connection when it hands it to a [`C2sStream`].
#[derive(Debug, Clone, Default)]
pub struct C2sOptions {
    pub framing: Framing,
    /// The transport is already confidential: direct TLS, `wss://`, or a loopback hop from a
    /// proxy that terminated TLS. A secure stream offers PLAIN and never STARTTLS.
    pub secure: bool,
    /// Channel bindings of that TLS, when the transport has them (for the -PLUS mechanisms).
    /// Ignored unless `secure`.
    pub channel_binding: Option<ChannelBinding>,
}

/// What the transport must do next.
#[derive(Debug)]
pub enum Action {
    /// Write these bytes (in order, before acting on anything that follows). With
    /// [`Framing::WebSocket`] each one is a complete element: send it as one text message.
    Write(String),
    /// Upgrade to TLS now (after writing what came before); discard any bytes already read,
    /// then call [`C2sStream::tls_established`].
    StartTls,
    /// Look up `account`'s SCRAM keys for `hash`, then call [`C2sStream::provide_credentials`]
    /// (or [`C2sStream::refuse_login`] when the account or address is locked out).
    Credentials { account: String, hash: ScramHash },
    /// A login attempt failed (for the failed-login limits).
    AuthFailed { account: Option<String> },
    /// SASL succeeded; the stream restarts.
    Authenticated { account: String },
    /// Bind this resource (or pick one when `None`), then call [`C2sStream::bound`].
    Bind { resource: Option<String> },
    /// An IQ received before authentication (in-band registration); answer with
    /// [`C2sStream::send_element`].
    PreAuthIq(Element),
    /// A stanza from the bound session, for the router.
    Stanza(Element),
    /// A XEP-0198 stream management or XEP-0352 client state element from the bound session,
    /// for the transport (it owns the counters and the queue).
    Nonza(Element),
    /// XEP-0198 §5: resume the session `previd` instead of binding a resource; answer with
    /// [`C2sStream::resumed`].
    Resume { previd: String, h: u32 },
    /// XEP-0484: look up the FAST tokens `account` holds for the client `client_id`, then call
    /// [`C2sStream::provide_fast_tokens`] (or [`C2sStream::refuse_login`]).
    FastTokens { account: String, client_id: String },
    /// XEP-0484: the token with this key proved the login. Record its use atomically (refused
    /// if it expired, was revoked or already saw `count`), or delete it for `invalidate`, then
    /// call [`C2sStream::fast_token_used`].
    FastTokenUsed {
        account: String,
        client_id: String,
        key: Vec<u8>,
        count: Option<u32>,
        invalidate: bool,
    },
    /// XEP-0484: issue and store a token for this client and mechanism, then call
    /// [`C2sStream::fast_token_issued`].
    IssueFastToken {
        account: String,
        client_id: String,
        mechanism: &'static str,
    },
    /// XEP-0386: turn these on for the session just bound through Bind2, then call
    /// [`C2sStream::bind2_enabled`] with the answers for `<bound/>`.
    Bind2Inline {
        sm_enable: Option<(bool, Option<u32>)>,
        inactive: bool,
        extensions: Vec<Element>,
    },
    /// The stream is over: close the connection after writing everything before this.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the (re)started stream header.
    Header,
    /// Features sent, before authentication.
    Negotiating,
    /// Waiting for the transport to answer a credential lookup.
    AwaitCredentials,
    /// Waiting for the client's `<response/>`.
    SaslChallenge,
    /// Authenticated and restarted: resource binding.
    Bind,
    /// Waiting for the transport to bind.
    AwaitBind,
    /// Waiting for the transport to resume a session (XEP-0198 §5).
    AwaitResume,
    /// Waiting for the transport during SASL2: a FAST token issued, Bind2 inline features.
    AwaitSasl2,
    Established,
    Closed,
}

enum Sasl {
    Scram(Box<ScramServer>),
    Plain { password: String },
}

/// One c2s stream's negotiation and framing state.
pub struct C2sStream {
    config: std::sync::Arc<C2sConfig>,
    /// Reads the TCP byte stream; unused with WebSocket framing, where each message is read
    /// on its own.
    reader: StreamReader,
    framing: Framing,
    state: State,
    /// TLS is up below this stream (or the transport is otherwise secure, see
    /// [`C2sOptions::secure`]).
    tls: bool,
    cb: Option<Box<ChannelBinding>>,
    header_sent: bool,
    /// The served domain this stream is for (from the header's `to`).
    domain: Option<String>,
    account: Option<String>,
    sasl: Option<Sasl>,
    /// The account whose SCRAM exchange is in progress.
    pending_account: Option<String>,
    /// A mechanism chosen without an initial response, waiting for it.
    awaiting_initial: Option<Mechanism>,
    /// The id of the bind request being answered.
    bind_id: String,
    /// A XEP-0388 SASL2 exchange in progress.
    sasl2: Option<Box<sasl2::Flow>>,
    pending: VecDeque<Action>,
}

impl C2sStream {
    /// A new TCP stream; `tls` is `Some` for direct TLS (XEP-0368), with its channel bindings.
    pub fn new(config: std::sync::Arc<C2sConfig>, tls: Option<ChannelBinding>) -> C2sStream {
        C2sStream::with_options(
            config,
            C2sOptions {
                framing: Framing::Stream,
                secure: tls.is_some(),
                channel_binding: tls,
            },
        )
    }

    /// A new stream with the framing and security the transport reports.
    pub fn with_options(config: std::sync::Arc<C2sConfig>, options: C2sOptions) -> C2sStream {
        let limits = config.limits;
        let secure = options.secure;
        C2sStream {
            config,
            reader: StreamReader::new(limits),
            framing: options.framing,
            state: State::Header,
            tls: secure,
            cb: options.channel_binding.filter(|_| secure).map(Box::new),
            header_sent: false,
            domain: None,
            account: None,
            sasl: None,
            pending_account: None,
            awaiting_initial: None,
            bind_id: String::new(),
            sasl2: None,
            pending: VecDeque::new(),
        }
    }

    /// True once TLS is up (or the transport said it is secure).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The authenticated account (bare JID), once SASL succeeded.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// True when actions are queued for the transport without any input (something the
    /// transport asked for, such as a XEP-0198 `<r/>`, to write).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// True when no partial stanza is buffered (the transport may release its read buffer).
    pub fn is_idle(&self) -> bool {
        self.reader.is_idle()
    }

    /// The next action. Consumes bytes from `input` only while no request is outstanding;
    /// returns `None` when it needs more bytes (or an answer to a request).
    ///
    /// With [`Framing::WebSocket`], `input` must be exactly one WebSocket text message. It is
    /// consumed whole (left empty) once the stream is ready to read it, and left untouched
    /// while a request is outstanding, so the caller's loop is the same as for TCP: keep
    /// calling until `None`, then wait for the next message.
    pub fn next_action(&mut self, input: &mut &[u8]) -> Option<Action> {
        loop {
            if let Some(a) = self.pending.pop_front() {
                return Some(a);
            }
            if matches!(
                self.state,
                State::AwaitCredentials
                    | State::AwaitBind
                    | State::AwaitResume
                    | State::AwaitSasl2
                    | State::Closed
            ) {
                return None;
            }
            if input.is_empty() {
                // Out of bytes, typically right after a stanza: the connection may now sit
                // idle for hours, so give back the parser's scratch memory (DESIGN §6).
                self.reader.release_if_idle();
                return None;
            }
            if self.framing != Framing::Stream {
                let frame = std::mem::take(input);
                self.frame(frame);
                continue;
            }
            match self.reader.feed(input) {
                Ok(None) => return None,
                Ok(Some(event)) => self.handle_event(event),
                Err(e) => {
                    let text = e.to_string();
                    self.fail(StreamError::from_xml_error(&e), Some(&text));
                }
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::StreamStart(header) => self.stream_start(&header),
            Event::StreamEnd => self.finish(),
            Event::Stanza(el) => self.element(el),
        }
    }

    /// One WebSocket message (RFC 7395 §3.3).
    fn frame(&mut self, frame: &[u8]) {
        let el = match websocket::read_frame(frame, self.config.limits) {
            Ok(Some(el)) => el,
            // Whitespace only: harmless, like a whitespace keepalive over TCP.
            Ok(None) => return,
            Err(e) => {
                let text = e.to_string();
                return self.fail(StreamError::from_xml_error(&e), Some(&text));
            }
        };
        if el.ns == NS_FRAMING && self.framing == Framing::WebSocket {
            match el.name.as_str() {
                "open" if self.state == State::Header => return self.open_frame(&el),
                // Streams restart only where RFC 6120 says so (after SASL success); an
                // <open/> elsewhere would reset negotiation behind the client's back.
                "open" => {
                    return self.fail(
                        StreamError::BadFormat,
                        Some("a new <open/> is only expected after authentication"),
                    );
                }
                // §3.6: the client may close at any point, even instead of a restart.
                "close" => return self.finish(),
                _ => {}
            }
        }
        if self.state == State::Header {
            // What a TCP stream answers to a root element that is not <stream:stream>.
            return self.fail(
                StreamError::InvalidNamespace,
                Some("expected <open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
            );
        }
        self.element(el);
    }

    /// RFC 7395 §3.4: `<open/>` carries the header's `to` and `version`; the content namespace
    /// is declared per element instead, so there is none to check here.
    fn open_frame(&mut self, open: &Element) {
        // RFC 7395 defines the framing for version 1.0 only (§3.3.2).
        let version_ok = open.attr("version") == Some("1.0");
        self.begin_stream(open.attr("to"), true, version_ok);
    }

    fn stream_start(&mut self, header: &StreamHeader) {
        if self.state != State::Header {
            // A second header inside a stream is not well-formed XML at all.
            return self.fail(StreamError::NotWellFormed, None);
        }
        // RFC 6120 §4.8.2: a c2s stream's content namespace is jabber:client.
        let ns_ok = header.attr("xmlns") == Some(NS_CLIENT);
        // RFC 6120 §4.7.5: a major version below 1 is not supported.
        let version_ok = header
            .attr("version")
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse::<u32>().ok())
            .is_some_and(|major| major >= 1);
        self.begin_stream(header.attr("to"), ns_ok, version_ok);
    }

    /// Answers a (re)started stream: our header, then an error or the features. The checks
    /// come in this order so that an unknown host is reported before anything else.
    fn begin_stream(&mut self, to: Option<&str>, ns_ok: bool, version_ok: bool) {
        let to = to.map(str::to_ascii_lowercase);
        let domain = match to {
            Some(d) if self.config.domains.contains(&d) => d,
            Some(_) => {
                self.open_header(self.config.domains.first().cloned().unwrap_or_default());
                return self.fail(
                    StreamError::HostUnknown,
                    Some("this server does not serve that domain"),
                );
            }
            None => {
                self.open_header(self.config.domains.first().cloned().unwrap_or_default());
                return self.fail(
                    StreamError::HostUnknown,
                    Some("the stream header needs a 'to'"),
                );
            }
        };
        if let Some(d) = self.domain.clone().filter(|d| *d != domain) {
            self.open_header(d);
            return self.fail(
                StreamError::HostUnknown,
                Some("the domain changed on restart"),
            );
        }
        self.domain = Some(domain.clone());
        self.open_header(domain);
        if !ns_ok {
            return self.fail(
                StreamError::InvalidNamespace,
                Some("expected jabber:client"),
            );
        }
        if !version_ok {
            return self.fail(StreamError::UnsupportedVersion, None);
        }
        if self.framing != Framing::Stream && !self.tls && !self.config.allow_plaintext {
            // RFC 7395 §3.9: TLS belongs to the WebSocket layer, so without it (and without
            // the plaintext opt-in) nothing could be negotiated here at all. The same holds
            // for HTTP below BOSH (XEP-0206 §15).
            let text = match self.framing {
                Framing::Bosh => "this BOSH endpoint requires https://",
                _ => "this WebSocket endpoint requires wss://",
            };
            return self.fail(StreamError::PolicyViolation, Some(text));
        }
        let features = self.features();
        self.write_element(&features);
        self.state = if self.account.is_some() {
            State::Bind
        } else {
            State::Negotiating
        };
    }

    fn open_header(&mut self, domain: String) {
        if self.header_sent {
            return;
        }
        self.header_sent = true;
        let id = stream_id();
        let header = match self.framing {
            Framing::Stream => stream_header(NS_CLIENT, &domain, None, &id),
            Framing::WebSocket => websocket::open_element(&domain, &id),
            // The session creation response carries the stream attributes.
            Framing::Bosh => return,
        };
        self.write(header);
    }

    /// Stream features for the current phase (RFC 6120 §4.3.2).
    fn features(&self) -> Element {
        let mut f = Element::new("features", NS_STREAMS);
        if self.account.is_some() {
            f.push(Element::new("bind", NS_BIND));
            // RFC 3921 sessions: some older clients still ask; it is a no-op (RFC 6121 App. E).
            f.push(
                Element::new("session", NS_SESSION)
                    .with_child(Element::new("optional", NS_SESSION)),
            );
            for extra in &self.config.session_features {
                f.push(extra.clone());
            }
            // Offered with binding: resumption replaces it (XEP-0198 §5), and both apply to
            // the session that follows (XEP-0352 §2).
            f.push(crate::sm::feature());
            f.push(crate::csi::feature());
            return f;
        }
        // RFC 7395 §3.9: never STARTTLS inside a WebSocket.
        if !self.tls && self.framing == Framing::Stream {
            let mut starttls = Element::new("starttls", NS_TLS);
            if !self.config.allow_plaintext {
                starttls.push(Element::new("required", NS_TLS));
                // Only STARTTLS is offered until TLS is up (RFC 6120 §5.3.1).
                f.push(starttls);
                return f;
            }
            f.push(starttls);
        }
        let mechs = self.mechanisms();
        let mut m = Element::new("mechanisms", NS_SASL);
        for mech in &mechs {
            m.push(Element::new("mechanism", NS_SASL).with_text(mech.name()));
        }
        f.push(m);
        // XEP-0388 next to RFC 6120 SASL, which older clients keep using.
        f.push(self.sasl2_feature(&mechs));
        let cb_types = self.cb_types();
        if !cb_types.is_empty() {
            f.push(sasl::channel_binding_feature(&cb_types));
        }
        if let Some(reg) = &self.config.register_feature {
            f.push(reg.clone());
        }
        f
    }

    fn cb_types(&self) -> Vec<&'static str> {
        let mut types = Vec::new();
        if let Some(cb) = &self.cb {
            if cb.tls_exporter.is_some() {
                types.push(CB_TLS_EXPORTER);
            }
            if cb.tls_server_end_point.is_some() {
                types.push(CB_TLS_SERVER_END_POINT);
            }
        }
        types
    }

    /// Mechanisms offered: -PLUS only with channel bindings, PLAIN only over TLS unless
    /// plaintext was explicitly allowed.
    fn mechanisms(&self) -> Vec<Mechanism> {
        let has_cb = !self.cb_types().is_empty();
        Mechanism::ALL
            .into_iter()
            .filter(|m| !m.is_plus() || has_cb)
            .filter(|m| *m != Mechanism::Plain || self.tls || self.config.allow_plaintext)
            .collect()
    }

    fn element(&mut self, el: Element) {
        match self.state {
            State::Negotiating | State::SaslChallenge => self.negotiation_element(el),
            State::Bind => self.bind_element(el),
            State::Established => {
                if is_session_request(&el) {
                    // RFC 6121 App. E: offered as optional (see `features`), so it is a no-op
                    // that must still succeed; strophe.js sends it anyway.
                    let mut result = Element::new("iq", NS_CLIENT).with_attr("type", "result");
                    if let Some(id) = el.attr("id") {
                        result.set_attr("id", id.to_owned());
                    }
                    self.write_element(&result);
                } else if el.ns == NS_CLIENT
                    && matches!(el.name.as_str(), "message" | "presence" | "iq")
                {
                    self.pending.push_back(Action::Stanza(el));
                } else if el.ns == NS_SM || el.ns == NS_CSI {
                    self.pending.push_back(Action::Nonza(el));
                } else if el.ns == NS_CLIENT {
                    self.fail(StreamError::UnsupportedStanzaType, None);
                } else {
                    self.fail(
                        StreamError::UnsupportedStanzaType,
                        Some("unknown top-level element"),
                    );
                }
            }
            // Requests outstanding or closed: `next_action` does not read in these states.
            State::Header
            | State::AwaitCredentials
            | State::AwaitBind
            | State::AwaitResume
            | State::AwaitSasl2
            | State::Closed => {}
        }
    }

    fn negotiation_element(&mut self, el: Element) {
        if el.is("starttls", NS_TLS) {
            if self.framing != Framing::Stream {
                let text = match self.framing {
                    Framing::Bosh => "STARTTLS is not available over BOSH; use https://",
                    _ => "STARTTLS is not available over WebSocket; use wss://",
                };
                return self.fail(StreamError::PolicyViolation, Some(text));
            }
            if self.tls || self.state != State::Negotiating {
                return self.fail(
                    StreamError::PolicyViolation,
                    Some("TLS is already negotiated"),
                );
            }
            self.write_element(&Element::new("proceed", NS_TLS));
            self.pending.push_back(Action::StartTls);
            return;
        }
        if el.ns == NS_SASL {
            return self.sasl_element(el);
        }
        if el.ns == NS_SASL2 {
            return self.sasl2_element(el);
        }
        if el.is("iq", NS_CLIENT) && self.state == State::Negotiating {
            if !self.tls && !self.config.allow_plaintext {
                return self.fail(StreamError::PolicyViolation, Some("use STARTTLS first"));
            }
            let mut el = el;
            // Registration creates the account in the stream's domain.
            if el.attr("to").is_none()
                && let Some(domain) = &self.domain
            {
                el.set_attr("to", domain.clone());
            }
            self.pending.push_back(Action::PreAuthIq(el));
            return;
        }
        if el.ns == NS_CLIENT {
            return self.fail(StreamError::NotAuthorized, Some("authenticate first"));
        }
        self.fail(StreamError::UnsupportedStanzaType, None);
    }

    fn sasl_element(&mut self, el: Element) {
        match (el.name.as_str(), self.state) {
            ("auth", State::Negotiating) => self.sasl_auth(&el),
            ("response", State::SaslChallenge) => self.sasl_response(&el),
            ("abort", _) => {
                self.sasl = None;
                self.awaiting_initial = None;
                self.state = State::Negotiating;
                self.sasl_failure(SaslError::Aborted, None);
            }
            _ => {
                self.sasl = None;
                self.state = State::Negotiating;
                self.sasl_failure(SaslError::MalformedRequest("unexpected SASL element"), None);
            }
        }
    }

    fn sasl_auth(&mut self, el: &Element) {
        if !self.tls && !self.config.allow_plaintext {
            return self.sasl_failure(SaslError::EncryptionRequired, None);
        }
        let mech = el.attr("mechanism").and_then(Mechanism::from_name);
        let Some(mech) = mech.filter(|m| self.mechanisms().contains(m)) else {
            return self.sasl_failure(SaslError::InvalidMechanism, None);
        };
        let text = el.text();
        if text.trim().is_empty() {
            // No initial response (RFC 6120 §6.4.2): an empty challenge asks for it.
            self.awaiting_initial = Some(mech);
            self.state = State::SaslChallenge;
            self.write_element(&Element::new("challenge", NS_SASL));
            return;
        }
        self.start_mechanism(mech, &text);
    }

    fn start_mechanism(&mut self, mech: Mechanism, text: &str) {
        self.state = State::Negotiating;
        let payload = match sasl::decode_payload(text) {
            Ok(p) => p,
            Err(e) => return self.sasl_failure(e, None),
        };
        let domain = self.domain.clone().unwrap_or_default();
        match mech.hash() {
            Some(hash) if mech != Mechanism::Plain => {
                let cb = self.cb.as_deref().cloned().unwrap_or_default();
                let offered: Vec<&str> = self.mechanisms().iter().map(|m| m.name()).collect();
                let ssdp = Some(sasl::ssdp_value(&offered, &self.cb_types()));
                let started = ScramServer::new(mech, cb, self.tls, ssdp).and_then(|mut scram| {
                    let first = scram.client_first(&payload)?;
                    let account = account_of(&first.username, &domain)?;
                    sasl::check_authzid(first.authzid.as_deref(), &first.username, &domain)?;
                    Ok((scram, account))
                });
                match started {
                    Ok((scram, account)) => {
                        self.sasl = Some(Sasl::Scram(Box::new(scram)));
                        self.request_credentials(account, hash);
                    }
                    Err(e) => self.sasl_failure(e, None),
                }
            }
            _ => match sasl::plain_parse(&payload) {
                Ok((authzid, authcid, password)) => {
                    let checked = account_of(&authcid, &domain).and_then(|acct| {
                        sasl::check_authzid(authzid.as_deref(), &authcid, &domain).map(|()| acct)
                    });
                    match checked {
                        Ok(account) => {
                            self.sasl = Some(Sasl::Plain { password });
                            self.request_credentials(account, ScramHash::Sha256);
                        }
                        Err(e) => self.sasl_failure(e, None),
                    }
                }
                Err(e) => self.sasl_failure(e, None),
            },
        }
    }

    fn request_credentials(&mut self, account: String, hash: ScramHash) {
        self.account = None;
        self.state = State::AwaitCredentials;
        self.pending
            .push_back(Action::Credentials { account, hash });
    }

    /// The answer to [`Action::Credentials`]: the account's keys, or `None` if it has none.
    pub fn provide_credentials(&mut self, account: &str, keys: Option<ScramKeys>) {
        if self.state != State::AwaitCredentials {
            return;
        }
        match self.sasl.take() {
            Some(Sasl::Scram(mut scram)) => match scram.server_first(keys) {
                Ok(challenge) => {
                    self.sasl = Some(Sasl::Scram(scram));
                    self.state = State::SaslChallenge;
                    self.write_challenge(&challenge);
                    self.pending_account = Some(account.to_owned());
                }
                Err(e) => {
                    self.state = State::Negotiating;
                    self.sasl_failure(e, None);
                }
            },
            Some(Sasl::Plain { password }) => {
                self.state = State::Negotiating;
                let ok = keys.is_some_and(|k| sasl::plain_verify(&password, &k));
                if ok {
                    self.succeed(account.to_owned(), Vec::new());
                } else {
                    self.pending.push_back(Action::AuthFailed {
                        account: Some(account.to_owned()),
                    });
                    self.sasl_failure(SaslError::NotAuthorized, None);
                }
            }
            None => self.state = State::Negotiating,
        }
    }

    /// Refuse the login without checking credentials (lock-out after too many failures).
    pub fn refuse_login(&mut self, text: &str) {
        if self.state != State::AwaitCredentials {
            return;
        }
        self.sasl = None;
        self.state = State::Negotiating;
        self.sasl_failure(SaslError::NotAuthorized, Some(text));
    }

    fn sasl_response(&mut self, el: &Element) {
        if let Some(mech) = self.awaiting_initial.take() {
            return self.start_mechanism(mech, &el.text());
        }
        let Some(Sasl::Scram(mut scram)) = self.sasl.take() else {
            self.state = State::Negotiating;
            return self.sasl_failure(SaslError::MalformedRequest("no exchange in progress"), None);
        };
        self.state = State::Negotiating;
        let account = self.pending_account.take();
        let payload = match sasl::decode_payload(&el.text()) {
            Ok(p) => p,
            Err(e) => return self.sasl_failure(e, None),
        };
        match (scram.client_final(&payload), account) {
            (Ok(server_final), Some(account)) => self.succeed(account, server_final),
            (result, account) => {
                self.pending.push_back(Action::AuthFailed { account });
                let err = result.err().unwrap_or(SaslError::NotAuthorized);
                self.sasl_failure(err, None);
            }
        }
    }

    fn succeed(&mut self, account: String, additional: Vec<u8>) {
        if self.sasl2.is_some() {
            return self.sasl2_authenticated(account, additional);
        }
        self.sasl = None;
        let success = if additional.is_empty() {
            Element::new("success", NS_SASL)
        } else {
            sasl_payload("success", &additional)
        };
        self.write_element(&success);
        self.account = Some(account.clone());
        self.pending.push_back(Action::Authenticated { account });
        self.restart();
    }

    /// RFC 6120 §6.4.6 / §5.4.3.3: after success the stream restarts at the element boundary.
    fn restart(&mut self) {
        self.reader.reset();
        self.header_sent = false;
        self.state = State::Header;
    }

    fn sasl_failure(&mut self, err: SaslError, text: Option<&str>) {
        if self.sasl2_failure(&err, text) {
            return;
        }
        self.write_element(&err.to_failure_element(text));
    }

    fn bind_element(&mut self, el: Element) {
        if el.ns == NS_SM {
            return self.sm_before_bind(&el);
        }
        if el.ns == NS_CSI {
            // XEP-0352 applies to a bound session; a state sent before it changes nothing.
            return;
        }
        if !el.is("iq", NS_CLIENT) {
            return self.fail(StreamError::NotAuthorized, Some("bind a resource first"));
        }
        let id = el.attr("id").unwrap_or_default().to_owned();
        if let Some(bind) = el
            .child("bind", NS_BIND)
            .filter(|_| el.attr("type") == Some("set"))
        {
            let resource = bind
                .child("resource", NS_BIND)
                .map(Element::text)
                .filter(|r| !r.is_empty());
            self.bind_id = id;
            self.state = State::AwaitBind;
            self.pending.push_back(Action::Bind { resource });
        } else {
            // RFC 6120 §7.7.2.1-style refusal of anything else before binding.
            self.iq_error(&id, "cancel", "not-allowed");
        }
    }

    /// XEP-0198 before a resource is bound: `<resume/>` (§5) goes to the transport;
    /// `<enable/>` is too early (§3, answered `<failed/>`); `<r/>` and `<a/>` mean nothing yet.
    fn sm_before_bind(&mut self, el: &Element) {
        match Nonza::parse(el) {
            Some(Ok(Nonza::Resume { previd, h })) => {
                self.state = State::AwaitResume;
                self.pending.push_back(Action::Resume { previd, h });
            }
            Some(Ok(Nonza::Enable { .. })) => {
                self.write_element(&SmError::UnexpectedRequest.to_element());
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) if e.closes_stream() => self.fail_with(&e.to_element()),
            Some(Err(e)) => self.write_element(&e.to_element()),
        }
    }

    /// The answer to [`Action::Resume`]: `Ok(<resumed/>)` makes the stream established (the
    /// transport then writes the stanzas to retransmit); `Err(<failed/>)` leaves it waiting
    /// for a resource binding, as XEP-0198 §5 lets the client go on with a new session.
    pub fn resumed(&mut self, answer: Result<Element, Element>) {
        if self.state != State::AwaitResume {
            return;
        }
        if self.sasl2.is_some() {
            return self.sasl2_resumed(answer);
        }
        match answer {
            Ok(resumed) => {
                self.write_element(&resumed);
                self.state = State::Established;
            }
            Err(failed) => {
                self.write_element(&failed);
                self.state = State::Bind;
            }
        }
    }

    /// Writes a stanza already serialised for a `jabber:client` stream (a retransmission
    /// after XEP-0198 resumption), framed like every other element.
    pub fn send_stanza_xml(&mut self, xml: &str) {
        let framed = match self.framing {
            Framing::Stream => xml.to_owned(),
            _ => with_client_ns(xml).into_owned(),
        };
        self.write(framed);
    }

    /// Closes the stream with a stream error built elsewhere (XEP-0198 errors carry an
    /// application condition).
    pub fn fail_with(&mut self, error: &Element) {
        if self.state == State::Closed {
            return;
        }
        let domain = self
            .domain
            .clone()
            .or_else(|| self.config.domains.first().cloned())
            .unwrap_or_default();
        self.open_header(domain);
        self.write_element(error);
        self.finish();
    }

    /// The answer to [`Action::Bind`]: the bound full JID, or a binding error condition
    /// (`bad-request` for a resource that is not a valid resourcepart, `conflict`,
    /// `not-allowed`, `resource-constraint`).
    pub fn bound(&mut self, result: Result<&str, &'static str>) {
        if self.state != State::AwaitBind {
            return;
        }
        if self.sasl2.is_some() {
            return self.sasl2_bound(result);
        }
        let id = std::mem::take(&mut self.bind_id);
        match result {
            Ok(full) => {
                let reply = Element::new("iq", NS_CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", id)
                    .with_child(
                        Element::new("bind", NS_BIND)
                            .with_child(Element::new("jid", NS_BIND).with_text(full)),
                    );
                self.write_element(&reply);
                self.state = State::Established;
            }
            Err(condition) => {
                self.state = State::Bind;
                let type_ = if condition == "resource-constraint" {
                    "wait"
                } else if condition == "bad-request" {
                    "modify"
                } else {
                    "cancel"
                };
                self.iq_error(&id, type_, condition);
            }
        }
    }

    fn iq_error(&mut self, id: &str, type_: &str, condition: &str) {
        let reply = Element::new("iq", NS_CLIENT)
            .with_attr("type", "error")
            .with_attr("id", id)
            .with_child(
                Element::new("error", NS_CLIENT)
                    .with_attr("type", type_)
                    .with_child(Element::new(condition, NS_STANZAS)),
            );
        self.write_element(&reply);
    }

    /// The transport finished the TLS handshake that [`Action::StartTls`] asked for.
    pub fn tls_established(&mut self, cb: ChannelBinding) {
        self.tls = true;
        self.cb = Some(Box::new(cb));
        self.restart();
    }

    /// Queue a stanza or nonza for the client (e.g. the answer to a pre-auth IQ).
    pub fn send_element(&mut self, el: &Element) {
        self.write_element(el);
    }

    /// Close the stream with an error (RFC 6120 §4.9): header first if none was sent.
    pub fn fail(&mut self, error: StreamError, text: Option<&str>) {
        if self.state == State::Closed {
            return;
        }
        let domain = self
            .domain
            .clone()
            .or_else(|| self.config.domains.first().cloned())
            .unwrap_or_default();
        self.open_header(domain);
        self.write_element(&error.to_element(text));
        self.finish();
    }

    /// Close the stream cleanly (e.g. after the peer closed its side).
    pub fn close(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.finish();
    }

    /// Our end of the stream (RFC 6120 §4.4, RFC 7395 §3.6), then the connection closes.
    fn finish(&mut self) {
        let end = match self.framing {
            Framing::Stream => Some(String::from("</stream:stream>")),
            Framing::WebSocket => Some(websocket::close_element()),
            // A terminate body ends a BOSH session; the transport writes it.
            Framing::Bosh => None,
        };
        if let Some(end) = end {
            self.write(end);
        }
        self.state = State::Closed;
        self.pending.push_back(Action::Close);
    }

    /// Writes a top-level element as the framing wants it: inside the `jabber:client` stream
    /// over TCP, or as a standalone document declaring its own namespaces over WebSocket.
    fn write_element(&mut self, el: &Element) {
        let xml = match self.framing {
            Framing::Stream => el.to_xml_in(NS_CLIENT),
            // A BOSH response body is a standalone document too.
            Framing::WebSocket | Framing::Bosh => websocket::frame_xml(el),
        };
        self.write(xml);
    }

    fn write(&mut self, s: String) {
        // Adjacent writes are merged so the transport does one syscall per batch; WebSocket
        // messages must stay one element each.
        if self.framing == Framing::Stream
            && let Some(Action::Write(last)) = self.pending.back_mut()
        {
            last.push_str(&s);
        } else {
            self.pending.push_back(Action::Write(s));
        }
    }
}

/// An RFC 3921 session establishment request: `<iq type='set'>` to the server (or no `to`)
/// carrying only `<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>`.
fn is_session_request(el: &Element) -> bool {
    el.is("iq", NS_CLIENT)
        && el.attr("type") == Some("set")
        && el.attr("to").is_none()
        && el.child("session", NS_SESSION).is_some()
        && el.elements().count() == 1
}

/// The bare JID for a SASL authcid: a localpart (or, leniently, `local@domain` for this
/// stream's domain), normalised (RFC 6120 §6.3.7, RFC 7622 §3.3).
fn account_of(authcid: &str, domain: &str) -> Result<String, SaslError> {
    let candidate = if authcid.contains('@') {
        authcid.to_owned()
    } else {
        format!("{authcid}@{domain}")
    };
    let bare = crate::jidprep::normalise_bare(&candidate).map_err(|_| SaslError::NotAuthorized)?;
    match bare.split_once('@') {
        Some((local, d)) if d == domain && !local.is_empty() => Ok(bare),
        _ => Err(SaslError::NotAuthorized),
    }
}

fn sasl_payload(name: &str, data: &[u8]) -> Element {
    Element::new(name, NS_SASL).with_text(sasl::encode_payload(data))
}

/// A fresh, unguessable stream id (RFC 6120 §4.7.3).
fn stream_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().r#gen();
    format!("{n:032x}")
}

#[cfg(test)]
mod tests {
    //! Transcript tests, named after the RFC 6120 sections whose rules they check.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>";

    pub(super) fn config(allow_plaintext: bool) -> std::sync::Arc<C2sConfig> {
        std::sync::Arc::new(C2sConfig {
            domains: vec!["example.org".into()],
            allow_plaintext,
            limits: Limits {
                max_stanza_bytes: 4096,
                max_depth: 8,
                max_attrs: 8,
            },
            register_feature: None,
            session_features: vec![],
            fast: true,
            bind2_features: vec![crate::ns::NS_CARBONS.to_owned()],
        })
    }

    pub(super) fn tls_binding() -> ChannelBinding {
        ChannelBinding {
            tls_exporter: Some(vec![7; 32]),
            tls_server_end_point: Some(vec![9; 32]),
        }
    }

    /// Feed `input` and collect actions until the stream needs more.
    pub(super) fn run(s: &mut C2sStream, input: &str) -> Vec<Action> {
        let mut bytes = input.as_bytes();
        let mut out = Vec::new();
        while let Some(a) = s.next_action(&mut bytes) {
            out.push(a);
        }
        out
    }

    /// The bytes written, one entry per [`Action::Write`] (one message over WebSocket).
    pub(super) fn messages(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Write(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn written(actions: &[Action]) -> String {
        messages(actions).concat()
    }

    pub(super) fn keys(password: &str) -> ScramKeys {
        sasl::derive_keys(ScramHash::Sha256, password, b"saltsaltsaltsalt", 4096)
    }

    /// A SCRAM-SHA-256 client, enough to drive the server through RFC 7677's steps.
    pub(super) fn scram_client(
        s: &mut C2sStream,
        password: &str,
        gs2: &str,
        cb_data: &[u8],
    ) -> Vec<Action> {
        let mech = if gs2.starts_with('p') {
            "SCRAM-SHA-256-PLUS"
        } else {
            "SCRAM-SHA-256"
        };
        let first_bare = "n=juliet,r=clientnonce";
        let auth = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{}</auth>",
            B64.encode(format!("{gs2}{first_bare}"))
        );
        let actions = run(s, &auth);
        assert!(
            matches!(actions.last(), Some(Action::Credentials { account, hash: ScramHash::Sha256 }) if account == "juliet@example.org"),
            "{actions:?}"
        );
        let actions = {
            s.provide_credentials("juliet@example.org", Some(keys(password)));
            run(s, "")
        };
        let challenge = written(&actions);
        let b64 = challenge
            .split('>')
            .nth(1)
            .and_then(|t| t.split('<').next())
            .unwrap();
        let server_first = String::from_utf8(B64.decode(b64).unwrap()).unwrap();
        let nonce = server_first
            .split(',')
            .find_map(|p| p.strip_prefix("r="))
            .unwrap();
        let mut cbind = gs2.as_bytes().to_vec();
        cbind.extend_from_slice(cb_data);
        let without_proof = format!("c={},r={nonce}", B64.encode(&cbind));
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), b"saltsaltsaltsalt", 4096, &mut salted);
        let mut mac = Hmac::<Sha256>::new_from_slice(&salted).unwrap();
        mac.update(b"Client Key");
        let client_key = mac.finalize().into_bytes();
        let stored_key = Sha256::digest(client_key);
        let mut mac = Hmac::<Sha256>::new_from_slice(&stored_key).unwrap();
        mac.update(auth_message.as_bytes());
        let signature = mac.finalize().into_bytes();
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let response = format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
        );
        run(s, &response)
    }

    #[test]
    fn rfc6120_4_2_header_and_features_are_one_write_over_tcp() {
        let mut s = C2sStream::new(config(false), None);
        let actions = run(&mut s, HEADER);
        assert!(
            matches!(&actions[..], [Action::Write(w)] if w.starts_with("<?xml version='1.0'?><stream:stream ")
                && w.contains("<features xmlns='http://etherx.jabber.org/streams'>")),
            "{actions:?}"
        );
        assert_eq!(s.framing(), Framing::Stream);
    }

    #[test]
    fn rfc6120_5_3_1_starttls_is_required_and_offered_alone() {
        let mut s = C2sStream::new(config(false), None);
        let out = written(&run(&mut s, HEADER));
        assert!(out.contains("<stream:stream"), "{out}");
        assert!(
            out.contains(
                "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
            ),
            "{out}"
        );
        assert!(!out.contains("mechanisms"), "{out}");
        // SASL before TLS is refused.
        let out = written(&run(
            &mut s,
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABy</auth>",
        ));
        assert!(out.contains("<encryption-required/>"), "{out}");
    }

    #[test]
    fn rfc6120_5_4_3_3_plaintext_after_starttls_is_left_for_the_transport_to_discard() {
        let mut s = C2sStream::new(config(false), None);
        run(&mut s, HEADER);
        let injected =
            "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><iq type='get' id='evil'/>";
        let mut bytes = injected.as_bytes();
        let mut actions = Vec::new();
        while let Some(a) = s.next_action(&mut bytes) {
            let stop = matches!(a, Action::StartTls);
            actions.push(a);
            if stop {
                break;
            }
        }
        assert!(written(&actions).contains("<proceed"));
        assert!(matches!(actions.last(), Some(Action::StartTls)));
        // The injected IQ was not parsed: it is still in the buffer the transport throws away.
        assert_eq!(bytes, b"<iq type='get' id='evil'/>");
        s.tls_established(tls_binding());
        let out = written(&run(&mut s, HEADER));
        assert!(out.contains("SCRAM-SHA-256-PLUS"), "{out}");
        assert!(
            out.contains("<channel-binding type='tls-exporter'/>"),
            "{out}"
        );
    }

    #[test]
    fn rfc6120_6_scram_sha_256_login_then_7_bind() {
        let mut s = C2sStream::new(config(false), Some(tls_binding()));
        run(&mut s, HEADER);
        let actions = scram_client(&mut s, "secret", "n,,", b"");
        assert!(written(&actions).contains("<success"), "{actions:?}");
        assert!(actions.iter().any(
            |a| matches!(a, Action::Authenticated { account } if account == "juliet@example.org")
        ));
        assert_eq!(s.account(), Some("juliet@example.org"));
        // §6.4.6: the stream restarts; bind is offered.
        let out = written(&run(&mut s, HEADER));
        assert!(
            out.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
            "{out}"
        );
        let actions = run(
            &mut s,
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony</resource></bind></iq>",
        );
        assert!(
            matches!(actions.last(), Some(Action::Bind { resource: Some(r) }) if r == "balcony")
        );
        s.bound(Ok("juliet@example.org/balcony"));
        let out = written(&run(&mut s, ""));
        assert!(
            out.contains("<jid>juliet@example.org/balcony</jid>"),
            "{out}"
        );
        assert!(s.is_established());
        let actions = run(
            &mut s,
            "<message to='romeo@example.org'><body>hi</body></message>",
        );
        assert!(matches!(&actions[..], [Action::Stanza(m)] if m.name == "message"));
    }

    /// A stream authenticated as juliet (PLAIN over TLS) and restarted, before binding;
    /// returns the post-authentication features.
    fn authenticated() -> (C2sStream, String) {
        let mut s = C2sStream::new(config(false), Some(tls_binding()));
        run(&mut s, HEADER);
        run(
            &mut s,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                B64.encode("\0juliet\0secret")
            ),
        );
        s.provide_credentials("juliet@example.org", Some(keys("secret")));
        run(&mut s, "");
        let features = written(&run(&mut s, HEADER));
        (s, features)
    }

    #[test]
    fn xep0198_2_and_xep0352_2_features_are_offered_after_authentication() {
        let mut s = C2sStream::new(config(false), Some(tls_binding()));
        let before = written(&run(&mut s, HEADER));
        // Before authentication only as a SASL2 inline feature (resumption in <authenticate/>).
        let outside_sasl2: String = before
            .split("<authentication")
            .take(1)
            .chain(before.split("</authentication>").skip(1))
            .collect();
        assert!(!outside_sasl2.contains("urn:xmpp:sm:3"), "{before}");
        let (_, after) = authenticated();
        assert!(after.contains("<sm xmlns='urn:xmpp:sm:3'/>"), "{after}");
        assert!(after.contains("<csi xmlns='urn:xmpp:csi:0'/>"), "{after}");
    }

    #[test]
    fn xep0198_3_enable_before_binding_fails_and_the_stream_goes_on() {
        let (mut s, _) = authenticated();
        let out = written(&run(
            &mut s,
            "<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
        ));
        assert!(
            out.contains("<failed xmlns='urn:xmpp:sm:3'><unexpected-request"),
            "{out}"
        );
        // CSI before binding is ignored, and binding still works.
        assert!(run(&mut s, "<inactive xmlns='urn:xmpp:csi:0'/>").is_empty());
        let actions = run(
            &mut s,
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        );
        assert!(matches!(
            actions.last(),
            Some(Action::Bind { resource: None })
        ));
    }

    #[test]
    fn xep0198_5_resume_replaces_binding() {
        let (mut s, _) = authenticated();
        // The client pipelines an <r/> behind its <resume/>: it is read only once the
        // transport has answered.
        let mut input =
            &b"<resume xmlns='urn:xmpp:sm:3' previd='abc' h='3'/><r xmlns='urn:xmpp:sm:3'/>"[..];
        let first = s.next_action(&mut input);
        assert!(
            matches!(&first, Some(Action::Resume { previd, h: 3 }) if previd == "abc"),
            "{first:?}"
        );
        assert!(s.next_action(&mut input).is_none());
        s.resumed(Ok(crate::sm::Nonza::Resumed {
            previd: "abc".into(),
            h: 7,
        }
        .to_element()));
        s.send_stanza_xml("<message to='juliet@example.org/a'><body>again</body></message>");
        let mut actions = Vec::new();
        while let Some(a) = s.next_action(&mut input) {
            actions.push(a);
        }
        let out = written(&actions);
        assert!(
            out.starts_with("<resumed xmlns='urn:xmpp:sm:3' previd='abc' h='7'/><message"),
            "{out}"
        );
        assert!(matches!(actions.last(), Some(Action::Nonza(r)) if r.name == "r"));
        assert!(s.is_established());
        // Stream management and client state elements go to the transport.
        let actions = run(
            &mut s,
            "<a xmlns='urn:xmpp:sm:3' h='1'/><active xmlns='urn:xmpp:csi:0'/>",
        );
        assert!(
            matches!(&actions[..], [Action::Nonza(a), Action::Nonza(c)]
                if a.name == "a" && c.name == "active"),
            "{actions:?}"
        );
    }

    #[test]
    fn xep0198_5_failed_resumption_leaves_binding_open() {
        let (mut s, _) = authenticated();
        run(
            &mut s,
            "<resume xmlns='urn:xmpp:sm:3' previd='gone' h='0'/>",
        );
        s.resumed(Err(crate::sm::SmError::UnknownSession.to_element()));
        let out = written(&run(&mut s, ""));
        assert!(out.contains("<item-not-found"), "{out}");
        let actions = run(
            &mut s,
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        );
        assert!(matches!(actions.last(), Some(Action::Bind { .. })));
        // A malformed <resume/> (no h) is a stream error.
        let (mut s, _) = authenticated();
        let out = written(&run(&mut s, "<resume xmlns='urn:xmpp:sm:3' previd='abc'/>"));
        assert!(out.contains("<bad-format"), "{out}");
        assert!(s.is_closed());
    }

    #[test]
    fn rfc6120_6_wrong_scram_password_is_not_authorized() {
        let mut s = C2sStream::new(config(false), Some(tls_binding()));
        run(&mut s, HEADER);
        let mut actions = Vec::new();
        // The client computes its proof from another password than the stored keys.
        let mut auth = run(
            &mut s,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
                B64.encode("n,,n=juliet,r=abc")
            ),
        );
        actions.append(&mut auth);
        s.provide_credentials("juliet@example.org", Some(keys("right")));
        let challenge = written(&run(&mut s, ""));
        let b64 = challenge
            .split('>')
            .nth(1)
            .and_then(|t| t.split('<').next())
            .unwrap();
        let server_first = String::from_utf8(B64.decode(b64).unwrap()).unwrap();
        let nonce = server_first
            .split(',')
            .find_map(|p| p.strip_prefix("r="))
            .unwrap();
        let proof = B64.encode([0u8; 32]);
        let out = run(
            &mut s,
            &format!(
                "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                B64.encode(format!("c=biws,r={nonce},p={proof}"))
            ),
        );
        assert!(written(&out).contains("<not-authorized/>"), "{out:?}");
        assert!(out.iter().any(|a| matches!(a, Action::AuthFailed { .. })));
        assert_eq!(s.account(), None);
    }

    #[test]
    fn rfc5802_6_scram_plus_with_tls_exporter_binding() {
        let mut s = C2sStream::new(config(false), Some(tls_binding()));
        run(&mut s, HEADER);
        let actions = scram_client(&mut s, "secret", "p=tls-exporter,,", &[7; 32]);
        assert!(written(&actions).contains("<success"), "{actions:?}");
    }

    #[test]
    fn rfc5802_6_scram_plus_with_another_channel_fails() {
        let mut s = C2sStream::new(config(false), Some(tls_binding()));
        run(&mut s, HEADER);
        let actions = scram_client(&mut s, "secret", "p=tls-exporter,,", &[8; 32]);
        assert!(
            written(&actions).contains("<not-authorized/>"),
            "{actions:?}"
        );
    }

    #[test]
    fn rfc6120_6_plain_over_tls() {
        let mut s = C2sStream::new(config(false), Some(tls_binding()));
        run(&mut s, HEADER);
        let actions = run(
            &mut s,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                B64.encode("\0juliet\0secret")
            ),
        );
        assert!(matches!(actions.last(), Some(Action::Credentials { .. })));
        s.provide_credentials("juliet@example.org", Some(keys("secret")));
        let out = written(&run(&mut s, ""));
        assert!(out.contains("<success"), "{out}");
    }

    #[test]
    fn rfc6120_4_9_3_6_unknown_host() {
        let mut s = C2sStream::new(config(false), None);
        let out = written(&run(
            &mut s,
            &HEADER.replace("example.org", "other.example"),
        ));
        assert!(out.contains("<host-unknown"), "{out}");
        assert!(out.ends_with("</stream:stream>"));
        assert!(s.is_closed());
    }

    #[test]
    fn rfc6120_4_9_3_25_unsupported_version() {
        let mut s = C2sStream::new(config(false), None);
        let out = written(&run(
            &mut s,
            &HEADER.replace(
                "to='example.org' version='1.0'",
                "to='example.org' version='0.9'",
            ),
        ));
        assert!(out.contains("<unsupported-version"), "{out}");
    }

    #[test]
    fn rfc6120_4_9_3_12_stanza_before_authentication_is_not_authorized() {
        let mut s = C2sStream::new(config(true), None);
        run(&mut s, HEADER);
        let out = written(&run(
            &mut s,
            "<message to='a@example.org'><body>x</body></message>",
        ));
        assert!(out.contains("<not-authorized"), "{out}");
    }

    #[test]
    fn rfc6120_13_12_oversized_stanza_is_a_policy_violation() {
        let mut s = C2sStream::new(config(true), None);
        run(&mut s, HEADER);
        let big = format!("<message><body>{}</body></message>", "x".repeat(5000));
        let out = written(&run(&mut s, &big));
        assert!(out.contains("<policy-violation"), "{out}");
        assert!(s.is_closed());
    }

    #[test]
    fn rfc6120_11_1_restricted_xml_closes_the_stream() {
        let mut s = C2sStream::new(config(true), None);
        run(&mut s, HEADER);
        let out = written(&run(&mut s, "<?evil pi?>"));
        assert!(
            out.contains("<restricted-xml") || out.contains("<not-well-formed"),
            "{out}"
        );
    }

    #[test]
    fn rfc6120_7_7_2_bind_without_resource_asks_the_transport_to_pick() {
        let mut s = C2sStream::new(config(false), Some(tls_binding()));
        run(&mut s, HEADER);
        scram_client(&mut s, "secret", "n,,", b"");
        run(&mut s, HEADER);
        let actions = run(
            &mut s,
            "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        );
        assert!(matches!(
            actions.last(),
            Some(Action::Bind { resource: None })
        ));
        s.bound(Err("conflict"));
        let out = written(&run(&mut s, ""));
        assert!(
            out.contains("<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"),
            "{out}"
        );
    }
}

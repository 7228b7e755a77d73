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

use crate::errors::StreamError;
use crate::ns::{
    NS_BIND, NS_CLIENT, NS_SASL, NS_SESSION, NS_STANZAS, NS_STREAMS, NS_TLS,
};
use crate::sasl::{
    self, CB_TLS_EXPORTER, CB_TLS_SERVER_END_POINT, ChannelBinding, Mechanism, SaslError,
    ScramHash, ScramKeys, ScramServer,
};
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
}

/// What the transport must do next.
#[derive(Debug)]
pub enum Action {
    /// Write these bytes (in order, before acting on anything that follows).
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
    reader: StreamReader,
    state: State,
    tls: bool,
    cb: Option<Box<ChannelBinding>>,
    header_sent: bool,
    /// The served domain this stream is for (from the header's `to`).
    domain: Option<String>,
    account: Option<String>,
    sasl: Option<Sasl>,
    /// The account whose SCRAM exchange is in progress.
    pending_account: Option<String>,
    /// The id of the bind request being answered.
    bind_id: String,
    pending: VecDeque<Action>,
}

impl C2sStream {
    /// A new stream; `tls` is true for direct TLS (XEP-0368), with its channel bindings.
    pub fn new(config: std::sync::Arc<C2sConfig>, tls: Option<ChannelBinding>) -> C2sStream {
        let limits = config.limits;
        C2sStream {
            config,
            reader: StreamReader::new(limits),
            state: State::Header,
            tls: tls.is_some(),
            cb: tls.map(Box::new),
            header_sent: false,
            domain: None,
            account: None,
            sasl: None,
            pending_account: None,
            bind_id: String::new(),
            pending: VecDeque::new(),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls
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

    /// True when no partial stanza is buffered (the transport may release its read buffer).
    pub fn is_idle(&self) -> bool {
        self.reader.is_idle()
    }

    /// The next action. Consumes bytes from `input` only while no request is outstanding;
    /// returns `None` when it needs more bytes (or an answer to a request).
    pub fn next_action(&mut self, input: &mut &[u8]) -> Option<Action> {
        loop {
            if let Some(a) = self.pending.pop_front() {
                return Some(a);
            }
            if matches!(
                self.state,
                State::AwaitCredentials | State::AwaitBind | State::Closed
            ) || input.is_empty()
            {
                return None;
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
            Event::StreamEnd => {
                self.write(String::from("</stream:stream>"));
                self.state = State::Closed;
                self.pending.push_back(Action::Close);
            }
            Event::Stanza(el) => self.element(el),
        }
    }

    fn stream_start(&mut self, header: &StreamHeader) {
        if self.state != State::Header {
            // A second header inside a stream is not well-formed XML at all.
            return self.fail(StreamError::NotWellFormed, None);
        }
        let to = header.attr("to").map(str::to_ascii_lowercase);
        let domain = match to {
            Some(d) if self.config.domains.iter().any(|s| *s == d) => d,
            Some(_) => {
                self.open_header(self.config.domains.first().cloned().unwrap_or_default());
                return self.fail(StreamError::HostUnknown, Some("this server does not serve that domain"));
            }
            None => {
                self.open_header(self.config.domains.first().cloned().unwrap_or_default());
                return self.fail(StreamError::HostUnknown, Some("the stream header needs a 'to'"));
            }
        };
        if let Some(d) = &self.domain {
            if *d != domain {
                self.open_header(d.clone());
                return self.fail(StreamError::HostUnknown, Some("the domain changed on restart"));
            }
        }
        self.domain = Some(domain.clone());
        self.open_header(domain);
        // RFC 6120 §4.7.5: a major version below 1 is not supported.
        let version_ok = header
            .attr("version")
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse::<u32>().ok())
            .is_some_and(|major| major >= 1);
        if !version_ok {
            return self.fail(StreamError::UnsupportedVersion, None);
        }
        let features = self.features();
        self.write(features.to_xml_in(NS_CLIENT));
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
        self.write(stream_header(NS_CLIENT, &domain, None, &id));
    }

    /// Stream features for the current phase (RFC 6120 §4.3.2).
    fn features(&self) -> Element {
        let mut f = Element::new("features", NS_STREAMS);
        if self.account.is_some() {
            f.push(Element::new("bind", NS_BIND));
            // RFC 3921 sessions: some older clients still ask; it is a no-op (RFC 6121 App. E).
            f.push(Element::new("session", NS_SESSION).with_child(Element::new("optional", NS_SESSION)));
            for extra in &self.config.session_features {
                f.push(extra.clone());
            }
            return f;
        }
        if !self.tls {
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
                if el.ns == NS_CLIENT && matches!(el.name.as_str(), "message" | "presence" | "iq") {
                    self.pending.push_back(Action::Stanza(el));
                } else if el.ns == NS_CLIENT {
                    self.fail(StreamError::UnsupportedStanzaType, None);
                } else {
                    self.fail(StreamError::UnsupportedStanzaType, Some("unknown top-level element"));
                }
            }
            // Requests outstanding or closed: `next_action` does not read in these states.
            State::Header | State::AwaitCredentials | State::AwaitBind | State::Closed => {}
        }
    }

    fn negotiation_element(&mut self, el: Element) {
        if el.is("starttls", NS_TLS) {
            if self.tls || self.state != State::Negotiating {
                return self.fail(StreamError::PolicyViolation, Some("TLS is already negotiated"));
            }
            self.write(Element::new("proceed", NS_TLS).to_xml_in(NS_CLIENT));
            self.pending.push_back(Action::StartTls);
            return;
        }
        if el.ns == NS_SASL {
            return self.sasl_element(el);
        }
        if el.is("iq", NS_CLIENT) && self.state == State::Negotiating {
            if !self.tls && !self.config.allow_plaintext {
                return self.fail(StreamError::PolicyViolation, Some("use STARTTLS first"));
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
        let payload = match sasl::decode_payload(&el.text()) {
            Ok(p) => p,
            Err(e) => return self.sasl_failure(e, None),
        };
        let domain = self.domain.clone().unwrap_or_default();
        match mech.hash() {
            Some(_) if mech != Mechanism::Plain => {
                let cb = self.cb.as_deref().cloned().unwrap_or_default();
                let offered: Vec<&str> = self.mechanisms().iter().map(|m| m.name()).collect();
                let ssdp = Some(sasl::ssdp_value(&offered, &self.cb_types()));
                let mut scram = Box::new(ScramServer::new(mech, cb, self.tls, ssdp));
                match scram.client_first(&payload) {
                    Ok(first) => match account_of(&first.username, &domain)
                        .and_then(|acct| {
                            sasl::check_authzid(first.authzid.as_deref(), &first.username, &domain)
                                .map(|()| acct)
                        }) {
                        Ok(account) => {
                            let hash = scram.hash();
                            self.sasl = Some(Sasl::Scram(scram));
                            self.request_credentials(account, hash);
                        }
                        Err(e) => self.sasl_failure(e, None),
                    },
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
        self.pending.push_back(Action::Credentials { account, hash });
    }

    /// The answer to [`Action::Credentials`]: the account's keys, or `None` if it has none.
    pub fn provide_credentials(&mut self, account: &str, keys: Option<ScramKeys>) {
        if self.state != State::AwaitCredentials {
            return;
        }
        match self.sasl.take() {
            Some(Sasl::Scram(mut scram)) => {
                let challenge = scram.server_first(keys);
                self.sasl = Some(Sasl::Scram(scram));
                self.state = State::SaslChallenge;
                self.write(sasl_payload("challenge", &challenge));
                self.pending_account = Some(account.to_owned());
            }
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
        self.sasl = None;
        self.write(if additional.is_empty() {
            Element::new("success", NS_SASL).to_xml_in(NS_CLIENT)
        } else {
            sasl_payload("success", &additional)
        });
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
        self.write(err.to_failure_element(text).to_xml_in(NS_CLIENT));
    }

    fn bind_element(&mut self, el: Element) {
        if !el.is("iq", NS_CLIENT) {
            return self.fail(StreamError::NotAuthorized, Some("bind a resource first"));
        }
        let id = el.attr("id").unwrap_or_default().to_owned();
        if let Some(bind) = el.child("bind", NS_BIND).filter(|_| el.attr("type") == Some("set")) {
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

    /// The answer to [`Action::Bind`]: the bound full JID, or a binding error condition
    /// (`bad-request` for a resource that is not a valid resourcepart, `conflict`,
    /// `not-allowed`, `resource-constraint`).
    pub fn bound(&mut self, result: Result<&str, &'static str>) {
        if self.state != State::AwaitBind {
            return;
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
                self.write(reply.to_xml_in(NS_CLIENT));
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
        self.write(reply.to_xml_in(NS_CLIENT));
    }

    /// The transport finished the TLS handshake that [`Action::StartTls`] asked for.
    pub fn tls_established(&mut self, cb: ChannelBinding) {
        self.tls = true;
        self.cb = Some(Box::new(cb));
        self.restart();
    }

    /// Queue a stanza or nonza for the client (e.g. the answer to a pre-auth IQ).
    pub fn send_element(&mut self, el: &Element) {
        self.write(el.to_xml_in(NS_CLIENT));
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
        self.write(error.to_element(text).to_xml_in(NS_CLIENT));
        self.write(String::from("</stream:stream>"));
        self.state = State::Closed;
        self.pending.push_back(Action::Close);
    }

    /// Close the stream cleanly (e.g. after the peer closed its side).
    pub fn close(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.write(String::from("</stream:stream>"));
        self.state = State::Closed;
        self.pending.push_back(Action::Close);
    }

    fn write(&mut self, s: String) {
        // Adjacent writes are merged so the transport does one syscall per batch.
        if let Some(Action::Write(last)) = self.pending.back_mut() {
            last.push_str(&s);
        } else {
            self.pending.push_back(Action::Write(s));
        }
    }
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

fn sasl_payload(name: &str, data: &[u8]) -> String {
    Element::new(name, NS_SASL)
        .with_text(sasl::encode_payload(data))
        .to_xml_in(NS_CLIENT)
}

/// A fresh, unguessable stream id (RFC 6120 §4.7.3).
fn stream_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().r#gen();
    format!("{n:032x}")
}

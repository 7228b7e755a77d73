//! The accepting side of the XEP-0114 component protocol, as a sans-IO state machine.
//!
//! A trusted external component (a gateway such as biboumi) connects to us and asks for its
//! own domain: it opens a stream in `jabber:component:accept` with `to` = that domain, we
//! answer with our header and a fresh stream id, and it proves the shared secret with
//! `<handshake>hex(SHA-1(id ‖ secret))</handshake>` (XEP-0114 §3). The digest is compared in
//! constant time. After our empty `<handshake/>` the component sends and receives stanzas for
//! its whole domain; every stanza it sends must come `from` that domain (RFC 6120 §4.9.3.9).
//!
//! Errors (XEP-0114 §3, RFC 6120 §4.9.3): a domain with no configured secret gets
//! `host-unknown`, a wrong handshake or anything else before it `not-authorized`, a second
//! component for a domain already connected `conflict` (the transport knows that and calls
//! [`ComponentStream::conflict`]). Reader errors map as everywhere (`policy-violation` for an
//! oversize stanza). Stanzas go out as `jabber:client` elements so the router and modules see
//! one namespace whatever the transport; [`to_component_xml`] maps them back on the way out.

use crate::errors::{StanzaError, StanzaErrorCondition, StreamError, error_reply};
use crate::ns::{NS_CLIENT, NS_COMPONENT_ACCEPT, NS_STREAMS};
use franca_xml::{Element, Event, Limits, Node, StreamHeader, StreamReader, escape_attr};
use sha1::{Digest, Sha1};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What the component listener accepts; shared by every connection.
#[derive(Clone)]
pub struct ComponentConfig {
    /// Domain (normalised, lowercase) → shared secret.
    pub secrets: HashMap<String, String>,
    pub limits: Limits,
}

impl std::fmt::Debug for ComponentConfig {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut domains: Vec<&String> = self.secrets.keys().collect();
        domains.sort();
        f.debug_struct("ComponentConfig")
            .field("domains", &domains)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What the transport must do next.
#[derive(Debug)]
pub enum Action {
    /// Write these bytes, in order.
    Write(String),
    /// The handshake proved the secret for `domain`: register the component, then call
    /// [`ComponentStream::accepted`] or [`ComponentStream::conflict`].
    Authenticated { domain: String },
    /// A stanza from the component, in `jabber:client`, its `from` within the component's
    /// domain and its `to` a valid JID: for the router.
    Stanza(Element),
    /// The stream is over: close the connection after writing everything before this.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the component's stream header.
    Header,
    /// Header answered; waiting for `<handshake/>`.
    Handshake,
    /// Waiting for the transport to register the domain.
    AwaitRegistration,
    Established,
    Closed,
}

/// One component connection's protocol state.
pub struct ComponentStream {
    config: Arc<ComponentConfig>,
    reader: StreamReader,
    state: State,
    id: String,
    header_sent: bool,
    /// The domain asked for in the header (known or not).
    domain: Option<String>,
    pending: VecDeque<Action>,
}

impl ComponentStream {
    /// A new stream; `id` is the stream id we will send (random, unguessable: the handshake
    /// digest is over it, so a fixed id would let a recorded handshake be replayed).
    pub fn new(config: Arc<ComponentConfig>, id: String) -> ComponentStream {
        let limits = config.limits;
        ComponentStream {
            config,
            reader: StreamReader::new(limits),
            state: State::Header,
            id,
            header_sent: false,
            domain: None,
            pending: VecDeque::new(),
        }
    }

    /// A new stream with a random 128-bit id.
    pub fn with_random_id(config: Arc<ComponentConfig>) -> ComponentStream {
        use rand::Rng;
        let n: u128 = rand::thread_rng().r#gen();
        ComponentStream::new(config, format!("{n:032x}"))
    }

    /// The domain the component is connected for, once the handshake succeeded.
    pub fn domain(&self) -> Option<&str> {
        match self.state {
            State::AwaitRegistration | State::Established => self.domain.as_deref(),
            _ => None,
        }
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The next action. Consumes bytes from `input` only while no request is outstanding;
    /// `None` when it needs more bytes (or the answer to [`Action::Authenticated`]).
    pub fn next_action(&mut self, input: &mut &[u8]) -> Option<Action> {
        loop {
            if let Some(a) = self.pending.pop_front() {
                return Some(a);
            }
            if matches!(self.state, State::AwaitRegistration | State::Closed) {
                return None;
            }
            if input.is_empty() {
                self.reader.release_if_idle();
                return None;
            }
            match self.reader.feed(input) {
                Ok(None) => return None,
                Ok(Some(Event::StreamStart(header))) => self.stream_start(&header),
                Ok(Some(Event::StreamEnd)) => self.finish(),
                Ok(Some(Event::Stanza(el))) => self.element(el),
                Err(e) => {
                    let text = e.to_string();
                    self.fail(StreamError::from_xml_error(&e), Some(&text));
                }
            }
        }
    }

    fn stream_start(&mut self, header: &StreamHeader) {
        if self.state != State::Header {
            return self.fail(StreamError::NotWellFormed, None);
        }
        let to = header.attr("to").map(str::to_ascii_lowercase);
        self.domain = to.clone();
        self.open_header();
        // XEP-0114 §3: the content namespace is jabber:component:accept.
        if header.attr("xmlns") != Some(NS_COMPONENT_ACCEPT) {
            return self.fail(
                StreamError::InvalidNamespace,
                Some("expected jabber:component:accept"),
            );
        }
        match to {
            Some(d) if self.config.secrets.contains_key(&d) => self.state = State::Handshake,
            Some(_) => self.fail(
                StreamError::HostUnknown,
                Some("no component is configured for that domain"),
            ),
            None => self.fail(
                StreamError::HostUnknown,
                Some("the stream header needs a 'to'"),
            ),
        }
    }

    /// Our header: XEP-0114 §3 shows it without `version` (no stream features follow), with
    /// `from` = the component's domain.
    fn open_header(&mut self) {
        if self.header_sent {
            return;
        }
        self.header_sent = true;
        let mut h = String::with_capacity(200);
        h.push_str("<?xml version='1.0'?><stream:stream xmlns='");
        h.push_str(NS_COMPONENT_ACCEPT);
        h.push_str("' xmlns:stream='");
        h.push_str(NS_STREAMS);
        h.push_str("' id='");
        escape_attr(&self.id, &mut h);
        h.push('\'');
        if let Some(d) = &self.domain {
            h.push_str(" from='");
            escape_attr(d, &mut h);
            h.push('\'');
        }
        h.push('>');
        self.write(h);
    }

    fn element(&mut self, el: Element) {
        match self.state {
            State::Handshake => self.handshake(&el),
            State::Established => self.stanza(el),
            // Header: the reader only emits elements inside a stream. The others read nothing.
            _ => self.fail(StreamError::NotWellFormed, None),
        }
    }

    fn handshake(&mut self, el: &Element) {
        if !el.is("handshake", NS_COMPONENT_ACCEPT) {
            // RFC 6120 §4.9.3.12: data before authentication.
            return self.fail(
                StreamError::NotAuthorized,
                Some("the handshake must come first"),
            );
        }
        let Some(domain) = self.domain.clone() else {
            return self.fail(StreamError::NotAuthorized, None);
        };
        let ok = self
            .config
            .secrets
            .get(&domain)
            .is_some_and(|secret| handshake_matches(&self.id, secret, &el.text()));
        if !ok {
            return self.fail(StreamError::NotAuthorized, Some("wrong handshake"));
        }
        self.state = State::AwaitRegistration;
        self.pending.push_back(Action::Authenticated { domain });
    }

    /// The transport registered the component: confirm with an empty `<handshake/>`.
    pub fn accepted(&mut self) {
        if self.state != State::AwaitRegistration {
            return;
        }
        self.state = State::Established;
        self.write(String::from("<handshake/>"));
    }

    /// Another component is connected for the domain (XEP-0114 §3).
    pub fn conflict(&mut self) {
        if self.state != State::AwaitRegistration {
            return;
        }
        self.fail(
            StreamError::Conflict,
            Some("a component is already connected for this domain"),
        );
    }

    fn stanza(&mut self, el: Element) {
        if el.ns != NS_COMPONENT_ACCEPT
            || !matches!(el.name.as_str(), "message" | "presence" | "iq")
        {
            return self.fail(StreamError::UnsupportedStanzaType, None);
        }
        let mut el = el;
        rename_ns(&mut el, NS_COMPONENT_ACCEPT, NS_CLIENT);
        let domain = self.domain.clone().unwrap_or_default();
        // A component is trusted with its own domain only, and nothing stamps `from` for it.
        let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
            // RFC 6120 §4.9.3.7: server-style streams carry both addresses.
            return self.fail(
                StreamError::ImproperAddressing,
                Some("stanzas from a component need 'from' and 'to'"),
            );
        };
        let from_ok = jid::Jid::new(from).is_ok_and(|j| j.domain().as_str() == domain);
        if !from_ok {
            return self.fail(
                StreamError::InvalidFrom,
                Some("'from' must be an address at the component's domain"),
            );
        }
        if jid::Jid::new(to).is_err() {
            let err = StanzaError::new(StanzaErrorCondition::JidMalformed);
            if let Some(reply) = error_reply(&el, &err) {
                let xml = to_component_xml(&reply);
                self.write(xml);
            }
            return;
        }
        self.pending.push_back(Action::Stanza(el));
    }

    /// Close the stream with `error` (after our header if it was not sent yet).
    pub fn fail(&mut self, error: StreamError, text: Option<&str>) {
        if self.state == State::Closed {
            return;
        }
        self.open_header();
        let xml = error.to_element(text).to_xml_in(NS_COMPONENT_ACCEPT);
        self.write(xml);
        self.finish();
    }

    /// Close the stream cleanly (the peer closed, or the server stops).
    pub fn close(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.finish();
    }

    fn finish(&mut self) {
        self.open_header();
        self.write(String::from("</stream:stream>"));
        self.state = State::Closed;
        self.pending.push_back(Action::Close);
    }

    fn write(&mut self, s: String) {
        // Adjacent writes are merged: one syscall per batch.
        if let Some(Action::Write(last)) = self.pending.back_mut() {
            last.push_str(&s);
        } else {
            self.pending.push_back(Action::Write(s));
        }
    }
}

/// Whether `received` is the hex SHA-1 of `id ‖ secret` (XEP-0114 §3). Hex digits of either
/// case are accepted; the digests are compared in constant time.
pub fn handshake_matches(id: &str, secret: &str, received: &str) -> bool {
    let expected = handshake_digest(id, secret);
    let Some(got) = parse_hex20(received.trim()) else {
        return false;
    };
    bool::from(expected.ct_eq(&got))
}

/// The handshake a component sends: lowercase hex SHA-1 of `id ‖ secret`.
pub fn handshake_value(id: &str, secret: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(40);
    for b in handshake_digest(id, secret) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn handshake_digest(id: &str, secret: &str) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(id.as_bytes());
    h.update(secret.as_bytes());
    h.finalize().into()
}

fn parse_hex20(s: &str) -> Option<[u8; 20]> {
    let bytes = s.as_bytes();
    if bytes.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Serialises a routed stanza (in `jabber:client`) for a component stream, where the content
/// namespace is `jabber:component:accept`.
pub fn to_component_xml(stanza: &Element) -> String {
    let mut el = stanza.clone();
    rename_ns(&mut el, NS_CLIENT, NS_COMPONENT_ACCEPT);
    el.to_xml_in(NS_COMPONENT_ACCEPT)
}

/// Moves `el` and its descendants from namespace `from` to `to`. Only elements that were in
/// the stream's content namespace change; payloads in their own namespaces stay. Depth is
/// bounded by the reader's limit (or by our own construction).
fn rename_ns(el: &mut Element, from: &str, to: &str) {
    if el.ns == from {
        el.ns = to.to_owned();
    }
    for child in &mut el.children {
        if let Node::Element(c) = child {
            rename_ns(c, from, to);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Transcript tests, named after the XEP-0114 / RFC 6120 rules they check.
    #![allow(clippy::unwrap_used)]

    use super::*;

    const DOMAIN: &str = "irc.localhost";
    const SECRET: &str = "s3cret";
    const ID: &str = "3BF96D32";

    fn config() -> Arc<ComponentConfig> {
        Arc::new(ComponentConfig {
            secrets: HashMap::from([(DOMAIN.to_owned(), SECRET.to_owned())]),
            limits: Limits {
                max_stanza_bytes: 4096,
                ..Limits::default()
            },
        })
    }

    fn header(to: &str) -> String {
        format!(
            "<stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{to}'>"
        )
    }

    /// Feeds `input` and collects every action until the stream needs more.
    fn run(s: &mut ComponentStream, input: &str) -> Vec<Action> {
        let mut bytes = input.as_bytes();
        std::iter::from_fn(|| s.next_action(&mut bytes)).collect()
    }

    fn written(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Write(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn closed_with(actions: &[Action], condition: &str) -> bool {
        let out = written(actions);
        out.contains(&format!(
            "<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        )) && out.ends_with("</stream:stream>")
            && matches!(actions.last(), Some(Action::Close))
    }

    fn established() -> ComponentStream {
        let mut s = ComponentStream::new(config(), ID.into());
        let a = run(
            &mut s,
            &format!(
                "{}<handshake>{}</handshake>",
                header(DOMAIN),
                handshake_value(ID, SECRET)
            ),
        );
        assert!(matches!(a.last(), Some(Action::Authenticated { domain }) if domain == DOMAIN));
        s.accepted();
        let a = run(&mut s, "");
        assert_eq!(written(&a), "<handshake/>");
        assert!(s.is_established());
        s
    }

    #[test]
    fn xep0114_3_handshake_is_hex_sha1_of_id_and_secret() {
        // echo -n '3BF96D32s3cret' | sha1sum
        let mut h = Sha1::new();
        h.update(b"3BF96D32s3cret");
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(handshake_value(ID, SECRET), want);
        assert!(handshake_matches(ID, SECRET, &want));
        assert!(handshake_matches(ID, SECRET, &want.to_uppercase()));
        assert!(!handshake_matches(ID, "other", &want));
        assert!(!handshake_matches(ID, SECRET, &want[..39]));
        assert!(!handshake_matches(ID, SECRET, "zz"));
        assert!(!handshake_matches(ID, SECRET, &format!("{}g", &want[..39])));
    }

    #[test]
    fn xep0114_3_header_answered_with_id_and_domain_then_handshake() {
        let mut s = ComponentStream::new(config(), ID.into());
        let a = run(&mut s, &header("IRC.localhost"));
        let out = written(&a);
        assert!(out.contains("xmlns='jabber:component:accept'"), "{out}");
        assert!(out.contains(&format!("id='{ID}'")), "{out}");
        assert!(out.contains("from='irc.localhost'"), "{out}");
        let stream_tag = out.split("<stream:stream").nth(1).unwrap_or_default();
        assert!(!stream_tag.contains("version="), "{out}");
        assert_eq!(s.domain(), None);
        let a = run(
            &mut s,
            &format!("<handshake>{}</handshake>", handshake_value(ID, SECRET)),
        );
        assert!(matches!(&a[..], [Action::Authenticated { domain }] if domain == DOMAIN));
        assert_eq!(s.domain(), Some(DOMAIN));
    }

    #[test]
    fn xep0114_3_wrong_secret_is_not_authorized() {
        let mut s = ComponentStream::new(config(), ID.into());
        let a = run(
            &mut s,
            &format!(
                "{}<handshake>{}</handshake>",
                header(DOMAIN),
                handshake_value(ID, "wrong")
            ),
        );
        assert!(closed_with(&a, "not-authorized"));
        assert!(s.is_closed());
    }

    #[test]
    fn xep0114_3_unknown_domain_is_host_unknown() {
        let mut s = ComponentStream::new(config(), ID.into());
        let a = run(&mut s, &header("other.localhost"));
        assert!(closed_with(&a, "host-unknown"));
        let mut s = ComponentStream::new(config(), ID.into());
        let a = run(
            &mut s,
            "<stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams'>",
        );
        assert!(closed_with(&a, "host-unknown"));
    }

    #[test]
    fn xep0114_3_already_connected_is_conflict() {
        let mut s = ComponentStream::new(config(), ID.into());
        run(
            &mut s,
            &format!(
                "{}<handshake>{}</handshake>",
                header(DOMAIN),
                handshake_value(ID, SECRET)
            ),
        );
        s.conflict();
        let a = run(&mut s, "");
        assert!(closed_with(&a, "conflict"));
    }

    #[test]
    fn rfc6120_4_9_3_10_wrong_content_namespace() {
        let mut s = ComponentStream::new(config(), ID.into());
        let a = run(
            &mut s,
            "<stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='irc.localhost'>",
        );
        assert!(closed_with(&a, "invalid-namespace"));
    }

    #[test]
    fn rfc6120_4_9_3_12_stanza_before_handshake_is_not_authorized() {
        let mut s = ComponentStream::new(config(), ID.into());
        let a = run(
            &mut s,
            &format!(
                "{}<message from='a@irc.localhost' to='alice@localhost'/>",
                header(DOMAIN)
            ),
        );
        assert!(closed_with(&a, "not-authorized"));
    }

    #[test]
    fn handshake_without_header_and_garbage_get_stream_errors() {
        let mut s = ComponentStream::new(config(), ID.into());
        let a = run(&mut s, "<handshake>abc</handshake>");
        assert!(closed_with(&a, "invalid-namespace"));
        assert!(written(&a).starts_with("<?xml version='1.0'?><stream:stream"));
        let mut s = ComponentStream::new(config(), ID.into());
        let a = run(&mut s, "\u{1}garbage");
        assert!(closed_with(&a, "not-well-formed"), "{:?}", written(&a));
    }

    #[test]
    fn rfc6120_4_9_3_14_oversize_stanza_is_policy_violation() {
        let mut s = established();
        let body = "x".repeat(5000);
        let a = run(
            &mut s,
            &format!(
                "<message from='a@irc.localhost' to='alice@localhost'><body>{body}</body></message>"
            ),
        );
        assert!(closed_with(&a, "policy-violation"));
    }

    #[test]
    fn stanzas_come_out_in_jabber_client_and_go_back_in_component_ns() {
        let mut s = established();
        let a = run(
            &mut s,
            "<message from='#test%irc@irc.localhost/bob' to='alice@localhost/x' type='groupchat'>\
             <body>hi</body><x xmlns='urn:example'/></message>",
        );
        let [Action::Stanza(m)] = &a[..] else {
            panic!("{a:?}")
        };
        assert!(m.is("message", NS_CLIENT));
        assert!(m.has_child("body", NS_CLIENT));
        assert!(m.has_child("x", "urn:example"));
        let back = to_component_xml(m);
        assert!(
            back.starts_with("<message from='#test%irc@irc.localhost/bob'"),
            "{back}"
        );
        assert!(!back.contains("jabber:client"), "{back}");
        assert!(back.contains("<x xmlns='urn:example'/>"), "{back}");
    }

    #[test]
    fn rfc6120_4_9_3_9_from_outside_the_domain_is_invalid_from() {
        for from in [
            "alice@localhost",
            "irc.localhost.evil",
            "sub.irc.localhost",
            "@@",
        ] {
            let mut s = established();
            let a = run(
                &mut s,
                &format!("<message from='{from}' to='alice@localhost'><body>x</body></message>"),
            );
            assert!(closed_with(&a, "invalid-from"), "{from}");
        }
    }

    #[test]
    fn rfc6120_4_9_3_7_missing_addresses_are_improper_addressing() {
        let mut s = established();
        let a = run(&mut s, "<presence to='alice@localhost'/>");
        assert!(closed_with(&a, "improper-addressing"));
        let mut s = established();
        let a = run(&mut s, "<presence from='irc.localhost'/>");
        assert!(closed_with(&a, "improper-addressing"));
    }

    #[test]
    fn malformed_to_bounces_jid_malformed_and_keeps_the_stream() {
        let mut s = established();
        let a = run(
            &mut s,
            "<iq from='irc.localhost' to='a@b@c' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
        );
        let out = written(&a);
        assert!(out.contains("<jid-malformed"), "{out}");
        assert!(out.starts_with("<iq to='irc.localhost'") || out.contains("to='irc.localhost'"));
        assert!(!s.is_closed());
    }

    #[test]
    fn unknown_top_level_element_is_unsupported_stanza_type() {
        let mut s = established();
        let a = run(&mut s, "<foo/>");
        assert!(closed_with(&a, "unsupported-stanza-type"));
    }

    #[test]
    fn stream_end_closes_cleanly() {
        let mut s = established();
        let a = run(&mut s, "</stream:stream>");
        assert_eq!(written(&a), "</stream:stream>");
        assert!(matches!(a.last(), Some(Action::Close)));
    }

    #[test]
    fn debug_hides_secrets() {
        let shown = format!("{:?}", config());
        assert!(shown.contains(DOMAIN));
        assert!(!shown.contains(SECRET));
    }
}

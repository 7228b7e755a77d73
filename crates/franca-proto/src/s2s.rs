//! Server-to-server streams (RFC 6120 §4-§6 between servers), the parts that are only data: the
//! stream header we send and the checks on the one we receive, stream features (STARTTLS,
//! SASL EXTERNAL per XEP-0178, XEP-0220 dialback with the XEP-0344 `<errors/>` flag, XEP-0288
//! bidirectional streams), the SASL EXTERNAL exchange, and moving stanzas between the
//! `jabber:server` namespace of the wire and the `jabber:client` namespace that every stanza
//! has inside the server (the router and modules build and compare `jabber:client` elements).
//! The connection tasks in `franca-s2s` do the I/O.

use crate::errors::StreamError;
use crate::ns::{
    NS_CLIENT, NS_DIALBACK, NS_DIALBACK_FEATURE, NS_SASL, NS_SERVER, NS_STREAMS, NS_TLS,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use franca_xml::{Element, Node, StreamHeader, escape_attr};

/// XEP-0288 bidirectional server-to-server connections.
pub const NS_BIDI: &str = "urn:xmpp:bidi";
/// The XEP-0288 stream feature.
pub const NS_BIDI_FEATURE: &str = "urn:xmpp:features:bidi";

/// The opening of an s2s stream: `jabber:server` content, the `db` prefix declared for
/// XEP-0220 peers that still expect it, `version='1.0'` (RFC 6120 §4.7.5, needed for TLS and
/// SASL). The initiating side sends no `id`; the responding side always does (§4.7.3).
pub fn stream_header(from: &str, to: Option<&str>, id: Option<&str>) -> String {
    let mut out = String::with_capacity(240);
    out.push_str("<?xml version='1.0'?><stream:stream xmlns='");
    out.push_str(NS_SERVER);
    out.push_str("' xmlns:stream='");
    out.push_str(NS_STREAMS);
    out.push_str("' xmlns:db='");
    out.push_str(NS_DIALBACK);
    out.push_str("' from='");
    escape_attr(from, &mut out);
    if let Some(to) = to {
        out.push_str("' to='");
        escape_attr(to, &mut out);
    }
    if let Some(id) = id {
        out.push_str("' id='");
        escape_attr(id, &mut out);
    }
    out.push_str("' version='1.0' xml:lang='en'>");
    out
}

/// What a received s2s stream header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub from: Option<String>,
    pub to: Option<String>,
    pub id: Option<String>,
}

/// Checks a peer's stream header (RFC 6120 §4.8, §4.9.3): the stream element in the streams
/// namespace, `jabber:server` content and version 1.0 or later (we require TLS, which needs
/// the version-1.0 features).
pub fn check_header(h: &StreamHeader) -> Result<Header, StreamError> {
    if h.ns != NS_STREAMS || h.name != "stream" {
        return Err(StreamError::InvalidNamespace);
    }
    if h.attr("xmlns") != Some(NS_SERVER) {
        return Err(StreamError::InvalidNamespace);
    }
    let major = h
        .attr("version")
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if major < 1 {
        return Err(StreamError::UnsupportedVersion);
    }
    let nonempty = |k: &str| h.attr(k).filter(|v| !v.is_empty()).map(str::to_owned);
    Ok(Header {
        from: nonempty("from"),
        to: nonempty("to"),
        id: nonempty("id"),
    })
}

/// The stream features of an s2s stream, as offered or as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// RFC 6120 §5: STARTTLS (always required by us before anything else).
    pub starttls: bool,
    /// RFC 6120 §6 + XEP-0178: SASL EXTERNAL with the certificate presented in TLS.
    pub external: bool,
    /// XEP-0220 §2.5: `urn:xmpp:features:dialback`.
    pub dialback: bool,
    /// XEP-0344 / XEP-0220 §2.5: `<errors/>` inside the dialback feature.
    pub dialback_errors: bool,
    /// XEP-0288.
    pub bidi: bool,
}

impl Features {
    pub fn parse(el: &Element) -> Features {
        let dialback = el.child("dialback", NS_DIALBACK_FEATURE);
        Features {
            starttls: el.has_child("starttls", NS_TLS),
            external: el.child("mechanisms", NS_SASL).is_some_and(|m| {
                m.elements()
                    .any(|c| c.is("mechanism", NS_SASL) && c.text().trim() == "EXTERNAL")
            }),
            dialback: dialback.is_some(),
            dialback_errors: dialback.is_some_and(|d| d.has_child("errors", NS_DIALBACK_FEATURE)),
            bidi: el.has_child("bidi", NS_BIDI_FEATURE),
        }
    }

    pub fn to_element(&self) -> Element {
        let mut f = Element::new("features", NS_STREAMS);
        if self.starttls {
            f.push(Element::new("starttls", NS_TLS).with_child(Element::new("required", NS_TLS)));
        }
        if self.external {
            f.push(
                Element::new("mechanisms", NS_SASL)
                    .with_child(Element::new("mechanism", NS_SASL).with_text("EXTERNAL")),
            );
        }
        if self.dialback {
            let mut d = Element::new("dialback", NS_DIALBACK_FEATURE);
            if self.dialback_errors {
                d.push(Element::new("errors", NS_DIALBACK_FEATURE));
            }
            f.push(d);
        }
        if self.bidi {
            f.push(Element::new("bidi", NS_BIDI_FEATURE));
        }
        f
    }
}

/// `<starttls/>`.
pub fn starttls() -> Element {
    Element::new("starttls", NS_TLS)
}

/// `<proceed/>`.
pub fn proceed() -> Element {
    Element::new("proceed", NS_TLS)
}

/// The initiating server's `<auth mechanism='EXTERNAL'/>`, its domain as authorization
/// identity (XEP-0178 §3: what Prosody and ejabberd send; `=` would mean "derive it").
pub fn auth_external(our_domain: &str) -> Element {
    Element::new("auth", NS_SASL)
        .with_attr("mechanism", "EXTERNAL")
        .with_text(BASE64.encode(our_domain))
}

/// Why an `<auth/>` on an s2s stream is refused: the SASL condition for `<failure/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefusal {
    /// Not EXTERNAL: RFC 6120 §6.5.4 `invalid-mechanism`.
    InvalidMechanism,
    /// Not base64: §6.5.2 `incorrect-encoding`.
    IncorrectEncoding,
    /// An authorization identity other than the stream's `from`: §6.5.6 `invalid-authzid`.
    InvalidAuthzid,
}

impl AuthRefusal {
    pub fn condition(self) -> &'static str {
        match self {
            AuthRefusal::InvalidMechanism => "invalid-mechanism",
            AuthRefusal::IncorrectEncoding => "incorrect-encoding",
            AuthRefusal::InvalidAuthzid => "invalid-authzid",
        }
    }
}

/// Checks the receiving side of SASL EXTERNAL: mechanism EXTERNAL, and an authorization
/// identity that is empty, `=` (none given) or the domain the stream header claimed.
/// Whether the certificate is valid for that domain is the caller's check.
pub fn check_auth_external(auth: &Element, claimed: &str) -> Result<(), AuthRefusal> {
    if auth.attr("mechanism") != Some("EXTERNAL") {
        return Err(AuthRefusal::InvalidMechanism);
    }
    let text = auth.text();
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(());
    }
    let bytes = BASE64
        .decode(text)
        .map_err(|_| AuthRefusal::IncorrectEncoding)?;
    match std::str::from_utf8(&bytes) {
        Ok(authzid) if authzid.eq_ignore_ascii_case(claimed) => Ok(()),
        Ok(_) => Err(AuthRefusal::InvalidAuthzid),
        Err(_) => Err(AuthRefusal::IncorrectEncoding),
    }
}

/// `<success/>`.
pub fn sasl_success() -> Element {
    Element::new("success", NS_SASL)
}

/// `<failure><condition/><text/></failure>`.
pub fn sasl_failure(condition: &str, text: Option<&str>) -> Element {
    let mut f = Element::new("failure", NS_SASL).with_child(Element::new(condition, NS_SASL));
    if let Some(t) = text {
        f.push(Element::new("text", NS_SASL).with_text(t));
    }
    f
}

/// Moves `el` and its descendants from namespace `from` to `to` (the stanza and every child
/// that inherited the stanza namespace, such as `<body/>` and `<error/>`).
fn requalify(el: &mut Element, from: &str, to: &str) {
    if el.ns == from {
        to.clone_into(&mut el.ns);
    }
    for child in &mut el.children {
        if let Node::Element(c) = child {
            requalify(c, from, to);
        }
    }
}

/// A stanza read from an s2s stream, as the rest of the server sees stanzas.
pub fn from_server_ns(mut stanza: Element) -> Element {
    requalify(&mut stanza, NS_SERVER, NS_CLIENT);
    stanza
}

/// A stanza of the server, as it goes on an s2s stream.
pub fn to_server_ns(mut stanza: Element) -> Element {
    requalify(&mut stanza, NS_CLIENT, NS_SERVER);
    stanza
}

/// Whether a top-level element of an s2s stream is a stanza (RFC 6120 §8).
pub fn is_stanza(el: &Element) -> bool {
    el.ns == NS_SERVER && matches!(el.name.as_str(), "message" | "presence" | "iq")
}

#[cfg(test)]
mod tests {
    use super::*;
    use franca_xml::{Event, Limits, StreamReader};

    fn read_header(xml: &str) -> StreamHeader {
        let mut r = StreamReader::new(Limits::default());
        let mut input = xml.as_bytes();
        match r.feed(&mut input) {
            Ok(Some(Event::StreamStart(h))) => h,
            other => panic!("no header: {other:?}"),
        }
    }

    #[test]
    fn our_header_reads_back_as_a_valid_s2s_header() {
        let h = read_header(&stream_header("a.test", Some("b.test"), Some("x'y")));
        assert_eq!(
            check_header(&h),
            Ok(Header {
                from: Some("a.test".into()),
                to: Some("b.test".into()),
                id: Some("x'y".into()),
            })
        );
    }

    #[test]
    fn rfc6120_4_9_3_header_errors() {
        let client = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='a' version='1.0'>";
        assert_eq!(
            check_header(&read_header(client)),
            Err(StreamError::InvalidNamespace)
        );
        let old = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='a'>";
        assert_eq!(
            check_header(&read_header(old)),
            Err(StreamError::UnsupportedVersion)
        );
        // The reader refuses another stream namespace itself; a header built by hand still
        // gets the check.
        let wrong = StreamHeader {
            name: "stream".into(),
            ns: "urn:other".into(),
            attrs: vec![
                ("xmlns".into(), NS_SERVER.into()),
                ("version".into(), "1.0".into()),
            ],
        };
        assert_eq!(check_header(&wrong), Err(StreamError::InvalidNamespace));
    }

    #[test]
    fn features_round_trip() {
        for f in [
            Features {
                starttls: true,
                ..Features::default()
            },
            Features {
                external: true,
                dialback: true,
                dialback_errors: true,
                bidi: true,
                ..Features::default()
            },
            Features::default(),
        ] {
            assert_eq!(Features::parse(&f.to_element()), f);
        }
    }

    #[test]
    fn xep0178_external_authzid() {
        let ok = auth_external("b.test");
        assert_eq!(check_auth_external(&ok, "b.test"), Ok(()));
        assert_eq!(check_auth_external(&ok, "B.TEST"), Ok(()));
        assert_eq!(
            check_auth_external(&ok, "c.test"),
            Err(AuthRefusal::InvalidAuthzid)
        );
        let eq = Element::new("auth", NS_SASL)
            .with_attr("mechanism", "EXTERNAL")
            .with_text("=");
        assert_eq!(check_auth_external(&eq, "b.test"), Ok(()));
        let bad = Element::new("auth", NS_SASL)
            .with_attr("mechanism", "EXTERNAL")
            .with_text("!!!");
        assert_eq!(
            check_auth_external(&bad, "b.test"),
            Err(AuthRefusal::IncorrectEncoding)
        );
        let plain = Element::new("auth", NS_SASL).with_attr("mechanism", "PLAIN");
        assert_eq!(
            check_auth_external(&plain, "b.test"),
            Err(AuthRefusal::InvalidMechanism)
        );
    }

    #[test]
    fn stanzas_change_namespace_with_their_children_but_not_payloads() {
        let m = Element::new("message", NS_CLIENT)
            .with_child(Element::new("body", NS_CLIENT).with_text("hi"))
            .with_child(Element::new("x", "urn:other"));
        let wire = to_server_ns(m.clone());
        assert!(is_stanza(&wire));
        assert_eq!(
            wire.child("body", NS_SERVER).map(Element::text),
            Some("hi".into())
        );
        assert!(wire.has_child("x", "urn:other"));
        assert_eq!(from_server_ns(wire), m);
    }
}

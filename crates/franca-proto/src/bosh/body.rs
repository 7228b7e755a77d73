//! The `<body/>` wrapper element (XEP-0124 §6, §7): reading a request body with limits and
//! writing response bodies.
//!
//! A request body is a complete XML document, but franca-xml's reader only knows XMPP
//! streams. Rather than a second parser, the body is read as the single "stanza" of a
//! synthetic stream: the reader then enforces the same byte, depth and attribute limits and
//! refuses DTDs, entities, PIs and comments exactly as it does for TCP clients.

use franca_xml::{Element, Limits, Node, escape_attr};

use super::{BoshConfig, Condition, HttpResponse};
use crate::ns::{NS_CLIENT, NS_HTTPBIND, NS_STREAMS, NS_XBOSH};

/// Highest `rid` allowed (XEP-0124 §14.1: 2^53 - 1, so that ECMAScript clients count exactly).
pub const MAX_RID: u64 = 9_007_199_254_740_991;

/// Opening and closing of the synthetic stream around a request body. The prefix is unusual
/// so a body cannot close the wrapper by accident; one that does so on purpose produces an
/// extra event and is refused.
/// A parsed request `<body/>`.
///
/// Attributes the server does not act on (`content`, `from`, `route`, `key`, …) are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub rid: u64,
    /// Absent only in a session creation request.
    pub sid: Option<String>,
    pub to: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
    /// `ver` as (major, minor); `None` marks a legacy client (§17.1).
    pub ver: Option<(u32, u32)>,
    pub wait: Option<u64>,
    pub hold: Option<u32>,
    /// In a creation request `ack='1'` asks for acknowledgements (§9.1); later, the highest
    /// rid for which the client has received a response.
    pub ack: Option<u64>,
    /// Parsed so that a malformed value is refused, but pauses are not supported.
    pub pause: Option<u64>,
    /// `type='terminate'` (§13).
    pub terminate: bool,
    /// `xmpp:restart='true'` (XEP-0206 §5).
    pub restart: bool,
    /// `xmpp:version` (XEP-0206 §3).
    pub xmpp_version: Option<String>,
    /// The child elements, namespace-corrected: elements left in the httpbind namespace by
    /// clients that do not qualify their stanzas are moved to `jabber:client` (XEP-0206 §2
    /// notes such clients exist).
    pub payload: Vec<Element>,
}

/// Why a request body was refused. No session is involved yet, so the answer uses the
/// legacy status codes (see [`BodyError::response`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{condition}: {reason}")]
pub struct BodyError {
    pub condition: Condition,
    pub reason: String,
}

impl BodyError {
    fn bad(reason: impl Into<String>) -> BodyError {
        BodyError {
            condition: Condition::BadRequest,
            reason: reason.into(),
        }
    }

    /// The response to send. The body could not be read, so whether the client is legacy is
    /// unknown; the §17.1 codes are understood by both kinds as "the session is void".
    pub fn response(&self) -> HttpResponse {
        self.condition.response(true)
    }
}

/// Reads one request body. `bytes` is the whole HTTP request body.
pub fn parse_body(bytes: &[u8], config: &BoshConfig) -> Result<Body, BodyError> {
    if bytes.len() > config.max_body_bytes {
        return Err(BodyError {
            condition: Condition::PolicyViolation,
            reason: format!("body larger than {} bytes", config.max_body_bytes),
        });
    }
    let el = read_document(bytes, config)?;
    if !el.is("body", NS_HTTPBIND) {
        return Err(BodyError::bad(format!(
            "root must be <body xmlns='{NS_HTTPBIND}'>"
        )));
    }
    body_from_element(el)
}

fn read_document(bytes: &[u8], config: &BoshConfig) -> Result<Element, BodyError> {
    let limits = Limits {
        // The body element is the "stanza"; its children sit one level deeper than over TCP.
        max_stanza_bytes: config.max_body_bytes,
        max_depth: config.limits.max_depth.saturating_add(1),
        // A creation request carries about fifteen attributes and declarations.
        max_attrs: config.limits.max_attrs.max(32),
    };
    match franca_xml::read_document(bytes, limits, None) {
        Ok(Some(el)) => Ok(el),
        Ok(None) => Err(BodyError::bad("expected exactly one <body/> element")),
        Err(e) => Err(BodyError {
            condition: match e {
                franca_xml::XmlError::PolicyViolation(_) => Condition::PolicyViolation,
                _ => Condition::BadRequest,
            },
            reason: e.to_string(),
        }),
    }
}

fn body_from_element(el: Element) -> Result<Body, BodyError> {
    let rid = match el.attr("rid").map(parse_u64) {
        Some(Some(rid)) if rid <= MAX_RID => rid,
        Some(_) => return Err(BodyError::bad("rid is not an integer up to 2^53-1")),
        None => return Err(BodyError::bad("rid is required")),
    };
    let number = |name: &str| -> Result<Option<u64>, BodyError> {
        match el.attr(name) {
            None => Ok(None),
            Some(v) => parse_u64(v)
                .map(Some)
                .ok_or_else(|| BodyError::bad(format!("{name} is not a non-negative integer"))),
        }
    };
    let wait = number("wait")?;
    let hold = number("hold")?.map(|h| u32::try_from(h).unwrap_or(u32::MAX));
    let ack = number("ack")?;
    let pause = number("pause")?;
    let ver = match el.attr("ver") {
        None => None,
        Some(v) => Some(parse_version(v).ok_or_else(|| BodyError::bad("ver is not major.minor"))?),
    };
    let terminate = match el.attr("type") {
        None => false,
        Some("terminate") => true,
        Some(_) => return Err(BodyError::bad("a client may only send type='terminate'")),
    };
    let restart_key = format!("{{{NS_XBOSH}}}restart");
    let restart = matches!(el.attr(&restart_key), Some("true" | "1"));
    let version_key = format!("{{{NS_XBOSH}}}version");
    let owned = |k: &str| el.attr(k).map(str::to_owned);
    let mut body = Body {
        rid,
        sid: owned("sid"),
        to: owned("to"),
        lang: owned("xml:lang"),
        ver,
        wait,
        hold,
        ack,
        pause,
        terminate,
        restart,
        xmpp_version: owned(&version_key),
        payload: Vec::new(),
    };
    for child in el.children {
        match child {
            Node::Element(mut e) => {
                requalify(&mut e);
                body.payload.push(e);
            }
            Node::Text(t) if t.trim_matches([' ', '\t', '\r', '\n']).is_empty() => {}
            Node::Text(_) => return Err(BodyError::bad("text directly inside <body/>")),
        }
    }
    Ok(body)
}

/// Moves elements that inherited the httpbind namespace to `jabber:client`.
fn requalify(el: &mut Element) {
    if el.ns != NS_HTTPBIND {
        return;
    }
    el.ns = NS_CLIENT.to_owned();
    for child in &mut el.children {
        if let Node::Element(c) = child {
            requalify(c);
        }
    }
}

/// Digits only: `u64::from_str` would also take a leading `+`.
fn parse_u64(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    let major = u32::try_from(parse_u64(major)?).ok()?;
    let minor = u32::try_from(parse_u64(minor)?).ok()?;
    Some((major, minor))
}

/// Serialises a payload element inside a response body, whose default namespace is httpbind.
///
/// Elements of the streams namespace (`<stream:features/>`, `<stream:error/>`) are written
/// with the `stream:` prefix, which XEP-0206 §2 uses and some clients look for by name; the
/// body then has to declare it. Returns whether the prefix was used.
pub(super) fn write_payload(el: &Element, out: &mut String) -> bool {
    let plain_attrs = el.attrs.iter().all(|(k, _)| !k.starts_with('{'));
    if el.ns != NS_STREAMS || !plain_attrs {
        el.write_to(out, NS_HTTPBIND);
        return false;
    }
    out.push_str("<stream:");
    out.push_str(&el.name);
    for (k, v) in &el.attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("='");
        escape_attr(v, out);
        out.push('\'');
    }
    if el.children.is_empty() {
        out.push_str("/>");
        return true;
    }
    out.push('>');
    for child in &el.children {
        match child {
            // The prefix does not change the default namespace in scope.
            Node::Element(c) => c.write_to(out, NS_HTTPBIND),
            Node::Text(t) => franca_xml::escape_text(t, out),
        }
    }
    out.push_str("</stream:");
    out.push_str(&el.name);
    out.push('>');
    true
}

/// A response `<body/>` with these attributes around already serialised payloads.
pub(super) fn response_body(
    attrs: &[(&str, String)],
    payload: &str,
    stream_prefix: bool,
) -> String {
    let mut out = String::with_capacity(96 + payload.len());
    out.push_str("<body xmlns='");
    out.push_str(NS_HTTPBIND);
    out.push('\'');
    if stream_prefix {
        out.push_str(" xmlns:stream='");
        out.push_str(NS_STREAMS);
        out.push('\'');
    }
    if attrs.iter().any(|(k, _)| k.starts_with("xmpp:")) {
        out.push_str(" xmlns:xmpp='");
        out.push_str(NS_XBOSH);
        out.push('\'');
    }
    for (k, v) in attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("='");
        escape_attr(v, &mut out);
        out.push('\'');
    }
    if payload.is_empty() {
        out.push_str("/>");
    } else {
        out.push('>');
        out.push_str(payload);
        out.push_str("</body>");
    }
    out
}

/// `<body type='terminate'/>`, with a condition unless the client asked to terminate (§13).
pub(super) fn terminate_body(
    condition: Option<Condition>,
    payload: &str,
    stream_prefix: bool,
) -> String {
    let mut attrs = vec![("type", "terminate".to_owned())];
    if let Some(c) = condition {
        attrs.push(("condition", c.as_str().to_owned()));
    }
    response_body(&attrs, payload, stream_prefix)
}

#[cfg(test)]
mod tests {
    //! Request bodies, named after the XEP-0124 / XEP-0206 sections that define them.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(s: &str) -> Result<Body, BodyError> {
        parse_body(s.as_bytes(), &BoshConfig::default())
    }

    #[test]
    fn xep0124_7_1_session_creation_request_attributes() {
        let b = parse(
            "<?xml version='1.0' encoding='UTF-8'?>\n<body content='text/xml; charset=utf-8' \
             hold='1' rid='1573741820' to='example.org' route='xmpp:example.org:9999' \
             ver='1.6' wait='60' ack='1' xml:lang='en' xmpp:version='1.0' \
             xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>",
        )
        .unwrap();
        assert_eq!(b.rid, 1_573_741_820);
        assert_eq!(b.sid, None);
        assert_eq!(b.to.as_deref(), Some("example.org"));
        assert_eq!(b.lang.as_deref(), Some("en"));
        assert_eq!(b.ver, Some((1, 6)));
        assert_eq!((b.wait, b.hold, b.ack), (Some(60), Some(1), Some(1)));
        assert_eq!(b.xmpp_version.as_deref(), Some("1.0"));
        assert!(!b.terminate && !b.restart && b.payload.is_empty());
    }

    #[test]
    fn xep0206_2_unqualified_stanzas_are_moved_to_jabber_client() {
        let b = parse(
            "<body rid='2' sid='s' xmlns='http://jabber.org/protocol/httpbind'>\
             <message to='a@example.org'><body>hi</body></message>\
             <iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq></body>",
        )
        .unwrap();
        assert_eq!(b.payload.len(), 2);
        assert!(b.payload[0].is("message", NS_CLIENT));
        assert!(b.payload[0].has_child("body", NS_CLIENT));
        assert!(b.payload[1].has_child("ping", "urn:xmpp:ping"));
    }

    #[test]
    fn xep0206_5_restart_and_xep0124_13_terminate_flags() {
        let b = parse(
            "<body rid='3' sid='s' xmpp:restart='true' xmlns='http://jabber.org/protocol/httpbind' \
             xmlns:xmpp='urn:xmpp:xbosh'/>",
        )
        .unwrap();
        assert!(b.restart);
        let b = parse(
            "<body rid='4' sid='s' type='terminate' xmlns='http://jabber.org/protocol/httpbind'>\
             <presence type='unavailable' xmlns='jabber:client'/></body>",
        )
        .unwrap();
        assert!(b.terminate);
        assert_eq!(b.payload.len(), 1);
    }

    #[test]
    fn xep0124_17_2_malformed_bodies_are_bad_requests() {
        for bad in [
            "",
            "not xml",
            "<body rid='1' xmlns='http://jabber.org/protocol/httpbind'>",
            "<body rid='1' xmlns='urn:other'/>",
            "<body xmlns='http://jabber.org/protocol/httpbind'/>",
            "<body rid='-1' xmlns='http://jabber.org/protocol/httpbind'/>",
            "<body rid='9007199254740992' xmlns='http://jabber.org/protocol/httpbind'/>",
            "<body rid='1' wait='x' xmlns='http://jabber.org/protocol/httpbind'/>",
            "<body rid='1' ver='one' xmlns='http://jabber.org/protocol/httpbind'/>",
            "<body rid='1' xmlns='http://jabber.org/protocol/httpbind'>text</body>",
            "<body rid='1' xmlns='http://jabber.org/protocol/httpbind'/><body rid='2' xmlns='http://jabber.org/protocol/httpbind'/>",
            "<body rid='1' xmlns='http://jabber.org/protocol/httpbind'/></bosh-wrapper:stream>",
            "<!DOCTYPE body [<!ENTITY x 'y'>]><body rid='1' xmlns='http://jabber.org/protocol/httpbind'/>",
            "<body rid='1' xmlns='http://jabber.org/protocol/httpbind'><!-- c --></body>",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.condition, Condition::BadRequest, "{bad:?}: {err}");
            assert_eq!(err.response().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn xep0124_11_oversized_and_too_deep_bodies_are_policy_violations() {
        let config = BoshConfig {
            max_body_bytes: 200,
            ..BoshConfig::default()
        };
        let big = format!(
            "<body rid='1' xmlns='http://jabber.org/protocol/httpbind'><message><body>{}</body></message></body>",
            "x".repeat(300)
        );
        let err = parse_body(big.as_bytes(), &config).unwrap_err();
        assert_eq!(err.condition, Condition::PolicyViolation);
        assert_eq!(err.response().status, 403);
        let deep = format!(
            "<body rid='1' xmlns='http://jabber.org/protocol/httpbind'>{}{}</body>",
            "<a>".repeat(70),
            "</a>".repeat(70)
        );
        let err = parse(&deep).unwrap_err();
        assert_eq!(err.condition, Condition::PolicyViolation);
    }

    #[test]
    fn xep0206_2_stream_features_use_the_stream_prefix() {
        let features = Element::new("features", NS_STREAMS)
            .with_child(Element::new("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
        let mut payload = String::new();
        assert!(write_payload(&features, &mut payload));
        let msg = Element::new("message", NS_CLIENT).with_attr("to", "a@b");
        assert!(!write_payload(&msg, &mut payload));
        let body = response_body(&[], &payload, true);
        assert_eq!(
            body,
            "<body xmlns='http://jabber.org/protocol/httpbind' \
             xmlns:stream='http://etherx.jabber.org/streams'><stream:features>\
             <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>\
             <message xmlns='jabber:client' to='a@b'/></body>"
        );
        // What we write we can read back.
        let back = parse(&body.replace("<body xmlns", "<body rid='1' xmlns")).unwrap();
        assert!(back.payload[0].is("features", NS_STREAMS));
        assert!(back.payload[1].is("message", NS_CLIENT));
    }
}

//! Server dialback (XEP-0220): the `<db:result/>` and `<db:verify/>` elements, and dialback keys
//! made the XEP-0185 way.
//!
//! A server that cannot prove its domain with a certificate sends a key in `<db:result/>`; the
//! receiving server asks the domain's authoritative server with `<db:verify/>` whether that key is
//! right. The key is `hex(HMAC-SHA256(hex(SHA256(secret)), "receiving originating stream-id"))`
//! (XEP-0185 §2), so only a server that knows the secret can produce it, and a key is useless for
//! any other stream. Everything here is pure: parsing with limits, building, and key checks in
//! constant time. The connection logic that uses it lives in `franca-s2s`.

use franca_xml::Element;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::errors::StanzaError;

/// The dialback namespace of `<db:result/>` and `<db:verify/>` (XEP-0220 §5.1).
pub const NS_DIALBACK: &str = "jabber:server:dialback";

/// The stream feature a server offers when it supports dialback, with `<errors/>` inside when
/// it understands dialback errors (XEP-0220 §2.1, §2.4).
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

/// Longest key accepted. XEP-0185 keys are 64 hex digits; other algorithms in the field (SHA-1,
/// SHA-512 based) are shorter than this, and anything longer is an attack on memory.
pub const MAX_KEY_BYTES: usize = 1024;

/// Longest `from`/`to`: a domainpart is at most 1023 bytes (RFC 7622 §3.2.1).
pub const MAX_DOMAIN_BYTES: usize = 1023;

/// Longest stream id in `<db:verify id='…'/>`. RFC 6120 leaves ids opaque; 1 KiB is generous.
pub const MAX_ID_BYTES: usize = 1024;

/// The XEP-0185 dialback key: `hex(HMAC-SHA256(key = hex(SHA256(secret)), "{receiving}
/// {originating} {stream_id}"))`, lower-case hex.
///
/// `receiving` is the server the key is sent to, `originating` the domain asking to be
/// authorised, `stream_id` the id the receiving server put in its stream header.
pub fn key(secret: &str, receiving: &str, originating: &str, stream_id: &str) -> String {
    // XEP-0185 hashes the secret first so the HMAC key is long enough whatever the secret, and
    // uses the *hex* of that hash as the key bytes.
    let hashed_secret = hex(&Sha256::digest(secret.as_bytes()));
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(hashed_secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(receiving.as_bytes());
    mac.update(b" ");
    mac.update(originating.as_bytes());
    mac.update(b" ");
    mac.update(stream_id.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Whether `candidate` is the key [`key`] gives for these inputs, compared in constant time so
/// a peer cannot learn the key byte by byte. Surrounding whitespace and hex case are ignored.
pub fn key_matches(
    secret: &str,
    receiving: &str,
    originating: &str,
    stream_id: &str,
    candidate: &str,
) -> bool {
    let expected = key(secret, receiving, originating, stream_id);
    let candidate = candidate.trim().to_ascii_lowercase();
    expected.as_bytes().ct_eq(candidate.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The `type` of a dialback answer (XEP-0220 §2.1.3, §2.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbType {
    /// The key was right: the domain is authorised on this stream.
    Valid,
    /// The key was wrong.
    Invalid,
    /// Dialback could not be done; the element carries an `<error/>` saying why.
    Error,
}

impl DbType {
    pub fn name(self) -> &'static str {
        match self {
            DbType::Valid => "valid",
            DbType::Invalid => "invalid",
            DbType::Error => "error",
        }
    }

    pub fn from_name(s: &str) -> Option<DbType> {
        match s {
            "valid" => Some(DbType::Valid),
            "invalid" => Some(DbType::Invalid),
            "error" => Some(DbType::Error),
            _ => None,
        }
    }
}

/// A parsed `<db:result/>` or `<db:verify/>`.
///
/// A request carries a `key` and no `ty`; an answer carries a `ty` (and, for
/// [`DbType::Error`], usually an `error`). `from` and `to` are nameprepped domains (lower
/// case, one trailing dot removed, RFC 7622 §3.2); the caller compares them with the stream's
/// domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbElement {
    /// `<db:result/>`: the originating server asks to be authorised as `from` towards `to`
    /// (with `key`), or the receiving server answers (with `ty`).
    Result {
        from: String,
        to: String,
        key: Option<String>,
        ty: Option<DbType>,
        error: Option<StanzaError>,
    },
    /// `<db:verify/>`: the receiving server asks the authoritative server whether `key` is
    /// right for stream `id`, or the authoritative server answers (with `ty`).
    Verify {
        from: String,
        to: String,
        id: String,
        key: Option<String>,
        ty: Option<DbType>,
        error: Option<StanzaError>,
    },
}

impl DbElement {
    /// A `<db:result/>` request with a key.
    pub fn result_request(from: &str, to: &str, key: &str) -> DbElement {
        DbElement::Result {
            from: from.to_owned(),
            to: to.to_owned(),
            key: Some(key.to_owned()),
            ty: None,
            error: None,
        }
    }

    /// A `<db:result type='valid|invalid'/>` answer.
    pub fn result_answer(from: &str, to: &str, valid: bool) -> DbElement {
        DbElement::Result {
            from: from.to_owned(),
            to: to.to_owned(),
            key: None,
            ty: Some(if valid {
                DbType::Valid
            } else {
                DbType::Invalid
            }),
            error: None,
        }
    }

    /// A `<db:result type='error'/>` answer with the reason (XEP-0220 §2.4).
    pub fn result_error(from: &str, to: &str, error: StanzaError) -> DbElement {
        DbElement::Result {
            from: from.to_owned(),
            to: to.to_owned(),
            key: None,
            ty: Some(DbType::Error),
            error: Some(error),
        }
    }

    /// A `<db:verify/>` request.
    pub fn verify_request(from: &str, to: &str, id: &str, key: &str) -> DbElement {
        DbElement::Verify {
            from: from.to_owned(),
            to: to.to_owned(),
            id: id.to_owned(),
            key: Some(key.to_owned()),
            ty: None,
            error: None,
        }
    }

    /// A `<db:verify type='valid|invalid'/>` answer.
    pub fn verify_answer(from: &str, to: &str, id: &str, valid: bool) -> DbElement {
        DbElement::Verify {
            from: from.to_owned(),
            to: to.to_owned(),
            id: id.to_owned(),
            key: None,
            ty: Some(if valid {
                DbType::Valid
            } else {
                DbType::Invalid
            }),
            error: None,
        }
    }

    /// A `<db:verify type='error'/>` answer with the reason.
    pub fn verify_error(from: &str, to: &str, id: &str, error: StanzaError) -> DbElement {
        DbElement::Verify {
            from: from.to_owned(),
            to: to.to_owned(),
            id: id.to_owned(),
            key: None,
            ty: Some(DbType::Error),
            error: Some(error),
        }
    }

    pub fn from(&self) -> &str {
        match self {
            DbElement::Result { from, .. } | DbElement::Verify { from, .. } => from,
        }
    }

    pub fn to(&self) -> &str {
        match self {
            DbElement::Result { to, .. } | DbElement::Verify { to, .. } => to,
        }
    }

    /// True for a request (a key, no type), false for an answer.
    pub fn is_request(&self) -> bool {
        match self {
            DbElement::Result { ty, .. } | DbElement::Verify { ty, .. } => ty.is_none(),
        }
    }
}

/// Why a dialback element was refused. The stream answers these with an `invalid-xml` or
/// `improper-addressing` stream error (XEP-0220 §2.1.2, RFC 6120 §4.9.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DbParseError {
    #[error("not a <result/> or <verify/> in the dialback namespace")]
    NotDialback,
    #[error("dialback element without the '{0}' attribute")]
    MissingAttribute(&'static str),
    #[error("dialback '{0}' attribute is not a domain name")]
    BadDomain(&'static str),
    #[error("dialback '{0}' is too long")]
    TooLong(&'static str),
    #[error("dialback type {0:?} is not valid, invalid or error")]
    BadType(String),
    #[error("dialback request without a key")]
    MissingKey,
    #[error("dialback key has characters other than printable ASCII")]
    BadKey,
}

impl DbParseError {
    /// The stream error this refusal calls for.
    pub fn stream_error(&self) -> crate::errors::StreamError {
        use crate::errors::StreamError;
        match self {
            DbParseError::MissingAttribute("from" | "to") | DbParseError::BadDomain(_) => {
                StreamError::ImproperAddressing
            }
            _ => StreamError::InvalidXml,
        }
    }
}

/// Reads a `<db:result/>` or `<db:verify/>`.
pub fn parse(el: &Element) -> Result<DbElement, DbParseError> {
    if el.ns != NS_DIALBACK || !(el.name == "result" || el.name == "verify") {
        return Err(DbParseError::NotDialback);
    }
    let from = domain_attr(el, "from")?;
    let to = domain_attr(el, "to")?;
    let ty = match el.attr("type") {
        None => None,
        Some(t) => Some(DbType::from_name(t).ok_or_else(|| DbParseError::BadType(clip(t)))?),
    };
    let key = {
        let text = el.text();
        let text = text.trim();
        if text.is_empty() {
            None
        } else if text.len() > MAX_KEY_BYTES {
            return Err(DbParseError::TooLong("key"));
        } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DbParseError::BadKey);
        } else {
            Some(text.to_owned())
        }
    };
    // A request without a key cannot be answered; an answer's text is ignored.
    let key = match ty {
        None if key.is_none() => return Err(DbParseError::MissingKey),
        None => key,
        Some(_) => None,
    };
    // The error child is in the stream's namespace (`jabber:server`) in XEP-0220's examples;
    // peers differ, so take an `<error/>` in any namespace.
    let error = match ty {
        Some(DbType::Error) => el
            .elements()
            .find(|c| c.name == "error")
            .and_then(StanzaError::from_element),
        _ => None,
    };
    if el.name == "result" {
        Ok(DbElement::Result {
            from,
            to,
            key,
            ty,
            error,
        })
    } else {
        let id = el.attr("id").ok_or(DbParseError::MissingAttribute("id"))?;
        if id.is_empty() {
            return Err(DbParseError::MissingAttribute("id"));
        }
        if id.len() > MAX_ID_BYTES {
            return Err(DbParseError::TooLong("id"));
        }
        Ok(DbElement::Verify {
            from,
            to,
            id: id.to_owned(),
            key,
            ty,
            error,
        })
    }
}

/// Builds the element for `db`. `stream_ns` is the namespace of the stream's content
/// (`jabber:server`), used for an `<error/>` child as in XEP-0220's examples.
pub fn build(db: &DbElement, stream_ns: &str) -> Element {
    let (name, from, to, key, ty, error) = match db {
        DbElement::Result {
            from,
            to,
            key,
            ty,
            error,
        } => ("result", from, to, key, ty, error),
        DbElement::Verify {
            from,
            to,
            key,
            ty,
            error,
            ..
        } => ("verify", from, to, key, ty, error),
    };
    let mut el = Element::new(name, NS_DIALBACK)
        .with_attr("from", from.clone())
        .with_attr("to", to.clone());
    if let DbElement::Verify { id, .. } = db {
        el.set_attr("id", id.clone());
    }
    if let Some(ty) = ty {
        el.set_attr("type", ty.name());
    }
    if let Some(key) = key {
        el.push_text(key.clone());
    }
    if let Some(error) = error {
        el.push(error.to_element(stream_ns));
    }
    el
}

/// The `<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>` stream feature: we
/// support dialback and understand its error answers (XEP-0220 §2.4).
pub fn feature() -> Element {
    Element::new("dialback", NS_DIALBACK_FEATURE)
        .with_child(Element::new("errors", NS_DIALBACK_FEATURE))
}

/// Whether a peer's `<dialback/>` feature says it understands dialback errors; without that, a
/// failure is signalled by closing the stream instead (XEP-0220 §2.4).
pub fn feature_supports_errors(feature: &Element) -> bool {
    feature.is("dialback", NS_DIALBACK_FEATURE) && feature.has_child("errors", NS_DIALBACK_FEATURE)
}

fn domain_attr(el: &Element, name: &'static str) -> Result<String, DbParseError> {
    let v = el.attr(name).ok_or(DbParseError::MissingAttribute(name))?;
    if v.len() > MAX_DOMAIN_BYTES {
        return Err(DbParseError::TooLong(name));
    }
    let v = v.strip_suffix('.').unwrap_or(v);
    // A domain, not a JID: no localpart or resource. Nameprep (the `jid` crate) lower-cases
    // and normalises it the way stream headers and stanza addresses are.
    if v.is_empty() || v.contains(['@', '/']) {
        return Err(DbParseError::BadDomain(name));
    }
    match jid::BareJid::new(v) {
        Ok(j) if j.node().is_none() => Ok(j.domain().as_str().to_owned()),
        _ => Err(DbParseError::BadDomain(name)),
    }
}

// For error texts: a peer-chosen value is cut so it cannot bloat logs.
fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::errors::StanzaErrorCondition;

    const SECRET: &str = "s3cr3tf0rd14lb4ck";

    #[test]
    fn xep0185_example_key() {
        // XEP-0185 §3: the published example values.
        assert_eq!(
            hex(&Sha256::digest(SECRET.as_bytes())),
            "a7136eb1f46c9ef18c5e78c36ca257067c69b3d518285f0b18a96c33beae9acc"
        );
        assert_eq!(
            key(SECRET, "xmpp.example.com", "example.org", "D60000229F"),
            "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
        );
    }

    #[test]
    fn key_depends_on_every_input() {
        let k = key(SECRET, "a.test", "b.test", "id1");
        assert_ne!(k, key("other", "a.test", "b.test", "id1"));
        assert_ne!(k, key(SECRET, "b.test", "a.test", "id1"));
        assert_ne!(k, key(SECRET, "a.test", "b.test", "id2"));
        // The space separator keeps the domain pairs apart (XEP-0185 §2, its own example).
        assert_ne!(
            key(SECRET, "example.in", "form.example.org", "x"),
            key(SECRET, "example.info", "rm.example.org", "x")
        );
    }

    #[test]
    fn key_matches_is_exact_but_tolerates_case_and_space() {
        let k = key(SECRET, "a.test", "b.test", "id1");
        assert!(key_matches(SECRET, "a.test", "b.test", "id1", &k));
        assert!(key_matches(
            SECRET,
            "a.test",
            "b.test",
            "id1",
            &format!("  {}\n", k.to_uppercase())
        ));
        assert!(!key_matches(SECRET, "a.test", "b.test", "id2", &k));
        assert!(!key_matches(SECRET, "a.test", "b.test", "id1", &k[..63]));
        assert!(!key_matches(SECRET, "a.test", "b.test", "id1", ""));
    }

    #[test]
    fn xep0220_result_request_round_trip() {
        let db = DbElement::result_request("example.org", "xmpp.example.com", "abc123");
        let el = build(&db, "jabber:server");
        assert!(el.is("result", NS_DIALBACK));
        assert_eq!(el.text(), "abc123");
        assert_eq!(el.attr("type"), None);
        let back = parse(&el).expect("parses");
        assert_eq!(back, db);
        assert!(back.is_request());
        assert_eq!(back.from(), "example.org");
        assert_eq!(back.to(), "xmpp.example.com");
    }

    #[test]
    fn xep0220_verify_round_trip() {
        let req = DbElement::verify_request("a.test", "b.test", "D60000229F", "k");
        let el = build(&req, "jabber:server");
        assert_eq!(el.attr("id"), Some("D60000229F"));
        assert_eq!(parse(&el), Ok(req));
        for valid in [true, false] {
            let ans = DbElement::verify_answer("b.test", "a.test", "D60000229F", valid);
            let el = build(&ans, "jabber:server");
            assert_eq!(
                el.attr("type"),
                Some(if valid { "valid" } else { "invalid" })
            );
            assert_eq!(parse(&el), Ok(ans));
        }
    }

    #[test]
    fn xep0220_2_4_error_answers_carry_the_condition() {
        let err = StanzaError::new(StanzaErrorCondition::ItemNotFound).with_text("no such host");
        let ans = DbElement::result_error("b.test", "a.test", err.clone());
        let el = build(&ans, "jabber:server");
        assert_eq!(el.attr("type"), Some("error"));
        let child = el.child("error", "jabber:server").expect("error child");
        assert_eq!(child.attr("type"), Some("cancel"));
        match parse(&el).expect("parses") {
            DbElement::Result {
                ty: Some(DbType::Error),
                error: Some(e),
                ..
            } => {
                assert_eq!(e.condition, StanzaErrorCondition::ItemNotFound);
                assert_eq!(e.text.as_deref(), Some("no such host"));
            }
            other => panic!("{other:?}"),
        }
        let verr = DbElement::verify_error(
            "b.test",
            "a.test",
            "id",
            StanzaError::new(StanzaErrorCondition::RemoteServerNotFound),
        );
        assert_eq!(parse(&build(&verr, "jabber:server")), Ok(verr));
    }

    #[test]
    fn error_child_in_another_namespace_is_read() {
        let el = Element::new("result", NS_DIALBACK)
            .with_attr("from", "b.test")
            .with_attr("to", "a.test")
            .with_attr("type", "error")
            .with_child(
                Element::new("error", NS_DIALBACK)
                    .with_attr("type", "cancel")
                    .with_child(Element::new(
                        "policy-violation",
                        "urn:ietf:params:xml:ns:xmpp-stanzas",
                    )),
            );
        match parse(&el) {
            Ok(DbElement::Result { error: Some(e), .. }) => {
                assert_eq!(e.condition, StanzaErrorCondition::PolicyViolation);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn domains_are_normalised() {
        let el = Element::new("result", NS_DIALBACK)
            .with_attr("from", "Example.ORG.")
            .with_attr("to", "ÉCOLE.test")
            .with_text("k");
        let db = parse(&el).expect("parses");
        assert_eq!(db.from(), "example.org");
        assert_eq!(db.to(), "école.test");
    }

    #[test]
    fn hostile_and_malformed_elements_are_refused() {
        let base = || {
            Element::new("result", NS_DIALBACK)
                .with_attr("from", "a.test")
                .with_attr("to", "b.test")
        };
        assert_eq!(
            parse(&Element::new("result", "jabber:server")),
            Err(DbParseError::NotDialback)
        );
        assert_eq!(
            parse(&Element::new("other", NS_DIALBACK)),
            Err(DbParseError::NotDialback)
        );
        let no_from = Element::new("result", NS_DIALBACK)
            .with_attr("to", "b.test")
            .with_text("k");
        assert_eq!(parse(&no_from), Err(DbParseError::MissingAttribute("from")));
        assert_eq!(
            parse(&no_from).unwrap_err().stream_error(),
            crate::errors::StreamError::ImproperAddressing
        );
        let jid_from = base().with_attr("from", "user@a.test").with_text("k");
        assert_eq!(parse(&jid_from), Err(DbParseError::BadDomain("from")));
        let empty_to = base().with_attr("to", "").with_text("k");
        assert_eq!(parse(&empty_to), Err(DbParseError::BadDomain("to")));
        let spaced = base().with_attr("to", "b .test").with_text("k");
        assert_eq!(parse(&spaced), Err(DbParseError::BadDomain("to")));
        let long = "a".repeat(MAX_DOMAIN_BYTES + 1);
        assert_eq!(
            parse(&base().with_attr("from", long).with_text("k")),
            Err(DbParseError::TooLong("from"))
        );
        // A request with no key, a key too long, a key with control characters.
        assert_eq!(parse(&base()), Err(DbParseError::MissingKey));
        assert_eq!(
            parse(&base().with_text("  \n ")),
            Err(DbParseError::MissingKey)
        );
        let big = "f".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            parse(&base().with_text(big)),
            Err(DbParseError::TooLong("key"))
        );
        assert_eq!(
            parse(&base().with_text("ab\u{7}cd")),
            Err(DbParseError::BadKey)
        );
        assert_eq!(parse(&base().with_text("ab cd")), Err(DbParseError::BadKey));
        assert_eq!(
            parse(&base().with_attr("type", "maybe")),
            Err(DbParseError::BadType("maybe".into()))
        );
        // A peer-chosen type is clipped in the error text.
        let long_type = parse(&base().with_attr("type", "x".repeat(10_000)));
        assert!(long_type.unwrap_err().to_string().len() < 100);
        // <db:verify/> needs an id, and a bounded one.
        let verify = || {
            Element::new("verify", NS_DIALBACK)
                .with_attr("from", "a.test")
                .with_attr("to", "b.test")
                .with_text("k")
        };
        assert_eq!(parse(&verify()), Err(DbParseError::MissingAttribute("id")));
        assert_eq!(
            parse(&verify().with_attr("id", "")),
            Err(DbParseError::MissingAttribute("id"))
        );
        assert_eq!(
            parse(&verify().with_attr("id", "i".repeat(MAX_ID_BYTES + 1))),
            Err(DbParseError::TooLong("id"))
        );
    }

    #[test]
    fn answer_text_is_ignored() {
        let el = Element::new("result", NS_DIALBACK)
            .with_attr("from", "a.test")
            .with_attr("to", "b.test")
            .with_attr("type", "valid")
            .with_text("junk");
        assert_eq!(
            parse(&el),
            Ok(DbElement::result_answer("a.test", "b.test", true))
        );
    }

    #[test]
    fn feature_advertises_errors() {
        let f = feature();
        assert!(feature_supports_errors(&f));
        assert!(!feature_supports_errors(&Element::new(
            "dialback",
            NS_DIALBACK_FEATURE
        )));
    }
}

//! XEP-0388 Extensible SASL Profile (SASL2, `urn:xmpp:sasl:2`): the elements, sans-IO.
//!
//! SASL2 runs the same mechanisms as RFC 6120 SASL with other wrapping — `<authenticate/>`
//! with an `<initial-response/>` child, `<challenge/>`/`<response/>`, then `<success/>`
//! carrying `<additional-data/>` and the `<authorization-identifier/>` — and without the
//! stream restart. What makes it worth having is what `<authenticate/>` may carry besides:
//! a `<user-agent id='…'/>` naming the client installation, XEP-0386 Bind2 (`<bind/>`),
//! XEP-0198 resumption (`<resume/>`) and XEP-0484 FAST (`<fast/>`, `<request-token/>`), so a
//! reconnecting client is back in one round trip. The stream state machine (`c2s`) drives
//! the exchange; this module reads and builds the elements, refusing anything oversized.
//! `<continue/>` tasks (second factors, SCRAM upgrades) are not offered.

use franca_xml::Element;

use crate::bind2::BindRequest;
use crate::fast::FastRequest;
use crate::ns::{NS_FAST, NS_SASL, NS_SASL2, NS_SM};
use crate::sasl::{self, SaslError};
use crate::sm::Nonza;

/// Longest user-agent id accepted. The XEP asks for a UUID; anything up to this is kept, since
/// it only names the client's tokens and its resource.
pub const MAX_USER_AGENT_ID: usize = 128;

/// A client's `<authenticate xmlns='urn:xmpp:sasl:2'/>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Authenticate {
    pub mechanism: String,
    /// The base64 text of `<initial-response/>`; `None` when there is none.
    pub initial_response: Option<String>,
    /// `<user-agent id='…'/>`: the client installation.
    pub user_agent_id: Option<String>,
    /// XEP-0386.
    pub bind: Option<BindRequest>,
    /// XEP-0198 §5 inline: (previd, h).
    pub resume: Option<(String, u32)>,
    /// XEP-0484: `<request-token mechanism='…'/>`.
    pub request_token: Option<String>,
    /// XEP-0484: `<fast/>`, present when the client logs in with a token.
    pub fast: Option<FastRequest>,
}

impl Authenticate {
    /// Reads `<authenticate/>`. `bind2_extensions` are the namespaces whose elements
    /// `<bind/>` may carry for modules (see [`BindRequest::parse`]).
    pub fn parse(el: &Element, bind2_extensions: &[String]) -> Result<Authenticate, SaslError> {
        let mechanism = el
            .attr("mechanism")
            .ok_or(SaslError::InvalidMechanism)?
            .to_owned();
        let mut a = Authenticate {
            mechanism,
            ..Authenticate::default()
        };
        for child in el.elements() {
            match (child.ns.as_str(), child.name.as_str()) {
                (NS_SASL2, "initial-response") => a.initial_response = Some(child.text()),
                (NS_SASL2, "user-agent") => {
                    let id = child
                        .attr("id")
                        .filter(|id| is_valid_user_agent_id(id))
                        .ok_or(SaslError::MalformedRequest("SASL2: bad user-agent id"))?;
                    a.user_agent_id = Some(id.to_owned());
                }
                (crate::ns::NS_BIND2, "bind") => {
                    a.bind = Some(BindRequest::parse(child, bind2_extensions)?);
                }
                (NS_SM, _) => match Nonza::parse(child) {
                    Some(Ok(Nonza::Resume { previd, h })) => a.resume = Some((previd, h)),
                    _ => return Err(SaslError::MalformedRequest("SASL2: bad resume")),
                },
                (NS_FAST, "request-token") => {
                    let mech = child
                        .attr("mechanism")
                        .ok_or(SaslError::MalformedRequest("FAST: no mechanism"))?;
                    a.request_token = Some(mech.to_owned());
                }
                (NS_FAST, "fast") => a.fast = Some(FastRequest::parse(child)?),
                // <supported/> (informational) and anything unknown.
                _ => {}
            }
        }
        Ok(a)
    }
}

/// 1 to [`MAX_USER_AGENT_ID`] printable ASCII characters.
fn is_valid_user_agent_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_USER_AGENT_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The pre-authentication stream feature `<authentication xmlns='urn:xmpp:sasl:2'>` with the
/// mechanisms and the `<inline/>` features (XEP-0388 §2.1).
pub fn feature<'a>(mechanisms: impl IntoIterator<Item = &'a str>, inline: Vec<Element>) -> Element {
    let mut f = Element::new("authentication", NS_SASL2);
    for m in mechanisms {
        f.push(Element::new("mechanism", NS_SASL2).with_text(m));
    }
    if !inline.is_empty() {
        let mut i = Element::new("inline", NS_SASL2);
        for el in inline {
            i.push(el);
        }
        f.push(i);
    }
    f
}

/// `<challenge xmlns='urn:xmpp:sasl:2'>` (empty for "send your initial response").
pub fn challenge(data: &[u8]) -> Element {
    let c = Element::new("challenge", NS_SASL2);
    if data.is_empty() {
        c
    } else {
        c.with_text(sasl::encode_payload(data))
    }
}

/// `<failure xmlns='urn:xmpp:sasl:2'>` with the RFC 6120 §6.5 condition in the SASL
/// namespace (XEP-0388 §2.6.2).
pub fn failure(err: &SaslError, text: Option<&str>) -> Element {
    let mut f =
        Element::new("failure", NS_SASL2).with_child(Element::new(err.condition(), NS_SASL));
    if let Some(t) = text {
        f.push(Element::new("text", NS_SASL2).with_text(t));
    }
    f
}

/// `<success xmlns='urn:xmpp:sasl:2'>`: the mechanism's additional data, the identity (a full
/// JID once bound or resumed), then the extensions' answers (`<bound/>`, `<resumed/>`,
/// `<token/>`).
pub fn success(additional: &[u8], identity: &str, extra: Vec<Element>) -> Element {
    let mut s = Element::new("success", NS_SASL2);
    if !additional.is_empty() {
        s.push(
            Element::new("additional-data", NS_SASL2).with_text(sasl::encode_payload(additional)),
        );
    }
    s.push(Element::new("authorization-identifier", NS_SASL2).with_text(identity));
    for e in extra {
        s.push(e);
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ns::{NS_BIND2, NS_CARBONS};

    #[test]
    fn xep0388_authenticate_with_everything() {
        let el = Element::new("authenticate", NS_SASL2)
            .with_attr("mechanism", "SCRAM-SHA-256")
            .with_child(Element::new("initial-response", NS_SASL2).with_text("biwsbj1qLHI9YQ=="))
            .with_child(Element::new("user-agent", NS_SASL2).with_attr("id", "d4565fa7"))
            .with_child(
                Element::new("bind", NS_BIND2)
                    .with_child(Element::new("tag", NS_BIND2).with_text("App"))
                    .with_child(Element::new("enable", NS_CARBONS)),
            )
            .with_child(
                Element::new("resume", NS_SM)
                    .with_attr("previd", "abc")
                    .with_attr("h", "4"),
            )
            .with_child(
                Element::new("request-token", NS_FAST).with_attr("mechanism", "HT-SHA-256-NONE"),
            )
            .with_child(Element::new("supported", NS_SASL2));
        let a = Authenticate::parse(&el, &[NS_CARBONS.to_owned()]).unwrap();
        assert_eq!(a.mechanism, "SCRAM-SHA-256");
        assert_eq!(a.initial_response.as_deref(), Some("biwsbj1qLHI9YQ=="));
        assert_eq!(a.user_agent_id.as_deref(), Some("d4565fa7"));
        assert_eq!(a.bind.unwrap().extensions.len(), 1);
        assert_eq!(a.resume, Some(("abc".into(), 4)));
        assert_eq!(a.request_token.as_deref(), Some("HT-SHA-256-NONE"));
        assert_eq!(a.fast, None);
    }

    #[test]
    fn xep0388_hostile_authenticate() {
        let no_mech = Element::new("authenticate", NS_SASL2);
        assert_eq!(
            Authenticate::parse(&no_mech, &[]),
            Err(SaslError::InvalidMechanism)
        );
        let ua = |id: &str| {
            Element::new("authenticate", NS_SASL2)
                .with_attr("mechanism", "PLAIN")
                .with_child(Element::new("user-agent", NS_SASL2).with_attr("id", id))
        };
        assert!(Authenticate::parse(&ua(&"x".repeat(MAX_USER_AGENT_ID)), &[]).is_ok());
        assert!(Authenticate::parse(&ua(&"x".repeat(MAX_USER_AGENT_ID + 1)), &[]).is_err());
        assert!(Authenticate::parse(&ua("has space"), &[]).is_err());
        assert!(Authenticate::parse(&ua(""), &[]).is_err());
        let bad_resume = Element::new("authenticate", NS_SASL2)
            .with_attr("mechanism", "PLAIN")
            .with_child(Element::new("resume", NS_SM).with_attr("previd", "abc"));
        assert!(Authenticate::parse(&bad_resume, &[]).is_err());
        let bad_count = Element::new("authenticate", NS_SASL2)
            .with_attr("mechanism", "HT-SHA-256-NONE")
            .with_child(Element::new("fast", NS_FAST).with_attr("count", "x"));
        assert!(Authenticate::parse(&bad_count, &[]).is_err());
    }

    #[test]
    fn xep0388_outcome_elements() {
        let f = failure(&SaslError::NotAuthorized, Some("no"));
        assert!(f.is("failure", NS_SASL2));
        assert!(f.has_child("not-authorized", NS_SASL));
        let s = success(
            b"v=abc",
            "a@example.org/r",
            vec![Element::new("bound", NS_BIND2)],
        );
        assert_eq!(
            s.child("authorization-identifier", NS_SASL2)
                .map(|e| e.text()),
            Some("a@example.org/r".into())
        );
        assert!(s.has_child("additional-data", NS_SASL2));
        assert!(s.has_child("bound", NS_BIND2));
        assert!(!success(b"", "a@example.org", vec![]).has_child("additional-data", NS_SASL2));
        assert_eq!(challenge(b"").text(), "");
    }
}

//! XEP-0386 Bind 2: resource binding inside the SASL2 `<authenticate/>` (XEP-0388), with the
//! features a client turns on at startup enabled in the same round trip — XEP-0198 stream
//! management (`<enable/>`), XEP-0352 client state (`<inactive/>`), XEP-0280 carbons
//! (`<enable xmlns='urn:xmpp:carbons:2'/>`) and whatever else a module lists.
//!
//! The client does not pick its resource. It may send a `<tag/>` naming its software, and the
//! server makes the resource `tag/suffix` (XEP-0386 §3.2.1): the suffix is derived from the
//! account, tag and XEP-0388 user-agent id when there is one, so that the same client gets the
//! same resource on every connection (a new login replaces its own stale session instead of
//! leaving a ghost beside it, as §3.2 asks), random otherwise.
//!
//! One rule of §3.2 is not followed: offline messages are not cleared at binding "as they will
//! be provided by MAM" — there is no XEP-0313 archive yet, so they are delivered as usual.

use franca_xml::Element;
use sha2::{Digest, Sha256};

use crate::ns::{NS_BIND2, NS_CSI, NS_SM};
use crate::sasl::SaslError;
use crate::sm::Nonza;

/// Longest tag kept in a resource.
const MAX_TAG_CHARS: usize = 64;
/// Most extension elements read from one `<bind/>`.
const MAX_EXTENSIONS: usize = 16;

/// A client's `<bind xmlns='urn:xmpp:bind:0'/>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BindRequest {
    /// The `<tag/>` text, as sent.
    pub tag: Option<String>,
    /// XEP-0198 inline `<enable/>`: (resume, max).
    pub sm_enable: Option<(bool, Option<u32>)>,
    /// XEP-0352 `<inactive/>`: start the session inactive.
    pub inactive: bool,
    /// Other children, for the modules that listed their namespace (carbons…).
    pub extensions: Vec<Element>,
}

impl BindRequest {
    /// Reads `<bind/>`; only children in `accepted` namespaces are kept as extensions, and
    /// unknown ones are ignored as XEP-0386 lets a server do with features it did not offer.
    pub fn parse(el: &Element, accepted: &[String]) -> Result<BindRequest, SaslError> {
        let mut req = BindRequest::default();
        for child in el.elements() {
            if child.is("tag", NS_BIND2) {
                req.tag = Some(child.text());
            } else if child.ns == NS_SM {
                match Nonza::parse(child) {
                    Some(Ok(Nonza::Enable { resume, max })) => req.sm_enable = Some((resume, max)),
                    _ => return Err(SaslError::MalformedRequest("Bind2: bad stream management")),
                }
            } else if child.is("inactive", NS_CSI) {
                req.inactive = true;
            } else if accepted.contains(&child.ns) {
                if req.extensions.len() >= MAX_EXTENSIONS {
                    return Err(SaslError::MalformedRequest("Bind2: too many features"));
                }
                req.extensions.push(child.clone());
            }
        }
        Ok(req)
    }
}

/// The resource for a Bind2 session (XEP-0386 §3.2.1): the tag as sent, a `/`, and 8 hex
/// digits — from SHA-256 of the account, tag and user-agent id when the client sent an id
/// (stable for that client, and the id cannot be read back from it), else random. A tag that
/// is not a valid resourcepart, or longer than 64 characters, is left out.
pub fn resource(tag: Option<&str>, account: &str, user_agent_id: Option<&str>) -> String {
    let tag = tag
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.chars().count() <= MAX_TAG_CHARS);
    let suffix = match user_agent_id {
        Some(id) => {
            let mut h = Sha256::new();
            for part in [account, tag.unwrap_or_default(), id] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            let d = h.finalize();
            format!("{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
        }
        None => {
            use rand::Rng;
            let n: u32 = rand::thread_rng().r#gen();
            format!("{n:08x}")
        }
    };
    match tag {
        Some(t) => {
            let full = format!("{t}/{suffix}");
            if jid::ResourcePart::new(&full).is_ok() {
                full
            } else {
                suffix
            }
        }
        None => suffix,
    }
}

/// The SASL2 inline feature `<bind xmlns='urn:xmpp:bind:0'><inline><feature var/>…`.
pub fn feature<'a>(inline: impl IntoIterator<Item = &'a str>) -> Element {
    let mut list = Element::new("inline", NS_BIND2);
    for var in inline {
        list.push(Element::new("feature", NS_BIND2).with_attr("var", var));
    }
    Element::new("bind", NS_BIND2).with_child(list)
}

/// `<bound xmlns='urn:xmpp:bind:0'>` with the answers of the inline features.
pub fn bound(children: Vec<Element>) -> Element {
    let mut b = Element::new("bound", NS_BIND2);
    for c in children {
        b.push(c);
    }
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ns::NS_CARBONS;

    #[test]
    fn xep0386_resource_is_tag_and_suffix() {
        let a = resource(Some("AwesomeXMPP"), "a@example.org", Some("ua-1"));
        assert!(a.starts_with("AwesomeXMPP/"), "{a}");
        assert_eq!(a.len(), "AwesomeXMPP/".len() + 8);
        // Stable for one client and tag of one account, different otherwise.
        assert_eq!(
            a,
            resource(Some("AwesomeXMPP"), "a@example.org", Some("ua-1"))
        );
        assert_ne!(
            a,
            resource(Some("AwesomeXMPP"), "a@example.org", Some("ua-2"))
        );
        assert_ne!(
            a,
            resource(Some("AwesomeXMPP"), "b@example.org", Some("ua-1"))
        );
        assert_ne!(a, resource(Some("Other"), "a@example.org", Some("ua-1")));
        // The id itself does not show.
        assert!(!resource(Some("x"), "a@example.org", Some("secret-id")).contains("secret"));
        let r = resource(None, "a@example.org", None);
        assert_eq!(r.len(), 8);
        assert!(r.bytes().all(|b| b.is_ascii_hexdigit()));
        // Tags that cannot be (part of) a resource are left out.
        assert_eq!(
            resource(Some(&"x".repeat(500)), "a@example.org", None).len(),
            8
        );
        assert_eq!(
            resource(Some("bad\u{0}tag"), "a@example.org", None).len(),
            8
        );
        assert_eq!(resource(Some("  "), "a@example.org", None).len(), 8);
        assert!(
            resource(Some("Gajim on my laptop"), "a@example.org", None)
                .starts_with("Gajim on my laptop/")
        );
    }

    #[test]
    fn xep0386_request_with_inline_features() {
        let el = Element::new("bind", NS_BIND2)
            .with_child(Element::new("tag", NS_BIND2).with_text("App"))
            .with_child(Element::new("enable", NS_CARBONS))
            .with_child(Element::new("enable", NS_SM).with_attr("resume", "true"))
            .with_child(Element::new("inactive", NS_CSI))
            .with_child(Element::new("unknown", "urn:example"));
        let req = BindRequest::parse(&el, &[NS_CARBONS.to_owned()]).unwrap();
        assert_eq!(req.tag.as_deref(), Some("App"));
        assert_eq!(req.sm_enable, Some((true, None)));
        assert!(req.inactive);
        assert_eq!(req.extensions.len(), 1);
        assert!(req.extensions[0].is("enable", NS_CARBONS));
        // A stream management element that is not <enable/>.
        let bad = Element::new("bind", NS_BIND2).with_child(Element::new("a", NS_SM));
        assert!(BindRequest::parse(&bad, &[]).is_err());
        // Flooding with extensions.
        let mut flood = Element::new("bind", NS_BIND2);
        for _ in 0..=MAX_EXTENSIONS {
            flood.push(Element::new("enable", NS_CARBONS));
        }
        assert!(BindRequest::parse(&flood, &[NS_CARBONS.to_owned()]).is_err());
    }

    #[test]
    fn xep0386_feature_lists_inline_vars() {
        let f = feature([NS_SM, NS_CARBONS]);
        let inline = f.child("inline", NS_BIND2).unwrap();
        let vars: Vec<_> = inline.elements().filter_map(|e| e.attr("var")).collect();
        assert_eq!(vars, [NS_SM, NS_CARBONS]);
    }
}

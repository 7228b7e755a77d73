//! One stanza for many recipients, serialised once and shared (issue 5, DESIGN §6: "parse once
//! and serialise once per destination form").
//!
//! RFC 6120 §8.1.1.1 wants every copy addressed to its recipient, so the copies differ in
//! their `to`. A [`Fanout`] is the stanza serialised once without `to`, in one shared buffer,
//! plus the offset where `to` belongs (right after the root's name). A recipient's queue gets a
//! reference to that buffer ([`Serialised::Fanout`], an atomic increment), and the connection
//! writing it puts head, the escaped `to` and tail into its own write buffer: no per-recipient
//! copy of the stanza exists unless a transport needs one message per stanza (WebSocket, BOSH)
//! or the stanza must be read back (XEP-0352 classification, the end of a session).
//!
//! A queued fan-out stanza is always addressed to the full JID of the session that queued it:
//! the room delivers to the session bound to the occupant's JID, so the queue item needs no
//! JID of its own and stays as small as a plain one.

use franca_proto::ns::NS_CLIENT;
use franca_xml::{Element, escape_attr};
use std::sync::Arc;

/// One serialisation of a stanza for many recipients; cloning shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    /// The stanza as a `jabber:client` stream carries it, without `to`.
    xml: Arc<str>,
    /// Where ` to='…'` goes: the end of the root's name (`u32` keeps an unacknowledged
    /// XEP-0198 item at 24 bytes).
    split: u32,
    /// Whether a standalone copy (a WebSocket message, a BOSH payload) must declare
    /// `jabber:client` on the root, exactly where `with_client_ns` would.
    declare_ns: bool,
}

/// ` xmlns='jabber:client'`, as `with_client_ns` writes it.
const CLIENT_NS_DECL: &str = concat!(" xmlns='", "jabber:client", "'");

impl Fanout {
    /// `stanza` is serialised without its `to` attribute, if it has one; each copy carries
    /// its recipient's `to` as the first attribute.
    pub fn new(stanza: &Element) -> Fanout {
        let xml = if stanza.attr("to").is_some() {
            let mut copy = stanza.clone();
            copy.remove_attr("to");
            copy.to_xml_in(NS_CLIENT)
        } else {
            stanza.to_xml_in(NS_CLIENT)
        };
        // The serialiser writes `<` and the name first. No name read within the stanza
        // limits comes near 4 GiB, so the `u32` always holds it.
        let split = (1 + stanza.name.len()).min(xml.len());
        let declare_ns = franca_proto::c2s::client_ns_insertion(&xml) == Some(split);
        let split = u32::try_from(split).unwrap_or(0);
        Fanout {
            xml: Arc::from(xml),
            split,
            declare_ns,
        }
    }

    /// Length of the serialisation without `to`, in bytes.
    pub fn len(&self) -> usize {
        self.xml.len()
    }

    pub fn is_empty(&self) -> bool {
        self.xml.is_empty()
    }

    /// The stanza without `to`: enough to classify it (XEP-0352), which never looks at `to`.
    pub fn untargeted(&self) -> &str {
        &self.xml
    }

    fn parts(&self) -> (&str, &str) {
        // `split` is `<` plus the root's name, a char boundary of the text, so the fallback
        // (an empty head) is never taken.
        let at = usize::try_from(self.split).unwrap_or(0);
        self.xml.split_at_checked(at).unwrap_or(("", &self.xml))
    }

    /// Appends ` to='…'` with `to` escaped exactly as the serialiser escapes attributes.
    fn write_to_attr(to: &str, out: &mut String) {
        out.push_str(" to='");
        escape_attr(to, out);
        out.push('\'');
    }

    /// Appends the copy for `to`, as a `jabber:client` stream carries it.
    pub fn write_to(&self, to: &str, out: &mut String) {
        let (head, tail) = self.parts();
        out.push_str(head);
        Fanout::write_to_attr(to, out);
        out.push_str(tail);
    }

    /// Appends the copy for `to` as a standalone document (RFC 7395 message, BOSH payload):
    /// what `with_client_ns` makes of [`Fanout::write_to`]'s bytes.
    pub fn write_framed(&self, to: &str, out: &mut String) {
        let (head, tail) = self.parts();
        out.push_str(head);
        if self.declare_ns {
            out.push_str(CLIENT_NS_DECL);
        }
        Fanout::write_to_attr(to, out);
        out.push_str(tail);
    }

    /// Room for one copy to `to` (its escaping rarely grows it).
    fn copy_len(&self, to: &str) -> usize {
        self.xml.len() + to.len() + CLIENT_NS_DECL.len() + 6
    }

    /// The bytes for the recipient `to`, as their own buffer (for paths that keep or re-read a
    /// single copy; writers use [`Fanout::write_to`]).
    pub fn to(&self, to: &str) -> Arc<str> {
        let mut out = String::with_capacity(self.copy_len(to));
        self.write_to(to, &mut out);
        Arc::from(out)
    }
}

/// A serialised stanza in a session's queue, in the XEP-0198 unacknowledged queue or in the
/// XEP-0352 hold queue: its own bytes, or a shared fan-out addressed to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serialised {
    /// Bytes shared by every recipient of the same form (one recipient for a 1:1 message).
    Xml(Arc<str>),
    /// A fan-out stanza; its `to` is the full JID of the session it was queued for.
    Fanout(Fanout),
}

impl Serialised {
    /// Appends the stanza as a `jabber:client` stream carries it to the session `jid`.
    pub fn write_to(&self, jid: &str, out: &mut String) {
        match self {
            Serialised::Xml(xml) => out.push_str(xml),
            Serialised::Fanout(f) => f.write_to(jid, out),
        }
    }

    /// The stanza as one standalone document for the session `jid` (RFC 7395 message, BOSH
    /// payload), with `jabber:client` declared on its root.
    pub fn framed(&self, jid: &str) -> String {
        match self {
            Serialised::Xml(xml) => franca_proto::c2s::with_client_ns(xml).into_owned(),
            Serialised::Fanout(f) => {
                let mut out = String::with_capacity(f.copy_len(jid));
                f.write_framed(jid, &mut out);
                out
            }
        }
    }

    /// The bytes for the session `jid` as one buffer; a plain stanza is shared, not copied.
    pub fn to_xml(&self, jid: &str) -> Arc<str> {
        match self {
            Serialised::Xml(xml) => xml.clone(),
            Serialised::Fanout(f) => f.to(jid),
        }
    }

    /// The text to classify the stanza by (XEP-0352): the stanza, with or without its `to`.
    pub fn classifiable(&self) -> &str {
        match self {
            Serialised::Xml(xml) => xml,
            Serialised::Fanout(f) => f.untargeted(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::serialise;

    fn groupchat() -> Element {
        Element::new("message", NS_CLIENT)
            .with_attr("from", "room@conference.localhost/nick")
            .with_attr("to", "someone@else")
            .with_attr("type", "groupchat")
            .with_attr("id", "it's \"quoted\"")
            .with_child(Element::new("body", NS_CLIENT).with_text("a < b & c"))
    }

    /// What the serialiser writes for `stanza` addressed to `to` (as the first attribute, where
    /// a fan-out copy has it).
    fn addressed(stanza: &Element, to: &str) -> Element {
        let mut rest = stanza.clone();
        rest.remove_attr("to");
        let mut el = Element::new(&rest.name, &rest.ns).with_attr("to", to);
        el.attrs.extend(rest.attrs);
        el.children = rest.children;
        el
    }

    const ODD_JIDS: [&str; 4] = [
        "juliet@localhost/balcony",
        "romeo@localhost/it's <me> & more",
        "nurse@localhost/\"tab\"\there",
        "friar@localhost/ünïcödé ☃",
    ];

    #[test]
    fn rfc6120_8_1_1_1_each_copy_is_the_stanza_serialised_with_its_own_to() {
        let stanza = groupchat();
        let fanout = Fanout::new(&stanza);
        for to in ODD_JIDS {
            let want = serialise(&addressed(&stanza, to));
            assert_eq!(&*fanout.to(to), &*want);
            let mut written = String::from("<prev/>");
            Serialised::Fanout(fanout.clone()).write_to(to, &mut written);
            assert_eq!(written, format!("<prev/>{want}"));
            assert_eq!(&*Serialised::Fanout(fanout.clone()).to_xml(to), &*want);
        }
        let empty = Element::new("presence", NS_CLIENT);
        assert_eq!(
            &*Fanout::new(&empty).to("a@b/c"),
            &*serialise(&Element::new("presence", NS_CLIENT).with_attr("to", "a@b/c"))
        );
    }

    #[test]
    fn rfc7395_a_standalone_copy_is_what_with_client_ns_makes_of_it() {
        for stanza in [
            groupchat(),
            Element::new("presence", NS_CLIENT),
            // Not in jabber:client: the root declares its own namespace and gets no other.
            Element::new("message", "urn:example:other").with_attr("type", "chat"),
        ] {
            let fanout = Fanout::new(&stanza);
            for to in ODD_JIDS {
                let want = franca_proto::c2s::with_client_ns(&fanout.to(to)).into_owned();
                assert_eq!(Serialised::Fanout(fanout.clone()).framed(to), want);
            }
        }
        let plain = serialise(&groupchat());
        assert_eq!(
            Serialised::Xml(plain.clone()).framed("ignored@x/y"),
            franca_proto::c2s::with_client_ns(&plain).into_owned()
        );
    }

    #[test]
    fn a_queue_item_stays_as_small_as_before() {
        // An idle outbound queue may keep room for 8 items (outbox::KEEP); the fan-out kind
        // fits in the size a stream close already takes (its error and text).
        assert!(size_of::<crate::session::Outbound>() <= 48);
        assert!(size_of::<Serialised>() <= 24);
    }

    #[test]
    fn a_copy_shares_the_bytes_and_classifies_without_to() {
        let fanout = Fanout::new(&groupchat());
        let copy = Serialised::Fanout(fanout.clone());
        let Serialised::Fanout(inner) = &copy else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(&inner.xml, &fanout.xml));
        assert!(!copy.classifiable().contains(" to="));
        assert!(copy.classifiable().starts_with("<message from="));
        let plain = Serialised::Xml(Arc::from("<iq/>"));
        assert_eq!(plain.classifiable(), "<iq/>");
        let Serialised::Xml(x) = &plain else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(x, &plain.to_xml("a@b/c")));
    }
}

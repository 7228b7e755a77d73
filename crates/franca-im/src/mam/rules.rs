//! Which messages go into a user's archive (XEP-0313 §5.1.1 "User Archives" and the XEP-0334
//! hints), and the XEP-0359 rule that a stanza-id claiming to come from the archive's owner
//! is only trusted when this server added it.
//!
//! Archived: `chat` and `normal` messages with a body, or with a payload a client shows or
//! needs to rebuild a conversation — end-to-end encrypted content (OMEMO, OpenPGP, EME),
//! XEP-0353 call signalling, chat markers, reactions, retractions. Not archived: chat states,
//! receipts or other signalling alone; `error`, `headline` and `groupchat` (a room keeps its
//! own archive); carbon copies; messages with `<no-store/>` or `<no-permanent-store/>`; and
//! messages marked private for XEP-0280 (a client that keeps a message from its other
//! resources would be defeated if they could read it back from the archive). `<store/>`
//! archives a `chat` or `normal` message that would otherwise not be.
//!
//! A room's archive (XEP-0313 §5.1.2 "MUC Archives") takes the `groupchat` messages the room
//! reflects with the same kinds of content, not subject changes alone (the room keeps its
//! subject) and not private messages between occupants ([`archivable_groupchat`]).

use franca_proto::ns::{NS_CARBONS, NS_CLIENT, NS_HINTS, NS_STANZA_ID};
use franca_xml::{Element, Node};

/// Payload namespaces that make a message without a body worth archiving.
const ARCHIVED_PAYLOADS: &[&str] = &[
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:omemo:2",
    "urn:xmpp:openpgp:0",
    "jabber:x:encrypted",
    "urn:xmpp:eme:0",
    "urn:xmpp:jingle-message:0",
    "urn:xmpp:jingle-message:1",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:reactions:0",
    "urn:xmpp:message-retract:0",
    "urn:xmpp:message-retract:1",
];

/// Whether `message` belongs in a user's archive. Cheap: no allocation, so the routing path
/// pays nothing more for stanzas that are not archived.
pub fn archivable(message: &Element) -> bool {
    if message.name != "message" {
        return false;
    }
    // Anything else is chat or normal (RFC 6121 §5.2.2: an unknown type is normal).
    if let Some("error" | "headline" | "groupchat") = message.attr("type") {
        return false;
    }
    let hint = |name| message.has_child(name, NS_HINTS);
    if hint("no-store") || hint("no-permanent-store") {
        return false;
    }
    let carbon = message.has_child("sent", NS_CARBONS)
        || message.has_child("received", NS_CARBONS)
        || message.has_child("private", NS_CARBONS);
    if carbon {
        return false;
    }
    hint("store")
        || message.has_child("body", NS_CLIENT)
        || message
            .elements()
            .any(|c| ARCHIVED_PAYLOADS.contains(&c.ns.as_str()))
}

/// Whether a `groupchat` message belongs in its room's archive: the same content rules as
/// [`archivable`], but a subject change without a body is not archived.
pub fn archivable_groupchat(message: &Element) -> bool {
    if message.name != "message" || message.attr("type") != Some("groupchat") {
        return false;
    }
    let hint = |name| message.has_child(name, NS_HINTS);
    if hint("no-store") || hint("no-permanent-store") {
        return false;
    }
    message.has_child("body", NS_CLIENT)
        || (!message.has_child("subject", NS_CLIENT)
            && (hint("store")
                || message
                    .elements()
                    .any(|c| ARCHIVED_PAYLOADS.contains(&c.ns.as_str()))))
}

/// Remove every `<stanza-id/>` whose `by` is `owner` (XEP-0359 §5: the owner's server adds
/// those, so one that arrives from elsewhere is a forgery). Others' stanza-ids stay.
pub fn strip_stanza_ids(message: &mut Element, owner: &str) {
    message.children.retain(|n| match n {
        Node::Element(e) => !(e.is("stanza-id", NS_STANZA_ID) && e.attr("by") == Some(owner)),
        Node::Text(_) => true,
    });
}

/// The `<stanza-id/>` this server adds to the copy of a message archived for `owner`.
pub fn stanza_id(owner: &str, id: &str) -> Element {
    Element::new("stanza-id", NS_STANZA_ID)
        .with_attr("by", owner)
        .with_attr("id", id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::xml;

    fn yes(s: &str) {
        assert!(archivable(&xml(s)), "should be archived: {s}");
    }
    fn no(s: &str) {
        assert!(!archivable(&xml(s)), "should not be archived: {s}");
    }

    #[test]
    fn xep0313_5_1_1_chat_and_normal_messages_with_content() {
        yes("<message type='chat'><body>hi</body></message>");
        yes("<message><body>hi</body></message>");
        yes("<message type='strange'><body>hi</body></message>");
        yes("<message type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>");
        yes("<message><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>");
        yes("<message type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>");
        yes("<message type='chat'><store xmlns='urn:xmpp:hints'/><x xmlns='x'/></message>");
    }

    #[test]
    fn xep0313_5_1_1_what_is_not_archived() {
        no(
            "<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        no("<message type='chat'><received xmlns='urn:xmpp:receipts' id='1'/></message>");
        no("<message type='error'><body>bounced</body></message>");
        no("<message type='headline'><body>news</body></message>");
        no("<message type='groupchat'><body>room</body></message>");
        no("<message type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>");
        no("<message><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>");
        no("<message type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>");
        no(
            "<message><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'/>\
            </sent></message>",
        );
        no("<presence/>");
    }

    #[test]
    fn xep0313_5_1_2_groupchat_messages_for_a_room_archive() {
        let yes = |s: &str| assert!(archivable_groupchat(&xml(s)), "should be archived: {s}");
        let no = |s: &str| {
            assert!(
                !archivable_groupchat(&xml(s)),
                "should not be archived: {s}"
            )
        };
        yes("<message type='groupchat'><body>hi</body></message>");
        yes("<message type='groupchat'><subject>t</subject><body>hi</body></message>");
        yes("<message type='groupchat'><encrypted xmlns='urn:xmpp:omemo:2'/></message>");
        yes("<message type='groupchat'><reactions xmlns='urn:xmpp:reactions:0' id='1'/></message>");
        no("<message type='groupchat'><subject>tea</subject></message>");
        no(
            "<message type='groupchat'><active xmlns='http://jabber.org/protocol/chatstates'/>\
            </message>",
        );
        no("<message type='groupchat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>");
        no("<message type='chat'><body>private</body></message>");
        no("<message><body>normal</body></message>");
    }

    #[test]
    fn xep0359_stanza_ids_by_the_owner_are_stripped_others_kept() {
        let mut m = xml("<message><body>x</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='juliet@localhost' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='theirs'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='juliet@localhost' id='forged2'/></message>");
        strip_stanza_ids(&mut m, "juliet@localhost");
        let left: Vec<_> = m
            .elements()
            .filter(|e| e.is("stanza-id", NS_STANZA_ID))
            .filter_map(|e| e.attr("id"))
            .collect();
        assert_eq!(left, ["theirs"]);
        assert!(m.has_child("body", NS_CLIENT));
    }
}

//! XEP-0352 Client State Indication (`urn:xmpp:csi:0`): while a client says it is
//! `<inactive/>` (screen off, app in the background), the server holds back stanzas that can
//! wait, so the radio wakes up less often, and delivers the ones that cannot wait at once.
//!
//! [`classify`] decides per stanza; [`CsiQueue`] holds what can wait, in order. The rules
//! (ours; XEP-0352 leaves them to the server, and they follow the same spirit as Prosody's
//! mod_csi_simple):
//!
//! * Urgent: every IQ (someone waits for the answer); a message with a `<body/>` (this covers
//!   errors bouncing a message the user wrote) or a `<subject/>` (the last step of joining a
//!   MUC room, XEP-0045 §7.2, which the client waits for); call signalling (XEP-0353); chat
//!   markers (XEP-0333) addressed to the user; an encrypted message (XEP-0380
//!   `<encryption/>`: its body, if any, is hidden inside); presence subscription requests and
//!   answers (`subscribe`, `subscribed`, `unsubscribe`, `unsubscribed`: rare, each asks the
//!   user to act or changes the roster, and none is state that a later presence replaces).
//! * Held: everything else — available/unavailable presence (de-duplicated, see
//!   [`dedupe_key`]), chat states (XEP-0085), delivery receipts (XEP-0184: a small tick that
//!   nobody acts on; the `<request/>` rides on a message with a body, which is urgent), PEP
//!   notifications, error bounces without a body, and chat markers not addressed to the user:
//!   those of room occupants (one per occupant per message) and the user's own, copied from
//!   another device.
//! * Carbons (XEP-0280 `<sent/>`/`<received/>`) are judged by the message they wrap; a
//!   `<sent/>` copy is something the user said, not something said to them.
//!
//! An urgent stanza first flushes everything held, so the client still sees every stanza in
//! the order the server received it (RFC 6120 §10.1 in-order processing), except that an older
//! presence superseded by a newer one from the same address is not delivered at all.
//! XEP-0198 nonzas never pass through here: they belong to the stream, not to the queue.
//!
//! Held stanzas are not yet sent, so XEP-0198 has not counted them; when the stream ends the
//! caller [`CsiQueue::flush`]es and treats them like any unacknowledged stanza.

use std::collections::VecDeque;

use franca_xml::Element;

use crate::ns::{
    NS_CARBONS, NS_CHAT_MARKERS, NS_CLIENT, NS_CSI, NS_EME, NS_FORWARD, NS_JINGLE_MESSAGE,
    NS_JINGLE_MESSAGE_1,
};

/// What the client says about itself (XEP-0352 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Active,
    Inactive,
}

impl ClientState {
    /// Reads `<active xmlns='urn:xmpp:csi:0'/>` or `<inactive xmlns='urn:xmpp:csi:0'/>`;
    /// `None` for anything else.
    pub fn parse(el: &Element) -> Option<ClientState> {
        if el.ns != NS_CSI {
            return None;
        }
        match el.name.as_str() {
            "active" => Some(ClientState::Active),
            "inactive" => Some(ClientState::Inactive),
            _ => None,
        }
    }

    pub fn to_element(self) -> Element {
        let name = match self {
            ClientState::Active => "active",
            ClientState::Inactive => "inactive",
        };
        Element::new(name, NS_CSI)
    }
}

/// The `<csi xmlns='urn:xmpp:csi:0'/>` stream feature (XEP-0352 §2), offered after
/// authentication.
pub fn feature() -> Element {
    Element::new("csi", NS_CSI)
}

/// Whether a stanza for an inactive client is delivered now or may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Deliver now, after everything held (so order is kept).
    Urgent,
    /// May wait until the client is active or something urgent comes.
    Held,
}

/// XEP-0353 elements that signal a call; each one changes what the user's device should show
/// or ring right now.
const CALL_SIGNALS: [&str; 7] = [
    "propose", "ringing", "retract", "accept", "proceed", "reject", "finish",
];
/// XEP-0333 markers (not `<markable/>`, which rides on a message with a body).
const MARKERS: [&str; 3] = ["received", "displayed", "acknowledged"];

/// Classifies a stanza about to be delivered to a session whose client is inactive; see the
/// module documentation for the rules.
pub fn classify(stanza: &Element) -> Urgency {
    match stanza.name.as_str() {
        "iq" => Urgency::Urgent,
        "presence" => match stanza.attr("type") {
            Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed") => Urgency::Urgent,
            _ => Urgency::Held,
        },
        "message" => classify_message(stanza),
        _ => Urgency::Held,
    }
}

fn classify_message(message: &Element) -> Urgency {
    // A carbon is judged by the message it copies. Only one level is unwrapped: the carbons
    // module never copies a carbon, so anything deeper is not ours to trust.
    let (inner, to_user) = match carbon_payload(message) {
        Some(carbon) => carbon,
        None => (message, true),
    };
    // In a room every occupant's marker reaches everyone: they report others' reading, not
    // something said to the user, and would wake the device once per occupant per message.
    let to_user = to_user && inner.attr("type") != Some("groupchat");
    let urgent = inner.has_child("body", &inner.ns)
        || inner.has_child("subject", &inner.ns)
        || inner.has_child("encryption", NS_EME)
        || inner.elements().any(|c| {
            ((c.ns == NS_JINGLE_MESSAGE || c.ns == NS_JINGLE_MESSAGE_1)
                && CALL_SIGNALS.contains(&c.name.as_str()))
                || (to_user && c.ns == NS_CHAT_MARKERS && MARKERS.contains(&c.name.as_str()))
        });
    if urgent {
        Urgency::Urgent
    } else {
        Urgency::Held
    }
}

/// The message inside a XEP-0280 carbon, and whether it was addressed to the user
/// (`<received/>`) rather than sent by them (`<sent/>`).
fn carbon_payload(message: &Element) -> Option<(&Element, bool)> {
    let (wrapper, to_user) = match message.child("received", NS_CARBONS) {
        Some(w) => (w, true),
        None => (message.child("sent", NS_CARBONS)?, false),
    };
    let inner = wrapper
        .child("forwarded", NS_FORWARD)?
        .child("message", NS_CLIENT)?;
    Some((inner, to_user))
}

/// The key under which a held stanza replaces an older one: `presence <from>` for available
/// and unavailable presence with a `from` (the full JID), since only the newest presence of
/// an address matters. `None` (never replaced) for everything else: subscriptions and errors
/// are events, not state, and other stanzas are not superseded by later ones.
pub fn dedupe_key(stanza: &Element) -> Option<String> {
    if stanza.name != "presence" || !matches!(stanza.attr("type"), None | Some("unavailable")) {
        return None;
    }
    // Prefixed so that keys for other kinds of state can be added without colliding.
    stanza.attr("from").map(|from| format!("presence {from}"))
}

/// Stanzas held for an inactive client, oldest first.
///
/// * A held item with a key replaces a held item with the same key. The newcomer goes to the
///   end (the position of the newest), not into the old one's place: the sender's earlier
///   stanzas (a chat state, a receipt) were sent before this presence, and putting the
///   presence in front of them would reorder what one sender sent. Dropping the old presence
///   is safe because the new one describes the sender's whole current state.
/// * An urgent item returns everything held, then itself.
/// * At most `cap` items are held: one more flushes everything, so an inactive client with a
///   busy roster costs bounded memory — at the price of one wake-up per `cap` stanzas.
///   Nothing is ever dropped except superseded presence.
///
/// Finding a key is a linear scan; with the cap in the hundreds that is cheaper than keeping
/// an index in step.
#[derive(Debug)]
pub struct CsiQueue<T> {
    held: VecDeque<(Option<String>, T)>,
    cap: usize,
}

impl<T> CsiQueue<T> {
    /// An empty queue holding at most `cap` items (0 holds nothing).
    pub fn new(cap: usize) -> CsiQueue<T> {
        CsiQueue {
            held: VecDeque::new(),
            cap,
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Offers an item for an inactive client; returns what must be written now, in order
    /// (empty when it is held). `key` (see [`dedupe_key`]) is ignored for urgent items: they
    /// go out at once anyway.
    pub fn push(&mut self, urgency: Urgency, key: Option<String>, item: T) -> Vec<T> {
        match urgency {
            Urgency::Urgent => {
                let mut out = self.flush();
                out.push(item);
                out
            }
            Urgency::Held => {
                if let Some(k) = &key
                    && let Some(pos) = self
                        .held
                        .iter()
                        .position(|(old, _)| old.as_ref() == Some(k))
                {
                    self.held.remove(pos);
                }
                self.held.push_back((key, item));
                if self.held.len() > self.cap {
                    self.flush()
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// [`push`](Self::push) with [`classify`] and [`dedupe_key`] applied to `stanza`.
    pub fn push_stanza(&mut self, stanza: &Element, item: T) -> Vec<T> {
        self.push(classify(stanza), dedupe_key(stanza), item)
    }

    /// Everything held, oldest first: on `<active/>`, or when the stream ends.
    pub fn flush(&mut self) -> Vec<T> {
        self.held.drain(..).map(|(_, item)| item).collect()
    }
}

#[cfg(test)]
mod tests {
    //! Tests named after the XEP-0352 sections (and the XEPs of the stanzas classified).
    #![allow(clippy::unwrap_used)]

    use super::*;
    use franca_xml::Limits;

    fn el(xml: &str) -> Element {
        franca_xml::read_document(xml.as_bytes(), Limits::default(), Some(NS_CLIENT))
            .unwrap()
            .unwrap_or_else(|| panic!("no element in {xml}"))
    }

    fn urgency(xml: &str) -> Urgency {
        classify(&el(xml))
    }

    fn sent_carbon(inner: &str) -> String {
        format!(
            "<message from='juliet@example.org' to='juliet@example.org/phone'>\
             <sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>{inner}\
             </forwarded></sent></message>"
        )
    }

    fn received_carbon(inner: &str) -> String {
        sent_carbon(inner)
            .replace("<sent ", "<received ")
            .replace("</sent>", "</received>")
    }

    /// Feeds stanzas (by label) through a queue, returning what was written after each.
    fn transcript(
        q: &mut CsiQueue<&'static str>,
        steps: &[(&'static str, &str)],
    ) -> Vec<Vec<&'static str>> {
        steps
            .iter()
            .map(|(label, xml)| q.push_stanza(&el(xml), label))
            .collect()
    }

    #[test]
    fn xep0352_3_active_and_inactive_nonzas() {
        assert_eq!(
            ClientState::parse(&el("<active xmlns='urn:xmpp:csi:0'/>")),
            Some(ClientState::Active)
        );
        assert_eq!(
            ClientState::parse(&el("<inactive xmlns='urn:xmpp:csi:0'/>")),
            Some(ClientState::Inactive)
        );
        assert_eq!(ClientState::parse(&el("<inactive/>")), None);
        assert_eq!(
            ClientState::parse(&el("<idle xmlns='urn:xmpp:csi:0'/>")),
            None
        );
        assert_eq!(
            ClientState::Inactive.to_element().to_xml_in(NS_CLIENT),
            "<inactive xmlns='urn:xmpp:csi:0'/>"
        );
        assert_eq!(
            feature().to_xml_in(NS_CLIENT),
            "<csi xmlns='urn:xmpp:csi:0'/>"
        );
    }

    #[test]
    fn iqs_are_always_urgent() {
        assert_eq!(
            urgency("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"),
            Urgency::Urgent
        );
        assert_eq!(
            urgency("<iq type='set' id='r'><query xmlns='jabber:iq:roster'/></iq>"),
            Urgency::Urgent
        );
    }

    #[test]
    fn messages_with_a_body_or_subject_are_urgent() {
        assert_eq!(
            urgency("<message type='chat'><body>hi</body></message>"),
            Urgency::Urgent
        );
        assert_eq!(
            urgency("<message type='groupchat'><body>hi all</body></message>"),
            Urgency::Urgent
        );
        assert_eq!(
            urgency(
                "<message type='groupchat' from='room@muc.example.org/nick'><subject>Plans</subject></message>"
            ),
            Urgency::Urgent
        );
        // A body in another namespace is not the message's body.
        assert_eq!(
            urgency("<message><body xmlns='urn:example'>x</body></message>"),
            Urgency::Held
        );
    }

    #[test]
    fn error_messages_are_urgent_only_with_a_body() {
        assert_eq!(
            urgency(
                "<message type='error'><body>hi</body><error type='cancel'>\
                     <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
            ),
            Urgency::Urgent
        );
        assert_eq!(
            urgency(
                "<message type='error'><composing xmlns='http://jabber.org/protocol/chatstates'/>\
                     <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                     </error></message>"
            ),
            Urgency::Held
        );
    }

    #[test]
    fn xep0353_call_signalling_is_urgent() {
        for signal in CALL_SIGNALS {
            let xml = format!(
                "<message type='chat'><{signal} xmlns='urn:xmpp:jingle-message:0' id='c1'/></message>"
            );
            assert_eq!(urgency(&xml), Urgency::Urgent, "{signal}");
        }
        assert_eq!(
            urgency("<message><propose xmlns='urn:xmpp:jingle-message:1' id='c1'/></message>"),
            Urgency::Urgent
        );
        assert_eq!(
            urgency("<message><unknown xmlns='urn:xmpp:jingle-message:0'/></message>"),
            Urgency::Held
        );
    }

    #[test]
    fn xep0333_markers_to_the_user_are_urgent() {
        for marker in MARKERS {
            let xml = format!(
                "<message type='chat'><{marker} xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>"
            );
            assert_eq!(urgency(&xml), Urgency::Urgent, "{marker}");
        }
        // A room occupant's marker is about their reading, not addressed to the user.
        assert_eq!(
            urgency(
                "<message type='groupchat' from='room@muc.example.org/nurse'>\
                 <displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>"
            ),
            Urgency::Held
        );
    }

    #[test]
    fn xep0085_chat_states_xep0184_receipts_and_pep_are_held() {
        assert_eq!(
            urgency(
                "<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
            ),
            Urgency::Held
        );
        assert_eq!(
            urgency("<message><received xmlns='urn:xmpp:receipts' id='r1'/></message>"),
            Urgency::Held
        );
        assert_eq!(
            urgency(
                "<message from='romeo@example.net' type='headline'>\
                     <event xmlns='http://jabber.org/protocol/pubsub#event'>\
                     <items node='urn:xmpp:avatar:metadata'/></event></message>"
            ),
            Urgency::Held
        );
    }

    #[test]
    fn xep0380_encrypted_messages_are_urgent() {
        assert_eq!(
            urgency(
                "<message type='chat'><encryption xmlns='urn:xmpp:eme:0' \
                     namespace='eu.siacs.conversations.axolotl'/></message>"
            ),
            Urgency::Urgent
        );
    }

    #[test]
    fn rfc6121_presence_is_held_but_subscriptions_are_urgent() {
        assert_eq!(
            urgency("<presence from='romeo@example.net/a'/>"),
            Urgency::Held
        );
        assert_eq!(
            urgency("<presence from='romeo@example.net/a' type='unavailable'/>"),
            Urgency::Held
        );
        for t in ["subscribe", "subscribed", "unsubscribe", "unsubscribed"] {
            let xml = format!("<presence from='romeo@example.net' type='{t}'/>");
            assert_eq!(urgency(&xml), Urgency::Urgent, "{t}");
        }
    }

    #[test]
    fn xep0280_carbons_are_classified_by_the_wrapped_message() {
        let body =
            "<message xmlns='jabber:client' to='romeo@example.net'><body>hi</body></message>";
        let state = "<message xmlns='jabber:client'><active xmlns='http://jabber.org/protocol/chatstates'/></message>";
        let marker = "<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' id='m'/></message>";
        assert_eq!(urgency(&sent_carbon(body)), Urgency::Urgent);
        assert_eq!(urgency(&received_carbon(body)), Urgency::Urgent);
        assert_eq!(urgency(&sent_carbon(state)), Urgency::Held);
        assert_eq!(urgency(&received_carbon(state)), Urgency::Held);
        // A contact's marker copied to this device is addressed to the user; the user's own
        // marker from another device is not.
        assert_eq!(urgency(&received_carbon(marker)), Urgency::Urgent);
        assert_eq!(urgency(&sent_carbon(marker)), Urgency::Held);
        // A carbon wrapper without a forwarded message has nothing urgent in it.
        assert_eq!(
            urgency("<message><received xmlns='urn:xmpp:carbons:2'/></message>"),
            Urgency::Held
        );
    }

    #[test]
    fn dedupe_keys_only_for_presence_state_with_a_sender() {
        assert_eq!(
            dedupe_key(&el("<presence from='romeo@example.net/a'/>")).as_deref(),
            Some("presence romeo@example.net/a")
        );
        assert_eq!(
            dedupe_key(&el(
                "<presence from='romeo@example.net/a' type='unavailable'/>"
            ))
            .as_deref(),
            Some("presence romeo@example.net/a")
        );
        assert_eq!(dedupe_key(&el("<presence/>")), None);
        assert_eq!(
            dedupe_key(&el("<presence from='romeo@example.net/a' type='error'/>")),
            None
        );
        assert_eq!(
            dedupe_key(&el("<presence from='romeo@example.net' type='subscribe'/>")),
            None
        );
        assert_eq!(
            dedupe_key(&el(
                "<message from='romeo@example.net/a'><body>x</body></message>"
            )),
            None
        );
    }

    #[test]
    fn xep0352_held_then_urgent_flushes_in_arrival_order() {
        let mut q = CsiQueue::new(100);
        let out = transcript(
            &mut q,
            &[
                ("p-romeo", "<presence from='romeo@example.net/a'/>"),
                (
                    "typing",
                    "<message from='romeo@example.net/a'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
                ),
                ("p-nurse", "<presence from='nurse@example.net/b'/>"),
                (
                    "msg",
                    "<message from='romeo@example.net/a'><body>hi</body></message>",
                ),
                ("p-later", "<presence from='tybalt@example.net/c'/>"),
            ],
        );
        assert_eq!(
            out,
            [
                vec![],
                vec![],
                vec![],
                vec!["p-romeo", "typing", "p-nurse", "msg"],
                vec![],
            ]
        );
        assert_eq!(q.len(), 1);
        // <active/>
        assert_eq!(q.flush(), ["p-later"]);
        assert!(q.is_empty());
    }

    #[test]
    fn xep0352_newer_presence_replaces_older_at_the_newest_position() {
        let mut q = CsiQueue::new(100);
        transcript(
            &mut q,
            &[
                (
                    "romeo-away",
                    "<presence from='romeo@example.net/a'><show>away</show></presence>",
                ),
                ("nurse", "<presence from='nurse@example.net/b'/>"),
                (
                    "romeo-typing",
                    "<message from='romeo@example.net/a'><paused xmlns='http://jabber.org/protocol/chatstates'/></message>",
                ),
                (
                    "romeo-other-resource",
                    "<presence from='romeo@example.net/b'/>",
                ),
                ("romeo-back", "<presence from='romeo@example.net/a'/>"),
                (
                    "romeo-gone",
                    "<presence from='romeo@example.net/a' type='unavailable'/>",
                ),
            ],
        );
        assert_eq!(
            q.flush(),
            [
                "nurse",
                "romeo-typing",
                "romeo-other-resource",
                "romeo-gone"
            ]
        );
    }

    #[test]
    fn xep0352_subscription_request_flushes_and_is_never_deduplicated() {
        let mut q = CsiQueue::new(100);
        let out = transcript(
            &mut q,
            &[
                ("p", "<presence from='romeo@example.net/a'/>"),
                (
                    "sub",
                    "<presence from='romeo@example.net' type='subscribe'/>",
                ),
                (
                    "sub-again",
                    "<presence from='romeo@example.net' type='subscribe'/>",
                ),
            ],
        );
        assert_eq!(out, [vec![], vec!["p", "sub"], vec!["sub-again"]]);
    }

    #[test]
    fn xep0352_cap_flushes_everything_so_memory_stays_bounded() {
        let mut q = CsiQueue::new(3);
        assert!(q.push(Urgency::Held, None, 1).is_empty());
        assert!(q.push(Urgency::Held, None, 2).is_empty());
        assert!(q.push(Urgency::Held, Some("k".into()), 3).is_empty());
        // Replacing a keyed item does not grow the queue, so it does not hit the cap.
        assert!(q.push(Urgency::Held, Some("k".into()), 4).is_empty());
        assert_eq!(q.len(), 3);
        assert_eq!(q.push(Urgency::Held, None, 5), [1, 2, 4, 5]);
        assert!(q.is_empty());
        // A cap of zero holds nothing.
        let mut q = CsiQueue::new(0);
        assert_eq!(q.push(Urgency::Held, None, 1), [1]);
    }

    #[test]
    fn xep0352_urgent_with_nothing_held_goes_out_alone() {
        let mut q: CsiQueue<u8> = CsiQueue::new(10);
        assert_eq!(q.push(Urgency::Urgent, Some("ignored".into()), 7), [7]);
        assert!(q.is_empty());
        assert!(q.flush().is_empty());
    }
}

//! XEP-0280 Message Carbons (namespace `urn:xmpp:carbons:2`): a resource enables carbons for
//! itself, and from then on gets a `<received/>` copy of the messages delivered to its account
//! that went to another resource, and a `<sent/>` copy of the messages its other resources send.
//! Copies are wrapped in XEP-0297 `<forwarded/>` and come from the account's bare JID.
//!
//! Which messages are copied (XEP-0280 "Messages Eligible for Carbons Delivery", with the
//! refinements Prosody uses): type `chat`; type `normal` with a `<body/>` or an IM payload
//! (receipts, chat markers, Jingle message initiation); error bounces from a bare JID (answers
//! to messages sent to a bare JID). Never: `groupchat`, `headline`, private messages from a MUC
//! room, messages carrying `<private xmlns='urn:xmpp:carbons:2'/>` or the XEP-0334 `<no-copy/>`
//! hint, and carbons themselves.

use franca_core::{Flow, IqRequest, IqResult, IqTarget, Module, Server, Session};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{NS_CARBONS, NS_CLIENT, NS_FORWARD, NS_HINTS};
use franca_xml::Element;
use jid::{BareJid, Jid};
use std::sync::Arc;

pub struct Carbons;

const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// Payloads that make a `normal` message without a body part of an IM conversation.
const IM_PAYLOADS: &[&str] = &[
    "urn:xmpp:receipts",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:jingle-message:0",
    "urn:xmpp:jingle-message:1",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Sent,
    Received,
}

impl Direction {
    fn element(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// Whether `message` is copied to the user's other carbons-enabled resources.
fn eligible(message: &Element, direction: Direction, user: &BareJid) -> bool {
    let private =
        message.has_child("private", NS_CARBONS) || message.has_child("no-copy", NS_HINTS);
    let is_carbon =
        message.has_child("sent", NS_CARBONS) || message.has_child("received", NS_CARBONS);
    if private || is_carbon {
        return false;
    }
    if direction == Direction::Received
        && message.has_child("x", NS_MUC_USER)
        && message.attr("to") != Some(user.as_str())
    {
        // A private message from a MUC occupant (sent to a full JID): the room is not a
        // conversation partner the other resources can answer. Invitations to the bare JID are.
        return false;
    }
    match message.attr("type") {
        Some("chat") => true,
        Some("groupchat" | "headline") => false,
        Some("error") => {
            direction == Direction::Received
                && message
                    .attr("from")
                    .and_then(|f| Jid::new(f).ok())
                    .is_some_and(|f| f.resource().is_none())
        }
        // `normal`, absent or unknown (RFC 6121 §5.2.2).
        _ => {
            message.has_child("body", NS_CLIENT)
                || message
                    .elements()
                    .any(|c| IM_PAYLOADS.contains(&c.ns.as_str()))
        }
    }
}

/// The copy of `message` for `to`, from the account's bare JID (XEP-0280 "Receiving Messages",
/// "Sending Messages").
fn carbon(direction: Direction, user: &BareJid, to: &Session, message: &Element) -> Element {
    let mut m = Element::new("message", NS_CLIENT)
        .with_attr("from", user.as_str())
        .with_attr("to", to.jid.as_str());
    if let Some(t) = message.attr("type") {
        m.set_attr("type", t);
    }
    let mut original = message.clone();
    original.ns = NS_CLIENT.to_owned();
    m.with_child(
        Element::new(direction.element(), NS_CARBONS)
            .with_child(Element::new("forwarded", NS_FORWARD).with_child(original)),
    )
}

#[async_trait::async_trait]
impl Module for Carbons {
    fn name(&self) -> &'static str {
        "carbons"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Account, NS_CARBONS)]
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[NS_CARBONS]
    }

    fn bind2_features(&self) -> &'static [&'static str] {
        &[NS_CARBONS]
    }

    /// XEP-0386 §6 / XEP-0280: `<enable xmlns='urn:xmpp:carbons:2'/>` in a Bind2 `<bind/>`
    /// enables carbons for the new session as the IQ below would, with no answer in `<bound/>`.
    async fn bind2_inline(
        &self,
        _server: &Arc<Server>,
        session: &Arc<Session>,
        el: &Element,
    ) -> Option<Element> {
        if el.is("enable", NS_CARBONS) {
            session.presence().carbons = true;
        }
        None
    }

    /// XEP-0280 "Enabling Carbons" / "Disabling Carbons": for the requesting resource itself.
    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        let enable = match req.payload() {
            Some(p) if p.is("enable", NS_CARBONS) => true,
            Some(p) if p.is("disable", NS_CARBONS) => false,
            _ => return Err(StanzaError::new(Cond::BadRequest)),
        };
        if !req.is_set() {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        let session = match req.from.try_as_full() {
            Ok(full) if req.from_self() => server.sessions.get(full),
            _ => None,
        };
        let Some(session) = session else {
            // Only a resource of this account, connected here, can switch its own carbons.
            return Err(StanzaError::new(Cond::NotAllowed));
        };
        session.presence().carbons = enable;
        Ok(None)
    }

    async fn outbound(
        &self,
        server: &Arc<Server>,
        session: &Arc<Session>,
        stanza: &mut Element,
    ) -> Flow {
        if stanza.name != "message" {
            return Flow::Continue;
        }
        let user = session.bare();
        // A message to the user's own account is copied as `received` when it is delivered.
        let to_self = match stanza.attr("to") {
            None => true,
            Some(t) => Jid::new(t).is_ok_and(|t| t.to_bare() == user),
        };
        if to_self || !eligible(stanza, Direction::Sent, &user) {
            return Flow::Continue;
        }
        let targets: Vec<Arc<Session>> = server
            .sessions
            .resources(&user)
            .into_iter()
            .filter(|s| s.id != session.id && s.presence().carbons)
            .collect();
        for s in targets {
            s.send(&carbon(Direction::Sent, &user, &s, stanza));
        }
        Flow::Continue
    }

    async fn inbound(&self, server: &Arc<Server>, to: &BareJid, stanza: &mut Element) -> Flow {
        if stanza.name != "message" {
            return Flow::Continue;
        }
        if !eligible(stanza, Direction::Received, to) {
            // The receiving server removes `<private/>` before delivery ("Avoiding Carbons").
            stanza.remove_child("private", NS_CARBONS);
            return Flow::Continue;
        }
        let resources = server.sessions.resources(to);
        if !resources.iter().any(|s| s.presence().carbons) {
            return Flow::Continue;
        }
        // Who gets the message itself under RFC 6121 §8.5 (as the router will decide): the
        // addressed resource if it is bound, else the highest-priority available resources.
        let addressed = match stanza.attr("to").and_then(|t| Jid::new(t).ok()) {
            Some(j) => match j.try_as_full().ok().and_then(|f| server.sessions.get(f)) {
                Some(s) => vec![s],
                None => server.message_targets(to, false),
            },
            None => server.message_targets(to, false),
        };
        // A message between two resources of the account is not copied back to its sender.
        let sender = stanza.attr("from").map(str::to_owned);
        for s in resources {
            if !s.presence().carbons
                || addressed.iter().any(|a| a.id == s.id)
                || sender.as_deref() == Some(s.jid.as_str())
            {
                continue;
            }
            s.send(&carbon(Direction::Received, to, &s, stanza));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, server};

    async fn carbons_on(client: &mut Client) {
        client
            .send("<iq type='set' id='enable1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            .await;
        client.expect(&format!(
            "<iq type='result' id='enable1' from='{}' to='{}'/>",
            client.session.bare(),
            client.session.jid
        ));
    }

    async fn carbons_server() -> Arc<Server> {
        server(vec![Arc::new(Carbons)]).await
    }

    #[tokio::test]
    async fn xep0280_enabling_and_disabling_carbons() {
        let server = carbons_server().await;
        let mut romeo = Client::online(&server, "romeo@localhost/garden", 0).await;
        carbons_on(&mut romeo).await;
        assert!(romeo.session.presence().carbons);
        // A second enable is not an error ("Handling Multiple Enable/Disable Requests").
        carbons_on(&mut romeo).await;
        romeo
            .send("<iq type='set' id='disable1'><disable xmlns='urn:xmpp:carbons:2'/></iq>")
            .await;
        romeo.expect(
            "<iq type='result' id='disable1' from='romeo@localhost' to='romeo@localhost/garden'/>",
        );
        assert!(!romeo.session.presence().carbons);
    }

    #[tokio::test]
    async fn xep0386_enabled_inline_in_bind2() {
        let server = carbons_server().await;
        let romeo = Client::online(&server, "romeo@localhost/garden", 0).await;
        let module = server
            .modules
            .bind2_handler(NS_CARBONS)
            .expect("carbons offers Bind2");
        let answer = module
            .bind2_inline(&server, &romeo.session, &Element::new("enable", NS_CARBONS))
            .await;
        assert_eq!(answer, None);
        assert!(romeo.session.presence().carbons);
    }

    #[tokio::test]
    async fn xep0280_cannot_enable_for_another_account() {
        let server = carbons_server().await;
        let mut romeo = Client::online(&server, "romeo@localhost/garden", 0).await;
        romeo
            .send("<iq type='set' id='e2' to='juliet@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            .await;
        romeo.expect(
            "<iq type='error' id='e2' from='juliet@localhost' to='romeo@localhost/garden'>
               <error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0280_receiving_messages_to_a_full_jid() {
        let server = carbons_server().await;
        let mut garden = Client::online(&server, "romeo@localhost/garden", 0).await;
        let mut home = Client::online(&server, "romeo@localhost/home", 0).await;
        let mut phone = Client::online(&server, "romeo@localhost/phone", 0).await;
        carbons_on(&mut garden).await;
        carbons_on(&mut home).await;
        let juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send(
                "<message to='romeo@localhost/garden' type='chat' id='m1'>
                   <body>What man art thou?</body><thread>0e3141cd</thread>
                 </message>",
            )
            .await;
        home.expect(
            "<message from='romeo@localhost' to='romeo@localhost/home' type='chat'>
               <received xmlns='urn:xmpp:carbons:2'>
                 <forwarded xmlns='urn:xmpp:forward:0'>
                   <message xmlns='jabber:client' from='juliet@localhost/balcony'
                            to='romeo@localhost/garden' type='chat' id='m1'>
                     <body>What man art thou?</body><thread>0e3141cd</thread>
                   </message>
                 </forwarded>
               </received>
             </message>",
        );
        garden.expect(
            "<message from='juliet@localhost/balcony' to='romeo@localhost/garden' type='chat' id='m1'>
               <body>What man art thou?</body><thread>0e3141cd</thread>
             </message>",
        );
        home.silent();
        garden.silent();
        // Carbons not enabled: nothing.
        phone.silent();
    }

    #[tokio::test]
    async fn xep0280_receiving_messages_to_the_bare_jid_copies_to_lower_priority_resources() {
        let server = carbons_server().await;
        let mut top = Client::online(&server, "romeo@localhost/home", 5).await;
        let mut low = Client::online(&server, "romeo@localhost/garden", 0).await;
        carbons_on(&mut top).await;
        carbons_on(&mut low).await;
        let juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send("<message to='romeo@localhost' id='m2'><body>Hi</body></message>")
            .await;
        top.expect("<message from='juliet@localhost/balcony' to='romeo@localhost' id='m2'><body>Hi</body></message>");
        low.expect(
            "<message from='romeo@localhost' to='romeo@localhost/garden'>
               <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>
                 <message xmlns='jabber:client' from='juliet@localhost/balcony' to='romeo@localhost' id='m2'>
                   <body>Hi</body>
                 </message>
               </forwarded></received>
             </message>",
        );
        top.silent();
        low.silent();
    }

    #[tokio::test]
    async fn xep0280_sending_messages() {
        let server = carbons_server().await;
        let home = Client::online(&server, "romeo@localhost/home", 0).await;
        let mut garden = Client::online(&server, "romeo@localhost/garden", 0).await;
        carbons_on(&mut garden).await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        home.send(
            "<message to='juliet@localhost/balcony' type='chat' id='s1'>
               <body>Neither, fair saint</body>
             </message>",
        )
        .await;
        garden.expect(
            "<message from='romeo@localhost' to='romeo@localhost/garden' type='chat'>
               <sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>
                 <message xmlns='jabber:client' from='romeo@localhost/home'
                          to='juliet@localhost/balcony' type='chat' id='s1'>
                   <body>Neither, fair saint</body>
                 </message>
               </forwarded></sent>
             </message>",
        );
        juliet.expect(
            "<message from='romeo@localhost/home' to='juliet@localhost/balcony' type='chat' id='s1'>
               <body>Neither, fair saint</body>
             </message>",
        );
        // The sender does not get a copy of its own message, even with carbons enabled.
        let mut home = home;
        carbons_on(&mut home).await;
        home.send(
            "<message to='juliet@localhost' type='chat' id='s2'><body>Again</body></message>",
        )
        .await;
        home.silent();
        assert!(
            garden
                .recv()
                .is_some_and(|m| m.has_child("sent", NS_CARBONS))
        );
    }

    #[tokio::test]
    async fn xep0280_avoiding_carbons_with_private_and_no_copy() {
        let server = carbons_server().await;
        let home = Client::online(&server, "romeo@localhost/home", 0).await;
        let mut garden = Client::online(&server, "romeo@localhost/garden", 0).await;
        carbons_on(&mut garden).await;
        let mut balcony = Client::online(&server, "juliet@localhost/balcony", 0).await;
        let mut chamber = Client::online(&server, "juliet@localhost/chamber", 0).await;
        carbons_on(&mut chamber).await;
        home.send(
            "<message to='juliet@localhost/balcony' type='chat' id='p1'>
               <body>Secret</body><private xmlns='urn:xmpp:carbons:2'/>
             </message>",
        )
        .await;
        garden.silent();
        chamber.silent();
        // The receiving server removes <private/>.
        balcony.expect(
            "<message from='romeo@localhost/home' to='juliet@localhost/balcony' type='chat' id='p1'>
               <body>Secret</body>
             </message>",
        );
        home.send(
            "<message to='juliet@localhost/balcony' type='chat' id='p2'>
               <body>Hint</body><no-copy xmlns='urn:xmpp:hints'/>
             </message>",
        )
        .await;
        garden.silent();
        chamber.silent();
        assert!(balcony.recv().is_some());
    }

    #[test]
    fn xep0280_messages_eligible_for_carbons_delivery() {
        use crate::testing::xml;
        let user = BareJid::new("romeo@localhost").expect("jid");
        let cases = [
            (
                "<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
                true,
                true,
            ),
            (
                "<message><body>normal with body</body></message>",
                true,
                true,
            ),
            (
                "<message type='bogus'><body>unknown type is normal</body></message>",
                true,
                true,
            ),
            (
                "<message><received xmlns='urn:xmpp:receipts' id='x'/></message>",
                true,
                true,
            ),
            (
                "<message><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>",
                true,
                true,
            ),
            (
                "<message><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
                false,
                false,
            ),
            (
                "<message type='headline'><body>news</body></message>",
                false,
                false,
            ),
            (
                "<message type='groupchat'><body>all</body></message>",
                false,
                false,
            ),
            (
                "<message type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>",
                false,
                false,
            ),
            (
                "<message type='chat'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>",
                false,
                false,
            ),
            (
                "<message type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>",
                false,
                false,
            ),
            // Bounces of messages sent to a bare JID come from that bare JID.
            (
                "<message type='error' from='juliet@localhost'><body>x</body></message>",
                false,
                true,
            ),
            (
                "<message type='error' from='juliet@localhost/balcony'><body>x</body></message>",
                false,
                false,
            ),
            // MUC private messages are not copied on receipt; MUC invitations to the bare JID are.
            (
                "<message type='chat' to='romeo@localhost/home'><body>psst</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
                true,
                false,
            ),
            (
                "<message to='romeo@localhost'><body>join</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
                true,
                true,
            ),
        ];
        for (stanza, sent, received) in cases {
            let m = xml(stanza);
            assert_eq!(eligible(&m, Direction::Sent, &user), sent, "sent: {stanza}");
            assert_eq!(
                eligible(&m, Direction::Received, &user),
                received,
                "received: {stanza}"
            );
        }
    }

    #[tokio::test]
    async fn xep0280_muc_private_messages_are_not_copied_on_receipt() {
        let server = carbons_server().await;
        let _home = Client::online(&server, "romeo@localhost/home", 0).await;
        let mut garden = Client::online(&server, "romeo@localhost/garden", 0).await;
        carbons_on(&mut garden).await;
        let pm = Element::new("message", NS_CLIENT)
            .with_attr("from", "room@conference.localhost/juliet")
            .with_attr("to", "romeo@localhost/home")
            .with_attr("type", "chat")
            .with_child(Element::new("body", NS_CLIENT).with_text("psst"))
            .with_child(Element::new("x", NS_MUC_USER));
        let mut stanza = pm.clone();
        let flow = Carbons
            .inbound(
                &server,
                &BareJid::new("romeo@localhost").expect("jid"),
                &mut stanza,
            )
            .await;
        assert_eq!(flow, Flow::Continue);
        garden.silent();
    }
}

//! The MUC service end to end on an in-memory server: sessions send stanzas through the router
//! and read their queues. Named after the XEP-0045 sections (and XEP-0410/XEP-0421) they check.
#![allow(clippy::unwrap_used)]

use super::Muc;
use crate::testing::{Client, server_with};
use franca_core::config::RoomCreation;
use franca_core::session::Outbound;
use franca_core::{Config, Module, Server};
use franca_proto::ns::{NS_MUC_USER, NS_OCCUPANT_ID, NS_STANZAS};
use franca_xml::Element;
use std::sync::Arc;

const ROOM: &str = "tea@conference.localhost";

async fn muc_server_with(config: Config) -> Arc<Server> {
    let muc: Arc<dyn Module> = Arc::new(Muc::new(&config));
    let server = server_with(
        config,
        vec![
            Arc::new(crate::presence::Presence),
            muc,
            Arc::new(crate::disco::Disco),
        ],
    )
    .await;
    server.start_modules().await;
    server
}

async fn muc_server() -> Arc<Server> {
    muc_server_with(Config::default()).await
}

/// Everything queued for `c`, parsed.
fn drain(c: &mut Client) -> Vec<Element> {
    let mut out = Vec::new();
    while let Some(e) = c.recv() {
        out.push(e);
    }
    out
}

fn codes(p: &Element) -> Vec<String> {
    p.child("x", NS_MUC_USER)
        .map(|x| {
            x.elements()
                .filter(|s| s.name == "status")
                .filter_map(|s| s.attr("code").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn item<'a>(p: &'a Element, attr: &str) -> Option<&'a str> {
    p.child("x", NS_MUC_USER)?
        .child("item", NS_MUC_USER)?
        .attr(attr)
}

fn error_condition(e: &Element) -> Option<String> {
    let err = e.child("error", &e.ns)?;
    err.elements()
        .find(|c| c.ns == NS_STANZAS && c.name != "text")
        .map(|c| c.name.clone())
}

/// Join `room` as `nick` (with the MUC `<x/>` and `extra` inside it); returns what came back.
async fn join(c: &mut Client, room: &str, nick: &str, extra: &str) -> Vec<Element> {
    c.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>"
    ))
    .await;
    drain(c)
}

/// Juliet creates ROOM as an instant room (§10.1.2) and joins as `juliet`.
async fn instant_room(server: &Arc<Server>) -> Client {
    let mut juliet = Client::online(server, "juliet@localhost/balcony", 0).await;
    let got = join(&mut juliet, ROOM, "juliet", "").await;
    let own = got.iter().find(|p| p.name == "presence").unwrap();
    assert_eq!(codes(own), ["110", "201"], "{own:?}");
    juliet
        .send(&format!(
            "<iq type='set' id='create' to='{ROOM}'>\
               <query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    let answer = juliet.recv().unwrap();
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    juliet.silent();
    juliet
}

async fn configure(c: &mut Client, fields: &[(&str, &str)]) {
    let fields: String = fields
        .iter()
        .map(|(var, v)| format!("<field var='{var}'><value>{v}</value></field>"))
        .collect();
    c.send(&format!(
        "<iq type='set' id='config' to='{ROOM}'>\
           <query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
               {fields}</x></query></iq>"
    ))
    .await;
    let got = drain(c);
    assert!(
        got.iter()
            .any(|e| e.name == "iq" && e.attr("type") == Some("result")),
        "{got:?}"
    );
}

#[tokio::test]
async fn xep0045_7_2_entering_a_room_presence_order_and_status_codes() {
    let server = muc_server().await;
    let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
    let got = join(&mut juliet, ROOM, "juliet", "").await;
    // Own presence (110, 201: a new room), then the (empty) subject.
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].attr("from"), Some("tea@conference.localhost/juliet"));
    assert_eq!(got[0].attr("to"), Some("juliet@localhost/balcony"));
    assert_eq!(item(&got[0], "affiliation"), Some("owner"));
    assert_eq!(item(&got[0], "role"), Some("moderator"));
    assert!(got[0].has_child("occupant-id", NS_OCCUPANT_ID));
    assert_eq!(got[1].name, "message");
    assert!(got[1].has_child("subject", "jabber:client"));

    // §10.1.1: a locked room is not there for anyone else.
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let got = join(&mut romeo, ROOM, "romeo", "").await;
    assert_eq!(error_condition(&got[0]).as_deref(), Some("item-not-found"));

    juliet
        .send(&format!(
            "<iq type='set' id='c' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
               <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));

    let got = join(&mut romeo, ROOM, "romeo", "").await;
    // Juliet first (with her JID: Romeo is no moderator and the room is semi-anonymous, so
    // no JID), then Romeo's own presence, then the subject.
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].attr("from"), Some("tea@conference.localhost/juliet"));
    assert_eq!(item(&got[0], "jid"), None);
    assert_eq!(codes(&got[1]), ["110"]);
    assert_eq!(item(&got[1], "role"), Some("participant"));
    assert_eq!(item(&got[1], "affiliation"), Some("none"));
    // Juliet hears of Romeo, with his real JID (she moderates).
    let heard = drain(&mut juliet);
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(item(&heard[0], "jid"), Some("romeo@localhost/orchard"));
    assert!(codes(&heard[0]).is_empty());
    // XEP-0421: the same occupant id in both views of Romeo.
    let id = |p: &Element| {
        p.child("occupant-id", NS_OCCUPANT_ID)
            .and_then(|o| o.attr("id"))
            .map(str::to_owned)
    };
    assert_eq!(id(&heard[0]), id(&got[1]));
}

#[tokio::test]
async fn xep0045_7_2_9_nickname_conflict_and_bad_nicks() {
    let server = muc_server().await;
    let _juliet = instant_room(&server).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let got = join(&mut romeo, ROOM, "Juliet", "").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].attr("type"), Some("error"));
    assert_eq!(error_condition(&got[0]).as_deref(), Some("conflict"));
    assert_eq!(got[0].attr("from"), Some("tea@conference.localhost/Juliet"));
    let long = "n".repeat(65);
    let got = join(&mut romeo, ROOM, &long, "").await;
    assert_eq!(error_condition(&got[0]).as_deref(), Some("not-acceptable"));
    // A join without a nickname.
    romeo
        .send(&format!(
            "<presence to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    assert_eq!(
        error_condition(&romeo.recv().unwrap()).as_deref(),
        Some("jid-malformed")
    );
}

#[tokio::test]
async fn xep0045_7_4_a_groupchat_message_reaches_everyone_as_the_same_bytes() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    join(&mut romeo, ROOM, "romeo", "").await;
    drain(&mut juliet);
    romeo
        .send(&format!(
            "<message to='{ROOM}' type='groupchat' id='m1'><body>Wherefore?</body>\
               <occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>"
        ))
        .await;
    let raw = |c: &mut Client| match c.next() {
        Some(Outbound::Xml(x)) => x.to_string(),
        Some(Outbound::Fanout(f)) => f.to(c.session.jid.as_str()).to_string(),
        other => panic!("{other:?}"),
    };
    let to_juliet = raw(&mut juliet);
    let to_romeo = raw(&mut romeo);
    // One serialisation: the copies differ only in their addressee.
    assert_eq!(
        to_juliet.replace(" to='juliet@localhost/balcony'", ""),
        to_romeo.replace(" to='romeo@localhost/orchard'", "")
    );
    let m = crate::testing::xml(&to_juliet);
    assert_eq!(m.attr("from"), Some("tea@conference.localhost/romeo"));
    assert_eq!(
        m.attr("id"),
        Some("m1"),
        "the id is kept for the sender's reflection"
    );
    let ids: Vec<_> = m
        .elements()
        .filter(|e| e.is("occupant-id", NS_OCCUPANT_ID))
        .collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0].attr("id"), Some("forged"));
    juliet.silent();
    romeo.silent();

    // Outsiders may not post; a groupchat to one occupant is a bad request.
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    nurse
        .send(&format!(
            "<message to='{ROOM}' type='groupchat'><body>hi</body></message>"
        ))
        .await;
    assert_eq!(
        error_condition(&nurse.recv().unwrap()).as_deref(),
        Some("not-acceptable")
    );
    romeo
        .send(&format!(
            "<message to='{ROOM}/juliet' type='groupchat'><body>x</body></message>"
        ))
        .await;
    assert_eq!(
        error_condition(&romeo.recv().unwrap()).as_deref(),
        Some("bad-request")
    );
}

#[tokio::test]
async fn xep0045_7_5_private_messages_between_occupants() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    join(&mut romeo, ROOM, "romeo", "").await;
    drain(&mut juliet);
    romeo
        .send(&format!(
            "<message to='{ROOM}/juliet' type='chat'><body>psst</body></message>"
        ))
        .await;
    let pm = juliet.recv().unwrap();
    assert_eq!(pm.attr("from"), Some("tea@conference.localhost/romeo"));
    assert_eq!(pm.attr("to"), Some("juliet@localhost/balcony"));
    assert!(pm.has_child("x", NS_MUC_USER));
    romeo
        .send(&format!(
            "<message to='{ROOM}/nobody' type='chat'><body>?</body></message>"
        ))
        .await;
    assert_eq!(
        error_condition(&romeo.recv().unwrap()).as_deref(),
        Some("item-not-found")
    );
}

#[tokio::test]
async fn xep0045_7_3_7_6_nick_change_and_leaving_then_the_temporary_room_goes() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    join(&mut romeo, ROOM, "romeo", "").await;
    drain(&mut juliet);
    romeo
        .send(&format!("<presence to='{ROOM}/montague'/>"))
        .await;
    let seen = drain(&mut juliet);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].attr("type"), Some("unavailable"));
    assert_eq!(codes(&seen[0]), ["303"]);
    assert_eq!(item(&seen[0], "nick"), Some("montague"));
    assert_eq!(
        seen[1].attr("from"),
        Some("tea@conference.localhost/montague")
    );
    let own = drain(&mut romeo);
    assert_eq!(codes(&own[0]), ["110", "303"]);
    assert_eq!(codes(&own[1]), ["110"]);

    romeo
        .send(&format!(
            "<presence type='unavailable' to='{ROOM}/montague'/>"
        ))
        .await;
    let seen = drain(&mut juliet);
    assert_eq!(seen[0].attr("type"), Some("unavailable"));
    assert_eq!(item(&seen[0], "role"), Some("none"));
    assert_eq!(codes(&drain(&mut romeo)[0]), ["110"]);

    juliet
        .send(&format!(
            "<presence type='unavailable' to='{ROOM}/juliet'/>"
        ))
        .await;
    drain(&mut juliet);
    // Temporary and empty: gone, so a join creates it anew.
    let got = join(&mut romeo, ROOM, "romeo", "").await;
    assert_eq!(codes(&got[0]), ["110", "201"]);
}

#[tokio::test]
async fn an_occupant_whose_session_ends_leaves() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    join(&mut romeo, ROOM, "romeo", "").await;
    drain(&mut juliet);
    server.session_closed(&romeo.session).await;
    let seen = drain(&mut juliet);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].attr("type"), Some("unavailable"));
    assert_eq!(seen[0].attr("from"), Some("tea@conference.localhost/romeo"));
    // Nick free again.
    let mut romeo2 = Client::online(&server, "romeo@localhost/phone", 0).await;
    let got = join(&mut romeo2, ROOM, "romeo", "").await;
    assert_eq!(codes(&got[1]), ["110"]);
}

#[tokio::test]
async fn xep0045_8_2_9_1_kick_and_ban_by_the_owner() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    join(&mut romeo, ROOM, "romeo", "").await;
    join(&mut nurse, ROOM, "nurse", "").await;
    drain(&mut juliet);
    drain(&mut romeo);

    // A participant may not kick.
    romeo
        .send(&format!(
            "<iq type='set' id='k0' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item nick='nurse' role='none'/></query></iq>"
        ))
        .await;
    assert_eq!(
        error_condition(&romeo.recv().unwrap()).as_deref(),
        Some("forbidden")
    );

    juliet
        .send(&format!(
            "<iq type='set' id='k1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item nick='nurse' role='none'><reason>Talkative</reason></item></query></iq>"
        ))
        .await;
    let got = drain(&mut juliet);
    assert_eq!(got[0].attr("type"), Some("result"), "{got:?}");
    assert_eq!(codes(&got[1]), ["307"]);
    let kicked = drain(&mut nurse);
    assert_eq!(codes(&kicked[0]), ["110", "307"]);
    let reason = kicked[0]
        .child("x", NS_MUC_USER)
        .and_then(|x| x.child("item", NS_MUC_USER))
        .and_then(|i| i.child("reason", NS_MUC_USER))
        .map(Element::text);
    assert_eq!(reason.as_deref(), Some("Talkative"));
    assert_eq!(codes(&drain(&mut romeo)[0]), ["307"]);
    // Kicked is not banned: she may come back.
    let got = join(&mut nurse, ROOM, "nurse", "").await;
    assert!(got.iter().any(|p| codes(p) == ["110"]), "{got:?}");
    drain(&mut juliet);
    drain(&mut romeo);

    juliet
        .send(&format!(
            "<iq type='set' id='b1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item jid='romeo@localhost' affiliation='outcast'/></query></iq>"
        ))
        .await;
    let got = drain(&mut juliet);
    assert_eq!(got[0].attr("type"), Some("result"));
    assert_eq!(codes(&got[1]), ["301"]);
    assert_eq!(codes(&drain(&mut romeo)[0]), ["110", "301"]);
    let got = join(&mut romeo, ROOM, "romeo", "").await;
    assert_eq!(error_condition(&got[0]).as_deref(), Some("forbidden"));

    // §9.5: the outcast list.
    juliet
        .send(&format!(
            "<iq type='get' id='l1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item affiliation='outcast'/></query></iq>"
        ))
        .await;
    let list = juliet.recv().unwrap();
    let q = list.first_element().unwrap();
    let jids: Vec<_> = q.elements().filter_map(|i| i.attr("jid")).collect();
    assert_eq!(jids, ["romeo@localhost"]);
    // The last owner cannot step down (§10.6).
    juliet
        .send(&format!(
            "<iq type='set' id='o1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item jid='juliet@localhost' affiliation='member'/></query></iq>"
        ))
        .await;
    assert_eq!(
        error_condition(&juliet.recv().unwrap()).as_deref(),
        Some("conflict")
    );
}

#[tokio::test]
async fn xep0045_7_2_7_members_only_and_7_2_6_password_and_7_2_10_max_occupants() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    configure(&mut juliet, &[("muc#roomconfig_membersonly", "1")]).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let got = join(&mut romeo, ROOM, "romeo", "").await;
    assert_eq!(
        error_condition(&got[0]).as_deref(),
        Some("registration-required")
    );
    juliet
        .send(&format!(
            "<iq type='set' id='m' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item jid='romeo@localhost' affiliation='member'/></query></iq>"
        ))
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    let got = join(&mut romeo, ROOM, "romeo", "").await;
    assert_eq!(item(&got[1], "affiliation"), Some("member"));
    drain(&mut juliet);

    configure(
        &mut juliet,
        &[
            ("muc#roomconfig_membersonly", "0"),
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "cauldron"),
            ("muc#roomconfig_maxusers", "3"),
        ],
    )
    .await;
    // Occupants hear of the change (104).
    assert_eq!(codes(&drain(&mut romeo)[0]), ["104"]);
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    let got = join(&mut nurse, ROOM, "nurse", "").await;
    assert_eq!(error_condition(&got[0]).as_deref(), Some("not-authorized"));
    let got = join(&mut nurse, ROOM, "nurse", "<password>cauldron</password>").await;
    assert!(got.iter().any(|p| codes(p) == ["110"]), "{got:?}");
    let mut benvolio = Client::online(&server, "benvolio@localhost/street", 0).await;
    let got = join(&mut benvolio, ROOM, "ben", "<password>cauldron</password>").await;
    assert_eq!(
        error_condition(&got[0]).as_deref(),
        Some("service-unavailable")
    );
}

#[tokio::test]
async fn xep0045_7_2_15_history_on_join_with_maxstanzas() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    for n in 1..=4 {
        juliet
            .send(&format!(
                "<message to='{ROOM}' type='groupchat'><body>m{n}</body></message>"
            ))
            .await;
    }
    drain(&mut juliet);
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let got = join(&mut romeo, ROOM, "romeo", "<history maxstanzas='2'/>").await;
    let bodies: Vec<String> = got
        .iter()
        .filter_map(|m| m.child("body", "jabber:client").map(Element::text))
        .collect();
    assert_eq!(bodies, ["m3", "m4"]);
    let history = got
        .iter()
        .find(|m| m.has_child("body", "jabber:client"))
        .unwrap();
    assert!(history.has_child("delay", "urn:xmpp:delay"));
    assert_eq!(history.attr("to"), Some("romeo@localhost/orchard"));
    // The subject comes last.
    assert!(got.last().unwrap().has_child("subject", "jabber:client"));
}

#[tokio::test]
async fn xep0045_8_1_subject_changes() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    join(&mut romeo, ROOM, "romeo", "").await;
    drain(&mut juliet);
    romeo
        .send(&format!(
            "<message to='{ROOM}' type='groupchat'><subject>Mine</subject></message>"
        ))
        .await;
    assert_eq!(
        error_condition(&romeo.recv().unwrap()).as_deref(),
        Some("forbidden")
    );
    juliet
        .send(&format!(
            "<message to='{ROOM}' type='groupchat'><subject>Fair Verona</subject></message>"
        ))
        .await;
    let s = romeo.recv().unwrap();
    assert_eq!(
        s.child("subject", "jabber:client")
            .map(Element::text)
            .as_deref(),
        Some("Fair Verona")
    );
    drain(&mut juliet);
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    let got = join(&mut nurse, ROOM, "nurse", "").await;
    let last = got.last().unwrap();
    assert_eq!(last.attr("from"), Some("tea@conference.localhost/juliet"));
    assert_eq!(
        last.child("subject", "jabber:client")
            .map(Element::text)
            .as_deref(),
        Some("Fair Verona")
    );
}

#[tokio::test]
async fn xep0045_8_3_voice_in_a_moderated_room() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    configure(&mut juliet, &[("muc#roomconfig_moderatedroom", "1")]).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let got = join(&mut romeo, ROOM, "romeo", "").await;
    assert_eq!(item(&got[1], "role"), Some("visitor"));
    romeo
        .send(&format!(
            "<message to='{ROOM}' type='groupchat'><body>hi</body></message>"
        ))
        .await;
    assert_eq!(
        error_condition(&romeo.recv().unwrap()).as_deref(),
        Some("forbidden")
    );
    drain(&mut juliet);
    juliet
        .send(&format!(
            "<iq type='set' id='v' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item nick='romeo' role='participant'/></query></iq>"
        ))
        .await;
    drain(&mut juliet);
    let own = romeo.recv().unwrap();
    assert_eq!(item(&own, "role"), Some("participant"));
    romeo
        .send(&format!(
            "<message to='{ROOM}' type='groupchat'><body>hi</body></message>"
        ))
        .await;
    assert_eq!(
        juliet
            .recv()
            .unwrap()
            .child("body", "jabber:client")
            .map(Element::text)
            .as_deref(),
        Some("hi")
    );
}

#[tokio::test]
async fn xep0410_self_ping() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    juliet
        .send(&format!(
            "<iq type='get' id='sp' to='{ROOM}/juliet'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    let r = juliet.recv().unwrap();
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(r.attr("from"), Some("tea@conference.localhost/juliet"));
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    romeo
        .send(&format!(
            "<iq type='get' id='sp' to='{ROOM}/romeo'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(
        error_condition(&romeo.recv().unwrap()).as_deref(),
        Some("not-acceptable")
    );
}

#[tokio::test]
async fn xep0045_7_8_2_mediated_invitation_in_a_members_only_room() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    configure(&mut juliet, &[("muc#roomconfig_membersonly", "1")]).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    juliet
        .send(&format!(
            "<message to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'>\
               <invite to='romeo@localhost'><reason>Tea?</reason></invite></x></message>"
        ))
        .await;
    let inv = romeo.recv().unwrap();
    assert_eq!(inv.attr("from"), Some(ROOM));
    let i = inv
        .child("x", NS_MUC_USER)
        .and_then(|x| x.child("invite", NS_MUC_USER))
        .unwrap();
    assert_eq!(i.attr("from"), Some("juliet@localhost/balcony"));
    // The invitee became a member, so the door is open.
    let got = join(&mut romeo, ROOM, "romeo", "").await;
    assert_eq!(item(&got[1], "affiliation"), Some("member"));
}

#[tokio::test]
async fn xep0030_the_server_lists_the_service_which_lists_public_rooms() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    juliet
        .send("<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    juliet.expect(
        "<iq type='result' id='i' from='localhost' to='juliet@localhost/balcony'>
           <query xmlns='http://jabber.org/protocol/disco#items'>
             <item jid='conference.localhost' name='Chatrooms'/>
           </query></iq>",
    );
    juliet
        .send("<iq type='get' id='s' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let info = juliet.recv().unwrap();
    let q = info.first_element().unwrap();
    assert_eq!(
        q.elements().next().and_then(|i| i.attr("category")),
        Some("conference")
    );
    assert!(
        q.elements()
            .any(|f| f.attr("var") == Some("http://jabber.org/protocol/muc"))
    );
    configure(&mut juliet, &[("muc#roomconfig_roomname", "Tea Room")]).await;
    juliet
        .send("<iq type='get' id='r' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    juliet.expect(
        "<iq type='result' id='r' from='conference.localhost' to='juliet@localhost/balcony'>
           <query xmlns='http://jabber.org/protocol/disco#items'>
             <item jid='tea@conference.localhost' name='Tea Room'/>
           </query></iq>",
    );
    juliet
        .send(&format!("<iq type='get' id='ri' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"))
        .await;
    let info = juliet.recv().unwrap();
    let vars: Vec<_> = info
        .first_element()
        .unwrap()
        .elements()
        .filter_map(|f| f.attr("var"))
        .collect();
    for f in [
        "muc_temporary",
        "muc_public",
        "muc_open",
        "muc_unmoderated",
        "muc_semianonymous",
        "muc_unsecured",
        "urn:xmpp:occupant-id:0",
    ] {
        assert!(vars.contains(&f), "{f} in {vars:?}");
    }
    // Hidden rooms are not listed.
    configure(&mut juliet, &[("muc#roomconfig_publicroom", "0")]).await;
    juliet
        .send("<iq type='get' id='r2' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    juliet.expect(
        "<iq type='result' id='r2' from='conference.localhost' to='juliet@localhost/balcony'>
           <query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
}

#[tokio::test]
async fn room_creation_follows_the_create_setting() {
    let mut config = Config::default();
    config.muc.create = RoomCreation::Admins;
    config.server.admins = vec!["nurse@localhost".into()];
    let server = muc_server_with(config).await;
    let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
    let got = join(&mut juliet, ROOM, "juliet", "").await;
    assert_eq!(error_condition(&got[0]).as_deref(), Some("not-allowed"));
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    let got = join(&mut nurse, ROOM, "nurse", "").await;
    assert_eq!(codes(&got[0]), ["110", "201"]);
}

#[tokio::test]
async fn xep0045_10_9_destroying_a_room() {
    let server = muc_server().await;
    let mut juliet = instant_room(&server).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    join(&mut romeo, ROOM, "romeo", "").await;
    drain(&mut juliet);
    juliet
        .send(&format!(
            "<iq type='set' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
               <destroy jid='coffee@conference.localhost'><reason>Moved</reason></destroy></query></iq>"
        ))
        .await;
    let got = drain(&mut juliet);
    assert_eq!(got[0].attr("type"), Some("result"), "{got:?}");
    let gone = drain(&mut romeo);
    assert_eq!(gone[0].attr("type"), Some("unavailable"));
    let d = gone[0]
        .child("x", NS_MUC_USER)
        .and_then(|x| x.child("destroy", NS_MUC_USER))
        .unwrap();
    assert_eq!(d.attr("jid"), Some("coffee@conference.localhost"));
    romeo
        .send(&format!(
            "<message to='{ROOM}' type='groupchat'><body>?</body></message>"
        ))
        .await;
    assert_eq!(
        error_condition(&romeo.recv().unwrap()).as_deref(),
        Some("item-not-found")
    );
}

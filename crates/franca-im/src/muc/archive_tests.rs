//! Room archives end to end on an in-memory server (XEP-0313 §5.1.2 with XEP-0045 and
//! XEP-0359): what is archived and how it is stamped, who may query, what they see, the
//! room's own retention and what happens to the archive when the room goes.
#![allow(clippy::unwrap_used)]

use super::{Muc, expire_room_archives};
use crate::testing::{Client, server_with};
use franca_core::util::now_us;
use franca_core::{Config, Server};
use franca_proto::ns::{NS_MUC_USER, NS_STANZA_ID, NS_STANZAS};
use franca_store::ArchiveQuery;
use franca_xml::Element;
use std::sync::Arc;

pub(super) const ROOM: &str = "tea@conference.localhost";
const NS_MAM: &str = "urn:xmpp:mam:2";

pub(super) async fn archive_server(config: Config) -> (Arc<Server>, Arc<Muc>) {
    let muc = Arc::new(Muc::new(&config));
    let server = server_with(
        config,
        vec![
            Arc::new(crate::presence::Presence),
            muc.clone(),
            Arc::new(crate::disco::Disco),
        ],
    )
    .await;
    server.start_modules().await;
    (server, muc)
}

pub(super) fn drain(c: &mut Client) -> Vec<Element> {
    let mut out = Vec::new();
    while let Some(e) = c.recv() {
        out.push(e);
    }
    out
}

pub(super) fn error_condition(e: &Element) -> Option<String> {
    let err = e.child("error", &e.ns)?;
    err.elements()
        .find(|c| c.ns == NS_STANZAS && c.name != "text")
        .map(|c| c.name.clone())
}

pub(super) async fn join(c: &mut Client, nick: &str) -> Vec<Element> {
    c.send(&format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    drain(c)
}

/// Juliet creates ROOM, configured with `fields`, and stays in it as `juliet`.
pub(super) async fn room(server: &Arc<Server>, fields: &[(&str, &str)]) -> Client {
    let mut juliet = Client::online(server, "juliet@localhost/balcony", 0).await;
    join(&mut juliet, "juliet").await;
    let fields: String = fields
        .iter()
        .map(|(var, v)| format!("<field var='{var}'><value>{v}</value></field>"))
        .collect();
    juliet
        .send(&format!(
            "<iq type='set' id='config' to='{ROOM}'>\
               <query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'>{fields}</x></query></iq>"
        ))
        .await;
    let answer = juliet.recv().unwrap();
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    drain(&mut juliet);
    juliet
}

async fn say(c: &mut Client, body: &str, extra: &str) -> Element {
    c.send(&format!(
        "<message to='{ROOM}' type='groupchat'><body>{body}</body>{extra}</message>"
    ))
    .await;
    c.recv().unwrap()
}

fn stanza_ids(m: &Element) -> Vec<(String, String)> {
    m.elements()
        .filter(|e| e.is("stanza-id", NS_STANZA_ID))
        .map(|e| {
            (
                e.attr("by").unwrap_or_default().to_owned(),
                e.attr("id").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Query ROOM's archive as `c` with `inner` in the `<query/>`: the result messages and the
/// IQ answer.
async fn query(c: &mut Client, inner: &str) -> (Vec<Element>, Element) {
    c.send(&format!(
        "<iq type='set' id='q' to='{ROOM}'><query xmlns='{NS_MAM}' queryid='f1'>{inner}</query></iq>"
    ))
    .await;
    let mut got = drain(c);
    let answer = got.pop().unwrap();
    assert_eq!(answer.name, "iq", "{answer:?}");
    (got, answer)
}

/// The archived message inside a result.
fn forwarded(result: &Element) -> &Element {
    result
        .child("result", NS_MAM)
        .and_then(|r| r.child("forwarded", "urn:xmpp:forward:0"))
        .and_then(|f| f.child("message", "jabber:client"))
        .unwrap()
}

fn real_jid(m: &Element) -> Option<&str> {
    m.child("x", NS_MUC_USER)?
        .child("item", NS_MUC_USER)?
        .attr("jid")
}

#[tokio::test]
async fn xep0313_5_1_2_groupchat_is_archived_once_under_the_rooms_stanza_id() {
    let (server, _muc) = archive_server(Config::default()).await;
    let mut juliet = room(&server, &[]).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    join(&mut romeo, "romeo").await;
    drain(&mut juliet);

    // A stanza-id claiming to be the room's is a forgery and goes (XEP-0359 §5).
    let to_romeo = say(
        &mut romeo,
        "Wherefore?",
        &format!("<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='forged'/>"),
    )
    .await;
    let to_juliet = juliet.recv().unwrap();
    let ids = stanza_ids(&to_romeo);
    assert_eq!(ids.len(), 1, "{to_romeo:?}");
    assert_eq!(ids[0].0, ROOM);
    assert_ne!(ids[0].1, "forged");
    assert_eq!(
        stanza_ids(&to_juliet),
        ids,
        "every occupant gets the same id"
    );

    // Neither a subject change alone nor a private message is archived.
    juliet
        .send(&format!(
            "<message to='{ROOM}' type='groupchat'><subject>Tea</subject></message>"
        ))
        .await;
    let subject = juliet.recv().unwrap();
    assert!(stanza_ids(&subject).is_empty(), "{subject:?}");
    drain(&mut romeo);
    romeo
        .send(&format!(
            "<message to='{ROOM}/juliet' type='chat'><body>psst</body></message>"
        ))
        .await;
    drain(&mut juliet);

    let stored = server
        .store
        .archive_query(ROOM, &ArchiveQuery::default())
        .await
        .unwrap();
    assert_eq!(stored.count, 1, "one row per room message");

    // Juliet owns the room: she sees Romeo's real JID; the archived message is as the room
    // sent it, from the occupant JID, under the id the occupants saw.
    let (results, fin) = query(&mut juliet, "").await;
    assert_eq!(fin.attr("type"), Some("result"), "{fin:?}");
    assert_eq!(results.len(), 1, "{results:?}");
    let r = results[0].child("result", NS_MAM).unwrap();
    assert_eq!(r.attr("id"), Some(ids[0].1.as_str()));
    assert_eq!(r.attr("queryid"), Some("f1"));
    assert_eq!(results[0].attr("from"), Some(ROOM));
    let m = forwarded(&results[0]);
    assert_eq!(m.attr("from"), Some("tea@conference.localhost/romeo"));
    assert_eq!(m.attr("type"), Some("groupchat"));
    assert_eq!(real_jid(m), Some("romeo@localhost"));
    let fin = fin.child("fin", NS_MAM).unwrap();
    assert_eq!(fin.attr("complete"), Some("true"));

    // Romeo is no moderator in a semi-anonymous room: no real JIDs for him.
    let (results, _) = query(&mut romeo, "").await;
    assert_eq!(results.len(), 1);
    assert_eq!(real_jid(forwarded(&results[0])), None);

    // Filtering by occupant JID (a nickname), as given.
    let with = |jid: &str| {
        format!(
            "<x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE'><value>{NS_MAM}</value></field>\
               <field var='with'><value>{jid}</value></field></x>"
        )
    };
    let (results, _) = query(&mut romeo, &with(&format!("{ROOM}/romeo"))).await;
    assert_eq!(results.len(), 1);
    let (results, _) = query(&mut romeo, &with(&format!("{ROOM}/juliet"))).await;
    assert!(results.is_empty());

    // The form (XEP-0313 §4.1.5) for anyone who may query.
    romeo
        .send(&format!(
            "<iq type='get' id='form' to='{ROOM}'><query xmlns='{NS_MAM}'/></iq>"
        ))
        .await;
    let form = romeo.recv().unwrap();
    assert_eq!(form.attr("type"), Some("result"));
    assert!(form.child("query", NS_MAM).is_some());
}

#[tokio::test]
async fn xep0313_5_1_2_non_anonymous_rooms_show_everyone_the_real_jids() {
    let (server, _muc) = archive_server(Config::default()).await;
    let mut juliet = room(&server, &[("muc#roomconfig_whois", "anyone")]).await;
    say(&mut juliet, "Hi", "").await;
    // Nurse is not in the room: anyone who may join may read an open room's archive.
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    let (results, _) = query(&mut nurse, "").await;
    assert_eq!(results.len(), 1);
    assert_eq!(real_jid(forwarded(&results[0])), Some("juliet@localhost"));
}

#[tokio::test]
async fn xep0313_who_may_query_a_rooms_archive() {
    let (server, _muc) = archive_server(Config::default()).await;
    let mut juliet = room(&server, &[("muc#roomconfig_membersonly", "1")]).await;
    say(&mut juliet, "members only", "").await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let (results, answer) = query(&mut romeo, "").await;
    assert!(results.is_empty());
    assert_eq!(answer.attr("type"), Some("error"));
    assert_eq!(error_condition(&answer).as_deref(), Some("forbidden"));
    juliet
        .send(&format!(
            "<iq type='set' id='m' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item jid='romeo@localhost' affiliation='member'/>\
               <item jid='tybalt@localhost' affiliation='outcast'/></query></iq>"
        ))
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    // A member may, without being in the room.
    let (results, answer) = query(&mut romeo, "").await;
    assert_eq!(answer.attr("type"), Some("result"));
    assert_eq!(results.len(), 1);
    let mut tybalt = Client::online(&server, "tybalt@localhost/street", 0).await;
    let (_, answer) = query(&mut tybalt, "").await;
    assert_eq!(error_condition(&answer).as_deref(), Some("forbidden"));

    // A password-protected open room: only those inside (or members) may read.
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    juliet
        .send(&format!(
            "<iq type='set' id='c' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
               <x xmlns='jabber:x:data' type='submit'>\
               <field var='muc#roomconfig_membersonly'><value>0</value></field>\
               <field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>\
               <field var='muc#roomconfig_roomsecret'><value>pw</value></field></x></query></iq>"
        ))
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    let (_, answer) = query(&mut nurse, "").await;
    assert_eq!(error_condition(&answer).as_deref(), Some("forbidden"));
    nurse
        .send(&format!(
            "<presence to='{ROOM}/nurse'><x xmlns='http://jabber.org/protocol/muc'>\
               <password>pw</password></x></presence>"
        ))
        .await;
    drain(&mut nurse);
    let (results, answer) = query(&mut nurse, "").await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    assert_eq!(results.len(), 1);

    // A room that does not exist has no archive to read.
    nurse
        .send(&format!(
            "<iq type='set' id='q' to='nowhere@conference.localhost'>\
               <query xmlns='{NS_MAM}'/></iq>"
        ))
        .await;
    assert_eq!(
        error_condition(&nurse.recv().unwrap()).as_deref(),
        Some("item-not-found")
    );
}

#[tokio::test]
async fn xep0313_archiving_is_a_room_setting_shown_in_disco() {
    let (server, _muc) = archive_server(Config::default()).await;
    let mut juliet = room(&server, &[]).await;
    let features = |c: &mut Client| {
        let info = c.recv().unwrap();
        let q = info
            .child("query", "http://jabber.org/protocol/disco#info")
            .unwrap();
        q.elements()
            .filter_map(|f| f.attr("var").map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let disco = format!(
        "<iq type='get' id='d' to='{ROOM}'>\
           <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    );
    juliet.send(&disco).await;
    let on = features(&mut juliet);
    assert!(on.iter().any(|f| f == NS_MAM), "{on:?}");
    assert!(on.iter().any(|f| f == NS_STANZA_ID), "{on:?}");

    // The owner form offers the fields; turning archiving off (Prosody's field name works
    // too) drops the feature, the stanza-ids and the queries.
    juliet
        .send(&format!(
            "<iq type='get' id='f' to='{ROOM}'>\
               <query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"
        ))
        .await;
    let form = juliet.recv().unwrap().to_xml();
    assert!(form.contains("muc#roomconfig_enablearchiving"), "{form}");
    assert!(form.contains("franca#archive_retention_days"), "{form}");
    juliet
        .send(&format!(
            "<iq type='set' id='c' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
               <x xmlns='jabber:x:data' type='submit'>\
               <field var='{{urn:xmpp:mam:0}}archive_enabled'><value>0</value></field>\
               </x></query></iq>"
        ))
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    drain(&mut juliet);
    juliet.send(&disco).await;
    let off = features(&mut juliet);
    assert!(!off.iter().any(|f| f == NS_MAM), "{off:?}");
    let m = say(&mut juliet, "unarchived", "").await;
    assert!(stanza_ids(&m).is_empty());
    let (_, answer) = query(&mut juliet, "").await;
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("service-unavailable")
    );

    // `[muc] archive = false`: no room archives at all, and no field in the form.
    let mut config = Config::default();
    config.muc.archive = false;
    let (server, _muc) = archive_server(config).await;
    let mut juliet = room(&server, &[]).await;
    let m = say(&mut juliet, "hi", "").await;
    assert!(stanza_ids(&m).is_empty());
    juliet
        .send(&format!(
            "<iq type='get' id='f' to='{ROOM}'>\
               <query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"
        ))
        .await;
    let form = juliet.recv().unwrap().to_xml();
    assert!(!form.contains("muc#roomconfig_enablearchiving"), "{form}");
}

#[tokio::test]
async fn hostile_an_absurd_max_is_capped_by_the_servers_page() {
    let mut config = Config::default();
    config.mam.max_page = 2;
    let (server, _muc) = archive_server(config).await;
    let mut juliet = room(&server, &[]).await;
    for n in 0..3 {
        say(&mut juliet, &format!("m{n}"), "").await;
    }
    let (results, answer) = query(
        &mut juliet,
        "<set xmlns='http://jabber.org/protocol/rsm'><max>1000000000</max></set>",
    )
    .await;
    assert_eq!(results.len(), 2);
    let fin = answer.child("fin", NS_MAM).unwrap();
    assert_eq!(fin.attr("complete"), Some("false"));
    let (_, answer) = query(
        &mut juliet,
        "<set xmlns='http://jabber.org/protocol/rsm'><max>many</max></set>",
    )
    .await;
    assert_eq!(error_condition(&answer).as_deref(), Some("bad-request"));
}

#[tokio::test]
async fn a_rooms_own_retention_is_bounded_by_the_server_and_applied_hourly() {
    let mut config = Config::default();
    config.mam.retention_days = 30;
    let (server, muc) = archive_server(config).await;
    let mut juliet = room(&server, &[("muc#roomconfig_persistentroom", "1")]).await;
    // More than the server keeps is refused; less is the room's own.
    juliet
        .send(&format!(
            "<iq type='set' id='c' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
               <x xmlns='jabber:x:data' type='submit'>\
               <field var='franca#archive_retention_days'><value>31</value></field>\
               </x></query></iq>"
        ))
        .await;
    assert_eq!(
        error_condition(&juliet.recv().unwrap()).as_deref(),
        Some("not-acceptable")
    );
    juliet
        .send(&format!(
            "<iq type='set' id='c' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
               <x xmlns='jabber:x:data' type='submit'>\
               <field var='franca#archive_retention_days'><value>7</value></field>\
               </x></query></iq>"
        ))
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    drain(&mut juliet);
    say(&mut juliet, "recent", "").await;

    let day_us = 86_400_000_000;
    let other = "other@conference.localhost";
    let old = |owner: &str, days_ago: i64| {
        let stamp_us = now_us() - days_ago * day_us;
        franca_store::ArchivedMessage {
            owner: owner.to_owned(),
            id: crate::mam::id::new(stamp_us),
            stamp_us,
            with: format!("{owner}/x"),
            outgoing: false,
            xml: "<message type='groupchat'><body>old</body></message>".into(),
        }
    };
    server
        .store
        .archive_messages(&[old(ROOM, 8), old(ROOM, 6), old(other, 8)])
        .await
        .unwrap();
    let removed = expire_room_archives(&server, &muc.services, now_us()).await;
    assert_eq!(removed, 1, "only the room's message older than its 7 days");
    let count = |owner: &'static str| {
        let server = server.clone();
        async move {
            server
                .store
                .archive_query(owner, &ArchiveQuery::default())
                .await
                .unwrap()
                .count
        }
    };
    assert_eq!(count(ROOM).await, 2);
    assert_eq!(count("other@conference.localhost").await, 1);
}

#[tokio::test]
async fn xep0045_10_9_destroying_a_room_removes_its_archive() {
    let (server, _muc) = archive_server(Config::default()).await;
    let mut juliet = room(&server, &[("muc#roomconfig_persistentroom", "1")]).await;
    say(&mut juliet, "soon gone", "").await;
    let count = || async {
        server
            .store
            .archive_query(ROOM, &ArchiveQuery::default())
            .await
            .unwrap()
            .count
    };
    assert_eq!(count().await, 1);
    juliet
        .send(&format!(
            "<iq type='set' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
               <destroy/></query></iq>"
        ))
        .await;
    drain(&mut juliet);
    assert_eq!(count().await, 0);

    // A temporary room that ends takes its archive with it.
    let mut juliet = room(&server, &[]).await;
    say(&mut juliet, "fleeting", "").await;
    assert_eq!(count().await, 1);
    juliet
        .send(&format!(
            "<presence to='{ROOM}/juliet' type='unavailable'/>"
        ))
        .await;
    drain(&mut juliet);
    assert_eq!(count().await, 0);
}

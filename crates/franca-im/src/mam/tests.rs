//! The module on an in-memory server: archiving on routing, stanza-ids, queries, preferences
//! and the offline path.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::offline::Offline;
use crate::testing::{Client, server, server_with};
use franca_core::Config;
use franca_proto::ns::NS_RSM;
use franca_store::ArchiveQuery;

fn mam() -> Vec<Arc<dyn Module>> {
    vec![Arc::new(Mam::new()), Arc::new(Offline)]
}

async fn archive(server: &Server, owner: &str) -> Vec<ArchivedMessage> {
    let q = ArchiveQuery {
        max: 100,
        ..ArchiveQuery::default()
    };
    server
        .store
        .archive_query(owner, &q)
        .await
        .unwrap()
        .messages
}

fn stanza_id_of(m: &Element) -> Option<String> {
    m.child("stanza-id", NS_STANZA_ID)
        .filter(|s| s.attr("by").is_some())
        .and_then(|s| s.attr("id"))
        .map(str::to_owned)
}

#[tokio::test]
async fn xep0313_5_1_1_both_sides_are_archived_and_the_recipient_gets_the_stanza_id() {
    let server = server(mam()).await;
    let juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    juliet
        .send(
            "<message to='romeo@localhost' type='chat' id='m1'><body>Art thou not Romeo?</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='romeo@localhost' id='forged'/></message>",
        )
        .await;
    let got = romeo.recv().unwrap();
    let sid = stanza_id_of(&got).unwrap();
    assert_ne!(sid, "forged");
    assert!(id::is_valid(&sid));
    let sids: Vec<_> = got
        .elements()
        .filter(|e| e.is("stanza-id", NS_STANZA_ID))
        .collect();
    assert_eq!(sids.len(), 1, "the forged stanza-id is gone");

    let theirs = archive(&server, "romeo@localhost").await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].id, sid);
    assert_eq!(theirs[0].with, "juliet@localhost");
    assert!(!theirs[0].outgoing);
    let mine = archive(&server, "juliet@localhost").await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].with, "romeo@localhost");
    assert!(mine[0].outgoing);
    assert!(mine[0].xml.contains("Art thou not Romeo?"));

    // Chat states alone and errors are not archived.
    juliet
        .send(
            "<message to='romeo@localhost' type='chat'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        )
        .await;
    let got = romeo.recv().unwrap();
    assert!(stanza_id_of(&got).is_none());
    assert_eq!(archive(&server, "romeo@localhost").await.len(), 1);
    assert_eq!(archive(&server, "juliet@localhost").await.len(), 1);
}

#[tokio::test]
async fn offline_messages_are_archived_once() {
    let server = server(mam()).await;
    let juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
    juliet
        .send("<message to='romeo@localhost' type='chat'><body>Wherefore</body></message>")
        .await;
    let stored = archive(&server, "romeo@localhost").await;
    assert_eq!(stored.len(), 1);
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let got = romeo.recv().unwrap();
    assert!(got.has_child("delay", franca_proto::ns::NS_DELAY));
    assert_eq!(stanza_id_of(&got).as_deref(), Some(stored[0].id.as_str()));
    assert_eq!(archive(&server, "romeo@localhost").await, stored);
}

async fn iq(client: &mut Client, body: &str) -> Vec<Element> {
    client
        .send(&format!("<iq type='set' id='q'>{body}</iq>"))
        .await;
    std::iter::from_fn(|| client.recv()).collect()
}

#[tokio::test]
async fn xep0313_4_query_pages_both_ways() {
    let server = server(mam()).await;
    let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
    let romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    for i in 0..5 {
        romeo
            .send(&format!(
                "<message to='juliet@localhost' type='chat'><body>{i}</body></message>"
            ))
            .await;
    }
    let seen: Vec<String> = std::iter::from_fn(|| juliet.recv())
        .map(|m| stanza_id_of(&m).unwrap())
        .collect();
    assert_eq!(seen.len(), 5);

    let out = iq(
        &mut juliet,
        "<query xmlns='urn:xmpp:mam:2' queryid='f'><set xmlns='http://jabber.org/protocol/rsm'>\
         <max>2</max><before/></set></query>",
    )
    .await;
    assert_eq!(out.len(), 3);
    let ids: Vec<&str> = out[..2]
        .iter()
        .map(|m| m.child("result", NS_MAM).unwrap().attr("id").unwrap())
        .collect();
    assert_eq!(ids, [seen[3].as_str(), seen[4].as_str()]);
    let fin = out[2].child("fin", NS_MAM).unwrap();
    assert_eq!(fin.attr("complete"), Some("false"));
    let set = fin.child("set", NS_RSM).unwrap();
    assert_eq!(set.child("count", NS_RSM).unwrap().text(), "5");
    assert_eq!(set.child("first", NS_RSM).unwrap().text(), seen[3]);

    let out = iq(
        &mut juliet,
        &format!(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
             <max>10</max><after>{}</after></set></query>",
            seen[1]
        ),
    )
    .await;
    assert_eq!(out.len(), 4);
    let fin = out[3].child("fin", NS_MAM).unwrap();
    assert_eq!(fin.attr("complete"), Some("true"));

    // A cursor that is not in the archive.
    let out = iq(
        &mut juliet,
        &format!(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
             <after>{}</after></set></query>",
            id::new(1)
        ),
    )
    .await;
    assert_eq!(out[0].attr("type"), Some("error"));
    assert!(format!("{:?}", out[0]).contains("item-not-found"));
}

#[tokio::test]
async fn xep0313_4_another_accounts_archive_is_forbidden() {
    let server = server(mam()).await;
    let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
    juliet
        .send("<iq type='set' id='q' to='romeo@localhost'><query xmlns='urn:xmpp:mam:2'/></iq>")
        .await;
    let e = juliet.recv().unwrap();
    assert_eq!(e.attr("type"), Some("error"));
    assert!(format!("{e:?}").contains("forbidden"));
}

#[tokio::test]
async fn xep0313_7_prefs_never_stops_archiving() {
    let server = server(mam()).await;
    let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
    let romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let out = iq(
        &mut juliet,
        "<prefs xmlns='urn:xmpp:mam:2' default='always'>\
         <never><jid>romeo@localhost</jid></never></prefs>",
    )
    .await;
    let prefs = out[0].child("prefs", NS_MAM).unwrap();
    assert_eq!(prefs.attr("default"), Some("always"));
    romeo
        .send("<message to='juliet@localhost' type='chat'><body>hi</body></message>")
        .await;
    let got = juliet.recv().unwrap();
    assert!(stanza_id_of(&got).is_none());
    assert!(archive(&server, "juliet@localhost").await.is_empty());
    // Romeo's own archive still keeps what he sent.
    assert_eq!(archive(&server, "romeo@localhost").await.len(), 1);
}

#[tokio::test]
async fn server_default_roster_archives_only_contacts() {
    let mut config = Config::default();
    config.mam.default = franca_core::config::MamDefault::Roster;
    let server = server_with(config, mam()).await;
    let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
    let nurse = Client::online(&server, "nurse@localhost/n", 0).await;
    nurse
        .send("<message to='juliet@localhost' type='chat'><body>hi</body></message>")
        .await;
    juliet.recv().unwrap();
    assert!(archive(&server, "juliet@localhost").await.is_empty());
    server
        .store
        .put_roster_item(
            "juliet@localhost",
            &franca_store::RosterItem {
                jid: "nurse@localhost".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    nurse
        .send("<message to='juliet@localhost' type='chat'><body>again</body></message>")
        .await;
    juliet.recv().unwrap();
    assert_eq!(archive(&server, "juliet@localhost").await.len(), 1);
}

#[tokio::test]
async fn expiry_deletes_old_messages_in_batches() {
    let server = server(mam()).await;
    let old: Vec<ArchivedMessage> = (0..2500)
        .map(|i| ArchivedMessage {
            owner: "juliet@localhost".into(),
            id: id::new(1000 + i),
            stamp_us: 1000 + i,
            with: "romeo@localhost".into(),
            outgoing: false,
            xml: "<message/>".into(),
        })
        .collect();
    server.store.archive_messages(&old).await.unwrap();
    assert_eq!(expire(&*server.store, 1000 + 2400).await, 2400);
    assert_eq!(archive(&server, "juliet@localhost").await.len(), 100);
}

#[tokio::test]
async fn retention_job_starts_with_the_first_session_and_expires_old_messages() {
    let mut config = Config::default();
    config.mam.retention_days = 1;
    let server = server_with(config, mam()).await;
    let entry = |id: String, stamp_us| ArchivedMessage {
        owner: "juliet@localhost".into(),
        id,
        stamp_us,
        with: "romeo@localhost".into(),
        outgoing: false,
        xml: "<message/>".into(),
    };
    let recent = now_us();
    server
        .store
        .archive_messages(&[entry(id::new(1000), 1000), entry(id::new(recent), recent)])
        .await
        .unwrap();
    let _juliet = Client::bind(&server, "juliet@localhost/balcony").await;
    // The job's first pass runs as soon as it starts.
    for _ in 0..200 {
        if archive(&server, "juliet@localhost").await.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let left = archive(&server, "juliet@localhost").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].stamp_us, recent);
}

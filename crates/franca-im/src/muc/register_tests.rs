//! Registration with a room and reserved nicknames end to end (XEP-0045 §7.9, §7.10, §7.12),
//! and one user's several sessions under one nickname.
#![allow(clippy::unwrap_used)]

use super::archive_tests::{ROOM, archive_server, drain, error_condition, join, room};
use crate::testing::Client;
use franca_core::Config;
use franca_proto::ns::{NS_DISCO_INFO, NS_REGISTER};
use franca_xml::Element;

fn register_iq(nick: &str) -> String {
    format!(
        "<iq type='set' id='reg' to='{ROOM}'><query xmlns='jabber:iq:register'>\
           <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>\
             <field var='muc#register_roomnick'><value>{nick}</value></field>\
           </x></query></iq>"
    )
}

async fn ask(c: &mut Client, iq: &str) -> Element {
    c.send(iq).await;
    let mut got = drain(c);
    let i = got.iter().position(|e| e.name == "iq").unwrap();
    got.remove(i)
}

#[tokio::test]
async fn xep0045_7_10_registration_makes_a_member_with_a_reserved_nick() {
    let (server, _muc) = archive_server(Config::default()).await;
    let mut juliet = room(&server, &[("muc#roomconfig_persistentroom", "1")]).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;

    // The form first, then the registration.
    let get = format!("<iq type='get' id='g' to='{ROOM}'><query xmlns='jabber:iq:register'/></iq>");
    let form = ask(&mut romeo, &get).await.to_xml();
    assert!(form.contains("muc#register_roomnick"), "{form}");
    let answer = ask(&mut romeo, &register_iq("Romeo")).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let again = ask(&mut romeo, &get).await;
    let q = again.child("query", NS_REGISTER).unwrap();
    assert!(q.has_child("registered", NS_REGISTER));
    assert_eq!(
        q.child("username", NS_REGISTER).map(Element::text),
        Some("Romeo".into())
    );

    // §7.9: the room tells him his nickname; the member list shows it.
    let roomuser = format!(
        "<iq type='get' id='n' to='{ROOM}'>\
           <query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/></iq>"
    );
    let info = ask(&mut romeo, &roomuser).await;
    let identity = info
        .child("query", NS_DISCO_INFO)
        .and_then(|q| q.child("identity", NS_DISCO_INFO))
        .unwrap();
    assert_eq!(identity.attr("name"), Some("Romeo"));
    let members = ask(
        &mut juliet,
        &format!(
            "<iq type='get' id='m' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item affiliation='member'/></query></iq>"
        ),
    )
    .await
    .to_xml();
    assert!(
        members.contains("jid='romeo@localhost'") && members.contains("nick='Romeo'"),
        "{members}"
    );
    // Stored with the affiliation.
    let stored = server
        .store
        .muc_rooms("conference.localhost")
        .await
        .unwrap();
    let romeo_aff = stored[0]
        .affiliations
        .iter()
        .find(|a| a.jid == "romeo@localhost")
        .unwrap();
    assert_eq!(
        (romeo_aff.affiliation.as_str(), romeo_aff.nick.as_deref()),
        ("member", Some("Romeo"))
    );

    // §7.12: nobody else enters or renames themselves under it, whatever the case.
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    let got = join(&mut nurse, "romeo").await;
    assert_eq!(error_condition(&got[0]).as_deref(), Some("conflict"));
    join(&mut nurse, "nurse").await;
    nurse.send(&format!("<presence to='{ROOM}/ROMEO'/>")).await;
    assert_eq!(
        error_condition(&nurse.recv().unwrap()).as_deref(),
        Some("conflict")
    );
    // Nor registers it; and her own registration is refused while she uses a bad nickname.
    let answer = ask(&mut nurse, &register_iq("romeo")).await;
    assert_eq!(error_condition(&answer).as_deref(), Some("conflict"));
    let answer = ask(&mut nurse, &register_iq(&"n".repeat(65))).await;
    assert_eq!(error_condition(&answer).as_deref(), Some("not-acceptable"));
    // Someone in the room under a nickname keeps others from registering it.
    let answer = ask(&mut romeo, &register_iq("nurse")).await;
    assert_eq!(error_condition(&answer).as_deref(), Some("conflict"));

    // Romeo himself enters under it, as a member.
    let got = join(&mut romeo, "Romeo").await;
    assert!(
        got.iter()
            .any(|p| p.attr("from") == Some(&*format!("{ROOM}/Romeo")) && p.attr("type").is_none()),
        "{got:?}"
    );
    drain(&mut nurse);

    // Unregistering gives up the membership and the nickname.
    let answer = ask(
        &mut romeo,
        &format!(
            "<iq type='set' id='u' to='{ROOM}'><query xmlns='jabber:iq:register'><remove/>\
             </query></iq>"
        ),
    )
    .await;
    assert_eq!(answer.attr("type"), Some("result"));
    let info = ask(&mut romeo, &roomuser).await;
    assert!(
        !info
            .child("query", NS_DISCO_INFO)
            .unwrap()
            .has_child("identity", NS_DISCO_INFO)
    );
    let stored = server
        .store
        .muc_rooms("conference.localhost")
        .await
        .unwrap();
    assert!(
        !stored[0]
            .affiliations
            .iter()
            .any(|a| a.jid == "romeo@localhost")
    );
}

#[tokio::test]
async fn xep0045_7_10_members_only_rooms_and_banned_users() {
    let (server, _muc) = archive_server(Config::default()).await;
    let mut juliet = room(&server, &[("muc#roomconfig_membersonly", "1")]).await;
    let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let answer = ask(&mut romeo, &register_iq("romeo")).await;
    assert_eq!(error_condition(&answer).as_deref(), Some("not-allowed"));
    let answer = ask(
        &mut juliet,
        &format!(
            "<iq type='set' id='m' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item jid='romeo@localhost' affiliation='member'/>\
               <item jid='nurse@localhost' affiliation='outcast'/></query></iq>"
        ),
    )
    .await;
    assert_eq!(answer.attr("type"), Some("result"));
    // A member may reserve a nickname.
    let answer = ask(&mut romeo, &register_iq("romeo")).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    let answer = ask(&mut nurse, &register_iq("nurse")).await;
    assert_eq!(error_condition(&answer).as_deref(), Some("forbidden"));
    // Banning a member takes the nickname back.
    let answer = ask(
        &mut juliet,
        &format!(
            "<iq type='set' id='b' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item jid='romeo@localhost' affiliation='outcast'/></query></iq>"
        ),
    )
    .await;
    assert_eq!(answer.attr("type"), Some("result"));
    let answer = ask(
        &mut juliet,
        &format!(
            "<iq type='set' id='m2' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item jid='benvolio@localhost' affiliation='member'/></query></iq>"
        ),
    )
    .await;
    assert_eq!(answer.attr("type"), Some("result"));
    let mut benvolio = Client::online(&server, "benvolio@localhost/street", 0).await;
    let got = join(&mut benvolio, "romeo").await;
    assert!(
        got.iter().all(|e| e.attr("type") != Some("error")),
        "{got:?}"
    );
}

#[tokio::test]
async fn xep0045_9_3_an_admin_grants_membership_with_a_reserved_nick() {
    let (server, _muc) = archive_server(Config::default()).await;
    let mut juliet = room(&server, &[("muc#roomconfig_persistentroom", "1")]).await;
    let grant = |jid: &str, nick: &str| {
        format!(
            "<iq type='set' id='m' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item jid='{jid}' affiliation='member' nick='{nick}'/></query></iq>"
        )
    };
    let answer = ask(&mut juliet, &grant("romeo@localhost", "Romeo")).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let answer = ask(&mut juliet, &grant("nurse@localhost", "ROMEO")).await;
    assert_eq!(error_condition(&answer).as_deref(), Some("conflict"));
    let answer = ask(&mut juliet, &grant("nurse@localhost", " bad")).await;
    assert_eq!(error_condition(&answer).as_deref(), Some("not-acceptable"));
    let stored = server
        .store
        .muc_rooms("conference.localhost")
        .await
        .unwrap();
    let romeo = stored[0]
        .affiliations
        .iter()
        .find(|a| a.jid == "romeo@localhost")
        .unwrap();
    assert_eq!(romeo.nick.as_deref(), Some("Romeo"));
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    let got = join(&mut nurse, "romeo").await;
    assert_eq!(error_condition(&got[0]).as_deref(), Some("conflict"));
}

fn codes(p: &Element) -> Vec<String> {
    p.child("x", franca_proto::ns::NS_MUC_USER)
        .map(|x| {
            x.elements()
                .filter(|s| s.name == "status")
                .filter_map(|s| s.attr("code").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn one_user_joins_under_one_nick_from_two_resources() {
    let (server, _muc) = archive_server(Config::default()).await;
    let mut juliet = room(&server, &[]).await;
    let mut orchard = Client::online(&server, "romeo@localhost/orchard", 0).await;
    let mut phone = Client::online(&server, "romeo@localhost/phone", 0).await;
    join(&mut orchard, "romeo").await;
    drain(&mut juliet);
    // The second session is no conflict: it is in, as the same occupant.
    let got = join(&mut phone, "romeo").await;
    assert!(
        got.iter().all(|e| e.attr("type") != Some("error")),
        "{got:?}"
    );
    let own: Vec<_> = got
        .iter()
        .filter(|p| p.attr("from") == Some(&*format!("{ROOM}/romeo")))
        .collect();
    assert_eq!(
        own.len(),
        1,
        "only its own presence under its nick: {got:?}"
    );
    assert!(codes(own[0]).contains(&"110".to_owned()));
    // The first session hears of itself (110), Juliet of an update, never of a departure.
    let heard = drain(&mut orchard);
    assert!(
        heard.iter().all(|p| codes(p).contains(&"110".to_owned())),
        "{heard:?}"
    );
    let heard = drain(&mut juliet);
    assert!(heard.iter().all(|p| p.attr("type").is_none()), "{heard:?}");
    // Someone else still may not take it.
    let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
    let got = join(&mut nurse, "romeo").await;
    assert_eq!(error_condition(&got[0]).as_deref(), Some("conflict"));

    // A private message to the nickname reaches both sessions; so does groupchat.
    juliet
        .send(&format!(
            "<message to='{ROOM}/romeo' type='chat'><body>psst</body></message>"
        ))
        .await;
    for c in [&mut orchard, &mut phone] {
        let m = c.recv().unwrap();
        assert_eq!(m.attr("from"), Some(&*format!("{ROOM}/juliet")), "{m:?}");
    }

    // One session leaves: only it hears so; the room still has Romeo.
    phone
        .send(&format!("<presence to='{ROOM}/romeo' type='unavailable'/>"))
        .await;
    let bye = phone.recv().unwrap();
    assert_eq!(bye.attr("type"), Some("unavailable"));
    assert!(codes(&bye).contains(&"110".to_owned()));
    let heard = drain(&mut juliet);
    assert!(heard.iter().all(|p| p.attr("type").is_none()), "{heard:?}");
    drain(&mut orchard);

    // Both in again; a nick change takes both along, a kick both out.
    join(&mut phone, "romeo").await;
    drain(&mut orchard);
    orchard
        .send(&format!("<presence to='{ROOM}/Romeo2'/>"))
        .await;
    let at_phone = drain(&mut phone);
    assert!(
        at_phone
            .iter()
            .any(|p| codes(p).contains(&"303".to_owned())),
        "{at_phone:?}"
    );
    drain(&mut orchard);
    drain(&mut juliet);
    juliet
        .send(&format!(
            "<iq type='set' id='k' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
               <item nick='Romeo2' role='none'/></query></iq>"
        ))
        .await;
    let heard = drain(&mut juliet);
    let kicks = heard
        .iter()
        .filter(|p| p.name == "presence" && codes(p).contains(&"307".to_owned()))
        .count();
    assert_eq!(kicks, 1, "{heard:?}");
    for c in [&mut orchard, &mut phone] {
        let got = drain(c);
        assert!(
            got.iter()
                .any(|p| codes(p).contains(&"307".to_owned())
                    && codes(p).contains(&"110".to_owned())),
            "{got:?}"
        );
    }
    // Both are out: a groupchat from either is refused.
    phone
        .send(&format!(
            "<message to='{ROOM}' type='groupchat'><body>x</body></message>"
        ))
        .await;
    assert_eq!(
        error_condition(&phone.recv().unwrap()).as_deref(),
        Some("not-acceptable")
    );
}

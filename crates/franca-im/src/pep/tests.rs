//! PEP end to end inside one server: publish, +notify filtering through a resolved caps
//! query, last items at initial presence, access models, retraction, private storage and the
//! XEP-0048/XEP-0402 mapping.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::testing::{Client, server, xml};
use franca_store::{RosterItem, Subscription};

const META: &str = "urn:xmpp:avatar:metadata";

async fn pep_server() -> Arc<Server> {
    let server = server(vec![
        Arc::new(crate::roster::Roster),
        Arc::new(Pep::new(16)),
        Arc::new(crate::presence::Presence),
        Arc::new(crate::disco::Disco),
    ])
    .await;
    // Romeo and the nurse see Juliet's presence; Benvolio does not.
    for (user, contact, sub) in [
        ("juliet", "romeo", Subscription::Both),
        ("romeo", "juliet", Subscription::Both),
        ("juliet", "nurse", Subscription::From),
        ("nurse", "juliet", Subscription::To),
    ] {
        let item = RosterItem {
            jid: format!("{contact}@localhost"),
            name: None,
            subscription: sub,
            ask: false,
            pending_in: None,
            approved: false,
            hidden: false,
            groups: if contact == "romeo" {
                vec!["Lovers".into()]
            } else {
                vec![]
            },
        };
        server
            .store
            .put_roster_item(&format!("{user}@localhost"), &item)
            .await
            .unwrap();
    }
    server
}

fn caps_query(features: &[&str]) -> Element {
    let mut q = Element::new("query", franca_proto::ns::NS_DISCO_INFO);
    q.push(
        Element::new("identity", franca_proto::ns::NS_DISCO_INFO)
            .with_attr("category", "client")
            .with_attr("type", "pc"),
    );
    for f in features {
        q.push(Element::new("feature", franca_proto::ns::NS_DISCO_INFO).with_attr("var", *f));
    }
    q
}

/// Bind `jid`, send initial presence with caps for `features`, answer the caps query, and
/// drain what the login produced.
pub(super) async fn online_with_caps(server: &Arc<Server>, jid: &str, features: &[&str]) -> Client {
    let mut c = Client::bind(server, jid).await;
    let q = caps_query(features);
    let ver = caps::verification_hash(&q);
    c.send(&format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='{ver}'/></presence>"
    ))
    .await;
    // Either a caps query (unknown ver) or nothing to answer.
    while let Some(s) = c.recv() {
        if s.name == "iq" && s.attr("type") == Some("get") {
            let answer = format!(
                "<iq type='result' id='{}' to='{}'>{}</iq>",
                s.attr("id").unwrap(),
                s.attr("from").unwrap(),
                q.to_xml()
            );
            c.send(&answer).await;
        }
    }
    c
}

pub(super) fn drain(c: &mut Client) -> Vec<Element> {
    std::iter::from_fn(|| c.recv()).collect()
}

pub(super) fn events(stanzas: &[Element]) -> Vec<&Element> {
    stanzas
        .iter()
        .filter(|s| s.name == "message" && s.has_child("event", crate::pubsub::NS_PUBSUB_EVENT))
        .collect()
}

const PUBLISH_META: &str = "<iq type='set' id='pub1'>
  <pubsub xmlns='http://jabber.org/protocol/pubsub'>
    <publish node='urn:xmpp:avatar:metadata'>
      <item id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f'>
        <metadata xmlns='urn:xmpp:avatar:metadata'>
          <info bytes='12345' height='64' id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f' type='image/png' width='64'/>
        </metadata>
      </item>
    </publish>
  </pubsub>
</iq>";

#[tokio::test]
async fn xep0163_notify_goes_to_contacts_with_notify_caps_only() {
    let server = pep_server().await;
    let notify = format!("{META}+notify");
    let mut romeo = online_with_caps(&server, "romeo@localhost/orchard", &[&notify]).await;
    let mut nurse = online_with_caps(&server, "nurse@localhost/x", &["urn:other"]).await;
    let mut benvolio = online_with_caps(&server, "benvolio@localhost/x", &[&notify]).await;
    let mut juliet = online_with_caps(&server, "juliet@localhost/balcony", &[&notify]).await;
    drain(&mut romeo);
    drain(&mut nurse);
    drain(&mut benvolio);
    juliet.send(PUBLISH_META).await;
    let got = drain(&mut juliet);
    assert_eq!(
        events(&got).len(),
        1,
        "the owner's resource with +notify: {got:?}"
    );
    let result = got.iter().find(|s| s.name == "iq").unwrap();
    assert_eq!(result.attr("type"), Some("result"));
    let r = drain(&mut romeo);
    let ev = events(&r);
    assert_eq!(ev.len(), 1, "{r:?}");
    assert_eq!(ev[0].attr("from"), Some("juliet@localhost"));
    assert_eq!(ev[0].attr("type"), Some("headline"));
    let items = ev[0]
        .child("event", crate::pubsub::NS_PUBSUB_EVENT)
        .unwrap()
        .first_element()
        .unwrap();
    assert_eq!(items.attr("node"), Some(META));
    assert!(items.first_element().unwrap().has_child("metadata", META));
    assert!(events(&drain(&mut nurse)).is_empty(), "no +notify");
    assert!(
        events(&drain(&mut benvolio)).is_empty(),
        "no presence subscription"
    );

    // Retraction is notified too.
    juliet
        .send(
            "<iq type='set' id='r1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>
                 <retract node='urn:xmpp:avatar:metadata' notify='true'>
                   <item id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f'/></retract></pubsub></iq>",
        )
        .await;
    let r = drain(&mut romeo);
    let ev = events(&r);
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0]
            .to_xml()
            .contains("<retract id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f'/>")
    );
}

#[tokio::test]
async fn xep0163_6_2_last_item_on_initial_presence() {
    let server = pep_server().await;
    let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
    juliet.send(PUBLISH_META).await;
    drain(&mut juliet);
    let notify = format!("{META}+notify");
    let mut romeo = Client::bind(&server, "romeo@localhost/orchard").await;
    let q = caps_query(&[&notify]);
    let ver = caps::verification_hash(&q);
    romeo
        .send(&format!(
            "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='{ver}'/></presence>"
        ))
        .await;
    let query = drain(&mut romeo)
        .into_iter()
        .find(|s| s.name == "iq")
        .unwrap();
    assert_eq!(query.attr("to"), Some("romeo@localhost/orchard"));
    romeo
        .send(&format!(
            "<iq type='result' id='{}' to='romeo@localhost'>{}</iq>",
            query.attr("id").unwrap(),
            q.to_xml()
        ))
        .await;
    let got = drain(&mut romeo);
    assert_eq!(events(&got).len(), 1, "{got:?}");
    // A second resource with the same ver: no query, the last item at once.
    let mut romeo2 = Client::bind(&server, "romeo@localhost/garden").await;
    romeo2
        .send(&format!(
            "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='{ver}'/></presence>"
        ))
        .await;
    let got = drain(&mut romeo2);
    assert!(got.iter().all(|s| s.name != "iq"));
    assert_eq!(events(&got).len(), 1, "{got:?}");
}

#[tokio::test]
async fn xep0060_7_1_5_precondition_not_met_and_access_models() {
    let server = pep_server().await;
    let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
    let publish = |node: &str, model: &str, id: &str| {
        format!(
            "<iq type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>
               <publish node='{node}'><item id='current'><x xmlns='urn:test'/></item></publish>
               <publish-options><x xmlns='jabber:x:data' type='submit'>
                 <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>
                 <field var='pubsub#access_model'><value>{model}</value></field>
                 <field var='pubsub#persist_items'><value>true</value></field>
               </x></publish-options></pubsub></iq>"
        )
    };
    juliet.send(&publish("open-node", "open", "p1")).await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    juliet.send(&publish("open-node", "whitelist", "p2")).await;
    let err = juliet.recv().unwrap();
    assert_eq!(err.attr("type"), Some("error"));
    assert!(
        err.to_xml().contains("precondition-not-met"),
        "{}",
        err.to_xml()
    );
    assert!(err.to_xml().contains("<conflict"));
    juliet.send(&publish("secret", "whitelist", "p3")).await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));

    let get = |node: &str| {
        format!(
            "<iq type='get' id='g' to='juliet@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'/></pubsub></iq>"
        )
    };
    let mut benvolio = Client::bind(&server, "benvolio@localhost/x").await;
    benvolio.send(&get("open-node")).await;
    let r = benvolio.recv().unwrap();
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml());
    assert!(r.to_xml().contains("<item id='current'>"));
    let mut romeo = Client::bind(&server, "romeo@localhost/x").await;
    romeo.send(&get("secret")).await;
    let r = romeo.recv().unwrap();
    assert_eq!(r.attr("type"), Some("error"));
    assert!(r.to_xml().contains("closed-node"));
    juliet.send(&get("secret")).await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    // Non-owners cannot publish.
    romeo
        .send("<iq type='set' id='x' to='juliet@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><x xmlns='urn:t'/></item></publish></pubsub></iq>")
        .await;
    assert!(romeo.recv().unwrap().to_xml().contains("<forbidden"));
    // disco#items lists what the requester may see; benvolio is not subscribed, so disco
    // refuses him altogether (as for any account), romeo sees the open node only.
    romeo
        .send("<iq type='get' id='d' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    let r = romeo.recv().unwrap().to_xml();
    assert!(
        r.contains("node='open-node'") && !r.contains("secret"),
        "{r}"
    );
}

#[tokio::test]
async fn xep0049_private_storage_and_xep0048_sees_xep0402() {
    let server = pep_server().await;
    let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
    juliet
        .send("<iq type='set' id='s1'><query xmlns='jabber:iq:private'>
                 <exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus></query></iq>")
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    juliet
        .send("<iq type='get' id='g1'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>")
        .await;
    juliet.expect(
        "<iq type='result' id='g1' from='juliet@localhost' to='juliet@localhost/balcony'>
           <query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus></query></iq>",
    );
    // Nothing stored: the empty element.
    juliet
        .send("<iq type='get' id='g2'><query xmlns='jabber:iq:private'><a xmlns='urn:none'/></query></iq>")
        .await;
    assert!(
        juliet
            .recv()
            .unwrap()
            .to_xml()
            .contains("<a xmlns='urn:none'/>")
    );
    // Someone else's: forbidden.
    let mut romeo = Client::bind(&server, "romeo@localhost/x").await;
    romeo
        .send("<iq type='get' id='g3' to='juliet@localhost'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>")
        .await;
    assert!(romeo.recv().unwrap().to_xml().contains("<forbidden"));

    // XEP-0402 publish, then XEP-0048 read.
    juliet
        .send("<iq type='set' id='b1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>
                 <publish node='urn:xmpp:bookmarks:1'><item id='theplay@conference.shakespeare.lit'>
                   <conference xmlns='urn:xmpp:bookmarks:1' name='The Play' autojoin='true'><nick>JC</nick></conference>
                 </item></publish>
                 <publish-options><x xmlns='jabber:x:data' type='submit'>
                   <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>
                   <field var='pubsub#persist_items'><value>true</value></field>
                   <field var='pubsub#max_items'><value>max</value></field>
                   <field var='pubsub#send_last_published_item'><value>never</value></field>
                   <field var='pubsub#access_model'><value>whitelist</value></field>
                 </x></publish-options></pubsub></iq>")
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    juliet
        .send("<iq type='get' id='b2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>")
        .await;
    juliet.expect(
        "<iq type='result' id='b2' from='juliet@localhost' to='juliet@localhost/balcony'>
           <query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>
             <conference jid='theplay@conference.shakespeare.lit' name='The Play' autojoin='true'><nick>JC</nick></conference>
           </storage></query></iq>",
    );
    // XEP-0048 write, then XEP-0402 read: the room list is replaced.
    juliet
        .send("<iq type='set' id='b3'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>
                 <conference jid='council@conference.shakespeare.lit' name='Council' autojoin='false'/>
                 <url name='Site' url='https://example.com/'/>
               </storage></query></iq>")
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    juliet
        .send("<iq type='get' id='b4'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>")
        .await;
    let r = juliet.recv().unwrap().to_xml();
    assert!(
        r.contains("<item id='council@conference.shakespeare.lit'>"),
        "{r}"
    );
    assert!(!r.contains("theplay"), "{r}");
    juliet
        .send("<iq type='get' id='b5'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>")
        .await;
    let r = juliet.recv().unwrap().to_xml();
    assert!(r.contains("council@") && r.contains("<url "), "{r}");
}

#[tokio::test]
async fn xep0060_owner_delete_purge_configure() {
    let server = pep_server().await;
    let notify = format!("{META}+notify");
    let mut romeo = online_with_caps(&server, "romeo@localhost/orchard", &[&notify]).await;
    let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
    juliet.send(PUBLISH_META).await;
    drain(&mut juliet);
    assert_eq!(events(&drain(&mut romeo)).len(), 1);
    juliet
        .send("<iq type='get' id='c1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:avatar:metadata'/></pubsub></iq>")
        .await;
    let r = juliet.recv().unwrap().to_xml();
    assert!(
        r.contains("pubsub#access_model") && r.contains("presence"),
        "{r}"
    );
    assert!(!r.contains("franca#whitelist"), "{r}");
    juliet
        .send("<iq type='set' id='d1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='urn:xmpp:avatar:metadata'/></pubsub></iq>")
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    let r = drain(&mut romeo);
    assert!(
        events(&r)[0]
            .to_xml()
            .contains("<delete node='urn:xmpp:avatar:metadata'/>")
    );
    juliet
        .send("<iq type='set' id='d2'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='urn:xmpp:avatar:metadata'/></pubsub></iq>")
        .await;
    assert!(juliet.recv().unwrap().to_xml().contains("item-not-found"));
    // Private storage nodes are not reachable through PubSub.
    juliet
        .send("<iq type='get' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='private:a|b'/></pubsub></iq>")
        .await;
    assert!(juliet.recv().unwrap().to_xml().contains("item-not-found"));
    let _ = xml("<x/>");
}

#[tokio::test]
async fn xep0048_write_keeps_a_differently_configured_xep0402_node() {
    let server = pep_server().await;
    let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
    // A client created the node with the defaults (presence access, one item).
    juliet
        .send(
            "<iq type='set' id='b0'><pubsub xmlns='http://jabber.org/protocol/pubsub'>
                 <publish node='urn:xmpp:bookmarks:1'><item id='a@conference.localhost'>
                   <conference xmlns='urn:xmpp:bookmarks:1'/></item></publish></pubsub></iq>",
        )
        .await;
    assert_eq!(juliet.recv().unwrap().attr("type"), Some("result"));
    juliet
        .send("<iq type='set' id='b1'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>
                 <conference jid='b@conference.localhost' autojoin='true'><nick>J</nick></conference>
               </storage></query></iq>")
        .await;
    let r = juliet.recv().unwrap();
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml());
    juliet
        .send("<iq type='get' id='b2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>")
        .await;
    let r = juliet.recv().unwrap().to_xml();
    assert!(r.contains("<item id='b@conference.localhost'>"), "{r}");
    assert!(!r.contains("a@conference"), "{r}");
    // A publish asked with a GET is malformed.
    juliet
        .send("<iq type='get' id='b3'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'/></pubsub></iq>")
        .await;
    assert!(juliet.recv().unwrap().to_xml().contains("<bad-request"));
}

//! The PubSub service end to end on an in-memory server: sessions send IQs through the router
//! and read their queues. Named after the XEP-0060 sections they check.
#![allow(clippy::unwrap_used)]

use super::PubsubService;
use crate::testing::{Client, server_with};
use franca_core::config::RoomCreation;
use franca_core::{Config, Module, Server};
use franca_proto::ns::NS_STANZAS;
use franca_xml::Element;
use std::sync::Arc;

const SVC: &str = "pubsub.localhost";

async fn pubsub_server(config: Config) -> Arc<Server> {
    let module: Arc<dyn Module> = Arc::new(PubsubService::new(&config));
    let server = server_with(config, vec![module, Arc::new(crate::disco::Disco)]).await;
    server.start_modules().await;
    server
}

fn drain(c: &mut Client) -> Vec<Element> {
    let mut out = Vec::new();
    while let Some(e) = c.recv() {
        out.push(e);
    }
    out
}

fn error_condition(e: &Element) -> Option<String> {
    let err = e.child("error", &e.ns)?;
    err.elements()
        .find(|c| c.ns == NS_STANZAS && c.name != "text")
        .map(|c| c.name.clone())
}

/// Send an IQ to the service and return the answer (the first stanza back) and the rest.
async fn iq(c: &mut Client, kind: &str, body: &str) -> (Element, Vec<Element>) {
    c.send(&format!("<iq type='{kind}' id='q' to='{SVC}'>{body}</iq>"))
        .await;
    let mut got = drain(c);
    assert!(!got.is_empty(), "no answer to {body}");
    let first = got.remove(0);
    assert_eq!(first.attr("id"), Some("q"), "{first:?}");
    (first, got)
}

fn ok(e: &Element) {
    assert_eq!(e.attr("type"), Some("result"), "{}", e.to_xml());
}

fn err(e: &Element, cond: &str) {
    assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml());
    assert_eq!(error_condition(e).as_deref(), Some(cond), "{}", e.to_xml());
}

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";

fn publish(node: &str, id: &str, text: &str) -> String {
    format!(
        "<pubsub xmlns='{PS}'><publish node='{node}'><item id='{id}'>\
         <entry xmlns='urn:test'>{text}</entry></item></publish></pubsub>"
    )
}

fn event_items(m: &Element) -> Option<&Element> {
    m.child("event", crate::pubsub::NS_PUBSUB_EVENT)?
        .child("items", crate::pubsub::NS_PUBSUB_EVENT)
}

#[tokio::test]
async fn xep0060_5_1_service_disco_and_listed_under_the_domain() {
    let server = pubsub_server(Config::default()).await;
    let mut j = Client::online(&server, "juliet@localhost/a", 0).await;
    let (info, _) = iq(
        &mut j,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    )
    .await;
    ok(&info);
    let q = info.first_element().unwrap();
    let id = q.elements().find(|e| e.name == "identity").unwrap();
    assert_eq!(id.attr("category"), Some("pubsub"));
    assert_eq!(id.attr("type"), Some("service"));
    let features: Vec<&str> = q.elements().filter_map(|e| e.attr("var")).collect();
    for f in [
        PS,
        "http://jabber.org/protocol/pubsub#subscribe",
        "http://jabber.org/protocol/pubsub#access-whitelist",
    ] {
        assert!(features.contains(&f), "{f}");
    }
    j.send("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    let items = j.recv().unwrap();
    assert!(items.to_xml().contains(SVC), "{}", items.to_xml());
}

#[tokio::test]
async fn xep0060_publish_subscribe_notify_retract_delete() {
    let server = pubsub_server(Config::default()).await;
    let mut j = Client::online(&server, "juliet@localhost/a", 0).await;
    let mut r = Client::online(&server, "romeo@localhost/b", 0).await;

    let (a, _) = iq(
        &mut j,
        "set",
        &format!("<pubsub xmlns='{PS}'><create node='news'/></pubsub>"),
    )
    .await;
    ok(&a);
    let (a, _) = iq(
        &mut j,
        "set",
        &format!("<pubsub xmlns='{PS}'><create node='news'/></pubsub>"),
    )
    .await;
    err(&a, "conflict");
    let (a, _) = iq(&mut j, "set", &publish("news", "1", "first")).await;
    ok(&a);

    // §6.1: subscribe with one's own JID; the last item follows.
    let (a, _) = iq(
        &mut r,
        "set",
        &format!("<pubsub xmlns='{PS}'><subscribe node='news' jid='juliet@localhost'/></pubsub>"),
    )
    .await;
    err(&a, "bad-request");
    let (a, rest) = iq(
        &mut r,
        "set",
        &format!("<pubsub xmlns='{PS}'><subscribe node='news' jid='romeo@localhost/b'/></pubsub>"),
    )
    .await;
    ok(&a);
    assert_eq!(rest.len(), 1);
    assert!(rest[0].to_xml().contains("first"));

    // Only owners publish.
    let (a, _) = iq(&mut r, "set", &publish("news", "2", "spoof")).await;
    err(&a, "forbidden");

    // A publish reaches the subscriber.
    let (a, _) = iq(&mut j, "set", &publish("news", "2", "second")).await;
    ok(&a);
    let got = drain(&mut r);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attr("from"), Some(SVC));
    let items = event_items(&got[0]).unwrap();
    assert_eq!(items.attr("node"), Some("news"));
    assert!(got[0].to_xml().contains("second"));

    // Anyone may read an open node.
    let (a, _) = iq(
        &mut r,
        "get",
        &format!("<pubsub xmlns='{PS}'><items node='news'/></pubsub>"),
    )
    .await;
    ok(&a);
    assert_eq!(a.to_xml().matches("<item ").count(), 2, "{}", a.to_xml());

    // Retract notifies.
    let (a, _) = iq(
        &mut j,
        "set",
        &format!("<pubsub xmlns='{PS}'><retract node='news'><item id='1'/></retract></pubsub>"),
    )
    .await;
    ok(&a);
    let got = drain(&mut r);
    assert!(got[0].to_xml().contains("retract id='1'"), "{:?}", got);

    // Owner lists subscriptions; the subscriber is unsubscribed once.
    let (a, _) = iq(
        &mut j,
        "get",
        &format!("<pubsub xmlns='{OWNER}'><subscriptions node='news'/></pubsub>"),
    )
    .await;
    ok(&a);
    assert!(a.to_xml().contains("romeo@localhost/b"));
    let (a, _) = iq(
        &mut r,
        "get",
        &format!("<pubsub xmlns='{OWNER}'><subscriptions node='news'/></pubsub>"),
    )
    .await;
    err(&a, "forbidden");

    // Delete notifies, and the node is gone.
    let (a, _) = iq(
        &mut j,
        "set",
        &format!("<pubsub xmlns='{OWNER}'><delete node='news'/></pubsub>"),
    )
    .await;
    ok(&a);
    let got = drain(&mut r);
    assert!(
        got[0].to_xml().contains("<delete node='news'/>"),
        "{:?}",
        got
    );
    let (a, _) = iq(
        &mut r,
        "get",
        &format!("<pubsub xmlns='{PS}'><items node='news'/></pubsub>"),
    )
    .await;
    err(&a, "item-not-found");
    let (a, _) = iq(
        &mut r,
        "set",
        &format!(
            "<pubsub xmlns='{PS}'><unsubscribe node='news' jid='romeo@localhost/b'/></pubsub>"
        ),
    )
    .await;
    err(&a, "item-not-found");
}

#[tokio::test]
async fn xep0060_4_5_whitelist_node_and_unsupported_models() {
    let server = pubsub_server(Config::default()).await;
    let mut j = Client::online(&server, "juliet@localhost/a", 0).await;
    let mut r = Client::online(&server, "romeo@localhost/b", 0).await;
    let mut n = Client::online(&server, "nurse@localhost/c", 0).await;
    let form = |model: &str| {
        format!(
            "<x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
             <field var='pubsub#access_model'><value>{model}</value></field>\
             <field var='franca#owners'><value>romeo@localhost</value></field></x>"
        )
    };
    let (a, _) = iq(
        &mut j,
        "set",
        &format!(
            "<pubsub xmlns='{PS}'><create node='p'/><configure>{}</configure></pubsub>",
            form("presence")
        ),
    )
    .await;
    err(&a, "feature-not-implemented");
    let (a, _) = iq(
        &mut j,
        "set",
        &format!(
            "<pubsub xmlns='{PS}'><create node='w'/><configure>{}</configure></pubsub>",
            form("whitelist")
        ),
    )
    .await;
    ok(&a);
    // The private owners field in the client's form was ignored.
    let (a, _) = iq(&mut r, "set", &publish("w", "1", "x")).await;
    err(&a, "forbidden");
    let (a, _) = iq(
        &mut r,
        "get",
        &format!("<pubsub xmlns='{PS}'><items node='w'/></pubsub>"),
    )
    .await;
    err(&a, "not-allowed");
    let (a, _) = iq(
        &mut r,
        "set",
        &format!("<pubsub xmlns='{PS}'><subscribe node='w' jid='romeo@localhost'/></pubsub>"),
    )
    .await;
    err(&a, "not-allowed");
    // Members see it and are notified; others are not.
    let (a, _) = iq(&mut j, "set", &format!("<pubsub xmlns='{OWNER}'><affiliations node='w'><affiliation jid='nurse@localhost' affiliation='member'/></affiliations></pubsub>")).await;
    ok(&a);
    let (a, _) = iq(
        &mut n,
        "set",
        &format!("<pubsub xmlns='{PS}'><subscribe node='w' jid='nurse@localhost'/></pubsub>"),
    )
    .await;
    ok(&a);
    let (a, _) = iq(&mut j, "set", &publish("w", "1", "secret")).await;
    ok(&a);
    assert_eq!(drain(&mut n).len(), 1);
    r.silent();
    // disco#items lists only what the requester may see.
    let (a, _) = iq(
        &mut r,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    )
    .await;
    assert!(!a.to_xml().contains("node='w'"));
    let (a, _) = iq(
        &mut n,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    )
    .await;
    assert!(a.to_xml().contains("node='w'"));
    // Removing the member stops notifications even though the subscription remains.
    let (a, _) = iq(&mut j, "set", &format!("<pubsub xmlns='{OWNER}'><affiliations node='w'><affiliation jid='nurse@localhost' affiliation='none'/></affiliations></pubsub>")).await;
    ok(&a);
    let (a, _) = iq(&mut j, "set", &publish("w", "2", "secret")).await;
    ok(&a);
    n.silent();
    // The last owner cannot be removed.
    let (a, _) = iq(&mut j, "set", &format!("<pubsub xmlns='{OWNER}'><affiliations node='w'><affiliation jid='juliet@localhost' affiliation='none'/></affiliations></pubsub>")).await;
    err(&a, "not-acceptable");
}

#[tokio::test]
async fn xep0060_create_permission_instant_nodes_and_bounds() {
    let mut config = Config::default();
    config.pubsub.create = RoomCreation::Admins;
    config.server.admins = vec!["nurse@localhost".into()];
    let server = pubsub_server(config).await;
    let mut j = Client::online(&server, "juliet@localhost/a", 0).await;
    let mut n = Client::online(&server, "nurse@localhost/c", 0).await;
    let (a, _) = iq(
        &mut j,
        "set",
        &format!("<pubsub xmlns='{PS}'><create node='x'/></pubsub>"),
    )
    .await;
    err(&a, "forbidden");
    // Auto-create on publish is creation too.
    let (a, _) = iq(&mut j, "set", &publish("x", "1", "x")).await;
    err(&a, "item-not-found");
    // §8.1.2 instant node: the service names it.
    let (a, _) = iq(
        &mut n,
        "set",
        &format!("<pubsub xmlns='{PS}'><create/></pubsub>"),
    )
    .await;
    ok(&a);
    let created = a.first_element().unwrap().first_element().unwrap();
    assert!(created.attr("node").is_some_and(|n| !n.is_empty()));
    let long = "n".repeat(2000);
    let (a, _) = iq(&mut n, "set", &publish(&long, "1", "x")).await;
    err(&a, "not-acceptable");
    let (a, _) = iq(
        &mut n,
        "set",
        &format!("<pubsub xmlns='{PS}'><publish node='y'><item id='1'/></publish></pubsub>"),
    )
    .await;
    err(&a, "bad-request");
    // Auto-create for someone who may create; the owner may purge, with a notification.
    let (a, _) = iq(&mut n, "set", &publish("y", "1", "x")).await;
    ok(&a);
    let (a, _) = iq(
        &mut n,
        "set",
        &format!("<pubsub xmlns='{OWNER}'><purge node='y'/></pubsub>"),
    )
    .await;
    ok(&a);
    let (a, _) = iq(
        &mut j,
        "get",
        &format!("<pubsub xmlns='{PS}'><items node='y'/></pubsub>"),
    )
    .await;
    ok(&a);
    assert!(!a.to_xml().contains("<item "));
    // Messages to the service are refused, error answers are not answered.
    j.send(&format!("<message to='{SVC}'><body>hi</body></message>"))
        .await;
    assert_eq!(j.recv().unwrap().attr("type"), Some("error"));
    j.send(&format!("<message type='error' to='{SVC}'/>")).await;
    j.silent();
}

#[test]
fn config_pubsub_table_is_validated() {
    let parse = |extra: &str| {
        Config::from_toml(
            &format!("[server]\ndomains = [\"localhost\"]\n{extra}"),
            std::path::Path::new("franca.toml"),
        )
    };
    let c = parse("[pubsub]\ncreate = \"admins\"\nmax_items = 5\n").unwrap();
    assert_eq!(c.pubsub.create, RoomCreation::Admins);
    assert_eq!(c.pubsub.max_items, 5);
    assert_eq!(
        c.pubsub.service_domains(&c.server.domains),
        ["pubsub.localhost"]
    );
    assert!(parse("[pubsub]\nsubdomain = \"conference\"\n").is_err());
    assert!(parse("[pubsub]\nsubdomain = \"Bad_Label\"\n").is_err());
    assert!(parse("[pubsub]\nmax_nodes = 0\n").is_err());
    assert!(parse("[pubsub]\ncreate = \"nobody\"\n").is_err());
    assert!(parse("[pubsub]\ntypo = 1\n").is_err());
}

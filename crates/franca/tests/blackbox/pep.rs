//! XEP-0163 PEP, XEP-0049 private storage and XEP-0402/XEP-0048 bookmarks (issue 5 §3), over
//! real connections: notifications filtered by XEP-0115 capabilities (the server's disco#info
//! query to the client is answered by the test), the last item at initial presence,
//! publish-options preconditions, retraction, access models, private storage and the bookmark
//! mapping.

use crate::client::{Conn, is_error, is_result};
use crate::harness::{ALICE, BOB, Options, Server};

const CAROL: (&str, &str) = ("carol", "carol-password-3");
const META: &str = "urn:xmpp:avatar:metadata";

fn start() -> Server {
    Server::start_with(Options {
        users: vec![ALICE, BOB, CAROL],
        ..Options::default()
    })
}

/// `watcher` subscribes to `owner`'s presence and `owner` approves.
fn subscribe(watcher: &mut Conn, watcher_jid: &str, owner: &mut Conn, owner_jid: &str) {
    watcher.send(format!("<presence to='{owner_jid}' type='subscribe'/>"));
    owner.wait("a subscription request", 15, |t| {
        t.contains(&format!("from='{watcher_jid}'")) && t.contains("type='subscribe'")
    });
    owner.send(format!("<presence to='{watcher_jid}' type='subscribed'/>"));
    owner.ping("after-subscribed");
    watcher.ping("after-subscribed");
}

/// Initial presence with XEP-0115 caps, then the answer to the server's disco#info query:
/// the features are `features` (the ver is not a real hash, so they count for this session
/// only, which is all the test needs).
fn online_with_caps(c: &mut Conn, ver: &str, features: &[&str]) {
    c.send(format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:franca:test' ver='{ver}'/></presence>"
    ));
    let t = c.wait("the caps disco#info query", 15, |t| {
        t.contains("id='pep-caps-")
    });
    let at = t.find("id='pep-caps-").expect("id") + 4;
    let id = &t[at..at + t[at..].find('\'').expect("quote")];
    // No 'to': the answer goes to our own bare JID, which the query came from.
    let mut answer = format!(
        "<iq type='result' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info' \
         node='urn:franca:test#{ver}'><identity category='client' type='pc'/>"
    );
    for f in features {
        answer.push_str(&format!("<feature var='{f}'/>"));
    }
    answer.push_str("</query></iq>");
    c.send(answer);
    c.ping("after-caps");
}

fn iq(c: &mut Conn, id: &str, kind: &str, payload: &str) -> String {
    c.send(format!("<iq type='{kind}' id='{id}'>{payload}</iq>"));
    c.wait_stanza(id, 15)
}

fn publish_meta(c: &mut Conn, id: &str, item: &str) -> String {
    iq(
        c,
        id,
        "set",
        &format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{META}'>\
             <item id='{item}'><metadata xmlns='{META}'><info bytes='12345' height='64' \
             id='{item}' type='image/png' width='64'/></metadata></item></publish></pubsub>"
        ),
    )
}

fn events(c: &Conn) -> usize {
    c.all_text()
        .matches("<event xmlns='http://jabber.org/protocol/pubsub#event'>")
        .count()
}

#[test]
fn xep0163_notifications_follow_caps_and_subscriptions() {
    let mut s = start();
    let mut alice = s.login(ALICE, "phone");
    let mut bob = s.login(BOB, "desk");
    let mut carol = s.login(CAROL, "laptop");
    // Subscription requests reach an available session.
    alice.available();
    subscribe(&mut bob, "bob@localhost", &mut alice, "alice@localhost");
    subscribe(&mut carol, "carol@localhost", &mut alice, "alice@localhost");
    let notify = format!("{META}+notify");
    online_with_caps(&mut bob, "bob-ver", &[&notify]);
    online_with_caps(&mut carol, "carol-ver", &["urn:xmpp:avatar:data"]);

    // Disco on the account: the PEP identity and features.
    let info = iq(
        &mut alice,
        "info",
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(info.contains("category='pubsub' type='pep'"), "{info}");
    for f in [
        "#publish",
        "#auto-create",
        "#publish-options",
        "#access-presence",
    ] {
        assert!(
            info.contains(&format!("var='http://jabber.org/protocol/pubsub{f}'")),
            "{f}: {info}"
        );
    }

    let r = publish_meta(&mut alice, "pub1", "abc123");
    assert!(is_result(&r), "{r}");
    assert!(r.contains("<item id='abc123'/>"), "{r}");
    let ev = bob.wait("the metadata event", 15, |t| {
        t.contains("</message>") && t.contains(META)
    });
    assert!(ev.contains("from='alice@localhost'"), "{ev}");
    assert!(ev.contains("<item id='abc123'>"), "{ev}");
    carol.ping("settled");
    assert_eq!(events(&carol), 0, "no +notify: {}", carol.all_text());

    // A new resource of Bob's with +notify gets the last item at its initial presence.
    let mut tablet = s.login(BOB, "tablet");
    online_with_caps(&mut tablet, "tablet-ver", &[&notify]);
    // The item is sent while the caps answer is handled, before the ping's answer.
    assert!(
        tablet.all_text().contains("<item id='abc123'>"),
        "{}",
        tablet.all_text()
    );

    // Retraction with notify.
    let r = iq(
        &mut alice,
        "ret",
        "set",
        &format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='{META}' notify='true'><item id='abc123'/></retract></pubsub>"
        ),
    );
    assert!(is_result(&r), "{r}");
    bob.wait("the retract event", 15, |t| {
        t.contains("<retract id='abc123'/>")
    });
    carol.ping("settled-2");
    assert_eq!(events(&carol), 0);
    s.assert_serves();
}

fn publish_with_options(node: &str, model: &str) -> String {
    format!(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'>\
         <item id='current'><x xmlns='urn:franca:test'>{model}</x></item></publish>\
         <publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         <field var='pubsub#access_model'><value>{model}</value></field>\
         <field var='pubsub#persist_items'><value>true</value></field>\
         <field var='pubsub#max_items'><value>max</value></field>\
         </x></publish-options></pubsub>"
    )
}

#[test]
fn xep0060_publish_options_preconditions_and_access_models() {
    let mut s = start();
    let mut alice = s.login(ALICE, "phone");
    let mut carol = s.login(CAROL, "laptop");
    let r = iq(
        &mut alice,
        "p1",
        "set",
        &publish_with_options("eu.siacs.conversations.axolotl.bundles:1", "open"),
    );
    assert!(is_result(&r), "{r}");
    let r = iq(
        &mut alice,
        "p2",
        "set",
        &publish_with_options("eu.siacs.conversations.axolotl.bundles:1", "presence"),
    );
    assert!(is_error(&r), "{r}");
    assert!(r.contains("<conflict"), "{r}");
    assert!(
        r.contains("<precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/>"),
        "{r}"
    );
    let r = iq(
        &mut alice,
        "p3",
        "set",
        &publish_with_options("private-node", "whitelist"),
    );
    assert!(is_result(&r), "{r}");
    let r = iq(
        &mut alice,
        "p4",
        "set",
        &publish_with_options("friends", "presence"),
    );
    assert!(is_result(&r), "{r}");

    let get = |node: &str| {
        format!("<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'/></pubsub>")
    };
    // Carol has no subscription: the open node only.
    carol.send(format!(
        "<iq type='get' id='g1' to='alice@localhost'>{}</iq>",
        get("eu.siacs.conversations.axolotl.bundles:1")
    ));
    let r = carol.wait_stanza("g1", 15);
    assert!(is_result(&r) && r.contains("<item id='current'>"), "{r}");
    carol.send(format!(
        "<iq type='get' id='g2' to='alice@localhost'>{}</iq>",
        get("private-node")
    ));
    let r = carol.wait_stanza("g2", 15);
    assert!(is_error(&r) && r.contains("closed-node"), "{r}");
    carol.send(format!(
        "<iq type='get' id='g3' to='alice@localhost'>{}</iq>",
        get("friends")
    ));
    let r = carol.wait_stanza("g3", 15);
    assert!(
        is_error(&r) && r.contains("presence-subscription-required"),
        "{r}"
    );
    // The owner reads everything, with max_items.
    let r = iq(&mut alice, "g4", "get", &get("private-node"));
    assert!(is_result(&r) && r.contains("whitelist"), "{r}");
    // Carol cannot publish to Alice's account.
    carol.send("<iq type='set' id='g5' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='x'><item><y xmlns='urn:y'/></item></publish></pubsub></iq>");
    let r = carol.wait_stanza("g5", 15);
    assert!(r.contains("<forbidden"), "{r}");
    s.assert_serves();
}

#[test]
fn xep0049_private_storage_and_xep0048_sees_xep0402_bookmarks() {
    let mut s = start();
    let mut alice = s.login(ALICE, "phone");
    let r = iq(
        &mut alice,
        "s1",
        "set",
        "<query xmlns='jabber:iq:private'><prefs xmlns='urn:franca:prefs'><color>blue</color></prefs></query>",
    );
    assert!(is_result(&r), "{r}");
    let r = iq(
        &mut alice,
        "s2",
        "get",
        "<query xmlns='jabber:iq:private'><prefs xmlns='urn:franca:prefs'/></query>",
    );
    assert!(r.contains("<color>blue</color>"), "{r}");

    let r = iq(
        &mut alice,
        "b1",
        "set",
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:bookmarks:1'>\
         <item id='orchard@conference.localhost'><conference xmlns='urn:xmpp:bookmarks:1' \
         name='The Orchard' autojoin='true'><nick>alice</nick></conference></item></publish>\
         <publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         <field var='pubsub#persist_items'><value>true</value></field>\
         <field var='pubsub#max_items'><value>max</value></field>\
         <field var='pubsub#send_last_published_item'><value>never</value></field>\
         <field var='pubsub#access_model'><value>whitelist</value></field>\
         </x></publish-options></pubsub>",
    );
    assert!(is_result(&r), "{r}");
    let r = iq(
        &mut alice,
        "b2",
        "get",
        "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>",
    );
    assert!(
        r.contains("<conference jid='orchard@conference.localhost' name='The Orchard' autojoin='true'><nick>alice</nick></conference>"),
        "{r}"
    );
    s.assert_serves();
}

//! The XEP-0060 PubSub service on the real binary (issue 5): `pubsub.localhost` found through
//! the domain's disco#items, a node created by one user, a subscription by another that gets the
//! last item at once and every later publish, an item over the stanza limit refused, and the
//! nodes and subscriptions still there after a restart.

use crate::client::{Conn, is_error, is_result};
use crate::harness::{ALICE, BOB, Options, Server};

const SVC: &str = "pubsub.localhost";
const PS: &str = "http://jabber.org/protocol/pubsub";

fn iq(c: &mut Conn, ty: &str, payload: &str) -> String {
    let id = c.next_id("ps");
    c.send(format!(
        "<iq type='{ty}' id='{id}' to='{SVC}'>{payload}</iq>"
    ));
    c.wait_stanza(&id, 15)
}

fn publish(c: &mut Conn, id: &str, text: &str) -> String {
    iq(
        c,
        "set",
        &format!(
            "<pubsub xmlns='{PS}'><publish node='news'><item id='{id}'>\
             <entry xmlns='urn:example:news'>{text}</entry></item></publish></pubsub>"
        ),
    )
}

#[test]
fn xep0060_service_publish_subscribe_and_restart() {
    let mut server = Server::start_with(Options::default());
    let mut alice = server.login(ALICE, "a");
    let mut bob = server.login(BOB, "b");
    // Notifications to a bare JID go to available resources (RFC 6121 §8.5.2).
    bob.available();

    let id = alice.next_id("items");
    alice.send(format!(
        "<iq type='get' id='{id}' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"
    ));
    let items = alice.wait_stanza(&id, 15);
    assert!(items.contains(&format!("jid='{SVC}'")), "{items}");

    let st = iq(
        &mut alice,
        "set",
        &format!("<pubsub xmlns='{PS}'><create node='news'/></pubsub>"),
    );
    assert!(is_result(&st), "{st}");
    assert!(is_result(&publish(&mut alice, "1", "first")));

    let st = iq(
        &mut bob,
        "set",
        &format!("<pubsub xmlns='{PS}'><subscribe node='news' jid='bob@localhost'/></pubsub>"),
    );
    assert!(
        is_result(&st) && st.contains("subscription='subscribed'"),
        "{st}"
    );
    // The last item follows the answer (possibly in the same read).
    bob.ping("after-subscribe");
    assert!(bob.all_text().contains("first"), "{}", bob.all_text());

    assert!(is_result(&publish(&mut alice, "2", "second")));
    let ev = bob.wait("the notification", 15, |t| t.contains("second"));
    assert!(
        ev.contains("http://jabber.org/protocol/pubsub#event"),
        "{ev}"
    );

    // Bob is no owner.
    assert!(is_error(&publish(&mut bob, "3", "spoof")));

    // An item over the stanza limit ends the stream; the service is unaffected.
    let big = "x".repeat(300 * 1024);
    bob.send(format!(
        "<iq type='set' id='big' to='{SVC}'><pubsub xmlns='{PS}'><publish node='news'>\
         <item id='b'><entry xmlns='urn:example:news'>{big}</entry></item></publish></pubsub></iq>"
    ));
    bob.expect_stream_error(15);

    alice.close();
    server.stop();
    server.start();
    let mut alice = server.login(ALICE, "a");
    let mut bob = server.login(BOB, "b");
    bob.available();
    let st = iq(
        &mut bob,
        "get",
        &format!("<pubsub xmlns='{PS}'><items node='news'/></pubsub>"),
    );
    assert!(st.contains("second") && st.contains("first"), "{st}");
    let subs = iq(
        &mut alice,
        "get",
        "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><subscriptions node='news'/></pubsub>",
    );
    assert!(subs.contains("jid='bob@localhost'"), "{subs}");
    assert!(is_result(&publish(&mut alice, "4", "after restart")));
    bob.wait("a notification after the restart", 15, |t| {
        t.contains("after restart")
    });
    server.assert_no_panic();
}

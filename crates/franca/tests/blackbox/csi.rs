//! XEP-0352 client state indication (issue 4 §4): while a client is inactive, presence is held
//! (only the newest per sender survives) and so are other stanzas that can wait; messages with
//! a body, call signalling and IQs go at once, after what was held; `<active/>` flushes.

use std::time::Duration;

use crate::client::Conn;
use crate::harness::{ALICE, BOB, Server};

const CSI: &str = "urn:xmpp:csi:0";
const SM: &str = "urn:xmpp:sm:3";
const ALICE_JID: &str = "alice@localhost/phone";

/// Directed presence (RFC 6121 §4.6) from Bob to Alice's phone, with a status to recognise it.
fn presence(bob: &mut Conn, status: &str) {
    bob.send(format!(
        "<presence to='{ALICE_JID}'><show>away</show><status>{status}</status></presence>"
    ));
}

/// `<inactive/>`, then a ping whose answer proves the server read it: Bob's stanzas travel on
/// another connection, so without this they could be routed before Alice's state changed.
/// (An IQ result is urgent, so it is not held.)
fn go_inactive(alice: &mut Conn) {
    alice.send(format!("<inactive xmlns='{CSI}'/>"));
    alice.ping("inactive");
}

/// Nothing new arrives for a moment (the server routed what Bob sent: his ping came back).
fn quiet(alice: &mut Conn, bob: &mut Conn) {
    bob.ping("routed");
    std::thread::sleep(Duration::from_millis(300));
    let (text, closed) = alice.read_until_closed(1);
    assert!(!closed, "alice's stream closed");
    assert!(
        !text.contains("<presence") && !text.contains("<message"),
        "delivered to an inactive client: {text}"
    );
}

fn positions(text: &str, needles: &[&str]) -> Vec<usize> {
    needles
        .iter()
        .map(|n| {
            text.find(n)
                .unwrap_or_else(|| panic!("{n} missing from {text}"))
        })
        .collect()
}

#[test]
fn xep0352_presence_is_held_deduplicated_and_flushed_on_active() {
    let s = Server::start_default();
    let mut alice = s.login(ALICE, "phone");
    let mut bob = s.login(BOB, "desk");
    let features = {
        let mut c = Conn::connect(s.c2s, &s.cert_pem());
        c.open_stream();
        c.scram_sha256(ALICE.0, ALICE.1).expect("login");
        let f = c.open_stream();
        c.close();
        f
    };
    assert!(
        features.contains(&format!("<csi xmlns='{CSI}'/>")),
        "{features}"
    );

    go_inactive(&mut alice);
    alice.ping("inactive");
    presence(&mut bob, "first");
    presence(&mut bob, "second");
    bob.send(format!(
        "<message to='{ALICE_JID}' type='chat' id='cs1'>\
         <composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ));
    presence(&mut bob, "third");
    quiet(&mut alice, &mut bob);

    alice.send(format!("<active xmlns='{CSI}'/>"));
    let text = alice.wait("the held stanzas", 15, |t| {
        t.contains("<status>third</status>") && t.contains("<composing")
    });
    // Superseded presence is gone; the chat state and the newest presence keep their order.
    assert!(!text.contains("<status>first</status>"), "{text}");
    assert!(!text.contains("<status>second</status>"), "{text}");
    let at = positions(&text, &["<composing", "<status>third</status>"]);
    assert!(at[0] < at[1], "{text}");
    // Active again: delivered at once.
    presence(&mut bob, "fourth");
    alice.wait("live presence", 15, |t| {
        t.contains("<status>fourth</status>")
    });
    s.assert_no_panic();
}

#[test]
fn xep0352_urgent_stanzas_go_at_once_after_what_was_held() {
    let s = Server::start_default();
    let mut alice = s.login(ALICE, "phone");
    let mut bob = s.login(BOB, "desk");
    go_inactive(&mut alice);
    alice.ping("inactive");
    presence(&mut bob, "held");
    bob.send(format!(
        "<message to='{ALICE_JID}' type='chat' id='rc1'>\
         <received xmlns='urn:xmpp:receipts' id='x'/></message>"
    ));
    quiet(&mut alice, &mut bob);
    // A message with a body wakes the client, preceded by what was held.
    bob.send(format!(
        "<message to='{ALICE_JID}' type='chat' id='b1'><body>wake up</body></message>"
    ));
    let text = alice.wait("the body message", 15, |t| {
        t.contains("<body>wake up</body>")
    });
    let at = positions(
        &text,
        &[
            "<status>held</status>",
            "urn:xmpp:receipts",
            "<body>wake up</body>",
        ],
    );
    assert!(at[0] < at[1] && at[1] < at[2], "{text}");
    // XEP-0353 call signalling is urgent too (still inactive: nothing was re-enabled).
    presence(&mut bob, "held-again");
    quiet(&mut alice, &mut bob);
    bob.send(format!(
        "<message to='{ALICE_JID}' type='chat' id='call1'>\
         <propose xmlns='urn:xmpp:jingle-message:0' id='c1'>\
         <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>"
    ));
    let text = alice.wait("the call", 15, |t| t.contains("<propose"));
    assert!(text.contains("<status>held-again</status>"), "{text}");
    s.assert_no_panic();
}

#[test]
fn xep0352_with_xep0198_held_stanzas_are_not_counted_until_sent() {
    let s = Server::start_default();
    let mut alice = s.login(ALICE, "phone");
    let mut bob = s.login(BOB, "desk");
    alice.send(format!("<enable xmlns='{SM}'/>"));
    alice.wait("<enabled/>", 15, |t| t.contains("<enabled "));
    go_inactive(&mut alice);
    for i in 0..8 {
        presence(&mut bob, &format!("p{i}"));
    }
    quiet(&mut alice, &mut bob);
    // Eight presences held and de-duplicated to one, and nothing of them counted while held:
    // the client has been sent the ping answer, the one presence and the next ping answer, so
    // acknowledging four stanzas is one too many.
    alice.send(format!("<active xmlns='{CSI}'/>"));
    let text = alice.wait("the newest presence", 15, |t| {
        t.contains("<status>p7</status>")
    });
    assert!(!text.contains("<status>p6</status>"), "{text}");
    alice.send(format!("<a xmlns='{SM}' h='1'/>"));
    alice.ping("counted");
    alice.send(format!("<a xmlns='{SM}' h='4'/>"));
    let (cond, text) = alice.expect_stream_error(15);
    assert_eq!(cond, "undefined-condition", "{text}");
    s.assert_no_panic();
}

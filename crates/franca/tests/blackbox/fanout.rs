//! MUC fan-out with shared bytes (issue 5): a groupchat message is serialised once and each
//! occupant's connection writes its own `to` into the shared bytes. Occupants on TCP, WebSocket
//! and BOSH, with resources that need every attribute escape, each get the message addressed
//! to them and otherwise byte for byte the same; the shared form is also what XEP-0198
//! resends after resumption and what the XEP-0352 hold queue keeps and releases.

use crate::bosh::Bosh;
use crate::client::{Conn, find_stanza};
use crate::harness::{ALICE, BOB, DOMAIN, Options, Server};
use crate::websocket::Ws;

const CAROL: (&str, &str) = ("carol", "carol-password-3");
const ROOM: &str = "fan@conference.localhost";
const OWNER: &str = "http://jabber.org/protocol/muc#owner";
const SM: &str = "urn:xmpp:sm:3";
const CSI: &str = "urn:xmpp:csi:0";
/// Alice's resource, `it's <me> & "more"`, written as XML text. It is also exactly how the
/// serialiser escapes it in an attribute.
const ODD: &str = "it&apos;s &lt;me&gt; &amp; &quot;more&quot;";

fn start() -> Server {
    Server::start_with(Options {
        users: vec![ALICE, BOB, CAROL],
        ..Options::default()
    })
}

fn join_presence(nick: &str) -> String {
    format!("<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
}

/// The last stanza of a join: the subject, with status 110 in the self-presence before it.
fn joined(t: &str) -> bool {
    t.contains("<subject") && t.contains("code='110'")
}

/// Alice (TCP) creates ROOM and accepts the default configuration (XEP-0045 §10.1.2).
fn create_room(alice: &mut Conn) {
    alice.send(join_presence("alice"));
    let text = alice.wait("the room created", 15, joined);
    assert!(text.contains("code='201'"), "{text}");
    alice.send(format!(
        "<iq type='set' id='cfg' to='{ROOM}'><query xmlns='{OWNER}'>\
         <x xmlns='jabber:x:data' type='submit'/></query></iq>"
    ));
    let st = alice.wait_stanza("cfg", 15);
    assert!(st.contains("type='result'"), "configuration refused: {st}");
}

/// A WebSocket stream logged in as `user` with PLAIN and bound to `resource` (XML text).
fn ws_login(s: &Server, user: (&str, &str), resource: &str) -> Ws {
    use base64::Engine;
    let mut ws = Ws::connect(s, Some("xmpp")).expect("WebSocket upgrade");
    ws.open();
    let plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", user.0, user.1));
    ws.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
    ));
    let success = ws.recv();
    assert!(success.starts_with("<success"), "{success}");
    ws.open();
    ws.send(&format!(
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{resource}</resource></bind></iq>"
    ));
    ws.recv_until(|m| m.contains("id='b1'"));
    ws
}

/// The `<message …>…</message>` with this id in `text`.
fn message<'a>(text: &'a str, id: &str) -> &'a str {
    let st = find_stanza(text, id).unwrap_or_else(|| panic!("no stanza {id} in {text}"));
    assert!(st.starts_with("<message"), "{st}");
    st
}

/// A copy with its addressee and namespace declaration taken out: what every occupant shares.
fn shared_part(copy: &str, to: &str) -> String {
    let addressed = format!(" to='{to}'");
    assert!(
        copy.starts_with(&format!("<message{addressed} "))
            || copy.starts_with(&format!("<message xmlns='jabber:client'{addressed} ")),
        "not addressed to {to} as its first attribute: {copy}"
    );
    copy.replacen(" xmlns='jabber:client'", "", 1)
        .replacen(&addressed, "", 1)
}

#[test]
fn muc_groupchat_reaches_tcp_websocket_and_bosh_occupants_each_addressed() {
    let s = start();
    let mut alice = s.login(ALICE, ODD);
    create_room(&mut alice);

    let mut bob = ws_login(&s, BOB, "web&amp;co");
    bob.send(&format!(
        "<presence xmlns='jabber:client' to='{ROOM}/bob'>\
         <x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    bob.recv_until(|m| m.contains("<subject"));

    let (mut carol, _) = Bosh::create(&s, 1);
    carol.login(CAROL, "bosh&lt;1&gt;");
    // A BOSH body's default namespace is httpbind: the stanza declares its own. The join may
    // complete in the answer to this very request.
    let answer = carol.send(&join_presence("carol").replacen(
        "<presence",
        "<presence xmlns='jabber:client'",
        1,
    ));
    if !answer.contains("<subject") {
        carol.poll_until("carol's join", |b| b.contains("<subject"));
    }

    alice.send(format!(
        "<message to='{ROOM}' type='groupchat' id='g1'><body>fan &lt;out&gt; &amp; more</body></message>"
    ));
    let at_alice = alice.wait("the groupchat message", 15, |t| {
        find_stanza(t, "g1").is_some()
    });
    let at_alice = message(&at_alice, "g1").to_owned();
    let at_bob = bob.recv_until(|m| m.contains("id='g1'"));
    let at_carol = carol.poll_until("the groupchat message", |b| b.contains("id='g1'"));
    let at_carol = message(&at_carol, "g1").to_owned();

    // RFC 7395 and XEP-0206: standalone copies declare the namespace, before the `to`.
    assert!(
        at_bob.starts_with("<message xmlns='jabber:client' to="),
        "{at_bob}"
    );
    assert!(
        at_carol.starts_with("<message xmlns='jabber:client' to="),
        "{at_carol}"
    );
    let shared = shared_part(&at_alice, &format!("alice@{DOMAIN}/{ODD}"));
    assert_eq!(
        shared_part(&at_bob, &format!("bob@{DOMAIN}/web&amp;co")),
        shared
    );
    assert_eq!(
        shared_part(&at_carol, &format!("carol@{DOMAIN}/bosh&lt;1&gt;")),
        shared
    );
    assert!(
        shared.contains("<body>fan &lt;out&gt; &amp; more</body>"),
        "{shared}"
    );
    assert!(shared.contains(&format!("from='{ROOM}/alice'")), "{shared}");
    s.assert_no_panic();
}

#[test]
fn xep0198_resumption_resends_shared_groupchat_copies_addressed() {
    let s = start();
    let mut a = Conn::connect(s.c2s, &s.cert_pem());
    a.open_stream();
    a.scram_sha256(ALICE.0, ALICE.1).expect("login");
    a.open_stream();
    a.bind(ODD);
    create_room(&mut a);
    // Enabled after the join, so the stanzas counted are the ones below.
    a.send(format!("<enable xmlns='{SM}' resume='true'/>"));
    let enabled = a.wait("<enabled/>", 15, |t| t.contains("<enabled "));
    let at = enabled.find(" id='").expect("a resumption id") + 5;
    let id = enabled[at..at + enabled[at..].find('\'').expect("quoted")].to_owned();

    let mut bob = s.login(BOB, "desk");
    bob.send(join_presence("bob"));
    bob.wait("bob's join", 15, joined);
    bob.send(format!(
        "<message to='{ROOM}' type='groupchat' id='s1'><body>before the cut</body></message>"
    ));
    a.wait("s1", 15, |t| find_stanza(t, "s1").is_some());
    // Nothing acknowledged; the connection dies without a word.
    a.shutdown();
    bob.send(format!(
        "<message to='{ROOM}' type='groupchat' id='s2'><body>while gone</body></message>"
    ));
    bob.wait_stanza("s2", 15);

    let mut a2 = Conn::connect(s.c2s, &s.cert_pem());
    a2.open_stream();
    a2.scram_sha256(ALICE.0, ALICE.1).expect("login");
    a2.open_stream();
    a2.send(format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"));
    let text = a2.wait("resumed, then s1 and s2", 15, |t| {
        find_stanza(t, "s1").is_some() && find_stanza(t, "s2").is_some()
    });
    assert!(text.contains("<resumed "), "{text}");
    let to = format!(" to='alice@{DOMAIN}/{ODD}'");
    for id in ["s1", "s2"] {
        let m = message(&text, id);
        assert!(m.starts_with(&format!("<message{to} ")), "{m}");
    }
    // Bob's join presence was resent too, addressed the same way.
    let presence = text
        .match_indices("<presence")
        .map(|(i, _)| &text[i..])
        .find(|p| p.starts_with(&format!("<presence{to} from='{ROOM}/bob'")));
    assert!(presence.is_some(), "{text}");
    s.assert_no_panic();
}

#[test]
fn xep0352_shared_groupchat_presence_is_held_and_released_addressed() {
    let s = start();
    let mut alice = s.login(ALICE, ODD);
    create_room(&mut alice);
    let mut bob = s.login(BOB, "desk");
    bob.send(join_presence("bob"));
    bob.wait("bob's join", 15, joined);
    alice.wait("bob's join presence", 15, |t| t.contains("/bob'"));

    alice.send(format!("<inactive xmlns='{CSI}'/>"));
    alice.ping("inactive");
    let mut carol = s.login(CAROL, "desk");
    carol.send(join_presence("carol"));
    carol.wait("carol's join", 15, joined);
    bob.ping("routed");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (quiet, _) = alice.read_until_closed(1);
    assert!(!quiet.contains("<presence"), "not held: {quiet}");

    // A message with a body is urgent: the held presence first, then it.
    bob.send(format!(
        "<message to='{ROOM}' type='groupchat' id='c1'><body>wake up</body></message>"
    ));
    let text = alice.wait("the held presence and the message", 15, |t| {
        find_stanza(t, "c1").is_some()
    });
    let to = format!(" to='alice@{DOMAIN}/{ODD}'");
    let held = text
        .find(&format!("<presence{to} from='{ROOM}/carol'"))
        .unwrap_or_else(|| panic!("held presence missing or misaddressed: {text}"));
    let urgent = text
        .find(&format!("<message{to} "))
        .unwrap_or_else(|| panic!("message misaddressed: {text}"));
    assert!(held < urgent, "{text}");

    // Held again, then released by <active/> (written through the stream, not the queue).
    bob.send(format!(
        "<presence to='{ROOM}/bob'><show>away</show></presence>"
    ));
    bob.ping("routed-again");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (quiet, _) = alice.read_until_closed(1);
    assert!(!quiet.contains("<show>away</show>"), "not held: {quiet}");
    alice.send(format!("<active xmlns='{CSI}'/>"));
    let text = alice.wait("the released presence", 15, |t| {
        t.contains("<show>away</show>")
    });
    assert!(
        text.contains(&format!("<presence{to} from='{ROOM}/bob'")),
        "{text}"
    );
    s.assert_no_panic();
}

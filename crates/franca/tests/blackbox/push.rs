//! XEP-0357 push notifications (issue 4 §6), with a logged-in client of this server as the app
//! server (`appserver@localhost/app`): an offline account and a session hibernated by
//! XEP-0198 each get exactly one notification per message, with the count and the sender but
//! no body; disabling stops them; an app server that answers with an error loses its
//! registration.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::client::{Conn, is_result};
use crate::harness::{ALICE, BOB, DOMAIN, Options, Server};

const PUSH: &str = "urn:xmpp:push:0";
const APP: (&str, &str) = ("appserver", "appserver-password-3");
const APP_JID: &str = "appserver@localhost/app";

fn start(extra: &str) -> Server {
    Server::start_with(Options {
        users: vec![ALICE, BOB, APP],
        extra: extra.into(),
        ..Options::default()
    })
}

fn iq(c: &mut Conn, id: &str, payload: &str) -> String {
    c.send(format!("<iq type='set' id='{id}'>{payload}</iq>"));
    c.wait_stanza(id, 15)
}

fn enable(c: &mut Conn, node: &str) {
    let st = iq(
        c,
        "enable",
        &format!("<enable xmlns='{PUSH}' jid='{APP_JID}' node='{node}'/>"),
    );
    assert!(is_result(&st), "enable refused: {st}");
}

/// Waits for the next notification at the app server; returns the whole `<iq>`.
fn next_notification(app: &mut Conn) -> String {
    let text = app.wait("a push notification", 15, |t| {
        t.contains(&format!("<notification xmlns='{PUSH}'>")) && t.contains("</iq>")
    });
    let start = text.find("<iq ").expect("an iq");
    text[start..start + text[start..].find("</iq>").expect("its end") + 5].to_owned()
}

fn attr<'a>(stanza: &'a str, name: &str) -> &'a str {
    let at = stanza.find(&format!(" {name}='")).expect("attribute") + name.len() + 3;
    &stanza[at..at + stanza[at..].find('\'').expect("quote")]
}

fn notifications(app: &Conn) -> usize {
    app.all_text()
        .matches(&format!("<notification xmlns='{PUSH}'>"))
        .count()
}

fn chat(bob: &mut Conn, to: &str, body: &str) {
    bob.send(format!(
        "<message to='{to}' type='chat'><body>{body}</body></message>"
    ));
    // Routing (and the publish it causes) happens before Bob's next stanza is read.
    bob.ping("after-chat");
}

fn assert_summary(n: &str, count: u32) {
    assert_eq!(attr(n, "from"), "alice@localhost", "{n}");
    assert_eq!(attr(n, "to"), APP_JID, "{n}");
    assert!(n.contains("<publish node='phone-1'>"), "{n}");
    assert!(n.contains("<value>urn:xmpp:push:summary</value>"), "{n}");
    assert!(
        n.contains(&format!(
            "<field var='message-count'><value>{count}</value>"
        )),
        "{n}"
    );
    assert!(
        n.contains("<field var='last-message-sender'><value>bob@localhost/desk</value>"),
        "{n}"
    );
    assert!(!n.contains("secret"), "a body went out: {n}");
}

#[test]
fn xep0357_an_offline_account_is_pushed_once_per_message_until_it_disables() {
    let mut s = start("");
    let mut app = s.login(APP, "app");
    app.available();
    let mut bob = s.login(BOB, "desk");
    let mut alice = s.login(ALICE, "phone");
    // §4: the account advertises push.
    alice.send(
        "<iq type='get' id='info'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let info = alice.wait_stanza("info", 15);
    assert!(info.contains(&format!("<feature var='{PUSH}'/>")), "{info}");
    enable(&mut alice, "phone-1");
    alice.close();
    // The end of Alice's stream is handled by its own task: wait until messages to her are
    // stored rather than delivered.
    std::thread::sleep(Duration::from_millis(300));

    chat(&mut bob, "alice@localhost", "secret one");
    let n = next_notification(&mut app);
    assert_summary(&n, 1);
    app.send(format!(
        "<iq type='result' id='{}' to='alice@localhost'/>",
        attr(&n, "id")
    ));
    // A chat state alone is not worth a notification; the next message counts 2.
    bob.send("<message to='alice@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    chat(&mut bob, "alice@localhost", "secret two");
    let n = next_notification(&mut app);
    assert_summary(&n, 2);
    app.ping("settled");
    assert_eq!(notifications(&app), 2, "{}", app.all_text());

    // Alice comes back, gets her messages, disables push and leaves again: nothing more.
    let mut alice = s.login(ALICE, "phone");
    // Offline messages are queued before the answer to the ping `available` waits for.
    alice.available();
    assert!(
        alice.all_text().contains("secret two"),
        "{}",
        alice.all_text()
    );
    let st = iq(
        &mut alice,
        "disable",
        &format!("<disable xmlns='{PUSH}' jid='{APP_JID}'/>"),
    );
    assert!(is_result(&st), "{st}");
    alice.close();
    std::thread::sleep(Duration::from_millis(300));
    chat(&mut bob, "alice@localhost", "secret three");
    app.ping("after-disable");
    assert_eq!(notifications(&app), 2, "{}", app.all_text());
    s.assert_serves();
}

#[test]
fn xep0357_7_1_an_app_server_error_disables_the_registration() {
    let s = start("");
    let mut app = s.login(APP, "app");
    app.available();
    let mut bob = s.login(BOB, "desk");
    let mut alice = s.login(ALICE, "phone");
    enable(&mut alice, "phone-1");
    alice.close();
    std::thread::sleep(Duration::from_millis(300));

    chat(&mut bob, "alice@localhost", "secret one");
    let n = next_notification(&mut app);
    app.send(format!(
        "<iq type='error' id='{}' to='alice@localhost'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        attr(&n, "id")
    ));
    app.ping("after-error");
    chat(&mut bob, "alice@localhost", "secret two");
    app.ping("settled");
    assert_eq!(notifications(&app), 1, "{}", app.all_text());
    // The error answer itself went nowhere else: Bob saw no error.
    assert!(
        !bob.all_text().contains("type='error'"),
        "{}",
        bob.all_text()
    );
    s.assert_no_panic();
}

fn metrics(s: &Server) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", s.http)).expect("connect to the HTTP listener");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn xep0357_a_session_hibernated_by_stream_management_is_pushed() {
    let s = start("[stream_management]\nresume_timeout_seconds = 60\n");
    let mut app = s.login(APP, "app");
    app.available();
    let mut bob = s.login(BOB, "desk");
    let mut alice = s.login(ALICE, "phone");
    alice.available();
    enable(&mut alice, "phone-1");
    alice.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    alice.wait("<enabled/>", 15, |t| t.contains("<enabled "));
    // Live: messages are delivered, nothing is pushed.
    chat(&mut bob, "alice@localhost", "secret live");
    alice.wait("the live message", 15, |t| t.contains("secret live"));
    alice.ping("before-cut");
    alice.shutdown();
    // Until the server has noticed the cut and hibernated the session.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !metrics(&s).contains("franca_sm_hibernated_total 1") {
        assert!(Instant::now() < deadline, "the session never hibernated");
        std::thread::sleep(Duration::from_millis(50));
    }

    chat(&mut bob, "alice@localhost", "secret one");
    let n = next_notification(&mut app);
    assert_summary(&n, 1);
    app.send(format!(
        "<iq type='result' id='{}' to='alice@localhost'/>",
        attr(&n, "id")
    ));
    chat(&mut bob, "alice@localhost/phone", "secret two");
    assert_summary(&next_notification(&mut app), 2);
    app.ping("settled");
    assert_eq!(notifications(&app), 2, "{}", app.all_text());
    s.assert_no_panic();
}

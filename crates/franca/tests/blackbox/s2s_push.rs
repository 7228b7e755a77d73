//! XEP-0357 push to an app server on another domain (issue 6 §4): Alice's server (`localhost`)
//! publishes her notifications over federation to `nurse@b.test/app`, a client of a second
//! Franca (`b.test`, static routes both ways, dialback). The app server's answers come back
//! over the same link: a result keeps the registration, an error disables it (§7.1).

use crate::client::{Conn, is_result};
use crate::harness::{ALICE, BOB, DOMAIN, Options, Server};

const PUSH: &str = "urn:xmpp:push:0";
const NURSE: (&str, &str) = ("nurse", "nurse-password-7");
const APP_JID: &str = "nurse@b.test/app";

fn server(opts: Options, routes_to: &str, port: u16) -> Server {
    let s = Server::new(opts);
    let mut cfg = std::fs::read_to_string(&s.config).expect("read config");
    cfg.push_str(&format!(
        "\n[s2s]\nconnect_timeout_seconds = 10\n[s2s.routes]\n\"{routes_to}\" = \"127.0.0.1:{port}\"\n"
    ));
    std::fs::write(&s.config, cfg).expect("write config");
    s
}

fn add_users(s: &Server) {
    for (user, pw) in s.opts.users.clone() {
        s.add_user(&format!("{user}@{}", s.opts.domain), pw);
    }
}

/// Waits for the next push publish at the app server; returns the whole `<iq>`.
fn next_publish(app: &mut Conn) -> String {
    let text = app.wait("a push notification over s2s", 30, |t| {
        t.contains(&format!("<notification xmlns='{PUSH}'>")) && t.contains("</iq>")
    });
    let start = text.find("<iq ").expect("an iq");
    text[start..start + text[start..].find("</iq>").expect("its end") + 5].to_owned()
}

fn attr<'a>(stanza: &'a str, name: &str) -> &'a str {
    let at = stanza.find(&format!(" {name}='")).expect("attribute") + name.len() + 3;
    &stanza[at..at + stanza[at..].find('\'').expect("quote")]
}

fn chat(bob: &mut Conn, body: &str) {
    bob.send(format!(
        "<message to='alice@{DOMAIN}' type='chat'><body>{body}</body></message>"
    ));
    bob.ping("after-chat");
}

#[test]
fn xep0357_notifications_reach_an_app_server_on_another_domain() {
    // b.test's c2s takes plaintext logins: the harness's TLS client knows only `localhost`.
    let mut b = server(
        Options {
            domain: "b.test",
            s2s: true,
            allow_plaintext: true,
            users: vec![NURSE],
            ..Options::default()
        },
        DOMAIN,
        0,
    );
    let mut a = server(
        Options {
            s2s: true,
            users: vec![ALICE, BOB],
            ..Options::default()
        },
        "b.test",
        b.s2s,
    );
    // Now that a's port is known, b's route to it.
    let cfg = std::fs::read_to_string(&b.config)
        .expect("read config")
        .replace("127.0.0.1:0\"", &format!("127.0.0.1:{}\"", a.s2s));
    std::fs::write(&b.config, cfg).expect("write config");
    add_users(&a);
    add_users(&b);
    Server::start_peers(&mut [&mut a, &mut b]);

    let mut app = b.login(NURSE, "app");
    app.available();
    let mut alice = a.login(ALICE, "phone");
    alice.send(format!(
        "<iq type='set' id='enable'><enable xmlns='{PUSH}' jid='{APP_JID}' node='dev-1'/></iq>"
    ));
    let st = alice.wait_stanza("enable", 15);
    assert!(is_result(&st), "enable refused: {st}");
    alice.close();
    let mut bob = a.login(BOB, "desk");

    chat(&mut bob, "first");
    let n = next_publish(&mut app);
    assert_eq!(attr(&n, "from"), "alice@localhost", "{n}");
    assert_eq!(attr(&n, "to"), APP_JID, "{n}");
    assert!(n.contains("<publish node='dev-1'>"), "{n}");
    assert!(
        n.contains("<field var='message-count'><value>1</value>"),
        "{n}"
    );
    // The app server accepts it: the registration stays.
    app.send(format!(
        "<iq type='result' id='{}' to='alice@localhost'/>",
        attr(&n, "id")
    ));

    chat(&mut bob, "second");
    let n = next_publish(&mut app);
    assert!(
        n.contains("<field var='message-count'><value>2</value>"),
        "{n}"
    );
    // Now it refuses one: the registration is disabled.
    app.send(format!(
        "<iq type='error' id='{}' to='alice@localhost'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        attr(&n, "id")
    ));
    // A message from the app server's side behind the error, on the same link: once Bob has
    // it, Alice's server has handled the error.
    app.send(format!(
        "<message to='bob@{DOMAIN}/desk' type='chat'><body>behind the error</body></message>"
    ));
    bob.wait("the message behind the error", 30, |t| {
        t.contains("behind the error")
    });
    chat(&mut bob, "third");
    // A message of Bob's to the app server goes over the link any publish would take.
    bob.send(format!(
        "<message to='{APP_JID}' type='chat'><body>marker two</body></message>"
    ));
    let text = app.wait("marker two", 30, |t| t.contains("marker two"));
    assert!(
        !text.contains(&format!("<notification xmlns='{PUSH}'>")),
        "no notification after the app server's error: {text}"
    );
    a.assert_no_panic();
    b.assert_no_panic();
}

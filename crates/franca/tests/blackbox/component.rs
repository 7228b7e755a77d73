//! XEP-0114 components: a raw-socket component handshakes on the component port, exchanges
//! messages and IQs with a local user through the router, and is listed in disco; wrong
//! secrets, unknown domains, a second component for a domain, spoofed `from` addresses,
//! oversize stanzas and garbage get their stream errors.

use crate::client::{
    Conn, element_text, find_stanza, is_error, is_result, stanza_error, stream_error,
};
use crate::harness::{ALICE, BOB, LOOPBACK, Options, Server};
use franca_proto::component::handshake_value;
use std::time::{Duration, Instant};

const IRC: &str = "irc.localhost";
const SECRET: &str = "component-secret-1";

fn server(opts: Options) -> Server {
    Server::start_with(Options {
        components: vec![(IRC, SECRET), ("other.localhost", "other-secret")],
        ..opts
    })
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
    )
}

/// A TCP connection to the component port. The harness waits for the c2s and HTTP ports
/// only, and the component listener is bound after them, so the first connect may be early.
fn tcp(s: &Server) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Conn::tcp_from(LOOPBACK, s.component).is_err() {
        assert!(
            Instant::now() < deadline,
            "component port {} never opened",
            s.component
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Conn::connect(s.component, &s.cert_pem())
}

/// Opens a component stream for `domain`; returns the connection and the stream id.
fn open(s: &Server, domain: &str) -> (Conn, String) {
    let mut c = tcp(s);
    c.send(header(domain));
    let text = c.wait("the server's component stream header", 15, |t| {
        t.find("<stream:stream")
            .is_some_and(|i| t[i..].contains('>'))
    });
    let start = text.find("<stream:stream").unwrap_or(0);
    let tag = &text[start..start + text[start..].find('>').unwrap_or(0)];
    assert!(tag.contains("xmlns='jabber:component:accept'"), "{text}");
    let id = tag
        .split("id='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap_or_else(|| panic!("no stream id in {text}"))
        .to_owned();
    (c, id)
}

/// A component connected and authenticated for `domain`.
fn connect(s: &Server, domain: &str, secret: &str) -> Conn {
    let (mut c, id) = open(s, domain);
    c.send(format!(
        "<handshake>{}</handshake>",
        handshake_value(&id, secret)
    ));
    c.wait("<handshake/>", 15, |t| t.contains("<handshake/>"));
    c
}

#[test]
fn xep0114_component_exchanges_stanzas_with_a_local_user() {
    let s = server(Options::default());
    let mut irc = connect(&s, IRC, SECRET);
    let mut alice = s.login(ALICE, "desk");
    alice.available();

    // Local user → component, through the router.
    alice.send(format!(
        "<message to='#test%127.0.0.1@{IRC}' id='m1' type='groupchat'><body>hello irc</body></message>"
    ));
    let got = irc.wait("alice's message", 15, |t| t.contains("hello irc"));
    let m = find_stanza(&got, "m1").unwrap_or_else(|| panic!("{got}"));
    assert!(m.contains("from='alice@localhost/desk'"), "{m}");
    assert!(
        !m.contains("jabber:client"),
        "in the component namespace: {m}"
    );

    // Component → local user.
    irc.send(format!(
        "<message from='#test%127.0.0.1@{IRC}/bob' to='alice@localhost/desk' id='m2' \
         type='groupchat'><body>hi from irc</body></message>"
    ));
    let got = alice.wait("the component's message", 15, |t| t.contains("hi from irc"));
    let m = find_stanza(&got, "m2").unwrap_or_else(|| panic!("{got}"));
    assert!(
        m.contains(&format!("from='#test%127.0.0.1@{IRC}/bob'")),
        "{m}"
    );

    // The component is an item of the served domain, and answers its own disco#info.
    alice.send(
        "<iq type='get' id='items1' to='localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    let items = alice.wait_stanza("items1", 15);
    assert!(items.contains(&format!("jid='{IRC}'")), "{items}");
    assert!(!items.contains("other.localhost"), "not connected: {items}");
    alice.send(format!(
        "<iq type='get' id='info1' to='{IRC}'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    irc.wait("the disco#info query", 15, |t| {
        find_stanza(t, "info1").is_some()
    });
    irc.send(format!(
        "<iq type='result' id='info1' from='{IRC}' to='alice@localhost/desk'>\
         <query xmlns='http://jabber.org/protocol/disco#info'>\
         <identity category='gateway' type='irc' name='IRC'/></query></iq>"
    ));
    let info = alice.wait_stanza("info1", 15);
    assert!(is_result(&info), "{info}");
    assert!(info.contains("category='gateway'"), "{info}");

    // An IQ from the component to the server is answered by the server's modules.
    irc.send(format!(
        "<iq type='get' id='ping1' from='{IRC}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    let pong = irc.wait("the server's ping answer", 15, |t| {
        find_stanza(t, "ping1").is_some()
    });
    assert!(
        is_result(find_stanza(&pong, "ping1").unwrap_or_default()),
        "{pong}"
    );

    // A second component for the same domain is refused; the first keeps working.
    let (mut second, id) = open(&s, IRC);
    second.send(format!(
        "<handshake>{}</handshake>",
        handshake_value(&id, SECRET)
    ));
    let (cond, text) = second.expect_stream_error(15);
    assert_eq!(cond, "conflict", "{text}");
    alice.send(format!(
        "<message to='bot@{IRC}' id='m3'><body>still there?</body></message>"
    ));
    irc.wait("a message after the refused duplicate", 15, |t| {
        t.contains("still there?")
    });

    // Once the component is gone, stanzas to its domain bounce.
    irc.send("</stream:stream>");
    let (_, closed) = irc.read_until_closed(15);
    assert!(closed, "the server closes its side too");
    alice.send(format!(
        "<message to='bot@{IRC}' id='m4'><body>anyone?</body></message>"
    ));
    let bounce = alice.wait_stanza("m4", 15);
    assert!(is_error(&bounce), "{bounce}");
    // Still this server's domain: not dialled as a remote server.
    assert_eq!(
        stanza_error(&bounce).as_deref(),
        Some("service-unavailable"),
        "{bounce}"
    );
    // And the domain can be connected again.
    let mut again = connect(&s, IRC, SECRET);
    alice.send(format!(
        "<message to='bot@{IRC}' id='m5'><body>welcome back</body></message>"
    ));
    again.wait("a message for the new connection", 15, |t| {
        t.contains("welcome back")
    });

    // SIGTERM: the component hears <system-shutdown/> and the server exits cleanly.
    let mut s = s;
    s.sigterm();
    let (cond, text) = again.expect_stream_error(15);
    assert_eq!(cond, "system-shutdown", "{text}");
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|st| st.success()), "exit: {status:?}");
}

#[test]
fn xep0114_refusals_get_their_stream_errors() {
    let mut s = server(
        Options::default()
            .limit("max_stanza_bytes", 4096)
            .limit("negotiation_timeout_seconds", 5),
    );

    // A header and then silence: the handshake must come within the negotiation timeout.
    let (mut c, _) = open(&s, IRC);
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "connection-timeout", "{text}");

    // Wrong secret.
    let (mut c, id) = open(&s, IRC);
    c.send(format!(
        "<handshake>{}</handshake>",
        handshake_value(&id, "not-the-secret")
    ));
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "not-authorized", "{text}");

    // A domain with no [[component]] entry.
    let mut c = tcp(&s);
    c.send(header("unknown.localhost"));
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "host-unknown", "{text}");

    // The served domain itself is not a component's.
    let mut c = tcp(&s);
    c.send(header("localhost"));
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "host-unknown", "{text}");

    // A stanza before the handshake.
    let (mut c, _) = open(&s, IRC);
    c.send(format!(
        "<message from='x@{IRC}' to='alice@localhost'><body>early</body></message>"
    ));
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "not-authorized", "{text}");

    // A handshake with no stream header at all.
    let mut c = tcp(&s);
    c.send("<handshake>0000000000000000000000000000000000000000</handshake>");
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "invalid-namespace", "{text}");

    // Garbage.
    let mut c = tcp(&s);
    c.send("\u{1}\u{2}GET / HTTP/1.1\r\n\r\n");
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "not-well-formed", "{text}");

    // A c2s header on the component port.
    let mut c = tcp(&s);
    c.send(crate::client::stream_header());
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "invalid-namespace", "{text}");

    let mut bob = s.login(BOB, "phone");
    bob.available();

    // A spoofed `from` (a local account): the stream ends and nothing reaches bob.
    let mut c = connect(&s, IRC, SECRET);
    c.send(
        "<message from='alice@localhost/desk' to='bob@localhost/phone' id='spoof'>\
         <body>spoofed</body></message>",
    );
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "invalid-from", "{text}");
    // Another component's domain is no better.
    let mut c = connect(&s, IRC, SECRET);
    c.send(
        "<message from='x@other.localhost' to='bob@localhost/phone' id='spoof2'>\
         <body>spoofed too</body></message>",
    );
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "invalid-from", "{text}");

    // An oversize stanza.
    let mut c = connect(&s, IRC, SECRET);
    let body = "x".repeat(8192);
    let _ = c.try_send(format!(
        "<message from='x@{IRC}' to='bob@localhost/phone'><body>{body}</body></message>"
    ));
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "policy-violation", "{text}");

    // Nothing spoofed arrived; a proper message after all that does.
    let mut c = connect(&s, IRC, SECRET);
    c.send(format!(
        "<message from='x@{IRC}' to='bob@localhost/phone' id='ok1'><body>legit</body></message>"
    ));
    let got = bob.wait("the legitimate message", 15, |t| t.contains("legit"));
    assert!(!got.contains("spoofed"), "{got}");
    assert_eq!(
        element_text(&got, "body").as_deref(),
        Some("legit"),
        "{got}"
    );
    assert!(stream_error(&got).is_none());
    s.assert_serves();
}

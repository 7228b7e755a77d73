//! Issue 2 §9, the hostile-input table. Each case puts the bytes on the wire, checks the error the
//! server answers with, and then that the server still serves a new session (and did not panic).

use std::time::{Duration, Instant};

use crate::client::{Conn, find_stanza, has_features, is_error, stanza_error, stream_header};
use crate::harness::{ALICE, BOB, LOOPBACK2, Options, Server};

/// Sends `payload` on a fresh unauthenticated stream and returns the stream error condition.
fn pre_auth(server: &Server, payload: &[u8]) -> (String, String) {
    let mut c = Conn::connect(server.c2s, &server.cert_pem());
    c.open_stream();
    // The server may close the stream while we are still writing: that is fine.
    let _ = c.try_send(payload);
    c.expect_stream_error(15)
}

/// The same on an authenticated session (alice).
fn post_auth(server: &Server, payload: &[u8]) -> (String, String) {
    let mut c = server.login(ALICE, "hostile");
    let _ = c.try_send(payload);
    c.expect_stream_error(15)
}

fn assert_condition(got: &(String, String), allowed: &[&str], case: &str) {
    assert!(
        allowed.contains(&got.0.as_str()),
        "{case}: expected stream error {allowed:?}, got <{}/>; received:\n{}",
        got.0,
        got.1
    );
}

fn nested(depth: usize) -> String {
    // `depth` levels counted from the stanza element itself (the stream root adds one more).
    let mut s = String::from("<message to='bob@localhost' type='chat'>");
    for _ in 1..depth {
        s.push_str("<x xmlns='urn:example:nest'>");
    }
    for _ in 1..depth {
        s.push_str("</x>");
    }
    s.push_str("</message>");
    s
}

fn with_attributes(n: usize) -> String {
    let attrs: String = (0..n).map(|i| format!(" a{i}='v'")).collect();
    format!(
        "<message to='bob@localhost' type='chat'><x xmlns='urn:example:attrs'{attrs}/></message>"
    )
}

fn body_of(bytes: usize) -> String {
    format!(
        "<message to='bob@localhost' type='chat'><body>{}</body></message>",
        "A".repeat(bytes)
    )
}

// --- stanza size -------------------------------------------------------------------------------

#[test]
fn stanza_over_default_size_limit_is_policy_violation() {
    // Default limit: 256 KiB.
    let mut s = Server::start_default();
    let got = pre_auth(&s, body_of(300 * 1024).as_bytes());
    assert_condition(&got, &["policy-violation"], "300 KiB stanza before auth");
    let got = post_auth(&s, body_of(300 * 1024).as_bytes());
    assert_condition(&got, &["policy-violation"], "300 KiB stanza after auth");
    s.assert_serves();
}

#[test]
fn stanza_over_configured_size_limit_is_policy_violation() {
    let mut s = Server::start_with(Options::default().limit("max_stanza_bytes", 16384));
    // Just under the limit is delivered normally.
    let mut alice = s.login(ALICE, "size");
    let mut bob = s.login(BOB, "size");
    bob.available();
    alice.send(body_of(8 * 1024));
    bob.wait("the 8 KiB message", 15, |t| {
        t.contains(&"A".repeat(8 * 1024))
    });
    let _ = alice.try_send(body_of(32 * 1024));
    let got = alice.expect_stream_error(15);
    assert_condition(
        &got,
        &["policy-violation"],
        "32 KiB stanza with a 16 KiB limit",
    );
    // Bob's session is unaffected.
    bob.ping("bob-after");
    s.assert_serves();
}

// --- depth -------------------------------------------------------------------------------------

#[test]
fn depth_over_64_is_policy_violation() {
    let mut s = Server::start_default();
    // Within the limit: accepted and routed.
    let mut alice = s.login(ALICE, "depth");
    alice.send(nested(60));
    alice.ping("after-depth-60");
    // Depth 65 (counted from the stanza): only the opening tags are sent, so the limit has to
    // trip while reading, before the stanza could be complete.
    let opens: String = std::iter::once("<message to='bob@localhost'>".to_owned())
        .chain((1..65).map(|_| "<x xmlns='urn:example:nest'>".to_owned()))
        .collect();
    let got = pre_auth(&s, opens.as_bytes());
    assert_condition(&got, &["policy-violation"], "depth 65 before auth");
    let got = post_auth(&s, nested(65).as_bytes());
    assert_condition(&got, &["policy-violation"], "depth 65 after auth");
    let got = post_auth(&s, nested(10_000).as_bytes());
    assert_condition(&got, &["policy-violation"], "depth 10000 after auth");
    s.assert_serves();
}

// --- attributes --------------------------------------------------------------------------------

#[test]
fn too_many_attributes_is_policy_violation() {
    let mut s = Server::start_with(Options::default().limit("max_attributes", 32));
    let mut alice = s.login(ALICE, "attrs");
    alice.send(with_attributes(10));
    alice.ping("after-10-attrs");
    let got = pre_auth(&s, with_attributes(100).as_bytes());
    assert_condition(&got, &["policy-violation"], "100 attributes before auth");
    let got = post_auth(&s, with_attributes(100).as_bytes());
    assert_condition(&got, &["policy-violation"], "100 attributes after auth");
    s.assert_serves();
}

#[test]
fn too_many_attributes_default_limit() {
    let mut s = Server::start_default();
    let got = pre_auth(&s, with_attributes(5000).as_bytes());
    assert_condition(
        &got,
        &["policy-violation"],
        "5000 attributes (default limit)",
    );
    s.assert_serves();
}

// --- DTD, entities, processing instructions ----------------------------------------------------

const RESTRICTED: &[&str] = &["restricted-xml", "not-well-formed"];

#[test]
fn doctype_before_stream_header_is_refused() {
    let mut s = Server::start_default();
    let mut c = Conn::connect(s.c2s, &s.cert_pem());
    let _ = c.try_send(format!(
        "<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]>{}",
        &stream_header()["<?xml version='1.0'?>".len()..]
    ));
    let got = c.expect_stream_error(15);
    assert_condition(&got, RESTRICTED, "DOCTYPE before the stream header");
    assert!(
        !has_features(&got.1),
        "features offered after a DOCTYPE: {}",
        got.1
    );
    s.assert_serves();
}

#[test]
fn doctype_inside_stream_is_refused() {
    let mut s = Server::start_default();
    let got = pre_auth(
        &s,
        b"<!DOCTYPE x [<!ENTITY a 'b'>]><message><body>&a;</body></message>",
    );
    assert_condition(&got, RESTRICTED, "DOCTYPE inside the stream");
    s.assert_serves();
}

#[test]
fn entity_reference_is_refused() {
    let mut s = Server::start_default();
    let got = pre_auth(
        &s,
        b"<message to='bob@localhost'><body>&xxe;</body></message>",
    );
    assert_condition(&got, RESTRICTED, "undefined entity before auth");
    let got = post_auth(
        &s,
        b"<message to='bob@localhost'><body>&lol9;</body></message>",
    );
    assert_condition(&got, RESTRICTED, "undefined entity after auth");
    // The predefined entities and character references are ordinary XML and stay accepted.
    let mut alice = s.login(ALICE, "entities");
    let mut bob = s.login(BOB, "entities");
    bob.available();
    alice.send(
        "<message to='bob@localhost' type='chat'><body>&lt;&amp;&gt;&#x263A;&#65;</body></message>",
    );
    bob.wait("the message with predefined entities", 15, |t| {
        t.contains("<body>")
    });
    s.assert_serves();
}

#[test]
fn processing_instruction_is_refused() {
    let mut s = Server::start_default();
    let got = pre_auth(&s, b"<?evil instruction?><message/>");
    assert_condition(&got, RESTRICTED, "processing instruction at stream level");
    let got = post_auth(
        &s,
        b"<message to='bob@localhost'><?evil instruction?><body>x</body></message>",
    );
    assert_condition(&got, RESTRICTED, "processing instruction inside a stanza");
    s.assert_serves();
}

#[test]
fn comment_is_refused() {
    // RFC 6120 §11.1: comments are not allowed either.
    let mut s = Server::start_default();
    let got = pre_auth(&s, b"<!-- hello --><message/>");
    assert_condition(&got, RESTRICTED, "XML comment");
    s.assert_serves();
}

// --- encoding ----------------------------------------------------------------------------------

#[test]
fn invalid_utf8_is_not_well_formed() {
    let mut s = Server::start_default();
    let got = pre_auth(
        &s,
        b"<message to='bob@localhost'><body>\xff\xfe\xc3\x28</body></message>",
    );
    assert_condition(&got, &["not-well-formed"], "invalid UTF-8 before auth");
    let got = post_auth(
        &s,
        b"<message to='bob@localhost'><body>ok \xed\xa0\x80 surrogate</body></message>",
    );
    assert_condition(
        &got,
        &["not-well-formed"],
        "UTF-8-encoded surrogate after auth",
    );
    let got = post_auth(
        &s,
        b"<message to='b\xc0\xafb@localhost'><body>x</body></message>",
    );
    assert_condition(&got, &["not-well-formed"], "overlong UTF-8 in an attribute");
    s.assert_serves();
}

#[test]
fn not_well_formed_xml_is_refused() {
    let mut s = Server::start_default();
    let got = pre_auth(&s, b"<message><body>x</message>");
    assert_condition(&got, &["not-well-formed"], "mismatched end tag");
    let got = post_auth(&s, b"<message a='1' a='2'/>");
    assert_condition(&got, &["not-well-formed"], "duplicate attribute");
    s.assert_serves();
}

// --- addresses ---------------------------------------------------------------------------------

#[test]
fn bad_jid_in_to_is_jid_malformed() {
    let mut s = Server::start_default();
    let mut alice = s.login(ALICE, "jids");
    let long_local = "a".repeat(1100);
    let bad = [
        "@localhost".to_owned(),
        "a b@localhost".to_owned(),
        "bob@localhost/".to_owned(),
        format!("{long_local}@localhost"),
        "bob@local host".to_owned(),
    ];
    for (n, to) in bad.iter().enumerate() {
        let id = format!("badiq{n}");
        alice.send(format!(
            "<iq type='get' id='{id}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        let st = alice.wait_stanza(&id, 15);
        assert!(is_error(&st), "iq to {to:?}: expected an error, got {st}");
        assert_eq!(
            stanza_error(&st).as_deref(),
            Some("jid-malformed"),
            "iq to {to:?}: {st}"
        );
        let id = format!("badmsg{n}");
        alice.send(format!(
            "<message type='chat' id='{id}' to='{to}'><body>x</body></message>"
        ));
        let st = alice.wait_stanza(&id, 15);
        assert!(
            is_error(&st),
            "message to {to:?}: expected an error, got {st}"
        );
        assert_eq!(
            stanza_error(&st).as_deref(),
            Some("jid-malformed"),
            "message to {to:?}: {st}"
        );
    }
    // The session itself is fine.
    alice.ping("after-bad-jids");
    s.assert_serves();
}

// --- STARTTLS ----------------------------------------------------------------------------------

#[test]
fn plaintext_behind_starttls_is_discarded() {
    let mut s = Server::start_with(Options::tls_required());
    let mut c = Conn::connect(s.c2s, &s.cert_pem());
    let features = c.open_stream();
    assert!(
        features.contains("<starttls"),
        "no STARTTLS offered: {features}"
    );
    // The classic injection: a command pipelined in the same packet as <starttls/>. If it were
    // processed after TLS starts, it would answer to the id 'injected'.
    c.send(
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
         <iq type='get' id='injected' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    let before = c.wait("<proceed/>", 15, |t| t.contains("<proceed"));
    assert!(
        !before.contains("injected"),
        "answered the injected stanza in plaintext: {before}"
    );
    c.upgrade_tls();
    c.open_stream();
    c.scram_sha256(ALICE.0, ALICE.1)
        .expect("login after STARTTLS");
    c.open_stream();
    c.bind("after-injection");
    c.ping("post-tls");
    let all = c.all_text();
    assert!(
        !all.contains("injected"),
        "plaintext sent behind <starttls/> was processed inside TLS:\n{all}"
    );
    c.close();
    s.assert_serves();
}

#[test]
fn tls_is_required_by_default() {
    let mut s = Server::start_with(Options::tls_required());
    let mut c = Conn::connect(s.c2s, &s.cert_pem());
    let features = c.open_stream();
    assert!(
        features.contains("<starttls"),
        "no STARTTLS offered: {features}"
    );
    assert!(
        !features.contains("<mechanism>PLAIN</mechanism>"),
        "PLAIN offered before TLS: {features}"
    );
    match c.scram_sha256(ALICE.0, ALICE.1) {
        Ok(t) => panic!("authenticated without TLS although TLS is required: {t}"),
        Err(t) => assert!(!t.contains("<success"), "{t}"),
    }
    s.assert_serves();
}

// --- login failures ----------------------------------------------------------------------------

#[test]
fn failed_logins_lead_to_a_temporary_lockout() {
    let mut s = Server::start_with(
        Options::default()
            .limit("max_failed_logins", 3)
            .limit("lockout_seconds", 120),
    );
    for attempt in 1..=3 {
        let mut c = Conn::connect(s.c2s, &s.cert_pem());
        c.open_stream();
        let failure = c
            .scram_sha256(ALICE.0, "wrong password")
            .expect_err("a wrong password must be refused");
        assert!(
            failure.contains("<not-authorized"),
            "attempt {attempt}: expected <failure><not-authorized/>, got: {failure}"
        );
        c.close();
    }
    // Now even the right password is refused, from this IP…
    let mut c = Conn::connect(s.c2s, &s.cert_pem());
    c.open_stream();
    if let Ok(t) = c.scram_sha256(ALICE.0, ALICE.1) {
        panic!(
            "login accepted right after {} failures (no lock-out): {t}",
            3
        );
    }
    c.close();
    // …and for this account from another address (per-account limit).
    let mut c = Conn::connect_from(LOOPBACK2, s.c2s, &s.cert_pem());
    c.open_stream();
    if let Ok(t) = c.scram_sha256(ALICE.0, ALICE.1) {
        panic!("account not locked after 3 failed logins: {t}");
    }
    c.close();
    let log = s.log_text().to_lowercase();
    assert!(
        log.contains("lock"),
        "the lock-out is not reported in the log:\n{log}"
    );
    // Another user from another address is unaffected.
    s.assert_serves_from(LOOPBACK2);
}

#[test]
fn connections_per_ip_are_limited() {
    let mut s = Server::start_with(Options::default().limit("max_connections_per_ip", 3));
    let mut held: Vec<Conn> = (0..3)
        .map(|_| {
            let mut c = Conn::connect(s.c2s, &s.cert_pem());
            c.open_stream();
            c
        })
        .collect();
    // The fourth from the same IP is refused: closed, or a stream error, never features.
    let mut fourth = Conn::connect(s.c2s, &s.cert_pem());
    let _ = fourth.try_send(stream_header());
    let (text, closed) = fourth.read_until_closed(10);
    assert!(
        !has_features(&text),
        "a 4th connection from one IP got stream features (limit 3): {text}"
    );
    assert!(
        closed || text.contains("stream:error"),
        "a 4th connection from one IP was neither refused nor closed within 10 s: {text}"
    );
    // Other addresses are unaffected.
    s.assert_serves_from(LOOPBACK2);
    // Closing one frees a slot.
    let mut freed = held.pop().expect("three held");
    freed.shutdown();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Conn::connect(s.c2s, &s.cert_pem());
        let _ = c.try_send(stream_header());
        let text = c.wait_or_close(3);
        if has_features(&text) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new connection accepted 10 s after one of three was closed: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
    s.assert_no_panic();
}

#[test]
fn stanza_id_is_echoed_on_errors() {
    // A stanza to a user that does not exist comes back as service-unavailable with its id.
    let mut s = Server::start_default();
    let mut alice = s.login(ALICE, "errors");
    alice.send(
        "<iq type='get' id='nouser' to='nobody@localhost'><query xmlns='jabber:iq:version'/></iq>",
    );
    let st = alice.wait_stanza("nouser", 15);
    assert!(is_error(&st), "{st}");
    assert_eq!(
        stanza_error(&st).as_deref(),
        Some("service-unavailable"),
        "{st}"
    );
    assert!(find_stanza(&st, "nouser").is_some());
    s.assert_serves();
}

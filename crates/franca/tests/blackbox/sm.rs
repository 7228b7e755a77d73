//! XEP-0198 stream management over TCP (issue 4 §3): enabling, acknowledgement counting both
//! ways, resumption after a cut connection (nothing lost, nothing twice), taking over a
//! connection that is still open, refused resumptions, and the end of the resumption time
//! (what the client never acknowledged becomes offline messages).

use std::time::Duration;

use crate::client::{Conn, is_error, stanza_error, stream_error};
use crate::harness::{ALICE, BOB, DOMAIN, Options, Server};
use crate::websocket::Ws;

const SM: &str = "urn:xmpp:sm:3";

/// A stream authenticated as `user` and restarted; the post-authentication features.
fn authenticate(s: &Server, user: (&str, &str)) -> (Conn, String) {
    let mut c = Conn::connect(s.c2s, &s.cert_pem());
    c.open_stream();
    c.scram_sha256(user.0, user.1)
        .unwrap_or_else(|f| panic!("login of {} refused: {f}", user.0));
    let features = c.open_stream();
    (c, features)
}

/// The value of `attr` in the first `<name …>` tag of `text`.
fn attr(text: &str, name: &str, attr: &str) -> Option<String> {
    let start = text.find(&format!("<{name} "))?;
    let tag = &text[start..start + text[start..].find('>')?];
    let at = tag.find(&format!(" {attr}='"))? + attr.len() + 3;
    Some(tag[at..at + tag[at..].find('\'')?].to_owned())
}

/// `<enable resume='true'/>`; the resumption id.
fn enable_resumption(c: &mut Conn) -> String {
    c.send(format!("<enable xmlns='{SM}' resume='true'/>"));
    let text = c.wait("<enabled/>", 15, |t| t.contains("<enabled "));
    assert_eq!(
        attr(&text, "enabled", "resume").as_deref(),
        Some("true"),
        "{text}"
    );
    attr(&text, "enabled", "id").unwrap_or_else(|| panic!("no id in {text}"))
}

fn chat(from: &mut Conn, to: &str, id: &str, body: &str) {
    from.send(format!(
        "<message to='{to}' type='chat' id='{id}'><body>{body}</body></message>"
    ));
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn xep0198_3_enable_and_4_acks_count_stanzas_both_ways() {
    let s = Server::start_default();
    let (mut c, features) = authenticate(&s, ALICE);
    assert!(
        features.contains(&format!("<sm xmlns='{SM}'/>")),
        "{features}"
    );
    c.bind("phone");
    c.send(format!("<enable xmlns='{SM}'/>"));
    let text = c.wait("<enabled/>", 15, |t| t.contains("<enabled "));
    assert!(
        !text.contains("resume="),
        "resumption granted unasked: {text}"
    );
    // Enabling twice is refused; the stream goes on (§6).
    c.send(format!("<enable xmlns='{SM}'/>"));
    c.wait("<failed/>", 15, |t| t.contains("<unexpected-request"));

    // Inbound: three stanzas handled, nonzas not counted.
    for _ in 0..3 {
        c.ping("counted");
    }
    c.send(format!("<r xmlns='{SM}'/>"));
    c.wait("<a h='3'/>", 15, |t| {
        t.contains(&format!("<a xmlns='{SM}' h='3'/>"))
    });

    // Outbound: the server asks after five unacknowledged stanzas (the three results above and
    // two more).
    for id in ["p4", "p5"] {
        c.send(format!(
            "<iq type='get' id='{id}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
    }
    c.wait("<r/>", 15, |t| t.contains(&format!("<r xmlns='{SM}'/>")));
    c.send(format!("<a xmlns='{SM}' h='5'/>"));
    c.ping("after-ack");
    // §4: acknowledging more than was sent ends the stream.
    c.send(format!("<a xmlns='{SM}' h='99'/>"));
    let (cond, text) = c.expect_stream_error(15);
    assert_eq!(cond, "undefined-condition", "{text}");
    assert!(text.contains("handled-count-too-high"), "{text}");
    s.assert_no_panic();
}

#[test]
fn xep0198_4_a_lone_unacknowledged_stanza_is_asked_about_once_the_stream_is_quiet() {
    let s = Server::start_default();
    let mut c = s.login(ALICE, "phone");
    c.send(format!("<enable xmlns='{SM}'/>"));
    c.wait("<enabled/>", 15, |t| t.contains("<enabled "));
    c.ping("lone");
    // Not with the stanza (too few, and the stream was busy), but a few seconds later.
    let text = c.wait("<r/>", 15, |t| t.contains(&format!("<r xmlns='{SM}'/>")));
    assert!(!text.contains("<iq"), "{text}");
    c.send(format!("<a xmlns='{SM}' h='1'/>"));
    // Asked once: no repeat while the answer is outstanding or nothing is unacknowledged.
    let (more, closed) = c.read_until_closed(7);
    assert!(!closed && !more.contains("<r "), "{more}");
    s.assert_no_panic();
}

#[test]
fn xep0198_5_resume_after_a_cut_connection_loses_nothing_and_repeats_nothing() {
    let mut s = Server::start_default();
    let mut bob = s.login(BOB, "desk");
    let (mut a, _) = authenticate(&s, ALICE);
    a.bind("phone");
    a.available();
    let id = enable_resumption(&mut a);
    chat(&mut bob, "alice@localhost/phone", "m1", "one");
    a.wait("m1", 15, |t| t.contains("<body>one</body>"));
    // The client confirms m1, then its connection dies without a word.
    a.send(format!("<a xmlns='{SM}' h='1'/>"));
    a.ping("before-cut");
    a.shutdown();
    chat(&mut bob, "alice@localhost/phone", "m2", "two");
    chat(&mut bob, "alice@localhost", "m3", "three");
    bob.ping("after-sending");

    // A new connection resumes with h=2: m1 and the ping result were received.
    let (mut a2, features) = authenticate(&s, ALICE);
    assert!(
        features.contains(&format!("<sm xmlns='{SM}'/>")),
        "{features}"
    );
    a2.send(format!("<resume xmlns='{SM}' previd='{id}' h='2'/>"));
    let text = a2.wait("resumed, then m2 and m3", 15, |t| {
        t.contains("<body>two</body>") && t.contains("<body>three</body>")
    });
    assert!(text.contains(&format!("previd='{id}'")), "{text}");
    // The server handled one stanza of ours after enabling: the ping (<a/> is a nonza).
    assert_eq!(attr(&text, "resumed", "h").as_deref(), Some("1"), "{text}");
    assert!(
        text.find("<resumed").expect("resumed") < text.find("<body>two</body>").expect("m2"),
        "{text}"
    );
    // A second look after a moment: nothing more came, and nothing came twice.
    a2.ping("settled");
    let all = a2.all_text();
    assert_eq!(
        count(&all, "<body>one</body>"),
        0,
        "acknowledged m1 resent: {all}"
    );
    assert_eq!(count(&all, "<body>two</body>"), 1, "{all}");
    assert_eq!(count(&all, "<body>three</body>"), 1, "{all}");
    // The session goes on as before: same JID, still reachable, still counting.
    chat(&mut bob, "alice@localhost/phone", "m4", "four");
    a2.wait("m4", 15, |t| t.contains("<body>four</body>"));
    // The inbound count went on from 1: one more ping.
    a2.send(format!("<r xmlns='{SM}'/>"));
    a2.wait("<a h='2'/>", 15, |t| {
        t.contains(&format!("<a xmlns='{SM}' h='2'/>"))
    });
    // Bob never got a bounce.
    let bobs = bob.all_text();
    assert!(!bobs.contains("type='error'"), "{bobs}");
    a2.close();
    s.assert_serves();
}

#[test]
fn xep0198_5_resuming_while_the_old_connection_is_open_closes_it_with_conflict() {
    let s = Server::start_default();
    let (mut a, _) = authenticate(&s, ALICE);
    a.bind("phone");
    let id = enable_resumption(&mut a);
    let mut bob = s.login(BOB, "desk");
    chat(&mut bob, "alice@localhost/phone", "m1", "unacked");
    a.wait("m1", 15, |t| t.contains("<body>unacked</body>"));

    let (mut a2, _) = authenticate(&s, ALICE);
    a2.send(format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"));
    let text = a2.wait("resumed and m1 again", 15, |t| {
        t.contains("<resumed ") && t.contains("<body>unacked</body>")
    });
    assert!(text.contains(&format!("previd='{id}'")), "{text}");
    let (cond, old) = a.expect_stream_error(15);
    assert_eq!(cond, "conflict", "{old}");
    a2.ping("resumed");
    s.assert_no_panic();
}

#[test]
fn xep0198_5_unknown_or_foreign_ids_fail_with_item_not_found() {
    let s = Server::start_default();
    let (mut a, _) = authenticate(&s, ALICE);
    a.bind("phone");
    let id = enable_resumption(&mut a);
    a.shutdown();

    // Bob cannot take over Alice's session, even with its id.
    let (mut b, _) = authenticate(&s, BOB);
    b.send(format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"));
    let text = b.wait("<failed/>", 15, |t| t.contains("<failed "));
    assert!(text.contains("<item-not-found"), "{text}");
    // The stream goes on: Bob binds a resource instead.
    b.bind("desk");
    b.ping("after-failed");

    let (mut a2, _) = authenticate(&s, ALICE);
    a2.send(format!("<resume xmlns='{SM}' previd='no-such-id' h='0'/>"));
    let text = a2.wait("<failed/>", 15, |t| t.contains("<failed "));
    assert!(text.contains("<item-not-found"), "{text}");
    // Alice's own id still works after the foreign attempt.
    a2.send(format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"));
    a2.wait("<resumed/>", 15, |t| t.contains("<resumed "));
    // Resuming after binding is refused.
    a2.send(format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"));
    a2.wait("<failed/>", 15, |t| t.contains("<unexpected-request"));
    s.assert_no_panic();
}

#[test]
fn xep0198_5_when_resumption_time_runs_out_unacked_messages_become_offline_messages() {
    let s = Server::start_with(Options {
        extra: "[stream_management]\nresume_timeout_seconds = 2\n".into(),
        ..Options::default()
    });
    let mut bob = s.login(BOB, "desk");
    let (mut a, _) = authenticate(&s, ALICE);
    a.bind("phone");
    a.available();
    let id = enable_resumption(&mut a);
    chat(&mut bob, "alice@localhost", "m1", "acked");
    a.wait("m1", 15, |t| t.contains("<body>acked</body>"));
    a.send(format!("<a xmlns='{SM}' h='1'/>"));
    chat(&mut bob, "alice@localhost", "m2", "received-not-acked");
    a.wait("m2", 15, |t| t.contains("<body>received-not-acked</body>"));
    a.ping("before-cut");
    a.shutdown();
    // Queued while the session sleeps.
    chat(&mut bob, "alice@localhost", "m3", "while-asleep");
    chat(&mut bob, "alice@localhost/phone", "m4", "to-the-full-jid");
    bob.ping("sent");

    std::thread::sleep(Duration::from_secs(4));
    // Too late to resume.
    let (mut late, _) = authenticate(&s, ALICE);
    late.send(format!("<resume xmlns='{SM}' previd='{id}' h='1'/>"));
    let text = late.wait("<failed/>", 15, |t| t.contains("<failed "));
    assert!(text.contains("<item-not-found"), "{text}");
    // A fresh session gets the unacknowledged and the queued messages as offline messages,
    // each once; the acknowledged one is not among them.
    late.bind("laptop");
    late.send("<presence/>");
    let text = late.wait("three offline messages", 15, |t| {
        ["received-not-acked", "while-asleep", "to-the-full-jid"]
            .iter()
            .all(|b| t.contains(&format!("<body>{b}</body>")))
    });
    assert!(text.contains("urn:xmpp:delay"), "no XEP-0203 delay: {text}");
    late.ping("settled");
    let all = late.all_text();
    assert_eq!(count(&all, "<body>acked</body>"), 0, "{all}");
    for b in ["received-not-acked", "while-asleep", "to-the-full-jid"] {
        assert_eq!(count(&all, &format!("<body>{b}</body>")), 1, "{b}: {all}");
    }
    // Nothing bounced to Bob.
    let bobs = bob.all_text();
    assert!(!bobs.contains("type='error'"), "{bobs}");
    s.assert_no_panic();
}

#[test]
fn xep0198_4_a_client_that_never_acknowledges_is_cut_off_and_nothing_is_lost() {
    let s = Server::start_with(Options {
        extra: "[stream_management]\nmax_unacked = 5\n".into(),
        ..Options::default()
    });
    let mut bob = s.login(BOB, "desk");
    let (mut a, _) = authenticate(&s, ALICE);
    a.bind("phone");
    a.available();
    a.send(format!("<enable xmlns='{SM}'/>"));
    a.wait("<enabled/>", 15, |t| t.contains("<enabled "));
    for i in 0..6 {
        chat(
            &mut bob,
            "alice@localhost",
            &format!("c{i}"),
            &format!("flood-{i}"),
        );
    }
    let (text, _) = a.read_until_closed(15);
    assert_eq!(
        stream_error(&text).as_deref(),
        Some("resource-constraint"),
        "{text}"
    );
    // The six went to offline storage. The old session stores them while it ends, so a login
    // right away may find only some; later logins get the rest, and none twice.
    let mut seen = String::new();
    for attempt in 0..20 {
        let mut again = s.login(ALICE, &format!("again{attempt}"));
        again.available();
        std::thread::sleep(Duration::from_millis(200));
        again.close();
        seen.push_str(&again.all_text());
        if (0..6).all(|i| seen.contains(&format!("<body>flood-{i}</body>"))) {
            break;
        }
    }
    for i in 0..6 {
        assert_eq!(
            count(&seen, &format!("<body>flood-{i}</body>")),
            1,
            "{seen}"
        );
    }
    s.assert_no_panic();
}

/// A WebSocket (RFC 7395) stream authenticated as `user` with PLAIN (loopback counts as
/// secure), restarted.
fn ws_authenticate(s: &Server, user: (&str, &str)) -> Ws {
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
    let features = ws.open();
    assert!(features.contains(SM), "{features}");
    ws
}

#[test]
fn xep0198_5_websocket_streams_resume_too_and_retransmissions_are_framed() {
    let s = Server::start_default();
    let mut ws = ws_authenticate(&s, ALICE);
    ws.send(
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>web</resource></bind></iq>",
    );
    ws.recv_until(|m| m.contains("alice@localhost/web"));
    ws.send(&format!("<enable xmlns='{SM}' resume='true'/>"));
    let enabled = ws.recv_until(|m| m.starts_with("<enabled"));
    let id = attr(&enabled, "enabled", "id").unwrap_or_else(|| panic!("{enabled}"));
    let mut bob = s.login(BOB, "desk");
    chat(&mut bob, "alice@localhost/web", "w1", "unacked-on-ws");
    ws.recv_until(|m| m.contains("unacked-on-ws"));
    // The TCP connection under the WebSocket goes away without a <close/>.
    drop(ws);
    chat(&mut bob, "alice@localhost/web", "w2", "while-gone");
    bob.ping("sent");

    let mut ws2 = ws_authenticate(&s, ALICE);
    ws2.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"));
    let resumed = ws2.recv_until(|m| m.starts_with("<resumed") || m.starts_with("<failed"));
    assert!(resumed.starts_with("<resumed"), "{resumed}");
    // Each retransmitted stanza is one message declaring its namespace.
    let first = ws2.recv_until(|m| m.starts_with("<message"));
    assert!(first.contains("unacked-on-ws"), "{first}");
    assert!(first.contains("xmlns='jabber:client'"), "{first}");
    let second = ws2.recv_until(|m| m.starts_with("<message"));
    assert!(second.contains("while-gone"), "{second}");
    s.assert_no_panic();
}

#[test]
fn xep0198_5_sigterm_stores_what_hibernated_sessions_hold() {
    let mut s = Server::start_default();
    let mut bob = s.login(BOB, "desk");
    let (mut a, _) = authenticate(&s, ALICE);
    a.bind("phone");
    a.available();
    enable_resumption(&mut a);
    a.shutdown();
    chat(&mut bob, "alice@localhost", "s1", "held-over-a-restart");
    bob.ping("sent");
    bob.shutdown();
    assert!(
        s.stop().is_some_and(|st| st.success()),
        "unclean stop; log:\n{}",
        s.log_text()
    );
    s.start();
    let mut again = s.login(ALICE, "again");
    again.send("<presence/>");
    again.wait("the stored message", 15, |t| {
        t.contains("<body>held-over-a-restart</body>")
    });
    s.assert_no_panic();
}

#[test]
fn xep0198_5_without_offline_storage_timed_out_messages_bounce_to_their_sender() {
    let s = Server::start_with(Options {
        extra: "[modules]\noffline = false\n\n[stream_management]\nresume_timeout_seconds = 1\n"
            .into(),
        ..Options::default()
    });
    let mut bob = s.login(BOB, "desk");
    let (mut a, _) = authenticate(&s, ALICE);
    a.bind("phone");
    a.available();
    enable_resumption(&mut a);
    a.shutdown();
    chat(
        &mut bob,
        "alice@localhost",
        "lost-1",
        "nobody-will-read-this",
    );
    let bounce = bob.wait_stanza("lost-1", 15);
    assert!(is_error(&bounce), "{bounce}");
    assert_eq!(
        stanza_error(&bounce).as_deref(),
        Some("service-unavailable"),
        "{bounce}"
    );
    s.assert_no_panic();
}

//! Federation between two Franca processes (RFC 6120 server-to-server, issue 6 §1-§2): `a.test`
//! and `b.test` on loopback with static routes to each other (`[s2s.routes]`). With the
//! generated self-signed certificates each side authenticates with XEP-0220 dialback over
//! STARTTLS (the receiving server calls the other back to verify the key); with a test CA both
//! trust (made with `openssl`), with SASL EXTERNAL (XEP-0178) on one XEP-0288 bidirectional
//! connection. Tested: chat both ways, the
//! RFC 6121 subscription handshake with presence and probes across the link, a remote user in a
//! XEP-0045 room, bounces while and after connecting (`remote-server-not-found`,
//! `remote-server-timeout`, a full queue), idle links closing and reopening, and refusals that
//! say why (`policy-violation`): our deny list, theirs, `require_valid_certs`, a barred account.

use crate::client::{Conn, element_text, find_stanza, is_error, stanza_error};
use crate::harness::{ALICE, BOB, Options, Server, free_ports};
use std::io::Write as _;

const A: &str = "a.test";
const B: &str = "b.test";

/// A server for `domain` with an s2s listener, not started.
fn server(domain: &'static str, users: Vec<(&'static str, &'static str)>) -> Server {
    Server::new(Options {
        domain,
        s2s: true,
        users,
        ..Options::default()
    })
}

/// Append `toml` to a server's configuration (before it starts).
fn append_config(s: &Server, toml: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&s.config)
        .expect("open config");
    f.write_all(toml.as_bytes()).expect("append config");
}

/// Both servers of a pair, with their users; routes kept true if a port had to move.
fn start_pair(a: &mut Server, b: &mut Server) {
    for s in [&*a, &*b] {
        for (user, pw) in s.opts.users.clone() {
            s.add_user(&format!("{user}@{}", s.opts.domain), pw);
        }
    }
    Server::start_peers(&mut [a, b]);
}

fn start(s: &mut Server) {
    for (user, pw) in s.opts.users.clone() {
        s.add_user(&format!("{user}@{}", s.opts.domain), pw);
    }
    s.start();
}

/// `a.test` (alice) and `b.test` (bob), each routed to the other; `extra_a`/`extra_b` are more
/// `[s2s]` keys, `top_a`/`top_b` more tables (`[tls]`).
fn pair_with(extra_a: &str, extra_b: &str, top_a: &str, top_b: &str) -> (Server, Server) {
    let mut a = server(A, vec![ALICE]);
    let mut b = server(B, vec![BOB]);
    for (s, top, extra, peer, port) in [
        (&a, top_a, extra_a, B, b.s2s),
        (&b, top_b, extra_b, A, a.s2s),
    ] {
        append_config(
            s,
            &format!(
                "{top}\n[s2s]\nconnect_timeout_seconds = 10\n{extra}\n[s2s.routes]\n\"{peer}\" = \"127.0.0.1:{port}\"\n\
                 \"conference.{peer}\" = \"127.0.0.1:{port}\"\n"
            ),
        );
    }
    start_pair(&mut a, &mut b);
    (a, b)
}

fn pair(extra_a: &str) -> (Server, Server) {
    pair_with(extra_a, "", "", "")
}

/// Initial presence, then a ping to the own domain so the server has handled it.
fn available(c: &mut Conn, domain: &str) {
    c.send("<presence/>");
    let id = c.next_id("ping");
    c.send(format!(
        "<iq type='get' id='{id}' to='{domain}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    c.wait_stanza(&id, 15);
}

/// Waits for a `<message/>` whose body is `body`; returns it.
fn wait_message(c: &mut Conn, body: &str) -> String {
    let needle = format!("<body>{body}</body>");
    let text = c.wait(&format!("a message with body {body}"), 30, |t| {
        t.contains(&needle)
    });
    let at = text.find(&needle).expect("just found");
    let start = text[..at].rfind("<message").expect("message start");
    let end = text[at..]
        .find("</message>")
        .map(|e| at + e + 10)
        .expect("message end");
    text[start..end].to_owned()
}

#[test]
fn rfc6120_chat_between_two_servers_both_ways() {
    let (a, b) = pair("");
    let mut alice = a.login(ALICE, "laptop");
    let mut bob = b.login(BOB, "phone");
    available(&mut alice, A);
    available(&mut bob, B);

    alice.send(format!(
        "<message to='bob@{B}/phone' type='chat' id='m1'><body>hello from a</body></message>"
    ));
    let got = wait_message(&mut bob, "hello from a");
    assert!(
        got.contains(&format!("from='alice@{A}/laptop'")),
        "the sender's full JID crosses the link: {got}"
    );

    bob.send(format!(
        "<message to='alice@{A}' type='chat' id='m2'><body>hello from b</body></message>"
    ));
    let got = wait_message(&mut alice, "hello from b");
    assert!(got.contains(&format!("from='bob@{B}/phone'")), "{got}");

    // The links stay up: more messages go through without a new negotiation.
    for i in 0..5 {
        alice.send(format!(
            "<message to='bob@{B}' type='chat'><body>again {i}</body></message>"
        ));
    }
    wait_message(&mut bob, "again 4");
    for s in [&a, &b] {
        s.assert_no_panic();
        let log = s.log_text();
        assert!(log.contains("(dialback)"), "dialback was used:\n{log}");
    }
}

#[test]
fn rfc6121_subscription_handshake_and_presence_across_servers() {
    let (a, b) = pair("");
    let mut alice = a.login(ALICE, "laptop");
    let mut bob = b.login(BOB, "phone");
    available(&mut alice, A);
    available(&mut bob, B);
    // Roster pushes go to the sessions that asked for the roster (RFC 6121 §2.1.6).
    bob.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
    bob.wait_stanza("roster", 15);

    // Bob asks to see Alice's presence; Alice's server delivers the request to her.
    bob.send(format!("<presence to='alice@{A}' type='subscribe'/>"));
    let text = alice.wait("the subscription request", 30, |t| {
        t.contains("type='subscribe'") && t.contains(&format!("from='bob@{B}'"))
    });
    assert!(text.contains("<presence"), "{text}");

    // She approves: Bob's roster now has her with subscription 'to', and her presence
    // (answered to the probe his server sends on approval, or broadcast) reaches him.
    alice.send(format!("<presence to='bob@{B}' type='subscribed'/>"));
    let text = bob.wait("the roster push for alice", 30, |t| {
        t.contains(&format!("jid='alice@{A}'")) && t.contains("subscription='to'")
    });
    assert!(text.contains("jabber:iq:roster"), "{text}");

    alice.send("<presence><status>at the desk</status></presence>");
    bob.wait("alice's presence", 30, |t| {
        t.contains(&format!("from='alice@{A}/laptop'")) && t.contains("at the desk")
    });

    // A new session of Bob's probes Alice's server at login and gets her current presence.
    let mut bob2 = b.login(BOB, "tablet");
    available(&mut bob2, B);
    let probed =
        |t: &str| t.contains(&format!("from='alice@{A}/laptop'")) && t.contains("at the desk");
    // The answer may come before the ping that `available` waits for.
    if !probed(&bob2.all_text()) {
        bob2.wait("alice's presence answered to the probe", 30, probed);
    }

    // Unavailable presence crosses the link when she leaves.
    alice.close();
    bob.wait("alice going offline", 30, |t| {
        t.contains(&format!("from='alice@{A}/laptop'")) && t.contains("type='unavailable'")
    });
}

#[test]
fn rfc6120_8_3_3_unreachable_domain_bounces_remote_server_not_found() {
    let [dead] = free_ports::<1>();
    let mut a = server(A, vec![ALICE]);
    append_config(
        &a,
        &format!(
            "[s2s]\nconnect_timeout_seconds = 10\n[s2s.routes]\n\"dead.test\" = \"127.0.0.1:{dead}\"\n"
        ),
    );
    start(&mut a);
    let mut alice = a.login(ALICE, "laptop");
    alice.send("<message to='someone@dead.test' type='chat' id='lost'><body>x</body></message>");
    let st = alice.wait_stanza("lost", 30);
    assert!(is_error(&st), "{st}");
    assert_eq!(
        stanza_error(&st).as_deref(),
        Some("remote-server-not-found"),
        "{st}"
    );
    assert!(
        element_text(&st, "text").is_some_and(|t| t.contains("dead.test")),
        "the error says what could not be reached: {st}"
    );
    a.assert_no_panic();
}

#[test]
fn issue6_policy_refusal_explained_to_the_sender() {
    let mut a = server(A, vec![ALICE]);
    append_config(&a, "[s2s]\ndeny = [\"spam.test\"]\n");
    start(&mut a);
    let mut alice = a.login(ALICE, "laptop");
    alice.send("<message to='someone@spam.test' type='chat' id='denied'><body>x</body></message>");
    let st = alice.wait_stanza("denied", 15);
    assert_eq!(
        stanza_error(&st).as_deref(),
        Some("policy-violation"),
        "{st}"
    );
    let text = element_text(&st, "text").unwrap_or_default();
    assert!(
        text.contains("spam.test") && text.contains("denied"),
        "the text says why: {st}"
    );
    a.assert_no_panic();
}

/// Runs `openssl` with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA in `dir` (`ca.pem`), and for each domain `<domain>.pem`/`<domain>.key` signed by
/// it, valid for the domain as DNS name, for TLS server and client authentication.
fn test_ca(dir: &std::path::Path, domains: &[&str]) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Franca test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    for d in domains {
        let (key, csr, pem, ext) = (
            format!("{d}.key"),
            format!("{d}.csr"),
            format!("{d}.pem"),
            format!("{d}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName=DNS:{d}\nextendedKeyUsage=serverAuth,clientAuth\n\
                 basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
            ),
        )
        .expect("write extensions");
        let subj = format!("/CN={d}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

#[test]
fn xep0178_sasl_external_with_certificates_from_a_trusted_ca() {
    let ca = tempfile::tempdir().expect("temp dir");
    test_ca(ca.path(), &[A, B]);
    let dir = ca.path().display().to_string();
    let tls = |d: &str| format!("[tls]\ncert = \"{dir}/{d}.pem\"\nkey = \"{dir}/{d}.key\"\n");
    let trust =
        format!("ca_file = \"{dir}/ca.pem\"\nsystem_roots = false\nrequire_valid_certs = true\n");
    let mut a = server(A, vec![ALICE]);
    let mut b = server(B, vec![BOB]);
    for (s, d, peer, port) in [(&a, A, B, b.s2s), (&b, B, A, a.s2s)] {
        append_config(
            s,
            &format!(
                "{}\n[s2s]\nconnect_timeout_seconds = 10\n{trust}\n[s2s.routes]\n\"{peer}\" = \"127.0.0.1:{port}\"\n",
                tls(d)
            ),
        );
        // The harness waits for (and its clients trust) `data_dir/cert.pem`.
        std::fs::create_dir_all(&s.data_dir).expect("data dir");
        std::fs::copy(ca.path().join(format!("{d}.pem")), s.cert_pem()).expect("copy cert");
    }
    start_pair(&mut a, &mut b);
    let mut alice = a.login(ALICE, "laptop");
    let mut bob = b.login(BOB, "phone");
    available(&mut alice, A);
    available(&mut bob, B);
    alice.send(format!(
        "<message to='bob@{B}' type='chat'><body>signed a</body></message>"
    ));
    wait_message(&mut bob, "signed a");
    bob.send(format!(
        "<message to='alice@{A}' type='chat'><body>signed b</body></message>"
    ));
    wait_message(&mut alice, "signed b");
    // a.test connected, authenticated with its certificate, and asked for a bidirectional
    // stream (XEP-0288), on which b.test's answer came back: b.test opened no connection.
    let (log_a, log_b) = (a.log_text(), b.log_text());
    assert!(
        log_a.contains("outbound authenticated (SASL EXTERNAL)"),
        "{log_a}"
    );
    assert!(
        log_b.contains("inbound authenticated (SASL EXTERNAL)"),
        "{log_b}"
    );
    assert!(log_b.contains("bidirectional (XEP-0288)"), "{log_b}");
    assert!(!log_b.contains("outbound authenticated"), "{log_b}");
    for s in [&a, &b] {
        let log = s.log_text();
        assert!(!log.contains("(dialback)"), "no dialback needed:\n{log}");
        s.assert_no_panic();
    }
}

#[test]
fn issue6_require_valid_certs_refuses_a_self_signed_peer_with_a_reason() {
    let (a, _b) = pair("require_valid_certs = true");
    let mut alice = a.login(ALICE, "laptop");
    alice.send(format!(
        "<message to='bob@{B}' type='chat' id='unsigned'><body>x</body></message>"
    ));
    let st = alice.wait_stanza("unsigned", 30);
    assert_eq!(
        stanza_error(&st).as_deref(),
        Some("policy-violation"),
        "{st}"
    );
    let text = element_text(&st, "text").unwrap_or_default();
    assert!(
        text.contains(B) && text.contains("certificate"),
        "the text says why: {st}"
    );
}

#[test]
fn issue6_a_barred_user_is_refused_in_both_directions() {
    let (a, b) = pair("");
    let out = a.cli(&["user", "federation", &format!("alice@{A}"), "deny"], "");
    assert!(out.status.success(), "{out:?}");
    let mut alice = a.login(ALICE, "laptop");
    let mut bob = b.login(BOB, "phone");
    available(&mut alice, A);
    available(&mut bob, B);

    alice.send(format!(
        "<message to='bob@{B}' type='chat' id='out'><body>x</body></message>"
    ));
    let st = alice.wait_stanza("out", 15);
    assert_eq!(
        stanza_error(&st).as_deref(),
        Some("policy-violation"),
        "{st}"
    );
    assert!(
        element_text(&st, "text").is_some_and(|t| t.contains("not allowed")),
        "{st}"
    );

    bob.send(format!(
        "<message to='alice@{A}' type='chat' id='in'><body>y</body></message>"
    ));
    let st = bob.wait_stanza("in", 30);
    assert_eq!(
        stanza_error(&st).as_deref(),
        Some("policy-violation"),
        "{st}"
    );
    assert!(
        element_text(&st, "text").is_some_and(|t| t.contains(&format!("alice@{A}"))),
        "the remote sender is told why: {st}"
    );
    assert!(
        !alice.all_text().contains("<body>y</body>"),
        "nothing reached the barred user"
    );
}

#[test]
fn issue6_a_server_that_denies_us_says_why() {
    // b.test denies a.test: a's connection is refused at the stream header with
    // <policy-violation/>, and alice's message bounces with b's reason.
    let (a, _b) = pair_with("", &format!("deny = [\"{A}\"]"), "", "");
    let mut alice = a.login(ALICE, "laptop");
    alice.send(format!(
        "<message to='bob@{B}' type='chat' id='refused'><body>x</body></message>"
    ));
    let st = alice.wait_stanza("refused", 30);
    assert_eq!(
        stanza_error(&st).as_deref(),
        Some("policy-violation"),
        "{st}"
    );
    let text = element_text(&st, "text").unwrap_or_default();
    assert!(
        text.contains(B) && text.contains("denied"),
        "the remote's reason is passed on: {st}"
    );
}

#[test]
fn issue6_idle_links_close_and_reopen_on_demand() {
    // Only a.test's side times out, so the close is its own.
    let (a, b) = pair("idle_timeout_seconds = 1");
    let mut alice = a.login(ALICE, "laptop");
    let mut bob = b.login(BOB, "phone");
    available(&mut alice, A);
    available(&mut bob, B);
    alice.send(format!(
        "<message to='bob@{B}' type='chat'><body>first</body></message>"
    ));
    wait_message(&mut bob, "first");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        a.log_text().contains("closing idle s2s link"),
        "the idle link was closed:\n{}",
        a.log_text()
    );
    alice.send(format!(
        "<message to='bob@{B}' type='chat'><body>second</body></message>"
    ));
    wait_message(&mut bob, "second");
}

#[test]
fn xep0045_a_user_of_another_server_joins_a_room_and_chats() {
    let (a, b) = pair("");
    let room = format!("tea@conference.{A}");
    let mut alice = a.login(ALICE, "desk");
    alice.send(format!(
        "<presence to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    alice.wait("the new room", 15, |t| t.contains("code='201'"));
    // Accept the default configuration, which unlocks the room (XEP-0045 §10.1.2).
    alice.send(format!(
        "<iq type='set' id='config' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'/></query></iq>"
    ));
    alice.wait_stanza("config", 15);

    let mut bob = b.login(BOB, "phone");
    bob.send(format!(
        "<presence to='{room}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    let joined = bob.wait("bob's join over federation", 30, |t| {
        t.contains("<subject") && t.contains("code='110'")
    });
    assert!(joined.contains(&format!("from='{room}/alice'")), "{joined}");

    alice.send(format!(
        "<message to='{room}' type='groupchat'><body>welcome, bob</body></message>"
    ));
    let got = wait_message(&mut bob, "welcome, bob");
    assert!(got.contains(&format!("from='{room}/alice'")), "{got}");
    bob.send(format!(
        "<message to='{room}' type='groupchat'><body>thanks, alice</body></message>"
    ));
    let got = wait_message(&mut alice, "thanks, alice");
    assert!(got.contains(&format!("from='{room}/bob'")), "{got}");
    a.assert_no_panic();
    b.assert_no_panic();
}

#[test]
fn rfc6120_8_3_3_stanzas_queue_while_connecting_then_bounce_remote_server_timeout() {
    // A "server" that accepts TCP and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let mut a = server(A, vec![ALICE]);
    append_config(
        &a,
        &format!(
            "[s2s]\nconnect_timeout_seconds = 3\nmax_queued_stanzas = 2\n\
             [s2s.routes]\n\"slow.test\" = \"127.0.0.1:{port}\"\n"
        ),
    );
    start(&mut a);
    let mut alice = a.login(ALICE, "laptop");
    for id in ["q1", "q2", "q3"] {
        alice.send(format!(
            "<message to='someone@slow.test' type='chat' id='{id}'><body>{id}</body></message>"
        ));
    }
    // The queue holds two; the third is refused at once.
    let st = alice.wait_stanza("q3", 15);
    assert_eq!(
        stanza_error(&st).as_deref(),
        Some("resource-constraint"),
        "{st}"
    );
    let text = alice.wait("both queued stanzas bounced", 30, |t| {
        find_stanza(t, "q1").is_some() && find_stanza(t, "q2").is_some()
    });
    for id in ["q1", "q2"] {
        let st = find_stanza(&text, id).expect("just found");
        assert_eq!(
            stanza_error(st).as_deref(),
            Some("remote-server-timeout"),
            "{st}"
        );
        assert!(
            element_text(st, "text").is_some_and(|t| t.contains("slow.test")),
            "{st}"
        );
    }
    drop(silent);
    a.assert_no_panic();
}

//! Logins over each listener, routing between two sessions, the user commands against a running
//! server, the HTTP endpoints, and SIGTERM → `<system-shutdown/>` (issue 2 §2, §4, §10).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::client::{Conn, has_features};
use crate::harness::{ALICE, BOB, Options, Server};

#[test]
fn login_over_starttls_and_direct_tls() {
    let mut s = Server::start_with(Options::tls_required());
    // STARTTLS on c2s.
    let mut c = s.login(ALICE, "starttls");
    assert!(c.is_tls());
    c.ping("starttls");
    c.close();
    // Direct TLS on c2s_tls (XEP-0368): no STARTTLS offered inside.
    let mut d = Conn::connect_tls(s.c2s_tls, &s.cert_pem());
    let features = d.open_stream();
    assert!(
        !features.contains("<starttls"),
        "STARTTLS offered inside TLS: {features}"
    );
    assert!(
        features.contains("SCRAM-SHA-256"),
        "no SCRAM-SHA-256 offered: {features}"
    );
    d.scram_sha256(ALICE.0, ALICE.1)
        .expect("SCRAM-SHA-256 over direct TLS");
    d.open_stream();
    let jid = d.bind("direct");
    assert_eq!(jid, "alice@localhost/direct");
    d.ping("direct");
    d.close();
    s.assert_serves();
}

#[test]
fn scram_channel_binding_is_advertised_over_tls() {
    let s = Server::start_with(Options::tls_required());
    let mut d = Conn::connect_tls(s.c2s_tls, &s.cert_pem());
    let features = d.open_stream();
    for m in [
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "SCRAM-SHA-512",
        "SCRAM-SHA-256-PLUS",
    ] {
        assert!(
            features.contains(&format!("<mechanism>{m}</mechanism>")),
            "{m} not offered over TLS: {features}"
        );
    }
    // XEP-0440: which channel-binding types the server supports.
    assert!(
        features.contains("urn:xmpp:sasl-cb:0"),
        "no XEP-0440 <sasl-channel-binding/> in the features: {features}"
    );
    assert!(features.contains("tls-server-end-point"), "{features}");
}

#[test]
fn message_between_two_sessions() {
    let mut s = Server::start_default();
    let mut alice = s.login(ALICE, "a");
    let mut bob = s.login(BOB, "b");
    alice.send(
        "<message to='bob@localhost/b' type='chat' id='m1'><body>hi bob &amp; co</body></message>",
    );
    let text = bob.wait("alice's message", 15, |t| t.contains("hi bob &amp; co"));
    assert!(
        text.contains("alice@localhost/a"),
        "wrong or missing from: {text}"
    );
    s.assert_serves();
}

#[test]
fn password_change_applies_at_next_login() {
    let mut s = Server::start_default();
    let out = s.cli(&["user", "passwd", "alice@localhost"], "a-new-password\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = Conn::connect(s.c2s, &s.cert_pem());
    c.open_stream();
    assert!(
        c.scram_sha256(ALICE.0, ALICE.1).is_err(),
        "the old password still works"
    );
    c.close();
    let mut c = Conn::connect(s.c2s, &s.cert_pem());
    c.open_stream();
    c.scram_sha256(ALICE.0, "a-new-password")
        .expect("the new password works");
    c.close();
    s.assert_serves();
}

#[test]
fn user_remove_ends_sessions() {
    let mut s = Server::start_default();
    let mut alice = s.login(ALICE, "doomed");
    let out = s.cli(&["user", "remove", "alice@localhost"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (text, closed) = alice.read_until_closed(15);
    assert!(
        closed,
        "alice's session was not ended by `user remove`: {text}"
    );
    let mut c = Conn::connect(s.c2s, &s.cert_pem());
    c.open_stream();
    assert!(
        c.scram_sha256(ALICE.0, ALICE.1).is_err(),
        "a removed user can log in"
    );
    c.close();
    s.assert_serves();
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP listener");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn health_and_metrics_endpoints() {
    let s = Server::start_default();
    let health = http_get(s.http, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "/health: {health}");
    let metrics = http_get(s.http, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "/metrics: {metrics}");
}

#[test]
fn sigterm_closes_every_stream_with_system_shutdown() {
    let mut s = Server::start_default();
    let mut plain = s.login(ALICE, "plain");
    let mut tls = Conn::connect_tls(s.c2s_tls, &s.cert_pem());
    tls.open_stream();
    tls.scram_sha256(BOB.0, BOB.1)
        .expect("login over direct TLS");
    tls.open_stream();
    tls.bind("tls");
    let mut unauthenticated = Conn::connect(s.c2s, &s.cert_pem());
    assert!(has_features(&unauthenticated.open_stream()));
    s.sigterm();
    for (name, c) in [
        ("plaintext session", &mut plain),
        ("TLS session", &mut tls),
        ("unauthenticated stream", &mut unauthenticated),
    ] {
        let (cond, text) = c.expect_stream_error(20);
        assert_eq!(cond, "system-shutdown", "{name}: {text}");
        assert!(
            text.contains("</stream:stream>"),
            "{name}: stream not closed: {text}"
        );
    }
    let status = s
        .wait_exit(Duration::from_secs(20))
        .expect("franca still running 20 s after SIGTERM");
    assert!(
        status.success(),
        "franca exited with {status} after SIGTERM"
    );
    s.assert_no_panic();
}

#[test]
fn restart_keeps_users_and_certificate() {
    let mut s = Server::start_default();
    let cert = std::fs::read(s.cert_pem()).expect("read cert");
    let status = s.stop().expect("clean stop");
    assert!(status.success(), "{status}");
    s.start();
    assert_eq!(
        std::fs::read(s.cert_pem()).expect("read cert"),
        cert,
        "certificate regenerated on restart"
    );
    s.assert_serves();
}

#[test]
fn storage_backend_is_the_one_requested() {
    let s = Server::start_default();
    let pg = std::env::var("FRANCA_TEST_PG_URL").is_ok_and(|u| !u.trim().is_empty());
    if pg {
        assert!(s.storage_url.starts_with("postgres"), "{}", s.storage_url);
        let out = std::process::Command::new("psql")
            .arg(&s.storage_url)
            .args([
                "-tAc",
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            ])
            .output()
            .expect("run psql");
        let n: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        assert!(
            n > 0,
            "no tables in the test database {}: {}",
            s.storage_url,
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        assert!(s.storage_url.starts_with("sqlite://"), "{}", s.storage_url);
        assert!(
            s.data_dir.join("franca.db").exists(),
            "no SQLite database in data_dir"
        );
    }
}

/// RFC 6120 §4.6.1 / XEP-0199 §4.2: a silent session is pinged, and closed with
/// `<connection-timeout/>` when the ping goes unanswered; an answer keeps it open.
#[test]
fn idle_session_is_pinged_then_timed_out() {
    let mut s = Server::start_with(Options::default().limit("idle_timeout_seconds", 1));
    let mut quiet = s.login(ALICE, "quiet");
    let mut answering = s.login(BOB, "answering");
    let ping = answering.wait("the idle ping", 10, |t| t.contains("urn:xmpp:ping"));
    assert!(
        ping.contains("type='get'") || ping.contains("type=\"get\""),
        "{ping}"
    );
    answering.send("<iq type='result' id='franca-idle-ping' to='localhost'/>");
    let (cond, _) = quiet.expect_stream_error(15);
    assert_eq!(cond, "connection-timeout");
    // The session that answered is still served.
    answering.ping("still-here");
    s.assert_serves();
}

/// RFC 6120 §4.6.1: an unauthenticated stream that never finishes negotiating is closed.
#[test]
fn stalled_negotiation_times_out() {
    let mut s = Server::start_with(Options::default().limit("negotiation_timeout_seconds", 1));
    let mut c = Conn::connect(s.c2s, &s.cert_pem());
    c.open_stream();
    let (cond, _) = c.expect_stream_error(15);
    assert_eq!(cond, "connection-timeout");
    s.assert_serves();
}

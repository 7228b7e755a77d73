//! One TLS port for everything (`listen.multiplex`): an XMPP client (ALPN `xmpp-client`) and
//! an HTTPS client (ALPN `http/1.1`) on the same port, the first-bytes sniff when no ALPN is
//! offered, and garbage (not TLS, or TLS with neither XMPP nor HTTP inside) closed promptly
//! without the server's memory growing with it.

use crate::client::{Conn, has_features};
use crate::harness::{ALICE, BOB, Server};
use crate::https::{https_request, tls_to, wss_login};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// XEP-0368 direct TLS on the multiplexed port: login with channel binding (SCRAM-SHA-256-PLUS,
/// tls-exporter), bind, a ping answered.
fn xmpp_login(server: &Server, alpn: &[&[u8]], resource: &str) -> Conn {
    let mut c = Conn::connect_tls_alpn(server.multiplex, &server.cert_pem(), alpn);
    let features = c.open_stream();
    assert!(has_features(&features), "{features}");
    assert!(!features.contains("starttls"), "{features}");
    assert!(features.contains("SCRAM-SHA-256-PLUS"), "{features}");
    c.scram_sha256_plus(ALICE.0, ALICE.1)
        .unwrap_or_else(|f| panic!("login refused: {f}"));
    c.open_stream();
    c.bind(resource);
    c.ping(resource);
    c
}

#[test]
fn xmpp_and_https_share_the_port_by_alpn() {
    let mut server = Server::start_default();
    let mut xmpp = xmpp_login(&server, &[b"xmpp-client"], "alpn");

    let tls = tls_to(server.multiplex, &server.cert_pem(), &[b"xmpp-client"]).expect("TLS");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"xmpp-client"[..]));
    drop(tls);

    let response = https_request(
        &server,
        server.multiplex,
        &[b"http/1.1"],
        "GET /health HTTP/1.1\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The XMPP session above is counted.
    assert!(response.contains(r#""sessions":1"#), "{response}");

    // A browser's WebSocket on the same port is secure and logs in.
    let bound = wss_login(&server, server.multiplex, &[b"http/1.1"], "web");
    assert!(bound.contains("alice@localhost/web"), "{bound}");

    // And the XMPP stream is a full session: a message from a STARTTLS user reaches it.
    let mut bob = server.login(BOB, "tcp");
    bob.send(
        "<message to='alice@localhost/alpn' type='chat' id='m1'><body>via 443</body></message>",
    );
    xmpp.wait("the message", 10, |t| t.contains("via 443"));
    xmpp.close();
    server.assert_serves();
}

#[test]
fn without_alpn_the_first_bytes_decide() {
    let mut server = Server::start_default();
    // `<?xml` (and then the stream header) is XMPP.
    let mut xmpp = xmpp_login(&server, &[], "sniffed");
    xmpp.close();
    // An HTTP method is HTTP.
    let response = https_request(&server, server.multiplex, &[], "GET /health HTTP/1.1\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let response = https_request(
        &server,
        server.multiplex,
        &[],
        "POST /health HTTP/1.1\r\nContent-Length: 0\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    server.assert_serves();
}

/// Whether the server closes `s` within `secs` (EOF or reset), reading and dropping whatever
/// it sends.
fn closed_within(s: &mut impl Read, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn tcp(server: &Server) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", server.multiplex)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    s
}

#[test]
fn garbage_before_tls_is_closed_at_once() {
    let mut server = Server::start_default();
    // Plaintext HTTP, plaintext XMPP, binary noise: the first byte is not a TLS record.
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        b"<?xml version='1.0'?><stream:stream to='localhost'>",
        b"\x00\xff\x13\x37garbage",
    ] {
        let mut s = tcp(&server);
        s.write_all(garbage).expect("write");
        assert!(closed_within(&mut s, 5), "{garbage:?} was not closed");
    }
    // A TLS-looking first byte followed by junk fails the handshake.
    let mut s = tcp(&server);
    let _ = s.write_all(b"\x16\x03\x01\x00\x05hello-this-is-not-a-client-hello");
    assert!(closed_within(&mut s, 5), "bad ClientHello was not closed");
    server.assert_serves();
}

#[test]
fn garbage_inside_tls_is_closed_at_once() {
    let mut server = Server::start_default();
    for garbage in [
        &b"\x00\x01\x02\x03 binary"[..],
        b"<html>",
        b"PRI * HTTP/2.0\r\n\r\n",
    ] {
        let mut tls = tls_to(server.multiplex, &server.cert_pem(), &[]).expect("TLS");
        tls.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        tls.write_all(garbage).expect("write");
        tls.flush().expect("flush");
        assert!(closed_within(&mut tls, 5), "{garbage:?} was not closed");
    }
    // Garbage after ALPN xmpp-client is the XMPP stream's business: a stream error, then close.
    let mut c = Conn::connect_tls_alpn(server.multiplex, &server.cert_pem(), &[b"xmpp-client"]);
    c.send("\x00\x01 not xml");
    let (text, closed) = c.read_until_closed(10);
    assert!(closed, "not closed: {text}");
    server.assert_serves();
}

#[test]
fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let mut server = Server::start_default();
    let mut silent = tcp(&server);
    let started = Instant::now();
    // Meanwhile the port serves others.
    let response = https_request(&server, server.multiplex, &[], "GET /health HTTP/1.1\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        closed_within(&mut silent, 20),
        "the silent connection was kept"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.assert_serves();
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn garbage_floods_do_not_grow_memory() {
    let mut server = Server::start_default();
    // Warm up the paths once (allocator arenas, lazily built state).
    let response = https_request(&server, server.multiplex, &[], "GET /health HTTP/1.1\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let before = rss_kib(server.pid());

    // 40 connections at once, each pushing up to 1 MiB: half plaintext, half inside TLS.
    let junk = vec![0x42u8; 64 * 1024];
    let threads: Vec<_> = (0..40)
        .map(|i| {
            let port = server.multiplex;
            let cert = server.cert_pem();
            let junk = junk.clone();
            std::thread::spawn(move || {
                let mut s: Box<dyn ReadWrite> = if i % 2 == 0 {
                    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    s.set_write_timeout(Some(Duration::from_secs(2)))
                        .expect("timeout");
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .expect("timeout");
                    Box::new(s)
                } else {
                    let tls = tls_to(port, &cert, &[]).expect("TLS");
                    tls.sock
                        .set_write_timeout(Some(Duration::from_secs(2)))
                        .expect("timeout");
                    tls.sock
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .expect("timeout");
                    Box::new(tls)
                };
                let mut sent = 0;
                while sent < 1 << 20 && s.write_all(&junk).is_ok() {
                    sent += junk.len();
                }
                closed_within(&mut s, 10)
            })
        })
        .collect();
    for t in threads {
        assert!(
            t.join().expect("thread"),
            "a garbage connection was kept open"
        );
    }
    let after = rss_kib(server.pid());
    eprintln!("server RSS: {before} KiB before the flood, {after} KiB after");
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    server.assert_serves();
}

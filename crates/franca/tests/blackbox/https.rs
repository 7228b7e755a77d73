//! The `https` listener: the HTTP endpoints over TLS with the c2s certificate (ALPN
//! `http/1.1` only), XMPP over secure WebSocket (`wss://`, RFC 7395) logging in, and the CORS
//! headers of `[http] cors_origins` on the endpoints browsers read across origins.

use crate::client::{Conn, tls_client};
use crate::harness::{ALICE, DOMAIN, LOOPBACK2, Options, Server};
use base64::Engine;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, http::HeaderValue};

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// A finished TLS handshake with 127.0.0.1:`port`, offering `alpn`.
pub fn tls_to(port: u16, cert: &Path, alpn: &[&[u8]]) -> Result<TlsStream, std::io::Error> {
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(tls_client(cert, alpn), sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// Everything the server sends until it closes (or goes quiet for the read timeout).
pub fn read_all(s: &mut impl Read) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One HTTP/1.1 request with `Connection: close` over TLS; the whole response.
pub fn https_request(server: &Server, port: u16, alpn: &[&[u8]], head: &str) -> String {
    let mut tls = tls_to(port, &server.cert_pem(), alpn).expect("TLS handshake");
    write!(tls, "{head}Host: {DOMAIN}\r\nConnection: close\r\n\r\n").expect("request");
    tls.flush().expect("flush");
    read_all(&mut tls)
}

#[test]
fn https_serves_health_over_tls_with_http1_alpn() {
    let mut server = Server::start_default();
    let tls = tls_to(server.https, &server.cert_pem(), &[b"h2", b"http/1.1"]).expect("TLS");
    // Only what is served is offered: HTTP/1.1, not h2.
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(tls);

    let response = https_request(
        &server,
        server.https,
        &[b"http/1.1"],
        "GET /health HTTP/1.1\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""status":"ok""#), "{response}");
    // No ALPN at all is plain HTTPS too.
    let response = https_request(&server, server.https, &[], "GET /metrics HTTP/1.1\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // RFC 7301 §3.2: a client that offers only protocols we do not serve is refused.
    assert!(tls_to(server.https, &server.cert_pem(), &[b"h2"]).is_err());
    server.assert_serves();
}

#[test]
fn https_handshakes_do_not_block_each_other() {
    let mut server = Server::start_default();
    // Silent connections that never start TLS hold no accept slot.
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", server.https)).expect("connect"))
        .collect();
    let started = Instant::now();
    let response = https_request(&server, server.https, &[], "GET /health HTTP/1.1\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    server.assert_serves();
}

#[test]
fn https_handshakes_count_against_the_per_address_limit() {
    let mut server = Server::start_with(Options::default().limit("max_connections_per_ip", 2));
    let held: Vec<TcpStream> = (0..2)
        .map(|_| Conn::tcp_from(LOOPBACK2, server.https).expect("connect"))
        .collect();
    // Give the server a moment to accept both before the third arrives.
    std::thread::sleep(Duration::from_millis(200));
    let mut third = Conn::tcp_from(LOOPBACK2, server.https).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert!(
        matches!(third.read(&mut byte), Ok(0) | Err(_)),
        "a third silent connection from one address was kept"
    );
    // Other addresses are not affected.
    let response = https_request(&server, server.https, &[], "GET /health HTTP/1.1\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(held);
    server.assert_serves();
}

struct Wss {
    ws: tungstenite::WebSocket<TlsStream>,
}

impl Wss {
    fn connect(server: &Server, port: u16, alpn: &[&[u8]]) -> Wss {
        let tls = tls_to(port, &server.cert_pem(), alpn).expect("TLS handshake");
        let mut request = format!("wss://{DOMAIN}:{port}/xmpp-websocket")
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("xmpp"));
        let (ws, response) = tungstenite::client(request, tls).expect("WebSocket upgrade");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.as_bytes()),
            Some(&b"xmpp"[..])
        );
        Wss { ws }
    }

    fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    fn recv(&mut self) -> String {
        loop {
            match self.ws.read().expect("read") {
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected WebSocket message {other:?}"),
            }
        }
    }

    fn open(&mut self) -> String {
        self.send(&format!(
            "<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>"
        ));
        let open = self.recv();
        assert!(open.starts_with("<open"), "{open}");
        self.recv()
    }
}

/// Log in over secure WebSocket with SASL PLAIN and bind; returns the bind result.
pub fn wss_login(server: &Server, port: u16, alpn: &[&[u8]], resource: &str) -> String {
    let mut ws = Wss::connect(server, port, alpn);
    let features = ws.open();
    // RFC 7395 §3.9: no STARTTLS inside WebSocket; over TLS SASL (PLAIN included) is offered.
    assert!(!features.contains("starttls"), "{features}");
    assert!(features.contains("PLAIN"), "{features}");
    assert!(features.contains("SCRAM-SHA-256"), "{features}");
    let plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", ALICE.0, ALICE.1));
    ws.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
    ));
    let success = ws.recv();
    assert!(success.starts_with("<success"), "{success}");
    let features = ws.open();
    assert!(features.contains("xmpp-bind"), "{features}");
    ws.send(&format!(
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{resource}</resource></bind></iq>"
    ));
    let bound = ws.recv();
    ws.send(&format!("<close xmlns='{FRAMING}'/>"));
    bound
}

#[test]
fn rfc7395_wss_login_on_the_https_listener() {
    let mut server = Server::start_default();
    let bound = wss_login(&server, server.https, &[b"http/1.1"], "wss");
    assert!(bound.contains("alice@localhost/wss"), "{bound}");
    server.assert_serves();
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn cors_any_origin_by_default_on_xmpp_endpoints_only() {
    let server = Server::start_default();
    let origin = "Origin: https://web.example\r\n";
    let r = https_request(
        &server,
        server.https,
        &[],
        &format!("GET /.well-known/host-meta HTTP/1.1\r\n{origin}"),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"), "{r}");
    // Over TLS the announced WebSocket is wss://.
    assert!(r.contains("wss://"), "{r}");

    // A preflight (BOSH posts text/xml, which needs one).
    let r = https_request(
        &server,
        server.https,
        &[],
        &format!(
            "OPTIONS /.well-known/host-meta.json HTTP/1.1\r\n{origin}\
             Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n"
        ),
    );
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"), "{r}");
    assert!(
        header(&r, "access-control-allow-methods").is_some_and(|m| m.contains("POST")),
        "{r}"
    );
    assert!(
        header(&r, "access-control-allow-headers")
            .is_some_and(|h| h.eq_ignore_ascii_case("content-type")),
        "{r}"
    );

    // The operations endpoints are not for other origins.
    let r = https_request(
        &server,
        server.https,
        &[],
        &format!("GET /health HTTP/1.1\r\n{origin}"),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(header(&r, "access-control-allow-origin"), None, "{r}");
}

#[test]
fn cors_origins_are_configurable() {
    let server = Server::start_with(Options {
        extra: "[http]\ncors_origins = [\"https://web.example\"]\n".into(),
        ..Options::default()
    });
    let get = |origin: &str| {
        https_request(
            &server,
            server.https,
            &[],
            &format!("GET /.well-known/host-meta.json HTTP/1.1\r\nOrigin: {origin}\r\n"),
        )
    };
    let r = get("https://web.example");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://web.example"),
        "{r}"
    );
    assert!(
        header(&r, "vary").is_some_and(|v| v.contains("Origin")),
        "{r}"
    );
    let r = get("https://evil.example");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(header(&r, "access-control-allow-origin"), None, "{r}");

    // The plain HTTP listener applies the same setting.
    let mut s = TcpStream::connect(("127.0.0.1", server.http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /.well-known/host-meta HTTP/1.1\r\nHost: {DOMAIN}\r\nOrigin: https://web.example\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let r = read_all(&mut s);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://web.example"),
        "{r}"
    );
}

#[test]
fn cors_origins_that_are_not_origins_are_refused() {
    let server = Server::new(Options {
        extra: "[http]\ncors_origins = [\"web.example/path\"]\n".into(),
        ..Options::default()
    });
    let out = server.cli(&["check-config"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cors_origins"), "{stderr}");
}

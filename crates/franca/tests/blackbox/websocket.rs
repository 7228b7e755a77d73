//! XMPP over WebSocket (RFC 7395) on the HTTP listener: a WebSocket client logs in, chats with a
//! TCP client both ways and closes; the upgrade without the `xmpp` subprotocol and an oversized
//! message are refused.

use crate::harness::{ALICE, BOB, DOMAIN, Server};
use base64::Engine;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocket;
use tungstenite::{Message, http::HeaderValue};

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

pub(crate) struct Ws {
    ws: WebSocket<TcpStream>,
}

impl Ws {
    pub(crate) fn connect(
        server: &Server,
        protocol: Option<&str>,
    ) -> Result<Ws, tungstenite::Error> {
        let url = format!("ws://127.0.0.1:{}/xmpp-websocket", server.http);
        let mut request = url.into_client_request()?;
        if let Some(p) = protocol {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(p).expect("a header value"),
            );
        }
        let tcp = TcpStream::connect(("127.0.0.1", server.http)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let (ws, _response) = tungstenite::client(request, tcp).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(std::io::ErrorKind::WouldBlock.into())
            }
        })?;
        Ok(Ws { ws })
    }

    pub(crate) fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send a message");
    }

    /// The next text message.
    pub(crate) fn recv(&mut self) -> String {
        loop {
            match self.ws.read().expect("read a message") {
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected WebSocket message {other:?}"),
            }
        }
    }

    /// Messages until one satisfies `pred`, which is returned.
    pub(crate) fn recv_until(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "timed out");
            let m = self.recv();
            if pred(&m) {
                return m;
            }
        }
    }

    pub(crate) fn open(&mut self) -> String {
        self.send(&format!(
            "<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>"
        ));
        let open = self.recv();
        assert!(
            open.starts_with("<open") && open.contains(FRAMING),
            "{open}"
        );
        let features = self.recv();
        assert!(features.contains("features"), "{features}");
        features
    }
}

#[test]
fn rfc7395_login_chat_with_a_tcp_client_and_close() {
    let mut server = Server::start_default();

    let mut ws = Ws::connect(&server, Some("xmpp")).expect("WebSocket upgrade");
    let features = ws.open();
    // §3.9: no STARTTLS inside a WebSocket; loopback counts as secure (a TLS proxy's side).
    assert!(!features.contains("starttls"), "{features}");
    assert!(features.contains("PLAIN"), "{features}");
    let plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", ALICE.0, ALICE.1));
    ws.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
    ));
    let success = ws.recv();
    assert!(success.starts_with("<success"), "{success}");
    let features = ws.open();
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
        "{features}"
    );
    ws.send(
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>web</resource></bind></iq>",
    );
    let bound = ws.recv();
    assert!(bound.contains("alice@localhost/web"), "{bound}");
    ws.send("<presence xmlns='jabber:client'/>");

    let mut bob = server.login(BOB, "tcp");
    bob.send(
        "<message to='alice@localhost/web' type='chat' id='to-ws'><body>over TCP</body></message>",
    );
    // A stanza from the session queue, with its namespace declared (each message is a document).
    let got = ws.recv_until(|m| m.starts_with("<message"));
    assert!(
        got.contains("xmlns='jabber:client'") || got.contains("xmlns=\"jabber:client\""),
        "{got}"
    );
    assert!(got.contains("over TCP"), "{got}");

    ws.send(
        "<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat' id='from-ws'>\
         <body>over WebSocket</body></message>",
    );
    bob.wait("the message from WebSocket", 10, |t| {
        t.contains("over WebSocket")
    });

    // §3.6: <close/> is answered with <close/>.
    ws.send(&format!("<close xmlns='{FRAMING}'/>"));
    let close = ws.recv_until(|m| m.starts_with("<close"));
    assert!(close.contains(FRAMING), "{close}");
    server.assert_serves();
}

#[test]
fn rfc7395_upgrade_requires_the_xmpp_subprotocol() {
    let mut server = Server::start_default();
    match Ws::connect(&server, None) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        Err(e) => panic!("expected HTTP 400, got {e}"),
        Ok(_) => panic!("the upgrade without a subprotocol was accepted"),
    }
    server.assert_serves();
}

#[test]
fn rfc7395_a_message_over_the_stanza_limit_ends_the_connection() {
    let mut server =
        Server::start_with(crate::harness::Options::default().limit("max_stanza_bytes", 4096));
    let mut ws = Ws::connect(&server, Some("xmpp")).expect("WebSocket upgrade");
    ws.open();
    let big = format!(
        "<message xmlns='jabber:client' to='x@localhost'><body>{}</body></message>",
        "a".repeat(10_000)
    );
    let _ = ws.ws.send(Message::text(big));
    // tungstenite refuses the frame before it is buffered: the connection ends (close frame
    // 1009, or reset), and the server keeps serving.
    let ended = loop {
        match ws.ws.read() {
            Ok(Message::Close(_)) | Err(_) => break true,
            Ok(_) => {}
        }
    };
    assert!(ended);
    server.assert_serves();
}

#[test]
fn xep0156_host_meta_announces_the_websocket_endpoint() {
    use std::io::{Read, Write};
    let server = Server::start_default();
    for (path, needle) in [
        (
            "/.well-known/host-meta",
            "<Link rel='urn:xmpp:alt-connections:websocket'",
        ),
        (
            "/.well-known/host-meta.json",
            "\"rel\":\"urn:xmpp:alt-connections:websocket\"",
        ),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", server.http)).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: chat.example\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut response = String::new();
        s.read_to_string(&mut response).expect("response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(needle), "{response}");
        assert!(
            response.contains("wss://chat.example/xmpp-websocket"),
            "{response}"
        );
        assert!(
            response
                .to_ascii_lowercase()
                .contains("access-control-allow-origin: *"),
            "{response}"
        );
    }
}

#[test]
fn websocket_streams_share_the_per_address_connection_limit() {
    let mut server =
        Server::start_with(crate::harness::Options::default().limit("max_connections_per_ip", 2));
    let _a = Ws::connect(&server, Some("xmpp")).expect("first WebSocket");
    let _b = Ws::connect(&server, Some("xmpp")).expect("second WebSocket");
    match Ws::connect(&server, Some("xmpp")) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        Err(e) => panic!("expected HTTP 429, got {e}"),
        Ok(_) => panic!("a third connection from one address was accepted"),
    }
    drop(_a);
    drop(_b);
    // The budget comes back when the streams end; the harness check logs in over TCP.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Ws::connect(&server, Some("xmpp")).is_err() {
        assert!(
            Instant::now() < deadline,
            "the connection budget never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.assert_serves();
}

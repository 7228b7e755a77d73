//! XMPP over BOSH (XEP-0124, XEP-0206) at `/http-bind` on the HTTP listener: a BOSH client
//! logs in, chats with a TCP client both ways and terminates; the hostile cases of issue 4
//! (rid replay, out-of-window rid, too many simultaneous requests, unknown sid, oversize body)
//! and session expiry end the way the XEP says, and the server keeps serving.
//!
//! The client is a plain HTTP/1.1 POST over a fresh TCP connection per request, so every
//! request and response is visible in the test. It waits for each response before sending the
//! next request (no poll kept open), which XEP-0124 allows; the third-party client in the
//! interop suite (strophe.js) keeps polls open.

use crate::harness::{ALICE, BOB, DOMAIN, Options, Server};
use base64::Engine;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

/// One HTTP POST to `/http-bind`; (status, body).
fn post(port: u16, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP listener");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The server may answer (413) and close before it read everything.
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {raw:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// The value of `name='…'` in `text`.
fn attr<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}='");
    let start = text.find(&key)? + key.len();
    let len = text[start..].find('\'')?;
    Some(&text[start..start + len])
}

fn is_terminate(body: &str, condition: &str) -> bool {
    body.contains("type='terminate'") && body.contains(&format!("condition='{condition}'"))
}

/// A BOSH session driven one request at a time.
pub(crate) struct Bosh {
    port: u16,
    sid: String,
    rid: u64,
}

impl Bosh {
    /// Creates a session (`wait` seconds per empty poll, `hold='1'`); returns it and the
    /// creation response.
    pub(crate) fn create(server: &Server, wait: u32) -> (Bosh, String) {
        Bosh::try_create(server, wait).unwrap_or_else(|(status, body)| panic!("{status}: {body}"))
    }

    /// [`Bosh::create`], or the refusal's (status, body).
    fn try_create(server: &Server, wait: u32) -> Result<(Bosh, String), (u16, String)> {
        let rid = 1_000_000 + u64::from(rand::random::<u16>());
        let (status, body) = post(
            server.http,
            format!(
                "<body content='text/xml; charset=utf-8' hold='1' rid='{rid}' to='{DOMAIN}' \
                 ver='1.6' wait='{wait}' xml:lang='en' xmpp:version='1.0' \
                 xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh'/>"
            )
            .as_bytes(),
        );
        if status != 200 {
            return Err((status, body));
        }
        let sid = attr(&body, "sid")
            .unwrap_or_else(|| panic!("no sid in the creation response: {body}"))
            .to_owned();
        Ok((
            Bosh {
                port: server.http,
                sid,
                rid,
            },
            body,
        ))
    }

    /// A request with this rid, extra attributes and payload.
    fn request_rid(&self, rid: u64, attrs: &str, payload: &str) -> (u16, String) {
        let sid = &self.sid;
        post(
            self.port,
            format!(
                "<body rid='{rid}' sid='{sid}' {attrs} xmlns='{HTTPBIND}' \
                 xmlns:xmpp='urn:xmpp:xbosh'>{payload}</body>"
            )
            .as_bytes(),
        )
    }

    /// The next request; the response must be a 200.
    fn send_with(&mut self, attrs: &str, payload: &str) -> String {
        self.rid += 1;
        let (status, body) = self.request_rid(self.rid, attrs, payload);
        assert_eq!(status, 200, "{body}");
        body
    }

    pub(crate) fn send(&mut self, payload: &str) -> String {
        self.send_with("", payload)
    }

    /// Empty polls until a response satisfies `pred`.
    pub(crate) fn poll_until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let body = self.send("");
            if pred(&body) {
                return body;
            }
            assert!(!body.contains("type='terminate'"), "ended: {body}");
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
        }
    }

    /// SASL PLAIN, the restart and the binding of `resource`.
    pub(crate) fn login(&mut self, user: (&str, &str), resource: &str) {
        let plain =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", user.0, user.1));
        let success = self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
        ));
        assert!(success.contains("<success"), "{success}");
        // XEP-0206 §5: the restart is answered with the new features.
        let features = self.send_with(&format!("xmpp:restart='true' to='{DOMAIN}'"), "");
        assert!(
            features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
            "{features}"
        );
        let bound = self.send(&format!(
            "<iq xmlns='jabber:client' type='set' id='bind'>\
             <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ));
        assert!(
            bound.contains(&format!("{}@{DOMAIN}/{resource}", user.0)),
            "{bound}"
        );
    }
}

#[test]
fn xep0206_login_chat_with_a_tcp_client_and_terminate() {
    let mut server = Server::start_default();
    let (mut bosh, created) = Bosh::create(&server, 2);
    // §7.2 session attributes and XEP-0206 §3 features in the creation response; loopback
    // counts as secure (a TLS proxy's side), so PLAIN is offered and STARTTLS is not.
    for needle in [
        "wait='2'",
        "hold='1'",
        "requests='2'",
        "ver='1.6'",
        "xmpp:version='1.0'",
        "<stream:features",
        "<mechanism>PLAIN</mechanism>",
    ] {
        assert!(created.contains(needle), "{needle} missing: {created}");
    }
    assert!(!created.contains("starttls"), "{created}");
    assert!(bosh.sid.len() >= 32, "sid too short to be unguessable");

    bosh.login(ALICE, "web");
    bosh.send("<presence xmlns='jabber:client'/>");

    let mut bob = server.login(BOB, "tcp");
    bob.send(
        "<message to='alice@localhost/web' type='chat' id='to-bosh'><body>over TCP</body></message>",
    );
    let got = bosh.poll_until("the message from TCP", |b| b.contains("over TCP"));
    // Inside a body whose default namespace is httpbind, the stanza declares its own.
    assert!(got.contains("<message xmlns='jabber:client'"), "{got}");

    bosh.send(
        "<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat' id='from-bosh'>\
         <body>over BOSH</body></message>",
    );
    bob.wait("the message from BOSH", 10, |t| t.contains("over BOSH"));

    // §13: terminate; the payload of the terminate request is still delivered.
    let end = bosh.send_with(
        "type='terminate'",
        "<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat'><body>bye</body></message>\
         <presence xmlns='jabber:client' type='unavailable'/>",
    );
    assert!(end.contains("type='terminate'"), "{end}");
    assert!(
        !end.contains("condition="),
        "a client's terminate is no error: {end}"
    );
    bob.wait("the last message", 10, |t| t.contains("<body>bye</body>"));
    // The sid is gone.
    let (_, after) = bosh.request_rid(bosh.rid + 1, "ver='1.6'", "");
    assert!(is_terminate(&after, "item-not-found"), "{after}");
    server.assert_serves();
}

#[test]
fn xep0124_14_3_a_repeated_rid_gets_the_same_response() {
    let mut server = Server::start_default();
    let (mut bosh, created) = Bosh::create(&server, 2);
    // The creation request again (a client that lost the response).
    let (status, again) = bosh.request_rid(bosh.rid, "", "");
    assert_eq!(status, 200);
    assert_eq!(again, created);
    // A login answer, replayed: the same bytes, and the auth is not run twice.
    let plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", ALICE.0, ALICE.1));
    let auth =
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>");
    let success = bosh.send(&auth);
    assert!(success.contains("<success"), "{success}");
    let (status, replayed) = bosh.request_rid(bosh.rid, "", &auth);
    assert_eq!(status, 200);
    assert_eq!(replayed, success);
    // The session carries on.
    let features = bosh.send_with(&format!("xmpp:restart='true' to='{DOMAIN}'"), "");
    assert!(features.contains("xmpp-bind"), "{features}");
    server.assert_serves();
}

#[test]
fn xep0124_14_3_a_rid_beyond_the_window_ends_the_session() {
    let mut server = Server::start_default();
    let (bosh, _) = Bosh::create(&server, 2);
    // requests='2': the next two rids are acceptable, the third is not.
    let (status, body) = bosh.request_rid(bosh.rid + 3, "", "");
    assert_eq!(status, 200);
    assert!(is_terminate(&body, "item-not-found"), "{body}");
    // The session is over: its sid is unknown now.
    let (status, body) = bosh.request_rid(bosh.rid + 1, "ver='1.6'", "");
    assert_eq!(status, 200);
    assert!(is_terminate(&body, "item-not-found"), "{body}");
    server.assert_serves();
}

#[test]
fn xep0124_11_too_many_simultaneous_requests_is_a_policy_violation() {
    let mut server = Server::start_default();
    let (bosh, _) = Bosh::create(&server, 20);
    let (port, sid, rid) = (bosh.port, bosh.sid.clone(), bosh.rid);
    let open = |r: u64| {
        let sid = sid.clone();
        std::thread::spawn(move || Bosh { port, sid, rid: 0 }.request_rid(r, "", ""))
    };
    // rid+1 is held (nothing to send); rid+3 waits for rid+2, which fills the window…
    let held = open(rid + 1);
    std::thread::sleep(Duration::from_millis(300));
    let buffered = open(rid + 3);
    std::thread::sleep(Duration::from_millis(300));
    // …so rid+2 is a third open request where `requests='2'` allows two.
    let (status, third) = bosh.request_rid(rid + 2, "", "");
    assert_eq!(status, 200);
    assert!(is_terminate(&third, "policy-violation"), "{third}");
    for (name, t) in [("held", held), ("buffered", buffered)] {
        let (status, body) = t.join().expect("request thread");
        assert_eq!(status, 200, "{name}");
        assert!(is_terminate(&body, "policy-violation"), "{name}: {body}");
    }
    server.assert_serves();
}

#[test]
fn xep0124_unknown_sid_is_item_not_found() {
    let mut server = Server::start_default();
    let body =
        |ver: &str| format!("<body rid='5' sid='no-such-session' {ver} xmlns='{HTTPBIND}'/>");
    let (status, text) = post(server.http, body("ver='1.6'").as_bytes());
    assert_eq!(status, 200);
    assert!(is_terminate(&text, "item-not-found"), "{text}");
    // §17.1: without `ver` the client may be legacy and gets the HTTP status.
    let (status, text) = post(server.http, body("").as_bytes());
    assert_eq!(status, 404);
    assert!(is_terminate(&text, "item-not-found"), "{text}");
    // Garbage is a bad request (legacy code: no `ver` can be read from it).
    let (status, _) = post(server.http, b"<body xmlns='urn:nope'/>");
    assert_eq!(status, 400);
    server.assert_serves();
}

#[test]
fn bosh_request_bodies_over_the_stanza_limit_get_413() {
    let mut server = Server::start_with(Options::default().limit("max_stanza_bytes", 4096));
    let (mut bosh, _) = Bosh::create(&server, 2);
    let big = format!(
        "<message xmlns='jabber:client' to='bob@localhost'><body>{}</body></message>",
        "a".repeat(10_000)
    );
    let (status, _) = bosh.request_rid(bosh.rid + 1, "", &big);
    assert_eq!(status, 413);
    // Nothing was read, so the session is untouched.
    let body = bosh.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>",
    );
    assert!(body.contains("<failure"), "{body}");
    server.assert_serves();
}

#[test]
fn xep0124_10_an_inactive_session_expires() {
    let mut server = Server::start_with(Options {
        extra: "[bosh]\ninactivity_seconds = 1\n".into(),
        ..Options::default()
    });
    let (mut bosh, created) = Bosh::create(&server, 1);
    assert!(created.contains("inactivity='1'"), "{created}");
    bosh.login(ALICE, "idle");
    bosh.send("<presence xmlns='jabber:client'/>");
    let mut bob = server.login(BOB, "watcher");
    bob.available();
    // No request for longer than `inactivity`: the session ends as if the connection broke,
    // and Alice's resource goes offline.
    std::thread::sleep(Duration::from_secs(3));
    let (_, body) = bosh.request_rid(bosh.rid + 1, "ver='1.6'", "");
    assert!(is_terminate(&body, "item-not-found"), "{body}");
    let ping = bob.next_id("gone");
    bob.send(format!(
        "<iq to='alice@localhost/idle' type='get' id='{ping}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    let answer = bob.wait_stanza(&ping, 10);
    assert!(answer.contains("type='error'"), "{answer}");
    server.assert_serves();
}

#[test]
fn bosh_sessions_share_the_per_address_connection_limit() {
    let mut server = Server::start_with(Options::default().limit("max_connections_per_ip", 1));
    // The harness's start-up probes of the c2s ports hold the address's only slot until the
    // server sees them close.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut bosh = loop {
        match Bosh::try_create(&server, 1) {
            Ok((bosh, _)) => break bosh,
            Err((429, _)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((status, body)) => panic!("{status}: {body}"),
        }
    };
    let (status, body) = post(
        server.http,
        format!(
            "<body hold='1' rid='1' to='{DOMAIN}' ver='1.6' wait='1' xmpp:version='1.0' \
             xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh'/>"
        )
        .as_bytes(),
    );
    assert_eq!(status, 429, "{body}");
    assert!(is_terminate(&body, "policy-violation"), "{body}");
    // The slot comes back when the session ends.
    let end = bosh.send_with("type='terminate'", "");
    assert!(end.contains("type='terminate'"), "{end}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        let (status, body) = post(
            server.http,
            format!(
                "<body rid='1' to='{DOMAIN}' ver='1.6' wait='1' xmpp:version='1.0' \
                 xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh'/>"
            )
            .as_bytes(),
        );
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the connection budget never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(attr(&again, "sid").is_some(), "{again}");
    // That session holds this address's only slot; the check runs from another address.
    server.assert_serves_from(crate::harness::LOOPBACK2);
}

#[test]
fn xep0156_host_meta_announces_the_bosh_endpoint() {
    let server = Server::start_default();
    let get = |path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", server.http)).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: chat.example\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut response = String::new();
        s.read_to_string(&mut response).expect("response");
        response
    };
    let xrd = get("/.well-known/host-meta");
    assert!(
        xrd.contains(
            "<Link rel='urn:xmpp:alt-connections:xbosh' href='http://chat.example/http-bind'/>"
        ),
        "{xrd}"
    );
    let jrd = get("/.well-known/host-meta.json");
    assert!(
        jrd.contains(
            r#"{"rel":"urn:xmpp:alt-connections:xbosh","href":"http://chat.example/http-bind"}"#
        ),
        "{jrd}"
    );
    // A person looking at the endpoint gets a word of explanation, not an error.
    let page = get("/http-bind");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("XEP-0206"), "{page}");
}

#[test]
fn xep0198_a_bosh_session_that_stops_polling_resumes_in_a_new_one() {
    const SM: &str = "urn:xmpp:sm:3";
    let server = Server::start_with(Options {
        extra: "[bosh]\ninactivity_seconds = 1\n".into(),
        ..Options::default()
    });
    let (mut first, _) = Bosh::create(&server, 1);
    first.login(ALICE, "web");
    let enabled = first.send(&format!("<enable xmlns='{SM}' resume='true'/>"));
    let enabled = if enabled.contains("<enabled") {
        enabled
    } else {
        first.poll_until("<enabled/>", |b| b.contains("<enabled"))
    };
    let id = attr(&enabled, "id")
        .unwrap_or_else(|| panic!("no resumption id: {enabled}"))
        .to_owned();
    let mut bob = server.login(BOB, "desk");
    bob.send(
        "<message to='alice@localhost/web' type='chat' id='m1'><body>never-collected</body></message>",
    );
    bob.ping("queued");
    // The client stops polling: after `inactivity` the BOSH session is gone, and the XMPP
    // session hibernates like one whose TCP connection broke.
    std::thread::sleep(Duration::from_secs(3));
    bob.send(
        "<message to='alice@localhost/web' type='chat' id='m2'><body>while-gone</body></message>",
    );
    bob.ping("sent");

    let (mut second, _) = Bosh::create(&server, 1);
    let plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", ALICE.0, ALICE.1));
    let success = second.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
    ));
    assert!(success.contains("<success"), "{success}");
    second.send_with(&format!("xmpp:restart='true' to='{DOMAIN}'"), "");
    let mut seen = second.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(seen.contains("never-collected") && seen.contains("while-gone")) {
        assert!(!seen.contains("<failed"), "{seen}");
        assert!(Instant::now() < deadline, "not retransmitted: {seen}");
        seen.push_str(&second.send(""));
    }
    assert!(seen.contains("<resumed"), "{seen}");
    server.assert_no_panic();
}

#[test]
fn xep0124_17_2_sigterm_answers_held_requests_with_system_shutdown() {
    let mut server = Server::start_default();
    let (mut bosh, _) = Bosh::create(&server, 20);
    bosh.login(ALICE, "web");
    let (port, sid, rid) = (bosh.port, bosh.sid.clone(), bosh.rid + 1);
    let held = std::thread::spawn(move || Bosh { port, sid, rid: 0 }.request_rid(rid, "", ""));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.sigterm();
    let (status, body) = held.join().expect("held request");
    assert_eq!(status, 200);
    assert!(is_terminate(&body, "system-shutdown"), "{body}");
    assert!(
        body.contains("<system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "the stream error travels in the body (XEP-0206 §7): {body}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn xep0206_on_the_https_listener_with_cors() {
    let server = Server::start_default();
    let body = format!(
        "<body rid='1' to='{DOMAIN}' ver='1.6' wait='1' xmpp:version='1.0' \
         xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh'/>"
    );
    let mut tls =
        crate::https::tls_to(server.https, &server.cert_pem(), &[b"http/1.1"]).expect("TLS");
    write!(
        tls,
        "POST /http-bind HTTP/1.1\r\nHost: {DOMAIN}\r\nOrigin: https://web.example\r\n\
         Content-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    tls.flush().expect("flush");
    let response = crate::https::read_all(&mut tls);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // A browser page on another origin may read it (the default `cors_origins`).
    assert!(
        response
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: *"),
        "{response}"
    );
    assert!(response.contains(" sid='"), "{response}");
    assert!(
        response.contains("<mechanism>PLAIN</mechanism>"),
        "{response}"
    );
}

#[test]
fn bosh_sessions_are_capped_per_listener() {
    let mut server = Server::start_with(Options {
        extra: "[bosh]\nmax_sessions = 1\n".into(),
        ..Options::default()
    });
    let (mut first, _) = Bosh::create(&server, 1);
    match Bosh::try_create(&server, 1) {
        Err((503, body)) => assert!(is_terminate(&body, "undefined-condition"), "{body}"),
        Err((status, body)) => panic!("expected 503, got {status}: {body}"),
        Ok(_) => panic!("a second session was created beyond bosh.max_sessions = 1"),
    }
    // The place comes back when the session ends.
    first.send_with("type='terminate'", "");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Bosh::try_create(&server, 1).is_err() {
        assert!(
            Instant::now() < deadline,
            "the session place never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.assert_serves();
}

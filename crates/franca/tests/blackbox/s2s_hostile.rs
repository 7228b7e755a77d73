//! Hostile server-to-server peers (issue 6, "Hostile input"): a raw TCP/TLS peer speaks s2s
//! to Franca byte by byte and each case checks the protocol's error and its text: a stanza
//! with a spoofed `from` domain (RFC 6120 §4.9.3.9 `<invalid-from/>`), stanzas before any
//! domain is authenticated (§4.9.3.12 `<not-authorized/>`), an invalid XEP-0220 dialback key
//! (`type='invalid'`, checked with the real authoritative server, a second Franca), a
//! certificate that does not name the domain it claims (no SASL EXTERNAL; with
//! `require_valid_certs` no dialback either, refused with `policy-violation`; and the other way,
//! a server we connect to whose certificate names another domain: the stanza bounces with
//! `policy-violation` and why, and nothing is sent to that server), a domain on the
//! deny list (`policy-violation` with the reason), and a flood on one link while another link
//! keeps delivering. After each case the server must still serve.
//!
//! The peers' certificates come from a test CA made with rcgen that the server trusts through
//! `[s2s] ca_file` (the system roots off); leaves carry only the serverAuth EKU, as public CAs
//! issue them now. The server is `localhost`, so the harness's c2s logins work unchanged.

use crate::client::{
    Conn, NS_STANZAS, defined_condition, element_text, has_features, stanza_error,
};
use crate::harness::{ALICE, BOB, DOMAIN, Options, Server};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// A test CA and the leaves it signs.
struct Pki {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain (leaf first) and its key, as a peer presents them.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Franca s2s hostile test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        Pki {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// A serverAuth-only leaf naming `names`.
    fn leaf(&self, names: &[&str]) -> Identity {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("leaf params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Identity {
            chain: vec![cert.der().clone(), self.issuer.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// Writes the CA certificate next to the server's config; returns the `[s2s]` lines
    /// that make the server trust it (and nothing else).
    fn trust_config(&self, dir: &std::path::Path) -> String {
        let path = dir.join("s2s-test-ca.pem");
        std::fs::write(&path, self.issuer.pem()).expect("write CA");
        format!(
            "system_roots = false\nca_file = \"{}\"\n",
            path.display().to_string().replace('\\', "\\\\")
        )
    }
}

/// `localhost` with an s2s listener, trusting `pki`'s CA; `s2s` is more `[s2s]` configuration
/// and `tail` whatever follows it (e.g. `[s2s.routes]`).
fn server(pki: &Pki, s2s: &str, tail: &str) -> Server {
    let mut s = Server::new(Options {
        s2s: true,
        users: vec![ALICE, BOB],
        ..Options::default()
    });
    let cfg = format!(
        "\n[s2s]\nconnect_timeout_seconds = 10\n{}{s2s}\n{tail}\n",
        pki.trust_config(s.dir.path())
    );
    let mut text = std::fs::read_to_string(&s.config).expect("read config");
    text.push_str(&cfg);
    std::fs::write(&s.config, text).expect("write config");
    for (user, pw) in s.opts.users.clone() {
        s.add_user(&format!("{user}@{}", s.opts.domain), pw);
    }
    s.start();
    s
}

/// An s2s stream header from `from` to `to`.
fn header(from: &str, to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='{from}' to='{to}' version='1.0'>"
    )
}

/// The TLS side of a peer: trusts the server's self-signed certificate, presents `identity`.
fn peer_tls(server: &Server, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(server.cert_pem()).expect("server certificate") {
        roots.add(c.expect("PEM")).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A peer claiming `from`: header, STARTTLS, TLS presenting `identity`, the header again.
/// Returns the connection and the features offered after TLS.
fn connect(server: &Server, from: &str, identity: Option<&Identity>) -> (Conn, String) {
    let mut c = Conn::connect(server.s2s, &server.cert_pem());
    c.send(header(from, DOMAIN));
    let features = c.wait("s2s stream features", 15, has_features);
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-tls"),
        "STARTTLS offered: {features}"
    );
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    c.wait("<proceed/>", 15, |t| t.contains("<proceed"));
    c.upgrade_tls_with(peer_tls(server, identity), DOMAIN);
    c.send(header(from, DOMAIN));
    let features = c.wait("s2s stream features after TLS", 15, has_features);
    (c, features)
}

fn offers_external(features: &str) -> bool {
    features.contains("<mechanism>EXTERNAL</mechanism>")
}

fn offers_dialback(features: &str) -> bool {
    features.contains("urn:xmpp:features:dialback")
}

/// A peer for `from` authenticated with SASL EXTERNAL (XEP-0178), stream restarted.
fn authenticated(server: &Server, pki: &Pki, from: &str) -> Conn {
    let id = pki.leaf(&[from]);
    let (mut c, features) = connect(server, from, Some(&id));
    assert!(
        offers_external(&features),
        "EXTERNAL offered for a valid certificate: {features}"
    );
    c.send(format!(
        "<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{}</auth>",
        B64.encode(from)
    ));
    let answer = c.wait("SASL answer", 15, |t| {
        t.contains("<success") || t.contains("<failure")
    });
    assert!(answer.contains("<success"), "EXTERNAL succeeded: {answer}");
    c.send(header(from, DOMAIN));
    c.wait("features after SASL", 15, has_features);
    c
}

/// The first `<db:result/>` (or `<result xmlns='jabber:server:dialback'>`) answer.
fn wait_db_result(c: &mut Conn) -> String {
    let text = c.wait("a dialback result", 30, |t| {
        let Some(start) = t.find("<db:result").or_else(|| t.find("<result")) else {
            return false;
        };
        let rest = &t[start..];
        rest.contains("/>") || rest.contains("</db:result>") || rest.contains("</result>")
    });
    let start = text
        .find("<db:result")
        .or_else(|| text.find("<result"))
        .expect("found");
    text[start..].to_owned()
}

#[test]
fn rfc6120_4_9_3_9_a_spoofed_from_domain_closes_the_stream_with_invalid_from() {
    let pki = Pki::new();
    let mut s = server(&pki, "", "");
    let mut alice = s.login(ALICE, "desk");
    alice.available();
    let mut peer = authenticated(&s, &pki, "good.test");
    // A stanza from the authenticated domain is delivered…
    peer.send(format!(
        "<message from='ann@good.test/x' to='alice@{DOMAIN}/desk' type='chat'><body>genuine</body></message>"
    ));
    alice.wait("the genuine message", 15, |t| t.contains("genuine"));
    // …one claiming another domain on the same stream is not.
    peer.send(format!(
        "<message from='mallory@evil.test/x' to='alice@{DOMAIN}/desk' type='chat'><body>spoofed</body></message>"
    ));
    let (cond, text) = peer.expect_stream_error(15);
    assert_eq!(cond, "invalid-from", "{text}");
    assert!(
        element_text(&text, "text").is_some_and(|t| t.contains("evil.test")),
        "the error names the domain: {text}"
    );
    // Alice got nothing more.
    alice.ping("after-spoof");
    assert!(
        !alice.all_text().contains("spoofed"),
        "{}",
        alice.all_text()
    );
    s.assert_serves();
    s.assert_no_panic();
}

#[test]
fn rfc6120_4_9_3_12_stanzas_before_authentication_are_not_authorized() {
    let pki = Pki::new();
    let mut s = server(&pki, "", "");
    let (mut peer, _) = connect(&s, "good.test", None);
    peer.send(format!(
        "<message from='ann@good.test/x' to='alice@{DOMAIN}' type='chat'><body>early</body></message>"
    ));
    let (cond, text) = peer.expect_stream_error(15);
    assert_eq!(cond, "not-authorized", "{text}");
    s.assert_serves();
    s.assert_no_panic();
}

#[test]
fn xep0220_an_invalid_dialback_key_is_answered_invalid() {
    let pki = Pki::new();
    // b.test: a real Franca, the authoritative server for the domain the peer claims.
    let mut b = Server::new(Options {
        domain: "b.test",
        s2s: true,
        users: vec![],
        ..Options::default()
    });
    b.start();
    let mut s = server(
        &pki,
        "",
        &format!("[s2s.routes]\n\"b.test\" = \"127.0.0.1:{}\"\n", b.s2s),
    );
    let (mut peer, features) = connect(&s, "b.test", None);
    assert!(
        !offers_external(&features),
        "no EXTERNAL without a certificate: {features}"
    );
    assert!(offers_dialback(&features), "dialback offered: {features}");
    peer.send(format!(
        "<db:result from='b.test' to='{DOMAIN}'>{}</db:result>",
        "0123456789abcdef".repeat(4)
    ));
    let answer = wait_db_result(&mut peer);
    assert!(
        answer.contains("type='invalid'") || answer.contains("type=\"invalid\""),
        "the authoritative server said the key is not its own: {answer}"
    );
    // The domain is not authenticated: its stanzas are refused with a stream error (which
    // condition, RFC 6120 §4.9.3.12 or §4.9.3.9, is the test before this one's business).
    peer.send(format!(
        "<message from='bert@b.test/x' to='alice@{DOMAIN}' type='chat'><body>after invalid</body></message>"
    ));
    let (cond, text) = peer.expect_stream_error(15);
    assert!(
        cond == "not-authorized" || cond == "invalid-from",
        "refused: {text}"
    );
    s.assert_serves();
    s.assert_no_panic();
    b.assert_no_panic();
}

#[test]
fn rfc6120_13_7_a_certificate_for_another_name_is_not_enough() {
    let pki = Pki::new();
    let wrong = pki.leaf(&["other.test"]);
    // Dialback allowed: EXTERNAL is not offered, and refused with a reason when tried.
    let mut open = server(&pki, "", "");
    let (mut peer, features) = connect(&open, "good.test", Some(&wrong));
    assert!(!offers_external(&features), "{features}");
    assert!(offers_dialback(&features), "{features}");
    peer.send(format!(
        "<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{}</auth>",
        B64.encode("good.test")
    ));
    let answer = peer.wait("SASL failure", 15, |t| t.contains("</failure>"));
    assert!(answer.contains("<failure"), "{answer}");
    // RFC 6120 §6.5.10: the condition is the first child of <failure/>.
    let inner = &answer[answer.find("<failure").expect("failure")..];
    let inner = &inner[inner.find('>').expect("tag end") + 1..];
    assert!(inner.starts_with("<not-authorized"), "{answer}");
    assert!(
        element_text(&answer, "text").is_some_and(|t| t.contains("good.test")),
        "the failure says why: {answer}"
    );
    open.assert_serves();
    open.assert_no_panic();

    // require_valid_certs: no dialback either; a dialback request is refused with the reason.
    let mut strict = server(&pki, "require_valid_certs = true\n", "");
    let (mut peer, features) = connect(&strict, "good.test", Some(&wrong));
    assert!(!offers_external(&features), "{features}");
    assert!(!offers_dialback(&features), "{features}");
    peer.send(format!(
        "<db:result from='good.test' to='{DOMAIN}'>{}</db:result>",
        "ab".repeat(32)
    ));
    let answer = wait_db_result(&mut peer);
    assert!(
        answer.contains("type='error'") || answer.contains("type=\"error\""),
        "{answer}"
    );
    assert_eq!(
        defined_condition(&answer, NS_STANZAS).as_deref(),
        Some("policy-violation"),
        "{answer}"
    );
    assert!(
        element_text(&answer, "text").is_some_and(|t| t.contains("good.test")),
        "the refusal says why: {answer}"
    );
    // A valid certificate still gets in.
    let mut ok = authenticated(&strict, &pki, "good.test");
    ok.close();
    strict.assert_serves();
    strict.assert_no_panic();
}

/// Reads from `r` into `buf` until `pred` holds for the text (15 s at most); false on EOF or
/// timeout.
fn read_until(r: &mut impl Read, buf: &mut Vec<u8>, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut chunk = [0u8; 4096];
    while !pred(&String::from_utf8_lossy(buf)) {
        if Instant::now() >= deadline {
            return false;
        }
        match r.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return false,
        }
    }
    true
}

/// A complete stream header from Franca (after the XML declaration) in `t`.
fn has_header(t: &str) -> bool {
    t.find("<stream:stream")
        .is_some_and(|at| t[at..].contains('>'))
}

/// The receiving side of an outbound connection, for `domain`, whose TLS certificate is
/// `identity`: headers, STARTTLS, TLS, headers again and a dialback feature; then it reads
/// until Franca closes. Returns what Franca sent after TLS.
fn fake_receiving_server(domain: &'static str, identity: Identity) -> (u16, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let handle = std::thread::spawn(move || {
        // Accept within 30 s, so a server that never calls cannot hang the test.
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tcp = loop {
            match listener.accept() {
                Ok((tcp, _)) => break tcp,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return format!("(no connection: {e})"),
            }
        };
        tcp.set_nonblocking(false).expect("blocking");
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
             xmlns:stream='http://etherx.jabber.org/streams' from='{domain}' to='{DOMAIN}' \
             id='fake-1' version='1.0'>"
        );
        let mut buf = Vec::new();
        assert!(read_until(&mut tcp, &mut buf, has_header), "no header");
        tcp.write_all(
            format!(
                "{header}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>\
                 <required/></starttls></stream:features>"
            )
            .as_bytes(),
        )
        .expect("write");
        assert!(
            read_until(&mut tcp, &mut buf, |t| t.contains("<starttls")),
            "no starttls"
        );
        tcp.write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .expect("write");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .expect("server certificate");
        let conn = rustls::ServerConnection::new(Arc::new(config)).expect("TLS server");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = Vec::new();
        if read_until(&mut tls, &mut buf, has_header) {
            let _ = tls.write_all(
                format!(
                    "{}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/>\
                     </stream:features>",
                    header.replace("fake-1", "fake-2")
                )
                .as_bytes(),
            );
            let _ = tls.flush();
            read_until(&mut tls, &mut buf, |t| t.contains("</stream:stream>"));
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    (port, handle)
}

#[test]
fn rfc6120_13_7_2_an_outbound_peer_certificate_for_another_name_is_refused() {
    let pki = Pki::new();
    let (port, peer) = fake_receiving_server("wrong.test", pki.leaf(&["other.test"]));
    let mut s = server(
        &pki,
        "require_valid_certs = true\n",
        &format!("[s2s.routes]\n\"wrong.test\" = \"127.0.0.1:{port}\"\n"),
    );
    let mut alice = s.login(ALICE, "desk");
    alice.send("<message to='someone@wrong.test' type='chat' id='m1'><body>x</body></message>");
    let st = alice.wait_stanza("m1", 30);
    assert_eq!(
        stanza_error(&st).as_deref(),
        Some("policy-violation"),
        "{st}"
    );
    let text = element_text(&st, "text").unwrap_or_default();
    assert!(
        text.contains("wrong.test") && text.contains("certificate"),
        "the bounce says why: {st}"
    );
    let sent = peer.join().expect("fake server");
    // TLS was set up (the header came over it): the refusal is the name check's.
    assert!(sent.contains("<stream:stream"), "{sent}");
    assert!(
        !sent.contains("db:result") && !sent.contains("<result") && !sent.contains("<message"),
        "nothing was sent to a peer whose certificate is not its own: {sent}"
    );
    s.assert_serves();
    s.assert_no_panic();
}

#[test]
fn issue6_a_denied_domain_is_refused_with_policy_violation_and_a_reason() {
    let pki = Pki::new();
    let mut s = server(&pki, "deny = [\"spam.test\"]\n", "");
    // Named in the stream header: refused before anything else.
    let mut peer = Conn::connect(s.s2s, &s.cert_pem());
    peer.send(header("spam.test", DOMAIN));
    let (cond, text) = peer.expect_stream_error(15);
    assert_eq!(cond, "policy-violation", "{text}");
    assert!(
        element_text(&text, "text").is_some_and(|t| t.contains("spam.test")),
        "the error says why: {text}"
    );
    // Asked for with dialback on a stream opened under another name: the answer refuses it.
    let (mut peer, _) = connect(&s, "good.test", None);
    peer.send(format!(
        "<db:result from='spam.test' to='{DOMAIN}'>{}</db:result>",
        "cd".repeat(32)
    ));
    let answer = wait_db_result(&mut peer);
    assert_eq!(
        defined_condition(&answer, NS_STANZAS).as_deref(),
        Some("policy-violation"),
        "{answer}"
    );
    assert!(
        element_text(&answer, "text").is_some_and(|t| t.contains("spam.test")),
        "{answer}"
    );
    s.assert_serves();
    s.assert_no_panic();
}

#[test]
fn issue6_a_flood_on_one_link_does_not_stall_another() {
    let pki = Pki::new();
    let mut s = server(&pki, "", "");
    let mut alice = s.login(ALICE, "desk");
    alice.available();
    let mut flooder = authenticated(&s, &pki, "flood.test");
    let mut calm = authenticated(&s, &pki, "calm.test");
    // The flood: error messages to an account that does not exist, which the server drops
    // without answering, as fast as the socket takes them.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let filler = "x".repeat(1000);
            let mut sent = 0usize;
            let chunk: String = (0..16)
                .map(|i| {
                    format!(
                        "<message from='f@flood.test' to='nobody@{DOMAIN}' type='error' id='f{i}'><body>{filler}</body></message>"
                    )
                })
                .collect();
            while !stop.load(Ordering::Relaxed) {
                if flooder.try_send(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
            flooder.shutdown();
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..5 {
        let body = format!("calm {i}");
        let started = Instant::now();
        calm.send(format!(
            "<message from='carl@calm.test/x' to='alice@{DOMAIN}/desk' type='chat'><body>{body}</body></message>"
        ));
        alice.wait(&body, 10, |t| t.contains(&body));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a message on the calm link took {:?} during the flood",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().expect("flood thread");
    assert!(sent > 100_000, "the flood was a flood: {sent} bytes");
    calm.close();
    s.assert_serves();
    s.assert_no_panic();
}

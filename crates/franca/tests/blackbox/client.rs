//! A deliberately small raw XMPP client: bytes out, text in, string matching on what comes back.
//! It speaks plaintext or STARTTLS (rustls, trusting only the server's generated certificate)
//! and SCRAM-SHA-256, so hostile bytes can be put on the wire exactly as written.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};

use crate::harness::DOMAIN;

pub const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

pub fn stream_header() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
    )
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Gone,
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
            Transport::Gone => Ok(0),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
            Transport::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
            Transport::Gone => Ok(()),
        }
    }
}

pub struct Conn {
    transport: Transport,
    /// A second handle on the socket, for timeouts and shutdown.
    sock: TcpStream,
    cert: PathBuf,
    /// Everything received on the current transport (reset when TLS starts).
    buf: Vec<u8>,
    /// Start of what the next `wait` looks at.
    mark: usize,
    closed: bool,
    ids: u32,
}

/// Trust only the server's self-signed certificate, for the name `localhost`.
pub fn tls_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert)
        .unwrap_or_else(|e| panic!("read {}: {e}", cert.display()))
    {
        roots
            .add(c.expect("PEM certificate"))
            .expect("add the server certificate as trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// A TLS client session for DOMAIN offering `alpn` (RFC 7301), none when empty.
pub fn tls_client(cert: &Path, alpn: &[&[u8]]) -> rustls::ClientConnection {
    let name = ServerName::try_from(DOMAIN)
        .expect("server name")
        .to_owned();
    let mut config = tls_config(cert);
    if !alpn.is_empty() {
        let mut c = (*config).clone();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config = Arc::new(c);
    }
    rustls::ClientConnection::new(config, name).expect("TLS client")
}

fn tls_connect(
    sock: TcpStream,
    cert: &Path,
    alpn: &[&[u8]],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let conn = tls_client(cert, alpn);
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls.conn.is_handshaking() {
        match tls.conn.complete_io(&mut tls.sock) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
            Err(e) => panic!("TLS handshake with franca failed: {e}"),
        }
    }
    tls
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Conn {
    pub fn connect(port: u16, cert: &Path) -> Conn {
        Conn::connect_from(crate::harness::LOOPBACK, port, cert)
    }

    /// Connects to 127.0.0.1:port from the local address `src` (any 127.x address works).
    pub fn connect_from(src: IpAddr, port: u16, cert: &Path) -> Conn {
        let sock = Conn::tcp_from(src, port).unwrap_or_else(|e| panic!("connect to {port}: {e}"));
        Conn::from_tcp(sock, cert)
    }

    pub fn tcp_from(src: IpAddr, port: u16) -> io::Result<TcpStream> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&SocketAddr::new(src, 0).into())?;
        s.connect_timeout(
            &SocketAddr::new(crate::harness::LOOPBACK, port).into(),
            Duration::from_secs(5),
        )?;
        let s: TcpStream = s.into();
        s.set_nodelay(true)?;
        Ok(s)
    }

    fn from_tcp(sock: TcpStream, cert: &Path) -> Conn {
        let handle = sock.try_clone().expect("clone socket");
        Conn {
            transport: Transport::Plain(sock),
            sock: handle,
            cert: cert.to_owned(),
            buf: Vec::new(),
            mark: 0,
            closed: false,
            ids: 0,
        }
    }

    /// Direct TLS (XEP-0368) to the c2s_tls port.
    pub fn connect_tls(port: u16, cert: &Path) -> Conn {
        Conn::connect_tls_alpn(port, cert, &[])
    }

    /// Direct TLS offering the ALPN protocols `alpn` (the multiplexed port).
    pub fn connect_tls_alpn(port: u16, cert: &Path, alpn: &[&[u8]]) -> Conn {
        let sock = Conn::tcp_from(crate::harness::LOOPBACK, port)
            .unwrap_or_else(|e| panic!("connect to {port}: {e}"));
        let handle = sock.try_clone().expect("clone socket");
        handle
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let tls = tls_connect(sock, cert, alpn);
        Conn {
            transport: Transport::Tls(Box::new(tls)),
            sock: handle,
            cert: cert.to_owned(),
            buf: Vec::new(),
            mark: 0,
            closed: false,
            ids: 0,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    pub fn next_id(&mut self, prefix: &str) -> String {
        self.ids += 1;
        format!("{prefix}-{}", self.ids)
    }

    /// Writes all of `data`; panics on error.
    pub fn send(&mut self, data: impl AsRef<[u8]>) {
        self.try_send(data.as_ref()).unwrap_or_else(|e| {
            panic!(
                "write to franca failed: {e}; received so far:\n{}",
                self.all_text()
            )
        });
    }

    /// Writes all of `data`; the server may legitimately close the stream while we write.
    pub fn try_send(&mut self, data: impl AsRef<[u8]>) -> io::Result<()> {
        self.transport.write_all(data.as_ref())?;
        self.transport.flush()
    }

    /// One read with a short timeout. False once the stream is closed.
    fn fill(&mut self, until: Instant) -> bool {
        if self.closed {
            return false;
        }
        let wait = until
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(200));
        let _ = self.sock.set_read_timeout(Some(wait));
        let mut chunk = [0u8; 16384];
        match self.transport.read(&mut chunk) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if is_timeout(&e) => true,
            Err(_) => {
                // Reset, TLS alert, unexpected EOF: the peer is gone.
                self.closed = true;
                false
            }
        }
    }

    pub fn all_text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    fn pending_text(&self) -> String {
        String::from_utf8_lossy(&self.buf[self.mark..]).into_owned()
    }

    /// Reads until `pred` holds for the text received since the last wait; returns that text.
    pub fn wait(&mut self, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self.pending_text();
            if pred(&text) {
                self.mark = self.buf.len();
                return text;
            }
            if self.closed {
                panic!("stream closed while waiting for {what}; received:\n{text}");
            }
            if Instant::now() >= deadline {
                panic!("timed out after {secs} s waiting for {what}; received:\n{text}");
            }
            self.fill(deadline);
        }
    }

    /// Reads until the server closes the connection (or `secs` pass). Returns the text since
    /// the last wait and whether the connection was closed.
    pub fn read_until_closed(&mut self, secs: u64) -> (String, bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.closed && Instant::now() < deadline {
            self.fill(deadline);
        }
        let text = self.pending_text();
        self.mark = self.buf.len();
        (text, self.closed)
    }

    /// Reads until stream features arrive, the connection closes, or `secs` pass.
    pub fn wait_or_close(&mut self, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.closed && Instant::now() < deadline && !has_features(&self.pending_text()) {
            self.fill(deadline);
        }
        let text = self.pending_text();
        self.mark = self.buf.len();
        text
    }

    /// Waits for a stream error and the end of the stream; returns the condition.
    pub fn expect_stream_error(&mut self, secs: u64) -> (String, String) {
        let (text, closed) = self.read_until_closed(secs);
        let cond = stream_error(&text).unwrap_or_else(|| {
            panic!("expected a stream error (closed: {closed}); received:\n{text}")
        });
        (cond, text)
    }

    pub fn open_stream(&mut self) -> String {
        self.send(stream_header());
        self.wait("<stream:features/>", 15, has_features)
    }

    pub fn starttls(&mut self) {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        self.wait("<proceed/>", 15, |t| t.contains("<proceed"));
        self.upgrade_tls();
    }

    /// Replace the plain socket by TLS; anything received before is kept in `all_text`.
    pub fn upgrade_tls(&mut self) {
        let sock = match std::mem::replace(&mut self.transport, Transport::Gone) {
            Transport::Plain(s) => s,
            _ => panic!("upgrade_tls on a connection that is not plain TCP"),
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        let tls = tls_connect(sock, &self.cert, &[]);
        self.transport = Transport::Tls(Box::new(tls));
        self.buf.clear();
        self.mark = 0;
    }

    /// Like `upgrade_tls`, with the caller's TLS configuration and server name: an s2s peer
    /// that presents a certificate of its own (SASL EXTERNAL) or checks another name.
    pub fn upgrade_tls_with(&mut self, config: Arc<rustls::ClientConfig>, name: &str) {
        let sock = match std::mem::replace(&mut self.transport, Transport::Gone) {
            Transport::Plain(s) => s,
            _ => panic!("upgrade_tls_with on a connection that is not plain TCP"),
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        let conn = rustls::ClientConnection::new(config, name).expect("TLS client");
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tls.conn.is_handshaking() {
            match tls.conn.complete_io(&mut tls.sock) {
                Ok(_) => {}
                Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
                Err(e) => panic!("TLS handshake with franca failed: {e}"),
            }
        }
        self.transport = Transport::Tls(Box::new(tls));
        self.buf.clear();
        self.mark = 0;
    }

    /// SCRAM-SHA-256 (RFC 7677) without channel binding. Ok(success text) or Err(what the
    /// server said instead: a SASL failure, a stream error, or the stream closing).
    pub fn scram_sha256(&mut self, user: &str, password: &str) -> Result<String, String> {
        self.scram_sha256_with(user, password, false)
    }

    /// SCRAM-SHA-256-PLUS with `tls-exporter` channel binding (RFC 9266; TLS 1.3 only).
    pub fn scram_sha256_plus(&mut self, user: &str, password: &str) -> Result<String, String> {
        self.scram_sha256_with(user, password, true)
    }

    fn scram_sha256_with(
        &mut self,
        user: &str,
        password: &str,
        plus: bool,
    ) -> Result<String, String> {
        let (mechanism, gs2, cb) = if plus {
            let Transport::Tls(tls) = &self.transport else {
                return Err("channel binding needs TLS".into());
            };
            let exporter = tls
                .conn
                .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
                .map_err(|e| format!("tls-exporter: {e}"))?;
            ("SCRAM-SHA-256-PLUS", "p=tls-exporter,,", exporter.to_vec())
        } else {
            ("SCRAM-SHA-256", "n,,", Vec::new())
        };
        let cnonce = B64.encode(rand::random::<[u8; 18]>());
        let bare = format!("n={},r={cnonce}", saslname(user));
        let first = format!("{gs2}{bare}");
        self.try_send(format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
            B64.encode(&first)
        ))
        .map_err(|e| format!("write failed: {e}"))?;
        let text = self.wait_sasl()?;
        let Some(challenge) = element_text(&text, "challenge") else {
            return Err(text);
        };
        let server_first = String::from_utf8(
            B64.decode(challenge.trim())
                .map_err(|e| format!("{e}: {text}"))?,
        )
        .map_err(|e| format!("{e}: {text}"))?;
        let attr = |k: &str| {
            server_first
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_owned))
                .ok_or_else(|| format!("no {k}= in server-first-message {server_first:?}"))
        };
        let nonce = attr("r")?;
        let salt = B64.decode(attr("s")?).map_err(|e| e.to_string())?;
        let iterations: u32 = attr("i")?.parse().map_err(|e| format!("{e}"))?;
        if !nonce.starts_with(&cnonce) {
            return Err(format!(
                "server nonce {nonce} does not extend ours {cnonce}"
            ));
        }
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let channel = B64.encode([gs2.as_bytes(), &cb].concat());
        let without_proof = format!("c={channel},r={nonce}");
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        let expected_v = B64.encode(hmac(&server_key, auth_message.as_bytes()));
        let final_msg = format!("{without_proof},p={}", B64.encode(proof));
        self.try_send(format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(final_msg)
        ))
        .map_err(|e| format!("write failed: {e}"))?;
        let text = self.wait_sasl()?;
        if !text.contains("<success") {
            return Err(text);
        }
        // Mutual authentication: the server proves it knows the password too.
        if let Some(v) = element_text(&text, "success").filter(|v| !v.trim().is_empty()) {
            let decoded = B64.decode(v.trim()).map_err(|e| e.to_string())?;
            let decoded = String::from_utf8_lossy(&decoded);
            assert_eq!(
                decoded.strip_prefix("v="),
                Some(expected_v.as_str()),
                "wrong SCRAM server signature"
            );
        }
        Ok(text)
    }

    /// The next SASL answer; Err on a failure, stream error or close.
    fn wait_sasl(&mut self) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.pending_text();
            let done = ["challenge", "success", "failure"]
                .iter()
                .any(|n| element_text(&text, n).is_some())
                || text.contains("</stream:error>")
                || text.contains("</stream:stream>");
            if done {
                self.mark = self.buf.len();
                if text.contains("<challenge") || text.contains("<success") {
                    return Ok(text);
                }
                return Err(text);
            }
            if self.closed {
                return Err(format!("(stream closed) {text}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("(timed out) {text}"));
            }
            self.fill(deadline);
        }
    }

    /// Resource binding; returns the full JID.
    pub fn bind(&mut self, resource: &str) -> String {
        let id = self.next_id("bind");
        self.send(format!(
            "<iq type='set' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ));
        let st = self.wait_stanza(&id, 15);
        assert!(is_result(&st), "bind failed: {st}");
        element_text(&st, "jid").unwrap_or_else(|| panic!("no <jid/> in bind result: {st}"))
    }

    /// Waits for the stanza with this id; returns it.
    pub fn wait_stanza(&mut self, id: &str, secs: u64) -> String {
        let text = self.wait(&format!("a stanza with id {id}"), secs, |t| {
            find_stanza(t, id).is_some()
        });
        find_stanza(&text, id).expect("just found").to_owned()
    }

    /// An XEP-0199 ping to the server, answered with a result.
    pub fn ping(&mut self, prefix: &str) {
        let id = self.next_id(prefix);
        self.send(format!(
            "<iq type='get' id='{id}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        let st = self.wait_stanza(&id, 15);
        assert!(is_result(&st), "ping not answered with a result: {st}");
    }

    /// Initial presence (so messages to the bare JID reach this session), then a ping so the
    /// server has processed it before the test goes on.
    pub fn available(&mut self) {
        self.send("<presence/>");
        self.ping("after-presence");
    }

    pub fn close(&mut self) {
        let _ = self.try_send("</stream:stream>");
        let _ = self.read_until_closed(2);
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    pub fn shutdown(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self.closed = true;
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC key");
    m.update(msg);
    m.finalize().into_bytes().into()
}

fn saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// A complete `<stream:features>` (any prefix, or the default namespace).
pub fn has_features(t: &str) -> bool {
    element_text(t, "stream:features").is_some() || element_text(t, "features").is_some()
}

/// `type='result'` on the first tag.
pub fn is_result(stanza: &str) -> bool {
    let head = &stanza[..stanza.find('>').unwrap_or(stanza.len())];
    head.contains("type='result'") || head.contains("type=\"result\"")
}

pub fn is_error(stanza: &str) -> bool {
    let head = &stanza[..stanza.find('>').unwrap_or(stanza.len())];
    head.contains("type='error'") || head.contains("type=\"error\"")
}

/// The text content of the first `<name …>…</name>` (prefix-free names only).
pub fn element_text(text: &str, name: &str) -> Option<String> {
    let mut from = 0;
    while let Some(p) = text[from..].find(&format!("<{name}")) {
        let start = from + p;
        let after = &text[start + 1 + name.len()..];
        let next = after.chars().next()?;
        if next == '>' || next.is_whitespace() || next == '/' {
            let tag_end = start + text[start..].find('>')?;
            if text[..tag_end].ends_with('/') {
                return Some(String::new());
            }
            let close = format!("</{name}>");
            let end = tag_end + text[tag_end..].find(&close)?;
            return Some(text[tag_end + 1..end].to_owned());
        }
        from = start + 1;
    }
    None
}

/// The whole top-level element whose start tag carries `id='ID'`.
pub fn find_stanza<'a>(text: &'a str, id: &str) -> Option<&'a str> {
    for q in ['\'', '"'] {
        let pat = format!(" id={q}{id}{q}");
        let Some(pos) = text.find(&pat) else { continue };
        let start = text[..pos].rfind('<')?;
        let name: String = text[start + 1..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
            .collect();
        let tag_end = start + text[start..].find('>')?;
        if text[..tag_end].ends_with('/') {
            return Some(&text[start..=tag_end]);
        }
        let close = format!("</{name}>");
        let end = tag_end + text[tag_end..].find(&close)? + close.len();
        return Some(&text[start..end]);
    }
    None
}

/// The defined condition of a stream error in `text`, if there is one.
pub fn stream_error(text: &str) -> Option<String> {
    let start = text
        .find("<stream:error")
        .or_else(|| text.find("<error xmlns='http://etherx.jabber.org/streams'"))
        .or_else(|| text.find("<error xmlns=\"http://etherx.jabber.org/streams\""))?;
    defined_condition(&text[start..], NS_STREAMS)
}

/// The first child element in namespace `ns` other than `<text/>`.
pub fn defined_condition(text: &str, ns: &str) -> Option<String> {
    let mut rest = text;
    while let Some(p) = rest.find(ns) {
        let before = &rest[..p];
        let lt = before.rfind('<')?;
        let name: String = before[lt + 1..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/' && *c != '>')
            .collect();
        if name != "text" && name != "error" && name != "stream:error" {
            return Some(name);
        }
        rest = &rest[p + ns.len()..];
    }
    None
}

/// The stanza error condition of an error stanza.
pub fn stanza_error(stanza: &str) -> Option<String> {
    defined_condition(stanza, NS_STANZAS)
}

#[test]
fn text_helpers_work() {
    let t = "<iq xmlns='jabber:client' type='error' id='a1' to='x'><ping xmlns='urn:xmpp:ping'/>\
             <error type='modify'><jid-malformed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>\
             <message id=\"m\"/>";
    let st = find_stanza(t, "a1").expect("found");
    assert!(st.ends_with("</iq>"));
    assert!(is_error(st));
    assert_eq!(stanza_error(st).as_deref(), Some("jid-malformed"));
    assert_eq!(find_stanza(t, "m"), Some("<message id=\"m\"/>"));
    let e = "<stream:stream><stream:error><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>x</text>\
             <policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>";
    assert_eq!(stream_error(e).as_deref(), Some("policy-violation"));
    assert_eq!(
        element_text("<a><jid>u@d/r</jid></a>", "jid").as_deref(),
        Some("u@d/r")
    );
    assert_eq!(
        element_text("<success xmlns='x'/>", "success").as_deref(),
        Some("")
    );
}

//! The inbound s2s listener against a scripted peer on loopback (RFC 6120 §4-§5, XEP-0220,
//! XEP-0368): what is offered before and after TLS, TLS from the first byte on the same port,
//! header refusals with their stream errors, and the authoritative server's answers to
//! `<db:verify/>`.

use franca_core::Server;
use franca_core::config::Config;
use franca_core::module::Modules;
use franca_proto::dialback::{self, DbElement, DbType};
use franca_proto::errors::StreamError;
use franca_proto::ns::{NS_SERVER, NS_STREAMS, NS_TLS};
use franca_proto::s2s::{self, Features};
use franca_s2s::S2s;
use franca_s2s::policy::FederationPermission;
use franca_s2s::stream::{Io, XmlStream};
use franca_xml::{Element, Event, Limits};
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

const LOCAL: &str = "a.test";

struct Everyone;

#[async_trait::async_trait]
impl FederationPermission for Everyone {
    async fn may_federate(&self, _user: &jid::BareJid) -> Result<(), String> {
        Ok(())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    s2s: Arc<S2s>,
    _server: Arc<Server>,
}

async fn start(deny: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.server.domains = vec![LOCAL.into()];
    config.server.data_dir = dir.path().to_owned();
    config.s2s.system_roots = false;
    config.s2s.deny = deny.iter().map(|d| (*d).to_owned()).collect();
    config.s2s.dialback_secret = Some("test secret".into());
    // Generates the self-signed certificate the s2s side presents too.
    franca_net::tls::load(&config).expect("TLS");
    let store = franca_store::open("sqlite::memory:").await.expect("store");
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let s2s = S2s::new(&config, Arc::new(Everyone), rx).expect("s2s");
    let server = Server::new(config, store, Modules::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    s2s.listen(&server, vec![listener]);
    Fixture {
        _dir: dir,
        addr,
        s2s,
        _server: server,
    }
}

fn stream(io: Io) -> XmlStream {
    XmlStream::new(
        io,
        Limits::default(),
        franca_net::limits::ReadRate::new(0, 0),
    )
}

async fn tls(f: &Fixture, tcp: TcpStream) -> Io {
    let tls = tokio_rustls::TlsConnector::from(f.s2s.ctx.client_tls.clone())
        .connect(ServerName::try_from(LOCAL).expect("name"), tcp)
        .await
        .expect("TLS handshake");
    Io::Client(Box::new(tls))
}

/// Send a header from `from` (if any) to `to`; the answer's header, then its next element.
async fn open(s: &mut XmlStream, from: Option<&str>, to: &str) -> (Option<String>, Element) {
    let mut header = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'",
    );
    if let Some(from) = from {
        header.push_str(&format!(" from='{from}'"));
    }
    header.push_str(&format!(" to='{to}'>"));
    s.push_raw(&header);
    s.flush().await.expect("write");
    let id = match next(s).await {
        Event::StreamStart(h) => s2s::check_header(&h).expect("s2s header").id,
        other => panic!("expected a header, got {other:?}"),
    };
    let el = match next(s).await {
        Event::Stanza(el) => el,
        other => panic!("expected an element, got {other:?}"),
    };
    (id, el)
}

async fn next(s: &mut XmlStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("answer in time")
        .expect("readable stream")
}

fn stream_error(el: &Element) -> (StreamError, Option<String>) {
    assert!(
        el.is("error", NS_STREAMS),
        "expected a stream error: {el:?}"
    );
    StreamError::from_element(el).expect("known condition")
}

#[tokio::test]
async fn rfc6120_5_starttls_is_required_before_anything_else() {
    let f = start(&[]).await;
    let mut s = stream(Io::Plain(
        TcpStream::connect(f.addr).await.expect("connect"),
    ));
    let (_, features) = open(&mut s, Some("b.test"), LOCAL).await;
    let offered = Features::parse(&features);
    assert!(offered.starttls, "{features:?}");
    assert!(
        !offered.dialback && !offered.external,
        "nothing before TLS: {features:?}"
    );
    s.send(&dialback::build(
        &DbElement::result_request("b.test", LOCAL, "00"),
        NS_SERVER,
    ))
    .await
    .expect("write");
    let Event::Stanza(el) = next(&mut s).await else {
        panic!("expected a stream error")
    };
    assert_eq!(stream_error(&el).0, StreamError::PolicyViolation);
}

#[tokio::test]
async fn rfc6120_5_after_starttls_dialback_is_offered() {
    let f = start(&[]).await;
    let mut s = stream(Io::Plain(
        TcpStream::connect(f.addr).await.expect("connect"),
    ));
    open(&mut s, Some("b.test"), LOCAL).await;
    s.send(&Element::new("starttls", NS_TLS))
        .await
        .expect("write");
    let Event::Stanza(proceed) = next(&mut s).await else {
        panic!("expected <proceed/>")
    };
    assert!(proceed.is("proceed", NS_TLS));
    let Io::Plain(tcp) = std::mem::replace(&mut s.io, Io::Gone) else {
        panic!("plain")
    };
    s.io = tls(&f, tcp).await;
    s.discard_buffered();
    let (_, features) = open(&mut s, Some("b.test"), LOCAL).await;
    let offered = Features::parse(&features);
    assert!(!offered.starttls, "{features:?}");
    assert!(offered.dialback && offered.dialback_errors, "{features:?}");
    assert!(offered.bidi, "XEP-0288 is offered over TLS: {features:?}");
    assert!(
        !offered.external,
        "a self-signed certificate does not allow EXTERNAL"
    );
}

#[tokio::test]
async fn xep0368_direct_tls_on_the_s2s_port() {
    let f = start(&[]).await;
    let tcp = TcpStream::connect(f.addr).await.expect("connect");
    let mut s = stream(tls(&f, tcp).await);
    let (id, features) = open(&mut s, Some("b.test"), LOCAL).await;
    assert!(id.is_some(), "the responding side gives the stream an id");
    let offered = Features::parse(&features);
    assert!(!offered.starttls && offered.dialback, "{features:?}");
}

#[tokio::test]
async fn rfc6120_4_9_3_header_refusals_say_why() {
    let f = start(&["spam.test"]).await;
    let mut s = stream(Io::Plain(
        TcpStream::connect(f.addr).await.expect("connect"),
    ));
    let (_, el) = open(&mut s, Some("b.test"), "elsewhere.test").await;
    let (cond, text) = stream_error(&el);
    assert_eq!(cond, StreamError::HostUnknown);
    assert!(text.is_some_and(|t| t.contains("elsewhere.test")));

    let mut s = stream(Io::Plain(
        TcpStream::connect(f.addr).await.expect("connect"),
    ));
    let (_, el) = open(&mut s, Some("spam.test"), LOCAL).await;
    let (cond, text) = stream_error(&el);
    assert_eq!(cond, StreamError::PolicyViolation);
    assert!(
        text.is_some_and(|t| t.contains("spam.test") && t.contains("denied")),
        "the text explains the refusal"
    );
}

#[tokio::test]
async fn xep0220_authoritative_server_answers_db_verify() {
    let f = start(&[]).await;
    let tcp = TcpStream::connect(f.addr).await.expect("connect");
    let mut s = stream(tls(&f, tcp).await);
    open(&mut s, Some("b.test"), LOCAL).await;
    // b.test received a key claiming to come from a.test on its stream "sid-1".
    let good = dialback::key("test secret", "b.test", LOCAL, "sid-1");
    for (key, expected) in [(good.as_str(), DbType::Valid), ("0bad", DbType::Invalid)] {
        s.send(&dialback::build(
            &DbElement::verify_request("b.test", LOCAL, "sid-1", key),
            NS_SERVER,
        ))
        .await
        .expect("write");
        let Event::Stanza(el) = next(&mut s).await else {
            panic!("expected an answer")
        };
        match dialback::parse(&el).expect("dialback answer") {
            DbElement::Verify {
                id, ty, from, to, ..
            } => {
                assert_eq!(
                    (id.as_str(), from.as_str(), to.as_str()),
                    ("sid-1", LOCAL, "b.test")
                );
                assert_eq!(ty, Some(expected));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Answering <db:verify/> authenticates nobody: a stanza is refused with <not-authorized/>.
    let spoofed = Element::new("message", NS_SERVER)
        .with_attr("from", "mallory@b.test")
        .with_attr("to", format!("alice@{LOCAL}"));
    s.send(&spoofed).await.expect("write");
    let Event::Stanza(el) = next(&mut s).await else {
        panic!("expected a stream error")
    };
    assert_eq!(stream_error(&el).0, StreamError::NotAuthorized);
}

//! Connecting to another server (RFC 6120 §3, §5, §6; XEP-0220; XEP-0178; XEP-0368): find its
//! hosts, open TCP (or direct TLS when DNS says so), exchange headers, upgrade with STARTTLS,
//! then authenticate our domain with SASL EXTERNAL when the peer offers it (it accepted our
//! certificate) or with a dialback key otherwise. The same opening serves the receiving
//! server's role in dialback: a short connection that asks the authoritative server whether a
//! key is right (`<db:verify/>`).
//!
//! TLS is always required: XEP-0344 §2.1 asks for dialback over TLS, and a plaintext link would
//! expose every stanza.

use crate::federation::Ctx;
use crate::stream::{Io, ReadError, XmlStream};
use crate::verify::{self, CertStatus};
use franca_proto::dialback::{self, DbElement, DbType};
use franca_proto::errors::{StanzaErrorCondition as Cond, StreamError};
use franca_proto::ns::{NS_SASL, NS_SERVER, NS_STREAMS, NS_TLS};
use franca_proto::s2s::{self, Features};
use franca_xml::{Element, Event};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Why a connection could not be made: the stanza error condition queued stanzas bounce with
/// and a text for people.
#[derive(Debug, Clone)]
pub struct ConnectError {
    pub condition: Cond,
    pub text: String,
}

impl ConnectError {
    fn not_found(text: impl Into<String>) -> ConnectError {
        ConnectError {
            condition: Cond::RemoteServerNotFound,
            text: text.into(),
        }
    }

    fn policy(text: impl Into<String>) -> ConnectError {
        ConnectError {
            condition: Cond::PolicyViolation,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A stream opened to `remote` and secured with TLS, its features read.
struct Opened {
    stream: XmlStream,
    /// The id the remote gave our stream (dialback keys are bound to it).
    id: String,
    features: Features,
}

/// What went wrong reading from the remote, as a connect error.
fn read_failed(remote: &str, e: ReadError) -> ConnectError {
    match e {
        ReadError::Xml(e) => {
            ConnectError::not_found(format!("{remote} sent a stream we cannot read: {e}"))
        }
        ReadError::Broken => ConnectError::not_found(format!("{remote} closed the connection")),
    }
}

/// A `<stream:error/>` from the remote, as a connect error with its text.
fn stream_error(remote: &str, el: &Element) -> ConnectError {
    let (err, text) =
        StreamError::from_element(el).unwrap_or((StreamError::UndefinedCondition, None));
    let why = match text {
        Some(t) => format!("{remote} refused the connection ({}): {t}", err.name()),
        None => format!("{remote} refused the connection ({})", err.name()),
    };
    match err {
        StreamError::PolicyViolation | StreamError::NotAuthorized => ConnectError::policy(why),
        _ => ConnectError::not_found(why),
    }
}

/// Send our header and read the remote's header and features.
async fn exchange_headers(
    s: &mut XmlStream,
    local: &str,
    remote: &str,
) -> Result<(String, Features), ConnectError> {
    s.push_raw(&s2s::stream_header(local, Some(remote), None));
    s.flush()
        .await
        .map_err(|e| ConnectError::not_found(format!("writing to {remote}: {e}")))?;
    let header = match s.next().await.map_err(|e| read_failed(remote, e))? {
        Event::StreamStart(h) => h,
        _ => {
            return Err(ConnectError::not_found(format!(
                "{remote} sent no stream header"
            )));
        }
    };
    let header = s2s::check_header(&header).map_err(|e| {
        ConnectError::not_found(format!(
            "{remote} sent an unusable stream header ({})",
            e.name()
        ))
    })?;
    let id = header
        .id
        .ok_or_else(|| ConnectError::not_found(format!("{remote} gave our stream no id")))?;
    let features = s.next_element().await.map_err(|e| read_failed(remote, e))?;
    if features.is("error", NS_STREAMS) {
        return Err(stream_error(remote, &features));
    }
    if !features.is("features", NS_STREAMS) {
        return Err(ConnectError::not_found(format!(
            "{remote} sent <{}/> instead of stream features",
            features.name
        )));
    }
    Ok((id, Features::parse(&features)))
}

async fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    tcp: TcpStream,
    remote: &str,
) -> Result<Io, ConnectError> {
    let name = ServerName::try_from(remote.to_owned())
        .map_err(|_| ConnectError::not_found(format!("{remote} is not a DNS name")))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| ConnectError::not_found(format!("TLS with {remote} failed: {e}")))?;
    Ok(Io::Client(Box::new(tls)))
}

/// Open a stream from `local` to `remote` on one TCP connection, with TLS.
async fn negotiate(
    ctx: &Ctx,
    tcp: TcpStream,
    direct_tls: bool,
    local: &str,
    remote: &str,
) -> Result<Opened, ConnectError> {
    let _ = tcp.set_nodelay(true);
    let io = if direct_tls {
        tls_connect(ctx.client_tls_direct.clone(), tcp, remote).await?
    } else {
        Io::Plain(tcp)
    };
    let mut s = XmlStream::new(io, ctx.limits, ctx.read_rate());
    loop {
        let (id, features) = exchange_headers(&mut s, local, remote).await?;
        if s.io.is_tls() {
            return Ok(Opened {
                stream: s,
                id,
                features,
            });
        }
        if !features.starttls {
            s.close().await;
            return Err(ConnectError::policy(format!(
                "{remote} does not offer TLS, which this server requires"
            )));
        }
        s.send(&s2s::starttls())
            .await
            .map_err(|e| ConnectError::not_found(format!("writing to {remote}: {e}")))?;
        let answer = s.next_element().await.map_err(|e| read_failed(remote, e))?;
        if !answer.is("proceed", NS_TLS) {
            return Err(ConnectError::not_found(format!(
                "{remote} refused STARTTLS"
            )));
        }
        s.discard_buffered();
        let Io::Plain(tcp) = std::mem::replace(&mut s.io, Io::Gone) else {
            return Err(ConnectError::not_found("TLS state lost"));
        };
        s.io = tls_connect(ctx.client_tls.clone(), tcp, remote).await?;
    }
}

/// Find `remote`'s hosts and open a secured stream to the first that answers.
async fn open(ctx: &Ctx, local: &str, remote: &str) -> Result<Opened, ConnectError> {
    let targets = ctx.resolver.targets(remote).await;
    if targets.is_empty() {
        return Err(ConnectError::not_found(format!(
            "{remote} has no XMPP server (DNS)"
        )));
    }
    let mut last = None;
    for target in &targets {
        for addr in ctx.resolver.addresses(target).await {
            match TcpStream::connect(addr).await {
                Ok(tcp) => match negotiate(ctx, tcp, target.direct_tls, local, remote).await {
                    Ok(o) => return Ok(o),
                    Err(e) => {
                        tracing::debug!(%addr, remote, "s2s negotiation failed: {e}");
                        // A refusal by policy will not change on another host of the domain.
                        if e.condition == Cond::PolicyViolation {
                            return Err(e);
                        }
                        last = Some(e);
                    }
                },
                Err(e) => {
                    tracing::debug!(%addr, remote, "s2s connect failed: {e}");
                    last = Some(ConnectError::not_found(format!(
                        "cannot connect to {remote} at {addr}: {e}"
                    )));
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        ConnectError::not_found(format!("no address found for {remote}'s XMPP server"))
    }))
}

/// An authenticated stream from `local` to `remote`, ready for stanzas.
pub struct Connected {
    pub stream: XmlStream,
    /// XEP-0288: the remote may send its stanzas for us back on this stream.
    pub bidi: bool,
}

/// Open and authenticate a stream from `local` to `remote`.
pub async fn connect(ctx: &Ctx, local: &str, remote: &str) -> Result<Connected, ConnectError> {
    let Opened {
        stream: mut s,
        id,
        features,
    } = open(ctx, local, remote).await?;
    let cert = cert_status(ctx, &s, remote);
    if ctx.policy.require_valid_certs() {
        // Our stanzas must reach the real `remote`: with certificates required, its own must
        // prove it, whatever it accepts from us.
        if let Some(why) = not_valid(&cert) {
            s.close().await;
            return Err(ConnectError::policy(format!(
                "the certificate of {remote} is not valid for it ({why}), and this server \
                 requires valid certificates"
            )));
        }
    }
    // XEP-0288 §2: asked before authenticating. Only when the remote's certificate proves its
    // domain, since what comes back on this stream is taken as coming from it.
    let bidi = features.bidi && cert.is_valid();
    if bidi {
        s.send(&Element::new("bidi", s2s::NS_BIDI))
            .await
            .map_err(|e| ConnectError::not_found(format!("writing to {remote}: {e}")))?;
    }
    if features.external {
        s.send(&s2s::auth_external(local))
            .await
            .map_err(|e| ConnectError::not_found(format!("writing to {remote}: {e}")))?;
        let answer = s.next_element().await.map_err(|e| read_failed(remote, e))?;
        if answer.is("success", NS_SASL) {
            s.restart();
            exchange_headers(&mut s, local, remote).await?;
            tracing::info!(
                local,
                remote,
                bidi,
                "s2s outbound authenticated (SASL EXTERNAL)"
            );
            return Ok(Connected { stream: s, bidi });
        }
        // RFC 6120 §6.4.5: a failed SASL negotiation may be followed by another method.
        tracing::debug!(local, remote, "SASL EXTERNAL refused; trying dialback");
    }
    let key = dialback::key(&ctx.secret, remote, local, &id);
    let request = DbElement::result_request(local, remote, &key);
    s.send(&dialback::build(&request, NS_SERVER))
        .await
        .map_err(|e| ConnectError::not_found(format!("writing to {remote}: {e}")))?;
    loop {
        let el = s.next_element().await.map_err(|e| read_failed(remote, e))?;
        if el.is("error", NS_STREAMS) {
            return Err(stream_error(remote, &el));
        }
        let Ok(DbElement::Result {
            from,
            to,
            ty: Some(ty),
            error,
            ..
        }) = dialback::parse(&el)
        else {
            continue;
        };
        if from != remote || to != local {
            continue;
        }
        return match ty {
            DbType::Valid => {
                tracing::info!(local, remote, bidi, "s2s outbound authenticated (dialback)");
                Ok(Connected { stream: s, bidi })
            }
            DbType::Invalid => {
                s.close().await;
                Err(ConnectError::not_found(format!(
                    "{remote} did not accept this server's dialback key"
                )))
            }
            DbType::Error => {
                s.close().await;
                let why = error
                    .and_then(|e| e.text.clone().map(|t| (e.condition.clone(), t)))
                    .map(|(c, t)| format!("{remote} refused dialback ({}): {t}", c.name()))
                    .unwrap_or_else(|| format!("{remote} refused dialback"));
                Err(ConnectError::policy(why))
            }
        };
    }
}

/// The receiving server's half of dialback (XEP-0220 §2.2): ask `authoritative`, on a fresh
/// connection from `local`, whether `key` is the one it made for stream `id`.
pub async fn verify_key(
    ctx: &Ctx,
    local: &str,
    authoritative: &str,
    id: &str,
    key: &str,
) -> Result<bool, ConnectError> {
    let Opened { stream: mut s, .. } = open(ctx, local, authoritative).await?;
    let request = DbElement::verify_request(local, authoritative, id, key);
    s.send(&dialback::build(&request, NS_SERVER))
        .await
        .map_err(|e| ConnectError::not_found(format!("writing to {authoritative}: {e}")))?;
    loop {
        let el = s
            .next_element()
            .await
            .map_err(|e| read_failed(authoritative, e))?;
        if el.is("error", NS_STREAMS) {
            return Err(stream_error(authoritative, &el));
        }
        if let Ok(DbElement::Verify {
            id: answered,
            ty: Some(ty),
            ..
        }) = dialback::parse(&el)
            && answered == id
        {
            s.close().await;
            return Ok(ty == DbType::Valid);
        }
    }
}

/// What the remote's TLS certificate proves about `remote`.
fn cert_status(ctx: &Ctx, s: &XmlStream, remote: &str) -> CertStatus {
    verify::check_peer(&ctx.trust, &s.io.peer_chain(), remote)
}

/// Why a certificate status does not prove the domain, or `None` when it does.
pub fn not_valid(status: &CertStatus) -> Option<String> {
    match status {
        CertStatus::Valid => None,
        CertStatus::Invalid(why) => Some(why.clone()),
        CertStatus::Absent => Some("no certificate was presented".to_owned()),
    }
}

//! One XMPP client connection: the socket, the read buffer and the stanza splitter, plus the
//! negotiation steps (stream header, STARTTLS, SASL, bind) that [`crate::login`] strings
//! together.

use crate::net::{self, Stream};
use crate::proto::{Security, Target};
use crate::sasl::{self, Mech, Scram, ScramCache};
use crate::xml::{self, Event, Splitter};
use std::net::Ipv4Addr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// A connected client.
#[derive(Debug)]
pub struct Xmpp {
    pub stream: Stream,
    pub buf: Vec<u8>,
    split: Splitter,
}

/// What [`Xmpp::next`] returns.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Header,
    Stanza(Vec<u8>),
    End,
}

impl Xmpp {
    /// Opens the TCP (and, for direct TLS, the TLS) connection.
    pub async fn connect(
        target: &Target,
        source: Option<Ipv4Addr>,
        tls: &TlsConnector,
    ) -> Result<Xmpp, String> {
        let addr = match target.security {
            Security::Tls => target.tls.ok_or("no direct TLS port for this server")?,
            _ => target.c2s,
        };
        let tcp = net::connect(source, addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let stream = if target.security == Security::Tls {
            let s = tls
                .connect(crate::tls::server_name(&target.domain)?, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Stream::Tls(Box::new(s))
        } else {
            Stream::Plain(tcp)
        };
        Ok(Xmpp {
            stream,
            buf: Vec::with_capacity(4096),
            split: Splitter::default(),
        })
    }

    pub async fn send(&mut self, data: &str) -> Result<(), String> {
        self.stream
            .write_all(data.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads more bytes; `Ok(0)` is end of stream.
    pub async fn fill(&mut self) -> Result<usize, String> {
        self.compact();
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(4096);
        }
        self.stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| format!("read: {e}"))
    }

    /// Drops bytes no longer needed from the front of the buffer.
    pub fn compact(&mut self) {
        let n = self.split.done_up_to();
        if n > 0 {
            self.buf.drain(..n);
            self.split.consumed(n);
        }
    }

    /// The next complete event already in the buffer (range into `buf`).
    /// Events must be used before the next [`Xmpp::fill`], which may move the bytes.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.split.next(&self.buf)
    }

    /// The next frame, reading as needed (owned copy; for the negotiation, not the hot path).
    pub async fn next(&mut self) -> Result<Frame, String> {
        loop {
            match self.poll_event() {
                Some(Event::StreamStart(..)) => return Ok(Frame::Header),
                Some(Event::Stanza(a, b)) => return Ok(Frame::Stanza(self.buf[a..b].to_vec())),
                Some(Event::StreamEnd) => return Ok(Frame::End),
                None => {
                    if self.fill().await? == 0 {
                        return Err("server closed the connection".into());
                    }
                }
            }
        }
    }

    /// The next stanza; stream ends and stream errors are errors.
    pub async fn stanza(&mut self) -> Result<Vec<u8>, String> {
        loop {
            match self.next().await? {
                Frame::Header => continue,
                Frame::End => return Err("server closed the stream".into()),
                Frame::Stanza(s) => {
                    if xml::name(&s) == b"error" && xml::contains(&s, "streams") {
                        return Err(format!("stream error: {}", String::from_utf8_lossy(&s)));
                    }
                    return Ok(s);
                }
            }
        }
    }

    /// Sends a stream header and returns the `<stream:features/>`.
    pub async fn open(&mut self, domain: &str) -> Result<Vec<u8>, String> {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0' \
             xml:lang='en'>"
        ))
        .await?;
        loop {
            let s = self.stanza().await?;
            if xml::name(&s) == b"features" {
                return Ok(s);
            }
        }
    }

    /// A new stream on the same connection (after STARTTLS or SASL): parser state is reset.
    fn restart(&mut self) {
        self.buf.clear();
        self.split.reset();
    }

    /// STARTTLS (RFC 6120 §5); the caller opens the new stream.
    pub async fn starttls(&mut self, domain: &str, tls: &TlsConnector) -> Result<(), String> {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await?;
        let s = self.stanza().await?;
        if xml::name(&s) != b"proceed" {
            return Err(format!("STARTTLS refused: {}", String::from_utf8_lossy(&s)));
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Detached) else {
            return Err("STARTTLS on a TLS stream".into());
        };
        let tls_stream = tls
            .connect(crate::tls::server_name(domain)?, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        self.stream = Stream::Tls(Box::new(tls_stream));
        self.restart();
        Ok(())
    }

    /// SASL authentication with the first preferred mechanism the server offers.
    pub async fn authenticate(
        &mut self,
        features: &[u8],
        prefs: &[String],
        user: &str,
        password: &str,
        cache: &ScramCache,
    ) -> Result<Mech, String> {
        let offered: Vec<&[u8]> = xml::child_texts(features, "mechanism");
        let mech = prefs
            .iter()
            .filter_map(|p| Mech::parse(p))
            .find(|m| offered.iter().any(|o| *o == m.name().as_bytes()))
            .ok_or_else(|| {
                let names: Vec<String> = offered
                    .iter()
                    .map(|o| String::from_utf8_lossy(o).into_owned())
                    .collect();
                format!("no common SASL mechanism (server offers {names:?})")
            })?;
        match mech {
            Mech::Plain => {
                self.send(&format!(
                    "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{}</auth>",
                    sasl::plain(user, password)
                ))
                .await?;
                let s = self.stanza().await?;
                if xml::name(&s) != b"success" {
                    return Err(format!("auth failed: {}", String::from_utf8_lossy(&s)));
                }
            }
            Mech::ScramSha1 | Mech::ScramSha256 => {
                let (mut scram, first) = Scram::start(mech, user, password);
                self.send(&format!(
                    "<auth xmlns='{NS_SASL}' mechanism='{}'>{first}</auth>",
                    mech.name()
                ))
                .await?;
                let s = self.stanza().await?;
                if xml::name(&s) != b"challenge" {
                    return Err(format!("auth failed: {}", String::from_utf8_lossy(&s)));
                }
                let body = xml::child_text(&s, "challenge").unwrap_or_default();
                let body = if body.is_empty() {
                    inner_text(&s)
                } else {
                    body
                };
                let reply = scram.respond(body, cache)?;
                self.send(&format!("<response xmlns='{NS_SASL}'>{reply}</response>"))
                    .await?;
                let mut s = self.stanza().await?;
                if xml::name(&s) == b"challenge" {
                    scram.verify(inner_text(&s))?;
                    self.send(&format!("<response xmlns='{NS_SASL}'/>")).await?;
                    s = self.stanza().await?;
                }
                if xml::name(&s) != b"success" {
                    return Err(format!("auth failed: {}", String::from_utf8_lossy(&s)));
                }
                scram.verify(inner_text(&s))?;
            }
        }
        self.restart();
        Ok(mech)
    }

    /// Sends an IQ and waits for its result, handing other stanzas to `other`.
    pub async fn iq(
        &mut self,
        id: &str,
        iq: &str,
        other: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<Vec<u8>, String> {
        self.send(iq).await?;
        loop {
            let s = self.stanza().await?;
            if xml::name(&s) == b"iq" && xml::attr(&s, "id") == Some(id.as_bytes()) {
                return match xml::attr(&s, "type") {
                    Some(b"result") => Ok(s),
                    _ => Err(format!("IQ {id} failed: {}", String::from_utf8_lossy(&s))),
                };
            }
            other(&s);
        }
    }

    /// `</stream:stream>` and a short wait for the server's side (best effort).
    pub async fn close(mut self) {
        let _ = self.send("</stream:stream>").await;
        let wait = async {
            loop {
                match self.next().await {
                    Ok(Frame::End) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), wait).await;
        let _ = self.stream.shutdown().await;
    }
}

/// The text between the start and end tag of a stanza such as `<success>...</success>`.
pub fn inner_text(s: &[u8]) -> &[u8] {
    let Some(gt) = s.iter().position(|&c| c == b'>') else {
        return &[];
    };
    if gt > 0 && s[gt - 1] == b'/' {
        return &[];
    }
    let end = s.iter().rposition(|&c| c == b'<').unwrap_or(s.len());
    if end <= gt { &[] } else { &s[gt + 1..end] }
}

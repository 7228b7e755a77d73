//! One s2s connection's bytes: the socket (plain, or TLS as either side), the limited
//! [`StreamReader`] over it with the read-rate limit the c2s streams have, and writing elements
//! in the `jabber:server` namespace. Inbound and outbound negotiation (`inbound.rs`,
//! `outbound.rs`) and the link task (`pool.rs`) are written over this.
//!
//! Server links are few compared with clients, so unlike the c2s task this keeps a small read
//! buffer for the connection's life; [`XmlStream::next`] is cancel-safe (it may lose a race in
//! `select!` without losing bytes) because bytes are appended to that buffer only by a
//! completed read, and a rate-limit pause is remembered across calls.

use franca_net::limits::ReadRate;
use franca_proto::errors::StreamError;
use franca_proto::ns::NS_SERVER;
use franca_xml::{Element, Event, Limits, StreamReader, XmlError};
use rustls_pki_types::CertificateDer;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bytes read per system call.
const READ_CHUNK: usize = 4096;

/// The socket under an s2s stream.
pub enum Io {
    Plain(TcpStream),
    /// We connected (outbound).
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// The peer connected (inbound).
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Moved out for a TLS handshake that failed.
    Gone,
}

impl Io {
    pub fn is_tls(&self) -> bool {
        matches!(self, Io::Client(_) | Io::Server(_))
    }

    /// The certificate chain the peer presented in TLS (end entity first), if any.
    pub fn peer_chain(&self) -> Vec<CertificateDer<'static>> {
        let certs = match self {
            Io::Client(s) => s.get_ref().1.peer_certificates(),
            Io::Server(s) => s.get_ref().1.peer_certificates(),
            Io::Plain(_) | Io::Gone => None,
        };
        certs
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default()
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "socket handed to TLS")
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// Why reading a stream stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The peer broke a limit or sent bad XML: answer with this stream error.
    Xml(XmlError),
    /// EOF or an I/O error: nothing more can be written either.
    Broken,
}

impl ReadError {
    /// The stream error to close with, if the stream can still take one.
    pub fn stream_error(&self) -> Option<(StreamError, String)> {
        match self {
            ReadError::Xml(e) => Some((StreamError::from_xml_error(e), e.to_string())),
            ReadError::Broken => None,
        }
    }
}

/// An XML stream over [`Io`].
pub struct XmlStream {
    pub io: Io,
    reader: StreamReader,
    /// Bytes read and not yet parsed (`start..`).
    buf: Vec<u8>,
    start: usize,
    rate: ReadRate,
    paused_until: Option<Instant>,
    out: String,
}

impl XmlStream {
    pub fn new(io: Io, limits: Limits, rate: ReadRate) -> XmlStream {
        XmlStream {
            io,
            reader: StreamReader::new(limits),
            buf: Vec::new(),
            start: 0,
            rate,
            paused_until: None,
            out: String::new(),
        }
    }

    /// The next complete event. Cancel-safe.
    pub async fn next(&mut self) -> Result<Event, ReadError> {
        loop {
            if self.start < self.buf.len() {
                let mut input = &self.buf[self.start..];
                let before = input.len();
                let ev = self.reader.feed(&mut input).map_err(ReadError::Xml)?;
                self.start += before - input.len();
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                if let Some(ev) = ev {
                    return Ok(ev);
                }
            }
            if let Some(at) = self.paused_until {
                tokio::time::sleep_until(at).await;
                self.paused_until = None;
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK {
                self.buf.reserve(READ_CHUNK);
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(ReadError::Broken),
                Ok(n) => {
                    if let Some(pause) = self.rate.consume(n) {
                        self.paused_until = Some(Instant::now() + pause);
                    }
                }
            }
        }
    }

    /// The next top-level element; the stream ending or a second header is an error here
    /// (negotiation steps that expect an answer).
    pub async fn next_element(&mut self) -> Result<Element, ReadError> {
        match self.next().await? {
            Event::Stanza(el) => Ok(el),
            Event::StreamEnd => Err(ReadError::Broken),
            Event::StreamStart(_) => Err(ReadError::Xml(XmlError::BadFormat(
                "a second stream header".into(),
            ))),
        }
    }

    /// Stream restart (after STARTTLS or SASL): the next bytes start a new stream.
    pub fn restart(&mut self) {
        self.reader.reset();
    }

    /// RFC 6120 §5.3.3: bytes that arrived in plaintext after `<starttls/>`/`<proceed/>` must
    /// not be read as if they came over TLS.
    pub fn discard_buffered(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.reader.reset();
    }

    /// Queue raw XML (a stream header or close) for the next flush.
    pub fn push_raw(&mut self, xml: &str) {
        self.out.push_str(xml);
    }

    /// Queue an element, serialised in the `jabber:server` stream's namespace context.
    pub fn push(&mut self, el: &Element) {
        el.write_to(&mut self.out, NS_SERVER);
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = async {
            self.io.write_all(self.out.as_bytes()).await?;
            self.io.flush().await
        }
        .await;
        self.out.clear();
        if self.out.capacity() > 64 * 1024 {
            self.out = String::new();
        }
        result
    }

    /// Send one element now.
    pub async fn send(&mut self, el: &Element) -> std::io::Result<()> {
        self.push(el);
        self.flush().await
    }

    /// Close with a stream error (RFC 6120 §4.9): the error, the stream end, then the socket.
    /// `header` is the stream header to send first when we have not sent ours yet.
    pub async fn fail(&mut self, header: Option<&str>, err: StreamError, text: Option<&str>) {
        if let Some(h) = header {
            self.push_raw(h);
        }
        self.push(&err.to_element(text));
        self.push_raw("</stream:stream>");
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }

    /// Close the stream cleanly.
    pub async fn close(&mut self) {
        self.push_raw("</stream:stream>");
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

/// A random stream id (RFC 6120 §4.7.3: unpredictable, since dialback keys are bound to it).
pub fn new_stream_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().r#gen();
    format!("{n:032x}")
}

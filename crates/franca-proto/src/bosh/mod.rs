//! BOSH, XMPP over HTTP long polling (XEP-0124 "Bidirectional-streams Over Synchronous HTTP",
//! XEP-0206 "XMPP Over BOSH"), as sans-IO session logic.
//!
//! The HTTP layer reads a POSTed request, hands the bytes to [`parse_body`], and then either
//! creates a session ([`BoshSession::new`], request without `sid`) or feeds the session the
//! request ([`BoshSession::on_request`]). Each call returns the [`RequestId`] it gave the HTTP
//! request and a list of [`Event`]s: stanzas for the XMPP stream in rid order, stream
//! restarts, and `Respond` events that complete a pending HTTP request, possibly another one
//! than the request just received (that is how long polling works). Outgoing stanzas are
//! queued with [`BoshSession::push_element`]/[`BoshSession::push_xml`] and sent by
//! [`BoshSession::flush`]. Time is always passed in; the caller arms one timer at
//! [`BoshSession::next_deadline`] and calls [`BoshSession::on_timer`] when it fires.
//!
//! Chosen behaviour where the XEPs leave room (each is explained where it is implemented):
//!
//! * Errors are terminal binding conditions (XEP-0124 §17.2) in a `<body type='terminate'/>`
//!   with HTTP 200, except for *legacy* clients (no `ver` in the session creation request,
//!   §17.1) and bodies too broken to read a `ver` from, which get the deprecated status codes
//!   400 (`bad-request`), 403 (`policy-violation`) and 404 (`item-not-found`) with the same body.
//!   Both kinds of clients treat either answer as the end of the session.
//! * No session pauses (§10): `maxpause` is never advertised and a `pause` attribute is
//!   ignored. No key sequences (§15, obsolete over TLS), no multiple streams (§16), no
//!   `report`/`time` response reporting (§9.3); `route` is ignored because the connection
//!   manager is the XMPP server itself.
//! * The minimum polling interval (`polling`, §12) is advertised but not enforced: long
//!   polling with `hold >= 1` already limits request rates through the `requests` window.

mod body;
mod session;

use std::fmt;
use std::sync::Arc;

use franca_xml::Limits;

pub use body::{Body, BodyError, MAX_RID, parse_body};
pub use session::{BoshSession, EndReason, Event, RequestId};

/// The `Content-Type` of every response (XEP-0124 §5 examples; UTF-8 only, like XMPP).
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// The BOSH protocol version implemented (XEP-0124 version 1.11).
pub const BOSH_VERSION: (u32, u32) = (1, 11);

/// Server-side bounds of BOSH sessions; shared by all sessions of a listener.
#[derive(Debug, Clone)]
pub struct BoshConfig {
    /// Domains served; a session to any other gets `host-unknown`.
    pub domains: Vec<String>,
    /// Longest time a request is held, in seconds (the client's `wait` is clamped to this).
    pub max_wait: u64,
    /// Most requests held at once (the client's `hold` is clamped to this).
    pub max_hold: u32,
    /// Seconds without any held request after which the session is considered gone (§10).
    pub inactivity: u64,
    /// Shortest polling interval advertised to the client, in seconds (§12).
    pub polling: u64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest batch of queued stanzas put into one response (a single larger stanza is
    /// still sent, alone).
    pub max_response_bytes: usize,
    /// Largest backlog of stanzas waiting for the client to come back; beyond it the session
    /// ends (like a full session queue over TCP).
    pub max_queued_bytes: usize,
    /// Depth and attribute bounds for the stanzas inside a body (`max_stanza_bytes` is not
    /// used: the whole body is bounded by `max_body_bytes`).
    pub limits: Limits,
}

impl Default for BoshConfig {
    fn default() -> Self {
        BoshConfig {
            domains: Vec::new(),
            max_wait: 60,
            max_hold: 1,
            inactivity: 60,
            polling: 5,
            max_body_bytes: 256 * 1024,
            max_response_bytes: 64 * 1024,
            max_queued_bytes: 1024 * 1024,
            limits: Limits::default(),
        }
    }
}

/// An HTTP response for the transport to send (always with [`CONTENT_TYPE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Shared because the session keeps the last responses for replays (§14.3).
    pub body: Arc<str>,
}

/// The terminal binding conditions of XEP-0124 §17.2 (plus XEP-0206's use of
/// `remote-stream-error` for a `<stream:error/>`). Each one ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// The request body or one of its attributes is malformed.
    BadRequest,
    /// The target domain became unavailable.
    HostGone,
    /// The target domain (`to`) is not served here.
    HostUnknown,
    /// The creation request lacks a `to` attribute.
    ImproperAddressing,
    /// The connection manager failed internally.
    InternalServerError,
    /// Unknown `sid`, or a `rid` outside the window (§14.3).
    ItemNotFound,
    /// Another request replaced this one (the session is over).
    OtherRequest,
    /// The client broke a rule: too many simultaneous requests (§11), too large a body, …
    PolicyViolation,
    /// The connection to the XMPP server failed.
    RemoteConnectionFailed,
    /// The XMPP stream was closed with a stream error, carried in the body (XEP-0206 §7).
    RemoteStreamError,
    /// Reconnect at another URI (carried as `<uri/>` in the body).
    SeeOtherUri,
    /// The server is shutting down.
    SystemShutdown,
    /// None of the others.
    UndefinedCondition,
}

impl Condition {
    /// The value of the `condition` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::HostGone => "host-gone",
            Condition::HostUnknown => "host-unknown",
            Condition::ImproperAddressing => "improper-addressing",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::OtherRequest => "other-request",
            Condition::PolicyViolation => "policy-violation",
            Condition::RemoteConnectionFailed => "remote-connection-failed",
            Condition::RemoteStreamError => "remote-stream-error",
            Condition::SeeOtherUri => "see-other-uri",
            Condition::SystemShutdown => "system-shutdown",
            Condition::UndefinedCondition => "undefined-condition",
        }
    }

    /// The HTTP status: 200 for clients that understand terminal conditions; for legacy
    /// clients the deprecated codes of §17.1 where one exists.
    pub fn http_status(self, legacy: bool) -> u16 {
        match (legacy, self) {
            (true, Condition::BadRequest) => 400,
            (true, Condition::PolicyViolation) => 403,
            (true, Condition::ItemNotFound) => 404,
            _ => 200,
        }
    }

    /// `<body type='terminate' condition='…' xmlns='http://jabber.org/protocol/httpbind'/>`.
    pub fn body(self) -> String {
        body::terminate_body(Some(self), "", false)
    }

    /// The complete response for this condition, e.g. for a request naming an unknown `sid`.
    pub fn response(self, legacy: bool) -> HttpResponse {
        HttpResponse {
            status: self.http_status(legacy),
            body: self.body().into(),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

//! XEP-0198 Stream Management, version 3 (`urn:xmpp:sm:3`), the server's side, sans-IO.
//!
//! [`Nonza`] parses and builds the protocol elements in both directions (`<enable/>`,
//! `<enabled/>`, `<failed/>`, `<r/>`, `<a/>`, `<resume/>`, `<resumed/>`). It works on bare
//! [`Element`]s, so the same functions serve the top-level stream form and the inline forms of
//! XEP-0386 Bind2 (`<enable/>` inside `<bind/>`, `<enabled/>`/`<failed/>` inside `<bound/>`)
//! and XEP-0388 SASL2 (`<resume/>` inside `<authenticate/>`, `<resumed/>`/`<failed/>` inside
//! `<success/>`); see [`Nonza::parse_inline`].
//!
//! [`StreamManagement`] is one stream's state: the inbound handled counter `h`, the outbound
//! send counter and the queue of stanzas the client has not acknowledged yet. Counters are
//! `u32` and wrap at 2^32 (XEP-0198 §4). The queue is generic over what the caller keeps per
//! stanza (serialised bytes plus metadata), so nothing is re-serialised on retransmission.
//!
//! What the caller decides (because it needs the outside world): the resumption id (random,
//! from the caller's RNG; must pass [`is_valid_previd`]), the `location` and maximum
//! resumption time, the session lookup by `previd` — which must also check that the resuming
//! stream authenticated as the same account (the XEP's security considerations) and that no resource is
//! bound on it yet — and what to do with unacknowledged stanzas of a stream that ends without
//! resumption ([`StreamManagement::take_unacked`]: offline storage or bounce, as for a stanza to
//! an unavailable resource, XEP-0198 §5). Time is passed in where it matters
//! ([`should_request`]).

use std::collections::VecDeque;
use std::time::Duration;

use franca_xml::Element;

use crate::errors::{StanzaErrorCondition, StreamError};
use crate::ns::{NS_CLIENT, NS_SM, NS_STANZAS};

/// The longest resumption id accepted from a client. Ours are shorter, so anything longer did
/// not come from us and is refused before any lookup.
pub const MAX_PREVID_LEN: usize = 64;

/// The largest unacknowledged-queue limit [`StreamManagement::new`] accepts. Acks are compared
/// with serial-number arithmetic (RFC 1982), which needs the queue to stay far below 2^31.
pub const MAX_UNACKED_LIMIT: usize = 1 << 30;

/// A stream management element, in either direction (XEP-0198 §3-§5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nonza {
    /// §3: the client asks to enable stream management; `resume` asks for resumability and
    /// `max` is its preferred maximum resumption time in seconds.
    Enable { resume: bool, max: Option<u32> },
    /// §3: the server enabled it; `id` and `resume` when the stream can be resumed, `location`
    /// where to reconnect for resumption, `max` the resumption time it grants in seconds.
    Enabled {
        id: Option<String>,
        resume: bool,
        max: Option<u32>,
        location: Option<String>,
    },
    /// §6: enabling or resuming failed, with a stanza error condition; after a failed
    /// resumption `h` may tell the client which of its stanzas were handled (§5).
    Failed {
        condition: StanzaErrorCondition,
        h: Option<u32>,
    },
    /// §4: `<r/>`, a request for an acknowledgement.
    Request,
    /// §4: `<a h='…'/>`, the sender has handled `h` stanzas (modulo 2^32).
    Ack { h: u32 },
    /// §5: the client resumes the stream `previd`, having handled `h` of our stanzas.
    Resume { previd: String, h: u32 },
    /// §5: the server resumed `previd`, having handled `h` of the client's stanzas.
    Resumed { previd: String, h: u32 },
}

impl Nonza {
    /// Reads a stream management element. `None` when `el` is not in `urn:xmpp:sm:3`.
    ///
    /// Optional hints are read leniently (an unparsable `max` is absent, a `resume` other than
    /// `true`/`1` is false), because refusing them would only lose the stream for nothing.
    /// Required values are strict: `<a/>`, `<resume/>` and `<resumed/>` without a valid `h`
    /// are [`SmError::Malformed`]; a `previd` failing [`is_valid_previd`] is
    /// [`SmError::UnknownSession`], since no session of ours can have that id.
    pub fn parse(el: &Element) -> Option<Result<Nonza, SmError>> {
        if el.ns != NS_SM {
            return None;
        }
        Some(match el.name.as_str() {
            "enable" => Ok(Nonza::Enable {
                resume: el.attr("resume").is_some_and(is_true),
                max: el.attr("max").and_then(|m| m.parse().ok()),
            }),
            "enabled" => Ok(Nonza::Enabled {
                id: el.attr("id").map(str::to_owned),
                resume: el.attr("resume").is_some_and(is_true),
                max: el.attr("max").and_then(|m| m.parse().ok()),
                location: el.attr("location").map(str::to_owned),
            }),
            "failed" => Ok(Nonza::Failed {
                // §6: the condition is a stanza error condition child; one we do not know
                // (or none) is undefined-condition.
                condition: el
                    .elements()
                    .find(|c| c.ns == NS_STANZAS)
                    .and_then(|c| StanzaErrorCondition::from_name(&c.name))
                    .unwrap_or(StanzaErrorCondition::UndefinedCondition),
                h: el.attr("h").and_then(|h| h.parse().ok()),
            }),
            "r" => Ok(Nonza::Request),
            "a" => required_h(el).map(|h| Nonza::Ack { h }),
            "resume" | "resumed" => required_h(el).and_then(|h| {
                let previd = el
                    .attr("previd")
                    .filter(|p| is_valid_previd(p))
                    .ok_or(SmError::UnknownSession)?
                    .to_owned();
                Ok(if el.name == "resume" {
                    Nonza::Resume { previd, h }
                } else {
                    Nonza::Resumed { previd, h }
                })
            }),
            _ => Err(SmError::Malformed("unknown stream management element")),
        })
    }

    /// Reads the first stream management child of `parent`: the XEP-0386 `<bind/>` (which may
    /// carry `<enable/>`) or the XEP-0388 `<authenticate/>` (which may carry `<resume/>`).
    pub fn parse_inline(parent: &Element) -> Option<Result<Nonza, SmError>> {
        parent
            .elements()
            .find(|c| c.ns == NS_SM)
            .and_then(Nonza::parse)
    }

    /// Builds the element, to write top-level or to nest inline.
    pub fn to_element(&self) -> Element {
        match self {
            Nonza::Enable { resume, max } => {
                let mut e = Element::new("enable", NS_SM);
                if *resume {
                    e.set_attr("resume", "true");
                }
                if let Some(max) = max {
                    e.set_attr("max", max.to_string());
                }
                e
            }
            Nonza::Enabled {
                id,
                resume,
                max,
                location,
            } => {
                let mut e = Element::new("enabled", NS_SM);
                if let Some(id) = id {
                    e.set_attr("id", id.clone());
                }
                if let Some(location) = location {
                    e.set_attr("location", location.clone());
                }
                if let Some(max) = max {
                    e.set_attr("max", max.to_string());
                }
                if *resume {
                    e.set_attr("resume", "true");
                }
                e
            }
            Nonza::Failed { condition, h } => {
                let mut e = Element::new("failed", NS_SM);
                if let Some(h) = h {
                    e.set_attr("h", h.to_string());
                }
                e.with_child(Element::new(condition.name(), NS_STANZAS))
            }
            Nonza::Request => Element::new("r", NS_SM),
            Nonza::Ack { h } => Element::new("a", NS_SM).with_attr("h", h.to_string()),
            Nonza::Resume { previd, h } => Element::new("resume", NS_SM)
                .with_attr("previd", previd.clone())
                .with_attr("h", h.to_string()),
            Nonza::Resumed { previd, h } => Element::new("resumed", NS_SM)
                .with_attr("previd", previd.clone())
                .with_attr("h", h.to_string()),
        }
    }
}

/// The `<sm xmlns='urn:xmpp:sm:3'/>` stream feature (XEP-0198 §2), offered after
/// authentication.
pub fn feature() -> Element {
    Element::new("sm", NS_SM)
}

/// `xs:boolean` true (the schema allows `true` and `1`).
fn is_true(v: &str) -> bool {
    matches!(v, "true" | "1")
}

fn required_h(el: &Element) -> Result<u32, SmError> {
    el.attr("h")
        .and_then(|h| h.parse().ok())
        .ok_or(SmError::Malformed("'h' must be an unsigned 32-bit integer"))
}

/// Whether a client-supplied resumption id is worth looking up: 1 to [`MAX_PREVID_LEN`]
/// characters from the URL-safe and standard base64 alphabets plus `.`, `~` and `=` (which
/// covers hex, base64 and UUIDs). Anything else names no session of ours.
pub fn is_valid_previd(previd: &str) -> bool {
    // Every accepted byte is ASCII, so `len()` counts characters.
    !previd.is_empty()
        && previd.len() <= MAX_PREVID_LEN
        && previd
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
}

/// Whether `el` counts towards `h`: a stanza (message, presence, iq in `jabber:client`), not a
/// nonza (XEP-0198 §4).
pub fn is_stanza(el: &Element) -> bool {
    el.ns == NS_CLIENT && matches!(el.name.as_str(), "message" | "presence" | "iq")
}

/// The maximum resumption time to grant: the client's preference if it asked for less than
/// the server allows, else the server's limit (XEP-0198 §3, `max`).
pub fn negotiate_max(client: Option<u32>, server_max: u32) -> u32 {
    client.map_or(server_max, |c| c.min(server_max))
}

/// Whether the server should send `<r/>` now.
///
/// * `unacked`: stanzas sent and not yet acknowledged; nothing to ask about when zero.
/// * `since_request`: `Some(n)` when an `<r/>` is outstanding, `n` stanzas sent since then.
///   The client answers when it can; asking again before another `every` stanzas went out
///   would only add traffic to a slow (or asleep) link, so idleness does not repeat it.
/// * `idle`: time since the last stanza was sent, measured by the caller.
/// * `every`: ask after this many unacknowledged stanzas (0 is treated as 1).
/// * `idle_after`: ask when stanzas are unacknowledged and the stream has been quiet this
///   long, so the queue does not stay full until the next burst.
pub fn should_request(
    unacked: u32,
    since_request: Option<u32>,
    idle: Duration,
    every: u32,
    idle_after: Duration,
) -> bool {
    let every = every.max(1);
    if unacked == 0 {
        return false;
    }
    match since_request {
        Some(n) => n >= every,
        None => unacked >= every || idle >= idle_after,
    }
}

/// What the server needs to make a stream resumable (XEP-0198 §3, §5); all chosen by the
/// caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumption {
    /// The resumption id: unguessable, and accepted by [`is_valid_previd`].
    pub id: String,
    /// The resumption time granted, in seconds (see [`negotiate_max`]).
    pub max: Option<u32>,
    /// Where the client should reconnect to resume (`host` or `host:port`), if not here.
    pub location: Option<String>,
}

/// What resuming a stream produces (XEP-0198 §5).
#[derive(Debug)]
pub struct Resumed<T> {
    /// `<resumed previd='…' h='…'/>`, to write before anything else.
    pub element: Element,
    /// The stanzas the client had not received, oldest first. Write each and pass it to
    /// [`StreamManagement::sent`] like any other outbound stanza: they get the same sequence
    /// numbers as before, so the client's `h` stays in step.
    pub retransmit: Vec<T>,
}

/// A stream management failure, and how to answer it ([`SmError::to_element`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmError {
    /// `<enable/>` before resource binding or a second time (XEP-0198 §3, §6).
    #[error("stream management cannot be enabled now")]
    UnexpectedRequest,
    /// `<resume/>` naming no resumable session (XEP-0198 §5).
    #[error("no resumable session has this id")]
    UnknownSession,
    /// The peer acknowledged more stanzas than were sent (XEP-0198 §4).
    #[error("the client acknowledged up to {h}, but only {send_count} stanzas were sent")]
    HandledCountTooHigh { h: u32, send_count: u32 },
    /// The client leaves more than the configured limit of stanzas unacknowledged. The XEP
    /// lets the server close the stream; the stanzas stay queued for
    /// [`StreamManagement::take_unacked`], so nothing is lost.
    #[error("{unacked} stanzas are unacknowledged, more than the limit of {max}")]
    TooManyUnacked { unacked: usize, max: usize },
    /// A required value is missing or unreadable.
    #[error("malformed stream management element: {0}")]
    Malformed(&'static str),
}

impl SmError {
    /// True when the stream must be closed with [`SmError::to_element`] as its stream error;
    /// false when the element is a `<failed/>` and the stream goes on.
    pub fn closes_stream(&self) -> bool {
        !matches!(self, SmError::UnexpectedRequest | SmError::UnknownSession)
    }

    /// The answer: `<failed/>` (XEP-0198 §6) or a `<stream:error/>` (RFC 6120 §4.9).
    pub fn to_element(&self) -> Element {
        match self {
            SmError::UnexpectedRequest => Nonza::Failed {
                condition: StanzaErrorCondition::UnexpectedRequest,
                h: None,
            }
            .to_element(),
            SmError::UnknownSession => Nonza::Failed {
                condition: StanzaErrorCondition::ItemNotFound,
                h: None,
            }
            .to_element(),
            SmError::HandledCountTooHigh { h, send_count } => {
                // XEP-0198 §4: undefined-condition, with the application condition after
                // the text (RFC 6120 §4.9.4).
                let mut e = StreamError::UndefinedCondition.to_element(Some(&self.to_string()));
                e.push(
                    Element::new("handled-count-too-high", NS_SM)
                        .with_attr("h", h.to_string())
                        .with_attr("send-count", send_count.to_string()),
                );
                e
            }
            SmError::TooManyUnacked { .. } => {
                StreamError::ResourceConstraint.to_element(Some(&self.to_string()))
            }
            SmError::Malformed(reason) => StreamError::BadFormat.to_element(Some(reason)),
        }
    }
}

/// One stream's stream management state (XEP-0198), generic over what is kept per
/// unacknowledged outbound stanza.
///
/// The send counter is not stored: it is `acked + unacked`, so the queue and the counter
/// cannot drift apart.
#[derive(Debug)]
pub struct StreamManagement<T> {
    enabled: bool,
    /// Set when the stream is resumable.
    id: Option<String>,
    /// Stanzas handled from the client (our `h`), modulo 2^32.
    inbound: u32,
    /// The client's last valid `h`: the sequence number of the newest stanza it confirmed.
    acked: u32,
    /// Sent and unacknowledged, oldest first; the front one has sequence number `acked + 1`.
    queue: VecDeque<T>,
    max_unacked: usize,
    /// The send counter when the outstanding `<r/>` was written.
    requested_at: Option<u32>,
}

impl<T> StreamManagement<T> {
    /// A stream without stream management yet. `max_unacked` bounds the queue (and with it the
    /// memory a client that never acknowledges can hold); it is capped at
    /// [`MAX_UNACKED_LIMIT`].
    pub fn new(max_unacked: usize) -> StreamManagement<T> {
        StreamManagement {
            enabled: false,
            id: None,
            inbound: 0,
            acked: 0,
            queue: VecDeque::new(),
            max_unacked: max_unacked.min(MAX_UNACKED_LIMIT),
            requested_at: None,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The resumption id, when the stream is resumable.
    pub fn resumption_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Our `h`: stanzas handled from the client, modulo 2^32.
    pub fn h(&self) -> u32 {
        self.inbound
    }

    /// The send counter: stanzas sent since enabling, modulo 2^32.
    pub fn send_count(&self) -> u32 {
        self.acked.wrapping_add(self.queued())
    }

    /// How many sent stanzas the client has not acknowledged.
    pub fn unacked_len(&self) -> usize {
        self.queue.len()
    }

    /// The unacknowledged stanzas, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &T> {
        self.queue.iter()
    }

    /// The queue length as a counter delta. It fits: the queue holds at most
    /// `max_unacked + 1` ≤ 2^30 + 1 items (see [`StreamManagement::sent`]).
    fn queued(&self) -> u32 {
        u32::try_from(self.queue.len()).unwrap_or(u32::MAX)
    }

    /// Handles `<enable/>` (XEP-0198 §3). `bound` is whether a resource is bound on this
    /// stream: c2s stream management starts only after binding, and only once — otherwise
    /// [`SmError::UnexpectedRequest`], answered with `<failed><unexpected-request/></failed>`
    /// while the stream goes on. `resumption` is `Some` when the client asked for it and the
    /// server grants it. Returns `<enabled/>`; both counters start at zero.
    pub fn enable(
        &mut self,
        bound: bool,
        resumption: Option<Resumption>,
    ) -> Result<Element, SmError> {
        if !bound || self.enabled {
            return Err(SmError::UnexpectedRequest);
        }
        debug_assert!(
            resumption.as_ref().is_none_or(|r| is_valid_previd(&r.id)),
            "a resumption id the client could not send back"
        );
        self.enabled = true;
        self.inbound = 0;
        self.acked = 0;
        self.queue.clear();
        self.requested_at = None;
        let element = match resumption {
            Some(r) => {
                self.id = Some(r.id.clone());
                Nonza::Enabled {
                    id: Some(r.id),
                    resume: true,
                    max: r.max,
                    location: r.location,
                }
            }
            None => Nonza::Enabled {
                id: None,
                resume: false,
                max: None,
                location: None,
            },
        };
        Ok(element.to_element())
    }

    /// Counts an element received from the client once it has been handled (routed or
    /// answered): stanzas increment `h`, nonzas do not (XEP-0198 §4). Returns whether it
    /// counted. Nothing is counted before stream management is enabled.
    pub fn handled(&mut self, el: &Element) -> bool {
        if !self.enabled || !is_stanza(el) {
            return false;
        }
        self.inbound = self.inbound.wrapping_add(1);
        true
    }

    /// The `<a h='…'/>` answering the client's `<r/>`; `None` before stream management is
    /// enabled (the request is then ignored, as the XEP defines no answer for it).
    pub fn answer_request(&self) -> Option<Element> {
        self.enabled
            .then(|| Nonza::Ack { h: self.inbound }.to_element())
    }

    /// Records a stanza written to the client (call for stanzas only, never for nonzas).
    /// Ignored before stream management is enabled.
    ///
    /// Beyond the limit the stanza is still queued and [`SmError::TooManyUnacked`] tells the
    /// caller to close the stream (with [`SmError::to_element`]) and then
    /// [`take_unacked`](Self::take_unacked) everything, so nothing is lost.
    pub fn sent(&mut self, item: T) -> Result<(), SmError> {
        if !self.enabled {
            return Ok(());
        }
        self.queue.push_back(item);
        if self.queue.len() > self.max_unacked {
            return Err(SmError::TooManyUnacked {
                unacked: self.queue.len(),
                max: self.max_unacked,
            });
        }
        Ok(())
    }

    /// The `<r/>` to write, noting that an acknowledgement is now outstanding (see
    /// [`should_request`]).
    pub fn request(&mut self) -> Element {
        self.requested_at = Some(self.send_count());
        Nonza::Request.to_element()
    }

    /// [`should_request`] for this stream's state.
    pub fn should_request(&self, idle: Duration, every: u32, idle_after: Duration) -> bool {
        if !self.enabled {
            return false;
        }
        let since = self
            .requested_at
            .map(|at| self.send_count().wrapping_sub(at));
        should_request(self.queued(), since, idle, every, idle_after)
    }

    /// Handles `<a h='…'/>` (XEP-0198 §4): drops the stanzas it acknowledges and returns how
    /// many. `h` is compared modulo 2^32 with serial-number arithmetic: an `h` behind the last
    /// one acknowledges nothing new (the stanzas it claims to miss are gone; refusing would
    /// only lose the rest), one beyond the send counter is
    /// [`SmError::HandledCountTooHigh`], a stream error.
    pub fn ack(&mut self, h: u32) -> Result<usize, SmError> {
        if !self.enabled {
            return Ok(0);
        }
        let ahead = h.wrapping_sub(self.acked);
        if ahead > self.queued() {
            let behind = self.acked.wrapping_sub(h);
            if behind < 1 << 31 {
                self.requested_at = None;
                return Ok(0);
            }
            return Err(SmError::HandledCountTooHigh {
                h,
                send_count: self.send_count(),
            });
        }
        // `ahead` ≤ queue length, so it is a valid count.
        let n = ahead as usize;
        self.queue.drain(..n);
        self.acked = h;
        self.requested_at = None;
        Ok(n)
    }

    /// Resumes this (old) stream's state on a new stream, given the client's `h` from
    /// `<resume/>` (XEP-0198 §5): drops what it acknowledges and hands back the rest to
    /// retransmit in order, with the `<resumed/>` carrying our `h`. The state stays enabled,
    /// with the same id and counters; it moves to the new stream.
    ///
    /// [`SmError::UnknownSession`] when this stream is not resumable;
    /// [`SmError::HandledCountTooHigh`] when `h` is beyond what was sent — the caller then
    /// closes the new stream with that error and ends the old session, whose stanzas are
    /// still here for [`take_unacked`](Self::take_unacked).
    pub fn resume(&mut self, h: u32) -> Result<Resumed<T>, SmError> {
        let Some(previd) = self.id.clone().filter(|_| self.enabled) else {
            return Err(SmError::UnknownSession);
        };
        self.ack(h)?;
        // The drained stanzas come back through `sent`, which renumbers them from `acked + 1`:
        // exactly the numbers they had.
        let retransmit = self.queue.drain(..).collect();
        self.requested_at = None;
        let element = Nonza::Resumed {
            previd,
            h: self.inbound,
        }
        .to_element();
        Ok(Resumed {
            element,
            retransmit,
        })
    }

    /// Takes every unacknowledged stanza, oldest first, when the stream ends without
    /// resumption (or is closed for [`SmError::TooManyUnacked`]): the caller treats them as
    /// stanzas to an unavailable resource (offline storage or an error to the sender).
    pub fn take_unacked(&mut self) -> Vec<T> {
        self.acked = self.send_count();
        self.requested_at = None;
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    //! Transcript tests, named after the XEP-0198 sections whose rules they check.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use franca_xml::Limits;

    /// Parses one element as a client would send it inside a `jabber:client` stream.
    fn el(xml: &str) -> Element {
        franca_xml::read_document(xml.as_bytes(), Limits::default(), Some(NS_CLIENT))
            .unwrap()
            .unwrap_or_else(|| panic!("no element in {xml}"))
    }

    fn xml(e: &Element) -> String {
        e.to_xml_in(NS_CLIENT)
    }

    fn nonza(xml: &str) -> Nonza {
        Nonza::parse(&el(xml)).unwrap().unwrap()
    }

    fn enabled<T>() -> StreamManagement<T> {
        let mut sm = StreamManagement::new(100);
        sm.enable(true, None).unwrap();
        sm
    }

    fn resumable<T>() -> StreamManagement<T> {
        let mut sm = StreamManagement::new(100);
        sm.enable(
            true,
            Some(Resumption {
                id: "a1b2c3".into(),
                max: Some(300),
                location: None,
            }),
        )
        .unwrap();
        sm
    }

    fn message() -> Element {
        el("<message to='romeo@example.net'><body>hi</body></message>")
    }

    #[test]
    fn xep0198_3_enable_parsing_reads_resume_and_max() {
        assert_eq!(
            nonza("<enable xmlns='urn:xmpp:sm:3' resume='true' max='600'/>"),
            Nonza::Enable {
                resume: true,
                max: Some(600)
            }
        );
        assert_eq!(
            nonza("<enable xmlns='urn:xmpp:sm:3' resume='1'/>"),
            Nonza::Enable {
                resume: true,
                max: None
            }
        );
        // Lenient on optional hints: a bad max is absent, an odd resume is false.
        assert_eq!(
            nonza("<enable xmlns='urn:xmpp:sm:3' resume='yes' max='soon'/>"),
            Nonza::Enable {
                resume: false,
                max: None
            }
        );
        assert!(Nonza::parse(&el("<enable xmlns='urn:xmpp:sm:2'/>")).is_none());
    }

    #[test]
    fn xep0198_3_enable_after_bind_answers_enabled_with_resumption() {
        let mut sm: StreamManagement<()> = StreamManagement::new(10);
        let out = sm
            .enable(
                true,
                Some(Resumption {
                    id: "some-long-sm-id".into(),
                    max: Some(negotiate_max(Some(600), 300)),
                    location: Some("[2001:db8::1]:5222".into()),
                }),
            )
            .unwrap();
        assert_eq!(
            xml(&out),
            "<enabled xmlns='urn:xmpp:sm:3' id='some-long-sm-id' \
             location='[2001:db8::1]:5222' max='300' resume='true'/>"
        );
        assert!(sm.is_enabled());
        assert_eq!(sm.resumption_id(), Some("some-long-sm-id"));
    }

    #[test]
    fn xep0198_3_enable_without_resumption_has_no_id() {
        let mut sm: StreamManagement<()> = StreamManagement::new(10);
        let out = sm.enable(true, None).unwrap();
        assert_eq!(xml(&out), "<enabled xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(sm.resumption_id(), None);
        // …so it cannot be resumed.
        assert_eq!(sm.resume(0).unwrap_err(), SmError::UnknownSession);
    }

    #[test]
    fn xep0198_3_enable_before_bind_is_unexpected_request() {
        let mut sm: StreamManagement<()> = StreamManagement::new(10);
        let err = sm.enable(false, None).unwrap_err();
        assert_eq!(err, SmError::UnexpectedRequest);
        assert!(!err.closes_stream());
        assert_eq!(
            xml(&err.to_element()),
            "<failed xmlns='urn:xmpp:sm:3'>\
             <unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        assert!(!sm.is_enabled());
    }

    #[test]
    fn xep0198_3_enable_twice_is_unexpected_request_and_keeps_state() {
        let mut sm = enabled();
        sm.handled(&message());
        sm.sent(1).unwrap();
        assert_eq!(sm.enable(true, None), Err(SmError::UnexpectedRequest));
        // The first enable's counters and queue are untouched.
        assert_eq!(sm.h(), 1);
        assert_eq!(sm.unacked().copied().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn xep0198_4_h_counts_stanzas_not_nonzas() {
        let mut sm: StreamManagement<()> = enabled();
        assert!(sm.handled(&message()));
        assert!(sm.handled(&el("<presence/>")));
        assert!(sm.handled(&el(
            "<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"
        )));
        assert!(!sm.handled(&el("<r xmlns='urn:xmpp:sm:3'/>")));
        assert!(!sm.handled(&el("<a xmlns='urn:xmpp:sm:3' h='0'/>")));
        assert!(!sm.handled(&el("<inactive xmlns='urn:xmpp:csi:0'/>")));
        assert_eq!(sm.h(), 3);
        assert_eq!(
            sm.answer_request().map(|a| xml(&a)).as_deref(),
            Some("<a xmlns='urn:xmpp:sm:3' h='3'/>")
        );
    }

    #[test]
    fn xep0198_3_nothing_counts_before_enable() {
        let mut sm: StreamManagement<u8> = StreamManagement::new(10);
        assert!(!sm.handled(&message()));
        sm.sent(1).unwrap();
        assert_eq!(sm.unacked_len(), 0);
        assert_eq!(sm.answer_request(), None);
        assert_eq!(sm.ack(5), Ok(0));
    }

    #[test]
    fn xep0198_4_inbound_h_wraps_at_2_pow_32() {
        let mut sm: StreamManagement<()> = enabled();
        sm.inbound = u32::MAX - 1;
        sm.handled(&message());
        assert_eq!(sm.h(), u32::MAX);
        sm.handled(&message());
        assert_eq!(sm.h(), 0);
        assert_eq!(
            sm.answer_request().map(|a| xml(&a)).as_deref(),
            Some("<a xmlns='urn:xmpp:sm:3' h='0'/>")
        );
    }

    #[test]
    fn xep0198_4_ack_drops_acknowledged_stanzas() {
        let mut sm = enabled();
        for i in 1..=5 {
            sm.sent(i).unwrap();
        }
        assert_eq!(sm.send_count(), 5);
        let a = nonza("<a xmlns='urn:xmpp:sm:3' h='3'/>");
        assert_eq!(a, Nonza::Ack { h: 3 });
        assert_eq!(sm.ack(3), Ok(3));
        assert_eq!(sm.unacked().copied().collect::<Vec<_>>(), [4, 5]);
        // Repeating the same h acknowledges nothing new.
        assert_eq!(sm.ack(3), Ok(0));
        assert_eq!(sm.ack(5), Ok(2));
        assert_eq!(sm.unacked_len(), 0);
        assert_eq!(sm.send_count(), 5);
    }

    #[test]
    fn xep0198_4_outbound_counter_wraps_at_2_pow_32() {
        let mut sm = enabled();
        sm.acked = u32::MAX - 1;
        for i in 0..4 {
            sm.sent(i).unwrap();
        }
        // Sequence numbers 2^32-1, 0 (= 2^32), 1, 2.
        assert_eq!(sm.send_count(), 2);
        assert_eq!(sm.ack(0), Ok(2));
        assert_eq!(sm.unacked().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(sm.ack(2), Ok(2));
        assert_eq!(
            sm.ack(3),
            Err(SmError::HandledCountTooHigh {
                h: 3,
                send_count: 2
            })
        );
    }

    #[test]
    fn xep0198_4_ack_of_more_than_sent_is_handled_count_too_high() {
        let mut sm = enabled();
        for i in 0..8 {
            sm.sent(i).unwrap();
        }
        let err = sm.ack(10).unwrap_err();
        assert_eq!(
            err,
            SmError::HandledCountTooHigh {
                h: 10,
                send_count: 8
            }
        );
        assert!(err.closes_stream());
        let out = xml(&err.to_element());
        assert!(
            out.starts_with(
                "<error xmlns='http://etherx.jabber.org/streams'>\
                 <undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
            ),
            "{out}"
        );
        assert!(
            out.contains("<handled-count-too-high xmlns='urn:xmpp:sm:3' h='10' send-count='8'/>"),
            "{out}"
        );
        // Nothing was dropped: the stanzas remain for offline storage.
        assert_eq!(sm.take_unacked().len(), 8);
    }

    #[test]
    fn xep0198_4_ack_behind_the_last_one_acknowledges_nothing() {
        let mut sm = enabled();
        for i in 0..4 {
            sm.sent(i).unwrap();
        }
        sm.ack(3).unwrap();
        assert_eq!(sm.ack(1), Ok(0));
        assert_eq!(sm.unacked().copied().collect::<Vec<_>>(), [3]);
        // Behind across the wrap too.
        sm.acked = 2;
        assert_eq!(sm.ack(u32::MAX), Ok(0));
    }

    #[test]
    fn xep0198_4_malformed_ack_closes_the_stream() {
        for bad in [
            "<a xmlns='urn:xmpp:sm:3'/>",
            "<a xmlns='urn:xmpp:sm:3' h='-1'/>",
            "<a xmlns='urn:xmpp:sm:3' h='4294967296'/>",
            "<a xmlns='urn:xmpp:sm:3' h='x'/>",
        ] {
            let err = Nonza::parse(&el(bad)).unwrap().unwrap_err();
            assert!(matches!(err, SmError::Malformed(_)), "{bad}");
            assert!(err.closes_stream());
            assert!(xml(&err.to_element()).contains("<bad-format"));
        }
        assert_eq!(
            nonza("<a xmlns='urn:xmpp:sm:3' h='4294967295'/>"),
            Nonza::Ack { h: u32::MAX }
        );
    }

    #[test]
    fn xep0198_4_queue_cap_keeps_the_stanza_and_asks_to_close() {
        let mut sm: StreamManagement<u32> = StreamManagement::new(3);
        sm.enable(true, None).unwrap();
        for i in 0..3 {
            sm.sent(i).unwrap();
        }
        let err = sm.sent(3).unwrap_err();
        assert_eq!(err, SmError::TooManyUnacked { unacked: 4, max: 3 });
        assert!(err.closes_stream());
        assert!(xml(&err.to_element()).contains("<resource-constraint"));
        // §5: what the client never acknowledged goes to offline storage or bounces.
        assert_eq!(sm.take_unacked(), [0, 1, 2, 3]);
        assert_eq!(sm.unacked_len(), 0);
        assert_eq!(sm.send_count(), 4);
    }

    #[test]
    fn xep0198_4_r_and_a_roundtrip() {
        let mut sm: StreamManagement<()> = enabled();
        assert_eq!(nonza("<r xmlns='urn:xmpp:sm:3'/>"), Nonza::Request);
        assert_eq!(xml(&sm.request()), "<r xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(
            xml(&Nonza::Ack { h: 7 }.to_element()),
            "<a xmlns='urn:xmpp:sm:3' h='7'/>"
        );
    }

    #[test]
    fn request_policy_after_k_stanzas_or_when_idle() {
        let s = Duration::from_secs;
        // Nothing unacknowledged: never.
        assert!(!should_request(0, None, s(999), 5, s(10)));
        // K reached, or idle long enough.
        assert!(!should_request(4, None, s(1), 5, s(10)));
        assert!(should_request(5, None, s(1), 5, s(10)));
        assert!(should_request(1, None, s(10), 5, s(10)));
        // An <r/> outstanding: only after another K, never just for idleness.
        assert!(!should_request(9, Some(4), s(60), 5, s(10)));
        assert!(should_request(10, Some(5), s(0), 5, s(10)));
        // every = 0 behaves as 1.
        assert!(should_request(1, None, s(0), 0, s(10)));

        let mut sm = enabled();
        for i in 0..5 {
            sm.sent(i).unwrap();
        }
        assert!(sm.should_request(s(0), 5, s(10)));
        sm.request();
        assert!(!sm.should_request(s(30), 5, s(10)));
        for i in 0..5 {
            sm.sent(i).unwrap();
        }
        assert!(sm.should_request(s(0), 5, s(10)));
        sm.request();
        sm.ack(10).unwrap();
        assert!(!sm.should_request(s(30), 5, s(10)));
        sm.sent(0).unwrap();
        assert!(sm.should_request(s(10), 5, s(10)));
    }

    #[test]
    fn xep0198_5_resume_drops_acked_and_retransmits_the_rest_in_order() {
        let mut old = resumable();
        for _ in 0..2 {
            old.handled(&message());
        }
        for i in 1..=5 {
            old.sent(i).unwrap();
        }
        old.ack(1).unwrap();
        // The connection breaks; the client reconnects and says it got up to 3.
        let resume = nonza("<resume xmlns='urn:xmpp:sm:3' previd='a1b2c3' h='3'/>");
        let Nonza::Resume { previd, h } = resume else {
            panic!("{resume:?}")
        };
        assert_eq!(Some(previd.as_str()), old.resumption_id());
        let resumed = old.resume(h).unwrap();
        assert_eq!(
            xml(&resumed.element),
            "<resumed xmlns='urn:xmpp:sm:3' previd='a1b2c3' h='2'/>"
        );
        assert_eq!(resumed.retransmit, [4, 5]);
        // Retransmitting renumbers them as before: 4 and 5.
        for item in resumed.retransmit {
            old.sent(item).unwrap();
        }
        assert_eq!(old.send_count(), 5);
        assert_eq!(old.ack(5), Ok(2));
        // The state lives on: same id, inbound h continues.
        assert_eq!(old.resumption_id(), Some("a1b2c3"));
        old.handled(&message());
        assert_eq!(old.h(), 3);
    }

    #[test]
    fn xep0198_5_resume_with_stale_h_retransmits_everything_still_queued() {
        let mut old = resumable();
        for i in 1..=4 {
            old.sent(i).unwrap();
        }
        old.ack(2).unwrap();
        // The client reports an h older than one it already acknowledged: 1 and 2 are gone,
        // so it gets all that is left, nothing is dropped.
        let resumed = old.resume(1).unwrap();
        assert_eq!(resumed.retransmit, [3, 4]);
        // And an h that acknowledged nothing at all on this stream.
        let mut old = resumable();
        old.sent(1).unwrap();
        assert_eq!(old.resume(0).unwrap().retransmit, [1]);
    }

    #[test]
    fn xep0198_5_resume_with_h_too_high_is_a_stream_error_and_keeps_the_queue() {
        let mut old = resumable();
        for i in 1..=2 {
            old.sent(i).unwrap();
        }
        let err = old.resume(5).unwrap_err();
        assert_eq!(
            err,
            SmError::HandledCountTooHigh {
                h: 5,
                send_count: 2
            }
        );
        assert_eq!(old.take_unacked(), [1, 2]);
    }

    #[test]
    fn xep0198_5_hostile_previd_is_refused_before_lookup() {
        assert!(is_valid_previd("a1b2c3"));
        assert!(is_valid_previd("3f9c1e3a-6d0b-4c59-9d25-6ab1e8e0c1f2"));
        assert!(is_valid_previd("q83vEjRWeJA+/w=="));
        assert!(is_valid_previd(&"x".repeat(MAX_PREVID_LEN)));
        assert!(!is_valid_previd(""));
        assert!(!is_valid_previd(&"x".repeat(MAX_PREVID_LEN + 1)));
        assert!(!is_valid_previd("id with spaces"));
        assert!(!is_valid_previd("ünïcode"));
        assert!(!is_valid_previd("a<b"));
        let long = format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{}' h='1'/>",
            "x".repeat(65)
        );
        let err = Nonza::parse(&el(&long)).unwrap().unwrap_err();
        assert_eq!(err, SmError::UnknownSession);
        assert!(!err.closes_stream());
        assert_eq!(
            xml(&err.to_element()),
            "<failed xmlns='urn:xmpp:sm:3'>\
             <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        // No previd at all is the same; no h is malformed.
        assert_eq!(
            Nonza::parse(&el("<resume xmlns='urn:xmpp:sm:3' h='1'/>")).unwrap(),
            Err(SmError::UnknownSession)
        );
        assert!(matches!(
            Nonza::parse(&el("<resume xmlns='urn:xmpp:sm:3' previd='abc'/>")).unwrap(),
            Err(SmError::Malformed(_))
        ));
    }

    #[test]
    fn xep0198_5_failed_resumption_may_carry_h() {
        let failed = Nonza::Failed {
            condition: StanzaErrorCondition::ItemNotFound,
            h: Some(42),
        };
        let out = failed.to_element();
        assert_eq!(
            xml(&out),
            "<failed xmlns='urn:xmpp:sm:3' h='42'>\
             <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        assert_eq!(Nonza::parse(&out), Some(Ok(failed)));
        let not_supported = Nonza::Failed {
            condition: StanzaErrorCondition::FeatureNotImplemented,
            h: None,
        }
        .to_element();
        assert!(xml(&not_supported).contains("<feature-not-implemented "));
        // An unknown condition reads as undefined-condition.
        assert_eq!(
            nonza(
                "<failed xmlns='urn:xmpp:sm:3'><nope xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
            ),
            Nonza::Failed {
                condition: StanzaErrorCondition::UndefinedCondition,
                h: None
            }
        );
    }

    #[test]
    fn xep0198_5_take_unacked_when_the_stream_ends_without_resumption() {
        let mut sm = resumable();
        for i in 1..=3 {
            sm.sent(i).unwrap();
        }
        sm.ack(1).unwrap();
        assert_eq!(sm.take_unacked(), [2, 3]);
        assert!(sm.take_unacked().is_empty());
    }

    #[test]
    fn xep0386_bind2_inline_enable_and_xep0388_sasl2_inline_resume() {
        let bind = el("<bind xmlns='urn:xmpp:bind:0'><tag>phone</tag>\
             <enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>");
        assert_eq!(
            Nonza::parse_inline(&bind),
            Some(Ok(Nonza::Enable {
                resume: true,
                max: None
            }))
        );
        let auth = el(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'>\
             <initial-response>biws</initial-response>\
             <resume xmlns='urn:xmpp:sm:3' previd='a1b2c3' h='7'/></authenticate>",
        );
        assert_eq!(
            Nonza::parse_inline(&auth),
            Some(Ok(Nonza::Resume {
                previd: "a1b2c3".into(),
                h: 7
            }))
        );
        assert_eq!(
            Nonza::parse_inline(&el("<bind xmlns='urn:xmpp:bind:0'/>")),
            None
        );
        // The answers nest in <bound/> / <success/> as built.
        let mut sm: StreamManagement<()> = StreamManagement::new(10);
        let bound =
            Element::new("bound", "urn:xmpp:bind:0").with_child(sm.enable(true, None).unwrap());
        assert_eq!(
            xml(&bound),
            "<bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3'/></bound>"
        );
    }

    #[test]
    fn nonzas_roundtrip_through_their_elements() {
        let all = [
            Nonza::Enable {
                resume: true,
                max: Some(60),
            },
            Nonza::Enable {
                resume: false,
                max: None,
            },
            Nonza::Enabled {
                id: Some("abc".into()),
                resume: true,
                max: Some(300),
                location: Some("example.org:5222".into()),
            },
            Nonza::Failed {
                condition: StanzaErrorCondition::UnexpectedRequest,
                h: None,
            },
            Nonza::Request,
            Nonza::Ack { h: 0 },
            Nonza::Resume {
                previd: "abc".into(),
                h: u32::MAX,
            },
            Nonza::Resumed {
                previd: "abc".into(),
                h: 12,
            },
        ];
        for n in all {
            assert_eq!(Nonza::parse(&n.to_element()), Some(Ok(n.clone())), "{n:?}");
            assert_eq!(Nonza::parse(&el(&xml(&n.to_element()))), Some(Ok(n)));
        }
        assert_eq!(xml(&feature()), "<sm xmlns='urn:xmpp:sm:3'/>");
        assert!(matches!(
            Nonza::parse(&el("<sm xmlns='urn:xmpp:sm:3'/>")),
            Some(Err(SmError::Malformed(_)))
        ));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Send,
            /// Acknowledge this many of the unacknowledged (scaled to the queue length).
            Ack(u8),
            /// An h beyond the send counter.
            AckTooHigh(u8),
            /// An h behind the last acknowledged one.
            AckBehind(u8),
            Resume(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => Just(Op::Send),
                2 => any::<u8>().prop_map(Op::Ack),
                1 => any::<u8>().prop_map(Op::AckTooHigh),
                1 => any::<u8>().prop_map(Op::AckBehind),
                1 => any::<u8>().prop_map(Op::Resume),
            ]
        }

        proptest! {
            /// For any sequence of sends and acks, starting anywhere on the 2^32 circle, the
            /// queue holds exactly the sent, unacknowledged stanzas, in order.
            #[test]
            fn queue_never_holds_acked_and_never_loses_unacked(
                start in prop_oneof![Just(u32::MAX - 3), Just(0u32), any::<u32>()],
                ops in proptest::collection::vec(op(), 0..200),
            ) {
                let mut sm: StreamManagement<u64> = StreamManagement::new(1000);
                sm.enable(true, Some(Resumption { id: "r".into(), max: None, location: None }))
                    .unwrap();
                sm.acked = start;
                // The model: sequence numbers (not wrapped) of unacknowledged stanzas.
                let mut next: u64 = u64::from(start) + 1;
                let mut acked: u64 = u64::from(start);
                let mut model: VecDeque<u64> = VecDeque::new();
                for op in ops {
                    match op {
                        Op::Send => {
                            sm.sent(next).unwrap();
                            model.push_back(next);
                            next += 1;
                        }
                        Op::Ack(k) => {
                            let n = if model.is_empty() { 0 } else { usize::from(k) % (model.len() + 1) };
                            acked += n as u64;
                            prop_assert_eq!(sm.ack(acked as u32), Ok(n));
                            model.drain(..n);
                        }
                        Op::AckTooHigh(k) => {
                            let h = (next + u64::from(k)) as u32;
                            let res = sm.ack(h);
                            let too_high = matches!(
                                res,
                                Err(SmError::HandledCountTooHigh { .. })
                            );
                            prop_assert!(too_high);
                        }
                        Op::AckBehind(k) => {
                            let h = acked.wrapping_sub(1 + u64::from(k)) as u32;
                            prop_assert_eq!(sm.ack(h), Ok(0));
                        }
                        Op::Resume(k) => {
                            let n = usize::from(k) % (model.len() + 1);
                            acked += n as u64;
                            let resumed = sm.resume(acked as u32).unwrap();
                            model.drain(..n);
                            prop_assert_eq!(&resumed.retransmit, &Vec::from(model.clone()));
                            for item in resumed.retransmit {
                                sm.sent(item).unwrap();
                            }
                        }
                    }
                    prop_assert_eq!(sm.unacked().copied().collect::<VecDeque<_>>(), model.clone());
                    prop_assert_eq!(sm.send_count(), (next - 1) as u32);
                }
                prop_assert_eq!(sm.take_unacked(), Vec::from(model));
            }
        }
    }
}

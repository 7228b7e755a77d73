//! One BOSH session as a sans-IO state machine: the rid window and in-order processing
//! (XEP-0124 §14), held requests and overactivity (§11), replays after broken connections
//! (§14.3), `wait` and inactivity timeouts (§7.2, §10), acknowledgements (§9), termination
//! (§13, §17.2) and XMPP stream restarts (XEP-0206 §5).
//!
//! A BOSH "response" is whatever is sent on the HTTP connection of a request, so the
//! session tracks HTTP requests by [`RequestId`] and answers them when it has something to
//! say, when a newer request pushes them out, or when their `wait` expires.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use franca_xml::Element;

use super::body::{self, Body};
use super::{BOSH_VERSION, BoshConfig, Condition, HttpResponse};

/// Identifies one HTTP request of a session, so the transport can complete the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What the transport must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Stanzas from the client, for the XMPP stream, in rid order.
    Payload(Vec<Element>),
    /// The client restarts the XMPP stream (XEP-0206 §5, after SASL): reset the stream and
    /// push the new stream features.
    Restart,
    /// Complete this pending HTTP request with this response.
    Respond {
        request: RequestId,
        response: HttpResponse,
    },
    /// The session is over, for the XMPP side a disconnect. Reported once per session.
    /// Responses may still follow (e.g. the terminate body for the client's next request
    /// after [`BoshSession::close`]); drop the session once [`BoshSession::is_finished`].
    Closed(EndReason),
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent `type='terminate'` (§13).
    ClientTerminate,
    /// No request for `inactivity` seconds (§10).
    Inactivity,
    /// A terminal binding condition, sent by the server or caused by the client.
    Error(Condition),
}

/// A request that has been processed and waits for data.
#[derive(Debug)]
struct Held {
    rid: u64,
    request: RequestId,
    /// Arrival of the HTTP request: the client's own timeout runs from there.
    since: Instant,
}

/// A request whose rid is ahead of a gap, not processed yet (§14.2).
#[derive(Debug)]
struct Buffered {
    request: RequestId,
    since: Instant,
    body: Body,
}

#[derive(Debug)]
struct Queued {
    xml: String,
    stream_prefix: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The server ended the session while no request was held; the next request gets
    /// the terminate body.
    Closing(Condition),
    Finished,
}

/// One BOSH session.
#[derive(Debug)]
pub struct BoshSession {
    config: Arc<BoshConfig>,
    sid: String,
    to: String,
    lang: Option<String>,
    xmpp_version: Option<String>,
    ver: (u32, u32),
    /// No `ver` in the creation request (§17.1): errors use HTTP status codes.
    legacy: bool,
    wait: u64,
    hold: u32,
    requests: u32,
    /// The client asked for acknowledgements (§9.1).
    acks: bool,
    creation_rid: u64,
    creation_answered: bool,
    /// Highest rid processed; every rid up to it has been processed, in order.
    last_rid: u64,
    held: VecDeque<Held>,
    buffered: BTreeMap<u64, Buffered>,
    /// The last `requests` responses by rid, for replays (§14.3).
    replies: VecDeque<(u64, Arc<str>)>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// When the last response was sent; inactivity counts from there once nothing is open.
    idle_since: Instant,
    state: State,
    next_request: u64,
}

impl BoshSession {
    /// Creates a session from a creation request (one without `sid`, §7.1). `sid` is chosen
    /// by the caller (unguessable, unique among live sessions). The creation request is held
    /// like any other and answered with the session attributes (§7.2), normally together
    /// with the stream features the caller pushes next.
    ///
    /// On refusal, the response to send; no session exists.
    pub fn new(
        config: Arc<BoshConfig>,
        sid: impl Into<String>,
        body: Body,
        now: Instant,
    ) -> Result<(BoshSession, RequestId, Vec<Event>), HttpResponse> {
        let legacy = body.ver.is_none();
        if body.sid.is_some() || body.terminate || body.restart {
            return Err(Condition::BadRequest.response(legacy));
        }
        let to = match body.to.as_deref().map(str::to_ascii_lowercase) {
            None => return Err(Condition::ImproperAddressing.response(legacy)),
            Some(d) if d.is_empty() => return Err(Condition::ImproperAddressing.response(legacy)),
            Some(d) if !config.domains.contains(&d) => {
                return Err(Condition::HostUnknown.response(legacy));
            }
            Some(d) => d,
        };
        // §7.2: the server may shorten `wait` and lower `hold` but never raise `hold`
        // above what the client asked for. Omitted values get the usual defaults.
        let wait = body.wait.unwrap_or(config.max_wait).min(config.max_wait);
        let hold = body.hold.unwrap_or(1).min(config.max_hold);
        // §7.2 recommends one more than `hold`: room for a request that carries data
        // while `hold` others wait.
        let requests = hold.saturating_add(1);
        let mut session = BoshSession {
            sid: sid.into(),
            to,
            lang: body.lang,
            xmpp_version: body.xmpp_version,
            ver: body.ver.map_or(BOSH_VERSION, |v| v.min(BOSH_VERSION)),
            legacy,
            wait,
            hold,
            requests,
            acks: body.ack == Some(1),
            creation_rid: body.rid,
            creation_answered: false,
            last_rid: body.rid,
            held: VecDeque::new(),
            buffered: BTreeMap::new(),
            replies: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            idle_since: now,
            state: State::Open,
            next_request: 1,
            config,
        };
        let id = RequestId(0);
        let mut out = Vec::new();
        if !body.payload.is_empty() {
            out.push(Event::Payload(body.payload));
        }
        session.held.push_back(Held {
            rid: body.rid,
            request: id,
            since: now,
        });
        session.settle(now, &mut out);
        Ok((session, id, out))
    }

    /// Feeds a request of this session. The caller finds the session by the body's `sid`
    /// and answers a `sid` it does not know with [`Condition::ItemNotFound`] (legacy if the
    /// body has no `ver`).
    pub fn on_request(&mut self, body: Body, now: Instant) -> (RequestId, Vec<Event>) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let mut out = Vec::new();
        self.request(id, body, now, &mut out);
        (id, out)
    }

    fn request(&mut self, id: RequestId, body: Body, now: Instant, out: &mut Vec<Event>) {
        match self.state {
            State::Open => {}
            State::Closing(condition) => {
                let response = self.terminate_response(Some(condition), true);
                self.state = State::Finished;
                return respond(out, id, response);
            }
            State::Finished => {
                return respond(out, id, Condition::ItemNotFound.response(self.legacy));
            }
        }
        if let (true, Some(ack)) = (self.acks, body.ack) {
            // §9.1: responses up to `ack` arrived; they will not be asked for again.
            self.replies.retain(|(rid, _)| *rid > ack);
        }
        let rid = body.rid;
        if rid <= self.last_rid {
            return self.replay(id, rid, now, out);
        }
        if let Some(b) = self.buffered.get_mut(&rid) {
            // The client gave up on the connection of a request we could not process yet
            // and sent it again: the new connection takes over.
            let old = std::mem::replace(&mut b.request, id);
            b.since = now;
            return respond(out, old, self.empty_response());
        }
        if rid - self.last_rid > u64::from(self.requests) {
            // §14.3: beyond the window the client can legitimately have open.
            return self.fail(Condition::ItemNotFound, Some(id), now, out);
        }
        // §11: more simultaneous requests than `requests`, except one extra to terminate.
        let open = self.held.len() + self.buffered.len() + 1;
        if open > self.requests as usize + usize::from(body.terminate) {
            return self.fail(Condition::PolicyViolation, Some(id), now, out);
        }
        self.buffered.insert(
            rid,
            Buffered {
                request: id,
                since: now,
                body,
            },
        );
        // §14.2: payloads are forwarded in rid order; a request after a gap waits for it.
        while let Some(next) = self.buffered.remove(&(self.last_rid + 1)) {
            self.process(next, now, out);
            if self.state != State::Open {
                return;
            }
        }
        self.settle(now, out);
    }

    /// A rid at or below the highest processed one: a client that lost a response (§14.3).
    fn replay(&mut self, id: RequestId, rid: u64, now: Instant, out: &mut Vec<Event>) {
        if let Some((_, body)) = self.replies.iter().find(|(r, _)| *r == rid) {
            let response = HttpResponse {
                status: 200,
                body: body.clone(),
            };
            self.idle_since = now;
            return respond(out, id, response);
        }
        if let Some(h) = self.held.iter_mut().find(|h| h.rid == rid) {
            // Not answered yet: the new connection takes the old one's place.
            let old = std::mem::replace(&mut h.request, id);
            h.since = now;
            return respond(out, old, self.empty_response());
        }
        self.fail(Condition::ItemNotFound, Some(id), now, out);
    }

    fn process(&mut self, b: Buffered, now: Instant, out: &mut Vec<Event>) {
        let Buffered {
            request,
            since,
            body,
        } = b;
        self.last_rid = body.rid;
        // The restart stands for a new stream header, so payloads come after it.
        if body.restart {
            out.push(Event::Restart);
        }
        if !body.payload.is_empty() {
            out.push(Event::Payload(body.payload));
        }
        self.held.push_back(Held {
            rid: body.rid,
            request,
            since,
        });
        if body.terminate {
            // §13: every open request is answered with a plain terminate body.
            self.end(None, now, out);
            out.push(Event::Closed(EndReason::ClientTerminate));
        }
    }

    /// Queues a stanza (or `<stream:features/>`, `<stream:error/>`) for the client.
    /// Nothing is sent before [`BoshSession::flush`], so a burst goes out in one response.
    pub fn push_element(&mut self, el: &Element) {
        if self.state == State::Open {
            let mut xml = String::new();
            let stream_prefix = body::write_payload(el, &mut xml);
            self.enqueue(Queued { xml, stream_prefix });
        }
    }

    /// Queues an already serialised element. It is placed inside a body whose default
    /// namespace is httpbind, so it must declare its own (`xmlns='jabber:client'`); a
    /// leading `<stream:` prefix is declared on the body.
    pub fn push_xml(&mut self, xml: String) {
        if self.state == State::Open {
            let stream_prefix = xml.starts_with("<stream:");
            self.enqueue(Queued { xml, stream_prefix });
        }
    }

    fn enqueue(&mut self, q: Queued) {
        self.queued_bytes = self.queued_bytes.saturating_add(q.xml.len());
        self.queue.push_back(q);
    }

    /// Sends what is queued on the held requests, oldest first, in batches of at most
    /// `max_response_bytes`.
    pub fn flush(&mut self, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        if self.state == State::Open {
            self.settle(now, &mut out);
        }
        out
    }

    /// Ends the session from the server side (stream closed, stream error, shutdown …).
    /// Queued stanzas are delivered in the terminate body; push the `<stream:error/>`
    /// before calling this with [`Condition::RemoteStreamError`] (XEP-0206 §7).
    pub fn close(&mut self, condition: Condition, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        if self.state != State::Open {
            return out;
        }
        out.push(Event::Closed(EndReason::Error(condition)));
        if self.held.is_empty() && self.buffered.is_empty() {
            self.state = State::Closing(condition);
            self.idle_since = now;
        } else {
            self.end(Some(condition), now, &mut out);
        }
        out
    }

    /// Answers requests whose `wait` ran out and ends an inactive session. Call it at
    /// [`BoshSession::next_deadline`] (calling it earlier or more often is harmless).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        match self.state {
            State::Finished => {}
            State::Closing(_) => {
                // The client never came back for its terminate body.
                if self.inactivity_deadline().is_some_and(|d| now >= d) {
                    self.state = State::Finished;
                    self.queue.clear();
                    self.queued_bytes = 0;
                }
            }
            State::Open => {
                if self.gap_deadline().is_some_and(|d| now >= d) {
                    self.fail(Condition::ItemNotFound, None, now, &mut out);
                    return out;
                }
                let wait = self.wait;
                let (expired, kept): (VecDeque<Held>, VecDeque<Held>) =
                    std::mem::take(&mut self.held)
                        .into_iter()
                        .partition(|h| after(h.since, wait).is_some_and(|d| now >= d));
                self.held = kept;
                for h in expired {
                    self.answer(h, now, &mut out);
                }
                if self.held.is_empty()
                    && self.buffered.is_empty()
                    && self.inactivity_deadline().is_some_and(|d| now >= d)
                {
                    self.state = State::Finished;
                    self.queue.clear();
                    self.replies.clear();
                    out.push(Event::Closed(EndReason::Inactivity));
                }
            }
        }
        out
    }

    /// When [`BoshSession::on_timer`] next has something to do; `None` once finished.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Finished => None,
            State::Closing(_) => self.inactivity_deadline(),
            State::Open => {
                let held = self
                    .held
                    .iter()
                    .filter_map(|h| after(h.since, self.wait))
                    .min();
                let idle = if self.held.is_empty() && self.buffered.is_empty() {
                    self.inactivity_deadline()
                } else {
                    None
                };
                [held, self.gap_deadline(), idle]
                    .into_iter()
                    .flatten()
                    .min()
            }
        }
    }

    /// A request waiting behind a gap is given twice `wait`: a client re-sends a request
    /// whose connection failed only after its own timeout of a little more than `wait`.
    /// After that the missing payload is lost, and in-order delivery is impossible.
    fn gap_deadline(&self) -> Option<Instant> {
        self.buffered
            .values()
            .filter_map(|b| after(b.since, self.wait.saturating_mul(2)))
            .min()
    }

    fn inactivity_deadline(&self) -> Option<Instant> {
        after(self.idle_since, self.config.inactivity)
    }

    /// Sends queued data on held requests, then answers the oldest held requests while
    /// more than `hold` are held (§11: a new request releases the oldest).
    fn settle(&mut self, now: Instant, out: &mut Vec<Event>) {
        if self.queued_bytes > self.config.max_queued_bytes {
            // The client stopped collecting its stanzas: like a full session queue on TCP.
            return self.fail(Condition::PolicyViolation, None, now, out);
        }
        while !self.queue.is_empty() {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            self.answer(h, now, out);
        }
        while self.held.len() > self.hold as usize {
            if let Some(h) = self.held.pop_front() {
                self.answer(h, now, out);
            }
        }
    }

    /// Answers a held request with the next batch of queued data (possibly none).
    fn answer(&mut self, h: Held, now: Instant, out: &mut Vec<Event>) {
        let mut attrs = Vec::new();
        if h.rid == self.creation_rid && !self.creation_answered {
            self.creation_answered = true;
            attrs = self.creation_attrs();
        } else if self.acks && h.rid < self.last_rid {
            // §9.2: tell the client which later requests already arrived.
            attrs.push(("ack", self.last_rid.to_string()));
        }
        let (payload, stream_prefix) = self.take_batch(self.config.max_response_bytes);
        let body: Arc<str> = body::response_body(&attrs, &payload, stream_prefix).into();
        self.replies.push_back((h.rid, body.clone()));
        while self.replies.len() > self.requests as usize {
            self.replies.pop_front();
        }
        self.idle_since = now;
        respond(out, h.request, HttpResponse { status: 200, body });
    }

    /// Session creation response attributes (XEP-0124 §7.2, XEP-0206 §3).
    fn creation_attrs(&self) -> Vec<(&'static str, String)> {
        let mut attrs = vec![
            ("sid", self.sid.clone()),
            ("wait", self.wait.to_string()),
            ("hold", self.hold.to_string()),
            ("requests", self.requests.to_string()),
            ("inactivity", self.config.inactivity.to_string()),
            ("polling", self.config.polling.to_string()),
            ("ver", format!("{}.{}", self.ver.0, self.ver.1)),
            ("from", self.to.clone()),
        ];
        if self.acks {
            // §9.1: acknowledgements are on; the creation request is the first acknowledged.
            attrs.push(("ack", self.creation_rid.to_string()));
        }
        attrs.push(("xmpp:version", "1.0".to_owned()));
        attrs.push(("xmpp:restartlogic", "true".to_owned()));
        attrs
    }

    /// Takes queued elements up to `limit` bytes (at least one, however large).
    fn take_batch(&mut self, limit: usize) -> (String, bool) {
        let mut payload = String::new();
        let mut stream_prefix = false;
        while let Some(next) = self.queue.front() {
            if !payload.is_empty() && payload.len() + next.xml.len() > limit {
                break;
            }
            if let Some(q) = self.queue.pop_front() {
                self.queued_bytes -= q.xml.len();
                payload.push_str(&q.xml);
                stream_prefix |= q.stream_prefix;
            }
        }
        (payload, stream_prefix)
    }

    /// Ends the session on a terminal condition caused by `request` (if any).
    fn fail(
        &mut self,
        condition: Condition,
        request: Option<RequestId>,
        now: Instant,
        out: &mut Vec<Event>,
    ) {
        self.end(Some(condition), now, out);
        if let Some(id) = request {
            respond(out, id, condition.response(self.legacy));
        }
        out.push(Event::Closed(EndReason::Error(condition)));
    }

    /// Answers every open request with a terminate body, the oldest with what is queued.
    fn end(&mut self, condition: Option<Condition>, now: Instant, out: &mut Vec<Event>) {
        let open: Vec<RequestId> = self
            .held
            .drain(..)
            .map(|h| h.request)
            .chain(self.buffered.values().map(|b| b.request))
            .collect();
        self.buffered.clear();
        for (i, id) in open.into_iter().enumerate() {
            let response = self.terminate_response(condition, i == 0);
            respond(out, id, response);
        }
        self.queue.clear();
        self.queued_bytes = 0;
        self.replies.clear();
        self.idle_since = now;
        self.state = State::Finished;
    }

    fn terminate_response(
        &mut self,
        condition: Option<Condition>,
        with_queue: bool,
    ) -> HttpResponse {
        let (payload, stream_prefix) = if with_queue {
            self.take_batch(usize::MAX)
        } else {
            (String::new(), false)
        };
        HttpResponse {
            status: condition.map_or(200, |c| c.http_status(self.legacy)),
            body: body::terminate_body(condition, &payload, stream_prefix).into(),
        }
    }

    fn empty_response(&self) -> HttpResponse {
        HttpResponse {
            status: 200,
            body: body::response_body(&[], "", false).into(),
        }
    }

    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The served domain the session is for (the creation request's `to`, lowercased).
    pub fn to(&self) -> &str {
        &self.to
    }

    /// The creation request's `xml:lang`.
    pub fn lang(&self) -> Option<&str> {
        self.lang.as_deref()
    }

    /// The creation request's `xmpp:version`; without it the client predates XMPP 1.0
    /// streams (XEP-0206 §3).
    pub fn xmpp_version(&self) -> Option<&str> {
        self.xmpp_version.as_deref()
    }

    /// The negotiated `wait`, in seconds.
    pub fn wait(&self) -> u64 {
        self.wait
    }

    pub fn hold(&self) -> u32 {
        self.hold
    }

    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// The client did not send `ver` (§17.1).
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// No request will be answered any more: the transport drops the session (and answers
    /// later requests for its sid with [`Condition::ItemNotFound`]).
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }
}

fn respond(out: &mut Vec<Event>, request: RequestId, response: HttpResponse) {
    out.push(Event::Respond { request, response });
}

/// `since` plus `secs` seconds; `None` (never) if that is beyond what `Instant` can hold.
fn after(since: Instant, secs: u64) -> Option<Instant> {
    since.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    //! Transcript tests, named after the XEP-0124 / XEP-0206 sections whose rules they check.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::bosh::parse_body;
    use crate::ns::{NS_CLIENT, NS_STREAMS};

    const WRAP: &str = "xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'";

    fn config() -> BoshConfig {
        BoshConfig {
            domains: vec!["example.org".into()],
            max_wait: 60,
            max_hold: 1,
            inactivity: 30,
            polling: 5,
            ..BoshConfig::default()
        }
    }

    fn parse(xml: &str) -> Body {
        parse_body(xml.as_bytes(), &config()).unwrap()
    }

    /// A request of the session: `attrs` are extra attributes, `payload` child elements.
    fn req(rid: u64, attrs: &str, payload: &str) -> Body {
        parse(&format!(
            "<body rid='{rid}' sid='s1' {attrs} {WRAP}>{payload}</body>"
        ))
    }

    fn create_with(config: BoshConfig, attrs: &str, t0: Instant) -> (BoshSession, Vec<Event>) {
        let body = parse(&format!(
            "<body rid='100' to='example.org' xml:lang='en' ver='1.6' xmpp:version='1.0' {attrs} {WRAP}/>"
        ));
        let (s, id, events) = BoshSession::new(Arc::new(config), "s1", body, t0).unwrap();
        assert_eq!(id, RequestId(0));
        (s, events)
    }

    /// A session whose creation request was answered with stream features.
    fn established(t0: Instant) -> BoshSession {
        let (mut s, events) = create_with(config(), "wait='60' hold='1'", t0);
        assert!(events.is_empty(), "{events:?}");
        s.push_element(&Element::new("features", NS_STREAMS));
        let out = s.flush(t0);
        assert_eq!(responses(&out).len(), 1);
        s
    }

    fn responses(events: &[Event]) -> Vec<(RequestId, u16, String)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Respond { request, response } => {
                    Some((*request, response.status, response.body.to_string()))
                }
                _ => None,
            })
            .collect()
    }

    fn payloads(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Payload(els) => Some(els.iter().map(|e| e.attr("id").unwrap_or("?"))),
                _ => None,
            })
            .flatten()
            .map(str::to_owned)
            .collect()
    }

    fn message(id: &str) -> String {
        format!("<message xmlns='jabber:client' id='{id}' to='a@example.org'/>")
    }

    fn secs(t: Instant, s: u64) -> Instant {
        t + Duration::from_secs(s)
    }

    const EMPTY: &str = "<body xmlns='http://jabber.org/protocol/httpbind'/>";

    #[test]
    fn xep0124_7_2_creation_response_clamps_wait_and_hold() {
        let t0 = Instant::now();
        let (mut s, events) = create_with(config(), "wait='120' hold='3'", t0);
        // The creation request is held until there is something to say.
        assert!(events.is_empty());
        assert_eq!((s.wait(), s.hold(), s.requests()), (60, 1, 2));
        assert_eq!(
            (s.to(), s.lang(), s.xmpp_version()),
            ("example.org", Some("en"), Some("1.0"))
        );
        s.push_element(&Element::new("features", NS_STREAMS));
        let out = responses(&s.flush(t0));
        assert_eq!(
            out,
            vec![(
                RequestId(0),
                200,
                "<body xmlns='http://jabber.org/protocol/httpbind' \
                 xmlns:stream='http://etherx.jabber.org/streams' xmlns:xmpp='urn:xmpp:xbosh' \
                 sid='s1' wait='60' hold='1' requests='2' inactivity='30' polling='5' ver='1.6' \
                 from='example.org' xmpp:version='1.0' xmpp:restartlogic='true'>\
                 <stream:features/></body>"
                    .to_owned()
            )]
        );
        // Lower requests are kept: the server never raises `wait` or `hold`.
        let cfg = BoshConfig {
            max_hold: 5,
            ..config()
        };
        let (s, _) = create_with(cfg, "wait='10' hold='2'", t0);
        assert_eq!((s.wait(), s.hold(), s.requests()), (10, 2, 3));
    }

    #[test]
    fn xep0124_7_1_creation_needs_a_served_to() {
        let t0 = Instant::now();
        let refuse =
            |xml: &str| BoshSession::new(Arc::new(config()), "s", parse(xml), t0).unwrap_err();
        let r = refuse(&format!("<body rid='1' ver='1.6' {WRAP}/>"));
        assert_eq!(
            (r.status, &*r.body),
            (
                200,
                "<body xmlns='http://jabber.org/protocol/httpbind' type='terminate' condition='improper-addressing'/>"
            )
        );
        let r = refuse(&format!(
            "<body rid='1' ver='1.6' to='other.example' {WRAP}/>"
        ));
        assert!(r.body.contains("condition='host-unknown'"), "{}", r.body);
    }

    #[test]
    fn xep0124_9_acknowledgements() {
        let t0 = Instant::now();
        let (mut s, _) = create_with(config(), "ack='1'", t0);
        // §9.1: the creation response acknowledges the creation rid.
        let out = responses(&s.on_request(req(101, "", ""), t0).1);
        assert_eq!(out.len(), 1);
        assert!(out[0].2.contains(" ack='100'"), "{}", out[0].2);
        // §9.2: a response to an older request reports the highest rid received.
        let out = responses(&s.on_request(req(102, "ack='100'", ""), t0).1);
        assert!(out[0].2.contains(" ack='102'"), "{}", out[0].2);
    }

    #[test]
    fn xep0124_14_2_rids_in_order_deliver_payloads_and_release_the_held_request() {
        let t0 = Instant::now();
        let mut s = established(t0);
        let (id1, ev) = s.on_request(req(101, "", &message("a")), t0);
        assert_eq!(payloads(&ev), ["a"]);
        assert!(responses(&ev).is_empty(), "101 is held: {ev:?}");
        let (id2, ev) = s.on_request(req(102, "", &message("b")), t0);
        assert_eq!(payloads(&ev), ["b"]);
        // §11: with hold='1', the new request releases the older one, empty.
        assert_eq!(responses(&ev), [(id1, 200, EMPTY.to_owned())]);
        s.push_xml(message("out"));
        let out = responses(&s.flush(t0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, id2);
        assert!(out[0].2.contains("id='out'"), "{}", out[0].2);
    }

    #[test]
    fn xep0124_14_2_out_of_order_rids_are_processed_in_rid_order() {
        let t0 = Instant::now();
        let mut s = established(t0);
        let (id2, ev) = s.on_request(req(102, "", &message("b")), t0);
        assert!(ev.is_empty(), "102 waits for 101: {ev:?}");
        let (id1, ev) = s.on_request(req(101, "", &message("a")), t0);
        assert_eq!(payloads(&ev), ["a", "b"]);
        assert_eq!(responses(&ev), [(id1, 200, EMPTY.to_owned())]);
        s.push_xml(message("out"));
        assert_eq!(responses(&s.flush(t0))[0].0, id2);
    }

    #[test]
    fn xep0124_14_3_a_repeated_rid_gets_the_same_response() {
        let t0 = Instant::now();
        let (mut s, _) = create_with(config(), "", t0);
        s.push_element(&Element::new("features", NS_STREAMS));
        let first = responses(&s.flush(t0));
        let (_, ev) = s.on_request(req(100, "", ""), t0);
        let again = responses(&ev);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].1, &again[0].2), (first[0].1, &first[0].2));
        // A held request sent again: the new connection takes over, the old one is let go.
        let (old, _) = s.on_request(req(101, "", &message("a")), t0);
        let (new, ev) = s.on_request(req(101, "", &message("a")), t0);
        assert!(payloads(&ev).is_empty(), "payload is not delivered twice");
        assert_eq!(responses(&ev), [(old, 200, EMPTY.to_owned())]);
        s.push_xml(message("out"));
        assert_eq!(responses(&s.flush(t0))[0].0, new);
        assert!(!s.is_finished());
    }

    #[test]
    fn xep0124_14_3_rid_too_old_is_item_not_found() {
        let t0 = Instant::now();
        let mut s = established(t0);
        for rid in 101..=104 {
            s.on_request(req(rid, "", ""), t0);
        }
        // Only the last `requests` (2) responses are kept; 100 is long gone.
        let (id, ev) = s.on_request(req(100, "", ""), t0);
        let out = responses(&ev);
        assert!(out.iter().any(|(r, status, body)| *r == id
            && *status == 200
            && body.contains("type='terminate' condition='item-not-found'")));
        // The held request 104 is answered too, and the session is over.
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(ev.contains(&Event::Closed(EndReason::Error(Condition::ItemNotFound))));
        assert!(s.is_finished());
    }

    #[test]
    fn xep0124_14_3_rid_beyond_the_window_is_item_not_found() {
        let t0 = Instant::now();
        let mut s = established(t0);
        // requests='2': 101 and 102 are acceptable, 103 is not.
        let (id, ev) = s.on_request(req(103, "", ""), t0);
        assert_eq!(responses(&ev), [(id, 200, Condition::ItemNotFound.body())]);
        assert!(s.is_finished());
    }

    #[test]
    fn xep0124_17_1_legacy_clients_get_http_status_codes() {
        let t0 = Instant::now();
        let body = parse(&format!("<body rid='1' to='example.org' {WRAP}/>"));
        let (mut s, _, _) = BoshSession::new(Arc::new(config()), "s1", body, t0).unwrap();
        assert!(s.is_legacy());
        let (_, ev) = s.on_request(req(9, "", ""), t0);
        assert_eq!(responses(&ev)[0].1, 404);
    }

    #[test]
    fn xep0124_11_more_requests_than_hold_answer_the_oldest() {
        let t0 = Instant::now();
        let cfg = BoshConfig {
            max_hold: 2,
            ..config()
        };
        let (mut s, _) = create_with(cfg, "hold='2'", t0);
        let (a, ev) = s.on_request(req(101, "", ""), t0);
        assert!(responses(&ev).is_empty(), "two may be held: {ev:?}");
        let (_, ev) = s.on_request(req(102, "", ""), t0);
        let out = responses(&ev);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, RequestId(0), "the oldest (creation) goes first");
        assert!(out[0].2.contains("sid='s1'"));
        let (_, ev) = s.on_request(req(103, "", ""), t0);
        assert_eq!(responses(&ev), [(a, 200, EMPTY.to_owned())]);
    }

    #[test]
    fn xep0124_11_too_many_simultaneous_requests_is_policy_violation() {
        let t0 = Instant::now();
        let cfg = BoshConfig {
            max_hold: 2,
            ..config()
        };
        let (mut s, _) = create_with(cfg.clone(), "hold='2'", t0);
        s.on_request(req(101, "", ""), t0);
        let (_, ev) = s.on_request(req(103, "", ""), t0);
        assert!(ev.is_empty(), "waits for 102: {ev:?}");
        // 100 and 101 held, 103 buffered: a fourth open request is one too many.
        let (id, ev) = s.on_request(req(102, "", ""), t0);
        let out = responses(&ev);
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(
            out.iter()
                .all(|(_, _, b)| b.contains("condition='policy-violation'"))
        );
        assert!(out.iter().any(|(r, _, _)| *r == id));
        assert!(ev.contains(&Event::Closed(EndReason::Error(Condition::PolicyViolation))));

        // One extra request is allowed when it terminates the session.
        let (mut s, _) = create_with(cfg, "hold='2'", t0);
        s.on_request(req(101, "", ""), t0);
        s.on_request(req(103, "", ""), t0);
        let (_, ev) = s.on_request(req(102, "type='terminate'", ""), t0);
        assert!(
            ev.contains(&Event::Closed(EndReason::ClientTerminate)),
            "{ev:?}"
        );
        assert_eq!(responses(&ev).len(), 4, "{ev:?}");
    }

    #[test]
    fn xep0124_7_2_wait_expires_with_an_empty_response() {
        let t0 = Instant::now();
        let mut s = established(t0);
        let t1 = secs(t0, 5);
        let (id, _) = s.on_request(req(101, "", ""), t1);
        assert_eq!(s.next_deadline(), Some(secs(t1, 60)));
        assert!(s.on_timer(secs(t1, 59)).is_empty());
        let ev = s.on_timer(secs(t1, 60));
        assert_eq!(responses(&ev), [(id, 200, EMPTY.to_owned())]);
        assert!(!s.is_finished());
    }

    #[test]
    fn xep0124_10_inactivity_ends_the_session() {
        let t0 = Instant::now();
        let mut s = established(t0);
        // Nothing held since the creation response at t0: inactivity='30'.
        assert_eq!(s.next_deadline(), Some(secs(t0, 30)));
        assert!(s.on_timer(secs(t0, 29)).is_empty());
        let ev = s.on_timer(secs(t0, 30));
        assert_eq!(ev, [Event::Closed(EndReason::Inactivity)]);
        assert!(s.is_finished());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn xep0124_14_2_a_gap_that_never_fills_ends_the_session() {
        let t0 = Instant::now();
        let mut s = established(t0);
        let (id, _) = s.on_request(req(102, "", ""), t0);
        assert_eq!(s.next_deadline(), Some(secs(t0, 120)));
        let ev = s.on_timer(secs(t0, 120));
        assert_eq!(responses(&ev), [(id, 200, Condition::ItemNotFound.body())]);
        assert!(s.is_finished());
    }

    #[test]
    fn xep0124_13_client_terminate() {
        let t0 = Instant::now();
        let mut s = established(t0);
        let (held, _) = s.on_request(req(101, "", ""), t0);
        let unavailable = "<presence xmlns='jabber:client' type='unavailable' id='bye'/>";
        let (id, ev) = s.on_request(req(102, "type='terminate'", unavailable), t0);
        // The payload of the terminate request is still delivered, then the session ends.
        assert_eq!(payloads(&ev), ["bye"]);
        let terminate = "<body xmlns='http://jabber.org/protocol/httpbind' type='terminate'/>";
        assert_eq!(
            responses(&ev),
            [
                (held, 200, terminate.to_owned()),
                (id, 200, terminate.to_owned())
            ]
        );
        assert_eq!(ev.last(), Some(&Event::Closed(EndReason::ClientTerminate)));
        assert!(s.is_finished());
    }

    #[test]
    fn xep0206_5_restart_is_reported_and_answered_with_new_features() {
        let t0 = Instant::now();
        let mut s = established(t0);
        let (id, ev) = s.on_request(req(101, "xmpp:restart='true' to='example.org'", ""), t0);
        assert_eq!(ev, [Event::Restart]);
        s.push_element(
            &Element::new("features", NS_STREAMS)
                .with_child(Element::new("bind", "urn:ietf:params:xml:ns:xmpp-bind")),
        );
        let out = responses(&s.flush(t0));
        assert_eq!(out[0].0, id);
        assert_eq!(
            out[0].2,
            "<body xmlns='http://jabber.org/protocol/httpbind' \
             xmlns:stream='http://etherx.jabber.org/streams'><stream:features>\
             <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features></body>"
        );
    }

    #[test]
    fn xep0124_8_queued_stanzas_are_batched_within_the_size_limit() {
        let t0 = Instant::now();
        let one = Element::new("message", NS_CLIENT).with_attr("id", "m0");
        let size = one.to_xml().len();
        let cfg = BoshConfig {
            max_response_bytes: 2 * size,
            ..config()
        };
        let (mut s, _) = create_with(cfg, "", t0);
        s.push_element(&Element::new("features", NS_STREAMS));
        s.flush(t0);
        // No request held: stanzas wait in the session.
        for i in 1..=3 {
            s.push_element(&Element::new("message", NS_CLIENT).with_attr("id", format!("m{i}")));
        }
        assert!(s.flush(t0).is_empty());
        let (id, ev) = s.on_request(req(101, "", ""), t0);
        let out = responses(&ev);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, id);
        assert!(out[0].2.contains("id='m1'") && out[0].2.contains("id='m2'"));
        assert!(
            !out[0].2.contains("id='m3'"),
            "over the limit: {}",
            out[0].2
        );
        let (_, ev) = s.on_request(req(102, "", ""), t0);
        assert!(responses(&ev)[0].2.contains("id='m3'"));
    }

    #[test]
    fn xep0124_11_a_client_that_never_collects_its_data_is_cut_off() {
        let t0 = Instant::now();
        let cfg = BoshConfig {
            max_queued_bytes: 100,
            ..config()
        };
        let (mut s, _) = create_with(cfg, "", t0);
        s.push_element(&Element::new("features", NS_STREAMS));
        s.flush(t0);
        s.push_xml("x".repeat(101));
        let ev = s.flush(t0);
        assert_eq!(
            ev,
            [Event::Closed(EndReason::Error(Condition::PolicyViolation))]
        );
    }

    #[test]
    fn xep0206_7_stream_error_is_sent_in_a_terminate_body() {
        let t0 = Instant::now();
        let mut s = established(t0);
        let error = Element::new("error", NS_STREAMS).with_child(Element::new(
            "conflict",
            "urn:ietf:params:xml:ns:xmpp-streams",
        ));
        // No request held: the terminate body waits for the client's next request.
        s.push_element(&error);
        let ev = s.close(Condition::RemoteStreamError, t0);
        assert_eq!(
            ev,
            [Event::Closed(EndReason::Error(
                Condition::RemoteStreamError
            ))]
        );
        assert!(!s.is_finished());
        let (id, ev) = s.on_request(req(101, "", &message("late")), t0);
        assert!(payloads(&ev).is_empty(), "the XMPP side is gone");
        assert_eq!(
            responses(&ev),
            [(
                id,
                200,
                "<body xmlns='http://jabber.org/protocol/httpbind' \
                 xmlns:stream='http://etherx.jabber.org/streams' type='terminate' \
                 condition='remote-stream-error'><stream:error>\
                 <conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></body>"
                    .to_owned()
            )]
        );
        assert!(s.is_finished());
        // With a request held, the server's close answers it at once.
        let mut s = established(t0);
        let (id, _) = s.on_request(req(101, "", ""), t0);
        let ev = s.close(Condition::SystemShutdown, t0);
        assert_eq!(
            responses(&ev),
            [(id, 200, Condition::SystemShutdown.body())]
        );
        assert!(s.is_finished());
    }

    #[test]
    fn xep0124_17_2_every_terminal_condition_has_its_name() {
        let all = [
            (Condition::BadRequest, "bad-request"),
            (Condition::HostGone, "host-gone"),
            (Condition::HostUnknown, "host-unknown"),
            (Condition::ImproperAddressing, "improper-addressing"),
            (Condition::InternalServerError, "internal-server-error"),
            (Condition::ItemNotFound, "item-not-found"),
            (Condition::OtherRequest, "other-request"),
            (Condition::PolicyViolation, "policy-violation"),
            (
                Condition::RemoteConnectionFailed,
                "remote-connection-failed",
            ),
            (Condition::RemoteStreamError, "remote-stream-error"),
            (Condition::SeeOtherUri, "see-other-uri"),
            (Condition::SystemShutdown, "system-shutdown"),
            (Condition::UndefinedCondition, "undefined-condition"),
        ];
        for (c, name) in all {
            assert_eq!(c.to_string(), name);
            assert_eq!(
                c.body(),
                format!(
                    "<body xmlns='http://jabber.org/protocol/httpbind' type='terminate' condition='{name}'/>"
                )
            );
            assert_eq!(c.http_status(false), 200);
        }
    }
}

//! The task that owns one logged-in session: it writes what the worker asks for (stamping chat
//! bodies at the moment of writing), answers the server's IQs, auto-accepts subscriptions, and
//! measures stamped messages and presences as they arrive.

use super::shared::Shared;
use crate::client::Xmpp;
use crate::stats::{now_ns, parse_stamp};
use crate::xml::{self, Event};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// What a session task is asked to do.
#[derive(Debug)]
pub enum Out {
    /// A stamped chat message to `{prefix}{to}@domain` with `pad` filler bytes.
    Chat { to: u32, pad: usize },
    /// A subscription request to this bare JID (remembered, so the reverse request is not
    /// answered with a second one).
    Subscribe(String),
    /// Ask for the roster and store the count of `both` items in `both`.
    RosterCheck,
    /// Enter this room (bare JID) with the account name as nickname, asking for no history.
    Join { room: String },
    /// A stamped groupchat message to this room with `pad` filler bytes.
    GroupChat { room: String, pad: usize },
    /// A XEP-0313 query of the own archive: `pages` pages of `page` messages from the end back,
    /// only the conversation with `with` when given.
    Mam {
        with: Option<String>,
        page: u32,
        pages: u32,
    },
    /// Close the stream.
    Close,
}

/// The fixed facts of one session.
#[derive(Debug)]
pub struct Me {
    pub prefix: String,
    /// The account name (localpart), also the nickname in rooms.
    pub name: String,
    pub domain: String,
    /// When this session's initial presence was sent (ns): presences stamped earlier are
    /// replies to its probes, not live broadcasts.
    pub online_ns: u64,
    /// Roster items with subscription `both`, from the last [`Out::RosterCheck`].
    pub both: Arc<AtomicU32>,
}

/// Per-session mutable state.
#[derive(Debug, Default)]
pub struct State {
    requested: HashSet<String>,
    seq: u64,
    /// (sender, stamp) of stamped presences already counted.
    seen: HashSet<(Vec<u8>, u64)>,
    /// The room being entered: our occupant JID and when the join was written (ns).
    joining: Option<(String, u64)>,
    /// Archive queries in flight, by query id (also the IQ's id).
    mam: HashMap<String, Walk>,
}

/// One archive query in flight: a single page, or a walk of several pages back.
#[derive(Debug)]
struct Walk {
    /// When the first page was asked for (ns).
    start_ns: u64,
    with: Option<String>,
    page: u32,
    /// Pages still to come, this one included.
    pages_left: u32,
    /// Results of the current page so far.
    results: u32,
    /// The current page's `<fin/>` has arrived, with this RSM `<first/>` (maybe empty).
    fin: Option<String>,
}

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_MUC: &str = "http://jabber.org/protocol/muc";

/// `s` from the first occurrence of `needle` on.
fn from_needle<'a>(s: &'a [u8], needle: &str) -> Option<&'a [u8]> {
    s.windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .map(|i| &s[i..])
}

/// Whether a MUC presence carries `<status code='N'/>`.
fn has_status(s: &[u8], code: u16) -> bool {
    xml::contains(s, &format!("code='{code}'")) || xml::contains(s, &format!("code=\"{code}\""))
}

/// Writes a XEP-0313 query for one page; `before` is the RSM cursor (empty: the last page).
fn mam_iq(buf: &mut String, id: &str, with: Option<&str>, page: u32, before: &str) {
    let _ = write!(
        buf,
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}' queryid='{id}'>"
    );
    if let Some(with) = with {
        let _ = write!(
            buf,
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>{NS_MAM}</value></field><field var='with'><value>{with}</value></field></x>"
        );
    }
    let _ = write!(
        buf,
        "<set xmlns='http://jabber.org/protocol/rsm'><max>{page}</max>"
    );
    if before.is_empty() {
        buf.push_str("<before/>");
    } else {
        let _ = write!(buf, "<before>{before}</before>");
    }
    buf.push_str("</set></query></iq>");
}

impl State {
    /// Marks the join under way as done (its latency measured).
    fn joined(&mut self, recv_ns: u64, shared: &Shared) {
        if let Some((_, t0)) = self.joining.take() {
            shared.login_ns(recv_ns.saturating_sub(t0));
            shared.ok.fetch_add(1, Relaxed);
        }
    }

    /// The `<fin/>` of a page arrived (`s`, the IQ result): remember its cursor and go on.
    fn fin(&mut self, id: &str, s: &[u8], recv_ns: u64, shared: &Shared, reply: &mut String) {
        let Some(walk) = self.mam.get_mut(id) else {
            return;
        };
        let first = xml::child_text(s, "first").unwrap_or_default();
        walk.fin = Some(String::from_utf8_lossy(first).into_owned());
        if walk.results < walk.page {
            // Results must come before their <fin/> (XEP-0313 §4.1.2), but a server that
            // routes them as messages may let the IQ result overtake the last ones: the page
            // is complete when both are in; one that never completes is counted unanswered.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "  note: an archive query's <fin/> came before all its results; \
                     its page is timed to the last result"
                );
            });
        }
        self.advance(id, recv_ns, shared, reply);
    }

    /// Moves the walk `id` on once its page is complete (all results and the `<fin/>` in):
    /// asks for the page before it, or records the walk's latency.
    fn advance(&mut self, id: &str, recv_ns: u64, shared: &Shared, reply: &mut String) {
        let Some(walk) = self.mam.get(id) else {
            return;
        };
        if walk.fin.is_none() || walk.results < walk.page {
            return;
        }
        let Some(mut walk) = self.mam.remove(id) else {
            return;
        };
        walk.pages_left -= 1;
        if walk.pages_left == 0 {
            shared.latency_ns(recv_ns.saturating_sub(walk.start_ns));
            shared.ok.fetch_add(1, Relaxed);
            return;
        }
        let first = walk.fin.take().unwrap_or_default();
        if first.is_empty() {
            shared.error(format!("archive query {id}: no <first/> to page back from"));
            return;
        }
        self.seq += 1;
        let next = format!("mam{}", self.seq);
        mam_iq(reply, &next, walk.with.as_deref(), walk.page, &first);
        walk.results = 0;
        self.mam.insert(next, walk);
    }
}

/// Handles one incoming stanza received at `recv_ns`; appends any reply to `reply`.
pub fn handle(
    s: &[u8],
    recv_ns: u64,
    me: &Me,
    st: &mut State,
    shared: &Shared,
    reply: &mut String,
) {
    match xml::name(s) {
        b"message" => {
            if xml::attr(s, "type") == Some(b"error") {
                shared.error(format!("message bounced: {}", String::from_utf8_lossy(s)));
                return;
            }
            if let Some(result) = from_needle(s, "<result")
                && xml::contains(result, NS_MAM)
            {
                let qid = xml::attr(result, "queryid").unwrap_or_default();
                if let Some(walk) = st.mam.get_mut(&*String::from_utf8_lossy(qid)) {
                    // A `with` query must return that conversation only.
                    if let Some(with) = &walk.with
                        && !xml::contains(result, with)
                    {
                        shared.error(format!(
                            "archive query for {with} returned another conversation: {}",
                            String::from_utf8_lossy(s)
                        ));
                    }
                    walk.results += 1;
                    shared.received.fetch_add(1, Relaxed);
                    let qid = String::from_utf8_lossy(qid).into_owned();
                    st.advance(&qid, recv_ns, shared, reply);
                }
                return;
            }
            if let Some(stamp) = xml::child_text(s, "body").and_then(parse_stamp)
                && stamp >= shared.measure_from_ns.load(Relaxed)
            {
                shared.received.fetch_add(1, Relaxed);
                shared.latency_ns(recv_ns.saturating_sub(stamp));
            }
        }
        b"presence" => match xml::attr(s, "type") {
            None if st.joining.as_ref().is_some_and(|(occupant, _)| {
                xml::attr(s, "from") == Some(occupant.as_bytes()) && has_status(s, 110)
            }) =>
            {
                if has_status(s, 201) {
                    // A new room, locked until configured (XEP-0045 §10.1.2): accept the
                    // default configuration (an instant room); joined once that is answered.
                    let room = st
                        .joining
                        .as_ref()
                        .and_then(|(o, _)| o.split('/').next())
                        .unwrap_or_default();
                    let _ = write!(
                        reply,
                        "<iq type='set' id='mucinst' to='{room}'><query \
                         xmlns='{NS_MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
                    );
                } else {
                    st.joined(recv_ns, shared);
                }
            }
            None => {
                if let Some(stamp) = xml::child_text(s, "status").and_then(parse_stamp)
                    && stamp >= me.online_ns
                    && stamp >= shared.measure_from_ns.load(Relaxed)
                {
                    let from = xml::attr(s, "from").unwrap_or_default().to_vec();
                    if st.seen.insert((from, stamp)) {
                        shared.received.fetch_add(1, Relaxed);
                        shared.latency_ns(recv_ns.saturating_sub(stamp));
                    } else {
                        shared.duplicates.fetch_add(1, Relaxed);
                    }
                }
            }
            Some(b"subscribe") => {
                if let Some(from) = xml::attr(s, "from") {
                    let from = String::from_utf8_lossy(from).into_owned();
                    let bare = from.split('/').next().unwrap_or(&from).to_owned();
                    let _ = write!(reply, "<presence type='subscribed' to='{bare}'/>");
                    if st.requested.insert(bare.clone()) {
                        let _ = write!(reply, "<presence type='subscribe' to='{bare}'/>");
                    }
                }
            }
            Some(b"error") => {
                shared.error(format!("presence error: {}", String::from_utf8_lossy(s)));
            }
            _ => {}
        },
        b"iq" => match xml::attr(s, "type") {
            Some(b"get") | Some(b"set") => {
                let id = xml::attr(s, "id").unwrap_or_default();
                let id = String::from_utf8_lossy(id);
                match xml::attr(s, "from") {
                    Some(from) => {
                        let from = String::from_utf8_lossy(from);
                        let _ = write!(reply, "<iq type='result' id='{id}' to='{from}'/>");
                    }
                    None => {
                        let _ = write!(reply, "<iq type='result' id='{id}'/>");
                    }
                }
            }
            Some(b"result") if xml::attr(s, "id") == Some(b"mucinst") => {
                st.joined(recv_ns, shared);
            }
            Some(b"result") if xml::attr(s, "id").is_some_and(|i| i.starts_with(b"mam")) => {
                let id = String::from_utf8_lossy(xml::attr(s, "id").unwrap_or_default());
                st.fin(&id, s, recv_ns, shared, reply);
            }
            Some(b"result") if xml::attr(s, "id") == Some(b"rchk") => {
                let both = count(s, "subscription='both'") + count(s, "subscription=\"both\"");
                me.both.store(both as u32, Relaxed);
            }
            Some(b"error") => {
                if let Some(id) = xml::attr(s, "id") {
                    st.mam.remove(&*String::from_utf8_lossy(id));
                }
                shared.error(format!("iq error: {}", String::from_utf8_lossy(s)));
            }
            _ => {}
        },
        _ => {}
    }
}

fn count(hay: &[u8], needle: &str) -> usize {
    hay.windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

impl State {
    fn render(&mut self, out: Out, me: &Me, buf: &mut String) -> bool {
        match out {
            Out::Chat { to, pad } => {
                self.seq += 1;
                let _ = write!(
                    buf,
                    "<message type='chat' id='m{}' to='{}{to}@{}'><body>{} ",
                    self.seq,
                    me.prefix,
                    me.domain,
                    now_ns()
                );
                buf.extend(std::iter::repeat_n('x', pad));
                buf.push_str("</body></message>");
            }
            Out::Subscribe(jid) => {
                let _ = write!(buf, "<presence type='subscribe' to='{jid}'/>");
                self.requested.insert(jid);
            }
            Out::RosterCheck => {
                buf.push_str("<iq type='get' id='rchk'><query xmlns='jabber:iq:roster'/></iq>");
            }
            Out::Join { room } => {
                let occupant = format!("{room}/{}", me.name);
                let _ = write!(
                    buf,
                    "<presence to='{occupant}'><x xmlns='{NS_MUC}'>\
                     <history maxstanzas='0'/></x></presence>"
                );
                self.joining = Some((occupant, now_ns()));
            }
            Out::GroupChat { room, pad } => {
                self.seq += 1;
                let _ = write!(
                    buf,
                    "<message type='groupchat' id='g{}' to='{room}'><body>{} ",
                    self.seq,
                    now_ns()
                );
                buf.extend(std::iter::repeat_n('x', pad));
                buf.push_str("</body></message>");
            }
            Out::Mam { with, page, pages } => {
                self.seq += 1;
                let id = format!("mam{}", self.seq);
                mam_iq(buf, &id, with.as_deref(), page, "");
                self.mam.insert(
                    id,
                    Walk {
                        start_ns: now_ns(),
                        with,
                        page,
                        pages_left: pages.max(1),
                        results: 0,
                        fin: None,
                    },
                );
            }
            Out::Close => {
                buf.push_str("</stream:stream>");
                return false;
            }
        }
        true
    }
}

/// Handles every complete stanza already read; true when the server ended the stream.
fn handle_buffered(
    x: &mut Xmpp,
    me: &Me,
    st: &mut State,
    shared: &Shared,
    out: &mut String,
) -> bool {
    let now = now_ns();
    let mut ended = false;
    while let Some(ev) = x.poll_event() {
        match ev {
            Event::Stanza(a, b) => handle(&x.buf[a..b], now, me, st, shared, out),
            Event::StreamEnd => ended = true,
            Event::StreamStart(..) => {}
        }
    }
    ended
}

/// Runs the session until it is closed (by us or the server).
pub async fn run(
    mut x: Xmpp,
    mut rx: mpsc::UnboundedReceiver<Out>,
    me: Me,
    mut st: State,
    shared: Arc<Shared>,
    pending: Vec<(u64, Vec<u8>)>,
) {
    let mut out = String::new();
    for (t, s) in pending {
        handle(&s, t, &me, &mut st, &shared, &mut out);
    }
    // The read that brought the login's last answer may have brought stanzas after it: they
    // are parsed and waiting in `x.buf`, and would otherwise be seen only when more bytes
    // arrive, which for the last logins of a storm is never (M4 counted them as lost).
    if handle_buffered(&mut x, &me, &mut st, &shared, &mut out) {
        shared.error("server ended the stream");
        shared.up.fetch_sub(1, Relaxed);
        return;
    }
    let mut open = true;
    loop {
        if !out.is_empty() {
            if let Err(e) = x.stream.write_all(out.as_bytes()).await {
                shared.error(format!("write: {e}"));
                break;
            }
            out.clear();
        }
        if !open {
            // Closing: wait (briefly) for the server's </stream:stream>.
            let wait = async {
                while let Ok(n) = x.fill().await {
                    if n == 0 {
                        break;
                    }
                    while let Some(ev) = x.poll_event() {
                        if ev == Event::StreamEnd {
                            return;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), wait).await;
            let _ = x.stream.shutdown().await;
            break;
        }
        tokio::select! {
            r = x.fill() => {
                match r {
                    Ok(0) => { shared.error("server closed the connection"); break; }
                    Err(e) => { shared.error(e); break; }
                    Ok(_) => {}
                }
                if handle_buffered(&mut x, &me, &mut st, &shared, &mut out) {
                    shared.error("server ended the stream");
                    break;
                }
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { open = false; out.push_str("</stream:stream>"); continue };
                open = st.render(cmd, &me, &mut out);
                while open {
                    match rx.try_recv() {
                        Ok(cmd) => open = st.render(cmd, &me, &mut out),
                        Err(_) => break,
                    }
                }
            }
        }
    }
    shared.up.fetch_sub(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Me {
        Me {
            prefix: "c".into(),
            name: "c1".into(),
            domain: "bench.local".into(),
            online_ns: 0,
            both: Arc::default(),
        }
    }

    fn result(qid: &str, n: u32) -> String {
        format!(
            "<message to='c1@bench.local/r'><result xmlns='urn:xmpp:mam:2' queryid='{qid}' \
             id='x{n}'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' \
             from='c2@bench.local/r' to='c1@bench.local/r'><body>Archived {n}</body></message>\
             </forwarded></result></message>"
        )
    }

    fn fin(id: &str, first: &str) -> String {
        format!(
            "<iq type='result' id='{id}'><fin xmlns='urn:xmpp:mam:2'><set \
             xmlns='http://jabber.org/protocol/rsm'><first index='0'>{first}</first>\
             <last>z</last></set></fin></iq>"
        )
    }

    #[test]
    fn a_walk_pages_back_from_each_first_id_and_is_timed_once() {
        let (me, shared) = (me(), Shared::default());
        let mut st = State::default();
        let mut out = String::new();
        st.render(
            Out::Mam {
                with: None,
                page: 2,
                pages: 2,
            },
            &me,
            &mut out,
        );
        assert!(
            out.contains("queryid='mam1'") && out.contains("<before/>"),
            "{out}"
        );
        let mut reply = String::new();
        for n in 0..2 {
            handle(
                result("mam1", n).as_bytes(),
                1,
                &me,
                &mut st,
                &shared,
                &mut reply,
            );
        }
        handle(
            fin("mam1", "x0").as_bytes(),
            2,
            &me,
            &mut st,
            &shared,
            &mut reply,
        );
        assert!(reply.contains("queryid='mam2'") && reply.contains("<before>x0</before>"));
        assert_eq!(shared.ok.load(Relaxed), 0);
        let mut reply = String::new();
        // The second page's <fin/> overtakes its last result: complete only when all are in.
        handle(
            result("mam2", 2).as_bytes(),
            3,
            &me,
            &mut st,
            &shared,
            &mut reply,
        );
        handle(
            fin("mam2", "x2").as_bytes(),
            4,
            &me,
            &mut st,
            &shared,
            &mut reply,
        );
        assert_eq!(shared.ok.load(Relaxed), 0);
        handle(
            result("mam2", 3).as_bytes(),
            5,
            &me,
            &mut st,
            &shared,
            &mut reply,
        );
        assert!(reply.is_empty(), "no third page: {reply}");
        assert_eq!(shared.ok.load(Relaxed), 1);
        assert_eq!(shared.received.load(Relaxed), 4);
        assert_eq!(shared.errors.load(Relaxed), 0);
        assert!(st.mam.is_empty());
    }

    #[test]
    fn a_with_query_that_returns_another_conversation_is_an_error() {
        let (me, shared) = (me(), Shared::default());
        let mut st = State::default();
        let mut out = String::new();
        st.render(
            Out::Mam {
                with: Some("c3@bench.local".into()),
                page: 1,
                pages: 1,
            },
            &me,
            &mut out,
        );
        assert!(out.contains("<value>c3@bench.local</value>"), "{out}");
        let mut reply = String::new();
        handle(
            result("mam1", 0).as_bytes(),
            1,
            &me,
            &mut st,
            &shared,
            &mut reply,
        );
        assert_eq!(shared.errors.load(Relaxed), 1);
    }

    #[test]
    fn a_new_room_is_made_instant_before_the_join_counts() {
        let (me, shared) = (me(), Shared::default());
        let mut st = State::default();
        let mut out = String::new();
        st.render(
            Out::Join {
                room: "bench@conference.bench.local".into(),
            },
            &me,
            &mut out,
        );
        assert!(
            out.contains("to='bench@conference.bench.local/c1'"),
            "{out}"
        );
        let mut reply = String::new();
        // Someone else's presence is not our join.
        let other = "<presence from='bench@conference.bench.local/c2'><x \
                     xmlns='http://jabber.org/protocol/muc#user'><status code='110'/></x></presence>";
        handle(other.as_bytes(), 1, &me, &mut st, &shared, &mut reply);
        assert_eq!(shared.ok.load(Relaxed), 0);
        let created = "<presence from='bench@conference.bench.local/c1'><x \
                       xmlns='http://jabber.org/protocol/muc#user'><status code=\"110\"/>\
                       <status code='201'/></x></presence>";
        handle(created.as_bytes(), 2, &me, &mut st, &shared, &mut reply);
        assert!(
            reply.contains("id='mucinst'") && reply.contains("muc#owner"),
            "{reply}"
        );
        assert_eq!(shared.ok.load(Relaxed), 0);
        let configured = "<iq type='result' id='mucinst' from='bench@conference.bench.local'/>";
        handle(configured.as_bytes(), 3, &me, &mut st, &shared, &mut reply);
        assert_eq!(shared.ok.load(Relaxed), 1);
        assert_eq!(shared.login.lock().map(|h| h.count()).unwrap_or(0), 1);
    }
}

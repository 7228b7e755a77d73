//! The task that owns one logged-in session: it writes what the worker asks for (stamping chat
//! bodies at the moment of writing), answers the server's IQs, auto-accepts subscriptions, and
//! measures stamped messages and presences as they arrive.

use super::shared::Shared;
use crate::client::Xmpp;
use crate::stats::{now_ns, parse_stamp};
use crate::xml::{self, Event};
use std::collections::HashSet;
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
    /// Close the stream.
    Close,
}

/// The fixed facts of one session.
#[derive(Debug)]
pub struct Me {
    pub prefix: String,
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
            if let Some(stamp) = xml::child_text(s, "body").and_then(parse_stamp)
                && stamp >= shared.measure_from_ns.load(Relaxed)
            {
                shared.received.fetch_add(1, Relaxed);
                shared.latency_ns(recv_ns.saturating_sub(stamp));
            }
        }
        b"presence" => match xml::attr(s, "type") {
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
            Some(b"result") if xml::attr(s, "id") == Some(b"rchk") => {
                let both = count(s, "subscription='both'") + count(s, "subscription=\"both\"");
                me.both.store(both as u32, Relaxed);
            }
            Some(b"error") => {
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

//! The session registry: which resources of which account are connected to this node, and the
//! per-session state the IM modules need (presence, priority, roster interest, carbons).
//!
//! A session is reached only through its outbound queue; the transport task that owns the socket
//! drains it. Modules and the router never touch sockets (DESIGN §5).

pub use crate::fanout::{Fanout, Serialised};
use crate::outbox::{Outbox, Receiver, Refused};
use franca_proto::errors::StreamError;
use franca_xml::Element;
use jid::{BareJid, FullJid};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Depth of a session's outbound queue. A reader slower than this is disconnected rather than
/// letting the server's memory grow without bound; what it could not take is handled as
/// undeliverable (offline storage or an error bounce), never dropped silently.
pub const OUTBOUND_QUEUE: usize = 2048;

/// What the router hands to a session's writer.
#[derive(Debug, PartialEq, Eq)]
pub enum Outbound {
    /// A serialised stanza, shared by every recipient of the same bytes.
    Xml(Arc<str>),
    /// A stanza serialised once for many recipients, addressed to this session's full JID:
    /// the writer puts the session's `to` into it ([`Fanout`]).
    Fanout(Fanout),
    /// Close the stream with this error.
    Close(StreamError, Option<String>),
}

impl From<Serialised> for Outbound {
    fn from(s: Serialised) -> Outbound {
        match s {
            Serialised::Xml(xml) => Outbound::Xml(xml),
            Serialised::Fanout(f) => Outbound::Fanout(f),
        }
    }
}

/// The order in which presence changes of all sessions became visible; see
/// [`next_presence_seq`].
static PRESENCE_SEQ: AtomicU64 = AtomicU64::new(1);

/// A fresh presence stamp, greater than every stamp taken before it (never 0).
///
/// Take it while holding the session's presence lock, in the critical section that makes the
/// change visible (`available = true`, a new `last`). Then for two sessions A and B, B's
/// presence stamped `b` and A's availability stamped `a`: if `b < a`, whoever reads B's state
/// after A became available sees that presence (or a newer one), and if `a < b`, whoever reads
/// A's state after `b` was taken sees A available. The presence module relies on this to hand
/// B's presence to A exactly once: by B's broadcast when `a < b`, by the answer to A's initial
/// probe when `b < a`. The lock gives the happens-before edges and the counter's single
/// modification order gives the total order, so `Relaxed` is enough.
pub fn next_presence_seq() -> u64 {
    PRESENCE_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// RFC 6121 presence state of one session.
#[derive(Debug, Default)]
pub struct PresenceState {
    /// Sent initial presence and not yet unavailable (RFC 6121 §4.2).
    pub available: bool,
    /// The [`next_presence_seq`] stamp of the initial presence that made the session
    /// available; meaningful only while `available`. 0 (older than everything) for sessions
    /// made available without one.
    pub available_seq: u64,
    pub priority: i8,
    /// Requested the roster: receives roster pushes and subscription requests (§2.1.6).
    pub interested: bool,
    /// The last available presence broadcast, answered to probes.
    pub last: Option<Element>,
    /// The [`next_presence_seq`] stamp taken when `last` was set; meaningful only while `last`
    /// is set.
    pub last_seq: u64,
    /// Full or bare JIDs that received directed presence (§4.6), told when we go offline.
    pub directed: HashSet<String>,
    /// XEP-0280 carbons enabled.
    pub carbons: bool,
}

#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub jid: FullJid,
    outbox: Arc<Outbox>,
    presence: Mutex<PresenceState>,
    /// XEP-0198 hibernations so far, counting each start and each end (set by
    /// [`Detached`](crate::detached::Detached)): odd while the connection is gone and the
    /// session waits for resumption. Stanzas still queue then, and modules such as XEP-0357
    /// push act on that.
    hibernations: AtomicU32,
}

impl Session {
    pub fn bare(&self) -> BareJid {
        self.jid.to_bare()
    }

    pub fn presence(&self) -> MutexGuard<'_, PresenceState> {
        // A poisoned lock means a panic elsewhere already; the state is still usable.
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue serialised bytes. Returns false when the session is gone or too slow.
    pub fn send_xml(&self, xml: Arc<str>) -> bool {
        self.push(Outbound::Xml(xml))
    }

    /// Queue a fan-out stanza addressed to this session (its bytes are shared, not copied).
    /// Returns false when the session is gone or too slow.
    pub fn send_fanout(&self, stanza: &Fanout) -> bool {
        self.push(Outbound::Fanout(stanza.clone()))
    }

    fn push(&self, item: Outbound) -> bool {
        match self.outbox.push(item) {
            Ok(()) => true,
            Err(Refused::Full(_)) => {
                tracing::warn!(jid = %self.jid, "outbound queue full; closing slow session");
                self.outbox.push_close(Outbound::Close(
                    StreamError::PolicyViolation,
                    Some("too slow reading".into()),
                ));
                false
            }
            Err(Refused::Closed(_)) => false,
        }
    }

    pub fn send(&self, stanza: &Element) -> bool {
        self.send_xml(serialise(stanza))
    }

    /// Ask the session's task to close the stream with `error`.
    pub fn close(&self, error: StreamError, text: Option<String>) {
        // Close must get through even when the queue is full.
        self.outbox.push_close(Outbound::Close(error, text));
    }

    pub fn is_closed(&self) -> bool {
        self.outbox.is_closed()
    }

    /// Whether the session is hibernated by XEP-0198, waiting without a connection.
    pub fn is_hibernated(&self) -> bool {
        self.hibernation().is_some()
    }

    /// While hibernated, a number that tells this hibernation from the session's earlier ones
    /// (a resumption came in between).
    pub fn hibernation(&self) -> Option<u32> {
        let n = self.hibernations.load(Ordering::Relaxed);
        (n % 2 == 1).then_some(n / 2)
    }

    /// Only the registry calls this, under its lock, so a start and an end never race.
    pub(crate) fn set_hibernated(&self, on: bool) {
        if self.is_hibernated() != on {
            self.hibernations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Serialise a stanza the way it appears inside a `jabber:client` stream.
pub fn serialise(stanza: &Element) -> Arc<str> {
    Arc::from(stanza.to_xml_in(franca_proto::ns::NS_CLIENT))
}

type Shard = RwLock<HashMap<BareJid, Vec<Arc<Session>>>>;

/// Sharded map from bare JID to the account's sessions: lookups on the routing path take one
/// read lock on one shard, so senders on different accounts do not contend.
pub struct Sessions {
    shards: Box<[Shard]>,
    hasher: RandomState,
    next_id: AtomicU64,
}

/// The result of binding a resource.
pub struct Bound {
    pub session: Arc<Session>,
    pub rx: Receiver,
    /// A session that had the same full JID and was replaced (it is told `<conflict/>`).
    pub replaced: Option<Arc<Session>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new()
    }
}

impl Sessions {
    pub fn new() -> Sessions {
        let shards = (0..64).map(|_| RwLock::new(HashMap::new())).collect();
        Sessions {
            shards,
            hasher: RandomState::new(),
            next_id: AtomicU64::new(1),
        }
    }

    fn shard(&self, bare: &BareJid) -> &Shard {
        // Truncation is fine: only the low bits choose the shard.
        let i = (self.hasher.hash_one(bare) as usize) % self.shards.len();
        &self.shards[i]
    }

    /// Bind `jid`. RFC 6120 §7.7.2.2: when the full JID is taken, the older session is replaced
    /// (the behaviour of Prosody and ejabberd), and told `<conflict/>`.
    pub fn bind(&self, jid: FullJid) -> Bound {
        let outbox = Outbox::new(OUTBOUND_QUEUE);
        let rx = outbox.receiver();
        let session = Arc::new(Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            jid,
            outbox,
            presence: Mutex::new(PresenceState::default()),
            hibernations: AtomicU32::new(0),
        });
        let bare = session.bare();
        let mut map = self.shard(&bare).write().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(bare).or_default();
        let replaced = list
            .iter()
            .position(|s| s.jid == session.jid)
            .map(|i| list.swap_remove(i));
        list.push(session.clone());
        drop(map);
        if let Some(old) = &replaced {
            old.close(
                StreamError::Conflict,
                Some("replaced by a new session".into()),
            );
        }
        Bound {
            session,
            rx,
            replaced,
        }
    }

    /// Whether `jid` is bound right now.
    pub fn is_bound(&self, jid: &FullJid) -> bool {
        self.get(jid).is_some()
    }

    pub fn unbind(&self, session: &Session) {
        let bare = session.bare();
        let mut map = self.shard(&bare).write().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = map.get_mut(&bare) {
            list.retain(|s| s.id != session.id);
            if list.is_empty() {
                map.remove(&bare);
            }
        }
    }

    pub fn get(&self, jid: &FullJid) -> Option<Arc<Session>> {
        let bare = jid.to_bare();
        let map = self.shard(&bare).read().unwrap_or_else(|e| e.into_inner());
        map.get(&bare)?.iter().find(|s| s.jid == *jid).cloned()
    }

    /// Every session of an account.
    pub fn resources(&self, bare: &BareJid) -> Vec<Arc<Session>> {
        let map = self.shard(bare).read().unwrap_or_else(|e| e.into_inner());
        map.get(bare).cloned().unwrap_or_default()
    }

    /// The sessions of an account that sent initial presence (RFC 6121 §4.2) and not yet
    /// unavailable: the ones presence broadcasts reach.
    pub fn available(&self, bare: &BareJid) -> Vec<Arc<Session>> {
        let mut list = self.resources(bare);
        list.retain(|s| s.presence().available);
        list
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            out.extend(map.values().flatten().cloned());
        }
        out
    }

    pub fn count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }
}

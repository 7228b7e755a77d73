//! XEP-0198 §5 resumable sessions: the registry that lets a new stream take over a session
//! whose connection broke.
//!
//! A stream that enabled resumption is registered under its resumption id while its connection
//! is up ([`Detached::register`]). When the connection breaks, the transport moves what the
//! session needs to go on into the registry ([`Detached::hibernate`]): the still-bound
//! [`Session`], the receiving end of its outbound queue (so stanzas keep queuing) and the
//! stream management state with the unacknowledged stanzas. A new stream that authenticated as
//! the same account takes it back with [`Detached::resume`]; the transport's expiry timer takes
//! it with [`Detached::expire`] when nobody did in time, and ends the session.
//!
//! When the old connection is still up (the client noticed the break first), `resume` asks
//! its task to close with `<conflict/>` and the resuming stream retries until that task has
//! hibernated the session. The number of hibernated sessions is capped; live entries are one
//! per resumable connection, so they are bounded by the connections themselves.
//!
//! [`Server::end_session`] is what every session that ends without resumption does with what
//! it never confirmed receiving (XEP-0198 §5).

use crate::outbox::Receiver;
use crate::server::Server;
use crate::session::{Outbound, Serialised, Session};
use franca_proto::errors::{StanzaError, StanzaErrorCondition, StreamError};
use franca_proto::ns::{NS_CARBONS, NS_CLIENT};
use franca_proto::sm::StreamManagement;
use franca_xml::{Element, Limits};
use jid::BareJid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The text of the `<conflict/>` that ends a connection whose session is being resumed
/// elsewhere; the resuming stream recognises it (and drops it) if the old connection broke
/// before reading it.
pub const TAKEOVER: &str = "the session was resumed on another stream";

/// A session without a connection, waiting to be resumed.
#[derive(Debug)]
pub struct Hibernated {
    pub session: Arc<Session>,
    pub rx: Receiver,
    /// The stream management state, unacknowledged stanzas included (serialised once, shared;
    /// a fan-out stanza stays in its shared form).
    pub sm: StreamManagement<Serialised>,
    /// The resumption time granted to the client (XEP-0198 `max`).
    pub timeout: Duration,
}

#[derive(Debug)]
enum Slot {
    /// The connection is up; `takeover` once a new stream asked to resume this session.
    Live {
        session: Arc<Session>,
        takeover: bool,
    },
    Hibernated {
        state: Box<Hibernated>,
        /// Tells this hibernation from a later one of the same id (the expiry timer of an
        /// earlier one must not end a session that was resumed and broke again).
        epoch: u64,
    },
}

impl Slot {
    fn account(&self) -> BareJid {
        match self {
            Slot::Live { session, .. } => session.bare(),
            Slot::Hibernated { state, .. } => state.session.bare(),
        }
    }
}

/// What [`Detached::resume`] found.
#[derive(Debug)]
pub enum Lookup {
    /// The hibernated session, now owned by the caller.
    Found(Box<Hibernated>),
    /// The session's old connection is still up and was asked to close; try again shortly.
    Pending,
    /// No resumable session of this account has that id.
    NotFound,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    hibernated: usize,
    next_epoch: u64,
}

/// The resumable sessions of this node, by resumption id.
#[derive(Debug)]
pub struct Detached {
    inner: Mutex<Inner>,
    max_hibernated: usize,
}

impl Detached {
    /// A registry holding at most `max_hibernated` sessions without a connection.
    pub fn new(max_hibernated: usize) -> Detached {
        Detached {
            inner: Mutex::default(),
            max_hibernated,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream of `session` became resumable under `id` (unguessable, chosen by the caller).
    pub fn register(&self, id: &str, session: Arc<Session>) {
        self.lock().slots.insert(
            id.to_owned(),
            Slot::Live {
                session,
                takeover: false,
            },
        );
    }

    /// The stream `id` ended for good (closed cleanly, or its session ended otherwise).
    pub fn forget(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(Slot::Hibernated { .. }) = inner.slots.remove(id) {
            inner.hibernated -= 1;
        }
    }

    /// Whether a new stream is waiting to resume the live stream `id`: its connection must
    /// then hibernate even though it was closed on purpose.
    pub fn takeover_requested(&self, id: &str) -> bool {
        matches!(
            self.lock().slots.get(id),
            Some(Slot::Live { takeover: true, .. })
        )
    }

    /// The connection of stream `id` is gone: keep its session for resumption. Returns the
    /// epoch to [`expire`](Self::expire) it with, or the state back when the registry is full
    /// (the caller then ends the session at once).
    pub fn hibernate(&self, id: &str, state: Hibernated) -> Result<u64, Hibernated> {
        let mut inner = self.lock();
        if inner.hibernated >= self.max_hibernated {
            inner.slots.remove(id);
            return Err(state);
        }
        state.session.set_hibernated(true);
        inner.next_epoch += 1;
        let epoch = inner.next_epoch;
        let old = inner.slots.insert(
            id.to_owned(),
            Slot::Hibernated {
                state: Box::new(state),
                epoch,
            },
        );
        if !matches!(old, Some(Slot::Hibernated { .. })) {
            inner.hibernated += 1;
        }
        Ok(epoch)
    }

    /// A stream authenticated as `account` asks to resume `id` (XEP-0198 §5). Another
    /// account's id is [`Lookup::NotFound`], exactly like an unknown one.
    pub fn resume(&self, id: &str, account: &BareJid) -> Lookup {
        let mut inner = self.lock();
        let Some(slot) = inner.slots.get_mut(id) else {
            return Lookup::NotFound;
        };
        if slot.account() != *account {
            return Lookup::NotFound;
        }
        if let Slot::Live { session, takeover } = slot {
            if !*takeover {
                *takeover = true;
                session.close(StreamError::Conflict, Some(TAKEOVER.into()));
            }
            return Lookup::Pending;
        }
        match inner.slots.remove(id) {
            Some(Slot::Hibernated { state, .. }) => {
                inner.hibernated -= 1;
                state.session.set_hibernated(false);
                Lookup::Found(state)
            }
            _ => Lookup::NotFound,
        }
    }

    /// The resumption time of hibernation `epoch` of `id` is over: its state, unless it was
    /// resumed meanwhile.
    pub fn expire(&self, id: &str, epoch: u64) -> Option<Box<Hibernated>> {
        let mut inner = self.lock();
        match inner.slots.get(id) {
            Some(Slot::Hibernated { epoch: e, .. }) if *e == epoch => {}
            _ => return None,
        }
        match inner.slots.remove(id) {
            Some(Slot::Hibernated { state, .. }) => {
                inner.hibernated -= 1;
                Some(state)
            }
            _ => None,
        }
    }

    /// Takes the hibernated session with this session id, if there is one (its resource was
    /// bound again by a new login, which replaced it).
    pub fn remove_session(&self, session_id: u64) -> Option<Box<Hibernated>> {
        let mut inner = self.lock();
        let id = inner.slots.iter().find_map(|(id, slot)| match slot {
            Slot::Hibernated { state, .. } if state.session.id == session_id => Some(id.clone()),
            _ => None,
        })?;
        match inner.slots.remove(&id) {
            Some(Slot::Hibernated { state, .. }) => {
                inner.hibernated -= 1;
                Some(state)
            }
            _ => None,
        }
    }

    /// Ends every resumable session of `account` (removed or kicked by an administrator): none
    /// may be resumed. Returns the hibernated ones, for the caller to end.
    pub fn remove_account(&self, account: &BareJid) -> Vec<Box<Hibernated>> {
        let mut inner = self.lock();
        let ids: Vec<String> = inner
            .slots
            .iter()
            .filter(|(_, slot)| slot.account() == *account)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some(Slot::Hibernated { state, .. }) = inner.slots.remove(&id) {
                inner.hibernated -= 1;
                out.push(state);
            }
        }
        out
    }

    /// Sessions waiting to be resumed.
    pub fn hibernated(&self) -> usize {
        self.lock().hibernated
    }
}

impl Server {
    /// Ends a session for good: unbinds it and runs the closing hooks (unavailable presence),
    /// then handles what it never confirmed receiving (`unacked`, oldest first) and what was
    /// still queued for it like stanzas to a resource that is gone (XEP-0198 §5): messages go
    /// to offline storage or bounce, IQ requests bounce, presence is dropped (it is state, and
    /// the sender's next one replaces it). Nothing is written to the session any more.
    pub async fn end_session(
        self: &Arc<Self>,
        session: &Arc<Session>,
        rx: Option<Receiver>,
        mut unacked: Vec<Serialised>,
    ) {
        // First unbind, so nothing new is queued behind what is being handled.
        self.session_closed(session).await;
        if let Some(mut rx) = rx {
            while let Some(item) = rx.try_recv() {
                match item {
                    Outbound::Xml(xml) => unacked.push(Serialised::Xml(xml)),
                    Outbound::Fanout(f) => unacked.push(Serialised::Fanout(f)),
                    Outbound::Close(..) => {}
                }
            }
        }
        let bare = session.bare();
        // A removed account's messages go with it (its offline storage is being deleted).
        if unacked.is_empty() || self.removed_during_login(&bare) {
            return;
        }
        for item in unacked {
            // A fan-out copy is read with its `to`, like the copy the client would have got.
            let Some(stanza) = read_queued(&item.to_xml(session.jid.as_str())) else {
                tracing::error!(jid = %session.jid, "unreadable queued stanza dropped");
                continue;
            };
            match stanza.name.as_str() {
                // A carbon copy (XEP-0280) exists because the message itself went elsewhere.
                "message" if stanza.elements().any(|c| c.ns == NS_CARBONS) => {}
                "message" => self.undeliverable(&bare, stanza).await,
                "iq" if matches!(stanza.attr("type"), Some("get" | "set")) => {
                    let e = StanzaError::new(StanzaErrorCondition::ServiceUnavailable);
                    self.reply_error(&stanza, e).await;
                }
                _ => {}
            }
        }
    }
}

/// Reads back a stanza this server serialised for a session queue (trusted, so the limits
/// only have to fit it).
pub fn read_queued(xml: &str) -> Option<Element> {
    let limits = Limits {
        max_stanza_bytes: xml.len().saturating_add(1024),
        max_depth: 1024,
        max_attrs: 1024,
    };
    franca_xml::read_document(xml.as_bytes(), limits, Some(NS_CLIENT))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Sessions;
    use jid::FullJid;

    fn session(sessions: &Sessions, jid: &str) -> (Arc<Session>, Receiver) {
        let bound = sessions.bind(FullJid::new(jid).expect("jid"));
        (bound.session, bound.rx)
    }

    fn state(s: &Arc<Session>, rx: Receiver) -> Hibernated {
        Hibernated {
            session: s.clone(),
            rx,
            sm: StreamManagement::new(10),
            timeout: Duration::from_secs(1),
        }
    }

    fn bare(s: &str) -> BareJid {
        BareJid::new(s).expect("jid")
    }

    #[test]
    fn xep0198_5_only_the_same_account_resumes_and_only_once() {
        let sessions = Sessions::new();
        let (alice, rx) = session(&sessions, "alice@localhost/phone");
        let d = Detached::new(10);
        d.register("id1", alice.clone());
        d.hibernate("id1", state(&alice, rx)).expect("room");
        assert_eq!(d.hibernated(), 1);
        assert!(matches!(
            d.resume("id1", &bare("mallory@localhost")),
            Lookup::NotFound
        ));
        assert!(matches!(
            d.resume("nope", &bare("alice@localhost")),
            Lookup::NotFound
        ));
        assert!(matches!(
            d.resume("id1", &bare("alice@localhost")),
            Lookup::Found(_)
        ));
        assert!(matches!(
            d.resume("id1", &bare("alice@localhost")),
            Lookup::NotFound
        ));
        assert_eq!(d.hibernated(), 0);
    }

    #[test]
    fn xep0198_5_resuming_a_live_stream_closes_it_with_conflict_first() {
        let sessions = Sessions::new();
        let (alice, mut rx) = session(&sessions, "alice@localhost/phone");
        let d = Detached::new(10);
        d.register("id1", alice.clone());
        assert!(!d.takeover_requested("id1"));
        assert!(matches!(
            d.resume("id1", &bare("alice@localhost")),
            Lookup::Pending
        ));
        assert!(d.takeover_requested("id1"));
        assert!(matches!(
            rx.try_recv(),
            Some(crate::Outbound::Close(StreamError::Conflict, _))
        ));
        // Asked once only, however often the new stream retries.
        assert!(matches!(
            d.resume("id1", &bare("alice@localhost")),
            Lookup::Pending
        ));
        assert!(rx.try_recv().is_none());
        d.hibernate("id1", state(&alice, rx)).expect("room");
        assert!(matches!(
            d.resume("id1", &bare("alice@localhost")),
            Lookup::Found(_)
        ));
    }

    #[test]
    fn the_registry_is_capped_and_an_old_timer_does_not_expire_a_later_hibernation() {
        let sessions = Sessions::new();
        let (a, rx_a) = session(&sessions, "alice@localhost/a");
        let (b, rx_b) = session(&sessions, "bob@localhost/b");
        let d = Detached::new(1);
        let first = d.hibernate("a", state(&a, rx_a)).expect("room");
        assert!(d.hibernate("b", state(&b, rx_b)).is_err());
        let Lookup::Found(back) = d.resume("a", &bare("alice@localhost")) else {
            panic!("not found")
        };
        let second = d.hibernate("a", *back).expect("room again");
        assert!(d.expire("a", first).is_none());
        assert!(d.expire("a", second).is_some());
        assert_eq!(d.hibernated(), 0);
        d.forget("a");
    }

    #[test]
    fn removing_an_account_ends_its_resumable_sessions() {
        let sessions = Sessions::new();
        let (a, rx_a) = session(&sessions, "alice@localhost/a");
        let (a2, _rx) = session(&sessions, "alice@localhost/b");
        let (b, rx_b) = session(&sessions, "bob@localhost/b");
        let d = Detached::new(10);
        d.hibernate("a", state(&a, rx_a)).expect("room");
        d.register("a2", a2);
        d.hibernate("b", state(&b, rx_b)).expect("room");
        assert_eq!(d.remove_account(&bare("alice@localhost")).len(), 1);
        assert!(matches!(
            d.resume("a2", &bare("alice@localhost")),
            Lookup::NotFound
        ));
        assert_eq!(d.hibernated(), 1);
    }

    #[test]
    fn queued_stanzas_read_back_as_they_were_serialised() {
        let message = Element::new("message", NS_CLIENT)
            .with_attr("to", "juliet@example.org/balcony")
            .with_child(Element::new("body", NS_CLIENT).with_text("a < b & c"));
        let xml = crate::session::serialise(&message);
        let back = read_queued(&xml).expect("parses");
        assert_eq!(back.name, "message");
        assert_eq!(back.attr("to"), Some("juliet@example.org/balcony"));
        assert_eq!(back.to_xml_in(NS_CLIENT), *xml);
        assert!(read_queued("<message><body>cut").is_none());
    }

    #[tokio::test]
    async fn xep0198_5_shared_fanout_stanzas_unacked_or_queued_bounce_as_their_own_copy() {
        let store = franca_store::open("sqlite::memory:")
            .await
            .expect("in-memory store");
        let server = Server::new(
            crate::Config::default(),
            store,
            crate::module::Modules::new(),
        );
        let bob = server
            .bind(FullJid::new("bob@localhost/desk").expect("jid"))
            .await;
        let mut bob_rx = bob.rx;
        let alice_jid = "alice@localhost/it's <me> & more";
        let alice = server.bind(FullJid::new(alice_jid).expect("jid")).await;
        let message = |id: &str| {
            Element::new("message", NS_CLIENT)
                .with_attr("from", "bob@localhost/desk")
                .with_attr("type", "chat")
                .with_attr("id", id)
                .with_child(Element::new("body", NS_CLIENT).with_text("hi"))
        };
        // One unacknowledged (XEP-0198), one still in the queue.
        let unacked = vec![Serialised::Fanout(crate::fanout::Fanout::new(&message(
            "f1",
        )))];
        assert!(
            alice
                .session
                .send_fanout(&crate::fanout::Fanout::new(&message("f2")))
        );
        server
            .end_session(&alice.session, Some(alice.rx), unacked)
            .await;
        for id in ["f1", "f2"] {
            let Some(Outbound::Xml(bounce)) = bob_rx.try_recv() else {
                panic!("no bounce for {id}")
            };
            let bounce = read_queued(&bounce).expect("parses");
            assert_eq!(bounce.attr("id"), Some(id));
            assert_eq!(bounce.attr("type"), Some("error"));
            // The copy the session would have got was addressed to it.
            assert_eq!(bounce.attr("from"), Some(alice_jid));
        }
    }

    #[tokio::test]
    async fn xep0198_5_a_hibernated_session_replaced_by_a_new_bind_ends_and_bounces_its_messages() {
        let store = franca_store::open("sqlite::memory:")
            .await
            .expect("in-memory store");
        let server = Server::new(
            crate::Config::default(),
            store,
            crate::module::Modules::new(),
        );
        let bob = server
            .bind(FullJid::new("bob@localhost/desk").expect("jid"))
            .await;
        let mut bob_rx = bob.rx;
        let old = server
            .bind(FullJid::new("alice@localhost/phone").expect("jid"))
            .await;
        let mut sm = StreamManagement::new(10);
        sm.enable(
            true,
            Some(franca_proto::sm::Resumption {
                id: "r1".into(),
                max: Some(60),
                location: None,
            }),
        )
        .expect("enabled");
        let message = Element::new("message", NS_CLIENT)
            .with_attr("from", "bob@localhost/desk")
            .with_attr("to", "alice@localhost/phone")
            .with_attr("type", "chat")
            .with_attr("id", "m1")
            .with_child(Element::new("body", NS_CLIENT).with_text("hi"));
        sm.sent(Serialised::Xml(crate::session::serialise(&message)))
            .expect("room");
        server.detached.register("r1", old.session.clone());
        server
            .detached
            .hibernate(
                "r1",
                Hibernated {
                    session: old.session.clone(),
                    rx: old.rx,
                    sm,
                    timeout: Duration::from_secs(60),
                },
            )
            .expect("room");
        // A new login binds the same resource: the sleeping session is over, and with no
        // offline storage loaded its unacknowledged message bounces.
        let _new = server
            .bind(FullJid::new("alice@localhost/phone").expect("jid"))
            .await;
        assert_eq!(server.detached.hibernated(), 0);
        let Some(Outbound::Xml(bounce)) = bob_rx.try_recv() else {
            panic!("no bounce")
        };
        assert!(bounce.contains("type='error'"), "{bounce}");
        assert!(bounce.contains("service-unavailable"), "{bounce}");
        assert!(bounce.contains("id='m1'"), "{bounce}");
    }
}

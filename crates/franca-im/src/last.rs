//! XEP-0012 Last Activity (`jabber:iq:last`): the server's uptime when asked at its own JID
//! ("Server and Component Query"), and for an account's bare JID ("Offline User Query") the
//! seconds since its last resource went offline, with the status of that unavailable presence —
//! `0` while a resource is available. Only the user and the entities allowed to see the user's
//! presence (a `from` or `both` subscription) may ask; others get `forbidden` ("Offline User
//! Query", "Security Considerations"). Queries to a full JID go to the client itself.
//!
//! Logout times are written behind: kept in memory (`Pending`) and stored by a background
//! task in one transaction every [`FLUSH_INTERVAL`] (sooner once [`MAX_BATCH`] are waiting),
//! and at shutdown. Writing each one as it happened cost a commit — an fsync — per logout,
//! the largest storage cost of a login. Queries look at the pending records first, so answers
//! are never stale. A crash loses at most the last interval's logout times, which is
//! acceptable because the data is advisory: nobody was promised it was stored (unlike a message
//! or a roster change), and what a query then answers is an older logout time or
//! `item-not-found`, both of which XEP-0012 clients must already handle.

use franca_core::util::now_us;
use franca_core::{IqRequest, IqResult, IqTarget, Module, Server, SessionEvent};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::NS_LAST;
use franca_store::{LastActivity, Store, StoreError, Subscription};
use franca_xml::Element;
use jid::BareJid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How often pending logout times are stored: the most a crash can lose.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// Most records per transaction. Reaching it wakes the writer early, so memory stays bounded by
/// about this many records while storage keeps up.
pub const MAX_BATCH: usize = 500;

pub struct Last;

/// Whether `contact` may see `user`'s presence: a `from` or `both` subscription in the user's
/// roster (RFC 6121 §2.1.2.5). A storage error counts as no.
pub(crate) async fn subscribed_from(server: &Server, user: &BareJid, contact: &BareJid) -> bool {
    match server
        .store
        .roster_item(user.as_str(), contact.as_str())
        .await
    {
        Ok(Some(item)) => matches!(item.subscription, Subscription::From | Subscription::Both),
        Ok(None) => false,
        Err(e) => {
            tracing::error!(%user, "storage error reading roster item: {e}");
            false
        }
    }
}

/// Logout times not stored yet, and the state of the task that stores them.
struct Pending {
    records: Mutex<Records>,
    /// One flush at a time, so shutdown waits for the background task's batch to finish.
    flushing: tokio::sync::Mutex<()>,
    /// Tells the background task a full batch is waiting.
    wake: Notify,
    /// Whether the background task was spawned (on the first logout, inside the runtime).
    started: AtomicBool,
    /// [`FLUSH_INTERVAL`], shorter in tests.
    interval_ms: AtomicU64,
}

#[derive(Default)]
struct Records {
    /// Bare JID → (generation, record). The generation tells a flush whether the record it
    /// stored is still the newest, so a logout during the write is not dropped with it.
    by_user: HashMap<String, (u64, LastActivity)>,
    next_generation: u64,
    /// Set at shutdown: nothing will store records any more, so logouts write through.
    stopped: bool,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            records: Mutex::new(Records::default()),
            flushing: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            started: AtomicBool::new(false),
            interval_ms: AtomicU64::new(
                u64::try_from(FLUSH_INTERVAL.as_millis()).unwrap_or(u64::MAX),
            ),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn set_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.interval_ms.store(ms, Ordering::Relaxed);
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    fn get(&self, user: &str) -> Option<LastActivity> {
        self.records().by_user.get(user).map(|(_, l)| l.clone())
    }

    /// Keep `last` until the next flush. `Err(last)` once stopped: the caller stores it.
    fn remember(&self, user: &str, last: LastActivity) -> Result<(), LastActivity> {
        let full = {
            let mut r = self.records();
            if r.stopped {
                return Err(last);
            }
            r.next_generation += 1;
            let generation = r.next_generation;
            r.by_user.insert(user.to_owned(), (generation, last));
            r.by_user.len() >= MAX_BATCH
        };
        if full {
            self.wake.notify_one();
        }
        Ok(())
    }

    fn forget(&self, user: &str) {
        self.records().by_user.remove(user);
    }

    /// Store pending records, [`MAX_BATCH`] per transaction. A record leaves memory only once
    /// it is committed, so a query meanwhile still finds it. `drain`: until none is left (at
    /// shutdown, when no more arrive); otherwise stop after a batch that was not full, leaving
    /// records that arrived meanwhile to the next interval. On a storage error the records
    /// stay for the next attempt.
    async fn flush(&self, store: &dyn Store, drain: bool) {
        let _one = self.flushing.lock().await;
        loop {
            let (generations, batch): (Vec<u64>, Vec<(String, LastActivity)>) = self
                .records()
                .by_user
                .iter()
                .take(MAX_BATCH)
                .map(|(user, (g, last))| (*g, (user.clone(), last.clone())))
                .unzip();
            if batch.is_empty() {
                return;
            }
            if let Err(e) = store.set_last_activity_many(&batch).await {
                tracing::error!(
                    records = batch.len(),
                    "storage error storing last activity (kept for the next attempt): {e}"
                );
                return;
            }
            {
                let mut r = self.records();
                for ((user, _), g) in batch.iter().zip(&generations) {
                    // Removed (account deleted) or replaced by a newer logout meanwhile.
                    if r.by_user.get(user).is_some_and(|(now, _)| now == g) {
                        r.by_user.remove(user);
                    }
                }
            }
            if !drain && batch.len() < MAX_BATCH {
                return;
            }
        }
    }

    /// Stop taking records and store every pending one.
    async fn shutdown(&self, store: &dyn Store) {
        self.records().stopped = true;
        self.flush(store, true).await;
        let left = self.records().by_user.len();
        if left > 0 {
            tracing::error!(records = left, "last activity not stored at shutdown");
        }
    }
}

/// The background task: store pending records every interval, or as soon as a batch is full.
/// Ends with the server, or at shutdown.
async fn flusher(server: Weak<Server>, pending: Arc<Pending>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(pending.interval()) => {}
            () = pending.wake.notified() => {}
        }
        let Some(server) = server.upgrade() else {
            return;
        };
        if pending.records().stopped {
            return;
        }
        pending.flush(&*server.store, false).await;
    }
}

/// One [`Pending`] per [`Server`]. The module is a unit struct (loaded as `last::Last`), so its
/// state is kept here, keyed by the server's address, as the blocking module does; the `Weak`
/// keeps that address from being reused while the entry exists, and entries of dropped servers
/// are pruned when a new server registers.
static PENDING: RwLock<Vec<(Weak<Server>, Arc<Pending>)>> = RwLock::new(Vec::new());

fn pending(server: &Arc<Server>) -> Arc<Pending> {
    let ptr = Arc::as_ptr(server);
    {
        let all = PENDING.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = all.iter().find(|(w, _)| w.as_ptr() == ptr) {
            return p.clone();
        }
    }
    let mut all = PENDING.write().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = all.iter().find(|(w, _)| w.as_ptr() == ptr) {
        return p.clone();
    }
    all.retain(|(w, _)| w.strong_count() > 0);
    let p = Arc::new(Pending::new());
    all.push((Arc::downgrade(server), p.clone()));
    p
}

fn query(seconds: u64, status: &str) -> Element {
    Element::new("query", NS_LAST)
        .with_attr("seconds", seconds.to_string())
        .with_text(status)
}

fn now_seconds() -> i64 {
    now_us().div_euclid(1_000_000)
}

#[async_trait::async_trait]
impl Module for Last {
    fn name(&self) -> &'static str {
        "last"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Server, NS_LAST), (IqTarget::Account, NS_LAST)]
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[NS_LAST]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[NS_LAST]
    }

    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        if req.is_set() || !req.payload().is_some_and(|p| p.is("query", NS_LAST)) {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        if req.to.node().is_none() {
            return Ok(Some(query(server.started.elapsed().as_secs(), "")));
        }
        let user = req.to.to_bare();
        if !req.from_self() && !subscribed_from(server, &user, &req.from.to_bare()).await {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let online = server
            .sessions
            .resources(&user)
            .iter()
            .any(|s| s.presence().available);
        if online {
            return Ok(Some(query(0, "")));
        }
        // A logout not stored yet is newer than anything stored.
        let stored = match pending(server).get(user.as_str()) {
            Some(last) => Ok(Some(last)),
            None => server.store.last_activity(user.as_str()).await,
        };
        match stored {
            Ok(Some(last)) => {
                let ago = now_seconds().saturating_sub(last.seconds).max(0);
                Ok(Some(query(ago.unsigned_abs(), &last.status)))
            }
            // Never logged out since the server started recording.
            Ok(None) => Err(StanzaError::new(Cond::ItemNotFound)),
            Err(e) => {
                tracing::error!(%user, "storage error reading last activity: {e}");
                Err(StanzaError::new(Cond::InternalServerError))
            }
        }
    }

    /// The last resource of an account went away: remember when, and the status of its
    /// unavailable presence if the presence module kept it. Stored by the next flush.
    async fn session_event(&self, server: &Arc<Server>, event: &SessionEvent) {
        let SessionEvent::Closed(session) = event else {
            return;
        };
        let user = session.bare();
        if !server.sessions.resources(&user).is_empty() {
            return;
        }
        let status = {
            let p = session.presence();
            p.last
                .as_ref()
                .filter(|l| l.attr("type") == Some("unavailable"))
                .and_then(|l| l.elements().find(|c| c.name == "status"))
                .map(Element::text)
                .unwrap_or_default()
        };
        let last = LastActivity {
            seconds: now_seconds(),
            status,
        };
        let pending = pending(server);
        let Err(last) = pending.remember(user.as_str(), last) else {
            if !pending.started.swap(true, Ordering::AcqRel) {
                tokio::spawn(flusher(Arc::downgrade(server), pending.clone()));
            }
            return;
        };
        // After shutdown's flush (a session that outlived the wait for streams to close):
        // nothing would store it later.
        match server.store.set_last_activity(user.as_str(), &last).await {
            // The account was just deleted (its sessions are closed before its data).
            Ok(()) | Err(StoreError::UnknownUser(_)) => {}
            Err(e) => tracing::error!(%user, "storage error storing last activity: {e}"),
        }
    }

    /// Drop its pending record (the closing hooks of its sessions have just made one): kept,
    /// a query or a later flush would hand the deleted account's logout time to an account
    /// created again under the same JID. A flush already under way stores nothing for it once
    /// the account is gone: the batch write skips accounts that do not exist.
    async fn user_removed(&self, server: &Arc<Server>, user: &BareJid) {
        pending(server).forget(user.as_str());
    }

    async fn shutdown(&self, server: &Arc<Server>) {
        pending(server).shutdown(&*server.store).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, server};
    use franca_proto::ns::NS_CLIENT;
    use franca_store::RosterItem;

    async fn last_server() -> Arc<Server> {
        let server = server(vec![Arc::new(Last)]).await;
        let item = RosterItem {
            jid: "romeo@localhost".into(),
            subscription: Subscription::Both,
            ..RosterItem::default()
        };
        server
            .store
            .put_roster_item("juliet@localhost", &item)
            .await
            .expect("roster");
        server
    }

    /// The status an offline query for juliet answers, or the error condition.
    async fn ask_for_juliet(romeo: &mut Client) -> Result<(u64, String), String> {
        romeo
            .send(
                "<iq type='get' id='q' to='juliet@localhost'><query xmlns='jabber:iq:last'/></iq>",
            )
            .await;
        let reply = romeo.recv().expect("reply");
        match (seconds(&reply), reply.child("query", NS_LAST)) {
            (Some(s), Some(q)) => Ok((s, q.text())),
            _ => Err(format!("{reply:?}")),
        }
    }

    /// Juliet logs in and out with `status` on her unavailable presence.
    async fn juliet_leaves(server: &Arc<Server>, status: &str) {
        let juliet = Client::online(server, "juliet@localhost/balcony", 0).await;
        {
            let mut p = juliet.session.presence();
            p.available = false;
            p.last = Some(
                Element::new("presence", NS_CLIENT)
                    .with_attr("type", "unavailable")
                    .with_child(Element::new("status", NS_CLIENT).with_text(status)),
            );
        }
        server.session_closed(&juliet.session).await;
    }

    async fn stored(server: &Server) -> Option<LastActivity> {
        server
            .store
            .last_activity("juliet@localhost")
            .await
            .expect("last")
    }

    #[tokio::test]
    async fn pending_logout_answers_queries_before_it_is_stored() {
        let server = last_server().await;
        pending(&server).set_interval(Duration::from_secs(3600));
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        juliet_leaves(&server, "Heading Home").await;
        assert_eq!(stored(&server).await, None, "written behind, not yet");
        let (ago, status) = ask_for_juliet(&mut romeo).await.expect("answer");
        assert!(ago <= 2);
        assert_eq!(status, "Heading Home");
        // A newer logout replaces the pending one.
        juliet_leaves(&server, "Again").await;
        assert_eq!(ask_for_juliet(&mut romeo).await.expect("answer").1, "Again");
    }

    #[tokio::test]
    async fn pending_logout_is_stored_after_the_interval() {
        let server = last_server().await;
        pending(&server).set_interval(Duration::from_millis(50));
        juliet_leaves(&server, "Heading Home").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stored(&server).await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "never stored");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            stored(&server).await.map(|l| l.status).as_deref(),
            Some("Heading Home")
        );
        // Stored, so no longer held in memory.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while pending(&server).get("juliet@localhost").is_some() {
            assert!(tokio::time::Instant::now() < deadline, "still pending");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn shutdown_stores_pending_logouts_and_later_ones_write_through() {
        let server = last_server().await;
        pending(&server).set_interval(Duration::from_secs(3600));
        juliet_leaves(&server, "Heading Home").await;
        assert_eq!(stored(&server).await, None);
        for m in server.modules.iter() {
            m.shutdown(&server).await;
        }
        assert_eq!(
            stored(&server).await.map(|l| l.status).as_deref(),
            Some("Heading Home")
        );
        assert!(pending(&server).get("juliet@localhost").is_none());
        // A session that outlived the shutdown wait: nothing would flush it, so it is stored
        // at once.
        juliet_leaves(&server, "Late").await;
        assert_eq!(
            stored(&server).await.map(|l| l.status).as_deref(),
            Some("Late")
        );
    }

    #[tokio::test]
    async fn removed_user_is_not_resurrected_by_a_pending_logout() {
        let server = last_server().await;
        pending(&server).set_interval(Duration::from_secs(3600));
        let juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        let juliet_jid = juliet.session.bare();
        // Removal closes her session (which makes a pending record), then deletes her data.
        server.remove_user(&juliet_jid).await.expect("remove");
        assert!(pending(&server).get("juliet@localhost").is_none());
        server
            .store
            .create_user("juliet@localhost", &[])
            .await
            .expect("create again");
        for m in server.modules.iter() {
            m.shutdown(&server).await;
        }
        assert_eq!(stored(&server).await, None, "the new account has no past");
        let item = RosterItem {
            jid: "romeo@localhost".into(),
            subscription: Subscription::Both,
            ..RosterItem::default()
        };
        server
            .store
            .put_roster_item("juliet@localhost", &item)
            .await
            .expect("roster");
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        let answer = ask_for_juliet(&mut romeo)
            .await
            .expect_err("nothing to tell");
        assert!(answer.contains("item-not-found"), "{answer}");
    }

    #[tokio::test]
    async fn a_batch_skips_an_account_removed_while_it_was_pending() {
        // The flush took the record before the account went: the batch write must not fail
        // (keeping the others pending forever) nor bring the account back.
        let server = last_server().await;
        let store = &server.store;
        let p = Pending::new();
        let at = LastActivity {
            seconds: 1,
            status: String::new(),
        };
        p.remember("juliet@localhost", at.clone()).expect("open");
        p.remember("romeo@localhost", at.clone()).expect("open");
        store.remove_user("juliet@localhost").await.expect("remove");
        p.flush(&**store, false).await;
        assert!(p.get("romeo@localhost").is_none(), "the batch was written");
        assert_eq!(
            store.last_activity("romeo@localhost").await.expect("read"),
            Some(at)
        );
        assert!(!store.user_exists("juliet@localhost").await.expect("read"));
    }

    fn seconds(reply: &Element) -> Option<u64> {
        reply.child("query", NS_LAST)?.attr("seconds")?.parse().ok()
    }

    #[tokio::test]
    async fn xep0012_server_query_is_uptime() {
        let server = last_server().await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<iq type='get' id='last3' to='localhost'><query xmlns='jabber:iq:last'/></iq>")
            .await;
        let reply = romeo.recv().expect("reply");
        assert_eq!(reply.attr("type"), Some("result"));
        assert!(seconds(&reply).is_some_and(|s| s < 60), "{reply:?}");
    }

    #[tokio::test]
    async fn xep0012_offline_user_query_needs_a_presence_subscription() {
        let server = last_server().await;
        let mut nurse = Client::online(&server, "nurse@localhost/kitchen", 0).await;
        nurse
            .send("<iq type='get' id='last1' to='juliet@localhost'><query xmlns='jabber:iq:last'/></iq>")
            .await;
        nurse.expect(
            "<iq type='error' id='last1' from='juliet@localhost' to='nurse@localhost/kitchen'>
               <error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0012_offline_user_query_online_user_is_zero() {
        let server = last_server().await;
        let _juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<iq type='get' id='last1' to='juliet@localhost'><query xmlns='jabber:iq:last'/></iq>")
            .await;
        romeo.expect(
            "<iq type='result' id='last1' from='juliet@localhost' to='romeo@localhost/orchard'>
               <query xmlns='jabber:iq:last' seconds='0'/>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0012_offline_user_query_after_logout_has_time_and_status() {
        let server = last_server().await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send(
                "<iq type='get' id='n1' to='juliet@localhost'><query xmlns='jabber:iq:last'/></iq>",
            )
            .await;
        romeo.expect(
            "<iq type='error' id='n1' from='juliet@localhost' to='romeo@localhost/orchard'>
               <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );

        let one = Client::online(&server, "juliet@localhost/balcony", 0).await;
        let two = Client::online(&server, "juliet@localhost/chamber", 0).await;
        server.session_closed(&one.session).await;
        assert_eq!(
            server
                .store
                .last_activity("juliet@localhost")
                .await
                .expect("last"),
            None
        );
        two.session.presence().available = false;
        two.session.presence().last = Some(
            Element::new("presence", NS_CLIENT)
                .with_attr("type", "unavailable")
                .with_child(Element::new("status", NS_CLIENT).with_text("Heading Home")),
        );
        server.session_closed(&two.session).await;

        romeo
            .send("<iq type='get' id='last2' to='juliet@localhost'><query xmlns='jabber:iq:last'/></iq>")
            .await;
        let reply = romeo.recv().expect("reply");
        assert!(seconds(&reply).is_some_and(|s| s <= 2), "{reply:?}");
        assert_eq!(
            reply.child("query", NS_LAST).map(Element::text).as_deref(),
            Some("Heading Home")
        );
    }
}

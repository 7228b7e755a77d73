//! [`RosterCache`]: a write-through cache of whole rosters in front of another [`Store`].
//! Presence reads the user's roster on every presence stanza, and roster get, blocking and
//! presence each read it again at login; without the cache every one of those reads is a
//! database round trip (for SQLite, a hop to sqlx's worker thread and back). The cache answers
//! them from memory and writes still go to the database first, so nothing acknowledged is lost.
//!
//! The cache only knows about changes made through it. That is enough because the server is the
//! only process that changes rosters or removes accounts while it runs: `franca user remove`
//! asks a running server (over the control socket) to remove the account itself, and removes
//! it directly in the database only when no server answers. `franca user add` may create an
//! account behind the server's back, but a cached roster of an account that did not exist is
//! the empty, version-0 roster a new account has anyway. So no cross-process invalidation.
//! (The gap: a server whose control socket could not be bound — it warns at start — lets the
//! CLI remove accounts directly; a removed and re-added account could then be served its old
//! roster until its first roster write, whose version would not follow the cached one.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

use crate::{
    ArchivePage, ArchivePrefs, ArchiveQuery, ArchivedMessage, FastToken, ImportedAccount,
    LastActivity, MucAffiliation, MucRoom, OfflineMessage, PubsubItem, PubsubNode,
    PushRegistration, Result, Roster, RosterItem, ScramCredentials, Store,
};

/// A [`Store`] that keeps up to `capacity` users' rosters in memory and passes everything else
/// to the store it wraps.
///
/// - `roster`/`roster_shared` load a missing roster once (concurrent misses for one user wait
///   for the first load instead of all querying) and keep it. `roster_item` and `roster_count`
///   are answered from memory when the roster is there, and otherwise go to the inner store
///   *without* loading the roster: they are also asked about other users (a contact's roster
///   when a probe or subscription arrives), and loading whole rosters of offline users for a
///   single item would crowd out the online ones.
/// - Roster writes go to the inner store first, then the cached copy is updated with the version
///   it returned. Loads and writes of one user hold that user's lock, so two writers are
///   serialised and a load cannot put back a roster older than a write that overtook it. If the
///   inner write fails, or returns a version that does not follow the cached one, the cached
///   roster is dropped rather than guessed at.
/// - `remove_user` and `create_user` drop the user's roster, so a re-created account starts
///   from what the database says.
///
/// Items are kept sorted by JID (byte order) so single items are found by binary search; the
/// order `roster()` returns is therefore that, not the database's collation order.
pub struct RosterCache {
    inner: Arc<dyn Store>,
    /// At least 1: the roster being loaded always gets in.
    capacity: usize,
    /// One lock for the whole table: it is held only for map operations and `Arc` clones (copies
    /// of rosters are made outside it), never across an `.await`.
    table: Mutex<Table>,
}

/// Per-user state. An entry exists while the user's roster is cached, or while an operation
/// holds or waits for the user's lock (then `roster` may be `None`).
struct Entry {
    /// Serialises loads and writes of this user's roster. Held across the inner store's
    /// `.await`, hence tokio's mutex.
    lock: Arc<tokio::sync::Mutex<()>>,
    roster: Option<Arc<Roster>>,
    /// Second-chance bit for the clock eviction: set by every use, cleared by the passing hand.
    referenced: bool,
    /// Index of this user's key in `Table::ring`.
    slot: usize,
}

impl Entry {
    /// Nobody holds or waits for the lock: only the table's own `Arc` is left. Clones are made
    /// only under the table lock, so this cannot change while the caller holds it.
    fn idle(&self) -> bool {
        Arc::strong_count(&self.lock) == 1
    }
}

#[derive(Default)]
struct Table {
    entries: HashMap<Arc<str>, Entry>,
    /// The keys of `entries` in no meaningful order, for the clock hand to walk.
    ring: Vec<Arc<str>>,
    hand: usize,
    /// Entries whose `roster` is `Some`: what `capacity` bounds.
    cached: usize,
}

/// What a successful write does to the cached copy.
enum Update {
    Keep,
    Replace(Roster),
    /// The returned version does not follow the cached one: someone else changed the roster.
    Drop,
}

impl Table {
    fn cached(&mut self, user: &str) -> Option<Arc<Roster>> {
        let entry = self.entries.get_mut(user)?;
        let roster = entry.roster.clone()?;
        entry.referenced = true;
        Some(roster)
    }

    /// The user's lock, adding an entry (without a roster) if there is none.
    fn lock_of(&mut self, user: &str) -> (Arc<str>, Arc<tokio::sync::Mutex<()>>) {
        if let Some((key, entry)) = self.entries.get_key_value(user) {
            return (key.clone(), entry.lock.clone());
        }
        let key: Arc<str> = Arc::from(user);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        self.entries.insert(
            key.clone(),
            Entry {
                lock: lock.clone(),
                roster: None,
                referenced: false,
                slot: self.ring.len(),
            },
        );
        self.ring.push(key.clone());
        (key, lock)
    }

    fn set_roster(&mut self, user: &str, roster: Option<Arc<Roster>>) {
        let Some(entry) = self.entries.get_mut(user) else {
            return;
        };
        match (entry.roster.is_some(), roster.is_some()) {
            (false, true) => self.cached += 1,
            (true, false) => self.cached -= 1,
            _ => {}
        }
        entry.referenced = roster.is_some();
        entry.roster = roster;
        if entry.roster.is_none() && entry.idle() {
            self.remove(user);
        }
    }

    fn remove(&mut self, user: &str) {
        let Some(entry) = self.entries.remove(user) else {
            return;
        };
        if entry.roster.is_some() {
            self.cached -= 1;
        }
        self.ring.swap_remove(entry.slot);
        if let Some(moved) = self.ring.get(entry.slot)
            && let Some(e) = self.entries.get_mut(moved)
        {
            e.slot = entry.slot;
        }
        if self.hand >= self.ring.len() {
            self.hand = 0;
        }
    }

    /// Drop cached rosters (clock order: unused since the hand last passed) until one more fits
    /// under `capacity`. `keep` is the user about to be filled in. An evicted entry that is in
    /// use keeps its lock; the last user of it removes it.
    fn make_room(&mut self, keep: &str, capacity: usize) {
        // Two turns of the hand clear every second-chance bit and then find a victim; entries
        // left without a roster by a cancelled operation are swept on the way.
        let mut steps = 2 * self.ring.len() + 1;
        while self.cached >= capacity && steps > 0 && !self.ring.is_empty() {
            steps -= 1;
            if self.hand >= self.ring.len() {
                self.hand = 0;
            }
            let key = self.ring[self.hand].clone();
            let Some(entry) = self.entries.get_mut(&key) else {
                self.hand += 1;
                continue;
            };
            if &*key == keep {
                self.hand += 1;
            } else if entry.roster.is_none() {
                if entry.idle() {
                    self.remove(&key); // the hand now points at the entry moved into the slot
                } else {
                    self.hand += 1;
                }
            } else if entry.referenced {
                entry.referenced = false;
                self.hand += 1;
            } else {
                self.set_roster(&key, None);
                if self.entries.contains_key(&key) {
                    self.hand += 1;
                }
            }
        }
    }
}

/// The held lock of one user. Dropping it (also when the operation's future is cancelled)
/// removes the user's entry if it has no roster and nobody else wants the lock.
struct UserLock<'a> {
    cache: &'a RosterCache,
    user: Arc<str>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for UserLock<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut table = self.cache.table();
        if let Some(entry) = table.entries.get(&*self.user)
            && entry.roster.is_none()
            && entry.idle()
        {
            table.remove(&self.user);
        }
    }
}

impl RosterCache {
    /// Cache up to `capacity` users' rosters (at least one) in front of `inner`.
    pub fn new(inner: Arc<dyn Store>, capacity: usize) -> RosterCache {
        RosterCache {
            inner,
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    /// Drop `user`'s cached roster (e.g. when their last session closes); the next read loads
    /// it again. Never needed for correctness, only to free memory early.
    pub fn forget(&self, user: &str) {
        self.table().set_roster(user, None);
    }

    /// How many users' rosters are cached now.
    pub fn cached_users(&self) -> usize {
        self.table().cached
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Only this module's bookkeeping runs under the lock, never caller code, and none of it
        // stops halfway through a change; so a poisoned lock still guards a consistent table,
        // and the cache keeps working rather than failing every later call.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn lock_user(&self, user: &str) -> UserLock<'_> {
        let (key, lock) = self.table().lock_of(user);
        let mut held = UserLock {
            cache: self,
            user: key,
            guard: None,
        };
        held.guard = Some(lock.lock_owned().await);
        held
    }

    /// The user's roster, from memory or loaded (once) from the inner store.
    async fn load(&self, user: &str) -> Result<Arc<Roster>> {
        if let Some(roster) = self.table().cached(user) {
            return Ok(roster);
        }
        let _held = self.lock_user(user).await;
        // Whoever held the lock before us may have loaded it.
        if let Some(roster) = self.table().cached(user) {
            return Ok(roster);
        }
        let (version, mut items) = self.inner.roster(user).await?;
        items.sort_unstable_by(|a, b| a.jid.cmp(&b.jid));
        let roster = Arc::new(Roster { version, items });
        let mut table = self.table();
        table.make_room(user, self.capacity);
        table.set_roster(user, Some(roster.clone()));
        Ok(roster)
    }

    /// Run a roster write under the user's lock, then apply `update` (given the cached roster
    /// and the write's result) to the cached copy, if there is one.
    async fn write<T>(
        &self,
        user: &str,
        op: impl Future<Output = Result<T>>,
        update: impl FnOnce(&Roster, &T) -> Update,
    ) -> Result<T> {
        let _held = self.lock_user(user).await;
        let result = op.await;
        let Ok(value) = &result else {
            self.table().set_roster(user, None);
            return result;
        };
        // Holding the user's lock, only `forget` and eviction can touch the entry meanwhile,
        // and they only clear it; the new copy is built outside the table lock.
        let Some(old) = self
            .table()
            .entries
            .get(user)
            .and_then(|e| e.roster.clone())
        else {
            return result;
        };
        let new = match update(&old, value) {
            Update::Keep => return result,
            Update::Replace(roster) => Some(Arc::new(roster)),
            Update::Drop => {
                tracing::warn!(
                    user,
                    "roster version out of step with the cache (changed outside this server?); \
                     reloading it"
                );
                None
            }
        };
        let mut table = self.table();
        if table
            .entries
            .get(user)
            .and_then(|e| e.roster.as_ref())
            .is_some_and(|r| Arc::ptr_eq(r, &old))
        {
            table.set_roster(user, new);
        }
        result
    }

    /// Drop the user's roster after `op`, whatever its outcome.
    async fn invalidate<T>(&self, user: &str, op: impl Future<Output = Result<T>>) -> Result<T> {
        let _held = self.lock_user(user).await;
        let result = op.await;
        self.table().set_roster(user, None);
        result
    }
}

fn position(items: &[RosterItem], contact: &str) -> std::result::Result<usize, usize> {
    items.binary_search_by(|i| i.jid.as_str().cmp(contact))
}

fn with_item(old: &Roster, item: &RosterItem, version: i64) -> Update {
    if version <= old.version {
        return Update::Drop;
    }
    let mut items = old.items.clone();
    match position(&items, &item.jid) {
        Ok(i) => items[i] = item.clone(),
        Err(i) => items.insert(i, item.clone()),
    }
    Update::Replace(Roster { version, items })
}

fn without_item(old: &Roster, contact: &str, version: i64) -> Update {
    match position(&old.items, contact) {
        Ok(i) if version > old.version => {
            let mut items = old.items.clone();
            items.remove(i);
            Update::Replace(Roster { version, items })
        }
        // Absent here, and the database did not change either.
        Err(_) if version == old.version => Update::Keep,
        _ => Update::Drop,
    }
}

#[async_trait::async_trait]
impl Store for RosterCache {
    async fn create_user(&self, user: &str, creds: &[ScramCredentials]) -> Result<()> {
        self.invalidate(user, self.inner.create_user(user, creds))
            .await
    }

    async fn set_credentials(&self, user: &str, creds: &[ScramCredentials]) -> Result<()> {
        self.inner.set_credentials(user, creds).await
    }

    async fn import_accounts(&self, accounts: &[ImportedAccount]) -> Result<u32> {
        // Only accounts that did not exist are written, and a cached roster exists only for
        // an account that does; dropping them all afterwards is simply the safe side.
        let created = self.inner.import_accounts(accounts).await;
        for a in accounts {
            self.forget(&a.jid);
        }
        created
    }

    async fn credentials(&self, user: &str, hash: &str) -> Result<Option<ScramCredentials>> {
        self.inner.credentials(user, hash).await
    }

    async fn user_exists(&self, user: &str) -> Result<bool> {
        self.inner.user_exists(user).await
    }

    async fn remove_user(&self, user: &str) -> Result<()> {
        self.invalidate(user, self.inner.remove_user(user)).await
    }

    async fn list_users(&self, domain: Option<&str>) -> Result<Vec<String>> {
        self.inner.list_users(domain).await
    }

    async fn roster(&self, user: &str) -> Result<(i64, Vec<RosterItem>)> {
        let roster = self.load(user).await?;
        Ok((roster.version, roster.items.clone()))
    }

    async fn roster_shared(&self, user: &str) -> Result<Arc<Roster>> {
        self.load(user).await
    }

    async fn roster_item(&self, user: &str, contact: &str) -> Result<Option<RosterItem>> {
        let cached = self.table().cached(user);
        match cached {
            Some(roster) => Ok(position(&roster.items, contact)
                .ok()
                .map(|i| roster.items[i].clone())),
            None => self.inner.roster_item(user, contact).await,
        }
    }

    async fn roster_count(&self, user: &str) -> Result<u32> {
        let cached = self.table().cached(user);
        match cached {
            Some(roster) => Ok(u32::try_from(roster.items.len()).unwrap_or(u32::MAX)),
            None => self.inner.roster_count(user).await,
        }
    }

    async fn put_roster_item(&self, user: &str, item: &RosterItem) -> Result<i64> {
        self.write(user, self.inner.put_roster_item(user, item), |old, v| {
            with_item(old, item, *v)
        })
        .await
    }

    async fn remove_roster_item(&self, user: &str, contact: &str) -> Result<i64> {
        self.write(
            user,
            self.inner.remove_roster_item(user, contact),
            |old, v| without_item(old, contact, *v),
        )
        .await
    }

    async fn push_offline(&self, user: &str, stamp_us: i64, xml: &str, quota: u32) -> Result<()> {
        self.inner.push_offline(user, stamp_us, xml, quota).await
    }

    async fn offline(&self, user: &str) -> Result<Vec<OfflineMessage>> {
        self.inner.offline(user).await
    }

    async fn delete_offline(&self, user: &str, ids: &[i64]) -> Result<()> {
        self.inner.delete_offline(user, ids).await
    }

    async fn offline_count(&self, user: &str) -> Result<u32> {
        self.inner.offline_count(user).await
    }

    async fn vcard(&self, user: &str) -> Result<Option<String>> {
        self.inner.vcard(user).await
    }

    async fn set_vcard(&self, user: &str, xml: &str) -> Result<()> {
        self.inner.set_vcard(user, xml).await
    }

    async fn blocklist(&self, user: &str) -> Result<Vec<String>> {
        self.inner.blocklist(user).await
    }

    async fn block(&self, user: &str, jids: &[String]) -> Result<()> {
        self.inner.block(user, jids).await
    }

    async fn unblock(&self, user: &str, jids: &[String]) -> Result<()> {
        self.inner.unblock(user, jids).await
    }

    async fn last_activity(&self, user: &str) -> Result<Option<LastActivity>> {
        self.inner.last_activity(user).await
    }

    async fn set_last_activity(&self, user: &str, last: &LastActivity) -> Result<()> {
        self.inner.set_last_activity(user, last).await
    }

    async fn set_last_activity_many(&self, records: &[(String, LastActivity)]) -> Result<()> {
        // Forwarded, not left to the trait's default: the inner store batches it in one commit.
        self.inner.set_last_activity_many(records).await
    }

    async fn put_fast_token(&self, user: &str, token: &FastToken, now_us: i64) -> Result<()> {
        self.inner.put_fast_token(user, token, now_us).await
    }

    async fn fast_tokens(&self, user: &str, client_id: &str) -> Result<Vec<FastToken>> {
        self.inner.fast_tokens(user, client_id).await
    }

    async fn use_fast_token(
        &self,
        user: &str,
        client_id: &str,
        hash: &[u8],
        count: Option<u32>,
        invalidate: bool,
        now_us: i64,
    ) -> Result<bool> {
        self.inner
            .use_fast_token(user, client_id, hash, count, invalidate, now_us)
            .await
    }

    async fn revoke_fast_tokens(&self, user: &str) -> Result<u64> {
        self.inner.revoke_fast_tokens(user).await
    }

    async fn put_push_registration(
        &self,
        user: &str,
        reg: &PushRegistration,
        max: u32,
    ) -> Result<bool> {
        self.inner.put_push_registration(user, reg, max).await
    }

    async fn push_registrations(&self, user: &str) -> Result<Vec<PushRegistration>> {
        self.inner.push_registrations(user).await
    }

    async fn remove_push_registrations(
        &self,
        user: &str,
        jid: &str,
        node: Option<&str>,
    ) -> Result<u64> {
        self.inner.remove_push_registrations(user, jid, node).await
    }

    // ---- pubsub/pep
    async fn pubsub_nodes(&self, owner: &str) -> Result<Vec<PubsubNode>> {
        self.inner.pubsub_nodes(owner).await
    }
    async fn pubsub_node(&self, owner: &str, node: &str) -> Result<Option<PubsubNode>> {
        self.inner.pubsub_node(owner, node).await
    }
    async fn put_pubsub_node(
        &self,
        owner: &str,
        node: &PubsubNode,
        max_nodes: u32,
    ) -> Result<bool> {
        self.inner.put_pubsub_node(owner, node, max_nodes).await
    }
    async fn delete_pubsub_node(&self, owner: &str, node: &str) -> Result<bool> {
        self.inner.delete_pubsub_node(owner, node).await
    }
    async fn publish_pubsub_item(
        &self,
        owner: &str,
        node: &str,
        item: &PubsubItem,
        max_items: u32,
    ) -> Result<bool> {
        self.inner
            .publish_pubsub_item(owner, node, item, max_items)
            .await
    }
    async fn pubsub_items(
        &self,
        owner: &str,
        node: &str,
        ids: &[String],
        max: u32,
    ) -> Result<Vec<PubsubItem>> {
        self.inner.pubsub_items(owner, node, ids, max).await
    }
    async fn retract_pubsub_item(&self, owner: &str, node: &str, id: &str) -> Result<bool> {
        self.inner.retract_pubsub_item(owner, node, id).await
    }
    async fn purge_pubsub_node(&self, owner: &str, node: &str) -> Result<u64> {
        self.inner.purge_pubsub_node(owner, node).await
    }

    // ---- mam: archives are not cached; forwarded as they are.
    async fn archive_messages(&self, messages: &[ArchivedMessage]) -> Result<()> {
        self.inner.archive_messages(messages).await
    }
    async fn archive_query(&self, owner: &str, query: &ArchiveQuery) -> Result<ArchivePage> {
        self.inner.archive_query(owner, query).await
    }
    async fn archive_has(&self, owner: &str, id: &str) -> Result<bool> {
        self.inner.archive_has(owner, id).await
    }
    async fn archive_expire(&self, before_us: i64, limit: u32) -> Result<u64> {
        self.inner.archive_expire(before_us, limit).await
    }
    async fn archive_expire_owner(&self, owner: &str, before_us: i64, limit: u32) -> Result<u64> {
        self.inner
            .archive_expire_owner(owner, before_us, limit)
            .await
    }
    async fn archive_remove(&self, owner: &str) -> Result<u64> {
        self.inner.archive_remove(owner).await
    }
    async fn archive_prefs(&self, user: &str) -> Result<Option<ArchivePrefs>> {
        self.inner.archive_prefs(user).await
    }
    async fn set_archive_prefs(&self, user: &str, prefs: &ArchivePrefs) -> Result<()> {
        self.inner.set_archive_prefs(user, prefs).await
    }

    async fn muc_rooms(&self, service: &str) -> Result<Vec<MucRoom>> {
        self.inner.muc_rooms(service).await
    }

    async fn put_muc_room(&self, service: &str, room: &MucRoom, affiliations: bool) -> Result<()> {
        self.inner.put_muc_room(service, room, affiliations).await
    }

    async fn set_muc_affiliations(&self, room: &str, changes: &[MucAffiliation]) -> Result<()> {
        self.inner.set_muc_affiliations(room, changes).await
    }

    async fn remove_muc_room(&self, room: &str) -> Result<bool> {
        self.inner.remove_muc_room(room).await
    }

    async fn pubsub_subscribers(&self, owner: &str, node: &str) -> Result<Vec<String>> {
        self.inner.pubsub_subscribers(owner, node).await
    }
    async fn subscribe_pubsub(&self, owner: &str, node: &str, jid: &str, max: u32) -> Result<bool> {
        self.inner.subscribe_pubsub(owner, node, jid, max).await
    }
    async fn unsubscribe_pubsub(&self, owner: &str, node: &str, jid: &str) -> Result<bool> {
        self.inner.unsubscribe_pubsub(owner, node, jid).await
    }

    async fn federation_barred(&self, user: &str) -> Result<bool> {
        self.inner.federation_barred(user).await
    }

    async fn set_federation_barred(&self, user: &str, barred: bool) -> Result<()> {
        self.inner.set_federation_barred(user, barred).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::StoreError;

    /// An inner store that counts roster reads, can be told to fail roster writes, and can be
    /// slowed down so concurrent misses overlap.
    struct Counting {
        inner: Arc<dyn Store>,
        roster_loads: AtomicUsize,
        item_reads: AtomicUsize,
        fail_writes: AtomicBool,
        slow_loads: AtomicBool,
    }

    impl Counting {
        fn loads(&self) -> usize {
            self.roster_loads.load(Ordering::SeqCst)
        }
        fn fail(&self) -> Result<()> {
            if self.fail_writes.load(Ordering::SeqCst) {
                return Err(StoreError::Database("injected failure".to_owned()));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl Store for Counting {
        async fn create_user(&self, user: &str, creds: &[ScramCredentials]) -> Result<()> {
            self.inner.create_user(user, creds).await
        }
        async fn set_credentials(&self, user: &str, creds: &[ScramCredentials]) -> Result<()> {
            self.inner.set_credentials(user, creds).await
        }
        async fn credentials(&self, user: &str, hash: &str) -> Result<Option<ScramCredentials>> {
            self.inner.credentials(user, hash).await
        }
        async fn user_exists(&self, user: &str) -> Result<bool> {
            self.inner.user_exists(user).await
        }
        async fn remove_user(&self, user: &str) -> Result<()> {
            self.inner.remove_user(user).await
        }
        async fn list_users(&self, domain: Option<&str>) -> Result<Vec<String>> {
            self.inner.list_users(domain).await
        }
        async fn roster(&self, user: &str) -> Result<(i64, Vec<RosterItem>)> {
            self.roster_loads.fetch_add(1, Ordering::SeqCst);
            if self.slow_loads.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.inner.roster(user).await
        }
        async fn roster_item(&self, user: &str, contact: &str) -> Result<Option<RosterItem>> {
            self.item_reads.fetch_add(1, Ordering::SeqCst);
            self.inner.roster_item(user, contact).await
        }
        async fn roster_count(&self, user: &str) -> Result<u32> {
            self.item_reads.fetch_add(1, Ordering::SeqCst);
            self.inner.roster_count(user).await
        }
        async fn put_roster_item(&self, user: &str, item: &RosterItem) -> Result<i64> {
            self.fail()?;
            self.inner.put_roster_item(user, item).await
        }
        async fn remove_roster_item(&self, user: &str, contact: &str) -> Result<i64> {
            self.fail()?;
            self.inner.remove_roster_item(user, contact).await
        }
        async fn push_offline(&self, u: &str, stamp: i64, xml: &str, quota: u32) -> Result<()> {
            self.inner.push_offline(u, stamp, xml, quota).await
        }
        async fn offline(&self, user: &str) -> Result<Vec<OfflineMessage>> {
            self.inner.offline(user).await
        }
        async fn delete_offline(&self, user: &str, ids: &[i64]) -> Result<()> {
            self.inner.delete_offline(user, ids).await
        }
        async fn offline_count(&self, user: &str) -> Result<u32> {
            self.inner.offline_count(user).await
        }
        async fn vcard(&self, user: &str) -> Result<Option<String>> {
            self.inner.vcard(user).await
        }
        async fn set_vcard(&self, user: &str, xml: &str) -> Result<()> {
            self.inner.set_vcard(user, xml).await
        }
        async fn blocklist(&self, user: &str) -> Result<Vec<String>> {
            self.inner.blocklist(user).await
        }
        async fn block(&self, user: &str, jids: &[String]) -> Result<()> {
            self.inner.block(user, jids).await
        }
        async fn unblock(&self, user: &str, jids: &[String]) -> Result<()> {
            self.inner.unblock(user, jids).await
        }
        async fn last_activity(&self, user: &str) -> Result<Option<LastActivity>> {
            self.inner.last_activity(user).await
        }
        async fn set_last_activity(&self, user: &str, last: &LastActivity) -> Result<()> {
            self.inner.set_last_activity(user, last).await
        }
        async fn set_last_activity_many(&self, records: &[(String, LastActivity)]) -> Result<()> {
            self.inner.set_last_activity_many(records).await
        }
        async fn put_fast_token(&self, u: &str, t: &FastToken, now: i64) -> Result<()> {
            self.inner.put_fast_token(u, t, now).await
        }
        async fn fast_tokens(&self, user: &str, client_id: &str) -> Result<Vec<FastToken>> {
            self.inner.fast_tokens(user, client_id).await
        }
        async fn use_fast_token(
            &self,
            user: &str,
            client_id: &str,
            hash: &[u8],
            count: Option<u32>,
            invalidate: bool,
            now_us: i64,
        ) -> Result<bool> {
            self.inner
                .use_fast_token(user, client_id, hash, count, invalidate, now_us)
                .await
        }
        async fn revoke_fast_tokens(&self, user: &str) -> Result<u64> {
            self.inner.revoke_fast_tokens(user).await
        }
        async fn put_push_registration(
            &self,
            user: &str,
            reg: &PushRegistration,
            max: u32,
        ) -> Result<bool> {
            self.inner.put_push_registration(user, reg, max).await
        }

        async fn push_registrations(&self, user: &str) -> Result<Vec<PushRegistration>> {
            self.inner.push_registrations(user).await
        }

        async fn remove_push_registrations(
            &self,
            user: &str,
            jid: &str,
            node: Option<&str>,
        ) -> Result<u64> {
            self.inner.remove_push_registrations(user, jid, node).await
        }
        // ---- pubsub/pep
        async fn pubsub_nodes(&self, owner: &str) -> Result<Vec<PubsubNode>> {
            self.inner.pubsub_nodes(owner).await
        }
        async fn pubsub_node(&self, owner: &str, node: &str) -> Result<Option<PubsubNode>> {
            self.inner.pubsub_node(owner, node).await
        }
        async fn put_pubsub_node(
            &self,
            owner: &str,
            node: &PubsubNode,
            max_nodes: u32,
        ) -> Result<bool> {
            self.inner.put_pubsub_node(owner, node, max_nodes).await
        }
        async fn delete_pubsub_node(&self, owner: &str, node: &str) -> Result<bool> {
            self.inner.delete_pubsub_node(owner, node).await
        }
        async fn publish_pubsub_item(
            &self,
            owner: &str,
            node: &str,
            item: &PubsubItem,
            max_items: u32,
        ) -> Result<bool> {
            self.inner
                .publish_pubsub_item(owner, node, item, max_items)
                .await
        }
        async fn pubsub_items(
            &self,
            owner: &str,
            node: &str,
            ids: &[String],
            max: u32,
        ) -> Result<Vec<PubsubItem>> {
            self.inner.pubsub_items(owner, node, ids, max).await
        }
        async fn retract_pubsub_item(&self, owner: &str, node: &str, id: &str) -> Result<bool> {
            self.inner.retract_pubsub_item(owner, node, id).await
        }
        async fn purge_pubsub_node(&self, owner: &str, node: &str) -> Result<u64> {
            self.inner.purge_pubsub_node(owner, node).await
        }
        // ---- mam: archives are not cached; forwarded as they are.
        async fn archive_messages(&self, messages: &[ArchivedMessage]) -> Result<()> {
            self.inner.archive_messages(messages).await
        }
        async fn archive_query(&self, owner: &str, query: &ArchiveQuery) -> Result<ArchivePage> {
            self.inner.archive_query(owner, query).await
        }
        async fn archive_has(&self, owner: &str, id: &str) -> Result<bool> {
            self.inner.archive_has(owner, id).await
        }
        async fn archive_expire(&self, before_us: i64, limit: u32) -> Result<u64> {
            self.inner.archive_expire(before_us, limit).await
        }
        async fn archive_expire_owner(
            &self,
            owner: &str,
            before_us: i64,
            limit: u32,
        ) -> Result<u64> {
            self.inner
                .archive_expire_owner(owner, before_us, limit)
                .await
        }
        async fn archive_remove(&self, owner: &str) -> Result<u64> {
            self.inner.archive_remove(owner).await
        }
        async fn archive_prefs(&self, user: &str) -> Result<Option<ArchivePrefs>> {
            self.inner.archive_prefs(user).await
        }
        async fn set_archive_prefs(&self, user: &str, prefs: &ArchivePrefs) -> Result<()> {
            self.inner.set_archive_prefs(user, prefs).await
        }

        async fn muc_rooms(&self, service: &str) -> Result<Vec<MucRoom>> {
            self.inner.muc_rooms(service).await
        }

        async fn put_muc_room(
            &self,
            service: &str,
            room: &MucRoom,
            affiliations: bool,
        ) -> Result<()> {
            self.inner.put_muc_room(service, room, affiliations).await
        }

        async fn set_muc_affiliations(&self, room: &str, changes: &[MucAffiliation]) -> Result<()> {
            self.inner.set_muc_affiliations(room, changes).await
        }

        async fn remove_muc_room(&self, room: &str) -> Result<bool> {
            self.inner.remove_muc_room(room).await
        }

        async fn pubsub_subscribers(&self, owner: &str, node: &str) -> Result<Vec<String>> {
            self.inner.pubsub_subscribers(owner, node).await
        }
        async fn subscribe_pubsub(
            &self,
            owner: &str,
            node: &str,
            jid: &str,
            max: u32,
        ) -> Result<bool> {
            self.inner.subscribe_pubsub(owner, node, jid, max).await
        }
        async fn unsubscribe_pubsub(&self, owner: &str, node: &str, jid: &str) -> Result<bool> {
            self.inner.unsubscribe_pubsub(owner, node, jid).await
        }
        async fn federation_barred(&self, user: &str) -> Result<bool> {
            self.inner.federation_barred(user).await
        }
        async fn set_federation_barred(&self, user: &str, barred: bool) -> Result<()> {
            self.inner.set_federation_barred(user, barred).await
        }

        async fn close(&self) {
            self.inner.close().await;
        }
    }

    async fn setup(capacity: usize) -> (Arc<Counting>, RosterCache) {
        let counting = Arc::new(Counting {
            inner: crate::sql::open("sqlite::memory:").await.unwrap(),
            roster_loads: AtomicUsize::new(0),
            item_reads: AtomicUsize::new(0),
            fail_writes: AtomicBool::new(false),
            slow_loads: AtomicBool::new(false),
        });
        let cache = RosterCache::new(counting.clone(), capacity);
        (counting, cache)
    }

    fn item(jid: &str) -> RosterItem {
        RosterItem {
            jid: jid.to_owned(),
            groups: vec!["G".to_owned()],
            ..RosterItem::default()
        }
    }

    const U: &str = "u@a.example";

    #[tokio::test]
    async fn hit_after_miss_does_not_query() {
        let (inner, cache) = setup(10).await;
        cache.create_user(U, &[]).await.unwrap();
        inner
            .inner
            .put_roster_item(U, &item("b@b.example"))
            .await
            .unwrap();
        inner
            .inner
            .put_roster_item(U, &item("a@b.example"))
            .await
            .unwrap();

        let first = cache.roster_shared(U).await.unwrap();
        assert_eq!(inner.loads(), 1);
        let again = cache.roster_shared(U).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "a hit hands out the same Arc");
        let (v, items) = cache.roster(U).await.unwrap();
        assert_eq!((v, items.len()), (first.version, 2));
        assert_eq!(
            cache.roster_item(U, "a@b.example").await.unwrap(),
            Some(item("a@b.example"))
        );
        assert_eq!(cache.roster_item(U, "zz@b.example").await.unwrap(), None);
        assert_eq!(cache.roster_count(U).await.unwrap(), 2);
        assert_eq!(inner.loads(), 1, "no second load");
        assert_eq!(
            inner.item_reads.load(Ordering::SeqCst),
            0,
            "items served from memory"
        );
        assert_eq!(cache.cached_users(), 1);
    }

    #[tokio::test]
    async fn item_reads_of_uncached_users_do_not_load() {
        let (inner, cache) = setup(10).await;
        cache.create_user(U, &[]).await.unwrap();
        cache
            .put_roster_item(U, &item("a@b.example"))
            .await
            .unwrap();
        assert!(cache.roster_item(U, "a@b.example").await.unwrap().is_some());
        assert_eq!(cache.roster_count(U).await.unwrap(), 1);
        assert_eq!(inner.loads(), 0);
        assert_eq!(inner.item_reads.load(Ordering::SeqCst), 2);
        assert_eq!(
            cache.cached_users(),
            0,
            "the write left no lock-only entry behind"
        );
        assert!(cache.table().entries.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_load_once() {
        let (inner, cache) = setup(10).await;
        cache.create_user(U, &[]).await.unwrap();
        inner.slow_loads.store(true, Ordering::SeqCst);
        let cache = &cache;
        let all = futures_util::future::join_all((0..10).map(|_| cache.roster_shared(U))).await;
        assert_eq!(inner.loads(), 1);
        let first = all[0].as_ref().unwrap();
        assert!(all.iter().all(|r| Arc::ptr_eq(r.as_ref().unwrap(), first)));
    }

    #[tokio::test]
    async fn writes_update_the_cached_copy() {
        let (inner, cache) = setup(10).await;
        cache.create_user(U, &[]).await.unwrap();
        let before = cache.roster_shared(U).await.unwrap();

        let v1 = cache
            .put_roster_item(U, &item("c@b.example"))
            .await
            .unwrap();
        let v2 = cache
            .put_roster_item(U, &item("a@b.example"))
            .await
            .unwrap();
        let mut renamed = item("c@b.example");
        renamed.name = Some("C".to_owned());
        let v3 = cache.put_roster_item(U, &renamed).await.unwrap();
        let now = cache.roster_shared(U).await.unwrap();
        assert!(v1 > before.version && v2 > v1 && v3 > v2);
        assert_eq!(now.version, v3);
        assert_eq!(now.items, [item("a@b.example"), renamed.clone()]);
        assert!(
            before.items.is_empty(),
            "an Arc handed out earlier is not changed"
        );

        let v4 = cache.remove_roster_item(U, "a@b.example").await.unwrap();
        let v5 = cache
            .remove_roster_item(U, "nobody@b.example")
            .await
            .unwrap();
        assert!(v4 > v3);
        assert_eq!(v5, v4);
        let now = cache.roster_shared(U).await.unwrap();
        assert_eq!((now.version, now.items.clone()), (v4, vec![renamed]));
        assert_eq!(inner.loads(), 1, "all of that without reloading");
        // And it is what the database says.
        let (v, mut items) = inner.inner.roster(U).await.unwrap();
        items.sort_by(|a, b| a.jid.cmp(&b.jid));
        assert_eq!((v, items), (now.version, now.items.clone()));
    }

    #[tokio::test]
    async fn failed_write_drops_the_entry() {
        let (inner, cache) = setup(10).await;
        cache.create_user(U, &[]).await.unwrap();
        cache.roster_shared(U).await.unwrap();
        assert_eq!(cache.cached_users(), 1);
        inner.fail_writes.store(true, Ordering::SeqCst);
        assert!(
            cache
                .put_roster_item(U, &item("a@b.example"))
                .await
                .is_err()
        );
        assert_eq!(cache.cached_users(), 0);
        inner.fail_writes.store(false, Ordering::SeqCst);
        cache.roster_shared(U).await.unwrap();
        assert_eq!(inner.loads(), 2, "reloaded after the failure");
        inner.fail_writes.store(true, Ordering::SeqCst);
        assert!(cache.remove_roster_item(U, "a@b.example").await.is_err());
        assert_eq!(cache.cached_users(), 0);
    }

    #[tokio::test]
    async fn version_out_of_step_drops_the_entry() {
        let (inner, cache) = setup(10).await;
        cache.create_user(U, &[]).await.unwrap();
        cache.roster_shared(U).await.unwrap();
        // Changed behind the cache's back: removing it then makes the version jump past what
        // the cache expects for an item it does not know.
        inner
            .inner
            .put_roster_item(U, &item("a@b.example"))
            .await
            .unwrap();
        cache.remove_roster_item(U, "a@b.example").await.unwrap();
        assert_eq!(cache.cached_users(), 0);
        let now = cache.roster_shared(U).await.unwrap();
        assert!(now.items.is_empty());
        assert_eq!(now.version, inner.inner.roster(U).await.unwrap().0);
    }

    #[tokio::test]
    async fn remove_and_create_user_invalidate() {
        let (inner, cache) = setup(10).await;
        cache.create_user(U, &[]).await.unwrap();
        cache
            .put_roster_item(U, &item("a@b.example"))
            .await
            .unwrap();
        assert_eq!(cache.roster_shared(U).await.unwrap().items.len(), 1);
        cache.remove_user(U).await.unwrap();
        assert_eq!(cache.cached_users(), 0);
        cache.create_user(U, &[]).await.unwrap();
        let fresh = cache.roster_shared(U).await.unwrap();
        assert!(fresh.items.is_empty());

        // The account removed behind the cache (the CLI when no server runs), then re-created
        // through it: create_user still drops what was cached.
        cache
            .put_roster_item(U, &item("a@b.example"))
            .await
            .unwrap();
        assert_eq!(cache.roster_count(U).await.unwrap(), 1);
        inner.inner.remove_user(U).await.unwrap();
        cache.create_user(U, &[]).await.unwrap();
        assert_eq!(cache.roster_count(U).await.unwrap(), 0);
        assert!(cache.roster_shared(U).await.unwrap().items.is_empty());
        assert_eq!(cache.roster_item(U, "a@b.example").await.unwrap(), None);
    }

    #[tokio::test]
    async fn forget_drops_one_user() {
        let (inner, cache) = setup(10).await;
        for u in ["x@a.example", "y@a.example"] {
            cache.create_user(u, &[]).await.unwrap();
            cache.roster_shared(u).await.unwrap();
        }
        cache.forget("x@a.example");
        cache.forget("nobody@a.example");
        assert_eq!(cache.cached_users(), 1);
        cache.roster_shared("y@a.example").await.unwrap();
        assert_eq!(inner.loads(), 2);
        cache.roster_shared("x@a.example").await.unwrap();
        assert_eq!(inner.loads(), 3);
    }

    #[tokio::test]
    async fn eviction_keeps_the_size_at_capacity() {
        let (inner, cache) = setup(3).await;
        let users: Vec<String> = (0..10).map(|i| format!("e{i}@a.example")).collect();
        for u in &users {
            cache.create_user(u, &[]).await.unwrap();
            cache
                .put_roster_item(u, &item("c@b.example"))
                .await
                .unwrap();
        }
        for (n, u) in users.iter().enumerate() {
            assert_eq!(cache.roster_shared(u).await.unwrap().items.len(), 1);
            assert_eq!(cache.cached_users(), (n + 1).min(3));
            let table = cache.table();
            assert_eq!(table.entries.len(), table.ring.len());
            assert!(table.entries.len() <= 3);
            for (i, key) in table.ring.iter().enumerate() {
                assert_eq!(table.entries[key].slot, i);
            }
        }
        // Second chance: a roster used since the hand last passed outlives one that was not.
        let loads = inner.loads();
        cache.roster_shared(&users[9]).await.unwrap(); // hit: marks it referenced
        assert_eq!(inner.loads(), loads);
        cache.roster_shared(&users[0]).await.unwrap(); // miss: evicts someone else
        assert_eq!(cache.cached_users(), 3);
        cache.roster_shared(&users[9]).await.unwrap();
        assert_eq!(inner.loads(), loads + 1, "the referenced roster was kept");
        // Writes of evicted users still go through, and what is read back is right.
        for u in &users {
            cache
                .put_roster_item(u, &item("d@b.example"))
                .await
                .unwrap();
            assert_eq!(cache.roster_shared(u).await.unwrap().items.len(), 2);
            assert!(cache.cached_users() <= 3);
        }
    }

    /// Readers never see a roster whose items disagree with its version, nor versions going
    /// back, while a writer adds items one by one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_and_a_writer_agree() {
        let (inner, cache) = setup(2).await;
        let cache = Arc::new(cache);
        cache.create_user(U, &[]).await.unwrap();
        let v0 = cache.roster_shared(U).await.unwrap().version;
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|r| {
                let (cache, done) = (cache.clone(), done.clone());
                tokio::spawn(async move {
                    let mut last = 0;
                    let mut reads = 0;
                    while !done.load(Ordering::SeqCst) {
                        let roster = cache.roster_shared(U).await.unwrap();
                        assert!(roster.version >= last, "version went back");
                        last = roster.version;
                        let added = usize::try_from(roster.version - v0).unwrap();
                        assert_eq!(roster.items.len(), added, "items out of step");
                        let count = cache.roster_count(U).await.unwrap() as usize;
                        assert!(count >= added, "count older than a roster seen before");
                        if r == 0 {
                            // Also churn the cache so reads keep missing and reloading.
                            cache.forget(U);
                        }
                        reads += 1;
                        tokio::task::yield_now().await;
                    }
                    reads
                })
            })
            .collect();
        let mut versions = Vec::new();
        for i in 0..50 {
            let v = cache
                .put_roster_item(U, &item(&format!("c{i:02}@b.example")))
                .await
                .unwrap();
            versions.push(v);
        }
        done.store(true, Ordering::SeqCst);
        for r in readers {
            assert!(r.await.unwrap() > 0);
        }
        assert!(versions.windows(2).all(|w| w[1] == w[0] + 1));
        let (v, items) = inner.inner.roster(U).await.unwrap();
        let cached = cache.roster_shared(U).await.unwrap();
        assert_eq!((cached.version, cached.items.len()), (v, items.len()));
    }

    /// Two writers for one user are serialised: every write gets its own version and the
    /// cached copy ends with all of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_are_serialised() {
        let (_inner, cache) = setup(10).await;
        cache.create_user(U, &[]).await.unwrap();
        cache.roster_shared(U).await.unwrap();
        let cache = &cache;
        let puts = (0..20).map(|i| async move {
            cache
                .put_roster_item(U, &item(&format!("w{i:02}@b.example")))
                .await
                .unwrap()
        });
        let mut versions = futures_util::future::join_all(puts).await;
        versions.sort_unstable();
        versions.dedup();
        assert_eq!(versions.len(), 20);
        let roster = cache.roster_shared(U).await.unwrap();
        assert_eq!(Some(&roster.version), versions.last());
        assert_eq!(roster.items.len(), 20);
    }

    // ---- the conformance suite, on the plain SQL store and through the cache

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_plain_and_cached_sqlite() {
        let plain = crate::sql::open("sqlite::memory:").await.unwrap();
        crate::conformance::run_all(&*plain).await;
        // A large cache, and one so small that the suite keeps evicting.
        for capacity in [1000, 1, 2] {
            let inner = crate::sql::open("sqlite::memory:").await.unwrap();
            let cached = RosterCache::new(inner, capacity);
            crate::conformance::run_all(&cached).await;
            assert!(cached.cached_users() <= capacity);
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let plain = crate::sql::open(&url).await.unwrap();
        crate::conformance::run_all(&*plain).await;
        crate::conformance::run_all(&RosterCache::new(plain.clone(), 3)).await;
        plain.close().await;
    }

    /// The same on PostgreSQL when `FRANCA_TEST_PG_URL` is set (see tests/conformance.rs), in a
    /// database of its own that is dropped afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_plain_and_cached_postgres() {
        use sqlx::{AssertSqlSafe, Connection};
        let admin_url = match std::env::var("FRANCA_TEST_PG_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => return,
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("franca_test_cache_{}_{nanos}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        // `postgres://…/db?query`: swap the database name.
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
        let authority = base.find("://").map_or(0, |i| i + 3);
        let base = base[authority..]
            .find('/')
            .map_or(base, |slash| &base[..authority + slash]);
        let url = match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        };
        let outcome = {
            use futures_util::FutureExt;
            std::panic::AssertUnwindSafe(async {
                let plain = crate::sql::open(&url).await.unwrap();
                crate::conformance::run_all(&*plain).await;
                crate::conformance::run_all(&RosterCache::new(plain.clone(), 2)).await;
                plain.close().await;
            })
            .catch_unwind()
            .await
        };
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

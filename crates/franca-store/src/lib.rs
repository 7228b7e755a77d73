//! Storage for Franca: the [`Store`] trait that everything durable goes through, with a SQLite
//! backend (embedded, the default) and a PostgreSQL backend, per-backend migrations applied at
//! start, and one conformance suite ([`conformance`]) that both backends must pass. Both backends
//! share one SQL implementation over sqlx's Any driver; [`open`] picks the backend from the URL.
//!
//! Accounts are identified by their normalised bare JID string (`user@domain`). Every write
//! completes (is committed) before the future returns, so callers may acknowledge afterwards.
//!
//! [`open`] wraps the SQL store in a [`RosterCache`], which keeps recently used rosters in
//! memory (write-through) because presence reads the roster on every presence stanza.

mod cache;
pub mod conformance;
mod migrate;
mod model;
mod sql;

pub use cache::RosterCache;
pub use model::*;

use std::sync::Arc;

/// How many users' rosters [`open`] keeps in memory. It should exceed the number of users online
/// at once, or the rosters of online users are evicted and reloaded on the next presence. At
/// a few hundred bytes per item this is on the order of 1 GiB for 50 000 users with 100-item
/// rosters — the worst case, reached only when that many distinct users have used their
/// roster; a server with that many online users needs comparable memory for its sessions anyway.
/// Rosters of users who went offline stay until evicted (nothing calls
/// [`RosterCache::forget`] yet), so a smaller bound would mainly cost reloads, not correctness.
pub const DEFAULT_ROSTER_CACHE_USERS: usize = 50_000;

/// Most messages an archive query counts for XEP-0059 `<count/>`: counting walks an index, so
/// the count is exact up to this many and reported as this many beyond (a client uses it for
/// progress, and a million-message archive must not cost a million index entries per page).
pub const MAX_ARCHIVE_COUNT: i64 = 100_000;

/// Clients of one account that may hold FAST tokens at once; issuing a token to one more
/// drops the tokens of the client whose token expires first (each client is one user-agent id,
/// which a client picks itself, so this bounds what one account can store).
pub const MAX_FAST_CLIENTS: i64 = 64;

/// Open the store named by `url`, creating it if needed, and apply pending schema migrations.
///
/// - `sqlite://path`, `sqlite:path` (relative to the current directory) or `sqlite:///abs/path`:
///   the file and its parent directories are created if missing. WAL journal with
///   `synchronous=FULL` (durable on return), and a busy timeout so another process (the
///   `franca user add` CLI next to a running server) can write to the same file.
/// - `sqlite::memory:`: a private in-memory database, for tests.
/// - `postgres://…` or `postgresql://…`: any URL sqlx accepts.
///
/// Anything else is [`StoreError::BadUrl`]. Several processes may open the same database at
/// once; migrations are serialised between them.
///
/// The store returned caches rosters ([`RosterCache`], [`DEFAULT_ROSTER_CACHE_USERS`] users).
/// Other processes must not change rosters or remove accounts behind a running server's back;
/// see [`RosterCache`] for why that holds for the `franca user` CLI.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let sql = sql::open(url).await?;
    Ok(Arc::new(RosterCache::new(sql, DEFAULT_ROSTER_CACHE_USERS)))
}

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("unknown room {0}")]
    UnknownRoom(String),
    #[error("offline storage quota exceeded")]
    QuotaExceeded,
    #[error("unsupported storage url {0}")]
    BadUrl(String),
    #[error("database: {0}")]
    Database(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Everything the server keeps durably. One SQL implementation serves both backends.
///
/// For an account that does not exist: calls that store something fail with
/// [`StoreError::UnknownUser`], and so do `remove_user` and `remove_roster_item` (which returns
/// the account's roster version); removing list entries (`unblock`, `delete_offline`) does
/// nothing; reads return nothing (`None`, empty lists, roster version 0).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- accounts
    /// Create an account with SCRAM credentials for every supported hash.
    async fn create_user(&self, user: &str, creds: &[ScramCredentials]) -> Result<()>;
    /// Replace all credentials (password change). `UnknownUser` when absent.
    async fn set_credentials(&self, user: &str, creds: &[ScramCredentials]) -> Result<()>;
    /// Credentials for one hash ("SHA-1", "SHA-256", "SHA-512"); `None` if no such user.
    async fn credentials(&self, user: &str, hash: &str) -> Result<Option<ScramCredentials>>;
    async fn user_exists(&self, user: &str) -> Result<bool>;
    /// Delete the account and all of its data (roster, offline, vCard, blocklist, last activity,
    /// FAST tokens, push registrations, PubSub nodes it owns, message archive and its prefs).
    /// `UnknownUser` when absent.
    async fn remove_user(&self, user: &str) -> Result<()>;
    /// Bare JIDs of all accounts, optionally only those in `domain`, sorted.
    async fn list_users(&self, domain: Option<&str>) -> Result<Vec<String>>;

    // ---- roster (RFC 6121 §2), versioned (§2.6): every change bumps the user's version.
    /// (version, all items including hidden ones), in no particular order.
    async fn roster(&self, user: &str) -> Result<(i64, Vec<RosterItem>)>;
    /// The same as [`Store::roster`], shared: for callers that only read it. A caching store
    /// hands out its copy without cloning the items; the default wraps `roster()`.
    async fn roster_shared(&self, user: &str) -> Result<Arc<Roster>> {
        let (version, items) = self.roster(user).await?;
        Ok(Arc::new(Roster { version, items }))
    }
    async fn roster_item(&self, user: &str, contact: &str) -> Result<Option<RosterItem>>;
    /// Number of items (hidden ones included): the roster size limit is checked with this
    /// rather than by loading the roster.
    async fn roster_count(&self, user: &str) -> Result<u32>;
    /// Insert or replace the item; returns the new roster version.
    async fn put_roster_item(&self, user: &str, item: &RosterItem) -> Result<i64>;
    /// Delete the item (no-op if absent); returns the new roster version.
    async fn remove_roster_item(&self, user: &str, contact: &str) -> Result<i64>;

    // ---- offline messages (XEP-0160)
    /// Append a message unless the user already has `quota` stored (`QuotaExceeded`).
    async fn push_offline(&self, user: &str, stamp_us: i64, xml: &str, quota: u32) -> Result<()>;
    /// All stored messages, oldest first, without removing them.
    async fn offline(&self, user: &str) -> Result<Vec<OfflineMessage>>;
    /// Remove delivered messages by id.
    async fn delete_offline(&self, user: &str, ids: &[i64]) -> Result<()>;
    async fn offline_count(&self, user: &str) -> Result<u32>;

    // ---- vcard-temp (XEP-0054): the serialised <vCard/> element.
    async fn vcard(&self, user: &str) -> Result<Option<String>>;
    async fn set_vcard(&self, user: &str, xml: &str) -> Result<()>;

    // ---- blocking (XEP-0191)
    async fn blocklist(&self, user: &str) -> Result<Vec<String>>;
    async fn block(&self, user: &str, jids: &[String]) -> Result<()>;
    /// Unblock these JIDs, or everything when `jids` is empty.
    async fn unblock(&self, user: &str, jids: &[String]) -> Result<()>;

    // ---- last activity (XEP-0012)
    async fn last_activity(&self, user: &str) -> Result<Option<LastActivity>>;
    async fn set_last_activity(&self, user: &str, last: &LastActivity) -> Result<()>;
    /// Store several accounts' last activity at once: the write-behind flush of the last
    /// activity module, so that many logouts cost one commit (one fsync) instead of one each.
    /// A record for an account that does not exist (removed since the record was taken) is
    /// skipped rather than failing the others. Backends override this with one transaction;
    /// a wrapping store should forward it, or the default below writes record by record.
    async fn set_last_activity_many(&self, records: &[(String, LastActivity)]) -> Result<()> {
        for (user, last) in records {
            match self.set_last_activity(user, last).await {
                Ok(()) | Err(StoreError::UnknownUser(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    // ---- XEP-0484 FAST tokens, stored hashed; at most a 'current' and a 'new' one per client.
    /// Store a token just issued to `token.client_id` in its 'new' slot, replacing one issued
    /// before and never used (XEP-0484 §3.5). Tokens of `user` that expired by `now_us` are
    /// deleted, and so are the ones of its least recently renewed clients beyond
    /// [`MAX_FAST_CLIENTS`]. `UnknownUser` when absent.
    async fn put_fast_token(&self, user: &str, token: &FastToken, now_us: i64) -> Result<()>;
    /// The tokens `user` holds for one client (at most two), expired ones included.
    async fn fast_tokens(&self, user: &str, client_id: &str) -> Result<Vec<FastToken>>;
    /// A login proved the token with this hash: in one transaction, check that it still exists
    /// and has not expired by `now_us`, and that `count` (when given) is above every counter
    /// accepted for it; then record `count`, make a 'new' token the client's current one
    /// (dropping the old current one, XEP-0484 §3.5), or delete it when `invalidate`. Returns
    /// false, changing nothing, when a check fails.
    async fn use_fast_token(
        &self,
        user: &str,
        client_id: &str,
        hash: &[u8],
        count: Option<u32>,
        invalidate: bool,
        now_us: i64,
    ) -> Result<bool>;
    /// Delete every token of `user` (an administrator revoking them); returns how many.
    async fn revoke_fast_tokens(&self, user: &str) -> Result<u64>;

    // ---- XEP-0357 push registrations
    /// Enable push to `reg.jid` and `reg.node`. The same JID and node enabled again replaces
    /// the stored publish options (XEP-0357 §5: the last request wins). Returns false, storing
    /// nothing, when it is a new pair and `user` already has `max` registrations.
    /// `UnknownUser` when absent.
    async fn put_push_registration(
        &self,
        user: &str,
        reg: &PushRegistration,
        max: u32,
    ) -> Result<bool>;
    /// The registrations of `user`, ordered by JID then node.
    async fn push_registrations(&self, user: &str) -> Result<Vec<PushRegistration>>;
    /// Disable push to `jid`: only `node` when given, else every node of it (XEP-0357 §6).
    /// Returns how many registrations were removed.
    async fn remove_push_registrations(
        &self,
        user: &str,
        jid: &str,
        node: Option<&str>,
    ) -> Result<u64>;

    // ---- pubsub/pep: XEP-0060 nodes and items, keyed by an owner JID (an account's bare JID
    // for XEP-0163 PEP; a PubSub service's JID later). Removing an account removes the nodes it
    // owns. Items are returned newest first.
    /// Every node of `owner`, ordered by name.
    async fn pubsub_nodes(&self, owner: &str) -> Result<Vec<PubsubNode>>;
    async fn pubsub_node(&self, owner: &str, node: &str) -> Result<Option<PubsubNode>>;
    /// Create the node or replace its configuration (items are kept). Returns false, storing
    /// nothing, when it is new and `owner` already has `max_nodes` nodes.
    async fn put_pubsub_node(&self, owner: &str, node: &PubsubNode, max_nodes: u32)
    -> Result<bool>;
    /// Delete the node and its items; false when there was none.
    async fn delete_pubsub_node(&self, owner: &str, node: &str) -> Result<bool>;
    /// Store `item` (replacing an item with the same id) as the node's newest: its stamp is
    /// raised above the newest stored one if needed, so order is publish order. Then only the
    /// newest `max_items` are kept. False, storing nothing, when the node does not exist.
    async fn publish_pubsub_item(
        &self,
        owner: &str,
        node: &str,
        item: &PubsubItem,
        max_items: u32,
    ) -> Result<bool>;
    /// Items of a node, newest first: those with these ids when `ids` is not empty, else the
    /// newest `max`.
    async fn pubsub_items(
        &self,
        owner: &str,
        node: &str,
        ids: &[String],
        max: u32,
    ) -> Result<Vec<PubsubItem>>;
    /// Delete one item; false when it was not there.
    async fn retract_pubsub_item(&self, owner: &str, node: &str, id: &str) -> Result<bool>;
    /// Delete every item of the node; returns how many.
    async fn purge_pubsub_node(&self, owner: &str, node: &str) -> Result<u64>;

    // ---- mam: XEP-0313 archives, keyed by an owner JID (an account's bare JID; a room's JID
    // later). Removing an account removes its archive and preferences. Archives are ordered by
    // message id (byte order), which the archiving module makes sortable by time.
    /// Store messages, in one statement (one commit). Each id must be new for its owner.
    async fn archive_messages(&self, messages: &[ArchivedMessage]) -> Result<()>;
    /// One page of `owner`'s archive (keyset paging on the id, never an offset).
    async fn archive_query(&self, owner: &str, query: &ArchiveQuery) -> Result<ArchivePage>;
    /// Whether `owner`'s archive holds a message with this id (to tell a stale cursor).
    async fn archive_has(&self, owner: &str, id: &str) -> Result<bool>;
    /// Delete at most `limit` messages archived before `before_us`, of every owner; returns
    /// how many (the expiry job calls it until it returns less than `limit`).
    async fn archive_expire(&self, before_us: i64, limit: u32) -> Result<u64>;
    /// Delete at most `limit` of `owner`'s messages archived before `before_us`; returns how
    /// many (a room's own retention, shorter than the server's).
    async fn archive_expire_owner(&self, owner: &str, before_us: i64, limit: u32) -> Result<u64>;
    /// Delete `owner`'s whole archive; returns how many messages.
    async fn archive_remove(&self, owner: &str) -> Result<u64>;
    /// The account's XEP-0313 preferences; `None` when it never set any.
    async fn archive_prefs(&self, user: &str) -> Result<Option<ArchivePrefs>>;
    /// Replace the account's preferences. `UnknownUser` when absent.
    async fn set_archive_prefs(&self, user: &str, prefs: &ArchivePrefs) -> Result<()>;

    // ---- XEP-0045 persistent rooms, per service domain (`conference.example.org`)
    /// Every stored room of `service` with its affiliations, ordered by room JID.
    async fn muc_rooms(&self, service: &str) -> Result<Vec<MucRoom>>;
    /// Store `room` of `service`: insert it, or replace its configuration and subject (its
    /// `created_us` is kept). With `affiliations`, the stored list becomes `room.affiliations`
    /// in the same transaction; without, it is left as it is.
    async fn put_muc_room(&self, service: &str, room: &MucRoom, affiliations: bool) -> Result<()>;
    /// Change some affiliations of a stored room in one transaction: each entry replaces the
    /// JID's affiliation, and `none` removes it. [`StoreError::UnknownRoom`] when the room is
    /// not stored.
    async fn set_muc_affiliations(&self, room: &str, changes: &[MucAffiliation]) -> Result<()>;
    /// Delete a room and its affiliations; false when it was not stored.
    async fn remove_muc_room(&self, room: &str) -> Result<bool>;

    // ---- pubsub subscriptions: XEP-0060 explicit subscriptions to a node of a PubSub
    // service (PEP stores none). Deleting the node deletes its subscriptions.
    /// The JIDs subscribed to the node, ordered.
    async fn pubsub_subscribers(&self, owner: &str, node: &str) -> Result<Vec<String>>;
    /// Subscribe `jid` (true when it is, or already was, subscribed). False, storing nothing,
    /// when the node does not exist or already has `max` subscribers.
    async fn subscribe_pubsub(&self, owner: &str, node: &str, jid: &str, max: u32) -> Result<bool>;
    /// Remove the subscription; false when there was none.
    async fn unsubscribe_pubsub(&self, owner: &str, node: &str, jid: &str) -> Result<bool>;

    // ---- federation bar (issue 6 §2): accounts that may not exchange stanzas with remote
    // domains. Removing the account removes its bar.
    /// Whether `user` is barred from federating; false for an account that does not exist.
    async fn federation_barred(&self, user: &str) -> Result<bool>;
    /// Bar `user` from federating, or lift the bar. Setting what is already set is not an
    /// error. `UnknownUser` when absent.
    async fn set_federation_barred(&self, user: &str, barred: bool) -> Result<()>;

    // ---- bulk import
    /// Create these accounts with their data. An account that already exists is left as it
    /// is and not counted; the others are created whole or not at all. Returns how many were
    /// created. Backends override this with one transaction per call (one commit for a
    /// whole batch); the default goes account by account.
    async fn import_accounts(&self, accounts: &[ImportedAccount]) -> Result<u32> {
        let mut created = 0;
        for a in accounts {
            match self.create_user(&a.jid, &a.credentials).await {
                Ok(()) => created += 1,
                Err(StoreError::UserExists(_)) => continue,
                Err(e) => return Err(e),
            }
            for item in &a.roster {
                self.put_roster_item(&a.jid, item).await?;
            }
            for (stamp_us, xml) in &a.offline {
                self.push_offline(&a.jid, *stamp_us, xml, u32::MAX).await?;
            }
            if let Some(vcard) = &a.vcard {
                self.set_vcard(&a.jid, vcard).await?;
            }
        }
        Ok(created)
    }

    /// Make sure everything written so far is durable (called at shutdown).
    async fn close(&self);
}

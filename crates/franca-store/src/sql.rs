//! The one SQL implementation of [`Store`], shared by SQLite and PostgreSQL through sqlx's Any
//! driver.
//!
//! Queries are written once, in the common subset of both dialects: `$N` placeholders (sqlx's
//! SQLite driver maps `$N` to the N-th argument), `ON CONFLICT … DO UPDATE/NOTHING`,
//! `RETURNING`, and only the integer, text and blob types the Any driver can carry. The few
//! places where the dialects must differ (how a write transaction starts, how an account row is
//! locked) are the methods of [`Backend`].

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Row, Transaction};

mod federation;
mod mam;
mod muc;
mod pubsub;
mod pubsub_subscriptions;

use crate::{
    ArchivePage, ArchivePrefs, ArchiveQuery, ArchivedMessage, FastToken, ImportedAccount,
    LastActivity, MAX_FAST_CLIENTS, MucAffiliation, MucRoom, OfflineMessage, PubsubItem,
    PubsubNode, PushRegistration, Result, RosterItem, ScramCredentials, Store, StoreError,
    Subscription,
};

/// How long a connection waits for another process's write lock before giving up. The
/// `franca user add` CLI writes to the database file while the server runs; both wait for each
/// other's (short) transactions instead of failing with "database is locked".
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// Rows per statement when a list is bound as `IN (...)` or multi-row `VALUES`: well below
/// SQLite's bound-parameter limit and PostgreSQL's 65535.
const CHUNK: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Statement that starts a read-write transaction.
    ///
    /// SQLite: `IMMEDIATE` takes the write lock up front (waiting for it under busy_timeout). A
    /// deferred transaction that reads first and writes later can fail with SQLITE_BUSY without
    /// waiting when another connection committed in between.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// Statement that starts a read-only transaction seeing one snapshot across statements,
    /// so a roster and its version are read consistently. SQLite in WAL mode already reads
    /// from one snapshot per transaction; PostgreSQL needs REPEATABLE READ for that.
    fn begin_snapshot(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN",
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        }
    }

    /// Reads the account's roster version and locks the account row until the transaction
    /// ends, so that check-then-write sequences (offline quota, password change) are atomic.
    /// SQLite already holds the database write lock (`BEGIN IMMEDIATE`); PostgreSQL needs
    /// `FOR UPDATE`, which SQLite does not parse.
    fn lock_user(self) -> &'static str {
        match self {
            Backend::Sqlite => "SELECT roster_version FROM users WHERE jid = $1",
            Backend::Postgres => "SELECT roster_version FROM users WHERE jid = $1 FOR UPDATE",
        }
    }
}

pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Map a foreign-key violation (a row for an account that does not exist) to `UnknownUser`.
fn db_for(user: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| {
        if e.as_database_error()
            .is_some_and(|d| d.is_foreign_key_violation())
        {
            StoreError::UnknownUser(user.to_owned())
        } else {
            db(e)
        }
    }
}

/// What the part of a `sqlite:` URL after the scheme names.
#[derive(Debug, PartialEq, Eq)]
enum SqliteTarget {
    File(PathBuf),
    Memory,
}

/// `sqlite://path`, `sqlite:path` (relative to the current directory) or `sqlite:///abs/path`;
/// `sqlite::memory:` for a private in-memory database (tests).
fn sqlite_target(url: &str) -> Result<Option<SqliteTarget>> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(None);
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest == ":memory:" {
        return Ok(Some(SqliteTarget::Memory));
    }
    // Options are ours to choose (WAL, synchronous, busy timeout), so reject URL parameters
    // rather than silently ignore them.
    if rest.is_empty() || rest.contains('?') || rest.contains('#') {
        return Err(StoreError::BadUrl(url.to_owned()));
    }
    let path = std::path::absolute(rest).map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))?;
    Ok(Some(SqliteTarget::File(path)))
}

/// Percent-encode a path for a `sqlite://` URL; sqlx decodes it again.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn any_options(url: &str) -> Result<AnyConnectOptions> {
    AnyConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))
}

/// Per-connection SQLite settings. `synchronous=FULL`: in WAL mode NORMAL may lose the last
/// commits on power loss, and the contract is that a write is durable once its future returns.
async fn sqlite_setup(conn: &mut AnyConnection, wal: bool) -> sqlx::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA foreign_keys = ON; \
         PRAGMA synchronous = FULL;"
    )))
    .execute(&mut *conn)
    .await?;
    if !wal {
        return Ok(());
    }
    // WAL lets readers run alongside the writer and is a property of the file, so this only
    // changes something on a new database. Switching needs an exclusive lock that busy_timeout
    // does not wait for, so retry while another process (a concurrent first start) holds it.
    let mut attempts = 0;
    loop {
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await
        {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(sqlx::Error::Configuration(
                    format!("SQLite refused WAL journal mode (got {mode})").into(),
                ));
            }
            Err(e) if attempts < 100 => {
                tracing::debug!("retrying PRAGMA journal_mode = WAL: {e}");
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn sqlite_pool(max: u32, wal: bool) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        // A local file connection cannot go stale; the per-acquire ping would be pure cost.
        // (PostgreSQL keeps the ping: it catches connections dropped by a server restart.)
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| Box::pin(sqlite_setup(conn, wal)))
}

/// Open (creating if needed) the store named by `url` and bring its schema up to date.
pub(crate) async fn open(url: &str) -> Result<Arc<dyn Store>> {
    sqlx::any::install_default_drivers();
    let store = match sqlite_target(url)? {
        Some(SqliteTarget::File(path)) => {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| {
                    StoreError::Database(format!("creating {}: {e}", parent.display()))
                })?;
            }
            let path_str = path
                .to_str()
                .ok_or_else(|| StoreError::BadUrl(url.to_owned()))?;
            let opts = any_options(&format!("sqlite://{}?mode=rwc", encode_path(path_str)))?;
            // One writer connection: writers in this process queue on the pool instead of
            // sleeping in SQLite's busy handler, which only other processes then need.
            let write = sqlite_pool(1, true)
                .connect_with(opts.clone())
                .await
                .map_err(db)?;
            migrate_then(Backend::Sqlite, write.clone(), write, || async {
                sqlite_pool(4, true).connect_with(opts).await.map_err(db)
            })
            .await?
        }
        Some(SqliteTarget::Memory) => {
            // An in-memory database lives as long as its last connection: keep exactly one,
            // forever, and use it for reads and writes.
            let pool = sqlite_pool(1, false)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(any_options("sqlite::memory:")?)
                .await
                .map_err(db)?;
            migrate_then(Backend::Sqlite, pool.clone(), pool.clone(), || async {
                Ok(pool)
            })
            .await?
        }
        None if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let pool = AnyPoolOptions::new()
                .max_connections(10)
                .connect_with(any_options(url)?)
                .await
                .map_err(db)?;
            migrate_then(Backend::Postgres, pool.clone(), pool.clone(), || async {
                Ok(pool)
            })
            .await?
        }
        None => return Err(StoreError::BadUrl(url.to_owned())),
    };
    Ok(Arc::new(store))
}

async fn migrate_then<F, Fut>(
    backend: Backend,
    migrate_on: AnyPool,
    write: AnyPool,
    read: F,
) -> Result<SqlStore>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<AnyPool>>,
{
    crate::migrate::run(&migrate_on, backend).await?;
    Ok(SqlStore {
        backend,
        write,
        read: read().await?,
    })
}

pub(crate) struct SqlStore {
    backend: Backend,
    /// Everything that writes. For SQLite a single connection (see [`open`]).
    write: AnyPool,
    /// Plain reads. For PostgreSQL the same pool as `write`.
    read: AnyPool,
}

fn domain_of(user: &str) -> &str {
    // A bare JID's localpart cannot contain '@', so the domain follows the first one.
    user.split_once('@').map_or(user, |(_, d)| d)
}

fn flag(b: bool) -> i16 {
    i16::from(b)
}

fn get<'r, T>(row: &'r sqlx::any::AnyRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(col).map_err(db)
}

/// `$from, $from+1, …` for `n` bound values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Build roster items from rows of `roster_items LEFT JOIN roster_groups` ordered by contact
/// then group position: one row per group, or one row with a NULL group.
fn roster_from_rows(rows: &[sqlx::any::AnyRow]) -> Result<Vec<RosterItem>> {
    let mut items: Vec<RosterItem> = Vec::new();
    for row in rows {
        let contact: String = get(row, "contact")?;
        let group: Option<String> = get(row, "group_name")?;
        if items.last().is_none_or(|i| i.jid != contact) {
            let sub: String = get(row, "subscription")?;
            items.push(RosterItem {
                name: get(row, "name")?,
                subscription: Subscription::parse(&sub).ok_or_else(|| {
                    StoreError::Database(format!("bad stored subscription {sub:?}"))
                })?,
                ask: get::<i64>(row, "ask")? != 0,
                pending_in: get(row, "pending_in")?,
                approved: get::<i64>(row, "approved")? != 0,
                hidden: get::<i64>(row, "hidden")? != 0,
                groups: Vec::new(),
                jid: contact,
            });
        }
        if let (Some(g), Some(item)) = (group, items.last_mut()) {
            item.groups.push(g);
        }
    }
    Ok(items)
}

const ROSTER_SELECT: &str = "SELECT r.contact, r.name, r.subscription, r.ask, r.pending_in, \
     r.approved, r.hidden, g.name AS group_name \
     FROM roster_items r LEFT JOIN roster_groups g \
     ON g.user_jid = r.user_jid AND g.contact = r.contact \
     WHERE r.user_jid = $1";

impl SqlStore {
    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        self.write
            .begin_with(self.backend.begin_write())
            .await
            .map_err(db)
    }

    /// Lock the account row (see [`Backend::lock_user`]) and return its roster version.
    async fn lock_user(&self, tx: &mut Transaction<'static, Any>, user: &str) -> Result<i64> {
        let version: Option<i64> = sqlx::query_scalar(self.backend.lock_user())
            .bind(user)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
        version.ok_or_else(|| StoreError::UnknownUser(user.to_owned()))
    }

    /// Insert or replace one roster item with its groups (in order).
    async fn insert_roster_item(
        tx: &mut Transaction<'static, Any>,
        user: &str,
        item: &RosterItem,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO roster_items (user_jid, contact, name, subscription, ask, pending_in, \
             approved, hidden) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (user_jid, contact) DO UPDATE SET name = excluded.name, \
             subscription = excluded.subscription, ask = excluded.ask, \
             pending_in = excluded.pending_in, approved = excluded.approved, \
             hidden = excluded.hidden",
        )
        .bind(user)
        .bind(item.jid.as_str())
        .bind(item.name.as_deref())
        .bind(item.subscription.as_str())
        .bind(flag(item.ask))
        .bind(item.pending_in.as_deref())
        .bind(flag(item.approved))
        .bind(flag(item.hidden))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM roster_groups WHERE user_jid = $1 AND contact = $2")
            .bind(user)
            .bind(item.jid.as_str())
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        for (position, group) in item.groups.iter().enumerate() {
            sqlx::query(
                "INSERT INTO roster_groups (user_jid, contact, position, name) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(user)
            .bind(item.jid.as_str())
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(group.as_str())
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    async fn insert_credentials(
        tx: &mut Transaction<'static, Any>,
        user: &str,
        creds: &[ScramCredentials],
    ) -> Result<()> {
        for c in creds {
            sqlx::query(
                "INSERT INTO credentials (user_jid, hash, salt, iterations, stored_key, \
                 server_key) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user)
            .bind(c.hash.as_str())
            .bind(c.salt.as_slice())
            .bind(i64::from(c.iterations))
            .bind(c.stored_key.as_slice())
            .bind(c.server_key.as_slice())
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn create_user(&self, user: &str, creds: &[ScramCredentials]) -> Result<()> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (jid, domain) VALUES ($1, $2) ON CONFLICT (jid) DO NOTHING",
        )
        .bind(user)
        .bind(domain_of(user))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::UserExists(user.to_owned()));
        }
        Self::insert_credentials(&mut tx, user, creds).await?;
        tx.commit().await.map_err(db)
    }

    async fn import_accounts(&self, accounts: &[ImportedAccount]) -> Result<u32> {
        // One transaction (one commit, one fsync) for the whole batch: a bulk import of 100k
        // accounts would otherwise spend its time waiting for the disk.
        let mut tx = self.begin().await?;
        let mut created = 0;
        for a in accounts {
            let inserted = sqlx::query(
                "INSERT INTO users (jid, domain) VALUES ($1, $2) ON CONFLICT (jid) DO NOTHING",
            )
            .bind(a.jid.as_str())
            .bind(domain_of(&a.jid))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if inserted.rows_affected() == 0 {
                continue;
            }
            created += 1;
            Self::insert_credentials(&mut tx, &a.jid, &a.credentials).await?;
            for item in &a.roster {
                Self::insert_roster_item(&mut tx, &a.jid, item).await?;
            }
            if !a.roster.is_empty() {
                // A fresh account starts at version 0; imported items are its first change.
                sqlx::query("UPDATE users SET roster_version = 1 WHERE jid = $1")
                    .bind(a.jid.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            for (stamp_us, xml) in &a.offline {
                sqlx::query(
                    "INSERT INTO offline_messages (user_jid, stamp_us, xml) VALUES ($1, $2, $3)",
                )
                .bind(a.jid.as_str())
                .bind(*stamp_us)
                .bind(xml.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            if let Some(vcard) = &a.vcard {
                sqlx::query("INSERT INTO vcards (user_jid, xml) VALUES ($1, $2)")
                    .bind(a.jid.as_str())
                    .bind(vcard.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(created)
    }

    async fn set_credentials(&self, user: &str, creds: &[ScramCredentials]) -> Result<()> {
        let mut tx = self.begin().await?;
        self.lock_user(&mut tx, user).await?;
        sqlx::query("DELETE FROM credentials WHERE user_jid = $1")
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Self::insert_credentials(&mut tx, user, creds).await?;
        tx.commit().await.map_err(db)
    }

    async fn credentials(&self, user: &str, hash: &str) -> Result<Option<ScramCredentials>> {
        let row = sqlx::query(
            "SELECT salt, iterations, stored_key, server_key FROM credentials \
             WHERE user_jid = $1 AND hash = $2",
        )
        .bind(user)
        .bind(hash)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let iterations: i64 = get(&row, "iterations")?;
        Ok(Some(ScramCredentials {
            hash: hash.to_owned(),
            salt: get(&row, "salt")?,
            iterations: u32::try_from(iterations).map_err(|_| {
                StoreError::Database(format!("bad stored iteration count {iterations}"))
            })?,
            stored_key: get(&row, "stored_key")?,
            server_key: get(&row, "server_key")?,
        }))
    }

    async fn user_exists(&self, user: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM users WHERE jid = $1")
            .bind(user)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    async fn remove_user(&self, user: &str) -> Result<()> {
        // Every other table cascades from users (see the migrations), except PubSub nodes,
        // whose owner is not always an account (0005).
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM users WHERE jid = $1")
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            tx.rollback().await.map_err(db)?;
            return Err(StoreError::UnknownUser(user.to_owned()));
        }
        Self::delete_pubsub_owner(&mut tx, user).await?;
        // The message archive's owner may be a room too (0004), so it does not cascade.
        sqlx::query("DELETE FROM mam_messages WHERE owner = $1")
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn list_users(&self, domain: Option<&str>) -> Result<Vec<String>> {
        match domain {
            Some(d) => sqlx::query_scalar("SELECT jid FROM users WHERE domain = $1 ORDER BY jid")
                .bind(d)
                .fetch_all(&self.read)
                .await
                .map_err(db),
            None => sqlx::query_scalar("SELECT jid FROM users ORDER BY jid")
                .fetch_all(&self.read)
                .await
                .map_err(db),
        }
    }

    async fn roster(&self, user: &str) -> Result<(i64, Vec<RosterItem>)> {
        // One snapshot for the version and the items: a version must never be handed out
        // with a roster older than it, or a client would cache the stale roster under it.
        let mut tx = self
            .read
            .begin_with(self.backend.begin_snapshot())
            .await
            .map_err(db)?;
        let version: Option<i64> =
            sqlx::query_scalar("SELECT roster_version FROM users WHERE jid = $1")
                .bind(user)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let Some(version) = version else {
            return Ok((0, Vec::new()));
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{ROSTER_SELECT} ORDER BY r.contact, g.position"
        )))
        .bind(user)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok((version, roster_from_rows(&rows)?))
    }

    async fn roster_item(&self, user: &str, contact: &str) -> Result<Option<RosterItem>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{ROSTER_SELECT} AND r.contact = $2 ORDER BY g.position"
        )))
        .bind(user)
        .bind(contact)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        Ok(roster_from_rows(&rows)?.into_iter().next())
    }

    async fn put_roster_item(&self, user: &str, item: &RosterItem) -> Result<i64> {
        let mut tx = self.begin().await?;
        // The bump comes first: in PostgreSQL it also locks the account row, so concurrent
        // roster changes of one user commit in version order.
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET roster_version = roster_version + 1 WHERE jid = $1 \
             RETURNING roster_version",
        )
        .bind(user)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let version = version.ok_or_else(|| StoreError::UnknownUser(user.to_owned()))?;
        Self::insert_roster_item(&mut tx, user, item).await?;
        tx.commit().await.map_err(db)?;
        Ok(version)
    }

    async fn remove_roster_item(&self, user: &str, contact: &str) -> Result<i64> {
        let mut tx = self.begin().await?;
        let current = self.lock_user(&mut tx, user).await?;
        // Groups go with the item (ON DELETE CASCADE).
        let deleted = sqlx::query("DELETE FROM roster_items WHERE user_jid = $1 AND contact = $2")
            .bind(user)
            .bind(contact)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if deleted.rows_affected() == 0 {
            // Nothing changed, so the version does not either.
            tx.rollback().await.map_err(db)?;
            return Ok(current);
        }
        let version: i64 = sqlx::query_scalar(
            "UPDATE users SET roster_version = roster_version + 1 WHERE jid = $1 \
             RETURNING roster_version",
        )
        .bind(user)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(version)
    }

    async fn push_offline(&self, user: &str, stamp_us: i64, xml: &str, quota: u32) -> Result<()> {
        // Lock, count and insert in one transaction: two messages arriving at once for a user
        // one below quota must not both be stored.
        let mut tx = self.begin().await?;
        self.lock_user(&mut tx, user).await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM offline_messages WHERE user_jid = $1")
                .bind(user)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        if count >= i64::from(quota) {
            tx.rollback().await.map_err(db)?;
            return Err(StoreError::QuotaExceeded);
        }
        sqlx::query("INSERT INTO offline_messages (user_jid, stamp_us, xml) VALUES ($1, $2, $3)")
            .bind(user)
            .bind(stamp_us)
            .bind(xml)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn offline(&self, user: &str) -> Result<Vec<OfflineMessage>> {
        // Ids grow with arrival (never reused), so ordering by id is oldest first even if the
        // clock that made stamp_us stepped back.
        let rows = sqlx::query(
            "SELECT id, stamp_us, xml FROM offline_messages WHERE user_jid = $1 ORDER BY id",
        )
        .bind(user)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(OfflineMessage {
                    id: get(row, "id")?,
                    stamp_us: get(row, "stamp_us")?,
                    xml: get(row, "xml")?,
                })
            })
            .collect()
    }

    async fn delete_offline(&self, user: &str, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM offline_messages WHERE user_jid = $1 AND id IN ({})",
                placeholders(2, chunk.len())
            );
            // persistent(false): the statement text varies with the chunk length, so do not
            // fill the prepared-statement cache with one entry per length.
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false).bind(user);
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn roster_count(&self, user: &str) -> Result<u32> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM roster_items WHERE user_jid = $1")
                .bind(user)
                .fetch_one(&self.read)
                .await
                .map_err(db)?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn offline_count(&self, user: &str) -> Result<u32> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM offline_messages WHERE user_jid = $1")
                .bind(user)
                .fetch_one(&self.read)
                .await
                .map_err(db)?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn vcard(&self, user: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT xml FROM vcards WHERE user_jid = $1")
            .bind(user)
            .fetch_optional(&self.read)
            .await
            .map_err(db)
    }

    async fn set_vcard(&self, user: &str, xml: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO vcards (user_jid, xml) VALUES ($1, $2) \
             ON CONFLICT (user_jid) DO UPDATE SET xml = excluded.xml",
        )
        .bind(user)
        .bind(xml)
        .execute(&self.write)
        .await
        .map_err(db_for(user))?;
        Ok(())
    }

    async fn blocklist(&self, user: &str) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT jid FROM blocklist WHERE user_jid = $1 ORDER BY jid")
            .bind(user)
            .fetch_all(&self.read)
            .await
            .map_err(db)
    }

    async fn block(&self, user: &str, jids: &[String]) -> Result<()> {
        if jids.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for chunk in jids.chunks(CHUNK) {
            let values = (0..chunk.len())
                .map(|i| format!("($1, ${})", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO blocklist (user_jid, jid) VALUES {values} ON CONFLICT DO NOTHING"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false).bind(user);
            for jid in chunk {
                q = q.bind(jid.as_str());
            }
            q.execute(&mut *tx).await.map_err(db_for(user))?;
        }
        tx.commit().await.map_err(db)
    }

    async fn unblock(&self, user: &str, jids: &[String]) -> Result<()> {
        if jids.is_empty() {
            sqlx::query("DELETE FROM blocklist WHERE user_jid = $1")
                .bind(user)
                .execute(&self.write)
                .await
                .map_err(db)?;
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for chunk in jids.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM blocklist WHERE user_jid = $1 AND jid IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false).bind(user);
            for jid in chunk {
                q = q.bind(jid.as_str());
            }
            q.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn last_activity(&self, user: &str) -> Result<Option<LastActivity>> {
        let row = sqlx::query("SELECT seconds, status FROM last_activity WHERE user_jid = $1")
            .bind(user)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(LastActivity {
            seconds: get(&row, "seconds")?,
            status: get(&row, "status")?,
        }))
    }

    async fn set_last_activity(&self, user: &str, last: &LastActivity) -> Result<()> {
        sqlx::query(
            "INSERT INTO last_activity (user_jid, seconds, status) VALUES ($1, $2, $3) \
             ON CONFLICT (user_jid) DO UPDATE SET seconds = excluded.seconds, \
             status = excluded.status",
        )
        .bind(user)
        .bind(last.seconds)
        .bind(last.status.as_str())
        .execute(&self.write)
        .await
        .map_err(db_for(user))?;
        Ok(())
    }

    async fn set_last_activity_many(&self, records: &[(String, LastActivity)]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // One transaction, so one commit for the whole batch. `WHERE EXISTS` skips accounts
        // removed since the records were taken instead of failing the batch on the foreign
        // key (and SQLite needs a WHERE on an INSERT … SELECT with an upsert clause anyway).
        let mut tx = self.begin().await?;
        for (user, last) in records {
            sqlx::query(
                "INSERT INTO last_activity (user_jid, seconds, status) SELECT $1, $2, $3 \
                 WHERE EXISTS (SELECT 1 FROM users WHERE jid = $1) \
                 ON CONFLICT (user_jid) DO UPDATE SET seconds = excluded.seconds, \
                 status = excluded.status",
            )
            .bind(user.as_str())
            .bind(last.seconds)
            .bind(last.status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn put_fast_token(&self, user: &str, token: &FastToken, now_us: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        self.lock_user(&mut tx, user).await?;
        sqlx::query("DELETE FROM fast_tokens WHERE user_jid = $1 AND expires_us <= $2")
            .bind(user)
            .bind(now_us)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO fast_tokens (user_jid, client_id, slot, token_hash, mechanism, \
             expires_us, count) VALUES ($1, $2, 'new', $3, $4, $5, 0) \
             ON CONFLICT (user_jid, client_id, slot) DO UPDATE SET \
             token_hash = excluded.token_hash, mechanism = excluded.mechanism, \
             expires_us = excluded.expires_us, count = 0",
        )
        .bind(user)
        .bind(token.client_id.as_str())
        .bind(token.hash.as_slice())
        .bind(token.mechanism.as_str())
        .bind(token.expires_us)
        .execute(&mut *tx)
        .await
        .map_err(db_for(user))?;
        // Client ids are the client's choice: keep the ones renewed most recently.
        sqlx::query(
            "DELETE FROM fast_tokens WHERE user_jid = $1 AND client_id NOT IN \
             (SELECT client_id FROM fast_tokens WHERE user_jid = $1 GROUP BY client_id \
             ORDER BY MAX(expires_us) DESC, client_id LIMIT $2)",
        )
        .bind(user)
        .bind(MAX_FAST_CLIENTS)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn fast_tokens(&self, user: &str, client_id: &str) -> Result<Vec<FastToken>> {
        // 'new' sorts after 'current': the token a client most likely holds comes first.
        let rows = sqlx::query(
            "SELECT slot, token_hash, mechanism, expires_us, count FROM fast_tokens \
             WHERE user_jid = $1 AND client_id = $2 ORDER BY slot DESC",
        )
        .bind(user)
        .bind(client_id)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let slot: String = get(row, "slot")?;
                let count: i64 = get(row, "count")?;
                Ok(FastToken {
                    client_id: client_id.to_owned(),
                    hash: get(row, "token_hash")?,
                    mechanism: get(row, "mechanism")?,
                    expires_us: get(row, "expires_us")?,
                    count: u32::try_from(count).unwrap_or(u32::MAX),
                    new: slot == "new",
                })
            })
            .collect()
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
        let mut tx = self.begin().await?;
        // The account lock serialises two logins replaying one counter at the same moment.
        match self.lock_user(&mut tx, user).await {
            Ok(_) => {}
            Err(StoreError::UnknownUser(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        let row = sqlx::query(
            "SELECT slot, expires_us, count FROM fast_tokens \
             WHERE user_jid = $1 AND client_id = $2 AND token_hash = $3",
        )
        .bind(user)
        .bind(client_id)
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(false);
        };
        let slot: String = get(&row, "slot")?;
        let expires_us: i64 = get(&row, "expires_us")?;
        let stored: i64 = get(&row, "count")?;
        if expires_us <= now_us || count.is_some_and(|c| i64::from(c) <= stored) {
            return Ok(false);
        }
        if invalidate {
            sqlx::query(
                "DELETE FROM fast_tokens WHERE user_jid = $1 AND client_id = $2 AND slot = $3",
            )
            .bind(user)
            .bind(client_id)
            .bind(slot.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        } else {
            if slot == "new" {
                // The client has the new token, so the one before it is done with.
                sqlx::query(
                    "DELETE FROM fast_tokens WHERE user_jid = $1 AND client_id = $2 \
                     AND slot = 'current'",
                )
                .bind(user)
                .bind(client_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            sqlx::query(
                "UPDATE fast_tokens SET slot = 'current', count = $4 \
                 WHERE user_jid = $1 AND client_id = $2 AND slot = $3",
            )
            .bind(user)
            .bind(client_id)
            .bind(slot.as_str())
            .bind(count.map_or(stored, i64::from))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn revoke_fast_tokens(&self, user: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM fast_tokens WHERE user_jid = $1")
            .bind(user)
            .execute(&self.write)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn put_push_registration(
        &self,
        user: &str,
        reg: &PushRegistration,
        max: u32,
    ) -> Result<bool> {
        // Lock, count and write in one transaction, so two enables at once cannot both pass
        // the cap.
        let mut tx = self.begin().await?;
        self.lock_user(&mut tx, user).await?;
        let exists = sqlx::query(
            "SELECT 1 FROM push_registrations WHERE user_jid = $1 AND service_jid = $2 \
             AND node = $3",
        )
        .bind(user)
        .bind(reg.jid.as_str())
        .bind(reg.node.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .is_some();
        if !exists {
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM push_registrations WHERE user_jid = $1")
                    .bind(user)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
            if count >= i64::from(max) {
                tx.rollback().await.map_err(db)?;
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO push_registrations (user_jid, service_jid, node, options) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_jid, service_jid, node) \
             DO UPDATE SET options = excluded.options",
        )
        .bind(user)
        .bind(reg.jid.as_str())
        .bind(reg.node.as_str())
        .bind(reg.options.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db_for(user))?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn push_registrations(&self, user: &str) -> Result<Vec<PushRegistration>> {
        let rows = sqlx::query(
            "SELECT service_jid, node, options FROM push_registrations WHERE user_jid = $1 \
             ORDER BY service_jid, node",
        )
        .bind(user)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(PushRegistration {
                    jid: get(row, "service_jid")?,
                    node: get(row, "node")?,
                    options: get(row, "options")?,
                })
            })
            .collect()
    }

    async fn remove_push_registrations(
        &self,
        user: &str,
        jid: &str,
        node: Option<&str>,
    ) -> Result<u64> {
        let done = match node {
            Some(node) => sqlx::query(
                "DELETE FROM push_registrations WHERE user_jid = $1 AND service_jid = $2 \
                 AND node = $3",
            )
            .bind(user)
            .bind(jid)
            .bind(node)
            .execute(&self.write)
            .await
            .map_err(db)?,
            None => sqlx::query(
                "DELETE FROM push_registrations WHERE user_jid = $1 AND service_jid = $2",
            )
            .bind(user)
            .bind(jid)
            .execute(&self.write)
            .await
            .map_err(db)?,
        };
        Ok(done.rows_affected())
    }

    // ---- pubsub/pep (in sql/pubsub.rs)
    async fn pubsub_nodes(&self, owner: &str) -> Result<Vec<PubsubNode>> {
        self.pubsub_nodes_impl(owner).await
    }
    async fn pubsub_node(&self, owner: &str, node: &str) -> Result<Option<PubsubNode>> {
        self.pubsub_node_impl(owner, node).await
    }
    async fn put_pubsub_node(
        &self,
        owner: &str,
        node: &PubsubNode,
        max_nodes: u32,
    ) -> Result<bool> {
        self.put_pubsub_node_impl(owner, node, max_nodes).await
    }
    async fn delete_pubsub_node(&self, owner: &str, node: &str) -> Result<bool> {
        self.delete_pubsub_node_impl(owner, node).await
    }
    async fn publish_pubsub_item(
        &self,
        owner: &str,
        node: &str,
        item: &PubsubItem,
        max_items: u32,
    ) -> Result<bool> {
        self.publish_pubsub_item_impl(owner, node, item, max_items)
            .await
    }
    async fn pubsub_items(
        &self,
        owner: &str,
        node: &str,
        ids: &[String],
        max: u32,
    ) -> Result<Vec<PubsubItem>> {
        self.pubsub_items_impl(owner, node, ids, max).await
    }
    async fn retract_pubsub_item(&self, owner: &str, node: &str, id: &str) -> Result<bool> {
        self.retract_pubsub_item_impl(owner, node, id).await
    }
    async fn purge_pubsub_node(&self, owner: &str, node: &str) -> Result<u64> {
        self.purge_pubsub_node_impl(owner, node).await
    }

    // ---- mam (sql/mam.rs)
    async fn archive_messages(&self, messages: &[ArchivedMessage]) -> Result<()> {
        self.archive_messages_impl(messages).await
    }
    async fn archive_query(&self, owner: &str, query: &ArchiveQuery) -> Result<ArchivePage> {
        self.archive_query_impl(owner, query).await
    }
    async fn archive_has(&self, owner: &str, id: &str) -> Result<bool> {
        self.archive_has_impl(owner, id).await
    }
    async fn archive_expire(&self, before_us: i64, limit: u32) -> Result<u64> {
        self.archive_expire_impl(before_us, limit).await
    }
    async fn archive_expire_owner(&self, owner: &str, before_us: i64, limit: u32) -> Result<u64> {
        self.archive_expire_owner_impl(owner, before_us, limit)
            .await
    }
    async fn archive_remove(&self, owner: &str) -> Result<u64> {
        self.archive_remove_impl(owner).await
    }
    async fn archive_prefs(&self, user: &str) -> Result<Option<ArchivePrefs>> {
        self.archive_prefs_impl(user).await
    }
    async fn set_archive_prefs(&self, user: &str, prefs: &ArchivePrefs) -> Result<()> {
        self.set_archive_prefs_impl(user, prefs).await
    }

    // ---- XEP-0045 rooms (in sql/muc.rs)
    async fn muc_rooms(&self, service: &str) -> Result<Vec<MucRoom>> {
        self.muc_rooms_impl(service).await
    }
    async fn put_muc_room(&self, service: &str, room: &MucRoom, affiliations: bool) -> Result<()> {
        self.put_muc_room_impl(service, room, affiliations).await
    }
    async fn set_muc_affiliations(&self, room: &str, changes: &[MucAffiliation]) -> Result<()> {
        self.set_muc_affiliations_impl(room, changes).await
    }
    async fn remove_muc_room(&self, room: &str) -> Result<bool> {
        self.remove_muc_room_impl(room).await
    }

    // ---- pubsub subscriptions (in sql/pubsub_subscriptions.rs)
    async fn pubsub_subscribers(&self, owner: &str, node: &str) -> Result<Vec<String>> {
        self.pubsub_subscribers_impl(owner, node).await
    }
    async fn subscribe_pubsub(&self, owner: &str, node: &str, jid: &str, max: u32) -> Result<bool> {
        self.subscribe_pubsub_impl(owner, node, jid, max).await
    }
    async fn unsubscribe_pubsub(&self, owner: &str, node: &str, jid: &str) -> Result<bool> {
        self.unsubscribe_pubsub_impl(owner, node, jid).await
    }

    // ---- federation bar (in sql/federation.rs)
    async fn federation_barred(&self, user: &str) -> Result<bool> {
        self.federation_barred_impl(user).await
    }
    async fn set_federation_barred(&self, user: &str, barred: bool) -> Result<()> {
        self.set_federation_barred_impl(user, barred).await
    }

    async fn close(&self) {
        // Every commit was already durable (synchronous=FULL / PostgreSQL commit); closing
        // waits for in-flight queries and releases the file or the server connections.
        self.write.close().await;
        self.read.close().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sqlite_urls() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            sqlite_target("sqlite://data/franca.db").unwrap(),
            Some(SqliteTarget::File(cwd.join("data/franca.db")))
        );
        assert_eq!(
            sqlite_target("sqlite:franca.db").unwrap(),
            Some(SqliteTarget::File(cwd.join("franca.db")))
        );
        assert_eq!(
            sqlite_target("sqlite:///var/lib/franca/f.db").unwrap(),
            Some(SqliteTarget::File(PathBuf::from("/var/lib/franca/f.db")))
        );
        assert_eq!(
            sqlite_target("sqlite::memory:").unwrap(),
            Some(SqliteTarget::Memory)
        );
        assert_eq!(sqlite_target("postgres://x/y").unwrap(), None);
        assert!(matches!(
            sqlite_target("sqlite://"),
            Err(StoreError::BadUrl(_))
        ));
        assert!(matches!(
            sqlite_target("sqlite://a.db?mode=ro"),
            Err(StoreError::BadUrl(_))
        ));
    }

    #[test]
    fn path_encoding() {
        assert_eq!(encode_path("/a b/c%d?.db"), "/a%20b/c%25d%3F.db");
        assert_eq!(encode_path("/ü"), "/%C3%BC");
    }

    #[test]
    fn domains() {
        assert_eq!(domain_of("alice@example.org"), "example.org");
        assert_eq!(domain_of("example.org"), "example.org");
    }
}

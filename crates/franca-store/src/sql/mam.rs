//! XEP-0313 archives (migration 0004) for both backends. Every query is keyset paging on
//! `(owner, id)` or `(owner, with_jid, id)` — an index range scan that reads only the page, so
//! a page costs the same at the start and the end of a million-message archive. The count
//! reads index entries only, and at most [`MAX_ARCHIVE_COUNT`] of them.

use sqlx::AssertSqlSafe;

use super::{CHUNK, SqlStore, db, db_for, flag, get};
use crate::{
    ArchivePage, ArchivePrefs, ArchiveQuery, ArchivedMessage, MAX_ARCHIVE_COUNT, Result, StoreError,
};

/// Columns per archived row, for sizing multi-row inserts.
const COLUMNS: usize = 6;

/// The WHERE clause of a query and its bound strings (`$1` is the owner). `cursors` adds the
/// paging cursors; the count leaves them out.
fn filters<'q>(owner: &'q str, q: &'q ArchiveQuery, cursors: bool) -> (String, Vec<&'q str>) {
    let mut sql = String::from(" WHERE owner = $1");
    let mut binds = vec![owner];
    let mut add = |sql: &mut String, cond: &str, value: &'q str| {
        binds.push(value);
        sql.push_str(&format!(" AND {cond} ${}", binds.len()));
    };
    if let Some(with) = &q.with {
        add(&mut sql, "with_jid =", with);
    }
    if let Some(from) = &q.from_id {
        add(&mut sql, "id >=", from);
    }
    if let Some(until) = &q.until_id {
        add(&mut sql, "id <", until);
    }
    if cursors {
        if let Some(after) = &q.after {
            add(&mut sql, "id >", after);
        }
        if let Some(before) = &q.before {
            add(&mut sql, "id <", before);
        }
    }
    if !q.ids.is_empty() {
        let first = binds.len() + 1;
        binds.extend(q.ids.iter().map(String::as_str));
        sql.push_str(&format!(
            " AND id IN ({})",
            super::placeholders(first, q.ids.len())
        ));
    }
    (sql, binds)
}

impl SqlStore {
    pub(super) async fn archive_messages_impl(&self, messages: &[ArchivedMessage]) -> Result<()> {
        let rows = CHUNK / COLUMNS;
        if messages.len() <= rows {
            return self.archive_chunk(messages, &self.write).await;
        }
        let mut tx = self.begin().await?;
        for chunk in messages.chunks(rows) {
            self.archive_chunk(chunk, &mut *tx).await?;
        }
        tx.commit().await.map_err(db)
    }

    async fn archive_chunk<'e, E>(&self, messages: &[ArchivedMessage], on: E) -> Result<()>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        if messages.is_empty() {
            return Ok(());
        }
        let values: Vec<String> = (0..messages.len())
            .map(|i| format!("({})", super::placeholders(i * COLUMNS + 1, COLUMNS)))
            .collect();
        let sql = format!(
            "INSERT INTO mam_messages (owner, id, stamp_us, with_jid, outgoing, xml) VALUES {}",
            values.join(", ")
        );
        // Archiving is one message (or the two sides of one) nearly always: keep the one- and
        // two-row statements prepared, not every batch length.
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(messages.len() <= 2);
        for m in messages {
            q = q
                .bind(m.owner.as_str())
                .bind(m.id.as_str())
                .bind(m.stamp_us)
                .bind(m.with.as_str())
                .bind(flag(m.outgoing))
                .bind(m.xml.as_str());
        }
        q.execute(on).await.map_err(db)?;
        Ok(())
    }

    pub(super) async fn archive_query_impl(
        &self,
        owner: &str,
        query: &ArchiveQuery,
    ) -> Result<ArchivePage> {
        // With an `ids` list the statement text varies with its length: not worth caching.
        let persistent = query.ids.is_empty();
        let (where_sql, binds) = filters(owner, query, true);
        let order = if query.last_page { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT id, stamp_us, with_jid, outgoing, xml FROM mam_messages{where_sql} \
             ORDER BY id {order} LIMIT ${}",
            binds.len() + 1
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(persistent);
        for b in &binds {
            q = q.bind(*b);
        }
        // One more than asked tells whether the page is the last one.
        let rows = q
            .bind(i64::from(query.max) + 1)
            .fetch_all(&self.read)
            .await
            .map_err(db)?;
        let complete = rows.len() <= query.max as usize;
        let mut messages = rows
            .iter()
            .take(query.max as usize)
            .map(|row| {
                Ok(ArchivedMessage {
                    owner: owner.to_owned(),
                    id: get(row, "id")?,
                    stamp_us: get(row, "stamp_us")?,
                    with: get(row, "with_jid")?,
                    outgoing: get::<i16>(row, "outgoing")? != 0,
                    xml: get(row, "xml")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if query.last_page {
            messages.reverse();
        }

        let (where_sql, binds) = filters(owner, query, false);
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM mam_messages{where_sql} LIMIT ${}) AS capped",
            binds.len() + 1
        );
        let mut q = sqlx::query_scalar(AssertSqlSafe(sql)).persistent(persistent);
        for b in &binds {
            q = q.bind(*b);
        }
        let count: i64 = q
            .bind(MAX_ARCHIVE_COUNT)
            .fetch_one(&self.read)
            .await
            .map_err(db)?;
        Ok(ArchivePage {
            messages,
            complete,
            count: u64::try_from(count).unwrap_or(0),
        })
    }

    pub(super) async fn archive_has_impl(&self, owner: &str, id: &str) -> Result<bool> {
        let row: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM mam_messages WHERE owner = $1 AND id = $2")
                .bind(owner)
                .bind(id)
                .fetch_optional(&self.read)
                .await
                .map_err(db)?;
        Ok(row.is_some())
    }

    pub(super) async fn archive_expire_impl(&self, before_us: i64, limit: u32) -> Result<u64> {
        // A bounded batch per statement, so the expiry job never holds the write lock (SQLite)
        // or a huge transaction (PostgreSQL) for long.
        let done = sqlx::query(
            "DELETE FROM mam_messages WHERE (owner, id) IN \
             (SELECT owner, id FROM mam_messages WHERE stamp_us < $1 LIMIT $2)",
        )
        .bind(before_us)
        .bind(i64::from(limit))
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    pub(super) async fn archive_expire_owner_impl(
        &self,
        owner: &str,
        before_us: i64,
        limit: u32,
    ) -> Result<u64> {
        // The owner's rows only, oldest first along the `(owner, id)` index (ids sort by time).
        let done = sqlx::query(
            "DELETE FROM mam_messages WHERE (owner, id) IN \
             (SELECT owner, id FROM mam_messages WHERE owner = $1 AND stamp_us < $2 \
             ORDER BY id LIMIT $3)",
        )
        .bind(owner)
        .bind(before_us)
        .bind(i64::from(limit))
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    pub(super) async fn archive_remove_impl(&self, owner: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM mam_messages WHERE owner = $1")
            .bind(owner)
            .execute(&self.write)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    pub(super) async fn archive_prefs_impl(&self, user: &str) -> Result<Option<ArchivePrefs>> {
        let row = sqlx::query(
            "SELECT default_mode, always_jids, never_jids FROM mam_prefs WHERE user_jid = $1",
        )
        .bind(user)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let list = |s: String| -> Vec<String> {
            s.split('\n')
                .filter(|j| !j.is_empty())
                .map(str::to_owned)
                .collect()
        };
        Ok(Some(ArchivePrefs {
            default: get(&row, "default_mode")?,
            always: list(get(&row, "always_jids")?),
            never: list(get(&row, "never_jids")?),
        }))
    }

    pub(super) async fn set_archive_prefs_impl(
        &self,
        user: &str,
        prefs: &ArchivePrefs,
    ) -> Result<()> {
        // JIDs cannot hold a newline (RFC 7622 forbids control characters), so one per line.
        if prefs
            .always
            .iter()
            .chain(&prefs.never)
            .any(|j| j.contains('\n'))
        {
            return Err(StoreError::Database(
                "newline in an archive prefs JID".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO mam_prefs (user_jid, default_mode, always_jids, never_jids) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_jid) DO UPDATE SET \
             default_mode = excluded.default_mode, always_jids = excluded.always_jids, \
             never_jids = excluded.never_jids",
        )
        .bind(user)
        .bind(prefs.default.as_str())
        .bind(prefs.always.join("\n"))
        .bind(prefs.never.join("\n"))
        .execute(&self.write)
        .await
        .map_err(db_for(user))?;
        Ok(())
    }
}

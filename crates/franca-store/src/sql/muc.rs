//! XEP-0045 persistent rooms (migration 0006) for both backends: one row per room with its
//! stored configuration and subject, and its affiliations by bare JID. Loading a service reads
//! rooms and affiliations in one snapshot; every write is one transaction.

use sqlx::{Any, AssertSqlSafe, Transaction};

use super::{CHUNK, SqlStore, db, get, placeholders};
use crate::{MucAffiliation, MucRoom, Result, StoreError};

impl SqlStore {
    pub(super) async fn muc_rooms_impl(&self, service: &str) -> Result<Vec<MucRoom>> {
        // One snapshot, so a room and its affiliations are read together.
        let mut tx = self
            .read
            .begin_with(self.backend.begin_snapshot())
            .await
            .map_err(db)?;
        let rows = sqlx::query(
            "SELECT room_jid, config, subject, created_us FROM muc_rooms WHERE service = $1 \
             ORDER BY room_jid",
        )
        .bind(service)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut rooms = Vec::with_capacity(rows.len());
        for row in &rows {
            rooms.push(MucRoom {
                jid: get(row, "room_jid")?,
                config: get(row, "config")?,
                subject: get(row, "subject")?,
                created_us: get(row, "created_us")?,
                affiliations: Vec::new(),
            });
        }
        let rows = sqlx::query(
            "SELECT a.room_jid, a.jid, a.affiliation, a.reason, a.nick FROM muc_affiliations a \
             JOIN muc_rooms r ON r.room_jid = a.room_jid WHERE r.service = $1 \
             ORDER BY a.room_jid, a.jid",
        )
        .bind(service)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut at = 0;
        for row in &rows {
            let room: String = get(row, "room_jid")?;
            // Both lists are in room order: walk them together.
            while rooms.get(at).is_some_and(|r| r.jid < room) {
                at += 1;
            }
            if let Some(r) = rooms.get_mut(at).filter(|r| r.jid == room) {
                r.affiliations.push(MucAffiliation {
                    jid: get(row, "jid")?,
                    affiliation: get(row, "affiliation")?,
                    reason: get(row, "reason")?,
                    nick: get(row, "nick")?,
                });
            }
        }
        Ok(rooms)
    }

    pub(super) async fn put_muc_room_impl(
        &self,
        service: &str,
        room: &MucRoom,
        affiliations: bool,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO muc_rooms (room_jid, service, config, subject, created_us) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_jid) \
             DO UPDATE SET config = excluded.config, subject = excluded.subject",
        )
        .bind(room.jid.as_str())
        .bind(service)
        .bind(room.config.as_str())
        .bind(room.subject.as_deref())
        .bind(room.created_us)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if affiliations {
            sqlx::query("DELETE FROM muc_affiliations WHERE room_jid = $1")
                .bind(room.jid.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            insert_affiliations(&mut tx, &room.jid, &room.affiliations).await?;
        }
        tx.commit().await.map_err(db)
    }

    pub(super) async fn set_muc_affiliations_impl(
        &self,
        room: &str,
        changes: &[MucAffiliation],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM muc_rooms WHERE room_jid = $1")
            .bind(room)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        if !exists {
            tx.rollback().await.map_err(db)?;
            return Err(StoreError::UnknownRoom(room.to_owned()));
        }
        for chunk in changes.chunks(CHUNK) {
            let jids: Vec<&str> = chunk.iter().map(|c| c.jid.as_str()).collect();
            let sql = format!(
                "DELETE FROM muc_affiliations WHERE room_jid = $1 AND jid IN ({})",
                placeholders(2, jids.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(room);
            for j in &jids {
                q = q.bind(*j);
            }
            q.execute(&mut *tx).await.map_err(db)?;
        }
        // The last change of a JID wins.
        let mut kept: Vec<&MucAffiliation> = Vec::new();
        for c in changes.iter().rev() {
            if !kept.iter().any(|k| k.jid == c.jid) {
                kept.push(c);
            }
        }
        let kept: Vec<MucAffiliation> = kept
            .into_iter()
            .rev()
            .filter(|c| c.affiliation != "none")
            .cloned()
            .collect();
        insert_affiliations(&mut tx, room, &kept).await?;
        tx.commit().await.map_err(db)
    }

    pub(super) async fn remove_muc_room_impl(&self, room: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM muc_rooms WHERE room_jid = $1")
            .bind(room)
            .execute(&self.write)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

/// Insert affiliation rows (none of them `none`) with multi-row `VALUES`.
async fn insert_affiliations(
    tx: &mut Transaction<'static, Any>,
    room: &str,
    list: &[MucAffiliation],
) -> Result<()> {
    for chunk in list.chunks(CHUNK / 5) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("($1, {})", placeholders(2 + i * 4, 4)))
            .collect();
        let sql = format!(
            "INSERT INTO muc_affiliations (room_jid, jid, affiliation, reason, nick) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(room);
        for a in chunk {
            q = q
                .bind(a.jid.as_str())
                .bind(a.affiliation.as_str())
                .bind(a.reason.as_deref())
                .bind(a.nick.as_deref());
        }
        q.execute(&mut **tx).await.map_err(db)?;
    }
    Ok(())
}

//! The per-account federation bar (migration 0008) for both backends: a row in
//! `federation_bars` means the account may not exchange stanzas with remote domains.

use super::{SqlStore, db, db_for};
use crate::{Result, StoreError};

impl SqlStore {
    pub(super) async fn federation_barred_impl(&self, user: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM federation_bars WHERE user_jid = $1")
            .bind(user)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    pub(super) async fn set_federation_barred_impl(&self, user: &str, barred: bool) -> Result<()> {
        if barred {
            // The foreign key turns a missing account into UnknownUser.
            sqlx::query(
                "INSERT INTO federation_bars (user_jid, since_us) VALUES ($1, $2) \
                 ON CONFLICT (user_jid) DO NOTHING",
            )
            .bind(user)
            .bind(now_us())
            .execute(&self.write)
            .await
            .map_err(db_for(user))?;
            return Ok(());
        }
        let deleted = sqlx::query("DELETE FROM federation_bars WHERE user_jid = $1")
            .bind(user)
            .execute(&self.write)
            .await
            .map_err(db)?
            .rows_affected();
        // Nothing deleted: either there was no bar, or no such account; say which.
        if deleted == 0 && !self.user_exists_impl(user).await? {
            return Err(StoreError::UnknownUser(user.to_owned()));
        }
        Ok(())
    }

    async fn user_exists_impl(&self, user: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM users WHERE jid = $1")
            .bind(user)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

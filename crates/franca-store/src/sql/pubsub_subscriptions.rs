//! XEP-0060 explicit subscriptions (migration 0007) for both backends. Subscribing checks the
//! node and the cap in one transaction under the owner's lock (the same lock node and item
//! writes take), so concurrent subscribers cannot push a node past its cap.

use super::SqlStore;
use super::db;
use crate::Result;

impl SqlStore {
    pub(super) async fn pubsub_subscribers_impl(
        &self,
        owner: &str,
        node: &str,
    ) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT jid FROM pubsub_subscriptions WHERE owner = $1 AND node = $2 ORDER BY jid",
        )
        .bind(owner)
        .bind(node)
        .fetch_all(&self.read)
        .await
        .map_err(db)
    }

    pub(super) async fn subscribe_pubsub_impl(
        &self,
        owner: &str,
        node: &str,
        jid: &str,
        max: u32,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        self.lock_owner(&mut tx, owner).await?;
        let exists = Self::node_exists(&mut tx, owner, node).await?;
        if !exists {
            tx.rollback().await.map_err(db)?;
            return Ok(false);
        }
        let already = sqlx::query(
            "SELECT 1 FROM pubsub_subscriptions WHERE owner = $1 AND node = $2 AND jid = $3",
        )
        .bind(owner)
        .bind(node)
        .bind(jid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .is_some();
        if already {
            tx.rollback().await.map_err(db)?;
            return Ok(true);
        }
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pubsub_subscriptions WHERE owner = $1 AND node = $2",
        )
        .bind(owner)
        .bind(node)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        if count >= i64::from(max) {
            tx.rollback().await.map_err(db)?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO pubsub_subscriptions (owner, node, jid) VALUES ($1, $2, $3)")
            .bind(owner)
            .bind(node)
            .bind(jid)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    pub(super) async fn unsubscribe_pubsub_impl(
        &self,
        owner: &str,
        node: &str,
        jid: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM pubsub_subscriptions WHERE owner = $1 AND node = $2 AND jid = $3",
        )
        .bind(owner)
        .bind(node)
        .bind(jid)
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

//! XEP-0060 nodes and items (migration 0005) for both backends. Check-then-write sequences
//! (the node cap, trimming to `max_items`) run in one transaction under a per-owner lock: SQLite
//! already holds the database write lock, PostgreSQL takes a transaction advisory lock on the
//! owner, since the owner need not be an account row that could be locked instead.

use sqlx::{Any, Transaction};

use super::{Backend, SqlStore, db, get};
use crate::{PubsubItem, PubsubNode, Result};

impl SqlStore {
    pub(super) async fn lock_owner(
        &self,
        tx: &mut Transaction<'static, Any>,
        owner: &str,
    ) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(owner)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    pub(super) async fn pubsub_nodes_impl(&self, owner: &str) -> Result<Vec<PubsubNode>> {
        let rows =
            sqlx::query("SELECT node, config FROM pubsub_nodes WHERE owner = $1 ORDER BY node")
                .bind(owner)
                .fetch_all(&self.read)
                .await
                .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(PubsubNode {
                    node: get(row, "node")?,
                    config: get(row, "config")?,
                })
            })
            .collect()
    }

    pub(super) async fn pubsub_node_impl(
        &self,
        owner: &str,
        node: &str,
    ) -> Result<Option<PubsubNode>> {
        let config: Option<String> =
            sqlx::query_scalar("SELECT config FROM pubsub_nodes WHERE owner = $1 AND node = $2")
                .bind(owner)
                .bind(node)
                .fetch_optional(&self.read)
                .await
                .map_err(db)?;
        Ok(config.map(|config| PubsubNode {
            node: node.to_owned(),
            config,
        }))
    }

    /// Whether `owner` has `node`, read inside `tx` (after [`Self::lock_owner`], so the answer
    /// holds until the transaction ends).
    pub(super) async fn node_exists(
        tx: &mut Transaction<'static, Any>,
        owner: &str,
        node: &str,
    ) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM pubsub_nodes WHERE owner = $1 AND node = $2")
                .bind(owner)
                .bind(node)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db)?
                .is_some(),
        )
    }

    pub(super) async fn put_pubsub_node_impl(
        &self,
        owner: &str,
        node: &PubsubNode,
        max_nodes: u32,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        self.lock_owner(&mut tx, owner).await?;
        let exists = Self::node_exists(&mut tx, owner, node.node.as_str()).await?;
        if !exists {
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM pubsub_nodes WHERE owner = $1")
                    .bind(owner)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
            if count >= i64::from(max_nodes) {
                tx.rollback().await.map_err(db)?;
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO pubsub_nodes (owner, node, config) VALUES ($1, $2, $3) \
             ON CONFLICT (owner, node) DO UPDATE SET config = excluded.config",
        )
        .bind(owner)
        .bind(node.node.as_str())
        .bind(node.config.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    pub(super) async fn delete_pubsub_node_impl(&self, owner: &str, node: &str) -> Result<bool> {
        // Items go with the node (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM pubsub_nodes WHERE owner = $1 AND node = $2")
            .bind(owner)
            .bind(node)
            .execute(&self.write)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn publish_pubsub_item_impl(
        &self,
        owner: &str,
        node: &str,
        item: &PubsubItem,
        max_items: u32,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        self.lock_owner(&mut tx, owner).await?;
        let exists = Self::node_exists(&mut tx, owner, node).await?;
        if !exists {
            tx.rollback().await.map_err(db)?;
            return Ok(false);
        }
        let newest: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(stamp_us) FROM pubsub_items WHERE owner = $1 AND node = $2",
        )
        .bind(owner)
        .bind(node)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        // Two publishes in one microsecond (or a clock step back) still keep publish order.
        let stamp = newest.map_or(item.stamp_us, |n| item.stamp_us.max(n.saturating_add(1)));
        sqlx::query(
            "INSERT INTO pubsub_items (owner, node, id, stamp_us, xml) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (owner, node, id) DO UPDATE SET stamp_us = excluded.stamp_us, \
             xml = excluded.xml",
        )
        .bind(owner)
        .bind(node)
        .bind(item.id.as_str())
        .bind(stamp)
        .bind(item.xml.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "DELETE FROM pubsub_items WHERE owner = $1 AND node = $2 AND id NOT IN \
             (SELECT id FROM pubsub_items WHERE owner = $1 AND node = $2 \
              ORDER BY stamp_us DESC LIMIT $3)",
        )
        .bind(owner)
        .bind(node)
        .bind(i64::from(max_items.max(1)))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    pub(super) async fn pubsub_items_impl(
        &self,
        owner: &str,
        node: &str,
        ids: &[String],
        max: u32,
    ) -> Result<Vec<PubsubItem>> {
        let rows = if ids.is_empty() {
            sqlx::query(
                "SELECT id, stamp_us, xml FROM pubsub_items WHERE owner = $1 AND node = $2 \
                 ORDER BY stamp_us DESC LIMIT $3",
            )
            .bind(owner)
            .bind(node)
            .bind(i64::from(max))
            .fetch_all(&self.read)
            .await
            .map_err(db)?
        } else {
            let mut rows = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(row) = sqlx::query(
                    "SELECT id, stamp_us, xml FROM pubsub_items WHERE owner = $1 AND node = $2 \
                     AND id = $3",
                )
                .bind(owner)
                .bind(node)
                .bind(id.as_str())
                .fetch_optional(&self.read)
                .await
                .map_err(db)?
                {
                    rows.push(row);
                }
            }
            rows
        };
        let mut items = rows
            .iter()
            .map(|row| {
                Ok(PubsubItem {
                    id: get(row, "id")?,
                    stamp_us: get(row, "stamp_us")?,
                    xml: get(row, "xml")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        items.sort_by_key(|i| std::cmp::Reverse(i.stamp_us));
        items.dedup_by(|a, b| a.id == b.id);
        Ok(items)
    }

    pub(super) async fn retract_pubsub_item_impl(
        &self,
        owner: &str,
        node: &str,
        id: &str,
    ) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM pubsub_items WHERE owner = $1 AND node = $2 AND id = $3")
                .bind(owner)
                .bind(node)
                .bind(id)
                .execute(&self.write)
                .await
                .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn purge_pubsub_node_impl(&self, owner: &str, node: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM pubsub_items WHERE owner = $1 AND node = $2")
            .bind(owner)
            .bind(node)
            .execute(&self.write)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    /// Everything `owner` owns, inside the account removal's transaction.
    pub(super) async fn delete_pubsub_owner(
        tx: &mut Transaction<'static, Any>,
        owner: &str,
    ) -> Result<()> {
        sqlx::query("DELETE FROM pubsub_nodes WHERE owner = $1")
            .bind(owner)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        Ok(())
    }
}

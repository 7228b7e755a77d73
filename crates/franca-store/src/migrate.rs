//! Schema migrations: per-backend SQL files compiled into the binary and applied in order by
//! [`run`], recorded in the `franca_schema` table.
//!
//! To add one: write `migrations/sqlite/NNNN_name.sql` *and* `migrations/postgres/NNNN_name.sql`
//! (same number and name, so both backends keep the same schema) and list them below. A unit test
//! checks that the lists match the files on disk.

use sqlx::AnyPool;

use crate::sql::{Backend, db};
use crate::{Result, StoreError};

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "fast_tokens",
        sql: include_str!("../migrations/sqlite/0002_fast_tokens.sql"),
    },
    Migration {
        version: 3,
        name: "push_registrations",
        sql: include_str!("../migrations/sqlite/0003_push_registrations.sql"),
    },
    Migration {
        version: 4,
        name: "mam",
        sql: include_str!("../migrations/sqlite/0004_mam.sql"),
    },
    Migration {
        version: 5,
        name: "pep",
        sql: include_str!("../migrations/sqlite/0005_pep.sql"),
    },
    Migration {
        version: 6,
        name: "muc",
        sql: include_str!("../migrations/sqlite/0006_muc.sql"),
    },
    Migration {
        version: 7,
        name: "pubsub_subscriptions",
        sql: include_str!("../migrations/sqlite/0007_pubsub_subscriptions.sql"),
    },
    Migration {
        version: 8,
        name: "federation_bars",
        sql: include_str!("../migrations/sqlite/0008_federation_bars.sql"),
    },
    Migration {
        version: 9,
        name: "muc_nicks",
        sql: include_str!("../migrations/sqlite/0009_muc_nicks.sql"),
    },
];

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "fast_tokens",
        sql: include_str!("../migrations/postgres/0002_fast_tokens.sql"),
    },
    Migration {
        version: 3,
        name: "push_registrations",
        sql: include_str!("../migrations/postgres/0003_push_registrations.sql"),
    },
    Migration {
        version: 4,
        name: "mam",
        sql: include_str!("../migrations/postgres/0004_mam.sql"),
    },
    Migration {
        version: 5,
        name: "pep",
        sql: include_str!("../migrations/postgres/0005_pep.sql"),
    },
    Migration {
        version: 6,
        name: "muc",
        sql: include_str!("../migrations/postgres/0006_muc.sql"),
    },
    Migration {
        version: 7,
        name: "pubsub_subscriptions",
        sql: include_str!("../migrations/postgres/0007_pubsub_subscriptions.sql"),
    },
    Migration {
        version: 8,
        name: "federation_bars",
        sql: include_str!("../migrations/postgres/0008_federation_bars.sql"),
    },
    Migration {
        version: 9,
        name: "muc_nicks",
        sql: include_str!("../migrations/postgres/0009_muc_nicks.sql"),
    },
];

/// Key for `pg_advisory_xact_lock`: an arbitrary constant ("franca" in ASCII) that other
/// applications sharing the database are unlikely to use.
const PG_MIGRATION_LOCK: i64 = 0x6672_616e_6361;

/// Apply every migration the database has not seen yet, all in one transaction.
///
/// Two processes may call this at once (the `franca user add` CLI next to a starting server):
/// SQLite's `BEGIN IMMEDIATE` and PostgreSQL's advisory lock make the second wait, and it then
/// sees the first one's versions and has nothing left to do.
pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    let migrations = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    let mut tx = pool.begin_with(backend.begin_write()).await.map_err(db)?;
    if backend == Backend::Postgres {
        // Taken before CREATE TABLE IF NOT EXISTS: concurrent creates of the same table race in
        // PostgreSQL (a unique violation in pg_type) even with IF NOT EXISTS.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS franca_schema (
            version BIGINT NOT NULL PRIMARY KEY,
            name TEXT NOT NULL,
            applied_us BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(db)?;

    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM franca_schema ORDER BY version")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
    // Refuse a database written by another build rather than run on a schema we do not know.
    for (version, name) in &applied {
        match migrations.iter().find(|m| m.version == *version) {
            Some(m) if m.name == name => {}
            Some(m) => {
                return Err(StoreError::Database(format!(
                    "schema migration {version} is recorded as {name:?} but this build calls it \
                     {:?}",
                    m.name
                )));
            }
            None => {
                return Err(StoreError::Database(format!(
                    "database schema version {version} ({name}) is newer than this build knows"
                )));
            }
        }
    }

    for m in migrations {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        tracing::info!(
            version = m.version,
            name = m.name,
            "applying storage migration"
        );
        // raw_sql: a migration file holds several statements, which PostgreSQL only accepts
        // through the simple query protocol.
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(|e| {
            StoreError::Database(format!("migration {} {}: {e}", m.version, m.name))
        })?;
        sqlx::query("INSERT INTO franca_schema (version, name, applied_us) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(now_us())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn on_disk(dir: &str) -> Vec<(i64, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut out: Vec<(i64, String)> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| {
                let file = e.unwrap().file_name().into_string().unwrap();
                let stem = file
                    .strip_suffix(".sql")
                    .expect("only .sql files in migrations/");
                let (num, name) = stem.split_once('_').expect("NNNN_name.sql");
                assert_eq!(num.len(), 4, "{file}: four-digit version");
                (num.parse().unwrap(), name.to_owned())
            })
            .collect();
        out.sort();
        out
    }

    fn listed(list: &[Migration]) -> Vec<(i64, String)> {
        list.iter()
            .map(|m| (m.version, m.name.to_owned()))
            .collect()
    }

    #[test]
    fn lists_match_files_and_backends_agree() {
        assert_eq!(listed(SQLITE), on_disk("sqlite"));
        assert_eq!(listed(POSTGRES), on_disk("postgres"));
        assert_eq!(listed(SQLITE), listed(POSTGRES));
        // Versions strictly increase from 1 with no gaps.
        for (i, m) in SQLITE.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
    }
}

//! Runs the shared conformance suite against both backends.
//!
//! SQLite always runs, in a temporary directory. PostgreSQL runs when `FRANCA_TEST_PG_URL`
//! names a role that may create databases (`eval "$(scripts/pg-start)"` starts a throwaway
//! server and sets it); each test creates its own uniquely named database through that URL and
//! drops it afterwards. With `FRANCA_REQUIRE_PG=1` a missing URL fails the PostgreSQL tests
//! instead of skipping them, so CI cannot pass without having tested PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Instant;

use franca_store::{Store, StoreError, conformance, open};
use futures_util::FutureExt;
use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    // A parent directory that does not exist yet: open creates it.
    let path = dir.path().join("not/yet/franca.db");
    let url = sqlite_url(&path);

    let started = Instant::now();
    let store = open(&url).await.unwrap();
    let opened = started.elapsed();
    conformance::run_all(&*store).await;
    println!(
        "sqlite: open (create + migrate) {opened:?}, conformance::run_all {:?}",
        started.elapsed() - opened
    );

    // Data survives close + reopen, and reopening applies no migration twice.
    store.create_user("kept@a.example", &[]).await.unwrap();
    store.close().await;
    drop(store);
    let store = open(&url).await.unwrap();
    assert!(store.user_exists("kept@a.example").await.unwrap());
    store.remove_user("kept@a.example").await.unwrap();
    // The suite leaves the store empty, so it can run again on the reopened file.
    conformance::run_all(&*store).await;
    store.close().await;

    // The file really is in WAL mode with the schema recorded once.
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM franca_schema ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_conformance() {
    let store = open("sqlite::memory:").await.unwrap();
    conformance::run_all(&*store).await;
    // Each in-memory store is private.
    let other = open("sqlite::memory:").await.unwrap();
    store.create_user("a@a.example", &[]).await.unwrap();
    assert!(!other.user_exists("a@a.example").await.unwrap());
}

/// Two processes (the CLI and the server) opening a new file at the same moment, then writing
/// to it at the same time: the second waits for the first's locks instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_openers_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("shared.db"));
    let (a, b) = tokio::join!(open(&url), open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    two_stores_write_concurrently(&*a, &*b).await;
}

async fn two_stores_write_concurrently(a: &dyn Store, b: &dyn Store) {
    let started = Instant::now();
    let writes = (0..40).map(|i| {
        let store = if i % 2 == 0 { a } else { b };
        async move {
            let user = format!("u{i:02}@a.example");
            store.create_user(&user, &[]).await.unwrap();
            store
                .push_offline(&user, i, "<message/>", 10)
                .await
                .unwrap();
        }
    });
    futures_util::future::join_all(writes).await;
    println!(
        "two stores, 40 concurrent create+push: {:?}",
        started.elapsed()
    );
    let users = a.list_users(Some("a.example")).await.unwrap();
    assert_eq!(users.len(), 40);
    assert_eq!(b.list_users(None).await.unwrap(), users);
    for u in &users {
        assert_eq!(b.offline_count(u).await.unwrap(), 1);
        a.remove_user(u).await.unwrap();
    }
}

#[tokio::test]
async fn bad_urls() {
    for url in [
        "",
        "mysql://localhost/franca",
        "franca.db",
        "sqlite://",
        "sqlite://x.db?mode=ro",
    ] {
        match open(url).await {
            Err(StoreError::BadUrl(_)) => {}
            Err(e) => panic!("{url:?}: expected BadUrl, got {e}"),
            Ok(_) => panic!("{url:?}: expected BadUrl, got a store"),
        }
    }
}

// ---- PostgreSQL

/// The admin URL, or `None` to skip (failing instead when `FRANCA_REQUIRE_PG=1`).
fn pg_admin_url() -> Option<String> {
    match std::env::var("FRANCA_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("FRANCA_REQUIRE_PG").as_deref() != Ok("1"),
                "FRANCA_REQUIRE_PG=1 but FRANCA_TEST_PG_URL is not set \
                 (run: eval \"$(scripts/pg-start)\")"
            );
            eprintln!("FRANCA_TEST_PG_URL not set: skipping the PostgreSQL test");
            None
        }
    }
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Run `body` on the URL of a new, empty database, then drop the database even if `body`
/// panicked, so reruns start clean.
async fn with_fresh_pg_database<F, Fut>(admin_url: &str, tag: &str, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("franca_test_{tag}_{}_{nanos}", std::process::id());
    let mut admin = PgConnection::connect(admin_url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let outcome = AssertUnwindSafe(body(with_database(admin_url, &name)))
        .catch_unwind()
        .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conformance() {
    let Some(admin) = pg_admin_url() else { return };
    with_fresh_pg_database(&admin, "conf", |url| async move {
        let started = Instant::now();
        let store = open(&url).await.unwrap();
        let opened = started.elapsed();
        conformance::run_all(&*store).await;
        println!(
            "postgres: open (migrate) {opened:?}, conformance::run_all {:?}",
            started.elapsed() - opened
        );

        store.create_user("kept@a.example", &[]).await.unwrap();
        store.close().await;
        drop(store);
        let store = open(&url).await.unwrap();
        assert!(store.user_exists("kept@a.example").await.unwrap());
        store.remove_user("kept@a.example").await.unwrap();
        conformance::run_all(&*store).await;
        store.close().await;

        let mut conn = PgConnection::connect(&url).await.unwrap();
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM franca_schema ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_openers_share_a_database() {
    let Some(admin) = pg_admin_url() else { return };
    with_fresh_pg_database(&admin, "two", |url| async move {
        let (a, b) = tokio::join!(open(&url), open(&url));
        let (a, b) = (a.unwrap(), b.unwrap());
        two_stores_write_concurrently(&*a, &*b).await;
        a.close().await;
        b.close().await;
    })
    .await;
}

#[test]
fn database_name_replacement() {
    assert_eq!(
        with_database("postgres://u:p@127.0.0.1:5433/postgres", "x"),
        "postgres://u:p@127.0.0.1:5433/x"
    );
    assert_eq!(
        with_database("postgresql://u@host?sslmode=disable", "x"),
        "postgresql://u@host/x?sslmode=disable"
    );
}

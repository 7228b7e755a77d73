#![allow(clippy::unwrap_used)]
use std::time::Instant;
use franca_store::*;

async fn bench(label: &str, store: &dyn Store) {
    let u = "perf@a.example";
    store.create_user(u, &[ScramCredentials{hash:"SHA-256".into(), salt: vec![1;16], iterations: 4096, stored_key: vec![2;32], server_key: vec![3;32]}]).await.unwrap();
    let n = 1000;
    let t = Instant::now();
    for i in 0..n { store.push_offline(u, i, "<message xmlns='jabber:client'><body>hello</body></message>", 10_000).await.unwrap(); }
    let push = t.elapsed() / n as u32;
    let t = Instant::now();
    let msgs = store.offline(u).await.unwrap();
    let read_all = t.elapsed();
    let ids: Vec<i64> = msgs.iter().map(|m| m.id).collect();
    let t = Instant::now();
    store.delete_offline(u, &ids).await.unwrap();
    let del = t.elapsed();
    let t = Instant::now();
    for _ in 0..n { store.credentials(u, "SHA-256").await.unwrap(); }
    let cred = t.elapsed() / n as u32;
    for i in 0..100 { store.put_roster_item(u, &RosterItem{jid: format!("c{i}@b.example"), groups: vec!["Friends".into()], ..Default::default()}).await.unwrap(); }
    let t = Instant::now();
    for _ in 0..100 { store.roster(u).await.unwrap(); }
    let roster = t.elapsed() / 100;
    let t = Instant::now();
    for i in 0..200 { store.put_roster_item(u, &RosterItem{jid: format!("c{}@b.example", i%100), groups: vec!["Work".into()], ..Default::default()}).await.unwrap(); }
    let put = t.elapsed() / 200;
    println!("{label}: push_offline {push:?}/op, offline() of 1000 {read_all:?}, delete 1000 {del:?}, credentials {cred:?}/op, roster(100 items) {roster:?}/op, put_roster_item {put:?}/op");
    store.remove_user(u).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&format!("sqlite://{}/p.db", dir.path().display())).await.unwrap();
    bench("sqlite", &*s).await;
    if let Ok(url) = std::env::var("FRANCA_TEST_PG_URL") {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("DROP DATABASE IF EXISTS franca_perf").execute(&mut c).await.unwrap();
        sqlx::raw_sql("CREATE DATABASE franca_perf").execute(&mut c).await.unwrap();
        let s = open(&url.replace("/postgres", "/franca_perf")).await.unwrap();
        bench("postgres", &*s).await;
        s.close().await;
        sqlx::raw_sql("DROP DATABASE franca_perf WITH (FORCE)").execute(&mut c).await.unwrap();
    }
}

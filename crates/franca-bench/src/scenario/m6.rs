//! M6 — archive (XEP-0313) query latency on a large archive ([`super::archive`]: 1M 1:1
//! messages among 1000 accounts in `quick` and `full`, each in both parties' archives):
//! `queriers` sessions ask open-loop (Poisson, `rate`/s in all) for (a) the last page of their
//! own archive (RSM `<before/>`), (b) the last page of one conversation (`with`), (c) the last
//! page and `pages - 1` more back (each asked when the one before it is complete; the walk is
//! timed as a whole, at `rate / pages` walks/s so the servers see the same page rate). Every
//! page must come back full, or the step is an error. Also: bytes per archived message.

use super::archive::{self, Stored};
use super::{Env, check_errors, login_upto, wait_quiet};
use crate::pool::Pool;
use crate::procfs;
use crate::proto::{Command, MamKind, Security};
use crate::server::ServerDir;
use crate::stats::Hist;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Params {
    pub store: archive::Size,
    pub queriers: u32,
    /// Queries (pages) per second.
    pub rate: f64,
    pub secs: f64,
    pub page: u32,
    /// Pages of one walk in (c).
    pub pages: u32,
    pub login_rate: f64,
}

/// One kind of query at one rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Query {
    /// Queries (walks for paging) per second.
    pub rate: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Archived messages returned.
    pub results: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Server CPU per query (ms).
    pub server_cpu_ms_per_query: f64,
    /// Generator CPU use during the step, in cores.
    pub generator_cpu: f64,
    pub hist: Hist,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct M6 {
    pub users: u32,
    pub store: Stored,
    pub last: Query,
    pub with: Query,
    pub paging: Query,
}

async fn step(
    pool: &mut Pool,
    pid: u32,
    kind: MamKind,
    rate: f64,
    p: &Params,
) -> Result<Query, String> {
    let k = pool.len() as f64;
    let cmd = Command::MamQuery {
        kind,
        rate: rate / k,
        secs: p.secs,
        page: p.page,
        pages: p.pages,
        partners: p.store.partners,
        drain_secs: 30.0,
    };
    let cpu0 = procfs::cpu_s(pid);
    let t0 = Instant::now();
    let res = pool.step(&format!("M6 {kind:?} {rate}/s"), &cmd).await?;
    let cpu = procfs::cpu_s(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let q = Query {
        rate,
        sent: res.sent,
        ok: res.ok,
        errors: res.errors,
        results: res.received,
        p50_ms: res.latency.ms(0.5),
        p99_ms: res.latency.ms(0.99),
        max_ms: res.latency.max_ms(),
        server_cpu_ms_per_query: if res.ok > 0 {
            cpu * 1e3 / res.ok as f64
        } else {
            0.0
        },
        generator_cpu: res.cpu_s / wall,
        hist: res.latency.clone(),
    };
    eprintln!(
        "  M6 {kind:?} at {rate}/s: {} of {} answered, {} messages, {}, server {:.2} ms/query, generator {:.0} %",
        q.ok,
        q.sent,
        q.results,
        res.latency.summary(),
        q.server_cpu_ms_per_query,
        q.generator_cpu * 100.0
    );
    check_errors(&format!("M6 {kind:?}"), &res)?;
    if q.ok == 0 {
        return Err(format!("M6 {kind:?}: no query was answered"));
    }
    Ok(q)
}

/// M6 on `server` (prepared, provisioned and filled by [`archive::populate`], which returned
/// `store`).
pub async fn run(env: &Env, server: &ServerDir, store: Stored, p: &Params) -> Result<M6, String> {
    let env = Env {
        server: server.clone(),
        ..env.clone()
    };
    let server = env.start().await?;
    let pid = server.pid;
    let r = async {
        // All accounts are the workers' (conversation partners are computed from them), the
        // first `queriers` of them log in.
        let mut pool =
            Pool::spawn(&env.plan(Security::Plain, archive::PREFIX, p.store.users)).await?;
        let cmds = login_upto(&pool, p.queriers, p.login_rate, false);
        let res = crate::worker::merge(&pool.step_each("M6 login", &cmds).await?);
        check_errors("M6 login", &res)?;
        let mut run = async |kind, rate| {
            wait_quiet(&[vec![pid], pool.pids()], Duration::from_secs(10)).await;
            step(&mut pool, pid, kind, rate, p).await
        };
        let last = run(MamKind::Last, p.rate).await?;
        let with = run(MamKind::With, p.rate).await?;
        let paging = run(MamKind::Paging, p.rate / f64::from(p.pages.max(1))).await?;
        pool.step("M6 logout", &Command::Logout).await?;
        pool.quit().await;
        Ok(M6 {
            users: p.store.users,
            store,
            last,
            with,
            paging,
        })
    }
    .await;
    server.stop().await;
    r
}

//! M4 — presence fan-out: accounts whose rosters hold `contacts` mutual (`both`) contacts log in
//! in a storm (open-loop Poisson at `rate`/s), each initial presence stamped in `<status/>`;
//! measured: p99 delivery latency of those presences to contacts already online, the login
//! latency during the storm, and the server's CPU for the storm.

use super::{Env, ROSTER_PREFIX, check_errors, login_upto};
use crate::pool::Pool;
use crate::procfs;
use crate::proto::{Command, Security};
use crate::stats::Hist;
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct M4 {
    pub users: u32,
    pub contacts: u32,
    pub rate: f64,
    pub presence: Hist,
    pub login: Hist,
    pub received: u64,
    /// Presences delivered twice to the same session (same sender and stamp).
    #[serde(default)]
    pub duplicates: u64,
    pub storm_s: f64,
    pub server_cpu_s: f64,
    pub errors: u64,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub users: u32,
    pub contacts: u32,
    pub rate: f64,
}

pub async fn run(env: &Env, security: Security, p: &Params) -> Result<M4, String> {
    let server = env.start().await?;
    let pid = server.pid;
    let r = async {
        let mut pool = Pool::spawn(&env.plan(security, ROSTER_PREFIX, p.users)).await?;
        let cpu0 = procfs::cpu_s(pid);
        let t0 = Instant::now();
        let cmds = login_upto(&pool, p.users, p.rate, true);
        let storm = crate::worker::merge(&pool.step_each("M4 storm", &cmds).await?);
        let storm_s = t0.elapsed().as_secs_f64();
        let tail = pool
            .step("M4 collect", &Command::Collect { secs: 3.0 })
            .await?;
        let server_cpu_s = procfs::cpu_s(pid) - cpu0;
        check_errors("M4 storm", &storm)?;
        let mut presence = storm.latency.clone();
        presence.add(&tail.latency);
        pool.step("M4 logout", &Command::Logout).await?;
        pool.quit().await;
        let out = M4 {
            users: p.users,
            contacts: p.contacts,
            rate: p.rate,
            received: storm.received + tail.received,
            duplicates: storm.duplicates + tail.duplicates,
            presence,
            login: storm.login,
            storm_s,
            server_cpu_s,
            errors: storm.errors + tail.errors,
        };
        eprintln!(
            "  M4: {} presences ({} duplicates), {}; logins {}; storm {:.1} s, server CPU {:.2} s",
            out.received,
            out.duplicates,
            out.presence.summary(),
            out.login.summary(),
            out.storm_s,
            out.server_cpu_s
        );
        Ok(out)
    }
    .await;
    server.stop().await;
    r
}

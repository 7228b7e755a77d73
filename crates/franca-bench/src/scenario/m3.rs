//! M3 — 1:1 messaging: server CPU per routed message at a fixed rate (from /proc/PID/stat),
//! then rising rates and bisection between the last passing and the first failing one; the
//! highest with p99 ≤ 10 ms and ≥ 99.9 % delivered.

use super::{
    Env, PLAIN_PREFIX, check_errors, login_upto, midpoint, recover, recover_limit, wait_quiet,
};
use crate::pool::Pool;
use crate::procfs;
use crate::proto::{Command, Security};
use crate::stats::Hist;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub rate: f64,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// p99 of how late the generator's scheduler fired (ms).
    pub lag_p99_ms: f64,
    pub server_cpu_us_per_msg: f64,
    /// Server CPU use during the step, in cores.
    pub server_cpu: f64,
    /// Generator CPU use during the step, in cores.
    pub generator_cpu: f64,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct M3 {
    pub fixed: Step,
    pub fixed_hist: Hist,
    /// The ladder's and the bisection's steps (not the fixed one), by rate.
    pub steps: Vec<Step>,
    /// Highest passing rate of all steps, the fixed one included (msg/s), 0 if none passed.
    pub best: f64,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub users: u32,
    pub fixed_rate: f64,
    pub secs: f64,
    pub rates: Vec<f64>,
    pub body: usize,
    pub login_rate: f64,
    /// Extra steps bisecting between the last passing and the first failing rung.
    pub bisect: u32,
}

async fn step(pool: &mut Pool, pid: u32, rate: f64, p: &Params) -> Result<(Step, Hist), String> {
    let k = pool.len() as f64;
    let cpu0 = procfs::cpu_s(pid);
    let t0 = Instant::now();
    let cmd = Command::Chat {
        rate: rate / k,
        secs: p.secs,
        body: p.body,
        drain_secs: 5.0,
    };
    let res = pool.step(&format!("M3 {rate} msg/s"), &cmd).await?;
    let cpu = procfs::cpu_s(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let delivered = if res.sent > 0 {
        res.received as f64 / res.sent as f64
    } else {
        0.0
    };
    let pass = res.latency.ms(0.99) <= 10.0 && delivered >= 0.999 && res.sent > 0;
    let s = Step {
        rate,
        sent: res.sent,
        received: res.received,
        errors: res.errors,
        p50_ms: res.latency.ms(0.5),
        p99_ms: res.latency.ms(0.99),
        p999_ms: res.latency.ms(0.999),
        max_ms: res.latency.max_ms(),
        lag_p99_ms: res.lag.ms(0.99),
        server_cpu_us_per_msg: if res.received > 0 {
            cpu * 1e6 / res.received as f64
        } else {
            0.0
        },
        server_cpu: cpu / wall,
        generator_cpu: res.cpu_s / wall,
        pass,
    };
    eprintln!(
        "  M3 {rate} msg/s: sent {} delivered {:.3} %, {}, server {:.1} µs/msg ({:.0} % core), generator {:.0} %, lag p99 {:.2} ms → {}",
        s.sent,
        delivered * 100.0,
        res.latency.summary(),
        s.server_cpu_us_per_msg,
        s.server_cpu * 100.0,
        s.generator_cpu * 100.0,
        s.lag_p99_ms,
        if pass { "pass" } else { "FAIL" }
    );
    Ok((s, res.latency))
}

/// Logs all accounts back in when sessions were lost (`online` are left).
///
/// An overloaded step can cost sessions: a server may close streams it cannot keep up with
/// (Franca closed 3 to 7 of 20 in forced 150000 msg/s overloads at smoke size). Sends from
/// those accounts then fail and messages to them are not delivered, so every later step would
/// fail on delivery whatever its rate. The ladder never met this (it stops at its first failure);
/// a bisection step must start from the state the ladder started from: every account online.
async fn relogin(pool: &mut Pool, pid: u32, p: &Params, online: u64) -> Result<(), String> {
    if online >= u64::from(p.users) {
        return Ok(());
    }
    eprintln!(
        "  M3: {} of {} sessions lost; logging all back in",
        u64::from(p.users) - online,
        p.users
    );
    pool.step("M3 logout", &Command::Logout).await?;
    let cmds = login_upto(pool, p.users, p.login_rate, false);
    let res = crate::worker::merge(&pool.step_each("M3 login", &cmds).await?);
    check_errors("M3 login", &res)?;
    // The logins' own aftermath (presence handling) should not fall into the step either.
    wait_quiet(&[vec![pid], pool.pids()], Duration::from_secs(10)).await;
    Ok(())
}

pub async fn run(env: &Env, security: Security, p: &Params) -> Result<M3, String> {
    let server = env.start().await?;
    let pid = server.pid;
    let r = async {
        let mut pool = Pool::spawn(&env.plan(security, PLAIN_PREFIX, p.users)).await?;
        let cmds = login_upto(&pool, p.users, p.login_rate, false);
        let res = crate::worker::merge(&pool.step_each("M3 login", &cmds).await?);
        check_errors("M3 login", &res)?;
        let (fixed, fixed_hist) = step(&mut pool, pid, p.fixed_rate, p).await?;
        let mut steps = Vec::new();
        // The fixed-rate step counts as the ladder's first rung.
        let mut best = if fixed.pass { p.fixed_rate } else { 0.0 };
        let mut failed = None;
        for &rate in &p.rates {
            let (s, _) = step(&mut pool, pid, rate, p).await?;
            let pass = s.pass;
            steps.push(s);
            if !pass {
                failed = Some(rate);
                break;
            }
            best = rate;
        }
        // Without a passing step there is no lower bound to bisect from: the result stays
        // "below the first rung", as before.
        if let Some(mut hi) = failed.filter(|_| best > 0.0) {
            for _ in 0..p.bisect {
                let Some(rate) = midpoint(best, hi) else {
                    break;
                };
                eprintln!("  M3 bisecting between {best} and {hi} msg/s");
                let rest = recover(&mut pool, pid, recover_limit(p.secs)).await?;
                relogin(&mut pool, pid, p, rest.online).await?;
                let (s, _) = step(&mut pool, pid, rate, p).await?;
                if s.pass {
                    best = rate;
                } else {
                    hi = rate;
                }
                steps.push(s);
            }
        }
        steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        pool.step("M3 logout", &Command::Logout).await?;
        pool.quit().await;
        Ok(M3 {
            fixed,
            fixed_hist,
            steps,
            best,
        })
    }
    .await;
    server.stop().await;
    r
}

//! M2 — login throughput at a latency bound: open-loop SCRAM logins (connect → stream → SASL →
//! bind → roster get → initial presence → ping) at doubling rates, then bisection between the
//! last passing and the first failing rate; the highest rate whose p99 is ≤ 100 ms with < 0.1 %
//! errors.

use super::{Env, PLAIN_PREFIX, midpoint, recover, recover_limit};
use crate::pool::Pool;
use crate::procfs;
use crate::proto::{Command, Security};
use crate::stats::Hist;
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub rate: f64,
    pub achieved: f64,
    pub ok: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub server_cpu_ms_per_login: f64,
    pub generator_cpu: f64,
    pub pass: bool,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct M2 {
    /// Every measured step, ladder and bisection, by rate.
    pub steps: Vec<Step>,
    /// Highest passing rate (logins/s), 0 if none passed.
    pub best: f64,
    /// Latency at the best rate.
    pub best_hist: Hist,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub rates: Vec<f64>,
    pub secs: f64,
    pub hold_s: f64,
    pub users: u32,
    /// Extra steps bisecting between the last passing and the first failing rung.
    pub bisect: u32,
}

async fn step(pool: &mut Pool, pid: u32, rate: f64, p: &Params) -> Result<(Step, Hist), String> {
    let k = pool.len() as f64;
    let cpu0 = procfs::cpu_s(pid);
    let t0 = Instant::now();
    let cmd = Command::Logins {
        rate: rate / k,
        secs: p.secs,
        hold_secs: p.hold_s,
    };
    let res = pool.step(&format!("M2 {rate}/s"), &cmd).await?;
    let cpu = procfs::cpu_s(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let attempts = res.ok + res.errors;
    let pass = res.login.ms(0.99) <= 100.0
        && attempts > 0
        && (res.errors as f64) <= 0.001 * attempts as f64;
    let step = Step {
        rate,
        achieved: res.ok as f64 / p.secs,
        ok: res.ok,
        errors: res.errors,
        p50_ms: res.login.ms(0.5),
        p99_ms: res.login.ms(0.99),
        server_cpu_ms_per_login: if res.ok > 0 {
            cpu * 1000.0 / res.ok as f64
        } else {
            0.0
        },
        generator_cpu: res.cpu_s / wall,
        pass,
        first_error: res.first_error.clone(),
    };
    eprintln!(
        "  M2 {rate}/s: {} ok, {} errors, p50 {:.2} ms, p99 {:.2} ms, {:.3} server CPU-ms/login, generator {:.0} % → {}",
        step.ok,
        step.errors,
        step.p50_ms,
        step.p99_ms,
        step.server_cpu_ms_per_login,
        step.generator_cpu * 100.0,
        if pass { "pass" } else { "FAIL" }
    );
    Ok((step, res.login))
}

pub async fn run(env: &Env, security: Security, p: &Params) -> Result<M2, String> {
    let server = env.start().await?;
    let pid = server.pid;
    let r = async {
        let mut pool = Pool::spawn(&env.plan(security, PLAIN_PREFIX, p.users)).await?;
        let mut out = M2 {
            steps: Vec::new(),
            best: 0.0,
            best_hist: Hist::default(),
        };
        let mut failed = None;
        for &rate in &p.rates {
            let (s, hist) = step(&mut pool, pid, rate, p).await?;
            let pass = s.pass;
            out.steps.push(s);
            if !pass {
                failed = Some(rate);
                break;
            }
            out.best = rate;
            out.best_hist = hist;
        }
        // Without a passing rung there is no lower bound to bisect from: the result stays
        // "below the first rung", as before.
        if let Some(mut hi) = failed.filter(|_| out.best > 0.0) {
            for _ in 0..p.bisect {
                let Some(rate) = midpoint(out.best, hi) else {
                    break;
                };
                eprintln!("  M2 bisecting between {}/s and {hi}/s", out.best);
                recover(&mut pool, pid, recover_limit(p.secs)).await?;
                let (s, hist) = step(&mut pool, pid, rate, p).await?;
                if s.pass {
                    out.best = rate;
                    out.best_hist = hist;
                } else {
                    hi = rate;
                }
                out.steps.push(s);
            }
        }
        out.steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        pool.quit().await;
        Ok(out)
    }
    .await;
    server.stop().await;
    r
}

//! M5 — group chat fan-out: `occupants` accounts enter one room that keeps no history (the
//! join storm: each entry is announced to everyone inside, O(N²) presences, measured from the
//! first join sent to the last occupant's own presence back), then stamped messages from
//! `senders` random occupants at rising rates with bisection, every copy
//! timed where it arrives. Passing: p99 per copy ≤ 50 ms and ≥ 99.9 % of the copies
//! (occupants × messages sent, the sender's own echo included) delivered. The server's CPU per
//! 1000 delivered copies comes from the fixed-rate step.

use super::{Env, check_errors, login_upto, midpoint, recover, recover_limit, wait_quiet};
use crate::pool::Pool;
use crate::procfs;
use crate::proto::{Command, Security};
use crate::server::MUC_DOMAIN;
use crate::stats::Hist;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Occupant accounts: `c1` … `cN`.
pub const PREFIX: &str = "c";
/// The room's local part.
pub const ROOM: &str = "bench";

#[derive(Debug, Clone)]
pub struct Params {
    pub occupants: u32,
    /// Joins per second in the storm (open-loop Poisson).
    pub join_rate: f64,
    pub senders: u32,
    /// In-messages/s of the step that measures CPU per delivery (best a rung of the ladder).
    pub fixed_rate: f64,
    /// In-messages/s of the ladder, lowest first.
    pub rates: Vec<f64>,
    pub secs: f64,
    pub body: usize,
    pub login_rate: f64,
    pub bisect: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// In-messages/s.
    pub rate: f64,
    pub sent: u64,
    /// Copies that should arrive: sent × occupants.
    pub expected: u64,
    pub received: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// p99 of how late the generator's scheduler fired (ms).
    pub lag_p99_ms: f64,
    /// Server CPU per 1000 delivered copies (ms).
    pub server_cpu_ms_per_1000: f64,
    /// Server CPU use during the step, in cores.
    pub server_cpu: f64,
    /// Generator CPU use during the step, in cores.
    pub generator_cpu: f64,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct M5 {
    pub occupants: u32,
    /// From the first join sent to the last occupant's own presence back (s).
    pub join_storm_s: f64,
    /// Server CPU during the storm (s).
    pub join_server_cpu_s: f64,
    /// Latency of each join (own presence back).
    pub join: Hist,
    /// The step at the fixed rate (also in `steps` when the ladder has that rung).
    pub fixed: Step,
    pub fixed_hist: Hist,
    /// The ladder's and the bisection's steps, by rate.
    pub steps: Vec<Step>,
    /// Highest passing in-message rate of all steps, the fixed one included (0 if none).
    pub best: f64,
}

/// The room's bare JID.
pub fn room() -> String {
    format!("{ROOM}@{MUC_DOMAIN}")
}

async fn step(
    pool: &mut Pool,
    pid: u32,
    rate: f64,
    senders: &[Vec<u32>],
    p: &Params,
) -> Result<(Step, Hist), String> {
    let total = senders.iter().map(Vec::len).sum::<usize>().max(1) as f64;
    let cmds: Vec<Command> = senders
        .iter()
        .map(|own| Command::MucChat {
            room: room(),
            senders: own.clone(),
            rate: rate * own.len() as f64 / total,
            secs: p.secs,
            body: p.body,
            drain_secs: 15.0,
        })
        .collect();
    let cpu0 = procfs::cpu_s(pid);
    let t0 = Instant::now();
    let res = crate::worker::merge(&pool.step_each(&format!("M5 {rate} msg/s"), &cmds).await?);
    let cpu = procfs::cpu_s(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let expected = res.sent * u64::from(p.occupants);
    let delivered = if expected > 0 {
        res.received as f64 / expected as f64
    } else {
        0.0
    };
    let pass = res.latency.ms(0.99) <= 50.0 && delivered >= 0.999 && res.sent > 0;
    let s = Step {
        rate,
        sent: res.sent,
        expected,
        received: res.received,
        errors: res.errors,
        p50_ms: res.latency.ms(0.5),
        p99_ms: res.latency.ms(0.99),
        p999_ms: res.latency.ms(0.999),
        max_ms: res.latency.max_ms(),
        lag_p99_ms: res.lag.ms(0.99),
        server_cpu_ms_per_1000: if res.received > 0 {
            cpu * 1e6 / res.received as f64
        } else {
            0.0
        },
        server_cpu: cpu / wall,
        generator_cpu: res.cpu_s / wall,
        pass,
    };
    eprintln!(
        "  M5 {rate} msg/s into {} occupants: sent {} delivered {:.3} % of {}, {}, server {:.2} ms/1000 copies ({:.0} % core), generator {:.0} %, lag p99 {:.2} ms → {}",
        p.occupants,
        s.sent,
        delivered * 100.0,
        s.expected,
        res.latency.summary(),
        s.server_cpu_ms_per_1000,
        s.server_cpu * 100.0,
        s.generator_cpu * 100.0,
        s.lag_p99_ms,
        if pass { "pass" } else { "FAIL" }
    );
    if let Some(e) = &res.first_error {
        eprintln!("  M5: {} errors, first: {e}", res.errors);
    }
    Ok((s, res.latency))
}

/// The `senders` accounts, chosen at random (seeded), grouped by the worker that holds them
/// (worker `w` holds accounts n with (n - 1) % workers == w).
fn pick_senders(p: &Params, workers: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut all: Vec<u32> = (1..=p.occupants).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    all.shuffle(&mut rng);
    let mut by_worker = vec![Vec::new(); workers];
    for n in all.into_iter().take(p.senders.max(1) as usize) {
        by_worker[(n as usize - 1) % workers].push(n);
    }
    by_worker
}

pub async fn run(env: &Env, p: &Params) -> Result<M5, String> {
    let server_dir = env
        .muc
        .clone()
        .ok_or("no group chat server was prepared for M5")?;
    let env = Env {
        server: server_dir,
        ..env.clone()
    };
    let server = env.start().await?;
    let pid = server.pid;
    let r = async {
        let mut pool = Pool::spawn(&env.plan(Security::Plain, PREFIX, p.occupants)).await?;
        let k = pool.len();
        let cmds = login_upto(&pool, p.occupants, p.login_rate, false);
        let res = crate::worker::merge(&pool.step_each("M5 login", &cmds).await?);
        check_errors("M5 login", &res)?;
        // The first occupant creates the room (an instant room) before anyone else enters.
        let join = |upto: u32, rate: f64| Command::MucJoin {
            room: room(),
            rate,
            upto,
            // Prosody took 80 s for 500 on a busy machine.
            secs: 300.0,
        };
        let first: Vec<Command> = (0..k)
            .map(|w| join(u32::from(w == 0), 1000.0))
            .collect();
        let res = crate::worker::merge(&pool.step_each("M5 create room", &first).await?);
        if res.ok != 1 {
            return Err(format!(
                "M5: creating the room failed: {}",
                res.first_error.unwrap_or_else(|| "no answer".into())
            ));
        }
        wait_quiet(&[vec![pid], pool.pids()], Duration::from_secs(10)).await;
        let cpu0 = procfs::cpu_s(pid);
        let t0 = Instant::now();
        let storm = crate::worker::merge(
            &pool
                .step_each(
                    "M5 join storm",
                    &vec![join(p.occupants, p.join_rate / k as f64); k],
                )
                .await?,
        );
        let join_storm_s = t0.elapsed().as_secs_f64();
        let join_server_cpu_s = procfs::cpu_s(pid) - cpu0;
        check_errors("M5 join storm", &storm)?;
        if storm.ok + 1 < u64::from(p.occupants) {
            return Err(format!(
                "M5: only {} of {} occupants entered the room",
                storm.ok + 1,
                p.occupants
            ));
        }
        eprintln!(
            "  M5: {} occupants entered in {join_storm_s:.2} s (server CPU {join_server_cpu_s:.2} s), joins {}",
            storm.ok + 1,
            storm.login.summary()
        );
        // The storm's last broadcasts must not fall into the first step.
        wait_quiet(&[vec![pid], pool.pids()], Duration::from_secs(30)).await;
        let senders = pick_senders(p, k, env.seed);
        // About one unmeasured message per sender first: the first copies to the occupants
        // wakes whatever the storm left idle (ejabberd's first step after a storm was 10×
        // slower than its second), which would otherwise decide the ladder's first rung.
        let warm: Vec<Command> = senders
            .iter()
            .map(|own| Command::MucChat {
                room: room(),
                senders: own.clone(),
                rate: own.len() as f64,
                secs: 1.0,
                body: p.body,
                drain_secs: 15.0,
            })
            .collect();
        pool.step_each("M5 warm-up", &warm).await?;
        wait_quiet(&[vec![pid], pool.pids()], Duration::from_secs(30)).await;
        // The ladder climbs from its lowest rung; the fixed-rate step (CPU per delivery, the
        // same rate on every server) is its rung of that rate, or measured after it when the
        // ladder stopped below.
        let mut steps = Vec::new();
        let mut fixed = None;
        let mut best = 0.0;
        let mut failed = None;
        for &rate in &p.rates {
            let (s, hist) = step(&mut pool, pid, rate, &senders, p).await?;
            let pass = s.pass;
            if rate == p.fixed_rate {
                fixed = Some((s.clone(), hist));
            }
            steps.push(s);
            if !pass {
                failed = Some(rate);
                break;
            }
            best = rate;
        }
        let (fixed, fixed_hist) = match fixed {
            Some(f) => f,
            None => {
                recover(&mut pool, pid, recover_limit(p.secs)).await?;
                let (s, hist) = step(&mut pool, pid, p.fixed_rate, &senders, p).await?;
                if s.pass && p.fixed_rate > best && failed.is_none_or(|hi| p.fixed_rate < hi) {
                    best = p.fixed_rate;
                }
                (s, hist)
            }
        };
        if let Some(mut hi) = failed.filter(|_| best > 0.0) {
            for _ in 0..p.bisect {
                let Some(rate) = midpoint(best, hi) else {
                    break;
                };
                eprintln!("  M5 bisecting between {best} and {hi} msg/s");
                let rest = recover(&mut pool, pid, recover_limit(p.secs)).await?;
                if rest.online < u64::from(p.occupants) {
                    // A lost occupant would fail every later step on delivery: stop here.
                    eprintln!(
                        "  M5: {} of {} occupants lost in the overload; no more bisection",
                        u64::from(p.occupants) - rest.online,
                        p.occupants
                    );
                    break;
                }
                let (s, _) = step(&mut pool, pid, rate, &senders, p).await?;
                if s.pass {
                    best = rate;
                } else {
                    hi = rate;
                }
                steps.push(s);
            }
        }
        steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        pool.step("M5 logout", &Command::Logout).await?;
        pool.quit().await;
        Ok(M5 {
            occupants: p.occupants,
            join_storm_s,
            join_server_cpu_s,
            join: storm.login,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_distinct_occupants_held_by_their_workers() {
        let p = Params {
            occupants: 500,
            join_rate: 500.0,
            senders: 5,
            fixed_rate: 10.0,
            rates: vec![],
            secs: 1.0,
            body: 64,
            login_rate: 100.0,
            bisect: 0,
        };
        let by_worker = pick_senders(&p, 4, 42);
        let mut all: Vec<u32> = by_worker.iter().flatten().copied().collect();
        assert_eq!(all.len(), 5);
        for (w, own) in by_worker.iter().enumerate() {
            assert!(own.iter().all(|&n| (n as usize - 1) % 4 == w && n <= 500));
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 5);
        assert_eq!(by_worker, pick_senders(&p, 4, 42));
    }
}

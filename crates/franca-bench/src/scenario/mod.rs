//! The scenarios of notes D-perf §4 (M1–M7), each driving one prepared server through the
//! worker pool and measuring the server from /proc. Provisioning (accounts, rosters) is here
//! too: it happens once per server, outside every timed window.

pub mod archive;
pub mod m1;
pub mod m2;
pub mod m3;
pub mod m4;
pub mod m5;
pub mod m6;
pub mod m7;
pub mod rosters;
pub mod seed;

use crate::pool::{Plan, Pool};
use crate::procfs;
use crate::proto::{Command, Security, StepResult};
use crate::server::{DOMAIN, Kind, Running, ServerDir};
use std::time::{Duration, Instant};

/// Accounts without rosters (M1–M3).
pub const PLAIN_PREFIX: &str = "u";
/// Accounts with ring rosters (M4).
pub const ROSTER_PREFIX: &str = "r";

/// Where and how a scenario runs.
#[derive(Debug, Clone)]
pub struct Env {
    pub server: ServerDir,
    pub mechs: Vec<String>,
    pub workers: usize,
    pub seed: u64,
    /// The same server on the populated store of M7 ([`seed`]), when M7 on it was asked for.
    pub populated: Option<ServerDir>,
    /// The same server with group chat for M5 (accounts provisioned), when M5 was asked for.
    pub muc: Option<ServerDir>,
    /// The same server with its message archive filled for M6 ([`archive`]), when M6 was
    /// asked for; for Franca also one on PostgreSQL when a database was given.
    pub archive: Option<(ServerDir, archive::Stored)>,
    pub archive_pg: Option<(ServerDir, archive::Stored)>,
}

impl Env {
    pub fn plan(&self, security: Security, prefix: &str, users: u32) -> Plan {
        Plan {
            target: self.server.target(security, &self.mechs),
            workers: self.workers.min(users.max(1) as usize).max(1),
            prefix: prefix.into(),
            users,
            first_source: 2,
            cache: Some(self.server.dir.join("scram.cache")),
            seed: self.seed,
        }
    }

    /// Starts the server, waits for its port, for stream features that offer SASL (ejabberd
    /// opens the port seconds before it serves logins), then for it to go quiet (under 3 % of
    /// a core over half a second, at most 30 s): ejabberd keeps booting after it listens.
    pub async fn start(&self) -> Result<Running, String> {
        let t0 = Instant::now();
        let mut r = self.server.start()?;
        if let Err(e) = self.ready(&mut r, t0).await {
            r.stop().await;
            return Err(e);
        }
        wait_quiet(&[vec![r.pid]], Duration::from_secs(30)).await;
        Ok(r)
    }

    async fn ready(&self, r: &mut Running, t0: Instant) -> Result<(), String> {
        r.wait_port(self.server.c2s, t0, Duration::from_secs(120))
            .await?;
        let target = self.server.target(Security::Plain, &self.mechs);
        let tls = crate::tls::connector()?;
        loop {
            let features = async {
                let mut x = crate::client::Xmpp::connect(&target, None, &tls).await?;
                let f = x.open(&target.domain).await?;
                x.close().await;
                Ok::<_, String>(f)
            };
            match tokio::time::timeout(Duration::from_secs(5), features).await {
                Ok(Ok(f)) if crate::xml::contains(&f, "mechanism") => return Ok(()),
                _ if t0.elapsed() > Duration::from_secs(120) => {
                    return Err(format!("{} never offered SASL", self.server.kind.name()));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Fails when more than 0.1 % of the operations failed (the run is invalid).
pub fn check_errors(what: &str, r: &StepResult) -> Result<(), String> {
    if r.error_rate() > 0.001 {
        return Err(format!(
            "{what}: {} errors of {} operations (> 0.1 %), run invalid; first: {}",
            r.errors,
            r.ok + r.errors + r.sent,
            r.first_error.as_deref().unwrap_or("-")
        ));
    }
    Ok(())
}

/// Per-worker `Login` commands that bring `n` accounts online in total, at `rate`/s overall.
pub fn login_upto(pool: &Pool, n: u32, rate: f64, stamp: bool) -> Vec<Command> {
    let k = pool.len() as u32;
    (0..k)
        .map(|w| Command::Login {
            rate: rate / k as f64,
            stamp_presence: stamp,
            upto: n / k + u32::from(w < n % k),
        })
        .collect()
}

/// Registers `{prefix}1..=n` (idempotent) and fills the SCRAM cache; with `contacts`, also
/// builds the ring rosters (mutual `both` subscriptions): through the protocol, except for
/// Prosody, whose roster files are written while it is stopped ([`rosters`]).
pub async fn provision(env: &Env, prefix: &str, n: u32, contacts: u32) -> Result<(), String> {
    eprintln!(
        "  provisioning {n} accounts {prefix}1..{prefix}{n} on {}",
        env.server.kind.name()
    );
    let server = env.start().await?;
    let r = async {
        let mut pool = Pool::spawn(&env.plan(Security::Plain, prefix, n)).await?;
        let res = pool
            .step("register", &Command::Register { concurrency: 16 })
            .await?;
        if res.errors > 0 {
            return Err(format!(
                "registration: {} errors, first: {}",
                res.errors,
                res.first_error.unwrap_or_default()
            ));
        }
        if contacts > 0 && env.server.kind != Kind::Prosody {
            let cmds = login_upto(&pool, n, 500.0, false);
            let res = pool.step_each("roster login", &cmds).await?;
            check_errors("roster login", &crate::worker::merge(&res))?;
            let res = pool
                .step(
                    "subscribe",
                    &Command::Subscribe {
                        contacts,
                        secs: 600.0,
                    },
                )
                .await?;
            if res.errors > 0 {
                return Err(format!(
                    "roster setup incomplete: {} accounts, first: {}",
                    res.errors,
                    res.first_error.unwrap_or_default()
                ));
            }
            pool.step("logout", &Command::Logout).await?;
        }
        pool.quit().await;
        Ok(())
    }
    .await;
    server.stop().await;
    r?;
    if contacts > 0 && env.server.kind == Kind::Prosody {
        rosters::write_prosody(&env.server.dir.join("data"), DOMAIN, prefix, n, contacts)?;
    }
    Ok(())
}

/// Waits, printing what for.
pub async fn settle(secs: f64, why: &str) {
    if secs > 0.0 {
        eprintln!("  waiting {secs:.0} s ({why})");
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
}

/// A process group counts as quiet when it used less than this many CPU seconds over one
/// [`QUIET_WINDOW`] (3 % of a core).
const QUIET_CPU_S: f64 = 0.015;
const QUIET_WINDOW: Duration = Duration::from_millis(500);

/// Waits until every group of processes (each summed with its children) has been quiet over
/// the same window, at most `limit`; returns how long that took, or `None` if some group was
/// still busy at the limit.
pub async fn wait_quiet(groups: &[Vec<u32>], limit: Duration) -> Option<Duration> {
    let cpu = |g: &Vec<u32>| g.iter().map(|&p| procfs::cpu_s(p)).sum::<f64>();
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let before: Vec<f64> = groups.iter().map(cpu).collect();
        tokio::time::sleep(QUIET_WINDOW).await;
        if groups
            .iter()
            .zip(&before)
            .all(|(g, c0)| cpu(g) - c0 < QUIET_CPU_S)
        {
            return Some(t0.elapsed());
        }
    }
    None
}

/// Brings the server and the generator back to rest before a bisection step, which usually
/// follows an overloaded step at a higher rate.
///
/// The ladder needs no such wait: each rung follows a passing one, which by definition left
/// (almost) no backlog, and a rung that fails ends the ladder. A bisection step does follow
/// failures, and an overloaded step leaves work behind that the next step would otherwise pay
/// for: logins the server accepted but had not finished when the client gave up, messages
/// queued in the server and, since chat bodies are stamped when written, messages still queued
/// in the workers' sessions (those would even arrive with fresh stamps, as if on time). All of
/// that shows up as CPU in the server or in the workers, so we wait until both have gone quiet
/// — a direct measure, where a fixed pause would be too short for an overload of a 60 s
/// window and wasted after a passing step — bounded by `limit` so a server that never settles
/// (background work of its own) costs time, not the run; that is reported, not hidden.
///
/// Then one empty command resets the workers' counters: what arrived during the wait (late
/// deliveries, bounces of the previous step) was counted against the previous step's
/// measurement start and would otherwise land in the next step's result. Its result (with the
/// sessions still online) is returned.
pub async fn recover(pool: &mut Pool, server: u32, limit: Duration) -> Result<StepResult, String> {
    match wait_quiet(&[vec![server], pool.pids()], limit).await {
        Some(t) if t > Duration::from_secs(1) => {
            eprintln!(
                "  server and generator quiet after {:.1} s",
                t.as_secs_f64()
            );
        }
        Some(_) => {}
        None => eprintln!(
            "  warning: server or generator still busy after {:.0} s; the next step may pay for the previous one",
            limit.as_secs_f64()
        ),
    }
    let late = pool.step("settle", &Command::Collect { secs: 0.0 }).await?;
    if late.received + late.errors > 0 {
        eprintln!(
            "  discarded after the previous step: {} late deliveries, {} errors (first: {})",
            late.received,
            late.errors,
            late.first_error.as_deref().unwrap_or("-")
        );
    }
    Ok(late)
}

/// How long [`recover`] may wait after a step of `secs`. In the profiles' ladders a failing rung
/// is at most 2.5 times one that passed, so an overloaded step leaves at most about 1.5 × `secs`
/// of the server's work behind; twice the window plus half a minute covers that with room.
pub fn recover_limit(secs: f64) -> Duration {
    Duration::from_secs_f64(30.0 + 2.0 * secs)
}

/// `x` rounded to two significant figures (bisected rates read like 2400, not 2412.5).
pub fn round2(x: f64) -> f64 {
    if !x.is_finite() || x <= 0.0 {
        return x;
    }
    let e = x.log10().floor() as i32 - 1;
    // Dividing by a power of ten that is exact keeps 7.5 from becoming 7.500000000000001.
    if e >= 0 {
        let s = 10f64.powi(e);
        (x / s).round() * s
    } else {
        let s = 10f64.powi(-e);
        (x * s).round() / s
    }
}

/// The next rate to measure between a passing `lo` and a failing `hi`: their midpoint rounded
/// to two significant figures, or `None` when the rounding leaves nothing new between them.
pub fn midpoint(lo: f64, hi: f64) -> Option<f64> {
    let m = round2((lo + hi) / 2.0);
    (m > lo && m < hi).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::{midpoint, round2};

    #[test]
    fn two_significant_figures() {
        assert_eq!(round2(2412.5), 2400.0);
        assert_eq!(round2(27500.0), 28000.0);
        assert_eq!(round2(1620.0), 1600.0);
        assert_eq!(round2(35000.0), 35000.0);
        assert_eq!(round2(7.56), 7.6);
        assert_eq!(round2(0.0), 0.0);
    }

    #[test]
    fn bisection_between_rungs() {
        // Franca's last run: M2 passed 1600 and failed 3200, M3 passed 20000 and failed 50000.
        assert_eq!(midpoint(1600.0, 3200.0), Some(2400.0));
        assert_eq!(midpoint(1600.0, 2400.0), Some(2000.0));
        assert_eq!(midpoint(2400.0, 3200.0), Some(2800.0));
        assert_eq!(midpoint(20000.0, 50000.0), Some(35000.0));
        assert_eq!(midpoint(20000.0, 35000.0), Some(28000.0));
        assert_eq!(midpoint(35000.0, 50000.0), Some(43000.0));
        // Nothing left between them at two significant figures.
        assert_eq!(midpoint(2000.0, 2100.0), None);
        assert_eq!(midpoint(20.0, 21.0), None);
    }
}

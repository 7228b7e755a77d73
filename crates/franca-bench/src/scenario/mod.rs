//! The scenarios of notes D-perf §4 (M1–M4, M7), each driving one prepared server through the
//! worker pool and measuring the server from /proc. Provisioning (accounts, rosters) is here
//! too: it happens once per server, outside every timed window.

pub mod m1;
pub mod m2;
pub mod m3;
pub mod m4;
pub mod m7;
pub mod rosters;

use crate::pool::{Plan, Pool};
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
        let quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(30) {
            let c0 = crate::procfs::cpu_s(r.pid);
            tokio::time::sleep(Duration::from_millis(500)).await;
            if crate::procfs::cpu_s(r.pid) - c0 < 0.015 {
                break;
            }
        }
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

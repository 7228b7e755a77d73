//! M1 — idle authenticated sessions: PSS of the server's process tree before (M0) and after
//! N sessions have logged in (SASL, bind, roster get, initial presence) and idled;
//! (M_N − M_0)/N per point, and what is left after everyone logged out.

use super::{Env, PLAIN_PREFIX, check_errors, login_upto, settle};
use crate::pool::Pool;
use crate::procfs::{self, Mem};
use crate::proto::{Command, Security};
use crate::stats::Hist;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub sessions: u32,
    pub mem: Mem,
    /// (PSS_N − PSS_0) / N.
    pub kib_per_session: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct M1 {
    pub security: Security,
    pub m0: Mem,
    pub points: Vec<Point>,
    pub after_logout: Mem,
    pub login: Hist,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub points: Vec<u32>,
    pub rate: f64,
    pub settle_s: f64,
}

pub async fn run(env: &Env, security: Security, p: &Params) -> Result<M1, String> {
    let max = p.points.iter().copied().max().unwrap_or(0);
    let server = env.start().await?;
    let pid = server.pid;
    let r = async {
        // Warm-up: one login and logout, then let the server settle.
        let mut warm = Pool::spawn(&env.plan(security, PLAIN_PREFIX, 1)).await?;
        let res = warm
            .step(
                "warm-up",
                &Command::Login {
                    rate: 10.0,
                    stamp_presence: false,
                    upto: 1,
                },
            )
            .await?;
        check_errors("M1 warm-up", &res)?;
        warm.step("warm-up", &Command::Logout).await?;
        warm.quit().await;
        settle(p.settle_s, "M0").await;
        let m0 = procfs::mem(pid);
        eprintln!("  M0: PSS {} KiB, RSS {} KiB", m0.pss_kib, m0.rss_kib);
        let mut pool = Pool::spawn(&env.plan(security, PLAIN_PREFIX, max)).await?;
        let mut points = Vec::new();
        let mut login = Hist::default();
        for &n in &p.points {
            let cmds = login_upto(&pool, n, p.rate, false);
            let res =
                crate::worker::merge(&pool.step_each(&format!("M1 login to {n}"), &cmds).await?);
            check_errors("M1 login", &res)?;
            login.add(&res.login);
            settle(p.settle_s, "idle sessions").await;
            let mem = procfs::mem(pid);
            let kib = (mem.pss_kib as f64 - m0.pss_kib as f64) / n as f64;
            eprintln!(
                "  N={n}: PSS {} KiB, RSS {} KiB, {kib:.2} KiB/session",
                mem.pss_kib, mem.rss_kib
            );
            points.push(Point {
                sessions: n,
                mem,
                kib_per_session: kib,
            });
        }
        pool.step("M1 logout", &Command::Logout).await?;
        pool.quit().await;
        settle(p.settle_s, "after logout").await;
        let after_logout = procfs::mem(pid);
        Ok(M1 {
            security,
            m0,
            points,
            after_logout,
            login,
        })
    }
    .await;
    server.stop().await;
    r
}

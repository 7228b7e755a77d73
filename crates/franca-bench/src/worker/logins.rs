//! Open-loop login load (M2): Poisson arrivals of whole login transactions, each session held
//! for a while and then closed, accounts taken round-robin from the worker's own.

use super::{Worker, exp_gap};
use crate::login;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;

pub async fn run(w: &mut Worker, rate: f64, secs: f64, hold_secs: f64) {
    if w.spec.users.is_empty() || rate <= 0.0 {
        return;
    }
    let start = Instant::now();
    let mut at = 0.0;
    let mut k = 0usize;
    let mut tasks = Vec::new();
    loop {
        at += exp_gap(&mut w.rng, rate);
        if at > secs {
            break;
        }
        let due = start + Duration::from_secs_f64(at);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        w.shared.lag_ns(due.elapsed().as_nanos() as u64);
        let user = w.user_name(w.spec.users[k % w.spec.users.len()]);
        k += 1;
        let resource = format!("l{k}");
        let ctx = w.ctx.clone();
        let shared = w.shared.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                login::login(&ctx, &user, &resource, false, &mut |_| {}),
            )
            .await;
            match r {
                Ok(Ok(s)) => {
                    shared.login_ns(t0.elapsed().as_nanos() as u64);
                    shared.ok.fetch_add(1, Relaxed);
                    shared.up.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_secs_f64(hold_secs)).await;
                    s.xmpp.close().await;
                    shared.up.fetch_sub(1, Relaxed);
                }
                Ok(Err(e)) => shared.error(format!("{user}: {e}")),
                Err(_) => shared.error(format!("{user}: login timed out")),
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

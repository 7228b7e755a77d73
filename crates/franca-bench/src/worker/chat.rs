//! 1:1 chat at a fixed aggregate rate: open-loop Poisson arrivals, a random online sender and a
//! random recipient among all accounts of the run (which live in every worker), body stamped at
//! the moment it is written.

use super::session::Out;
use super::{Worker, exp_gap};
use rand::Rng;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;

pub async fn run(w: &mut Worker, rate: f64, secs: f64, pad: usize, drain_secs: f64) {
    let senders: Vec<(u32, tokio::sync::mpsc::UnboundedSender<Out>)> = w
        .sessions
        .lock()
        .await
        .iter()
        .map(|h| (h.user, h.tx.clone()))
        .collect();
    if senders.is_empty() || rate <= 0.0 {
        return;
    }
    let total = w.spec.total_users;
    let start = Instant::now();
    let mut at = 0.0;
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
        let (me, tx) = &senders[w.rng.gen_range(0..senders.len())];
        let mut to = w.rng.gen_range(1..=total);
        while total > 1 && to == *me {
            to = w.rng.gen_range(1..=total);
        }
        if tx.send(Out::Chat { to, pad }).is_ok() {
            w.shared.sent.fetch_add(1, Relaxed);
        } else {
            w.shared.error("sending session is gone");
        }
    }
    drain(&w.shared, drain_secs, Duration::from_secs(1)).await;
}

/// Waits until nothing arrived for `quiet`, or `drain_secs` are up.
pub async fn drain(shared: &super::Shared, drain_secs: f64, quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs_f64(drain_secs);
    let mut last = shared.received.load(Relaxed);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = shared.received.load(Relaxed);
        if r != last {
            last = r;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= quiet {
            break;
        }
    }
}

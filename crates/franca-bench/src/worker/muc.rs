//! M5 in a worker: own sessions enter one room (the join storm), and stamped groupchat
//! messages from a few senders at a fixed aggregate rate (open-loop Poisson). Every session
//! measures every copy it receives, its own echo included, as the session task does for 1:1
//! chat.

use super::chat::drain;
use super::session::Out;
use super::{Worker, exp_gap};
use rand::Rng;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;

/// Sends joins to own online sessions not yet in the room, until `upto` of them are, at
/// `rate`/s; then waits (at most `secs`) for every join asked for here to be answered.
pub async fn join(w: &mut Worker, room: &str, rate: f64, upto: usize, secs: f64) {
    let start = Instant::now();
    let mut at = 0.0;
    let mut asked = 0u64;
    {
        let mut sessions = w.sessions.lock().await;
        let mut inside = sessions.iter().filter(|h| h.in_room).count();
        for h in sessions.iter_mut().filter(|h| !h.in_room) {
            if inside >= upto {
                break;
            }
            at += exp_gap(&mut w.rng, rate.max(1e-3));
            let due = start + Duration::from_secs_f64(at);
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            w.shared.lag_ns(due.elapsed().as_nanos() as u64);
            if h.tx
                .send(Out::Join {
                    room: room.to_owned(),
                })
                .is_ok()
            {
                h.in_room = true;
                inside += 1;
                asked += 1;
            } else {
                w.shared.error("joining session is gone");
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while w.shared.ok.load(Relaxed) + w.shared.errors.load(Relaxed) < asked
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = w.shared.ok.load(Relaxed) + w.shared.errors.load(Relaxed);
    if done < asked {
        w.shared.error(format!(
            "{} of {asked} room joins unanswered after {secs} s",
            asked - done
        ));
    }
}

/// Stamped groupchat at `rate` msg/s for `secs` from the own accounts in `senders`.
pub async fn chat(
    w: &mut Worker,
    room: &str,
    senders: &[u32],
    rate: f64,
    secs: f64,
    pad: usize,
    drain_secs: f64,
) {
    let txs: Vec<tokio::sync::mpsc::UnboundedSender<Out>> = w
        .sessions
        .lock()
        .await
        .iter()
        .filter(|h| senders.contains(&h.user))
        .map(|h| h.tx.clone())
        .collect();
    if txs.len() < senders.len() {
        w.shared.error(format!(
            "{} of {} senders are not online here",
            senders.len() - txs.len(),
            senders.len()
        ));
    }
    if !txs.is_empty() && rate > 0.0 {
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
            let tx = &txs[w.rng.gen_range(0..txs.len())];
            let out = Out::GroupChat {
                room: room.to_owned(),
                pad,
            };
            if tx.send(out).is_ok() {
                w.shared.sent.fetch_add(1, Relaxed);
            } else {
                w.shared.error("sending session is gone");
            }
        }
    }
    // A room may hold a message back for a while (ejabberd did, for over a second, in the
    // first step after a join storm): copies that come late are counted, with their latency,
    // rather than missed.
    drain(&w.shared, drain_secs, Duration::from_secs(3)).await;
}

//! M6 in a worker: XEP-0313 queries of the online sessions' own archives at a fixed aggregate
//! rate (open-loop Poisson), each by a random online session; the session task sends them,
//! pages back when asked to, and measures each query (or walk) from the first request to the
//! last `<fin/>`.

use super::session::Out;
use super::{Worker, exp_gap};
use crate::proto::MamKind;
use rand::Rng;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

/// What to ask and how often.
#[derive(Debug, Clone, Copy)]
pub struct Queries {
    pub kind: MamKind,
    pub rate: f64,
    pub secs: f64,
    pub page: u32,
    pub pages: u32,
    pub partners: u32,
}

/// The `k`-th conversation partner (0-based, of `partners`) of account `n` among `total`: the
/// ring neighbours `n + 1 ..= n + partners/2` and `n - 1 ..= n - partners/2`.
pub fn partner(n: u32, k: u32, partners: u32, total: u32) -> u32 {
    let half = (partners / 2).max(1);
    let d = k % half + 1;
    let i = n - 1;
    if k < half {
        (i + d) % total + 1
    } else {
        (i + total - d % total) % total + 1
    }
}

pub async fn run(w: &mut Worker, q: &Queries, drain_secs: f64) {
    let queriers: Vec<(u32, UnboundedSender<Out>)> = w
        .sessions
        .lock()
        .await
        .iter()
        .map(|h| (h.user, h.tx.clone()))
        .collect();
    if queriers.is_empty() || q.rate <= 0.0 {
        return;
    }
    let total = w.spec.total_users.max(1);
    let domain = w.spec.target.domain.clone();
    let start = Instant::now();
    let mut at = 0.0;
    loop {
        at += exp_gap(&mut w.rng, q.rate);
        if at > q.secs {
            break;
        }
        let due = start + Duration::from_secs_f64(at);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        w.shared.lag_ns(due.elapsed().as_nanos() as u64);
        let (me, tx) = &queriers[w.rng.gen_range(0..queriers.len())];
        let with = (q.kind == MamKind::With).then(|| {
            let k = w.rng.gen_range(0..q.partners.max(1));
            let p = partner(*me, k, q.partners, total);
            format!("{}{p}@{domain}", w.spec.prefix)
        });
        let pages = if q.kind == MamKind::Paging {
            q.pages
        } else {
            1
        };
        let out = Out::Mam {
            with,
            page: q.page,
            pages,
        };
        if tx.send(out).is_ok() {
            w.shared.sent.fetch_add(1, Relaxed);
        } else {
            w.shared.error("querying session is gone");
        }
    }
    // Every query ends in a result (ok) or an error; wait for the last ones.
    let deadline = Instant::now() + Duration::from_secs_f64(drain_secs);
    let answered = |w: &Worker| w.shared.ok.load(Relaxed) + w.shared.errors.load(Relaxed);
    while answered(w) < w.shared.sent.load(Relaxed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let missing = w.shared.sent.load(Relaxed).saturating_sub(answered(w));
    if missing > 0 {
        w.shared.error(format!(
            "{missing} archive queries unanswered (or with short pages) after {drain_secs} s"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::partner;

    #[test]
    fn partners_are_the_ring_neighbours() {
        // 10 partners of account 1 among 1000: 2..=6 and 1000..=996.
        let p: Vec<u32> = (0..10).map(|k| partner(1, k, 10, 1000)).collect();
        assert_eq!(p, vec![2, 3, 4, 5, 6, 1000, 999, 998, 997, 996]);
        let p: Vec<u32> = (0..4).map(|k| partner(500, k, 4, 1000)).collect();
        assert_eq!(p, vec![501, 502, 499, 498]);
    }
}

//! Run sizes: `smoke` (CI: tiny N, each scenario once, seconds), `quick` (minutes per server),
//! `full` (notes D-perf §4 as written: 10k/19k sessions, 60 s windows).
//!
//! M2 and M3 climb a coarse ladder, then bisect between the last passing and the first failing
//! rung: two steps narrow a 2× gap to ¼ of it (M2 1600 → 3200 gives 2400, then 2000 or 2800) at
//! the cost of two more measured windows; `smoke` does none so CI stays short.

use crate::scenario::{archive, m1, m2, m3, m4, m5, m6, seed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Smoke,
    Quick,
    Full,
}

#[derive(Debug, Clone)]
pub struct Sizes {
    pub m1: m1::Params,
    pub m2: m2::Params,
    pub m3: m3::Params,
    pub m4: m4::Params,
    pub m5: m5::Params,
    pub m6: m6::Params,
    pub m7_runs: usize,
    /// The populated store of M7.
    pub m7_store: seed::Size,
}

fn doubling(from: f64, to: f64) -> Vec<f64> {
    let mut v = Vec::new();
    let mut r = from;
    while r <= to {
        v.push(r);
        r *= 2.0;
    }
    v
}

/// M5 as notes D-perf §4 has it: 500 occupants, 5 senders; the ladder from 1 message/s in
/// (500 copies/s out); CPU per delivery at 10 messages/s in, 5000 copies/s out.
fn m5_params(secs: f64) -> m5::Params {
    m5::Params {
        occupants: 500,
        join_rate: 500.0,
        senders: 5,
        fixed_rate: 10.0,
        rates: vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
        secs,
        body: 64,
        login_rate: 400.0,
        bisect: 2,
    }
}

/// M6 as notes D-perf §4 has it: 1M 1:1 messages among 1000 accounts (2000 archived per
/// account, 10 conversations each), 50 queriers, pages of 50, walks of 10 pages; 50 pages/s.
fn m6_params(secs: f64) -> m6::Params {
    m6::Params {
        store: archive::Size {
            users: 1000,
            messages: 1_000_000,
            partners: 10,
        },
        queriers: 50,
        rate: 50.0,
        secs,
        page: 50,
        pages: 10,
        login_rate: 200.0,
    }
}

impl Profile {
    pub fn sizes(self) -> Sizes {
        match self {
            Profile::Smoke => Sizes {
                m1: m1::Params {
                    points: vec![10, 20],
                    rate: 100.0,
                    settle_s: 0.5,
                },
                m2: m2::Params {
                    rates: vec![20.0, 40.0],
                    secs: 1.5,
                    hold_s: 0.3,
                    users: 20,
                    bisect: 0,
                },
                m3: m3::Params {
                    users: 20,
                    fixed_rate: 100.0,
                    secs: 1.5,
                    rates: vec![200.0],
                    body: 64,
                    login_rate: 200.0,
                    bisect: 0,
                },
                m4: m4::Params {
                    users: 12,
                    contacts: 4,
                    rate: 50.0,
                },
                m5: m5::Params {
                    occupants: 20,
                    join_rate: 200.0,
                    senders: 5,
                    fixed_rate: 10.0,
                    rates: vec![10.0, 20.0],
                    secs: 1.5,
                    body: 64,
                    login_rate: 200.0,
                    bisect: 0,
                },
                m6: m6::Params {
                    store: archive::Size {
                        users: 12,
                        messages: 3600,
                        partners: 10,
                    },
                    queriers: 12,
                    rate: 20.0,
                    secs: 1.5,
                    page: 50,
                    pages: 10,
                    login_rate: 200.0,
                },
                m7_runs: 1,
                m7_store: seed::Size {
                    users: 50,
                    messages: 200,
                },
            },
            Profile::Quick => Sizes {
                m1: m1::Params {
                    points: vec![2000, 5000],
                    rate: 400.0,
                    settle_s: 10.0,
                },
                m2: m2::Params {
                    rates: doubling(100.0, 12800.0),
                    secs: 10.0,
                    hold_s: 1.0,
                    users: 5000,
                    bisect: 2,
                },
                m3: m3::Params {
                    users: 1000,
                    fixed_rate: 1000.0,
                    secs: 10.0,
                    rates: vec![
                        2000.0, 5000.0, 10000.0, 20000.0, 50000.0, 100000.0, 200000.0,
                    ],
                    body: 64,
                    login_rate: 400.0,
                    bisect: 2,
                },
                m4: m4::Params {
                    users: 200,
                    contacts: 100,
                    rate: 100.0,
                },
                m5: m5_params(10.0),
                m6: m6_params(20.0),
                m7_runs: 3,
                m7_store: seed::Size {
                    users: 100_000,
                    messages: 1_000_000,
                },
            },
            Profile::Full => Sizes {
                m1: m1::Params {
                    points: vec![10000, 19000],
                    rate: 400.0,
                    settle_s: 60.0,
                },
                m2: m2::Params {
                    rates: doubling(50.0, 12800.0),
                    secs: 60.0,
                    hold_s: 1.0,
                    users: 19000,
                    bisect: 2,
                },
                m3: m3::Params {
                    users: 1000,
                    fixed_rate: 1000.0,
                    secs: 60.0,
                    rates: vec![
                        2000.0, 5000.0, 10000.0, 20000.0, 50000.0, 100000.0, 200000.0,
                    ],
                    body: 64,
                    login_rate: 400.0,
                    bisect: 2,
                },
                m4: m4::Params {
                    users: 1000,
                    contacts: 100,
                    rate: 200.0,
                },
                m5: m5_params(60.0),
                m6: m6_params(60.0),
                m7_runs: 5,
                m7_store: seed::Size {
                    users: 100_000,
                    messages: 1_000_000,
                },
            },
        }
    }
}

impl Sizes {
    /// Accounts without rosters that the scenarios need.
    pub fn plain_users(&self) -> u32 {
        let m1 = self.m1.points.iter().copied().max().unwrap_or(0);
        m1.max(self.m2.users).max(self.m3.users)
    }
}

//! The side-by-side run: prepare and provision each server once, then for each round, each
//! scenario, each server in turn (interleaved, so slow drift of a shared machine hits all
//! alike); keep every raw result, and summarise medians, min–max and Franca/other ratios.

use crate::profile::Sizes;
use crate::proto::Security;
use crate::scenario::{self, Env, m1, m2, m3, m4, m7};
use crate::server::{Kind, ServerDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
pub enum Scenario {
    /// Idle sessions, plaintext.
    M1,
    /// Idle sessions, STARTTLS.
    M1tls,
    M2,
    M3,
    M4,
    M7,
    /// M7 on the populated store (100k accounts, 1M stored messages in `quick`).
    M7pop,
}

/// Everything one server produced in one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub m1_plain: Option<m1::M1>,
    pub m1_tls: Option<m1::M1>,
    pub m2: Option<m2::M2>,
    pub m3: Option<m3::M3>,
    pub m4: Option<m4::M4>,
    pub m7: Option<m7::M7>,
    #[serde(default)]
    pub m7_populated: Option<m7::M7>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub servers: Vec<Kind>,
    pub rounds: usize,
    pub sizes: Sizes,
    pub scenarios: Vec<Scenario>,
    pub work_dir: PathBuf,
    pub workers: usize,
    pub franca_bin: PathBuf,
    pub server_core: Option<usize>,
    pub mechs: Vec<String>,
    /// Put in front of the franca command (e.g. `valgrind --tool=dhat`).
    pub franca_wrap: Vec<String>,
}

/// All rounds of all servers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub rounds: BTreeMap<Kind, Vec<Outcome>>,
}

async fn one(env: &Env, sc: Scenario, sizes: &Sizes, scratch: &std::path::Path, out: &mut Outcome) {
    let name = env.server.kind.name();
    eprintln!("\n== {name} {sc:?}");
    let r: Result<(), String> = async {
        match sc {
            Scenario::M1 => out.m1_plain = Some(m1::run(env, Security::Plain, &sizes.m1).await?),
            Scenario::M1tls => {
                out.m1_tls = Some(m1::run(env, Security::Starttls, &sizes.m1).await?)
            }
            Scenario::M2 => out.m2 = Some(m2::run(env, Security::Plain, &sizes.m2).await?),
            Scenario::M3 => out.m3 = Some(m3::run(env, Security::Plain, &sizes.m3).await?),
            Scenario::M4 => out.m4 = Some(m4::run(env, Security::Plain, &sizes.m4).await?),
            Scenario::M7 => out.m7 = Some(m7::run(env, scratch, sizes.m7_runs).await?),
            Scenario::M7pop => {
                out.m7_populated = Some(m7::run_populated(env, sizes.m7_runs).await?)
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = r {
        eprintln!("  {name} {sc:?} FAILED: {e}");
        out.errors.push(format!("{sc:?}: {e}"));
    }
}

/// Runs everything; never stops at one failed scenario (it is recorded in `errors`).
pub async fn run(o: &Options) -> Result<Results, String> {
    let sizes = &o.sizes;
    let mut envs = Vec::new();
    for &kind in &o.servers {
        let server = ServerDir::prepare(kind, &o.work_dir, &o.franca_bin, o.server_core)?;
        let populated = if o.scenarios.contains(&Scenario::M7pop) {
            let dir = ServerDir::prepare(
                kind,
                &o.work_dir.join("m7-populated"),
                &o.franca_bin,
                o.server_core,
            )?;
            dir.enable_offline()?;
            scenario::seed::ensure(&dir, sizes.m7_store).await?;
            Some(dir)
        } else {
            None
        };
        let env = Env {
            server,
            mechs: o.mechs.clone(),
            workers: o.workers,
            seed: 42,
            populated,
        };
        let needs_plain = o.scenarios.iter().any(|s| {
            matches!(
                s,
                Scenario::M1 | Scenario::M1tls | Scenario::M2 | Scenario::M3
            )
        });
        if needs_plain {
            scenario::provision(&env, scenario::PLAIN_PREFIX, sizes.plain_users(), 0).await?;
        }
        if o.scenarios.contains(&Scenario::M4) {
            scenario::provision(
                &env,
                scenario::ROSTER_PREFIX,
                sizes.m4.users,
                sizes.m4.contacts,
            )
            .await?;
        }
        // Profiling wrappers apply to the measured runs, not to provisioning.
        let mut env = env;
        env.server.wrap.clone_from(&o.franca_wrap);
        envs.push(env);
    }
    let mut results = Results::default();
    for round in 1..=o.rounds {
        eprintln!("\n######## round {round} of {}", o.rounds);
        let mut outs: Vec<Outcome> = vec![Outcome::default(); envs.len()];
        for &sc in &o.scenarios {
            for (env, out) in envs.iter().zip(outs.iter_mut()) {
                let scratch = o.work_dir.join(format!("m7-{}", env.server.kind.name()));
                one(env, sc, sizes, &scratch, out).await;
            }
        }
        for (env, out) in envs.iter().zip(outs) {
            results.rounds.entry(env.server.kind).or_default().push(out);
        }
    }
    Ok(results)
}

/// Reads one number from one outcome.
pub type Getter = Box<dyn Fn(&Outcome) -> Option<f64>>;

/// A metric: label (with unit), which direction is better, and how to read it.
pub struct Metric {
    pub label: String,
    pub better: &'static str,
    pub get: Getter,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn metrics(sizes: &Sizes) -> Vec<Metric> {
    let mut m: Vec<Metric> = Vec::new();
    for (i, &n) in sizes.m1.points.iter().enumerate() {
        m.push(Metric {
            label: format!("M1 idle session, plaintext, N={n} (KiB/session)"),
            better: "lower",
            get: Box::new(move |o| {
                o.m1_plain
                    .as_ref()?
                    .points
                    .get(i)
                    .map(|p| p.kib_per_session)
            }),
        });
    }
    for (i, &n) in sizes.m1.points.iter().enumerate() {
        m.push(Metric {
            label: format!("M1 idle session, STARTTLS, N={n} (KiB/session)"),
            better: "lower",
            get: Box::new(move |o| o.m1_tls.as_ref()?.points.get(i).map(|p| p.kib_per_session)),
        });
    }
    m.push(Metric {
        label: "M1 PSS at start, M0 (MiB)".into(),
        better: "lower",
        get: Box::new(|o| o.m1_plain.as_ref().map(|r| r.m0.pss_kib as f64 / 1024.0)),
    });
    m.push(Metric {
        label: "M1 PSS after logout (MiB)".into(),
        better: "lower",
        get: Box::new(|o| {
            o.m1_plain
                .as_ref()
                .map(|r| r.after_logout.pss_kib as f64 / 1024.0)
        }),
    });
    m.push(Metric {
        label: "M2 login rate at p99 ≤ 100 ms (logins/s)".into(),
        better: "higher",
        get: Box::new(|o| o.m2.as_ref().map(|r| r.best)),
    });
    m.push(Metric {
        label: format!(
            "M3 server CPU per message at {} msg/s (µs)",
            sizes.m3.fixed_rate
        ),
        better: "lower",
        get: Box::new(|o| o.m3.as_ref().map(|r| r.fixed.server_cpu_us_per_msg)),
    });
    m.push(Metric {
        label: format!("M3 p99 latency at {} msg/s (ms)", sizes.m3.fixed_rate),
        better: "lower",
        get: Box::new(|o| o.m3.as_ref().map(|r| r.fixed.p99_ms)),
    });
    m.push(Metric {
        label: "M3 max rate, p99 ≤ 10 ms, ≥ 99.9 % delivered (msg/s)".into(),
        better: "higher",
        get: Box::new(|o| o.m3.as_ref().map(|r| r.best)),
    });
    m.push(Metric {
        label: format!(
            "M4 presence p99, {}×{} contacts, storm {}/s (ms)",
            sizes.m4.users, sizes.m4.contacts, sizes.m4.rate
        ),
        better: "lower",
        get: Box::new(|o| o.m4.as_ref().map(|r| r.presence.ms(0.99))),
    });
    m.push(Metric {
        label: "M4 presences delivered (count)".into(),
        better: "same",
        get: Box::new(|o| o.m4.as_ref().map(|r| r.received as f64)),
    });
    m.push(Metric {
        label: "M4 duplicate presences (count)".into(),
        better: "0",
        get: Box::new(|o| o.m4.as_ref().map(|r| r.duplicates as f64)),
    });
    m.push(Metric {
        label: "M4 login p99 during the storm (ms)".into(),
        better: "lower",
        get: Box::new(|o| o.m4.as_ref().map(|r| r.login.ms(0.99))),
    });
    m.push(Metric {
        label: "M4 server CPU for the storm (s)".into(),
        better: "lower",
        get: Box::new(|o| o.m4.as_ref().map(|r| r.server_cpu_s)),
    });
    m.push(Metric {
        label: "M7 exec → port open (ms)".into(),
        better: "lower",
        get: Box::new(|o| o.m7.as_ref().map(|r| median(&r.port_ms))),
    });
    m.push(Metric {
        label: "M7 exec → first login (ms)".into(),
        better: "lower",
        get: Box::new(|o| o.m7.as_ref().map(|r| median(&r.login_ms))),
    });
    m.push(Metric {
        label: "M7 populated store: exec → port open (ms)".into(),
        better: "lower",
        get: Box::new(|o| o.m7_populated.as_ref().map(|r| median(&r.port_ms))),
    });
    m.push(Metric {
        label: "M7 populated store: exec → first login (ms)".into(),
        better: "lower",
        get: Box::new(|o| o.m7_populated.as_ref().map(|r| median(&r.login_ms))),
    });
    m.push(Metric {
        label: "M7 populated store: stored messages received at that login (count)".into(),
        better: "same",
        get: Box::new(|o| {
            o.m7_populated.as_ref().map(|r| {
                r.messages.iter().map(|&n| f64::from(n)).sum::<f64>()
                    / r.messages.len().max(1) as f64
            })
        }),
    });
    m.push(Metric {
        label: "M7 populated store: PSS after first login (MiB)".into(),
        better: "lower",
        get: Box::new(|o| {
            o.m7_populated.as_ref().map(|r| {
                r.pss_kib.iter().map(|&k| k as f64).sum::<f64>()
                    / r.pss_kib.len().max(1) as f64
                    / 1024.0
            })
        }),
    });
    m
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The summary table (Markdown).
pub fn table(results: &Results, sizes: &Sizes) -> String {
    let kinds: Vec<Kind> = results.rounds.keys().copied().collect();
    let mut s = String::from("| metric | better |");
    for k in &kinds {
        s.push_str(&format!(" {} median (min–max) |", k.name()));
    }
    let others: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|k| *k != Kind::Franca)
        .collect();
    let has_franca = kinds.contains(&Kind::Franca);
    if has_franca {
        for k in &others {
            s.push_str(&format!(" Franca/{} |", k.name()));
        }
    }
    s.push_str("\n|---|---|");
    for _ in &kinds {
        s.push_str("---|");
    }
    if has_franca {
        for _ in &others {
            s.push_str("---|");
        }
    }
    s.push('\n');
    for m in metrics(sizes) {
        let mut meds = BTreeMap::new();
        let mut row = format!("| {} | {} |", m.label, m.better);
        for k in &kinds {
            let vals: Vec<f64> = results.rounds[k]
                .iter()
                .filter_map(|o| (m.get)(o))
                .collect();
            if vals.is_empty() {
                row.push_str(" – |");
                continue;
            }
            let med = median(&vals);
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            meds.insert(*k, med);
            row.push_str(&format!(" {} ({}–{}) |", fmt(med), fmt(lo), fmt(hi)));
        }
        if has_franca {
            for k in &others {
                match (meds.get(&Kind::Franca), meds.get(k)) {
                    (Some(f), Some(o)) if *o != 0.0 => row.push_str(&format!(" {:.3} |", f / o)),
                    _ => row.push_str(" – |"),
                }
            }
        }
        s.push_str(&row);
        s.push('\n');
    }
    s
}

/// Every error recorded, one line each.
pub fn errors(results: &Results) -> Vec<String> {
    let mut v = Vec::new();
    for (k, rounds) in &results.rounds {
        for (i, o) in rounds.iter().enumerate() {
            for e in &o.errors {
                v.push(format!("{} round {}: {e}", k.name(), i + 1));
            }
        }
    }
    v
}

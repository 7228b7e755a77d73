//! The side-by-side run: prepare and provision each server once, then for each round, each
//! scenario, each server in turn (interleaved, so slow drift of a shared machine hits all
//! alike); keep every raw result, and summarise medians, min–max and Franca/other ratios.

use crate::profile::Sizes;
use crate::proto::Security;
use crate::scenario::{self, Env, archive, m1, m2, m3, m4, m5, m6, m7};
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
    /// Group chat fan-out (one room, 500 occupants in `quick`).
    M5,
    /// Archive query latency (1M archived 1:1 messages in `quick`).
    M6,
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
    #[serde(default)]
    pub m5: Option<m5::M5>,
    #[serde(default)]
    pub m6: Option<m6::M6>,
    /// M6 of Franca on PostgreSQL (when `--franca-pg-url` was given).
    #[serde(default)]
    pub m6_pg: Option<m6::M6>,
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
    /// An empty PostgreSQL database for Franca's M6 on PostgreSQL.
    pub franca_pg_url: Option<String>,
    /// Seconds after midnight UTC to wait for between preparation and the rounds.
    pub wait_until: Option<u32>,
    /// Seconds after midnight UTC by which the rounds should end: a round that would not (by
    /// the longest one so far) is not started.
    pub finish_by: Option<u32>,
}

/// `HH:MM` as seconds after midnight.
pub fn parse_hhmm(s: &str) -> Result<u32, String> {
    let (h, m) = s.split_once(':').ok_or("expected HH:MM")?;
    let h: u32 = h.parse().map_err(|_| "bad hour")?;
    let m: u32 = m.parse().map_err(|_| "bad minute")?;
    if h > 23 || m > 59 {
        return Err("expected HH:MM between 00:00 and 23:59".into());
    }
    Ok(h * 3600 + m * 60)
}

/// How long until `at` (seconds after midnight UTC) from `now` (seconds since the epoch):
/// zero when `at` passed less than 12 hours ago (the run is late, not a day early).
pub fn until(at: u32, now: u64) -> u64 {
    let today = now % 86_400;
    let ahead = (u64::from(at) + 86_400 - today) % 86_400;
    if ahead > 12 * 3600 { 0 } else { ahead }
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
            Scenario::M5 => out.m5 = Some(m5::run(env, &sizes.m5).await?),
            Scenario::M6 => {
                let (dir, stored) = env.archive.as_ref().ok_or("no archive was filled for M6")?;
                out.m6 = Some(m6::run(env, dir, *stored, &sizes.m6).await?);
                if let Some((dir, stored)) = &env.archive_pg {
                    eprintln!("\n== {name} M6 on PostgreSQL");
                    out.m6_pg = Some(m6::run(env, dir, *stored, &sizes.m6).await?);
                }
            }
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

/// Prepares a server with its archive on (under `sub` of the work directory), registers the
/// accounts of M6 and fills their archives; with `pg_url`, Franca stores in that database.
async fn archive_server(
    env: &Env,
    o: &Options,
    sub: &str,
    pg_url: Option<&str>,
) -> Result<(ServerDir, archive::Stored), String> {
    let kind = env.server.kind;
    let dir = ServerDir::prepare(kind, &o.work_dir.join(sub), &o.franca_bin, o.server_core)?;
    dir.enable_mam()?;
    if let Some(url) = pg_url {
        archive::check_empty_pg(url).await?;
        dir.use_storage(url)?;
    }
    let on = Env {
        server: dir.clone(),
        ..env.clone()
    };
    let size = o.sizes.m6.store;
    size.check()?;
    scenario::provision(&on, archive::PREFIX, size.users, 0).await?;
    let stored = archive::populate(&dir, size, pg_url).await?;
    Ok((dir, stored))
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
        let mut env = Env {
            server,
            mechs: o.mechs.clone(),
            workers: o.workers,
            seed: 42,
            populated,
            muc: None,
            archive: None,
            archive_pg: None,
        };
        if o.scenarios.contains(&Scenario::M5) {
            let dir =
                ServerDir::prepare(kind, &o.work_dir.join("m5"), &o.franca_bin, o.server_core)?;
            dir.enable_muc()?;
            let on = Env {
                server: dir.clone(),
                ..env.clone()
            };
            scenario::provision(&on, m5::PREFIX, sizes.m5.occupants, 0).await?;
            env.muc = Some(dir);
        }
        if o.scenarios.contains(&Scenario::M6) {
            env.archive = Some(archive_server(&env, o, "m6", None).await?);
            if let (Kind::Franca, Some(url)) = (kind, &o.franca_pg_url) {
                env.archive_pg = Some(archive_server(&env, o, "m6-pg", Some(url)).await?);
            }
        }
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
        env.server.wrap.clone_from(&o.franca_wrap);
        envs.push(env);
    }
    if let Some(at) = o.wait_until {
        let now = crate::stats::now_ns() / 1_000_000_000;
        let secs = until(at, now);
        if secs > 0 {
            eprintln!(
                "\nprepared; waiting {secs} s until {:02}:{:02} UTC for the measured rounds",
                at / 3600,
                at % 3600 / 60
            );
            tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
        }
    }
    let mut results = Results::default();
    let mut longest = 0u64;
    for round in 1..=o.rounds {
        let started = crate::stats::now_ns() / 1_000_000_000;
        if let Some(by) = o.finish_by
            && round > 1
            && until(by, started) < longest
        {
            eprintln!(
                "\nround {round} would not end by {:02}:{:02} UTC (a round took {longest} s): stopping after {} rounds",
                by / 3600,
                by % 3600 / 60,
                round - 1
            );
            break;
        }
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
        longest = longest.max(crate::stats::now_ns() / 1_000_000_000 - started);
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
    let m5 = &sizes.m5;
    m.push(Metric {
        label: format!(
            "M5 join storm, {} occupants at {}/s (s)",
            m5.occupants, m5.join_rate
        ),
        better: "lower",
        get: Box::new(|o| o.m5.as_ref().map(|r| r.join_storm_s)),
    });
    m.push(Metric {
        label: "M5 server CPU for the join storm (s)".into(),
        better: "lower",
        get: Box::new(|o| o.m5.as_ref().map(|r| r.join_server_cpu_s)),
    });
    m.push(Metric {
        label: "M5 join p99 during the storm (ms)".into(),
        better: "lower",
        get: Box::new(|o| o.m5.as_ref().map(|r| r.join.ms(0.99))),
    });
    m.push(Metric {
        label: format!(
            "M5 server CPU per 1000 deliveries at {} msg/s in (ms)",
            m5.fixed_rate
        ),
        better: "lower",
        get: Box::new(|o| o.m5.as_ref().map(|r| r.fixed.server_cpu_ms_per_1000)),
    });
    m.push(Metric {
        label: format!("M5 p99 per copy at {} msg/s in (ms)", m5.fixed_rate),
        better: "lower",
        get: Box::new(|o| o.m5.as_ref().map(|r| r.fixed.p99_ms)),
    });
    m.push(Metric {
        label: "M5 max in-rate, p99 per copy ≤ 50 ms, ≥ 99.9 % delivered (msg/s)".into(),
        better: "higher",
        get: Box::new(|o| o.m5.as_ref().map(|r| r.best)),
    });
    m.push(Metric {
        label: "M5 deliveries/s at that rate (occupants × in)".into(),
        better: "higher",
        get: Box::new(|o| o.m5.as_ref().map(|r| r.best * f64::from(r.occupants))),
    });
    for (pg, db) in [(false, ""), (true, ", Franca on PostgreSQL")] {
        let pick = move |o: &Outcome| if pg { o.m6_pg.clone() } else { o.m6.clone() };
        m.push(Metric {
            label: format!(
                "M6 archive bytes per archived message ({} archived among {} accounts, \
                 queries at {} pages/s){db}",
                sizes.m6.store.rows(),
                sizes.m6.store.users,
                sizes.m6.rate
            ),
            better: "lower",
            get: Box::new(move |o| pick(o).map(|r| r.store.bytes_per_row)),
        });
        type Part = fn(&m6::M6) -> &m6::Query;
        let parts: [(&str, Part); 3] = [
            ("last page of own archive", |r| &r.last),
            ("last page with one JID", |r| &r.with),
            ("walk of pages back", |r| &r.paging),
        ];
        for (what, part) in parts {
            for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                m.push(Metric {
                    label: format!("M6 {what}, {name}{db} (ms)"),
                    better: "lower",
                    get: Box::new(move |o| pick(o).map(|r| part(&r).hist.ms(q))),
                });
            }
        }
        m.push(Metric {
            label: format!(
                "M6 server CPU per last-page query{} (ms)",
                if pg {
                    ", Franca on PostgreSQL (Franca's process only)"
                } else {
                    ""
                }
            ),
            better: "lower",
            get: Box::new(move |o| pick(o).map(|r| r.last.server_cpu_ms_per_query)),
        });
    }
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

#[cfg(test)]
mod tests {
    use super::{parse_hhmm, until};

    #[test]
    fn waits_until_the_time_of_day() {
        assert_eq!(parse_hhmm("01:20"), Ok(4800));
        assert!(parse_hhmm("24:00").is_err());
        assert!(parse_hhmm("0120").is_err());
        let day = 20_000 * 86_400;
        // 00:10 → 01:20 is 70 minutes; 01:30 → 01:20 has passed: no wait.
        assert_eq!(until(4800, day + 600), 4200);
        assert_eq!(until(4800, day + 5400), 0);
        // 23:50 → 00:10 the next day.
        assert_eq!(until(600, day + 85_800), 1200);
    }
}

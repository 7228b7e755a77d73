//! Writes a run's artefacts into the output directory: `results.json` (every raw number),
//! `report.md` (machine, command, table, errors) and the SVG plots (latency CDFs, memory
//! against sessions).

use crate::compare::{self, Outcome, Results};
use crate::procfs;
use crate::profile::Sizes;
use crate::server::Kind;
use crate::stats::Hist;
use crate::svg::Plot;
use std::path::Path;

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn merged(rounds: &[Outcome], get: impl Fn(&Outcome) -> Option<&Hist>) -> Hist {
    let mut h = Hist::default();
    for o in rounds {
        if let Some(x) = get(o) {
            h.add(x);
        }
    }
    h
}

fn cdf_plot(
    results: &Results,
    title: &str,
    get: impl Fn(&Outcome) -> Option<&Hist> + Copy,
) -> Option<Plot> {
    let series: Vec<(String, Vec<(f64, f64)>)> = results
        .rounds
        .iter()
        .map(|(k, r)| {
            let h = merged(r, get);
            (
                format!("{} (p99 {:.2} ms, n={})", k.name(), h.ms(0.99), h.count()),
                h.cdf(),
            )
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    (!series.is_empty()).then(|| Plot {
        title: title.into(),
        x_label: "latency (ms, log scale)".into(),
        y_label: "fraction of samples ≤ x".into(),
        x_log: true,
        series,
    })
}

fn memory_plot(results: &Results) -> Option<Plot> {
    let mut series = Vec::new();
    for (k, rounds) in &results.rounds {
        for (tls, name) in [(false, "plaintext"), (true, "STARTTLS")] {
            let m1 = rounds.iter().find_map(|o| {
                if tls {
                    o.m1_tls.as_ref()
                } else {
                    o.m1_plain.as_ref()
                }
            });
            if let Some(m) = m1 {
                let mut pts = vec![(0.0, m.m0.pss_kib as f64 / 1024.0)];
                pts.extend(
                    m.points
                        .iter()
                        .map(|p| (p.sessions as f64, p.mem.pss_kib as f64 / 1024.0)),
                );
                series.push((format!("{} {name}", k.name()), pts));
            }
        }
    }
    (!series.is_empty()).then(|| Plot {
        title: "M1: server PSS against idle sessions".into(),
        x_label: "authenticated idle sessions".into(),
        y_label: "PSS of the server's process tree (MiB)".into(),
        x_log: false,
        series,
    })
}

/// Writes everything; returns the Markdown report.
pub fn write_all(
    out: &Path,
    results: &Results,
    sizes: &Sizes,
    command: &str,
    profile: &str,
) -> Result<String, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
    let json = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    write(&out.join("results.json"), &json)?;
    let mut plots = Vec::new();
    if let Some(p) = memory_plot(results) {
        plots.push(("m1-memory.svg", p));
    }
    if let Some(p) = cdf_plot(results, "M2: login latency at the best passing rate", |o| {
        o.m2.as_ref().map(|m| &m.best_hist)
    }) {
        plots.push(("m2-login-cdf.svg", p));
    }
    if let Some(p) = cdf_plot(
        results,
        &format!("M3: 1:1 message latency at {} msg/s", sizes.m3.fixed_rate),
        |o| o.m3.as_ref().map(|m| &m.fixed_hist),
    ) {
        plots.push(("m3-latency-cdf.svg", p));
    }
    if let Some(p) = cdf_plot(
        results,
        "M4: presence delivery latency during the login storm",
        |o| o.m4.as_ref().map(|m| &m.presence),
    ) {
        plots.push(("m4-presence-cdf.svg", p));
    }
    if let Some(p) = cdf_plot(
        results,
        &format!(
            "M5: latency per copy, {} occupants, {} msg/s in",
            sizes.m5.occupants, sizes.m5.fixed_rate
        ),
        |o| o.m5.as_ref().map(|m| &m.fixed_hist),
    ) {
        plots.push(("m5-groupchat-cdf.svg", p));
    }
    if let Some(p) = cdf_plot(
        results,
        &format!(
            "M6: last page ({}) of own archive, {} queries/s",
            sizes.m6.page, sizes.m6.rate
        ),
        |o| o.m6.as_ref().map(|m| &m.last.hist),
    ) {
        plots.push(("m6-query-cdf.svg", p));
    }
    for (name, p) in &plots {
        write(&out.join(name), &p.render())?;
    }
    let mut md = String::new();
    md.push_str(&format!("Machine: {}  \n", procfs::machine()));
    md.push_str(&format!(
        "Load average at the end: {}  \n",
        procfs::loadavg()
    ));
    md.push_str(&format!("Profile: `{profile}`  \nCommand: `{command}`\n\n"));
    md.push_str(&compare::table(results, sizes));
    let rounds = results.rounds.values().map(Vec::len).max().unwrap_or(0);
    md.push_str(&format!(
        "\nMedians over {rounds} interleaved round(s); ratios are Franca's median divided by the other's.\n"
    ));
    let errs = compare::errors(results);
    if !errs.is_empty() {
        md.push_str("\nErrors (those runs are missing from the table):\n\n");
        for e in errs {
            md.push_str(&format!("- {}\n", e.replace('\n', " ")));
        }
    }
    for (k, rounds) in &results.rounds {
        md.push_str(&details(*k, rounds));
    }
    if !plots.is_empty() {
        md.push_str("\nPlots: ");
        md.push_str(
            &plots
                .iter()
                .map(|(n, _)| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        md.push('\n');
    }
    write(&out.join("report.md"), &md)?;
    Ok(md)
}

/// Step tables of M2, M3 and M5 and the M6 queries for one server (round 1).
fn details(k: Kind, rounds: &[Outcome]) -> String {
    let mut s = String::new();
    if let Some(m2) = rounds.iter().find_map(|o| o.m2.as_ref()) {
        s.push_str(&format!(
            "\n{} M2 steps (round 1): | rate | ok | errors | p50 ms | p99 ms | server CPU ms/login | pass |\n|---|---|---|---|---|---|---|\n",
            k.name()
        ));
        for st in &m2.steps {
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.3} | {} |\n",
                st.rate,
                st.ok,
                st.errors,
                st.p50_ms,
                st.p99_ms,
                st.server_cpu_ms_per_login,
                st.pass
            ));
        }
    }
    if let Some(m3) = rounds.iter().find_map(|o| o.m3.as_ref()) {
        s.push_str(&format!(
            "\n{} M3 steps (round 1): | rate | sent | delivered % | p50 ms | p99 ms | p99.9 ms | server µs/msg | server core % | generator core % | pass |\n|---|---|---|---|---|---|---|---|---|---|\n",
            k.name()
        ));
        for st in std::iter::once(&m3.fixed).chain(&m3.steps) {
            let d = if st.sent > 0 {
                st.received as f64 * 100.0 / st.sent as f64
            } else {
                0.0
            };
            s.push_str(&format!(
                "| {} | {} | {:.3} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} | {} |\n",
                st.rate,
                st.sent,
                d,
                st.p50_ms,
                st.p99_ms,
                st.p999_ms,
                st.server_cpu_us_per_msg,
                st.server_cpu * 100.0,
                st.generator_cpu * 100.0,
                st.pass
            ));
        }
    }
    if let Some(m5) = rounds.iter().find_map(|o| o.m5.as_ref()) {
        s.push_str(&format!(
            "\n{} M5 steps (round 1, {} occupants; join storm {:.2} s): | msg/s in | sent | copies delivered % | p50 ms | p99 ms | p99.9 ms | server ms/1000 copies | server core % | generator core % | pass |\n|---|---|---|---|---|---|---|---|---|---|\n",
            k.name(),
            m5.occupants,
            m5.join_storm_s
        ));
        let fixed_apart = !m5.steps.iter().any(|st| st.rate == m5.fixed.rate);
        for st in fixed_apart
            .then_some(&m5.fixed)
            .into_iter()
            .chain(&m5.steps)
        {
            let d = if st.expected > 0 {
                st.received as f64 * 100.0 / st.expected as f64
            } else {
                0.0
            };
            s.push_str(&format!(
                "| {} | {} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {} |\n",
                st.rate,
                st.sent,
                d,
                st.p50_ms,
                st.p99_ms,
                st.p999_ms,
                st.server_cpu_ms_per_1000,
                st.server_cpu * 100.0,
                st.generator_cpu * 100.0,
                st.pass
            ));
        }
    }
    for (o, db) in rounds
        .iter()
        .find_map(|o| o.m6.as_ref())
        .map(|m| (m, ""))
        .into_iter()
        .chain(
            rounds
                .iter()
                .find_map(|o| o.m6_pg.as_ref())
                .map(|m| (m, ", PostgreSQL")),
        )
    {
        s.push_str(&format!(
            "\n{} M6 (round 1{db}; {} archived messages among {} accounts, {:.0} bytes each, filled in {:.0} s): | query | per s | answered | messages returned | p50 ms | p99 ms | max ms | server ms/query | generator core % |\n|---|---|---|---|---|---|---|---|---|\n",
            k.name(),
            o.store.rows,
            o.users,
            o.store.bytes_per_row,
            o.store.populate_s
        ));
        for (name, q) in [
            ("last page", &o.last),
            ("last page, with", &o.with),
            ("walk back", &o.paging),
        ] {
            s.push_str(&format!(
                "| {name} | {} | {} of {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |\n",
                q.rate,
                q.ok,
                q.sent,
                q.results,
                q.p50_ms,
                q.p99_ms,
                q.max_ms,
                q.server_cpu_ms_per_query,
                q.generator_cpu * 100.0
            ));
        }
    }
    s
}

//! `franca-bench`: the load generator and benchmark driver for Franca, side by side with
//! Prosody and ejabberd (issue 3; method in `../shared/notes/D-perf.md` §4–5).
//!
//! It speaks real XMPP over plaintext, STARTTLS or direct TLS with SASL PLAIN or
//! SCRAM-SHA-1/-256, spreads its sessions over worker processes with distinct source
//! addresses (127.0.0.x), drives open-loop Poisson arrivals, stamps messages and presences and
//! keeps HDR histograms, and measures the server's memory (PSS) and CPU from /proc.
//!
//! ```text
//! franca-bench compare --servers franca,prosody,ejabberd --rounds 3 --profile quick --out bench/results
//! franca-bench compare --servers franca --profile smoke          # what bench/smoke runs
//! ```
//!
//! Layout: `xml` (stream splitter), `sasl`, `tls`, `net` (sockets), `client` + `login` (one
//! connection and the login transaction), `worker/` (a worker process: sessions, chat,
//! logins), `pool` (the coordinator's side of the workers), `server` (launch the servers under
//! test), `scenario/` (M1–M7), `compare` (rounds, medians, ratios), `report` + `svg`.

mod client;
mod compare;
mod login;
mod net;
mod pool;
mod procfs;
mod profile;
mod proto;
mod report;
mod sasl;
mod scenario;
mod server;
mod stats;
mod svg;
mod tls;
mod worker;
mod xml;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "franca-bench",
    about = "XMPP load generator: Franca vs Prosody vs ejabberd"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only obscure the CLI
enum Cmd {
    /// Run scenarios on one or more servers, interleaved, and write the report.
    Compare {
        /// Servers to run, in this order each round.
        #[arg(long, value_delimiter = ',', default_value = "franca,prosody,ejabberd")]
        servers: Vec<server::Kind>,
        /// Scenarios to run, in this order each round.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "m1,m1tls,m2,m3,m4,m5,m6,m7,m7pop"
        )]
        scenarios: Vec<compare::Scenario>,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, value_enum, default_value = "quick")]
        profile: profile::Profile,
        /// Where results.json, report.md and the SVG plots go.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Scratch directory for the servers' data (default: a new one under /tmp).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Load generator processes (each from its own 127.0.0.x).
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// The franca binary.
        #[arg(long, default_value = "target/release/franca")]
        franca_bin: PathBuf,
        /// Pin the servers to this core (`taskset -c`); run franca-bench itself under
        /// `taskset` on another core.
        #[arg(long)]
        server_core: Option<usize>,
        /// SASL mechanisms in order of preference (the first one every server stores is used).
        #[arg(long, value_delimiter = ',', default_value = "SCRAM-SHA-1")]
        mechs: Vec<String>,
        /// Override the profile's M1 session counts (comma-separated).
        #[arg(long, value_delimiter = ',')]
        m1_points: Option<Vec<u32>>,
        /// Override the profile's M1 login arrival rate (logins/s).
        #[arg(long)]
        m1_rate: Option<f64>,
        /// Override the profile's M4 account count.
        #[arg(long)]
        m4_users: Option<u32>,
        /// Override the profile's M4 roster size.
        #[arg(long)]
        m4_contacts: Option<u32>,
        /// Override the profile's M2 rate ladder (logins/s, comma-separated).
        #[arg(long, value_delimiter = ',')]
        m2_rates: Option<Vec<f64>>,
        /// Override the profile's M3 rate ladder (msg/s, comma-separated).
        #[arg(long, value_delimiter = ',')]
        m3_rates: Option<Vec<f64>>,
        /// Override the profile's number of M2 and M3 steps that bisect between the last
        /// passing and the first failing rung (smoke 0, quick and full 2).
        #[arg(long)]
        bisect_steps: Option<u32>,
        /// Override the profile's M5 room size.
        #[arg(long)]
        m5_occupants: Option<u32>,
        /// Override the profile's M5 rate ladder (messages/s into the room, comma-separated).
        #[arg(long, value_delimiter = ',')]
        m5_rates: Option<Vec<f64>>,
        /// Override the profile's M5 step window (s).
        #[arg(long)]
        m5_secs: Option<f64>,
        /// Override the profile's M6 archive: 1:1 messages in all (each archived twice).
        #[arg(long)]
        m6_messages: Option<u64>,
        /// Override the profile's M6 account count.
        #[arg(long)]
        m6_users: Option<u32>,
        /// Override the profile's M6 query rate (pages/s in all).
        #[arg(long)]
        m6_rate: Option<f64>,
        /// Override the profile's M6 step window per query kind (s).
        #[arg(long)]
        m6_secs: Option<f64>,
        /// An empty PostgreSQL database (URL): M6 also runs Franca with its store there
        /// (`eval "$(scripts/pg-start)"` gives one in $FRANCA_TEST_PG_URL).
        #[arg(long)]
        franca_pg_url: Option<String>,
        /// After preparing every server (accounts, M6's archives, M7's store), wait until this
        /// time of day (UTC, HH:MM) before the measured rounds: the untimed filling can run
        /// while the machine is still busy with other work.
        #[arg(long, value_parser = compare::parse_hhmm)]
        wait_until: Option<u32>,
        /// Start no round that would not end by this time of day (UTC, HH:MM), judged by the
        /// longest round so far; the report covers the rounds that ran.
        #[arg(long, value_parser = compare::parse_hhmm)]
        finish_by: Option<u32>,
        /// Run franca under this command (profiling), e.g. "valgrind --tool=dhat".
        #[arg(long)]
        franca_wrap: Option<String>,
    },
    /// Internal: one load-generator process (driven over stdin/stdout).
    #[command(hide = true)]
    Worker,
}

fn runtime(multi: bool) -> Result<tokio::runtime::Runtime, String> {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().map_err(|e| format!("runtime: {e}"))
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut i), Ok(mut t)) => tokio::select! {
            _ = i.recv() => "SIGINT",
            _ = t.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Cmd::Worker => runtime(false).and_then(|rt| rt.block_on(worker::main())),
        Cmd::Compare {
            servers,
            scenarios,
            rounds,
            profile,
            out,
            work_dir,
            workers,
            franca_bin,
            server_core,
            mechs,
            m1_points,
            m1_rate,
            m4_users,
            m4_contacts,
            m2_rates,
            m3_rates,
            bisect_steps,
            m5_occupants,
            m5_rates,
            m5_secs,
            m6_messages,
            m6_users,
            m6_rate,
            m6_secs,
            franca_pg_url,
            wait_until,
            finish_by,
            franca_wrap,
        } => {
            let mut sizes = profile.sizes();
            if let Some(p) = m1_points {
                sizes.m1.points = p;
            }
            if let Some(r) = m1_rate {
                sizes.m1.rate = r;
            }
            if let Some(u) = m4_users {
                sizes.m4.users = u;
            }
            if let Some(c) = m4_contacts {
                sizes.m4.contacts = c;
            }
            if let Some(r) = m2_rates {
                sizes.m2.rates = r;
            }
            if let Some(r) = m3_rates {
                sizes.m3.rates = r;
            }
            if let Some(n) = bisect_steps {
                sizes.m2.bisect = n;
                sizes.m3.bisect = n;
                sizes.m5.bisect = n;
            }
            if let Some(n) = m5_occupants {
                sizes.m5.occupants = n;
            }
            if let Some(r) = m5_rates {
                sizes.m5.rates = r;
            }
            if let Some(s) = m5_secs {
                sizes.m5.secs = s;
            }
            if let Some(n) = m6_messages {
                sizes.m6.store.messages = n;
            }
            if let Some(n) = m6_users {
                sizes.m6.store.users = n;
                sizes.m6.queriers = sizes.m6.queriers.min(n);
            }
            if let Some(r) = m6_rate {
                sizes.m6.rate = r;
            }
            if let Some(s) = m6_secs {
                sizes.m6.secs = s;
            }
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let keep = work_dir.is_some();
            let work_dir = work_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("franca-bench-{}", std::process::id()))
            });
            let franca_bin = std::fs::canonicalize(&franca_bin).unwrap_or(franca_bin);
            let opts = compare::Options {
                servers,
                rounds,
                sizes: sizes.clone(),
                scenarios,
                work_dir: work_dir.clone(),
                workers,
                franca_bin,
                server_core,
                mechs,
                franca_wrap: franca_wrap
                    .map(|w| w.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_default(),
                franca_pg_url,
                wait_until,
                finish_by,
            };
            runtime(true).and_then(|rt| {
                rt.block_on(async {
                    net::raise_nofile();
                    let results = tokio::select! {
                        r = compare::run(&opts) => r?,
                        s = interrupted() => {
                            server::stop_all();
                            return Err(format!("interrupted by {s}; servers stopped"));
                        }
                    };
                    let md = report::write_all(
                        &out,
                        &results,
                        &sizes,
                        &command,
                        &format!("{profile:?}"),
                    )?;
                    println!("{md}");
                    if !keep {
                        let _ = std::fs::remove_dir_all(&work_dir);
                    }
                    let errs = compare::errors(&results);
                    if errs.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("{} scenario run(s) failed", errs.len()))
                    }
                })
            })
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("franca-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

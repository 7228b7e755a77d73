//! The coordinator's side of the worker processes: spawn them (same binary, `worker`
//! subcommand, inheriting the CPU affinity), send each step's commands, show a progress line,
//! and collect one [`StepResult`] per worker.

use crate::proto::{Command, Event, StepResult, Target, WorkerSpec};
use crate::worker::merge;
use std::io::IsTerminal;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

/// How the accounts of a run are spread over workers.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    pub workers: usize,
    pub prefix: String,
    /// Accounts `{prefix}1..={prefix}{users}`.
    pub users: u32,
    /// Source addresses are 127.0.0.{first_source + worker}.
    pub first_source: u8,
    pub cache: Option<PathBuf>,
    pub seed: u64,
}

impl Plan {
    /// Worker `w` gets accounts n with (n - 1) % workers == w.
    fn specs(&self) -> Vec<WorkerSpec> {
        (0..self.workers)
            .map(|w| WorkerSpec {
                index: w,
                target: self.target.clone(),
                source: Some(Ipv4Addr::new(
                    127,
                    0,
                    0,
                    self.first_source.wrapping_add(w as u8),
                )),
                prefix: self.prefix.clone(),
                users: (1..=self.users)
                    .filter(|n| (*n as usize - 1) % self.workers == w)
                    .collect(),
                total_users: self.users,
                cache: self.cache.clone(),
                seed: self.seed.wrapping_add(w as u64 * 7919),
            })
            .collect()
    }
}

#[derive(Debug)]
pub struct Pool {
    children: Vec<(Child, ChildStdin)>,
    rx: mpsc::UnboundedReceiver<(usize, Event)>,
}

/// Progress of the workers, for the live line.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    up: u64,
    done: u64,
    sent: u64,
    received: u64,
    errors: u64,
}

impl Pool {
    pub async fn spawn(plan: &Plan) -> Result<Pool, String> {
        // /proc/self/exe still runs this very binary if it was rebuilt (replaced) meanwhile.
        let exe = PathBuf::from("/proc/self/exe");
        let (tx, rx) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        for spec in plan.specs() {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("spawning worker: {e}"))?;
            let mut stdin = child.stdin.take().ok_or("worker stdin")?;
            let stdout = child.stdout.take().ok_or("worker stdout")?;
            let line = serde_json::to_string(&spec).map_err(|e| e.to_string())? + "\n";
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("worker stdin: {e}"))?;
            let tx = tx.clone();
            let index = spec.index;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Event>(&line) {
                        Ok(ev) => {
                            let _ = tx.send((index, ev));
                        }
                        Err(e) => {
                            let _ = tx.send((
                                index,
                                Event::Fatal {
                                    error: format!("{e}: {line}"),
                                },
                            ));
                        }
                    }
                }
                let _ = tx.send((
                    index,
                    Event::Fatal {
                        error: "worker exited".into(),
                    },
                ));
            });
            children.push((child, stdin));
        }
        Ok(Pool { children, rx })
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Process ids of the workers (for their CPU use between steps).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|(c, _)| c.id()).collect()
    }

    /// Sends `cmd` to every worker and waits for all results; returns the merged result.
    pub async fn step(&mut self, label: &str, cmd: &Command) -> Result<StepResult, String> {
        let cmds = vec![cmd.clone(); self.children.len()];
        self.step_each(label, &cmds).await.map(|r| merge(&r))
    }

    /// Like [`Pool::step`] with one command per worker; returns the per-worker results.
    pub async fn step_each(
        &mut self,
        label: &str,
        cmds: &[Command],
    ) -> Result<Vec<StepResult>, String> {
        for ((_, stdin), cmd) in self.children.iter_mut().zip(cmds) {
            let line = serde_json::to_string(cmd).map_err(|e| e.to_string())? + "\n";
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("worker stdin: {e}"))?;
        }
        let n = self.children.len();
        let mut results: Vec<Option<StepResult>> = vec![None; n];
        let mut seen = vec![Seen::default(); n];
        let tty = std::io::stderr().is_terminal();
        let t0 = Instant::now();
        let mut last_print = Instant::now();
        let every = if tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        while results.iter().any(Option::is_none) {
            let Some((i, ev)) = self.rx.recv().await else {
                return Err("all workers are gone".into());
            };
            match ev {
                Event::Progress {
                    up,
                    done,
                    sent,
                    received,
                    errors,
                } => {
                    seen[i] = Seen {
                        up,
                        done,
                        sent,
                        received,
                        errors,
                    };
                }
                Event::Done { result } => {
                    seen[i].up = result.online;
                    results[i] = Some(*result);
                }
                Event::Fatal { error } => {
                    if results[i].is_none() {
                        return Err(format!("worker {i}: {error}"));
                    }
                }
            }
            if last_print.elapsed() >= every {
                last_print = Instant::now();
                let s = seen.iter().fold(Seen::default(), |a, b| Seen {
                    up: a.up + b.up,
                    done: a.done + b.done,
                    sent: a.sent + b.sent,
                    received: a.received + b.received,
                    errors: a.errors + b.errors,
                });
                let line = format!(
                    "  [{label}] {:>5.0}s  sessions up {}  done {}  sent {}  received {}  errors {}",
                    t0.elapsed().as_secs_f64(),
                    s.up,
                    s.done,
                    s.sent,
                    s.received,
                    s.errors
                );
                if tty {
                    eprint!("\r{line}\x1b[K");
                } else {
                    eprintln!("{line}");
                }
            }
        }
        if tty {
            eprint!("\r\x1b[K");
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Asks every worker to save its cache and exit, then reaps them.
    pub async fn quit(mut self) {
        for (_, stdin) in self.children.iter_mut() {
            let _ = stdin.write_all(b"{\"cmd\":\"quit\"}\n").await;
        }
        for (mut child, stdin) in self.children.drain(..) {
            drop(stdin);
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

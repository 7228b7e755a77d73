//! A worker process: holds up to ~19k client sessions from its own source address, runs the
//! coordinator's commands one at a time and reports on stdout (see [`crate::proto`]).

mod chat;
mod logins;
mod mam;
mod muc;
mod session;
mod shared;

use crate::login::{self, Ctx};
use crate::procfs;
use crate::proto::{Command, Event, StepResult, WorkerSpec};
use crate::sasl::ScramCache;
use crate::stats::now_ns;
use rand::SeedableRng;
use rand::rngs::StdRng;
use session::{Me, Out, State};
use shared::Shared;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinHandle;

/// One online session as the worker sees it.
#[derive(Debug)]
pub struct Handle {
    pub user: u32,
    pub tx: mpsc::UnboundedSender<Out>,
    pub both: Arc<AtomicU32>,
    pub task: JoinHandle<()>,
    /// Asked to enter the room of M5.
    pub in_room: bool,
}

/// The worker's state between commands.
#[derive(Debug)]
pub struct Worker {
    pub spec: WorkerSpec,
    pub ctx: Arc<Ctx>,
    pub shared: Arc<Shared>,
    pub sessions: Arc<Mutex<Vec<Handle>>>,
    /// How many of `spec.users` have been logged in by `Login` so far.
    next_user: usize,
    pub rng: StdRng,
}

pub fn emit(ev: &Event) {
    if let Ok(line) = serde_json::to_string(ev) {
        println!("{line}");
    }
}

/// Entry point of `franca-bench worker`.
pub async fn main() -> Result<(), String> {
    crate::net::raise_nofile();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no spec")?;
    let spec: WorkerSpec = serde_json::from_str(&first).map_err(|e| format!("spec: {e}"))?;
    let ctx = Ctx {
        target: spec.target.clone(),
        source: spec.source,
        tls: crate::tls::connector()?,
        cache: ScramCache::load(spec.cache.as_deref()),
    };
    let mut w = Worker {
        rng: StdRng::seed_from_u64(spec.seed),
        spec,
        ctx: Arc::new(ctx),
        shared: Arc::new(Shared::default()),
        sessions: Arc::new(Mutex::new(Vec::new())),
        next_user: 0,
    };
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        let cmd: Command = serde_json::from_str(&line).map_err(|e| format!("command: {e}"))?;
        if matches!(cmd, Command::Quit) {
            if let Some(path) = &w.spec.cache {
                w.ctx
                    .cache
                    .save(path)
                    .map_err(|e| format!("saving SCRAM cache: {e}"))?;
            }
            break;
        }
        let cpu0 = procfs::self_cpu_s();
        let progress = spawn_progress(w.shared.clone());
        w.run(cmd).await;
        progress.abort();
        let result = w.shared.take(procfs::self_cpu_s() - cpu0);
        emit(&Event::Done {
            result: Box::new(result),
        });
    }
    Ok(())
}

fn spawn_progress(shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            emit(&Event::Progress {
                up: shared.up.load(Relaxed),
                done: shared.ok.load(Relaxed),
                sent: shared.sent.load(Relaxed),
                received: shared.received.load(Relaxed),
                errors: shared.errors.load(Relaxed),
            });
        }
    })
}

/// Exponential inter-arrival time (seconds) for a Poisson process of `rate`/s.
pub fn exp_gap(rng: &mut StdRng, rate: f64) -> f64 {
    let u: f64 = rand::Rng::r#gen::<f64>(rng);
    -(1.0 - u).ln() / rate
}

impl Worker {
    pub fn user_name(&self, n: u32) -> String {
        format!("{}{n}", self.spec.prefix)
    }

    async fn run(&mut self, cmd: Command) {
        // Each command measures what was sent from its start on, except `Collect`: it gathers
        // the tail of the step before it (M4's presences stamped during the storm and
        // delivered after it), which a new start would silently drop from the count.
        if !matches!(cmd, Command::Collect { .. }) {
            self.shared.measure_from_ns.store(now_ns(), Relaxed);
        }
        match cmd {
            Command::Register { concurrency } => self.register(concurrency).await,
            Command::Login {
                rate,
                stamp_presence,
                upto,
            } => self.login_all(rate, stamp_presence, upto as usize).await,
            Command::Chat {
                rate,
                secs,
                body,
                drain_secs,
            } => chat::run(self, rate, secs, body, drain_secs).await,
            Command::Logins {
                rate,
                secs,
                hold_secs,
            } => logins::run(self, rate, secs, hold_secs).await,
            Command::Subscribe { contacts, secs } => self.subscribe(contacts, secs).await,
            Command::MucJoin {
                room,
                rate,
                upto,
                secs,
            } => muc::join(self, &room, rate, upto as usize, secs).await,
            Command::MucChat {
                room,
                senders,
                rate,
                secs,
                body,
                drain_secs,
            } => muc::chat(self, &room, &senders, rate, secs, body, drain_secs).await,
            Command::MamQuery {
                kind,
                rate,
                secs,
                page,
                pages,
                partners,
                drain_secs,
            } => {
                let q = mam::Queries {
                    kind,
                    rate,
                    secs,
                    page,
                    pages,
                    partners,
                };
                mam::run(self, &q, drain_secs).await
            }
            Command::Collect { secs } => {
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
            Command::Logout => self.logout().await,
            Command::Quit => {}
        }
    }

    async fn register(&mut self, concurrency: usize) {
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = Vec::new();
        for &n in &self.spec.users {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let ctx = self.ctx.clone();
            let shared = self.shared.clone();
            let user = self.user_name(n);
            tasks.push(tokio::spawn(async move {
                let r = async {
                    login::register(&ctx, &user).await?;
                    // One login per account fills the SCRAM cache outside any timed window.
                    let s = login::login(&ctx, &user, "warm", false, &mut |_| {}).await?;
                    s.xmpp.close().await;
                    Ok::<(), String>(())
                };
                match tokio::time::timeout(Duration::from_secs(60), r).await {
                    Ok(Ok(())) => {
                        shared.ok.fetch_add(1, Relaxed);
                    }
                    Ok(Err(e)) => shared.error(format!("{user}: {e}")),
                    Err(_) => shared.error(format!("{user}: registration timed out")),
                }
                drop(permit);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Logs in the not-yet-online own accounts, Poisson arrivals at `rate`/s.
    async fn login_all(&mut self, rate: f64, stamp: bool, upto: usize) {
        let start = tokio::time::Instant::now();
        let mut at = 0.0;
        let mut tasks = Vec::new();
        while self.next_user < self.spec.users.len().min(upto) {
            let n = self.spec.users[self.next_user];
            self.next_user += 1;
            at += exp_gap(&mut self.rng, rate);
            let due = start + Duration::from_secs_f64(at);
            tokio::time::sleep_until(due).await;
            self.shared.lag_ns(due.elapsed().as_nanos() as u64);
            tasks.push(tokio::spawn(open_session(
                self.ctx.clone(),
                self.shared.clone(),
                self.sessions.clone(),
                self.spec.prefix.clone(),
                n,
                stamp,
            )));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Ring subscriptions: each own account asks the next `contacts/2` accounts; the session
    /// tasks accept and reciprocate, so every pair ends up `both`.
    async fn subscribe(&mut self, contacts: u32, secs: f64) {
        let total = self.spec.total_users;
        let half = contacts / 2;
        let domain = self.spec.target.domain.clone();
        {
            let sessions = self.sessions.lock().await;
            for k in 1..=half {
                for h in sessions.iter() {
                    let peer = (h.user - 1 + k) % total + 1;
                    let _ = h.tx.send(Out::Subscribe(format!(
                        "{}{peer}@{domain}",
                        self.spec.prefix
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
        loop {
            tokio::time::sleep(Duration::from_millis(5000)).await;
            let sessions = self.sessions.lock().await;
            let done = sessions
                .iter()
                .filter(|h| h.both.load(Relaxed) >= contacts)
                .count();
            self.shared.ok.store(done as u64, Relaxed);
            if done == sessions.len() || tokio::time::Instant::now() > deadline {
                for h in sessions.iter().filter(|h| h.both.load(Relaxed) < contacts) {
                    self.shared.error(format!(
                        "{}{}: {} of {contacts} contacts are 'both'",
                        self.spec.prefix,
                        h.user,
                        h.both.load(Relaxed)
                    ));
                }
                break;
            }
            for h in sessions.iter().filter(|h| h.both.load(Relaxed) < contacts) {
                let _ = h.tx.send(Out::RosterCheck);
            }
        }
    }

    async fn logout(&mut self) {
        let sessions = std::mem::take(&mut *self.sessions.lock().await);
        for h in &sessions {
            let _ = h.tx.send(Out::Close);
        }
        for h in sessions {
            let _ = h.task.await;
        }
        self.next_user = 0;
    }
}

/// Logs one account in and hands the session to its own task.
async fn open_session(
    ctx: Arc<Ctx>,
    shared: Arc<Shared>,
    sessions: Arc<Mutex<Vec<Handle>>>,
    prefix: String,
    n: u32,
    stamp: bool,
) {
    let user = format!("{prefix}{n}");
    let t0 = std::time::Instant::now();
    let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        login::login(&ctx, &user, "bench", stamp, &mut |s| {
            pending.push((now_ns(), s.to_vec()))
        }),
    )
    .await;
    let s = match r {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return shared.error(format!("{user}: {e}")),
        Err(_) => return shared.error(format!("{user}: login timed out")),
    };
    shared.login_ns(t0.elapsed().as_nanos() as u64);
    shared.ok.fetch_add(1, Relaxed);
    shared.up.fetch_add(1, Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let both = Arc::new(AtomicU32::new(0));
    let me = Me {
        name: user.clone(),
        prefix,
        domain: ctx.target.domain.clone(),
        online_ns: s.presence_ns,
        both: both.clone(),
    };
    let task = tokio::spawn(session::run(
        s.xmpp,
        rx,
        me,
        State::default(),
        shared,
        pending,
    ));
    sessions.lock().await.push(Handle {
        user: n,
        tx,
        both,
        task,
        in_room: false,
    });
}

/// Sums the step results of all workers.
pub fn merge(results: &[StepResult]) -> StepResult {
    let mut total = StepResult::default();
    for r in results {
        total.merge(r);
    }
    total
}

//! What the coordinator and its worker processes say to each other: one JSON object per line.
//! The coordinator writes a [`WorkerSpec`], then [`Command`]s, on the worker's stdin; the worker
//! answers each command with [`Event::Progress`] lines and one [`Event::Done`] on stdout.

use crate::stats::Hist;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// How the client secures the stream.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plaintext c2s (the server must allow it).
    Plain,
    /// STARTTLS on the c2s port.
    Starttls,
    /// Direct TLS (XEP-0368) on the c2s_tls port.
    Tls,
}

/// The server under test, as a client sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Port for plaintext/STARTTLS.
    pub c2s: SocketAddr,
    /// Port for direct TLS.
    pub tls: Option<SocketAddr>,
    pub domain: String,
    pub security: Security,
    /// SASL mechanisms in order of preference (PLAIN, SCRAM-SHA-1, SCRAM-SHA-256).
    pub mechs: Vec<String>,
    /// Every benchmark account has this password.
    pub password: String,
}

/// A worker's fixed part: who it is and which accounts it drives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub index: usize,
    pub target: Target,
    /// Source address of this worker's connections (127.0.0.x).
    pub source: Option<Ipv4Addr>,
    /// Account names are `{prefix}{n}`.
    pub prefix: String,
    /// The account numbers this worker logs in.
    pub users: Vec<u32>,
    /// Accounts 1..=total exist across all workers (message and roster peers).
    pub total_users: u32,
    /// SCRAM SaltedPassword cache file.
    pub cache: Option<PathBuf>,
    pub seed: u64,
}

/// One step of work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// In-band registration (XEP-0077) of every own account, then one login each to fill the
    /// SCRAM cache. Existing accounts are fine.
    Register { concurrency: usize },
    /// Log own accounts in (open-loop, Poisson at `rate`/s) until `upto` of them are online,
    /// and keep the sessions. With `stamp_presence`, the initial presence carries a stamp in
    /// `<status/>`.
    Login {
        rate: f64,
        stamp_presence: bool,
        upto: u32,
    },
    /// Stamped 1:1 chat between online accounts at `rate` msg/s (Poisson) for `secs`, then wait
    /// up to `drain_secs` for the last deliveries.
    Chat {
        rate: f64,
        secs: f64,
        body: usize,
        drain_secs: f64,
    },
    /// Open-loop logins at `rate`/s for `secs`; each session closes after `hold_secs`.
    Logins {
        rate: f64,
        secs: f64,
        hold_secs: f64,
    },
    /// Mutual subscriptions with the `contacts` ring neighbours (half each side), then wait
    /// until the roster shows them all as `both` (sessions stay online).
    Subscribe { contacts: u32, secs: f64 },
    /// Wait `secs` while collecting presence latency (after a login storm).
    Collect { secs: f64 },
    /// XEP-0045: own online sessions enter the room `room` (bare JID; nickname = account
    /// name, no history asked) at `rate`/s (Poisson) until `upto` of this worker's sessions
    /// have asked; then wait, at most `secs`, for each one's own presence (status 110). A new
    /// room (status 201) is made an instant room first. Each join's latency goes to `login`.
    MucJoin {
        room: String,
        rate: f64,
        upto: u32,
        secs: f64,
    },
    /// Stamped groupchat messages to `room` at `rate` msg/s (Poisson) for `secs`, each from one
    /// of the own accounts in `senders` at random; then wait up to `drain_secs` for the last
    /// copies. Every occupant measures every copy.
    MucChat {
        room: String,
        senders: Vec<u32>,
        rate: f64,
        secs: f64,
        body: usize,
        drain_secs: f64,
    },
    /// XEP-0313 queries of the online sessions' own archives at `rate`/s (Poisson) for `secs`,
    /// each by a random online session; then wait up to `drain_secs` for the answers. The
    /// latency of each query (of each whole walk for [`MamKind::Paging`]) goes to `latency`.
    MamQuery {
        kind: MamKind,
        rate: f64,
        secs: f64,
        /// RSM `<max/>` of every page.
        page: u32,
        /// Pages of one walk back (`Paging`); 1 otherwise.
        pages: u32,
        /// Conversation partners of each account: the ring neighbours `n ± 1 ..= partners/2`
        /// (the `with` of [`MamKind::With`] is one of them at random).
        partners: u32,
        drain_secs: f64,
    },
    /// Close every session (`</stream:stream>`).
    Logout,
    /// Save the SCRAM cache and exit.
    Quit,
}

/// What an M6 archive query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MamKind {
    /// The last page of the whole archive (RSM `<before/>`).
    Last,
    /// The last page of the conversation with one partner (`with` = the partner's bare JID).
    With,
    /// The last page, then page after page back (`<before>` = the first id of the page before).
    Paging,
}

/// A worker's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    Progress {
        up: u64,
        done: u64,
        sent: u64,
        received: u64,
        errors: u64,
    },
    Done {
        result: Box<StepResult>,
    },
    Fatal {
        error: String,
    },
}

/// What one command did in one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepResult {
    /// Successful operations (logins, registrations, subscriptions, room joins, archive
    /// queries).
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Stamped stanzas sent and received (messages or presences).
    pub sent: u64,
    pub received: u64,
    /// Stamped stanzas that arrived more than once at the same session (same sender, same
    /// stamp): not counted in `received` or the latency.
    #[serde(default)]
    pub duplicates: u64,
    /// Delivery latency of stamped stanzas (archive query latency for
    /// [`Command::MamQuery`]).
    pub latency: Hist,
    /// Login transaction latency (room join latency for [`Command::MucJoin`]).
    pub login: Hist,
    /// How late the open-loop scheduler fired compared with its plan.
    pub lag: Hist,
    /// CPU seconds this worker used during the command.
    pub cpu_s: f64,
    /// Sessions online at the end.
    pub online: u64,
}

impl StepResult {
    pub fn merge(&mut self, o: &StepResult) {
        self.ok += o.ok;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
        self.sent += o.sent;
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.latency.add(&o.latency);
        self.login.add(&o.login);
        self.lag.add(&o.lag);
        self.cpu_s += o.cpu_s;
        self.online += o.online;
    }

    /// Errors over attempted operations (0..=1).
    pub fn error_rate(&self) -> f64 {
        let attempts = self.ok + self.errors + self.sent;
        if attempts == 0 {
            0.0
        } else {
            self.errors as f64 / attempts as f64
        }
    }
}

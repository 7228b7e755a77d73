//! The servers under test: fair configurations (notes D-perf §5: no shapers or limits, offline
//! storage off, Franca's message archive off as the others have none, registration open for
//! provisioning, one scheduler thread), a data directory
//! each, start pinned to a core, readiness, and stop by the PID we started (its process group).

use crate::proto::{Security, Target};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Child;

pub const DOMAIN: &str = "bench.local";
pub const PASSWORD: &str = "bench-pass-1";
/// The group chat service of M5 (Franca's default subdomain, set alike on the others).
pub const MUC_DOMAIN: &str = "conference.bench.local";

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Franca,
    Prosody,
    Ejabberd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Franca => "franca",
            Kind::Prosody => "prosody",
            Kind::Ejabberd => "ejabberd",
        }
    }
}

/// A prepared server: config written, not running.
#[derive(Debug, Clone)]
pub struct ServerDir {
    pub kind: Kind,
    pub dir: PathBuf,
    pub c2s: u16,
    pub tls: u16,
    pub franca_bin: PathBuf,
    /// Core to pin the server to (`taskset -c`), if any.
    pub core: Option<usize>,
    /// A command put in front of the franca binary (profiling: `valgrind --tool=dhat …`).
    pub wrap: Vec<String>,
}

/// Process groups of the servers running now, for [`stop_all`] on SIGINT/SIGTERM.
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Kills every server this process started and has not stopped yet (by its process group).
pub fn stop_all() {
    let pids = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    pub kind: Kind,
    pub pid: u32,
    child: Child,
}

/// The tables Prosody 0.12's mod_storage_sql creates on SQLite (its `create_table`).
const PROSODY_SQL_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS "prosody" ("host" TEXT NOT NULL, "user" TEXT NOT NULL, "store" TEXT NOT NULL, "key" TEXT NOT NULL, "type" TEXT NOT NULL, "value" TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS "prosody_index" ON "prosody" ("host", "user", "store", "key");
CREATE TABLE IF NOT EXISTS "prosodyarchive" ("sort_id" INTEGER PRIMARY KEY AUTOINCREMENT, "host" TEXT NOT NULL, "user" TEXT NOT NULL, "store" TEXT NOT NULL, "key" TEXT NOT NULL, "when" INTEGER NOT NULL, "with" TEXT NOT NULL, "type" TEXT NOT NULL, "value" TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS "prosodyarchive_index" ON "prosodyarchive" ("host", "user", "store", "key");
CREATE INDEX IF NOT EXISTS "prosodyarchive_with_when" ON "prosodyarchive" ("host", "user", "store", "with", "when");
CREATE INDEX IF NOT EXISTS "prosodyarchive_when" ON "prosodyarchive" ("host", "user", "store", "when");
CREATE INDEX IF NOT EXISTS "prosodyarchive_sort" ON "prosodyarchive" ("host", "user", "store", "sort_id");
"#;

/// Runs an SQL script on an SQLite file with the `sqlite3` tool (Debian package sqlite3).
fn sqlite_script(db: &Path, sql: &str) -> Result<(), String> {
    let mut child = std::process::Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("sqlite3 (Debian package sqlite3): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        stdin
            .write_all(sql.as_bytes())
            .map_err(|e| format!("sqlite3 {}: {e}", db.display()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("sqlite3: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !err.trim().is_empty() {
        return Err(format!("sqlite3 {}: {} {err}", db.display(), out.status));
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A self-signed certificate for [`DOMAIN`], valid 2020–2040 (rcgen's default end, year 4096,
/// crashes Erlang's certificate store in ejabberd).
fn self_signed(dir: &Path) -> Result<(), String> {
    let mut params = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()])
        .map_err(|e| format!("certificate: {e}"))?;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("certificate: {e}"))?
        .pem();
    let key = key.serialize_pem();
    write(&dir.join("cert.pem"), &cert)?;
    write(&dir.join("key.pem"), &key)?;
    write(&dir.join("both.pem"), &format!("{cert}{key}"))
}

impl ServerDir {
    /// Writes the configuration for `kind` in a new directory under `root`.
    pub fn prepare(
        kind: Kind,
        root: &Path,
        franca_bin: &Path,
        core: Option<usize>,
    ) -> Result<ServerDir, String> {
        let dir = root.join(kind.name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).map_err(|e| format!("mkdir: {e}"))?;
        let s = ServerDir {
            kind,
            dir: dir.clone(),
            c2s: free_port()?,
            tls: free_port()?,
            franca_bin: franca_bin.to_owned(),
            core,
            wrap: Vec::new(),
        };
        self_signed(&dir)?;
        let d = dir.display();
        let (c2s, tls) = (s.c2s, s.tls);
        match kind {
            Kind::Franca => write(
                &dir.join("franca.toml"),
                &format!(
                    "[server]\ndomains = [\"{DOMAIN}\"]\ndata_dir = \"{d}/data\"\n\
                     allow_plaintext = true\n\n[storage]\nurl = \"sqlite://{d}/data/franca.db\"\n\n\
                     [tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\n\
                     [listen]\nc2s = [\"127.0.0.1:{c2s}\"]\nc2s_tls = [\"127.0.0.1:{tls}\"]\n\
                     http = []\nhttps = []\ns2s = []\ncomponent = []\n\n[limits]\nread_rate_bytes = 1000000000\n\
                     read_burst_bytes = 1000000000\nmax_connections_per_ip = 1000000\n\
                     max_failed_logins = 1000000\nnegotiation_timeout_seconds = 300\n\
                     idle_timeout_seconds = 86400\n\n[modules]\noffline = false\n\n[mam]\nenabled = false\n\n\
                     [registration]\nenabled = true\nmax_per_ip = 1000000\n"
                ),
            )?,
            Kind::Prosody => write(
                &dir.join("prosody.cfg.lua"),
                &format!(
                    "run_as_root = true; daemonize = false\n\
                     pidfile = \"{d}/prosody.pid\"; data_path = \"{d}/data\"\n\
                     log = {{ warn = \"{d}/prosody.log\" }}\n\
                     network_backend = \"epoll\"\n\
                     network_settings = {{ tcp_backlog = 4096; nagle = false; opportunistic_writes = true }}\n\
                     c2s_ports = {{ {c2s} }}; c2s_interfaces = {{ \"127.0.0.1\" }}\n\
                     c2s_direct_tls_ports = {{ {tls} }}; c2s_direct_tls_interfaces = {{ \"127.0.0.1\" }}\n\
                     s2s_ports = {{ }}; http_ports = {{ }}; https_ports = {{ }}\n\
                     modules_enabled = {{ \"roster\"; \"saslauth\"; \"tls\"; \"disco\"; \"ping\"; \"posix\"; \"register\" }}\n\
                     modules_disabled = {{ \"s2s\"; \"offline\" }}\n\
                     c2s_require_encryption = false; allow_unencrypted_plain_auth = true\n\
                     allow_registration = true\n\
                     authentication = \"internal_hashed\"; storage = \"internal\"\n\
                     ssl = {{ certificate = \"{d}/cert.pem\"; key = \"{d}/key.pem\" }}\n\
                     VirtualHost \"{DOMAIN}\"\n"
                ),
            )?,
            Kind::Ejabberd => {
                write(
                    &dir.join("ejabberd.yml"),
                    &format!(
                        "hosts: [{DOMAIN}]\nloglevel: warning\ncertfiles: [\"{d}/both.pem\"]\n\
                         listen:\n  - {{port: {c2s}, ip: \"127.0.0.1\", module: ejabberd_c2s, \
                         access: c2s, starttls: true, backlog: 4096, max_stanza_size: 262144}}\n  \
                         - {{port: {tls}, ip: \"127.0.0.1\", module: ejabberd_c2s, access: c2s, \
                         tls: true, backlog: 4096, max_stanza_size: 262144}}\n\
                         auth_method: internal\nauth_password_format: scram\n\
                         access_rules: {{c2s: {{allow: all}}, register: {{allow: all}}}}\n\
                         registration_timeout: infinity\ncache_size: 100000\n\
                         modules: {{mod_disco: {{}}, mod_roster: {{}}, mod_ping: {{}}, \
                         mod_register: {{access: register}}}}\n"
                    ),
                )?;
                write(
                    &dir.join("ejabberdctl.cfg"),
                    "ERL_MAX_PORTS=100000\nERL_PROCESSES=1000000\n\
                     ERL_OPTIONS=\"+K true +S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none\"\n",
                )?;
                std::fs::create_dir_all(dir.join("logs")).map_err(|e| format!("mkdir: {e}"))?;
                s.chown_ejabberd()?;
            }
        }
        Ok(s)
    }

    /// The client's view with the given security and SASL preference.
    pub fn target(&self, security: Security, mechs: &[String]) -> Target {
        Target {
            c2s: SocketAddr::from((Ipv4Addr::LOCALHOST, self.c2s)),
            tls: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, self.tls))),
            domain: DOMAIN.into(),
            security,
            mechs: mechs.to_vec(),
            password: PASSWORD.into(),
        }
    }

    fn command(&self) -> Vec<String> {
        let d = self.dir.display().to_string();
        match self.kind {
            Kind::Franca => vec![
                self.franca_bin.display().to_string(),
                "--config".into(),
                format!("{d}/franca.toml"),
                "serve".into(),
            ],
            Kind::Prosody => {
                vec![
                    "prosody".into(),
                    "--config".into(),
                    format!("{d}/prosody.cfg.lua"),
                    "-F".into(),
                ]
            }
            Kind::Ejabberd => {
                let mut argv = self.ejabberdctl_argv();
                argv.push("foreground".into());
                argv
            }
        }
    }

    /// `ejabberdctl` as the ejabberd user, for this server's config, spool and node.
    fn ejabberdctl_argv(&self) -> Vec<String> {
        let d = self.dir.display().to_string();
        vec![
            "setpriv".into(),
            "--reuid".into(),
            "ejabberd".into(),
            "--regid".into(),
            "ejabberd".into(),
            "--init-groups".into(),
            "env".into(),
            "HOME=/var/lib/ejabberd".into(),
            "ejabberdctl".into(),
            "--config".into(),
            format!("{d}/ejabberd.yml"),
            "--ctl-config".into(),
            format!("{d}/ejabberdctl.cfg"),
            "--spool".into(),
            format!("{d}/data"),
            "--logs".into(),
            format!("{d}/logs"),
            "--node".into(),
            format!("bench{}@localhost", self.c2s),
        ]
    }

    /// Runs `ejabberdctl ARGS` against the running node; its output, or an error with it.
    pub async fn ejabberdctl(&self, args: &[&str]) -> Result<String, String> {
        let mut argv = self.ejabberdctl_argv();
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let out = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("ejabberdctl: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "ejabberdctl {}: {}: {text}",
                args.join(" "),
                out.status
            ))
        }
    }

    /// Gives the server's directory to the ejabberd user (it runs as that user).
    pub fn chown_ejabberd(&self) -> Result<(), String> {
        let st = std::process::Command::new("chown")
            .args(["-R", "ejabberd:ejabberd"])
            .arg(&self.dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err("chown ejabberd dir failed".into())
        }
    }

    /// Turns offline storage on (it is off for the messaging runs, notes D-perf §5): the
    /// populated store of M7 keeps its messages there.
    pub fn enable_offline(&self) -> Result<(), String> {
        let (file, edits): (&str, &[(&str, &str)]) = match self.kind {
            Kind::Franca => ("franca.toml", &[("offline = false", "offline = true")]),
            Kind::Prosody => (
                "prosody.cfg.lua",
                &[
                    (
                        "modules_disabled = { \"s2s\"; \"offline\" }",
                        "modules_disabled = { \"s2s\" }",
                    ),
                    ("\"register\" }", "\"register\"; \"offline\" }"),
                ],
            ),
            Kind::Ejabberd => (
                "ejabberd.yml",
                &[("mod_ping: {}", "mod_ping: {}, mod_offline: {}")],
            ),
        };
        let path = self.dir.join(file);
        let mut text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
        for (from, to) in edits {
            if !text.contains(from) {
                return Err(format!(
                    "{file}: cannot find {from:?} to enable offline storage"
                ));
            }
            text = text.replacen(from, to, 1);
        }
        write(&path, &text)
    }

    /// Edits this server's configuration file: each `(from, to)` replaces the first `from`
    /// (which must be there), then `append` goes at the end.
    fn edit_config(&self, what: &str, edits: &[(&str, &str)], append: &str) -> Result<(), String> {
        let file = match self.kind {
            Kind::Franca => "franca.toml",
            Kind::Prosody => "prosody.cfg.lua",
            Kind::Ejabberd => "ejabberd.yml",
        };
        let path = self.dir.join(file);
        let mut text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
        for (from, to) in edits {
            if !text.contains(from) {
                return Err(format!("{file}: cannot find {from:?} to {what}"));
            }
            text = text.replacen(from, to, 1);
        }
        text.push_str(append);
        write(&path, &text)
    }

    /// Group chat for M5 on every server: the service at `conference.` + [`DOMAIN`], rooms
    /// that keep no history (so joins get none) and no archive (Franca `archive = false`;
    /// Prosody without mod_muc_mam; ejabberd `mam: false`), room size not capped
    /// below the scenario's (Franca and ejabberd cap at 200 by default).
    pub fn enable_muc(&self) -> Result<(), String> {
        match self.kind {
            Kind::Franca => self.edit_config(
                "enable MUC",
                &[],
                "\n[muc]\nenabled = true\nhistory = 0\narchive = false\nmax_occupants = 100000\n",
            ),
            Kind::Prosody => self.edit_config(
                "enable MUC",
                &[],
                &format!(
                    "Component \"{MUC_DOMAIN}\" \"muc\"\n\
                     muc_room_default_history_length = 0\n"
                ),
            ),
            Kind::Ejabberd => self.edit_config(
                "enable MUC",
                &[(
                    "mod_ping: {}",
                    "mod_ping: {}, mod_muc: {host: \"conference.@HOST@\", history_size: 0, \
                     max_users: 100000, max_users_presence: 100000, \
                     default_room_options: {mam: false, max_users: 100000}}",
                )],
                "",
            ),
        }
    }

    /// The message archive (XEP-0313) for M6 on every server, in SQLite for all three: Franca
    /// `[mam] enabled` (its store is SQLite already); Prosody mod_mam with the `archive` store
    /// in mod_storage_sql (SQLite3, Debian's lua-dbi-sqlite3), no expiry; ejabberd mod_mam with
    /// `db_type: sql` on SQLite (Debian's erlang-p1-sqlite3; ejabberd 23.01 does not create the
    /// schema itself, so [`ServerDir::archive_db`] is made from its `lite.sql` first).
    pub fn enable_mam(&self) -> Result<(), String> {
        let d = self.dir.display();
        match self.kind {
            Kind::Franca => self.edit_config(
                "enable MAM",
                &[("[mam]\nenabled = false", "[mam]\nenabled = true")],
                "",
            ),
            Kind::Prosody => {
                // mod_storage_sql creates its tables only when it first connects, at the first
                // archive access; the bulk load comes before that, so the same tables (as its
                // `create_table` defines them for SQLite) are made here.
                sqlite_script(&self.archive_db(), PROSODY_SQL_SCHEMA)?;
                self.edit_config(
                    "enable MAM",
                    &[
                        ("\"register\" }", "\"register\"; \"mam\" }"),
                        (
                            "storage = \"internal\"",
                            "default_storage = \"internal\"; storage = { archive = \"sql\" }\n\
                         sql = { driver = \"SQLite3\"; database = \"prosody.sqlite\" }\n\
                         archive_expires_after = \"never\"; max_archive_query_results = 50",
                        ),
                    ],
                    "",
                )
            }
            Kind::Ejabberd => {
                self.edit_config(
                    "enable MAM",
                    &[
                        (
                            "mod_ping: {}",
                            "mod_ping: {}, mod_mam: {db_type: sql, default: always}",
                        ),
                        (
                            "loglevel: warning\n",
                            &format!(
                                "loglevel: warning\nsql_type: sqlite\nsql_database: \"{d}/data/ejabberd.db\"\n"
                            ),
                        ),
                    ],
                    "",
                )?;
                let lite = "/usr/share/ejabberd/sql/lite.sql";
                let schema = std::fs::read_to_string(lite).map_err(|e| format!("{lite}: {e}"))?;
                sqlite_script(&self.archive_db(), &schema)?;
                self.chown_ejabberd()
            }
        }
    }

    /// Franca only: keep everything in the store at `url` (PostgreSQL) instead of SQLite.
    pub fn use_storage(&self, url: &str) -> Result<(), String> {
        let sqlite = format!("url = \"sqlite://{}/data/franca.db\"", self.dir.display());
        self.edit_config(
            "use another store",
            &[(&sqlite, &format!("url = {url:?}"))],
            "",
        )
    }

    /// The SQLite file that holds the message archive once [`ServerDir::enable_mam`] ran.
    pub fn archive_db(&self) -> PathBuf {
        let data = self.dir.join("data");
        match self.kind {
            Kind::Franca => data.join("franca.db"),
            // Prosody resolves a relative database name against its data_path.
            Kind::Prosody => data.join("prosody.sqlite"),
            Kind::Ejabberd => data.join("ejabberd.db"),
        }
    }

    /// Starts the server (own process group, pinned when asked). Not yet ready.
    pub fn start(&self) -> Result<Running, String> {
        let mut argv = self.command();
        if self.kind == Kind::Franca {
            argv.splice(0..0, self.wrap.iter().cloned());
        }
        if let Some(core) = self.core {
            argv.splice(
                0..0,
                ["taskset".to_owned(), "-c".to_owned(), core.to_string()],
            );
        }
        let log = std::fs::File::create(self.dir.join("stdout.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("TOKIO_WORKER_THREADS", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", argv[0]))?;
        let pid = child.id().ok_or("server exited at once")?;
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        Ok(Running {
            kind: self.kind,
            pid,
            child,
        })
    }
}

impl Running {
    /// Waits until the c2s port accepts a connection; returns the time since `since`.
    pub async fn wait_port(
        &mut self,
        port: u16,
        since: Instant,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while since.elapsed() < timeout {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(since.elapsed());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("{} exited during start: {st}", self.kind.name()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(format!(
            "{} did not open port {port} in {timeout:?}",
            self.kind.name()
        ))
    }

    /// SIGTERM to the process group we started, SIGKILL after 20 s.
    pub async fn stop(mut self) {
        let pg = Pid::from_raw(self.pid as i32);
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != self.pid);
        let _ = killpg(pg, Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = killpg(pg, Signal::SIGKILL);
            let _ = self.child.wait().await;
        }
        // Children that outlive the leader (beam.smp under ejabberdctl) share the group.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = killpg(pg, Signal::SIGKILL);
    }
}

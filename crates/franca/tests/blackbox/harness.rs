//! Spawning and stopping the `franca` binary.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::client::Conn;

pub const DOMAIN: &str = "localhost";
pub const ALICE: (&str, &str) = ("alice", "alice-password-1");
pub const BOB: (&str, &str) = ("bob", "bob-password-2");
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Another loopback address, so per-IP limits can be told apart from the whole server.
pub const LOOPBACK2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

pub fn franca_bin() -> PathBuf {
    match std::env::var_os("FRANCA_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_franca")),
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pg_admin_url() -> Option<String> {
    let url = std::env::var("FRANCA_TEST_PG_URL").unwrap_or_default();
    if url.trim().is_empty() {
        if std::env::var("FRANCA_REQUIRE_PG").as_deref() == Ok("1") {
            panic!("FRANCA_REQUIRE_PG=1 but FRANCA_TEST_PG_URL is not set");
        }
        None
    } else {
        Some(url.trim().to_owned())
    }
}

/// `postgres://u:p@h:port/db?x` with the database name replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(base.len());
    format!("{}/{}{}", &base[..host_end], db, query)
}

/// A new, empty PostgreSQL database; its URL.
fn pg_fresh_database(admin: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "franca_bb_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        rand::random::<u32>()
    );
    let out = Command::new("psql")
        .arg(admin)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!("CREATE DATABASE \"{name}\""))
        .output()
        .expect("run psql (PostgreSQL client) to create a test database");
    assert!(
        out.status.success(),
        "psql could not create database {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    with_database(admin, &name)
}

/// `n` distinct ports that were free a moment ago.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr().expect("local addr").port();
    }
    ports
}

#[derive(Debug, Clone)]
pub struct Options {
    pub allow_plaintext: bool,
    /// `key = value` lines for `[limits]`.
    pub limits: Vec<(&'static str, String)>,
    /// Extra TOML appended verbatim.
    pub extra: String,
    /// Users created before start (localpart, password) on `domain`.
    pub users: Vec<(&'static str, &'static str)>,
    /// The served domain (`DOMAIN` unless a test needs two servers, as s2s tests do).
    pub domain: &'static str,
    /// Listen for s2s on a free port (`Server::s2s`); otherwise no s2s listener.
    pub s2s: bool,
    /// XEP-0114 components (domain, secret) as `[[component]]` entries; when any are given,
    /// the component listener opens on a free port (`Server::component`).
    pub components: Vec<(&'static str, &'static str)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_plaintext: true,
            limits: Vec::new(),
            extra: String::new(),
            users: vec![ALICE, BOB],
            domain: DOMAIN,
            s2s: false,
            components: Vec::new(),
        }
    }
}

impl Options {
    pub fn tls_required() -> Self {
        Options {
            allow_plaintext: false,
            ..Options::default()
        }
    }

    pub fn limit(mut self, key: &'static str, value: impl ToString) -> Self {
        self.limits.push((key, value.to_string()));
        self
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub c2s: u16,
    pub c2s_tls: u16,
    pub http: u16,
    /// HTTPS (the HTTP endpoints over TLS).
    pub https: u16,
    /// One TLS port for XMPP and HTTPS (ALPN).
    pub multiplex: u16,
    /// The s2s listener's port when `Options::s2s`; 0 otherwise.
    pub s2s: u16,
    /// The component listener's port when `Options::components` is not empty; 0 otherwise.
    pub component: u16,
    pub storage_url: String,
    pub opts: Options,
    child: Option<Child>,
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Server {
    /// Writes the config; does not create users or start.
    pub fn new(opts: Options) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("franca-bb-")
            .tempdir()
            .expect("create a temporary directory");
        let data_dir = dir.path().join("data");
        let [c2s, c2s_tls, http, https, multiplex, s2s_port] = free_ports::<6>();
        let s2s = if opts.s2s { s2s_port } else { 0 };
        let s2s_listen = if opts.s2s {
            format!("\"127.0.0.1:{s2s}\"")
        } else {
            String::new()
        };
        let component = if opts.components.is_empty() {
            0
        } else {
            free_ports::<1>()[0]
        };
        let component_listen = if component == 0 {
            String::new()
        } else {
            format!("\"127.0.0.1:{component}\"")
        };
        let storage_url = match pg_admin_url() {
            Some(admin) => pg_fresh_database(&admin),
            None => format!("sqlite://{}", data_dir.join("franca.db").display()),
        };
        let mut cfg = String::new();
        let _ = writeln!(
            cfg,
            "[server]\ndomains = [{}]\ndata_dir = {}\nallow_plaintext = {}\n",
            toml_str(opts.domain),
            toml_str(&data_dir.display().to_string()),
            opts.allow_plaintext
        );
        let _ = writeln!(cfg, "[storage]\nurl = {}\n", toml_str(&storage_url));
        let _ = writeln!(
            cfg,
            "[listen]\nc2s = [\"127.0.0.1:{c2s}\"]\nc2s_tls = [\"127.0.0.1:{c2s_tls}\"]\nhttp = [\"127.0.0.1:{http}\"]\n\
             https = [\"127.0.0.1:{https}\"]\nmultiplex = [\"127.0.0.1:{multiplex}\"]\ns2s = [{s2s_listen}]\ncomponent = [{component_listen}]\n"
        );
        if !opts.limits.is_empty() {
            cfg.push_str("[limits]\n");
            for (k, v) in &opts.limits {
                let _ = writeln!(cfg, "{k} = {v}");
            }
            cfg.push('\n');
        }
        cfg.push_str(&opts.extra);
        for (domain, secret) in &opts.components {
            let _ = writeln!(
                cfg,
                "\n[[component]]\ndomain = {}\nsecret = {}",
                toml_str(domain),
                toml_str(secret)
            );
        }
        let config = dir.path().join("franca.toml");
        std::fs::write(&config, cfg).expect("write config");
        let log = dir.path().join("server.log");
        Server {
            dir,
            config,
            data_dir,
            log,
            c2s,
            c2s_tls,
            http,
            https,
            multiplex,
            s2s,
            component,
            storage_url,
            opts,
            child: None,
        }
    }

    /// New server with its users, started and listening.
    pub fn start_with(opts: Options) -> Server {
        let mut s = Server::new(opts);
        for (user, pw) in s.opts.users.clone() {
            s.add_user(&format!("{user}@{}", s.opts.domain), pw);
        }
        s.start();
        s
    }

    pub fn start_default() -> Server {
        Server::start_with(Options::default())
    }

    pub fn cert_pem(&self) -> PathBuf {
        self.data_dir.join("cert.pem")
    }

    /// `franca --config F ARGS…` with `stdin` piped in.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        run_franca(&self.config, self.dir.path(), args, stdin)
    }

    pub fn add_user(&self, jid: &str, password: &str) {
        let out = self.cli(&["user", "add", jid], &format!("{password}\n"));
        assert!(
            out.status.success(),
            "`franca user add {jid}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    pub fn start(&mut self) {
        // A port picked by `free_ports` can be taken by someone else (another test's client
        // socket) before the server binds it: then pick new ones and start again.
        for attempt in 1..=3 {
            match self.start_once() {
                Ok(()) => return,
                Err(log) if attempt < 3 && log.contains("in use") => self.new_ports(),
                Err(log) => panic!("franca serve exited during start-up; log:\n{log}"),
            }
        }
    }

    /// Start servers whose `[s2s.routes]` name each other's s2s ports as `Server::new` picked
    /// them. A server that had to move to fresh ports while starting (see [`Server::start`])
    /// would leave its peers routing to a port someone else may now hold: their routes are
    /// rewritten and they are restarted, until every route points at a live listener.
    pub fn start_peers(servers: &mut [&mut Server]) {
        let mut planned: Vec<u16> = servers.iter().map(|s| s.s2s).collect();
        for s in servers.iter_mut() {
            s.start();
        }
        for _ in 0..5 {
            let moved: Vec<(usize, u16, u16)> = servers
                .iter()
                .enumerate()
                .filter(|(i, s)| s.s2s != planned[*i])
                .map(|(i, s)| (i, planned[i], s.s2s))
                .collect();
            if moved.is_empty() {
                return;
            }
            for &(i, _, now) in &moved {
                planned[i] = now;
            }
            for (j, peer) in servers.iter_mut().enumerate() {
                let mut cfg = std::fs::read_to_string(&peer.config).expect("read config");
                let mut stale = false;
                for &(i, old, now) in &moved {
                    let old = format!("\"127.0.0.1:{old}\"");
                    if i != j && cfg.contains(&old) {
                        cfg = cfg.replace(&old, &format!("\"127.0.0.1:{now}\""));
                        stale = true;
                    }
                }
                if stale {
                    std::fs::write(&peer.config, cfg).expect("write config");
                    // A restarted peer may move in turn: the next round catches that.
                    peer.stop();
                    peer.start();
                }
            }
        }
        panic!("servers kept moving ports while starting");
    }

    /// Moves every listener of the config to fresh ports.
    fn new_ports(&mut self) {
        let [c2s, c2s_tls, http, https, multiplex, s2s] = free_ports::<6>();
        let mut cfg = std::fs::read_to_string(&self.config).expect("read config");
        if self.s2s != 0 {
            cfg = cfg.replace(
                &format!("\"127.0.0.1:{}\"", self.s2s),
                &format!("\"127.0.0.1:{s2s}\""),
            );
            self.s2s = s2s;
        }
        if self.component != 0 {
            let [component] = free_ports::<1>();
            cfg = cfg.replace(
                &format!("\"127.0.0.1:{}\"", self.component),
                &format!("\"127.0.0.1:{component}\""),
            );
            self.component = component;
        }
        for (old, new) in [
            (self.c2s, c2s),
            (self.c2s_tls, c2s_tls),
            (self.http, http),
            (self.https, https),
            (self.multiplex, multiplex),
        ] {
            cfg = cfg.replace(
                &format!("\"127.0.0.1:{old}\""),
                &format!("\"127.0.0.1:{new}\""),
            );
        }
        std::fs::write(&self.config, cfg).expect("write config");
        (
            self.c2s,
            self.c2s_tls,
            self.http,
            self.https,
            self.multiplex,
        ) = (c2s, c2s_tls, http, https, multiplex);
    }

    /// Starts and waits until it listens; `Err` with this start's log if it exited first.
    fn start_once(&mut self) -> Result<(), String> {
        assert!(!self.running(), "server already running");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open server log");
        let _ = writeln!(log, "===== franca serve =====");
        let child = Command::new(franca_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .current_dir(self.dir.path())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", franca_bin().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.try_wait() {
                let text = self.log_text();
                let this_start = text.rsplit("===== franca serve =====").next().unwrap_or("");
                return Err(format!("(exit {status})\n{this_start}"));
            }
            let up = [self.c2s, self.c2s_tls].iter().all(|p| {
                TcpStream::connect_timeout(
                    &SocketAddr::new(LOOPBACK, *p),
                    Duration::from_millis(500),
                )
                .is_ok()
            });
            if up && self.cert_pem().exists() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "franca serve did not listen on {} and {} within 60 s; log:\n{}",
                self.c2s,
                self.c2s_tls,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait on franca"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server was started").id()
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit; None if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait (then SIGKILL after 20 s). Returns the exit status of a clean stop.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if !self.running() {
            return self.try_wait();
        }
        self.sigterm();
        let status = self.wait_exit(Duration::from_secs(20));
        if status.is_none()
            && let Some(c) = self.child.as_mut()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        status
    }

    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// A plaintext (allow_plaintext) or STARTTLS session for `user`, bound and answering pings.
    pub fn login(&self, user: (&str, &str), resource: &str) -> Conn {
        self.login_from(LOOPBACK, user, resource)
    }

    pub fn login_from(&self, src: IpAddr, user: (&str, &str), resource: &str) -> Conn {
        let mut c = Conn::connect_from(src, self.c2s, &self.cert_pem());
        self.open_stream(&mut c);
        if !self.opts.allow_plaintext {
            c.starttls();
            self.open_stream(&mut c);
        }
        c.scram_sha256(user.0, user.1)
            .unwrap_or_else(|f| panic!("login of {} refused: {f}", user.0));
        self.open_stream(&mut c);
        c.bind(resource);
        c
    }

    /// A c2s stream header to this server's domain, then its features.
    fn open_stream(&self, c: &mut Conn) {
        if self.opts.domain == DOMAIN {
            c.open_stream();
            return;
        }
        c.send(format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{}' version='1.0'>",
            self.opts.domain
        ));
        c.wait("<stream:features/>", 15, crate::client::has_features);
    }

    /// The invariant after every hostile case: the process is alive, a new session logs in and
    /// gets a ping answered, and nothing panicked.
    pub fn assert_serves(&mut self) {
        self.assert_serves_from(LOOPBACK);
    }

    pub fn assert_serves_from(&mut self, src: IpAddr) {
        assert!(
            self.running(),
            "franca is no longer running; log:\n{}",
            self.log_text()
        );
        let mut c = self.login_from(src, BOB, "still-serving");
        c.ping("still-serving");
        c.close();
        self.assert_no_panic();
    }

    pub fn assert_no_panic(&self) {
        let log = self.log_text();
        assert!(!log.contains("panicked at"), "franca panicked; log:\n{log}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut()
            && c.try_wait().ok().flatten().is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: String = {
                let start = log.len().saturating_sub(30_000);
                let start = (start..log.len())
                    .find(|i| log.is_char_boundary(*i))
                    .unwrap_or(log.len());
                log[start..].to_owned()
            };
            eprintln!(
                "----- franca log ({}; storage {}) -----\n{tail}\n----- end of log -----",
                self.dir.path().display(),
                self.storage_url
            );
        }
    }
}

/// `franca --config CONFIG ARGS…` in `cwd`, stdin piped (so passwords are read from it).
pub fn run_franca(config: &Path, cwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(franca_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", franca_bin().display()));
    if let Some(mut input) = child.stdin.take() {
        // The command may exit before reading (errors): ignore a broken pipe.
        let _ = input.write_all(stdin.as_bytes());
    }
    wait_output(child, Duration::from_secs(60))
}

fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => return child.wait_with_output().expect("collect output"),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect output");
                panic!(
                    "franca CLI did not exit within {timeout:?}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

//! The one TOML configuration file. Every table refuses unknown keys (`deny_unknown_fields`) so a
//! typo is an error that names the key, not a silently ignored setting. `franca.example.toml` at
//! the repository root documents every key and a test parses it.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub tls: TlsConfig,
    pub listen: ListenConfig,
    pub limits: LimitsConfig,
    pub modules: ModulesConfig,
    pub offline: OfflineConfig,
    pub registration: RegistrationConfig,
    pub bosh: BoshConfig,
    pub http: HttpConfig,
    pub stream_management: StreamManagementConfig,
    pub fast: FastConfig,
    pub push: PushConfig,
    pub pep: PepConfig,
    pub mam: MamConfig,
    pub muc: MucConfig,
    pub pubsub: PubsubConfig,
    pub upload: UploadConfig,
    pub s2s: S2sConfig,
    /// XEP-0114 components, `[[component]]` entries.
    pub component: Vec<ComponentConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The XMPP domains served by this server.
    pub domains: Vec<String>,
    /// Where the SQLite database, the self-signed certificate and other state live.
    pub data_dir: PathBuf,
    /// Allow c2s authentication without TLS (benchmarks on loopback only; never in production).
    pub allow_plaintext: bool,
    /// Bare JIDs of the server's administrators. They may create rooms when `muc.create` is
    /// `"admins"`, and are owners of every room.
    pub admins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            domains: vec!["localhost".into()],
            data_dir: PathBuf::from("franca-data"),
            allow_plaintext: false,
            admins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` or `postgres://user:pass@host:port/db`. Default: SQLite in `data_dir`.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. When both `cert` and `key` are omitted a self-signed certificate
    /// for the served domains is generated in `data_dir` on first start and reused after.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// c2s with STARTTLS (RFC 6120 §5).
    pub c2s: Vec<String>,
    /// c2s with direct TLS (XEP-0368).
    pub c2s_tls: Vec<String>,
    /// HTTP: health and Prometheus metrics.
    pub http: Vec<String>,
    /// HTTPS with the c2s certificate: the same endpoints as `http`, so WebSocket is `wss://`.
    pub https: Vec<String>,
    /// One TLS port for everything: ALPN (or the first bytes) picks XMPP or HTTPS.
    pub multiplex: Vec<String>,
    /// Server-to-server (RFC 6120), STARTTLS or direct TLS (XEP-0368) told apart by the first
    /// byte.
    pub s2s: Vec<String>,
    /// XEP-0114 components. Opened only when `[[component]]` entries are configured.
    pub component: Vec<String>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            c2s: vec!["[::]:5222".into()],
            c2s_tls: vec!["[::]:5223".into()],
            http: vec!["[::]:5280".into()],
            https: vec!["[::]:5443".into()],
            multiplex: Vec::new(),
            s2s: vec!["[::]:5269".into()],
            // Components run next to the server: loopback only unless configured otherwise.
            component: vec!["127.0.0.1:5347".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest stanza accepted, in bytes (RFC 6120 §13.12).
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza.
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attributes: usize,
    /// Sustained read rate per connection, bytes per second (token bucket).
    pub read_rate_bytes: u32,
    /// Burst allowance of the read-rate bucket, bytes.
    pub read_burst_bytes: u32,
    /// Simultaneous connections from one IP address.
    pub max_connections_per_ip: u32,
    /// Failed logins from one IP, or against one account, before a temporary lock-out.
    pub max_failed_logins: u32,
    /// Length of the lock-out, seconds.
    pub lockout_seconds: u64,
    /// Seconds to complete stream negotiation (TLS, SASL, bind).
    pub negotiation_timeout_seconds: u64,
    /// Seconds of silence after which the server pings the client (XEP-0199); without an answer
    /// within a minute (or this long, if shorter) the stream is closed.
    pub idle_timeout_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_stanza_bytes: 256 * 1024,
            max_depth: 64,
            max_attributes: 64,
            read_rate_bytes: 64 * 1024,
            read_burst_bytes: 512 * 1024,
            max_connections_per_ip: 100,
            max_failed_logins: 5,
            lockout_seconds: 300,
            negotiation_timeout_seconds: 60,
            idle_timeout_seconds: 600,
        }
    }
}

/// Which feature modules are loaded. A module that is off registers nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModulesConfig {
    pub disco: bool,
    pub ping: bool,
    pub time: bool,
    pub version: bool,
    pub last: bool,
    pub vcard: bool,
    pub blocking: bool,
    pub carbons: bool,
    pub offline: bool,
}

impl Default for ModulesConfig {
    fn default() -> Self {
        ModulesConfig {
            disco: true,
            ping: true,
            time: true,
            version: false,
            last: true,
            vcard: true,
            blocking: true,
            carbons: true,
            offline: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineConfig {
    /// Messages kept per user; more are bounced with `resource-constraint`.
    pub max_per_user: u32,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig { max_per_user: 1000 }
    }
}

/// XEP-0077 in-band registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub enabled: bool,
    /// Accounts one IP address may register per `window_seconds`.
    pub max_per_ip: u32,
    pub window_seconds: u64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            enabled: false,
            max_per_ip: 1,
            window_seconds: 600,
        }
    }
}

/// The HTTP front-end (both `listen.http` and `listen.https`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Web origins (`https://chat.example`, or `*` for any) whose pages may read the XMPP
    /// endpoints (discovery, BOSH) across origins. `[]` sends no CORS headers.
    pub cors_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            cors_origins: vec!["*".into()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.server.domains.is_empty() {
            return Err(ConfigError::Invalid("server.domains is empty".into()));
        }
        for d in &self.server.domains {
            let normalised = jid::BareJid::new(d).ok().filter(|j| j.node().is_none());
            if normalised.as_ref().map(|j| j.domain().as_str()) != Some(d.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "server.domains: {d:?} is not a normalised domain name"
                )));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key must be given together".into(),
            ));
        }
        if self.limits.max_depth == 0 || self.limits.max_stanza_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits.max_depth must be > 0 and limits.max_stanza_bytes >= 1024".into(),
            ));
        }
        for origin in &self.http.cors_origins {
            if !is_cors_origin(origin) {
                return Err(ConfigError::Invalid(format!(
                    "http.cors_origins: {origin:?} is not \"*\" or an origin like \"https://chat.example\""
                )));
            }
        }
        for a in &self.server.admins {
            let normalised = jid::BareJid::new(a).ok().filter(|j| j.node().is_some());
            if normalised.as_ref().map(|j| j.as_str()) != Some(a.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "server.admins: {a:?} is not a normalised bare JID (user@domain)"
                )));
            }
        }
        self.muc.validate(&self.server.domains)?;
        self.upload.validate(&self.server.domains)?;
        // Two services on one domain would be a wiring panic at start; say it here.
        let taken = [
            (self.muc.enabled, &self.muc.subdomain),
            (self.pubsub.enabled, &self.pubsub.subdomain),
        ];
        if self.upload.enabled
            && taken
                .iter()
                .any(|(on, sub)| *on && **sub == self.upload.subdomain)
        {
            return Err(ConfigError::Invalid(
                "upload.subdomain is the same as muc.subdomain or pubsub.subdomain".into(),
            ));
        }
        self.pubsub.validate(&self.server.domains, &self.muc)?;
        self.s2s.validate(&self.server.domains)?;
        self.validate_components()?;
        if self.stream_management.max_unacked == 0 {
            return Err(ConfigError::Invalid(
                "stream_management.max_unacked must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// `[[component]]`: each domain normalised, served by nobody else (not a served domain,
    /// not a hosted service, not another component), with a secret.
    fn validate_components(&self) -> Result<(), ConfigError> {
        let mut hosted = Vec::new();
        let domains = &self.server.domains;
        if self.muc.enabled {
            hosted.extend(self.muc.service_domains(domains));
        }
        if self.pubsub.enabled {
            hosted.extend(self.pubsub.service_domains(domains));
        }
        if self.upload.enabled {
            hosted.extend(self.upload.service_domains(domains));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.component {
            let d = &c.domain;
            let normalised = jid::BareJid::new(d).ok().filter(|j| j.node().is_none());
            if normalised.as_ref().map(|j| j.domain().as_str()) != Some(d.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "component.domain: {d:?} is not a normalised domain name"
                )));
            }
            if self.serves(d) {
                return Err(ConfigError::Invalid(format!(
                    "component.domain: {d:?} is a served domain (server.domains)"
                )));
            }
            if hosted.contains(d) {
                return Err(ConfigError::Invalid(format!(
                    "component.domain: {d:?} is a hosted service's domain (muc, pubsub or upload)"
                )));
            }
            if !seen.insert(d.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "component.domain: {d:?} is configured twice"
                )));
            }
            if c.secret.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "component {d:?}: the secret is empty"
                )));
            }
        }
        Ok(())
    }

    /// The storage URL, defaulting to SQLite inside `data_dir`.
    pub fn storage_url(&self) -> String {
        match &self.storage.url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}",
                self.server.data_dir.join("franca.db").display()
            ),
        }
    }

    pub fn serves(&self, domain: &str) -> bool {
        self.server.domains.iter().any(|d| d == domain)
    }

    /// Whether `jid` (a bare JID) is one of `server.admins`.
    pub fn is_admin(&self, jid: &str) -> bool {
        self.server.admins.iter().any(|a| a == jid)
    }
}

/// `*`, or an RFC 6454 origin as browsers send it: scheme, host and optional port, no path.
fn is_cors_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, host)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

/// XEP-0198 stream management (acknowledgements and resumption).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamManagementConfig {
    /// How long a session whose connection broke stays resumable (its stanzas keep queuing),
    /// seconds; 0 turns resumption off (acknowledgements still work).
    pub resume_timeout_seconds: u32,
    /// Stanzas a client may leave unacknowledged; one more closes the stream with
    /// `<resource-constraint/>` and the stanzas are handled as undeliverable.
    pub max_unacked: usize,
    /// Where clients reconnect to resume (`host` or `host:port`, XEP-0198 `location`), for
    /// a cluster whose nodes have their own addresses; empty means here.
    pub location: String,
    /// Most sessions waiting to be resumed at once; beyond it a broken session ends at once.
    pub max_hibernated: usize,
}

impl Default for StreamManagementConfig {
    fn default() -> Self {
        StreamManagementConfig {
            resume_timeout_seconds: 300,
            max_unacked: 1000,
            location: String::new(),
            max_hibernated: 10_000,
        }
    }
}

/// XEP-0124/XEP-0206 BOSH at `/http-bind` on the HTTP listeners. Request bodies are limited to
/// `limits.max_stanza_bytes` plus a little room for the `<body/>` wrapper.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoshConfig {
    /// Longest a request is held waiting for data, seconds (a client's `wait` is capped to it).
    pub max_wait_seconds: u64,
    /// Most requests a client may leave waiting at once (its `hold` is capped to it).
    pub max_hold: u32,
    /// Seconds without any request after which a session is dropped (XEP-0124 §10).
    pub inactivity_seconds: u64,
    /// Most BOSH sessions at once on each HTTP listener (each session also takes one of
    /// `limits.max_connections_per_ip`).
    pub max_sessions: usize,
}

impl Default for BoshConfig {
    fn default() -> Self {
        BoshConfig {
            max_wait_seconds: 60,
            max_hold: 1,
            inactivity_seconds: 60,
            max_sessions: 10_000,
        }
    }
}

/// XEP-0484 FAST: tokens a client gets at a password login (over XEP-0388 SASL2) and logs in
/// with next time, in one round trip. Stored hashed; `franca user revoke-tokens` deletes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FastConfig {
    /// Offer FAST at all.
    pub enabled: bool,
    /// How long a token is valid, seconds. A client that stays away longer logs in with its
    /// password again.
    pub token_lifetime_seconds: u64,
}

impl Default for FastConfig {
    fn default() -> Self {
        FastConfig {
            enabled: true,
            token_lifetime_seconds: 14 * 24 * 3600,
        }
    }
}

/// XEP-0357 push notifications: what the server publishes to the app servers a client
/// enabled, when a message arrives for an account that is offline or whose session is
/// hibernated by XEP-0198.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Offer push at all (`urn:xmpp:push:0` on accounts).
    pub enabled: bool,
    /// Put the sender's JID in the summary (`last-message-sender`).
    pub include_sender: bool,
    /// Put the number of messages since the user was last online in the summary
    /// (`message-count`).
    pub include_message_count: bool,
    /// Allow the message body in the summary (`last-message-body`); it is sent only to a
    /// registration whose client also asked for it (publish option `include-body`).
    pub include_body: bool,
    /// Most notifications per minute to one registration; the count goes on, so the next one
    /// after a pause carries the total.
    pub max_per_minute: u32,
    /// Registrations one account may hold; one more is refused with `resource-constraint`.
    pub max_per_account: u32,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            include_sender: true,
            include_message_count: true,
            include_body: false,
            max_per_minute: 30,
            max_per_account: 16,
        }
    }
}

/// XEP-0163 PEP on every account (nodes and items of XEP-0060), with XEP-0049 private XML
/// storage and XEP-0402/XEP-0048 bookmarks on top of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PepConfig {
    /// Offer PEP and private XML storage at all.
    pub enabled: bool,
    /// Nodes one account may own (OMEMO needs one per device; private XML storage counts
    /// one per stored element); one more is refused with `resource-constraint`.
    pub max_nodes: u32,
    /// The most items a node keeps; `pubsub#max_items` = `max` means this many.
    pub max_items: u32,
    /// How many XEP-0115 capability hashes (`ver`) are remembered with their features.
    pub caps_cache: usize,
}

impl Default for PepConfig {
    fn default() -> Self {
        PepConfig {
            enabled: true,
            max_nodes: 256,
            max_items: 256,
            caps_cache: 4096,
        }
    }
}

/// XEP-0313 message archive of every account: what is archived when the account set no
/// preferences, and how long messages are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MamConfig {
    /// Offer the archive at all (`urn:xmpp:mam:2` on accounts).
    pub enabled: bool,
    /// The default of an account's preferences (XEP-0313 §7): "always" (every conversation),
    /// "roster" (only with contacts in the roster) or "never".
    pub default: MamDefault,
    /// Messages older than this many days are deleted by a job that runs every hour; 0 keeps
    /// them forever.
    pub retention_days: u32,
    /// Most messages one query page returns; a larger `max` is lowered to it, and a query
    /// without `max` gets it too.
    pub max_page: u32,
}

/// XEP-0313 §7 `default` archiving mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MamDefault {
    Always,
    Roster,
    Never,
}

impl MamDefault {
    pub fn as_str(self) -> &'static str {
        match self {
            MamDefault::Always => "always",
            MamDefault::Roster => "roster",
            MamDefault::Never => "never",
        }
    }
}

impl Default for MamConfig {
    fn default() -> Self {
        MamConfig {
            enabled: true,
            default: MamDefault::Always,
            retention_days: 0,
            max_page: 250,
        }
    }
}

/// Who may create XEP-0045 rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomCreation {
    /// Any user who can reach the service (once federation exists, remote users too).
    Everyone,
    /// Accounts of the served domains.
    Local,
    /// Only `server.admins`.
    Admins,
}

/// XEP-0045 group chat: one service per served domain, at `<subdomain>.<domain>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MucConfig {
    /// Host the service at all.
    pub enabled: bool,
    /// The service of `example.org` is `<subdomain>.example.org`.
    pub subdomain: String,
    /// Who may create rooms.
    pub create: RoomCreation,
    /// Rooms one service holds at once (temporary and persistent); one more is refused.
    pub max_rooms: usize,
    /// Occupants of one room at most; new rooms start with this and owners may lower it.
    pub max_occupants: u32,
    /// Messages a new room keeps for history on join.
    pub history: u32,
    /// The most messages an owner may have a room keep.
    pub max_history: u32,
    /// Longest nickname, in characters.
    pub max_nick_chars: usize,
    /// Affiliations (owners, admins, members, outcasts) one room may list.
    pub max_affiliations: usize,
    /// Rooms may keep a XEP-0313 archive of their groupchat messages (on by default in each
    /// new room; needs `[mam] enabled`). `[mam] retention_days` bounds how long, and an owner
    /// may choose a shorter time per room.
    pub archive: bool,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            subdomain: "conference".into(),
            create: RoomCreation::Local,
            max_rooms: 10_000,
            max_occupants: 200,
            history: 20,
            max_history: 100,
            max_nick_chars: 64,
            max_affiliations: 5_000,
            archive: true,
        }
    }
}

impl MucConfig {
    /// The service domain for each served domain.
    pub fn service_domains(&self, domains: &[String]) -> Vec<String> {
        domains
            .iter()
            .map(|d| format!("{}.{d}", self.subdomain))
            .collect()
    }

    fn validate(&self, domains: &[String]) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let label = &self.subdomain;
        let label_ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !label_ok {
            return Err(ConfigError::Invalid(format!(
                "muc.subdomain: {label:?} is not a lowercase DNS label"
            )));
        }
        for service in self.service_domains(domains) {
            if domains.contains(&service) {
                return Err(ConfigError::Invalid(format!(
                    "muc.subdomain: {service} is also in server.domains"
                )));
            }
        }
        if self.max_occupants == 0 || self.max_rooms == 0 || self.max_nick_chars == 0 {
            return Err(ConfigError::Invalid(
                "muc.max_occupants, muc.max_rooms and muc.max_nick_chars must be > 0".into(),
            ));
        }
        if self.history > self.max_history {
            return Err(ConfigError::Invalid(
                "muc.history must not exceed muc.max_history".into(),
            ));
        }
        Ok(())
    }
}

/// XEP-0060 PubSub: one service per served domain, at `<subdomain>.<domain>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PubsubConfig {
    /// Host the service at all.
    pub enabled: bool,
    /// The service of `example.org` is `<subdomain>.example.org`.
    pub subdomain: String,
    /// Who may create nodes (same choices as `muc.create`).
    pub create: RoomCreation,
    /// Nodes one service holds.
    pub max_nodes: u32,
    /// Items one node keeps at most, whatever its `max_items` says.
    pub max_items: u32,
    /// Subscriptions one node holds.
    pub max_subscriptions: usize,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        PubsubConfig {
            enabled: true,
            subdomain: "pubsub".into(),
            create: RoomCreation::Local,
            max_nodes: 10_000,
            max_items: 100,
            max_subscriptions: 10_000,
        }
    }
}

impl PubsubConfig {
    /// The service domain for each served domain.
    pub fn service_domains(&self, domains: &[String]) -> Vec<String> {
        domains
            .iter()
            .map(|d| format!("{}.{d}", self.subdomain))
            .collect()
    }

    fn validate(&self, domains: &[String], muc: &MucConfig) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let label = &self.subdomain;
        let label_ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !label_ok {
            return Err(ConfigError::Invalid(format!(
                "pubsub.subdomain: {label:?} is not a lowercase DNS label"
            )));
        }
        if muc.enabled && muc.subdomain == *label {
            return Err(ConfigError::Invalid(
                "pubsub.subdomain is the same as muc.subdomain".into(),
            ));
        }
        for service in self.service_domains(domains) {
            if domains.contains(&service) {
                return Err(ConfigError::Invalid(format!(
                    "pubsub.subdomain: {service} is also in server.domains"
                )));
            }
        }
        if self.max_nodes == 0 || self.max_items == 0 || self.max_subscriptions == 0 {
            return Err(ConfigError::Invalid(
                "pubsub.max_nodes, pubsub.max_items and pubsub.max_subscriptions must be > 0"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// `[upload]`: XEP-0363 HTTP file upload at `upload.<domain>` (`crates/franca-im/src/upload`
/// hands out slots, `crates/franca-net/src/upload.rs` serves them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    pub enabled: bool,
    /// The service is `<subdomain>.<served domain>`.
    pub subdomain: String,
    /// Largest file, in bytes.
    pub max_file_size: u64,
    /// Bytes one account may keep stored (slots not yet used count too); 0 = no limit.
    pub quota_per_user: u64,
    /// Stored files are removed this many days after upload; 0 = kept forever.
    pub retention_days: u64,
    /// Minutes a slot may wait for its PUT.
    pub slot_minutes: u64,
    /// Content types accepted (exact, or `type/*`); empty = any not denied.
    pub allowed_content_types: Vec<String>,
    /// Content types refused (exact, or `type/*`), checked before the allowed list.
    pub denied_content_types: Vec<String>,
    /// Base of the slot URLs, e.g. `https://upload.example.org:5443`. Default: `https://` with
    /// the served domain and the port of the first `listen.https` (else `listen.multiplex`),
    /// or `http://` and the first `listen.http` port.
    pub public_url: Option<String>,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: true,
            subdomain: "upload".into(),
            max_file_size: 100 * 1024 * 1024,
            quota_per_user: 1024 * 1024 * 1024,
            retention_days: 30,
            slot_minutes: 5,
            allowed_content_types: Vec::new(),
            denied_content_types: vec!["text/html".into(), "application/xhtml+xml".into()],
            public_url: None,
        }
    }
}

impl UploadConfig {
    /// The service domain for each served domain.
    pub fn service_domains(&self, domains: &[String]) -> Vec<String> {
        domains
            .iter()
            .map(|d| format!("{}.{d}", self.subdomain))
            .collect()
    }

    /// Whether `content_type` may be uploaded (compared without parameters, case-insensitively).
    pub fn content_type_allowed(&self, content_type: &str) -> bool {
        let base = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let matches = |pat: &String| {
            let pat = pat.to_ascii_lowercase();
            match pat.strip_suffix("/*") {
                Some(major) => base.split('/').next() == Some(major),
                None => pat == base,
            }
        };
        if self.denied_content_types.iter().any(matches) {
            return false;
        }
        self.allowed_content_types.is_empty() || self.allowed_content_types.iter().any(matches)
    }

    fn validate(&self, domains: &[String]) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        for service in self.service_domains(domains) {
            if domains.contains(&service) {
                return Err(ConfigError::Invalid(format!(
                    "upload.subdomain: {service} is also in server.domains"
                )));
            }
        }
        let label = &self.subdomain;
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(ConfigError::Invalid(format!(
                "upload.subdomain: {label:?} is not a lowercase DNS label"
            )));
        }
        if self.max_file_size == 0 || self.slot_minutes == 0 {
            return Err(ConfigError::Invalid(
                "upload.max_file_size and upload.slot_minutes must be > 0".into(),
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::Invalid(
                "upload.public_url must start with https:// or http://".into(),
            ));
        }
        Ok(())
    }
}

/// Who may federate (`[s2s] policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum S2sPolicy {
    /// Every remote domain not on the deny list.
    #[default]
    Open,
    /// Only the domains on the allow list (per-partner agreements).
    Allowlist,
    /// No federation at all.
    Closed,
}

/// Federation (RFC 6120 server-to-server), `[s2s]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S2sConfig {
    pub policy: S2sPolicy,
    /// Remote domains allowed when `policy = "allowlist"`.
    pub allow: Vec<String>,
    /// Remote domains refused whatever the policy.
    pub deny: Vec<String>,
    /// `true`: a peer must present a certificate valid for its domain; dialback alone is not
    /// enough.
    pub require_valid_certs: bool,
    /// PEM file of extra trust anchors for peers' certificates (a private or test CA), used
    /// with the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Whether the system's roots (`/etc/ssl/certs`) are trusted too.
    pub system_roots: bool,
    /// Static routes, domain → "host:port": private interconnects and tests. They replace the
    /// DNS lookup for that domain.
    pub routes: std::collections::BTreeMap<String, String>,
    /// Giving up on connecting (DNS, TCP, TLS, authentication) to a remote domain.
    pub connect_timeout_seconds: u64,
    /// An s2s connection with no traffic for this long is closed.
    pub idle_timeout_seconds: u64,
    /// Stanzas held per remote domain while its connection is set up; more bounce.
    pub max_queued_stanzas: usize,
    /// Inbound s2s connections at once.
    pub max_inbound_connections: usize,
    /// The XEP-0185 dialback secret. Omitted: a random one per start (fine for one node).
    pub dialback_secret: Option<String>,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            policy: S2sPolicy::Open,
            allow: Vec::new(),
            deny: Vec::new(),
            require_valid_certs: false,
            ca_file: None,
            system_roots: true,
            routes: Default::default(),
            connect_timeout_seconds: 30,
            idle_timeout_seconds: 600,
            max_queued_stanzas: 1000,
            max_inbound_connections: 1000,
            dialback_secret: None,
        }
    }
}

impl std::fmt::Debug for S2sConfig {
    // The dialback secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2sConfig")
            .field("policy", &self.policy)
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("require_valid_certs", &self.require_valid_certs)
            .field("ca_file", &self.ca_file)
            .field("system_roots", &self.system_roots)
            .field("routes", &self.routes)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("idle_timeout_seconds", &self.idle_timeout_seconds)
            .field("max_queued_stanzas", &self.max_queued_stanzas)
            .field("max_inbound_connections", &self.max_inbound_connections)
            .field(
                "dialback_secret",
                &self.dialback_secret.as_ref().map(|_| "…"),
            )
            .finish()
    }
}

/// Shortest `dialback_secret` accepted: XEP-0185 keys are only as strong as the secret.
pub const MIN_DIALBACK_SECRET_CHARS: usize = 16;

impl S2sConfig {
    /// Domains in `allow`, `deny` and `routes` must be normalised remote domains (not served
    /// here), routes must be "host:port", limits non-zero, and an allow list is required by
    /// `policy = "allowlist"`: an empty one would federate with nobody, which `"closed"` says
    /// plainly, so it is refused as a likely mistake rather than accepted silently.
    fn validate(&self, domains: &[String]) -> Result<(), ConfigError> {
        let remote_domain = |key: &str, d: &str| {
            let normalised = jid::BareJid::new(d).ok().filter(|j| j.node().is_none());
            if normalised.as_ref().map(|j| j.domain().as_str()) != Some(d) {
                return Err(ConfigError::Invalid(format!(
                    "s2s.{key}: {d:?} is not a normalised domain name"
                )));
            }
            if domains.iter().any(|s| s == d) {
                return Err(ConfigError::Invalid(format!(
                    "s2s.{key}: {d:?} is served by this server (server.domains), not a remote \
                     domain"
                )));
            }
            Ok(())
        };
        for d in &self.allow {
            remote_domain("allow", d)?;
        }
        for d in &self.deny {
            remote_domain("deny", d)?;
        }
        for (d, target) in &self.routes {
            remote_domain("routes", d)?;
            if !is_host_port(target) {
                return Err(ConfigError::Invalid(format!(
                    "s2s.routes: {d} = {target:?} is not \"host:port\" (an IPv6 address in \
                     brackets: \"[::1]:5269\")"
                )));
            }
        }
        if self.policy == S2sPolicy::Allowlist && self.allow.is_empty() {
            return Err(ConfigError::Invalid(
                "s2s.policy = \"allowlist\" with an empty s2s.allow federates with nobody; list \
                 the partner domains, or set policy = \"closed\""
                    .into(),
            ));
        }
        // No trust anchor at all: no peer could ever be valid, so every one would be refused.
        if self.require_valid_certs
            && !self.system_roots
            && self.ca_file.is_none()
            && self.policy != S2sPolicy::Closed
        {
            return Err(ConfigError::Invalid(
                "s2s.require_valid_certs = true needs trust anchors: system_roots = true or a \
                 ca_file"
                    .into(),
            ));
        }
        if self.connect_timeout_seconds == 0 || self.idle_timeout_seconds == 0 {
            return Err(ConfigError::Invalid(
                "s2s.connect_timeout_seconds and s2s.idle_timeout_seconds must be > 0".into(),
            ));
        }
        if self.max_queued_stanzas == 0 || self.max_inbound_connections == 0 {
            return Err(ConfigError::Invalid(
                "s2s.max_queued_stanzas and s2s.max_inbound_connections must be > 0".into(),
            ));
        }
        if let Some(secret) = &self.dialback_secret
            && secret.chars().count() < MIN_DIALBACK_SECRET_CHARS
        {
            return Err(ConfigError::Invalid(format!(
                "s2s.dialback_secret must be at least {MIN_DIALBACK_SECRET_CHARS} characters \
                 (or omitted for a random one)"
            )));
        }
        Ok(())
    }
}

/// "host:port", "1.2.3.4:port" or "[v6]:port" with a port in 1..=65535 (`[s2s.routes]`).
fn is_host_port(value: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = value.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((v6, port)) => (v6.parse::<std::net::Ipv6Addr>().is_ok(), port),
            None => return false,
        }
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) => (
                !host.is_empty() && !host.contains(':') && !host.chars().any(char::is_whitespace),
                port,
            ),
            None => return false,
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// One XEP-0114 component, a `[[component]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// The domain the component serves (`irc.localhost`).
    pub domain: String,
    /// The shared secret of the handshake.
    pub secret: String,
    /// Shown in disco when the component does not answer itself, e.g. "IRC gateway".
    #[serde(default)]
    pub name: Option<String>,
}

impl std::fmt::Debug for ComponentConfig {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentConfig")
            .field("domain", &self.domain)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

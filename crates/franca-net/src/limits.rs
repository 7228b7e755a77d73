//! Abuse limits for the listeners (DESIGN §5 "Hostile input"): nothing an unauthenticated peer
//! does may grow memory without bound or let it guess passwords at line speed.
//!
//! * [`ConnectionLimiter`]: simultaneous connections per IP address (RFC 6120 §13.12 lists
//!   connection floods among the denial-of-service threats a server must counter).
//! * [`LoginLimiter`]: failed SASL authentications (RFC 6120 §6, RFC 4422) per IP address and per
//!   account within a window, then a temporary lock-out (RFC 6120 §13.12 item 1 recommends
//!   limiting authentication attempts).
//! * [`ReadRate`]: a per-connection token bucket on bytes read (RFC 6120 §13.12 item 4), tiny
//!   because every connection carries one.
//!
//! Every time-dependent operation has an `*_at(…, now: Instant)` form so tests drive the clock;
//! the plain forms use [`Instant::now`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The address limits are keyed on: IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a
/// dual-stack `[::]` listener reports for IPv4 peers) count as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere already; the counters are still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Simultaneous connections per IP

/// Limits simultaneous connections per IP address. Cheap to clone (shared state).
///
/// The map holds one entry per address that has at least one open connection and the entry is
/// removed when its last [`ConnectionGuard`] drops, so its size is bounded by the number of open
/// sockets.
#[derive(Clone, Debug)]
pub struct ConnectionLimiter {
    inner: Arc<ConnInner>,
}

#[derive(Debug)]
struct ConnInner {
    max: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection; releases its slot when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    inner: Arc<ConnInner>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    /// At most `max_per_ip` simultaneous connections per address; `0` means no limit.
    pub fn new(max_per_ip: u32) -> ConnectionLimiter {
        ConnectionLimiter {
            inner: Arc::new(ConnInner {
                max: max_per_ip,
                counts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Admit a connection from `ip`, or `None` when that address already has the maximum open.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<ConnectionGuard> {
        let ip = canonical(ip);
        let mut counts = lock(&self.inner.counts);
        let n = counts.entry(ip).or_insert(0);
        if self.inner.max != 0 && *n >= self.inner.max {
            return None;
        }
        *n += 1;
        drop(counts);
        Some(ConnectionGuard {
            inner: self.inner.clone(),
            ip,
        })
    }

    /// Open connections from `ip` right now.
    pub fn count(&self, ip: IpAddr) -> u32 {
        lock(&self.inner.counts)
            .get(&canonical(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Number of addresses with at least one open connection.
    pub fn addresses(&self) -> usize {
        lock(&self.inner.counts).len()
    }
}

impl ConnectionGuard {
    /// The (canonical) address this slot belongs to.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = lock(&self.inner.counts);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Failed logins per IP and per account

/// Longest account name kept as a key (RFC 7622 §3.1: a JID is at most 3071 bytes); longer
/// names are truncated so a peer cannot make one entry arbitrarily large.
const MAX_ACCOUNT_KEY: usize = 3071;

/// Default cap on tracked IPs + accounts.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Account(Box<str>),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures counted in the current window.
    failures: u32,
    /// When the current window began (first failure of it).
    window_start: Instant,
    /// Set while locked out.
    locked_until: Option<Instant>,
}

impl Entry {
    /// Nothing left to remember: the window has passed and no lock-out is running.
    fn expired(&self, now: Instant, window: Duration) -> bool {
        let lock_over = self.locked_until.is_none_or(|t| now >= t);
        lock_over && now.saturating_duration_since(self.window_start) >= window
    }
}

/// Counts failed logins per IP address and per account. After `max_failures` failures within
/// `window` the IP (or account) is locked out for `lockout`; [`check`](Self::check) then
/// refuses it with the time remaining.
///
/// Memory is bounded: expired entries are pruned at least once per window, and the map never
/// holds more than `max_entries` entries (when full, the least valuable entry — unlocked and
/// oldest — is evicted). Shared behind an `Arc`; methods take `&self`.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    max_entries: usize,
    state: Mutex<LoginState>,
}

#[derive(Debug)]
struct LoginState {
    entries: HashMap<Key, Entry>,
    last_prune: Option<Instant>,
}

/// The key for an account name, truncated to [`MAX_ACCOUNT_KEY`] bytes; `None` when empty.
fn account_key(account: &str) -> Option<Key> {
    if account.is_empty() {
        return None;
    }
    let mut end = account.len().min(MAX_ACCOUNT_KEY);
    while !account.is_char_boundary(end) {
        end -= 1;
    }
    Some(Key::Account(account[..end].into()))
}

impl LoginLimiter {
    /// `max_failures` failures (0 = never lock out) within `lockout` lock the IP or account out
    /// for `lockout` (the window and the lock-out are the same length).
    pub fn new(max_failures: u32, lockout: Duration) -> LoginLimiter {
        LoginLimiter::with_window(max_failures, lockout, lockout)
    }

    /// `max_failures` failures within `window` lock out for `lockout`. The window is also how
    /// long a failure is remembered.
    pub fn with_window(max_failures: u32, window: Duration, lockout: Duration) -> LoginLimiter {
        LoginLimiter::with_capacity(max_failures, window, lockout, DEFAULT_MAX_ENTRIES)
    }

    /// Like [`with_window`](Self::with_window) with an explicit cap on tracked IPs + accounts (at least 1).
    pub fn with_capacity(
        max_failures: u32,
        window: Duration,
        lockout: Duration,
        max_entries: usize,
    ) -> LoginLimiter {
        LoginLimiter {
            max_failures,
            window,
            lockout,
            max_entries: max_entries.max(1),
            state: Mutex::new(LoginState {
                entries: HashMap::new(),
                last_prune: None,
            }),
        }
    }

    /// From `[limits]`: `max_failed_logins` within `lockout_seconds`, locked out for
    /// `lockout_seconds`.
    pub fn from_config(limits: &franca_core::config::LimitsConfig) -> LoginLimiter {
        LoginLimiter::new(
            limits.max_failed_logins,
            Duration::from_secs(limits.lockout_seconds),
        )
    }

    /// May `ip` try to log in to `account` now? `Err` carries the remaining lock-out.
    /// `account` is the normalised account name (bare JID); empty means unknown (IP only).
    pub fn check(&self, ip: IpAddr, account: &str) -> Result<(), Duration> {
        self.check_at(ip, account, Instant::now())
    }

    pub fn check_at(&self, ip: IpAddr, account: &str, now: Instant) -> Result<(), Duration> {
        let state = lock(&self.state);
        let remaining = |key: &Key| {
            state
                .entries
                .get(key)
                .and_then(|e| e.locked_until)
                .map(|t| t.saturating_duration_since(now))
                .filter(|d| !d.is_zero())
        };
        let ip_wait = remaining(&Key::Ip(canonical(ip)));
        let account_wait = account_key(account).and_then(|k| remaining(&k));
        match ip_wait.max(account_wait) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Record a failed login (`account` when the peer named one). Logs a warning when it starts
    /// a lock-out.
    pub fn failed(&self, ip: IpAddr, account: Option<&str>) {
        self.failed_at(ip, account, Instant::now())
    }

    pub fn failed_at(&self, ip: IpAddr, account: Option<&str>, now: Instant) {
        if self.max_failures == 0 {
            return;
        }
        let ip = canonical(ip);
        let mut state = lock(&self.state);
        self.maybe_prune(&mut state, now);
        for key in std::iter::once(Key::Ip(ip)).chain(account.and_then(account_key)) {
            if let Some(until) = self.count_failure(&mut state, key.clone(), now) {
                let secs = until.saturating_duration_since(now).as_secs();
                match &key {
                    Key::Ip(ip) => tracing::warn!(
                        %ip,
                        "{} failed logins from {ip}; locked out for {secs} s",
                        self.max_failures
                    ),
                    Key::Account(account) => tracing::warn!(
                        %account,
                        "{} failed logins for account {account}; locked out for {secs} s",
                        self.max_failures
                    ),
                }
            }
        }
    }

    /// Record a successful login: forgets the account's failures. The IP's failures stay, so an
    /// attacker who owns one account cannot reset the per-IP budget between guesses at others.
    pub fn succeeded(&self, _ip: IpAddr, account: &str) {
        if let Some(key) = account_key(account) {
            lock(&self.state).entries.remove(&key);
        }
    }

    /// Entries currently tracked (IPs + accounts).
    pub fn len(&self) -> usize {
        lock(&self.state).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Count one failure for `key`; returns the lock-out end when this failure starts one.
    fn count_failure(&self, state: &mut LoginState, key: Key, now: Instant) -> Option<Instant> {
        if !state.entries.contains_key(&key) && state.entries.len() >= self.max_entries {
            self.prune(state, now);
            if state.entries.len() >= self.max_entries {
                Self::evict_one(state, now);
            }
        }
        let entry = state.entries.entry(key).or_insert(Entry {
            failures: 0,
            window_start: now,
            locked_until: None,
        });
        if let Some(until) = entry.locked_until {
            if now < until {
                // Already locked (the caller did not check first); keep the lock as it is.
                return None;
            }
            // The lock-out ended: start afresh.
            *entry = Entry {
                failures: 0,
                window_start: now,
                locked_until: None,
            };
        }
        if now.saturating_duration_since(entry.window_start) >= self.window {
            entry.failures = 0;
            entry.window_start = now;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= self.max_failures {
            let until = now + self.lockout;
            entry.locked_until = Some(until);
            return Some(until);
        }
        None
    }

    fn maybe_prune(&self, state: &mut LoginState, now: Instant) {
        let due = state
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= self.window);
        if due {
            self.prune(state, now);
        }
    }

    fn prune(&self, state: &mut LoginState, now: Instant) {
        let window = self.window;
        state.entries.retain(|_, e| !e.expired(now, window));
        state.last_prune = Some(now);
    }

    /// Make room: drop the entry worth least — unlocked before locked, then the oldest window
    /// (or the lock-out ending soonest).
    fn evict_one(state: &mut LoginState, now: Instant) {
        let victim = state
            .entries
            .iter()
            .min_by_key(|(_, e)| match e.locked_until {
                Some(t) if t > now => (1, t),
                _ => (0, e.window_start),
            })
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            state.entries.remove(&k);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Read rate

/// A token bucket on bytes read from one connection: `rate` bytes per second sustained, `burst`
/// bytes at once. Reading may overdraw the bucket; [`consume`](Self::consume) then says how long
/// to stop reading so the debt is repaid. A rate of 0 disables the limit.
#[derive(Debug, Clone)]
pub struct ReadRate {
    rate: u32,
    burst: u32,
    /// Current balance in bytes; negative while in debt.
    tokens: f64,
    last: Instant,
}

impl ReadRate {
    pub fn new(rate_bytes_per_s: u32, burst: u32) -> ReadRate {
        ReadRate::new_at(rate_bytes_per_s, burst, Instant::now())
    }

    pub fn new_at(rate_bytes_per_s: u32, burst: u32, now: Instant) -> ReadRate {
        ReadRate {
            rate: rate_bytes_per_s,
            burst,
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// From `[limits]`: `read_rate_bytes` and `read_burst_bytes`.
    pub fn from_config(limits: &franca_core::config::LimitsConfig) -> ReadRate {
        ReadRate::new(limits.read_rate_bytes, limits.read_burst_bytes)
    }

    /// Account for `n` bytes just read. `Some(d)`: pause reading for `d` before the next read.
    pub fn consume(&mut self, n: usize) -> Option<Duration> {
        self.consume_at(n, Instant::now())
    }

    pub fn consume_at(&mut self, n: usize, now: Instant) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        let rate = f64::from(self.rate);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        if now > self.last {
            self.last = now;
        }
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.burst));
        // Precision loss for reads above 2^53 bytes is irrelevant.
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            None
        } else {
            Some(Duration::from_secs_f64(-self.tokens / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn connections_per_ip_are_limited_and_released() {
        let limiter = ConnectionLimiter::new(2);
        let g1 = limiter.try_acquire(A).expect("first");
        let g2 = limiter.try_acquire(A).expect("second");
        assert!(limiter.try_acquire(A).is_none(), "third refused");
        let gb = limiter.try_acquire(B).expect("other IP unaffected");
        assert_eq!(limiter.count(A), 2);
        drop(g1);
        let g3 = limiter.try_acquire(A).expect("slot freed on drop");
        drop((g2, g3, gb));
        assert_eq!(limiter.addresses(), 0, "entries removed at zero");
        assert_eq!(limiter.count(A), 0);
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        let limiter = ConnectionLimiter::new(1);
        let _g = limiter.try_acquire(A).expect("first");
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert!(limiter.try_acquire(mapped).is_none());
        assert!(
            limiter
                .try_acquire(IpAddr::V6(Ipv6Addr::LOCALHOST))
                .is_some()
        );
    }

    #[test]
    fn zero_means_unlimited_connections() {
        let limiter = ConnectionLimiter::new(0);
        let guards: Vec<_> = (0..1000).filter_map(|_| limiter.try_acquire(A)).collect();
        assert_eq!(guards.len(), 1000);
        drop(guards);
        assert_eq!(limiter.addresses(), 0);
    }

    fn limiter() -> LoginLimiter {
        LoginLimiter::with_window(3, Duration::from_secs(60), Duration::from_secs(300))
    }

    #[test]
    fn ip_locked_after_max_failures_then_released() {
        let l = limiter();
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(l.check_at(A, &format!("u{i}@x"), t0), Ok(()));
            l.failed_at(A, Some(&format!("u{i}@x")), t0);
        }
        // Locked for any account from A, not from B.
        assert_eq!(
            l.check_at(A, "other@x", t0 + Duration::from_secs(100)),
            Err(Duration::from_secs(200))
        );
        assert_eq!(l.check_at(B, "other@x", t0), Ok(()));
        assert_eq!(l.check_at(A, "", t0 + Duration::from_secs(300)), Ok(()));
    }

    #[test]
    fn account_locked_from_any_ip() {
        let l = limiter();
        let t0 = Instant::now();
        for i in 0..3u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
            l.failed_at(ip, Some("victim@x"), t0);
        }
        let fresh = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(
            l.check_at(fresh, "victim@x", t0),
            Err(Duration::from_secs(300))
        );
        assert_eq!(l.check_at(fresh, "someone@x", t0), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let l = limiter();
        let t0 = Instant::now();
        l.failed_at(A, Some("u@x"), t0);
        l.failed_at(A, Some("u@x"), t0 + Duration::from_secs(10));
        l.failed_at(A, Some("u@x"), t0 + Duration::from_secs(61));
        assert_eq!(l.check_at(A, "u@x", t0 + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn success_clears_the_account_but_not_the_ip() {
        let l = limiter();
        let t0 = Instant::now();
        l.failed_at(A, Some("u@x"), t0);
        l.failed_at(A, Some("u@x"), t0);
        l.succeeded(A, "u@x");
        l.failed_at(B, Some("u@x"), t0);
        assert_eq!(l.check_at(B, "u@x", t0), Ok(()), "account count was reset");
        l.failed_at(A, Some("v@x"), t0);
        assert!(l.check_at(A, "", t0).is_err(), "IP count was kept");
    }

    #[test]
    fn zero_max_failures_never_locks() {
        let l = LoginLimiter::new(0, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..100 {
            l.failed_at(A, Some("u@x"), t0);
        }
        assert_eq!(l.check_at(A, "u@x", t0), Ok(()));
        assert!(l.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let l =
            LoginLimiter::with_capacity(3, Duration::from_secs(60), Duration::from_secs(60), 50);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            l.failed_at(A, Some(&format!("user{i}@x")), t0);
        }
        assert!(l.len() <= 50, "len {}", l.len());
        // The locked IP survives eviction of unlocked account entries.
        assert!(l.check_at(A, "", t0).is_err());
        // Everything expires and is pruned on the next failure after a window.
        let later = t0 + Duration::from_secs(120);
        l.failed_at(B, None, later);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn long_account_names_are_truncated() {
        let l = limiter();
        let long = "é".repeat(5000);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.failed_at(A, Some(&long), t0);
        }
        assert!(l.check_at(B, &long, t0).is_err());
    }

    #[test]
    fn read_rate_bucket() {
        let t0 = Instant::now();
        let mut r = ReadRate::new_at(1000, 2000, t0);
        assert_eq!(r.consume_at(1500, t0), None);
        assert_eq!(r.consume_at(500, t0), None);
        // Now empty: 1000 bytes of debt at 1000 B/s is one second.
        assert_eq!(r.consume_at(1000, t0), Some(Duration::from_secs(1)));
        // After the pause the debt is repaid.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(r.consume_at(0, t1), None);
        // Refill is capped at the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(r.consume_at(2000, t2), None);
        assert_eq!(r.consume_at(500, t2), Some(Duration::from_millis(500)));
        // A clock going backwards changes nothing.
        assert_eq!(r.consume_at(0, t0), Some(Duration::from_millis(500)));
    }

    #[test]
    fn read_rate_zero_is_unlimited() {
        let mut r = ReadRate::new(0, 0);
        assert_eq!(r.consume(usize::MAX), None);
    }

    #[test]
    fn read_rate_is_small() {
        assert!(std::mem::size_of::<ReadRate>() <= 32);
    }
}

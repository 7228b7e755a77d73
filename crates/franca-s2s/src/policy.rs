//! Who may federate: the server's `[s2s]` policy towards remote domains, and the per-account
//! bar (issue 6 §2).
//!
//! [`Policy`] answers for a remote domain: `closed` refuses all, `allowlist` only the domains on
//! `allow`, `open` all; a domain on `deny` is refused whatever the policy. Domains are compared
//! normalised (case, IDNA nameprep, one trailing dot), so `Spam.Example.` is `spam.example`.
//! Every refusal carries a sentence for the `policy-violation` `<text/>` that tells the other
//! side, or the local user, why (RFC 6120 §8.3.3.12).
//!
//! [`FederationPermission`] answers for a local account. [`AccountFlag`] reads the flag that
//! `franca user federation <jid> deny` sets in the store. It caches answers for
//! [`ACCOUNT_FLAG_TTL`], which is how a change made by the CLI (a separate process) reaches a
//! running server: within that time, with no control-socket message. Group and role
//! permissions can later be further implementations of the trait, or combine with this one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use franca_core::config::{S2sConfig, S2sPolicy};
use franca_store::Store;

/// A domain in the form policies compare: lower case and nameprepped by the `jid` crate, one
/// trailing dot removed (RFC 7622 §3.2). Text that is not a domain at all is only lower-cased, so
/// it can still match a deny entry but never an allow entry written as a proper domain.
pub fn normalise_domain(domain: &str) -> String {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    match jid::BareJid::new(d) {
        Ok(j) if j.node().is_none() => j.domain().as_str().to_owned(),
        _ => d.to_lowercase(),
    }
}

/// The `[s2s]` federation policy, normalised once at start.
#[derive(Debug, Clone)]
pub struct Policy {
    mode: S2sPolicy,
    allow: HashSet<String>,
    deny: HashSet<String>,
    require_valid_certs: bool,
}

impl Policy {
    pub fn new(cfg: &S2sConfig) -> Policy {
        Policy {
            mode: cfg.policy,
            allow: cfg.allow.iter().map(|d| normalise_domain(d)).collect(),
            deny: cfg.deny.iter().map(|d| normalise_domain(d)).collect(),
            require_valid_certs: cfg.require_valid_certs,
        }
    }

    /// Whether federating with `domain` is allowed; `Err(text)` explains why not, for a
    /// `policy-violation`'s `<text/>`. The same answer applies in both directions.
    pub fn check(&self, domain: &str) -> Result<(), String> {
        let d = normalise_domain(domain);
        if d.is_empty() {
            return Err("federation needs a remote domain name".to_owned());
        }
        // The deny list wins over everything, even an allow entry for the same domain.
        if self.deny.contains(&d) {
            return Err(format!(
                "federation with {d} is denied by this server's policy"
            ));
        }
        match self.mode {
            S2sPolicy::Open => Ok(()),
            S2sPolicy::Allowlist if self.allow.contains(&d) => Ok(()),
            S2sPolicy::Allowlist => Err(format!(
                "federation with {d} is not allowed: this server federates only with the \
                 domains on its allow list"
            )),
            S2sPolicy::Closed => Err(format!(
                "federation with {d} is refused: this server does not federate with other servers"
            )),
        }
    }

    /// `true`: a peer must authenticate with a certificate valid for its domain (SASL
    /// EXTERNAL); dialback alone is refused.
    pub fn require_valid_certs(&self) -> bool {
        self.require_valid_certs
    }

    /// The refusal text when a peer could only offer dialback but certificates are required.
    pub fn dialback_refused_text(domain: &str) -> String {
        format!(
            "{} did not present a valid certificate, and this server does not accept dialback \
             alone",
            normalise_domain(domain)
        )
    }
}

/// Whether a local account may exchange stanzas with remote domains. A trait so that the group
/// and role permissions planned later slot in beside the per-account flag.
#[async_trait]
pub trait FederationPermission: Send + Sync {
    /// `Err(text)` when local account `user` may not exchange stanzas with remote domains; the
    /// text is for the `policy-violation` `<text/>` of the bounce.
    async fn may_federate(&self, user: &jid::BareJid) -> Result<(), String>;
}

/// How long [`AccountFlag`] trusts an answer from the store. A `franca user federation` change
/// takes effect on a running server within this time.
pub const ACCOUNT_FLAG_TTL: Duration = Duration::from_secs(5);

/// Most accounts whose answer [`AccountFlag`] keeps; beyond that, expired entries are dropped
/// (and, if still full, all), so a flood of distinct senders cannot grow memory.
pub const ACCOUNT_FLAG_CACHE: usize = 10_000;

/// The per-account bar stored by `franca user federation <jid> allow|deny`, cached for
/// [`ACCOUNT_FLAG_TTL`] because it is asked for every stanza that crosses to another server.
pub struct AccountFlag {
    store: Arc<dyn Store>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (bool, Instant)>>,
}

impl AccountFlag {
    pub fn new(store: Arc<dyn Store>) -> AccountFlag {
        AccountFlag::with_ttl(store, ACCOUNT_FLAG_TTL)
    }

    /// With another cache lifetime (tests; `Duration::ZERO` asks the store every time).
    pub fn with_ttl(store: Arc<dyn Store>, ttl: Duration) -> AccountFlag {
        AccountFlag {
            store,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Drop the cached answer for `user` (after a change made in this process).
    pub fn forget(&self, user: &jid::BareJid) {
        self.lock().remove(user.as_str());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (bool, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, user: &str) -> Option<bool> {
        let cache = self.lock();
        let (barred, at) = cache.get(user)?;
        (at.elapsed() < self.ttl).then_some(*barred)
    }

    fn remember(&self, user: &str, barred: bool) {
        if self.ttl.is_zero() {
            return;
        }
        let mut cache = self.lock();
        if cache.len() >= ACCOUNT_FLAG_CACHE && !cache.contains_key(user) {
            let ttl = self.ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
            if cache.len() >= ACCOUNT_FLAG_CACHE {
                cache.clear();
            }
        }
        cache.insert(user.to_owned(), (barred, Instant::now()));
    }
}

#[async_trait]
impl FederationPermission for AccountFlag {
    async fn may_federate(&self, user: &jid::BareJid) -> Result<(), String> {
        let key = user.as_str();
        let barred = match self.cached(key) {
            Some(b) => b,
            None => match self.store.federation_barred(key).await {
                Ok(b) => {
                    self.remember(key, b);
                    b
                }
                // Fail closed, uncached: a store hiccup must not let a barred account through.
                Err(e) => {
                    tracing::warn!(%user, "reading the federation bar failed: {e}");
                    return Err(format!(
                        "the federation permission of {user} could not be checked; try again later"
                    ));
                }
            },
        };
        if barred {
            Err(format!(
                "{user} is not allowed to communicate with other servers (barred by the \
                 administrator)"
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg(policy: S2sPolicy, allow: &[&str], deny: &[&str]) -> S2sConfig {
        S2sConfig {
            policy,
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
            ..S2sConfig::default()
        }
    }

    #[test]
    fn open_allows_all_but_the_deny_list() {
        let p = Policy::new(&cfg(S2sPolicy::Open, &[], &["spam.example"]));
        assert_eq!(p.check("partner.example"), Ok(()));
        let why = p.check("spam.example").unwrap_err();
        assert_eq!(
            why,
            "federation with spam.example is denied by this server's policy"
        );
    }

    #[test]
    fn domains_compare_normalised() {
        let p = Policy::new(&cfg(S2sPolicy::Open, &[], &["Spam.Example."]));
        assert!(p.check("spam.example").is_err());
        assert!(p.check("SPAM.example").is_err());
        assert!(p.check("spam.example.").is_err());
        // Exact domains: a subdomain is another domain.
        assert!(p.check("sub.spam.example").is_ok());
        assert_eq!(normalise_domain("ÉCOLE.example"), "école.example");
        assert_eq!(normalise_domain("a.test."), "a.test");
    }

    #[test]
    fn allowlist_allows_only_listed_domains() {
        let p = Policy::new(&cfg(
            S2sPolicy::Allowlist,
            &["partner.example", "both.example"],
            &["both.example"],
        ));
        assert_eq!(p.check("Partner.Example"), Ok(()));
        let why = p.check("stranger.example").unwrap_err();
        assert!(why.contains("stranger.example"), "{why}");
        assert!(why.contains("allow list"), "{why}");
        // Deny wins over allow.
        assert!(p.check("both.example").unwrap_err().contains("denied"));
    }

    #[test]
    fn closed_refuses_everyone() {
        let p = Policy::new(&cfg(S2sPolicy::Closed, &["partner.example"], &[]));
        let why = p.check("partner.example").unwrap_err();
        assert!(why.contains("does not federate"), "{why}");
        assert!(p.check("").is_err());
    }

    #[test]
    fn require_valid_certs_is_reported() {
        let mut c = cfg(S2sPolicy::Open, &[], &[]);
        assert!(!Policy::new(&c).require_valid_certs());
        c.require_valid_certs = true;
        assert!(Policy::new(&c).require_valid_certs());
        assert!(Policy::dialback_refused_text("B.test").contains("b.test"));
    }

    async fn store_with(users: &[&str]) -> Arc<dyn Store> {
        let store = franca_store::open("sqlite::memory:").await.unwrap();
        for u in users {
            store.create_user(u, &[]).await.unwrap();
        }
        store
    }

    fn bare(s: &str) -> jid::BareJid {
        jid::BareJid::new(s).unwrap()
    }

    #[tokio::test]
    async fn account_flag_reads_the_store() {
        let store = store_with(&["alice@a.test", "bob@a.test"]).await;
        store
            .set_federation_barred("bob@a.test", true)
            .await
            .unwrap();
        let flag = AccountFlag::new(store.clone());
        assert_eq!(flag.may_federate(&bare("alice@a.test")).await, Ok(()));
        let why = flag.may_federate(&bare("bob@a.test")).await.unwrap_err();
        assert!(why.contains("bob@a.test"), "{why}");
        // An unknown account is not barred (the router refuses it elsewhere).
        assert_eq!(flag.may_federate(&bare("nobody@a.test")).await, Ok(()));
    }

    #[tokio::test]
    async fn account_flag_cache_expires_and_can_be_forgotten() {
        let store = store_with(&["alice@a.test"]).await;
        let alice = bare("alice@a.test");
        let flag = AccountFlag::with_ttl(store.clone(), Duration::from_secs(3600));
        assert_eq!(flag.may_federate(&alice).await, Ok(()));
        store
            .set_federation_barred("alice@a.test", true)
            .await
            .unwrap();
        // Cached: the change is not seen yet...
        assert_eq!(flag.may_federate(&alice).await, Ok(()));
        // ...until forgotten.
        flag.forget(&alice);
        assert!(flag.may_federate(&alice).await.is_err());

        // A zero lifetime asks the store every time: a CLI change is seen at once.
        let uncached = AccountFlag::with_ttl(store.clone(), Duration::ZERO);
        assert!(uncached.may_federate(&alice).await.is_err());
        store
            .set_federation_barred("alice@a.test", false)
            .await
            .unwrap();
        assert_eq!(uncached.may_federate(&alice).await, Ok(()));

        // A short lifetime: seen after it runs out.
        let short = AccountFlag::with_ttl(store.clone(), Duration::from_millis(50));
        assert_eq!(short.may_federate(&alice).await, Ok(()));
        store
            .set_federation_barred("alice@a.test", true)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(short.may_federate(&alice).await.is_err());
    }

    #[tokio::test]
    async fn account_flag_cache_is_bounded() {
        let store = store_with(&[]).await;
        let flag = AccountFlag::with_ttl(store, Duration::from_secs(3600));
        for i in 0..ACCOUNT_FLAG_CACHE + 10 {
            let u = bare(&format!("u{i}@a.test"));
            assert_eq!(flag.may_federate(&u).await, Ok(()));
        }
        assert!(flag.lock().len() <= ACCOUNT_FLAG_CACHE);
    }
}
